"""Bures-Wasserstein metric object: pyRiemann and closed forms, exp/log round trips, GBW and power deformation."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sl

import optnorm.spd as spd
from optnorm.testing import assert_close

from .helpers import random_spd, ref_bw2, ref_funm, ref_sqrtm, to


def _gbw_ref_dist2(M, X, Y):
    Mi = np.linalg.inv(M)
    out = []
    for x, y in zip(X, Y):
        h = np.real(sl.sqrtm(x))
        out.append(np.trace(Mi @ x) + np.trace(Mi @ y) - 2 * np.trace(np.real(sl.sqrtm(h @ Mi @ y @ Mi @ h))))
    return np.array(out)


def test_against_pyriemann(xp, rng):
    geo = pytest.importorskip("pyriemann.geometry.geodesic", reason="pyRiemann is not installed")
    ts = pytest.importorskip("pyriemann.geometry.tangentspace", reason="pyRiemann is not installed")
    A, B = random_spd(rng, (5,), 4), random_spd(rng, (5,), 4)
    bw = spd.bures_wasserstein()
    assert_close(bw.geodesic(to(xp, A), to(xp, B), 0.3), geo.geodesic_wasserstein(A, B, 0.3), rtol=1e-10, xp=xp)
    assert_close(bw.log(to(xp, A), to(xp, B)), ts.log_map_wasserstein(B, A), rtol=1e-10, atol=1e-12, xp=xp)
    V = bw.log(A, B)
    ref = np.stack([ts.exp_map_wasserstein(v, a) for v, a in zip(V, A)])   # pyRiemann's exp map is per matrix
    assert_close(bw.exp(to(xp, A), to(xp, V)), ref, rtol=1e-10, atol=1e-12, xp=xp)


def test_mean_against_pyriemann(xp, rng):
    mean = pytest.importorskip("pyriemann.geometry.mean", reason="pyRiemann is not installed")
    X = random_spd(rng, (12,), 4)
    w = rng.random(12)
    w /= w.sum()
    res = spd.bures_wasserstein().mean(to(xp, X), to(xp, w), tol=1e-12)
    assert res.converged and res.n_iter < 50 and len(res.errors) == res.n_iter
    assert_close(res.mean, mean.mean_wasserstein(X, sample_weight=w, tol=1e-12), rtol=1e-9, atol=1e-11, xp=xp)


def test_geomstats_peer():
    pytest.importorskip("geomstats", reason="geomstats 2.8 needs numpy<2.4 and is not installed here")


def test_closed_forms_and_round_trips(rng):
    A, B = random_spd(rng, (6,), 5), random_spd(rng, (6,), 5)
    bw = spd.bures_wasserstein()
    V = bw.log(A, B)
    assert_close(bw.exp(A, V), B, rtol=1e-10)
    assert_close(bw.inner(A, V, V), ref_bw2(A, B), rtol=1e-9)           # g(Log, Log) = d^2
    assert_close(bw.geodesic(A, B, 0.0), A, rtol=1e-12)
    assert_close(bw.geodesic(A, B, 1.0), B, rtol=1e-10)
    # closed form of the geodesic with the (AB)^{1/2} + (BA)^{1/2} cross term (spd_learn PR #2 bug class)
    t = 0.4
    h = ref_sqrtm(A)
    AB = h @ ref_sqrtm(h @ B @ h) @ np.linalg.inv(h)
    ref = (1 - t) ** 2 * A + t ** 2 * B + t * (1 - t) * (AB + np.swapaxes(AB, -1, -2))
    assert_close(bw.geodesic(A, B, t), ref, rtol=1e-10)
    # the geodesic is constant speed: d(A, g(t)) = t d(A, B)
    assert_close(bw.distance(A, bw.geodesic(A, B, t)), t * bw.distance(A, B), rtol=1e-7)
    # the log at the identity is 2 (X^{1/2} - I); exp at the identity (I + V/2)^2
    I = np.broadcast_to(np.eye(5), A.shape)
    assert_close(bw.log(I, B), 2 * (ref_sqrtm(B) - I), rtol=1e-10, atol=1e-12)
    assert_close(bw.exp(I, V), (I + V / 2) @ (I + V / 2), rtol=1e-10)
    # array t broadcasts over the batch
    ts = np.linspace(0, 1, 6)
    G = bw.geodesic(A, B, ts)
    assert_close(G[-1], B[-1], rtol=1e-10)


def test_gbw_identity_is_bw_and_matches_formula(xp, rng):
    A, B = random_spd(rng, (4,), 3), random_spd(rng, (4,), 3)
    M = random_spd(rng, (), 3)
    bw, gI = spd.bures_wasserstein(), spd.bures_wasserstein(to(xp, np.eye(3)))
    assert_close(gI.distance(to(xp, A), to(xp, B)), bw.distance(A, B), rtol=1e-10, xp=xp)
    assert_close(gI.log(to(xp, A), to(xp, B)), bw.log(A, B), rtol=1e-10, atol=1e-12, xp=xp)
    assert_close(gI.mean(to(xp, A)).mean, bw.mean(A).mean, rtol=1e-10, xp=xp)
    assert_close(gI.geodesic(to(xp, A), to(xp, B), 0.7), bw.geodesic(A, B, 0.7), rtol=1e-10, xp=xp)
    g = spd.bures_wasserstein(to(xp, M))
    assert_close(g.distance(to(xp, A), to(xp, B), squared=True), _gbw_ref_dist2(M, A, B), rtol=1e-9, xp=xp)
    # GBW log: M (M^-1 X M^-1 Y)^{1/2} + (Y M^-1 X M^-1)^{1/2} M - 2X
    Mi = np.linalg.inv(M)
    ref = np.stack([np.real(M @ sl.sqrtm(Mi @ x @ Mi @ y) + sl.sqrtm(y @ Mi @ x @ Mi) @ M) - 2 * x
                    for x, y in zip(A, B)])
    assert_close(g.log(to(xp, A), to(xp, B)), ref, rtol=1e-8, atol=1e-10, xp=xp)
    Ax, Bx = to(xp, A), to(xp, B)
    V = g.log(Ax, Bx)
    assert_close(g.exp(Ax, V), B, rtol=1e-10, xp=xp)
    assert_close(g.inner(Ax, V, V), g.distance(Ax, Bx, squared=True), rtol=1e-9, xp=xp)


@pytest.mark.parametrize("power", [0.5, -1.0, 2.0])
def test_power_deformation(rng, power):
    A, B = random_spd(rng, (3,), 3), random_spd(rng, (3,), 3)
    M = random_spd(rng, (), 3)
    g = spd.bures_wasserstein(M, power=power)
    Ap, Bp = ref_funm(A, lambda w: w ** power), ref_funm(B, lambda w: w ** power)
    assert_close(g.distance(A, B, squared=True), _gbw_ref_dist2(M, Ap, Bp) / power ** 2, rtol=1e-9)
    V = g.log(A, B)
    assert_close(g.exp(A, V), B, rtol=1e-9)
    assert_close(g.inner(A, V, V), g.distance(A, B, squared=True), rtol=1e-8)
    assert_close(g.geodesic(A, B, 1.0), B, rtol=1e-9)
    m = g.mean(np.stack([A, B], axis=-3)).mean
    assert_close(g.distance(m, A), g.distance(m, B), rtol=1e-7)      # midpoint of two points


def test_mean_callback_and_result(rng):
    X = random_spd(rng, (2, 6), 3)           # a batch of two sets of six
    calls = []
    res = spd.bures_wasserstein().mean(X, callback=lambda s: calls.append(s.n_iter) or s.n_iter >= 2)
    assert res.n_iter == 2 and not res.converged and calls == [1, 2]
    full = spd.bures_wasserstein().mean(X, tol=1e-12)
    assert full.converged and full.mean.shape == (2, 3, 3)
    assert full.errors[-1] <= 1e-12
    for i in range(2):   # each batch member is the barycenter of its own set
        T = [np.eye(3) - 0.5 * np.asarray(spd.bures_wasserstein().log(full.mean[i], x)) for x in X[i]]
        assert_close(np.mean([spd.bures_wasserstein().log(full.mean[i], x) for x in X[i]], axis=0),
                     np.zeros((3, 3)), atol=1e-9)
        del T


def test_bad_input(rng):
    A = random_spd(rng, (), 3)
    with pytest.raises(ValueError, match="power must be non-zero"):
        spd.bures_wasserstein(power=0)
    with pytest.raises(ValueError, match="M must be positive definite"):
        spd.bures_wasserstein(np.diag([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="M must have shape \\(n n\\)"):
        spd.bures_wasserstein(random_spd(rng, (2,), 3))
    with pytest.raises(ValueError, match="M has shape \\(4, 4\\).*X has n = 3"):
        spd.bures_wasserstein(np.eye(4)).distance(A, A)
    with pytest.raises(ValueError, match="X must have shape"):
        spd.bures_wasserstein().mean(A)
    with pytest.raises(ValueError, match="weights must sum to 1"):
        spd.bures_wasserstein().mean(random_spd(rng, (3,), 3), np.array([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="Y must be positive definite"):
        spd.bures_wasserstein().log(A, -A)


def test_registered_maps_values_and_vjps(rng):
    from optnorm.testing import check_vjp

    A, B = random_spd(rng, (3,), 4, shift=0.3), random_spd(rng, (3,), 4, shift=0.3)
    bw = spd.bures_wasserstein()
    assert_close(spd.bw_log(A, B), bw.log(A, B), rtol=1e-12)
    assert_close(spd.bw_exp(A, spd.bw_log(A, B)), B, rtol=1e-10)
    assert_close(spd.bw_geodesic(A, B, t=0.3), np.stack([bw.geodesic(a, b, 0.3) for a, b in zip(A, B)]), rtol=1e-12)
    opts = {"check": False}
    check_vjp("bw_log", A, B, opts=opts)
    check_vjp("bw_log", A, B[0], opts=opts)
    check_vjp("bw_exp", A, 0.3 * np.asarray(spd.bw_log(A, B)), opts=opts)
    check_vjp("bw_geodesic", A, B, opts={"t": 0.3, "check": False})
    # repeated eigenvalues (identity-initialised parameters)
    check_vjp("bw_log", 2 * np.eye(3), np.eye(3), opts=opts)
    check_vjp("bw_geodesic", np.eye(3), 2 * np.eye(3), opts={"t": 0.7, "check": False})
    check_vjp("bw_exp", np.eye(3), 0.1 * np.eye(3), opts=opts)


def test_metric_methods_use_the_ops_under_torch_autograd(rng):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    A, B = random_spd(rng, (2,), 3), random_spd(rng, (2,), 3)
    At = torch.tensor(A, requires_grad=True)
    bw = spd.bures_wasserstein()
    (bw.distance(At, torch.tensor(B), squared=True).sum() + bw.log(At, torch.tensor(B)).sum()).backward()
    from optnorm.spd.bures import bw_log_bwd as _bw_log_bwd, bw_log_fwd
    from optnorm.spd.distances import bw_distance_bwd as _bw_distance_bwd, bw_distance_fwd

    _, r1 = bw_distance_fwd(A, B, squared=True)
    _, r2 = bw_log_fwd(A, B)
    ref = _bw_distance_bwd(r1, np.ones(2))[0] + _bw_log_bwd(r2, np.ones_like(A))[0]
    assert_close(At.grad, ref, rtol=1e-9)


# ---------------------------------------------------------------- hardening (issue 13)
@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_bw_maps_near_the_dtype_range(rng, scale):
    """log/exp/geodesic are homogeneous of degree 1 in the pair: computed on the scaled pair, finite."""
    A, B = random_spd(rng, (3,), 4), random_spd(rng, (3,), 4)
    V = spd.bw_log(A, B)
    assert_close(spd.bw_log(A * scale, B * scale) / scale, V, rtol=1e-10, atol=1e-12)
    assert_close(spd.bw_exp(A * scale, V * scale) / scale, spd.bw_exp(A, V), rtol=1e-10)
    assert_close(spd.bw_geodesic(A * scale, B * scale, t=0.3) / scale, spd.bw_geodesic(A, B, t=0.3), rtol=1e-10)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_bw_exp_overflowing_result_is_an_error():
    P = np.eye(2) * 1e-300
    V = np.diag([1e300, 1.0])                   # L = V / (2P) ~ 5e599: P + V + L P L is beyond float64
    with pytest.raises(ValueError, match="bw_exp: Exp_P\\(V\\) overflows"):
        spd.bw_exp(P, V)


def test_mean_warns_when_it_stops_at_max_iter(rng):
    import warnings

    import optnorm

    X = random_spd(rng, (6,), 3)
    with pytest.warns(optnorm.ConvergenceWarning, match="BuresWasserstein.mean did not converge in 2 iterations"):
        res = spd.bures_wasserstein().mean(X, max_iter=2, tol=1e-14)
    assert not res.converged and res.n_iter == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # a callback that stops the loop is not a failure
        spd.bures_wasserstein().mean(X, callback=lambda s: True)


def test_mean_default_tolerance_is_reachable_in_float32(rng):
    import warnings

    X = random_spd(rng, (8,), 4).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = spd.bures_wasserstein().mean(X)
    assert res.converged and res.mean.dtype == np.float32


def test_metric_methods_validate_with_their_argument_names(rng):
    A = random_spd(rng, (), 3)
    bw = spd.bures_wasserstein()
    with pytest.raises(ValueError, match="BuresWasserstein.distance: Y must be positive definite"):
        bw.distance(A, np.diag([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="BuresWasserstein.exp: V is not symmetric"):
        bw.exp(A, np.triu(np.ones((3, 3))))
    with pytest.raises(ValueError, match="BuresWasserstein.geodesic: t must not be NaN"):
        bw.geodesic(A, A, float("nan"))
    torch = pytest.importorskip("torch", reason="torch is not installed")
    with pytest.raises(TypeError, match="X is numpy, Y is torch"):
        bw.log(A, torch.tensor(A))
