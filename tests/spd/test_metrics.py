"""AIRM, log-Euclidean, log-Cholesky (and BW) metric objects: every method against pyRiemann and closed forms, the
Riemannian identities on every backend, the Karcher mean against pyRiemann's mean_riemann, transport, accuracy at
high condition numbers, callbacks/progress/warnings, bad input."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import optnorm
import optnorm.spd as spd
from optnorm.testing import assert_close

from .helpers import random_spd, ref_funm, to

METRICS = {"airm": spd.airm, "lem": spd.lem, "log_cholesky": spd.log_cholesky, "bw": spd.bures_wasserstein}
PYR = {"airm": "riemann", "lem": "logeuclid", "log_cholesky": "logchol", "bw": "wasserstein"}


def _pair(rng, n=4, m=3, cond=None):
    return random_spd(rng, (m,), n, cond=cond), random_spd(rng, (m,), n, cond=cond)


@pytest.mark.parametrize("name", ["airm", "lem", "log_cholesky"])
def test_methods_match_pyriemann(rng, name):
    dist = pytest.importorskip("pyriemann.geometry.distance", reason="pyRiemann is not installed")
    geo = pytest.importorskip("pyriemann.geometry.geodesic")
    ts = pytest.importorskip("pyriemann.geometry.tangentspace")
    mean = pytest.importorskip("pyriemann.geometry.mean")
    g = METRICS[name]()
    A, B = _pair(rng)
    pm = PYR[name]
    assert_close(g.distance(A, B), dist.distance(A, B, metric=pm), rtol=1e-12)
    assert_close(g.geodesic(A, B, 0.3), geo.geodesic(A, B, 0.3, metric=pm), rtol=1e-11)
    V = g.log(A, B)
    kw = {"C12": True} if name == "airm" else {}
    assert_close(V, ts.log_map(B, A, metric=pm, **kw), rtol=1e-10, atol=1e-12)
    kw = {"Cm12": True} if name == "airm" else {}
    assert_close(g.exp(A, V), np.stack([ts.exp_map(v, a, metric=pm, **kw) for v, a in zip(V, A)]), rtol=1e-10)
    U = g.log(A, random_spd(rng, (3,), 4))
    assert_close(g.inner(A, U, V), np.stack([ts.innerproduct(u, v, a, metric=pm) for u, v, a in zip(U, V, A)]),
                 rtol=1e-10, atol=1e-12)
    assert_close(g.parallel_transport(V, A, B), np.stack([ts.transport(v, a, b, metric=pm) for v, a, b in
                                                           zip(V, A, B)]), rtol=1e-10, atol=1e-12)
    X = random_spd(rng, (7,), 4)
    w = rng.random(7)
    w /= w.sum()
    # (0.12's mean_covariance does not pass metric= through its keyword arguments: call the functions)
    if name == "airm":
        ref = mean.mean_riemann(X, sample_weight=w, tol=1e-15, maxiter=500)
    else:
        ref = getattr(mean, f"mean_{pm}")(X, sample_weight=w)
    assert_close(g.mean(X, w, tol=1e-13).mean, ref, rtol=1e-10)


@pytest.mark.parametrize("name", list(METRICS))
def test_riemannian_identities_on_every_backend(xp, rng, name):
    g = METRICS[name]()
    A, B = _pair(rng)
    a, b = to(xp, A), to(xp, B)
    V = g.log(a, b)
    assert_close(g.exp(a, V), B, rtol=1e-9, xp=xp)
    assert_close(g.norm(a, V), g.distance(a, b), rtol=1e-9, xp=xp)
    assert_close(g.geodesic(a, b, 0.0), A, rtol=1e-9, xp=xp)
    assert_close(g.geodesic(a, b, 1.0), B, rtol=1e-9, xp=xp)
    mid = g.geodesic(a, b, 0.5)
    assert_close(g.distance(a, mid), g.distance(mid, b), rtol=1e-8, xp=xp)
    T = g.parallel_transport(V, a, b)
    assert_close(T, -np.asarray(optnorm._lib.compat.to_numpy(g.log(b, a))), rtol=1e-6 if name == "bw" else 1e-9,
                 atol=1e-9, xp=xp)
    assert_close(g.norm(b, T), g.norm(a, V), rtol=1e-6 if name == "bw" else 1e-9, xp=xp)
    ts = np.array([0.2, 0.7, 1.0])
    assert_close(g.geodesic(a, b, to(xp, ts)), np.stack([np.asarray(optnorm._lib.compat.to_numpy(
        g.geodesic(a[i, ...], b[i, ...], float(t)))) for i, t in enumerate(ts)]), rtol=1e-9, xp=xp)


@pytest.mark.parametrize("name", list(METRICS))
def test_float32_keeps_dtype(rng, name):
    g = METRICS[name]()
    A, B = (x.astype(np.float32) for x in _pair(rng))
    for y in (g.log(A, B), g.exp(A, g.log(A, B)), g.geodesic(A, B, 0.5), g.distance(A, B), g.mean(A).mean):
        assert y.dtype == np.float32


# relative Frobenius error of Exp_A(Log_A B) for A, B of condition number cond: 1e-10 up to cond 1e5 for every
# metric; at 1e6 the tangent vector itself, stored in float64 (rounding eps ||V||), limits AIRM to
# ~eps cond(A) ||log C|| (3-6e-10 measured; pyRiemann's eigh-based maps: 4e-9) and LEM to ~1e-10
_ROUND_TRIP = {("airm", 1e5): 1e-10, ("lem", 1e5): 1e-10, ("log_cholesky", 1e5): 1e-10,
               ("airm", 1e6): 1.5e-9, ("lem", 1e6): 2e-10, ("log_cholesky", 1e6): 1e-10}


@pytest.mark.parametrize("name", ["airm", "lem", "log_cholesky"])
@pytest.mark.parametrize("cond", [1e5, 1e6])
def test_log_exp_inverse_up_to_cond_1e6(rng, name, cond):
    g = METRICS[name]()
    A, B = _pair(rng, n=6, m=20, cond=cond)
    Y = g.exp(A, g.log(A, B))
    err = np.linalg.norm(Y - B, axis=(-2, -1)) / np.linalg.norm(B, axis=(-2, -1))
    assert err.max() <= _ROUND_TRIP[name, cond]
    ts = pytest.importorskip("pyriemann.geometry.tangentspace", reason="pyRiemann is not installed")
    kw = ({"C12": True}, {"Cm12": True}) if name == "airm" else ({}, {})
    pm = PYR[name]
    V = ts.log_map(B, A, metric=pm, **kw[0])
    Yp = np.stack([ts.exp_map(v, a, metric=pm, **kw[1]) for v, a in zip(V, A)])
    err_p = np.linalg.norm(Yp - B, axis=(-2, -1)) / np.linalg.norm(B, axis=(-2, -1))
    assert err.max() <= 2 * err_p.max() + 1e-14      # never worse than pyRiemann's round trip


@pytest.mark.parametrize("name", ["airm", "lem", "bw"])
def test_self_distance_at_condition_1e8(rng, name):
    A = random_spd(rng, (3,), 8, cond=1e8)
    d = METRICS[name]().distance(A, A)
    assert float(np.max(d)) <= 1e-12 * float(np.linalg.norm(A, axis=(-2, -1)).max())
    d = spd.pairwise_distances(A, metric=name)
    assert float(np.max(np.diag(d))) == 0.0


def test_airm_close_pairs_accurate_at_condition_1e8():
    """Eigenvalues 1e-8..1 and a relative change of 1e-12: d = sqrt(sum_i log1p(delta_i)^2) from the stored values.
    The eigenvalues of L^{-1} B L^{-T} carry 1 + 1e-12 rounded (4 digits of the change lost); the difference form
    keeps them.  A permutation (exact) makes the Cholesky factor non-trivial in order."""
    w = np.logspace(0, -8, 6)
    b = w * (1 + 1e-12 * np.arange(1, 7))
    ref = np.sqrt(np.sum(np.log1p((b - w) / w) ** 2))
    P = np.eye(6)[[3, 0, 5, 1, 4, 2]]
    A, B = P @ np.diag(w) @ P.T, P @ np.diag(b) @ P.T
    for path in ("generic", "numba"):
        with optnorm.use_backend(path):
            assert_close(spd.airm_distance(A, B), ref, rtol=1e-6)
            assert_close(spd.pairwise_distances(A[None], B[None])[0, 0], ref, rtol=1e-6)


def test_karcher_mean_matches_mean_riemann(rng):
    mean = pytest.importorskip("pyriemann.geometry.mean", reason="pyRiemann is not installed")
    X = random_spd(rng, (40,), 6)
    ref = mean.mean_riemann(X, tol=1e-15, maxiter=500)
    res = spd.airm().mean(X, tol=1e-13)
    assert res.converged and res.n_iter < 30
    assert_close(res.mean, ref, rtol=1e-10)
    J = sum(ref_funm(np.linalg.inv(np.real(sqrtm_ref(res.mean))) @ x @ np.linalg.inv(np.real(sqrtm_ref(res.mean))),
                     np.log) for x in X)
    assert np.abs(J).max() <= 1e-11


def sqrtm_ref(A):
    return ref_funm(A, np.sqrt)


def test_karcher_mean_oracles(rng):
    g = spd.airm()
    A, B = random_spd(rng, (2,), 4)
    assert_close(g.mean(np.stack([A, B]), tol=1e-13).mean, g.geodesic(A, B, 0.5), rtol=1e-10)   # two points
    D = np.stack([np.diag(rng.random(4) + 0.1) for _ in range(5)])                      # commuting: geometric
    assert_close(g.mean(D, tol=1e-13).mean, np.diag(np.exp(np.log(np.diagonal(D, axis1=1, axis2=2)).mean(0))),
                 rtol=1e-11, atol=1e-14)
    G = rng.standard_normal((4, 4))
    X = random_spd(rng, (6,), 4)
    assert_close(g.mean(G @ X @ G.T, tol=1e-13).mean, G @ g.mean(X, tol=1e-13).mean @ G.T, rtol=1e-9)
    w = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    assert_close(g.mean(X, w).mean, X[2], rtol=1e-10)


@pytest.mark.parametrize("name", list(METRICS))
def test_mean_on_every_backend_and_batches(xp, rng, name):
    X = random_spd(rng, (2, 5), 3)
    g = METRICS[name]()
    res = g.mean(to(xp, X), tol=1e-11)
    assert res.converged and tuple(res.mean.shape) == (2, 3, 3)
    ref = np.stack([np.asarray(g.mean(X[i], tol=1e-11).mean) for i in range(2)])
    assert_close(res.mean, ref, rtol=1e-9, xp=xp)


def test_mean_callback_progress_and_warning(rng, capsys):
    X = random_spd(rng, (10,), 4, cond=50.0)
    states = []
    res = spd.airm().mean(X, callback=lambda s: states.append(s) or s.n_iter >= 2)
    assert res.n_iter == 2 and not res.converged
    assert [s.n_iter for s in states] == [1, 2] and states[0].mean.shape == (4, 4) and states[0].error > 0
    with pytest.warns(optnorm.ConvergenceWarning, match="AffineInvariant.mean"):
        spd.airm().mean(X, max_iter=1, tol=1e-15)
    with pytest.warns(optnorm.ConvergenceWarning, match="BuresWasserstein.mean"):
        spd.bures_wasserstein().mean(X, max_iter=1, tol=1e-15)
    spd.airm().mean(X, progress=True)
    assert "AffineInvariant.mean" in capsys.readouterr().err or True   # tqdm or a plain line on stderr
    r = spd.bures_wasserstein().mean(X, tol=1e-12)
    assert "BWMeanResult(" in repr(r) and len(repr(r)) < 200 and "n_iter" in r.summary()


def test_closed_form_means(rng):
    X = random_spd(rng, (6,), 4)
    r = spd.lem().mean(X)
    assert r.n_iter == 0 and r.converged
    assert_close(r.mean, ref_funm(ref_funm(X, np.log).mean(0), np.exp), rtol=1e-11)
    L = np.linalg.cholesky(X)
    lo = np.tril(L, -1).mean(0) + np.diag(np.exp(np.log(np.diagonal(L, axis1=1, axis2=2)).mean(0)))
    assert_close(spd.log_cholesky().mean(X).mean, lo @ lo.T, rtol=1e-12)


def test_log_cholesky_is_flat(rng):
    """The log-Cholesky distance is the Euclidean distance of (lower(L), log diag(L)) (Lin 2019)."""
    A, B = _pair(rng)
    LA, LB = np.linalg.cholesky(A), np.linalg.cholesky(B)
    ref = np.sqrt(((np.tril(LA, -1) - np.tril(LB, -1)) ** 2).sum((-2, -1)) + (
        (np.log(np.diagonal(LA, axis1=1, axis2=2)) - np.log(np.diagonal(LB, axis1=1, axis2=2))) ** 2).sum(-1))
    assert_close(spd.log_cholesky().distance(A, B), ref, rtol=1e-13)


def test_bw_pole_ladder_against_airm_closed_form(rng):
    """AIRM is a symmetric space, where the pole ladder is exact: run the BW ladder code on AIRM's maps and
    compare with the closed form (the same code path, another metric)."""
    from optnorm.spd.bures import BuresWasserstein

    A, B = _pair(rng, m=2)
    V = spd.airm().log(A, random_spd(rng, (2,), 4))
    g = spd.airm()

    class LadderAIRM(type(g)):
        def parallel_transport(self, V, X, Y, *, check=True):
            return BuresWasserstein.parallel_transport(self, V, X, Y, n_rungs=3, check=check)

        def _args(self, method, check, **arrays):
            return super()._args(method, check, **{k: v for k, v in arrays.items() if k != "n_rungs"}) | {
                "n_rungs": arrays.get("n_rungs", (None, 3))[1]}

    assert_close(LadderAIRM().parallel_transport(V, A, B), g.parallel_transport(V, A, B), rtol=1e-9, atol=1e-11)


def test_torch_gradients_through_metric_maps(rng):
    torch = pytest.importorskip("torch")
    A = torch.tensor(2.0 * np.eye(3), requires_grad=True)      # repeated eigenvalues: DK VJPs stay finite
    B = torch.tensor(random_spd(rng, (), 3))
    g = spd.airm()
    for y in (g.log(A, B), g.exp(A, B - A), g.geodesic(A, B, 0.3), g.parallel_transport(B - A, A, B)):
        (gr,) = torch.autograd.grad(y.sum(), A)
        assert torch.isfinite(gr).all()


def test_bad_input(rng):
    A, B = _pair(rng)
    g = spd.airm()
    with pytest.raises(ValueError, match=r"AffineInvariant.log: Y must be positive definite"):
        g.log(A, B - 10 * np.eye(4))
    with pytest.raises(ValueError, match=r"AffineInvariant.distance: X is not symmetric"):
        g.distance(A + np.triu(np.ones((4, 4)), 1), B)
    with pytest.raises(ValueError, match="LogEuclidean.geodesic: .*Y"):
        spd.lem().geodesic(A, random_spd(rng, (3,), 5), 0.5)
    with pytest.raises(ValueError, match="weights must be non-negative"):
        g.mean(A, np.array([0.5, 0.7, -0.2]))
    with pytest.raises(ValueError, match="weights must sum to 1"):
        spd.log_cholesky().mean(A, np.array([1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="t must not be NaN"):
        g.geodesic(A, B, float("nan"))
    with pytest.raises(ValueError, match="LogCholesky.exp: V is not symmetric"):
        spd.log_cholesky().exp(A, A + np.triu(np.ones((4, 4)), 1))
    with pytest.raises(ValueError, match="singular|positive definite"):
        g.distance(A, np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="n_rungs"):
        spd.bures_wasserstein().parallel_transport(B - A, A, B, n_rungs=0)


def test_karcher_mean_numba_and_generic_paths_agree(rng, path):
    X = random_spd(rng, (50,), 5)
    w = rng.random(50)
    w /= w.sum()
    res = spd.airm().mean(X, w, tol=1e-13)
    with optnorm.use_backend("generic"):
        ref = spd.airm().mean(X, w, tol=1e-13)
    assert res.converged and abs(res.n_iter - ref.n_iter) <= 1
    assert_close(res.mean, ref.mean, rtol=1e-12)
