"""Sliced Wasserstein estimators, Max-SW, vMF sampling and v-DSW."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.special

from optnorm.ot import (emd2, max_sliced_wasserstein, sample_vmf, sliced_wasserstein, sliced_wasserstein_sphere,
                        vmf_sliced_wasserstein, wasserstein_1d)
from optnorm.ot.sliced import _directions
import optnorm.ot as oo
from optnorm.testing import assert_close, check_vjp

ESTIMATORS = ["mc", "qmc", "lower_cv", "upper_cv"]


def _clouds(rng, n=60, m=50, d=4):
    A = rng.standard_normal((d, d))
    X = rng.standard_normal((n, d)) @ A
    Y = rng.standard_normal((m, d)) * np.linspace(0.5, 2, d) + 1.0
    return X, Y


def _w(rng, k):
    w = rng.random(k) + 0.1
    return w / w.sum()


def _sw_ref(X, Y, a, b, theta, p):
    """mean over the given directions of W_p^p by the exact 1-D formula (POT-independent loop)."""
    return np.mean([float(wasserstein_1d(X @ t, Y @ t, a, b, p=p, squared=True)) for t in theta.T])


@pytest.mark.parametrize("weighted", [False, True])
def test_mc_matches_pot_with_same_directions(xp, rng, weighted):
    ot = pytest.importorskip("ot")
    X, Y = _clouds(rng)
    a, b = (_w(rng, 60), _w(rng, 50)) if weighted else (None, None)
    theta, _ = _directions(4, 32, "mc", 3)
    conv = (lambda z: None if z is None else xp.asarray(z))
    y = sliced_wasserstein(xp.asarray(X), xp.asarray(Y), conv(a), conv(b), n_projections=32, seed=3)
    pot = ot.sliced_wasserstein_distance(X, Y, a, b, projections=theta, p=2)
    assert_close(y, pot, rtol=1e-10, xp=xp)
    assert_close(y, np.sqrt(_sw_ref(X, Y, a, b, theta, 2)), rtol=1e-10, xp=xp)


def test_equal_size_fast_path_matches_general(rng):
    X, Y = _clouds(rng, 40, 40)
    u = np.full(40, 1 / 40)
    for p in (1, 2, 3):
        y1 = sliced_wasserstein(X, Y, n_projections=16, p=p, seed=0)
        y2 = sliced_wasserstein(X, Y, u, u, n_projections=16, p=p, seed=0)
        assert_close(y1, y2, rtol=1e-10)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_estimators_run_on_every_backend(xp, rng, estimator):
    X, Y = _clouds(rng)
    a, b = _w(rng, 60), _w(rng, 50)
    y_np, s_np = sliced_wasserstein(X, Y, a, b, n_projections=16, estimator=estimator, seed=1, return_std=True)
    y, s = sliced_wasserstein(xp.asarray(X), xp.asarray(Y), xp.asarray(a), xp.asarray(b), n_projections=16,
                              estimator=estimator, seed=1, return_std=True)
    assert_close(y, y_np, rtol=1e-10, xp=xp)
    assert_close(s, s_np, rtol=1e-8, xp=xp)
    y32 = sliced_wasserstein(xp.asarray(X.astype(np.float32)), xp.asarray(Y.astype(np.float32)), n_projections=16,
                             estimator=estimator, seed=1)
    assert y32.dtype == xp.float32
    assert_close(y32, sliced_wasserstein(X, Y, n_projections=16, estimator=estimator, seed=1), rtol=1e-4, xp=xp)


@pytest.fixture(scope="module")
def gaussian_problem():
    rng = np.random.default_rng(7)
    d = 6
    X = rng.standard_normal((200, d)) * np.linspace(0.3, 2.0, d)
    Y = rng.standard_normal((200, d)) @ (rng.standard_normal((d, d)) * 0.5) + 0.7
    theta, _ = _directions(d, 20000, "mc", 123)
    ref = _sw_ref_fast(X, Y, theta)
    runs = {}
    for est in ESTIMATORS:
        vals = np.array([float(sliced_wasserstein(X, Y, n_projections=16, estimator=est, seed=s, squared=True))
                         for s in range(300)])
        runs[est] = vals
    return X, Y, ref, runs


def _sw_ref_fast(X, Y, theta):
    xp_ = np.sort(X @ theta, axis=0)
    yp_ = np.sort(Y @ theta, axis=0)
    w = np.mean((xp_ - yp_) ** 2, axis=0)
    return w.mean(), w.std() / np.sqrt(len(w))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_unbiased_for_sw_pp(gaussian_problem, estimator):
    _, _, (ref, ref_se), runs = gaussian_problem
    vals = runs[estimator]
    se = vals.std(ddof=1) / np.sqrt(len(vals))
    bias_margin = 0.02 * ref if estimator.endswith("cv") else 0.0   # O(1/L) bias of the fitted CV coefficient
    assert abs(vals.mean() - ref) < 4 * se + 4 * ref_se + bias_margin, (vals.mean(), ref, se)


def test_control_variates_reduce_variance(gaussian_problem):
    # measured on this problem (300 seeds, L = 16): lower CV ~17x, upper CV ~1.6x lower variance than MC
    _, _, _, runs = gaussian_problem
    v_mc = runs["mc"].var()
    assert runs["lower_cv"].var() < v_mc / 5, (runs["lower_cv"].var(), v_mc)
    assert runs["upper_cv"].var() < v_mc / 1.2, (runs["upper_cv"].var(), v_mc)


def test_qmc_reduces_variance_in_3d():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((150, 3)) * np.array([0.5, 1.0, 2.0])
    Y = rng.standard_normal((150, 3)) + 1.0
    runs = {e: np.array([float(sliced_wasserstein(X, Y, n_projections=32, estimator=e, seed=s, squared=True))
                         for s in range(100)]) for e in ("mc", "qmc")}
    # spiral + Haar rotation: measured ~2900x lower variance than MC here
    assert runs["qmc"].var() < runs["mc"].var() / 50, {e: v.var() for e, v in runs.items()}
    theta, _ = _directions(3, 40000, "mc", 99)
    ref, ref_se = _sw_ref_fast(X, Y, theta)
    q = runs["qmc"]
    assert abs(q.mean() - ref) < 4 * ref_se + 4 * q.std(ddof=1) / np.sqrt(len(q)), (q.mean(), ref)


def test_reported_std_matches_spread(gaussian_problem):
    X, Y, _, runs = gaussian_problem
    for est in ("mc", "lower_cv"):
        stds = [float(sliced_wasserstein(X, Y, n_projections=16, estimator=est, seed=s, squared=True,
                                         return_std=True)[1]) for s in range(40)]
        ratio = np.mean(stds) / runs[est].std(ddof=1)
        assert 0.6 < ratio < 1.5, (est, ratio)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("p", [1, 2, 3])
def test_vjp(rng, estimator, p):
    X, Y = _clouds(rng, 12, 12, 3)
    opts = dict(n_projections=8, estimator=estimator, seed=1, p=p)
    check_vjp("ot.sliced_wasserstein", X, Y, None, None, opts=opts)
    X2, Y2 = _clouds(rng, 10, 7, 3)
    check_vjp("ot.sliced_wasserstein", X2, Y2, _w(rng, 10), _w(rng, 7), opts=opts, h=1e-8)


def test_torch_gradcheck(rng):
    torch = pytest.importorskip("torch")
    import optnorm.torch as ont

    X, Y = _clouds(rng, 8, 6, 3)
    args = [torch.tensor(z, requires_grad=True) for z in (X, Y)]
    for est in ("mc", "upper_cv"):
        assert torch.autograd.gradcheck(
            lambda x, y: ont.sliced_wasserstein(x, y, n_projections=8, estimator=est, seed=0), args)
    # Max-SW: its maximiser often sits on a kink (two sorting orders tie), so finite differences are checked in
    # test_max_sliced_ascends_and_differentiates on NumPy; here the torch gradient must equal optnorm's VJP.
    from optnorm._lib import ops

    op = ops.get("ot.max_sliced_wasserstein")
    val = ont.max_sliced_wasserstein(*args, seed=0)
    val.backward()
    _, res = op.fwd(X, Y, seed=0)
    gX, gY, _, _ = op.bwd(res, np.array(1.0))
    assert_close(args[0].grad, gX, rtol=1e-12)
    assert_close(args[1].grad, gY, rtol=1e-12)


def test_jax_check_grads_and_jit(rng):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    from jax.test_util import check_grads

    import optnorm.jax as onj

    X, Y = (jnp.asarray(z) for z in _clouds(rng, 8, 6, 3))
    check_grads(lambda x, y: onj.sliced_wasserstein(x, y, n_projections=8, estimator="lower_cv", seed=0), (X, Y),
                order=1, modes=["rev"])
    g = jax.jit(jax.grad(lambda x: onj.sliced_wasserstein(x, Y, n_projections=8, seed=0)))(X)
    g_ref = jax.grad(lambda x: onj.sliced_wasserstein(x, Y, n_projections=8, seed=0))(X)
    assert_close(g, np.asarray(g_ref), rtol=1e-10)


def test_max_sliced_ascends_and_differentiates(rng):
    X = rng.standard_normal((200, 5))
    Y = X * np.array([1, 1, 3, 1, 1.0]) + np.array([0, 2.0, 0, 0, 0])
    val = float(max_sliced_wasserstein(X, Y, seed=0))
    theta, _ = _directions(5, 2000, "mc", 1)
    best_random = max(float(wasserstein_1d(X @ t, Y @ t, p=2)) for t in theta.T[:300])
    assert val >= best_random - 1e-9
    sw = float(sliced_wasserstein(X, Y, n_projections=256, seed=0))
    assert val > sw
    # a smooth maximum (Y is X shifted: both clouds sort alike on every direction) for finite differences;
    # generic clouds often have their maximiser on a kink where Max-SW is not differentiable
    X3 = rng.standard_normal((15, 3))
    Y3 = X3 + np.array([1.5, -0.5, 0.2]) + 0.05 * rng.standard_normal((15, 3))
    check_vjp("ot.max_sliced_wasserstein", X3, Y3, None, None, opts=dict(seed=0, n_iter=200), rtol=1e-4, atol=1e-6)


def test_vmf_sampler_mean_resultant():
    for d, kappa in ((3, 1.0), (10, 5.0), (50, 100.0)):
        mu = np.zeros(d)
        mu[-1] = 1.0
        x = sample_vmf(mu, kappa, 20000, seed=0)
        assert_close(np.linalg.norm(x, axis=1), np.ones(20000), rtol=1e-12)
        a_d = scipy.special.ive(d / 2, kappa) / scipy.special.ive(d / 2 - 1, kappa)
        assert abs(x[:, -1].mean() - a_d) < 4 * x[:, -1].std() / np.sqrt(20000) + 1e-3, (d, kappa)


def test_vmf_sliced_between_sw_and_max_sw(rng):
    X = rng.standard_normal((150, 4))
    Y = X + np.array([2.0, 0, 0, 0])
    sw = float(sliced_wasserstein(X, Y, n_projections=512, seed=0))
    msw = float(max_sliced_wasserstein(X, Y, seed=0))
    v = float(vmf_sliced_wasserstein(X, Y, kappa=20.0, n_projections=128, seed=0))
    assert sw < v <= msw + 1e-9
    loc = np.array([1.0, 0, 0, 0])
    check_vjp("ot.vmf_sliced_wasserstein", X[:10], Y[:10], None, None,
              opts=dict(location=loc, kappa=5.0, n_projections=16, seed=0))


def test_bad_input(rng):
    X, Y = _clouds(rng, 10, 10, 3)
    with pytest.raises(ValueError, match="estimator must be one of"):
        sliced_wasserstein(X, Y, estimator="rqmc")
    with pytest.raises(ValueError, match="dimension 'd'"):
        sliced_wasserstein(X, Y[:, :2])
    with pytest.raises(ValueError, match=r"p must be in \[1, inf\)"):
        sliced_wasserstein(X, Y, p=0.5)
    with pytest.raises(ValueError, match=r"n_projections must be in \[1, inf\)"):
        sliced_wasserstein(X, Y, n_projections=0)
    with pytest.raises(ValueError, match="a must sum to 1"):
        sliced_wasserstein(X, Y, np.full(10, 0.2))
    with pytest.raises(ValueError, match="b has shape"):
        sliced_wasserstein(X, Y, None, np.full(3, 1 / 3))
    with pytest.raises(ValueError, match="X is empty"):
        sliced_wasserstein(X[:0], Y)
    with pytest.raises(ValueError, match="Y contains NaN"):
        sliced_wasserstein(X, Y * np.nan)
    with pytest.raises(ValueError, match=r"kappa must be in \[0, inf\)"):
        vmf_sliced_wasserstein(X, Y, kappa=-1.0)


def test_low_precision_inputs(rng):
    torch = pytest.importorskip("torch")
    X, Y = _clouds(rng, 40, 30, 3)
    for dt in (torch.float16, torch.bfloat16):
        y = sliced_wasserstein(torch.tensor(X, dtype=dt), torch.tensor(Y, dtype=dt), n_projections=16, seed=0)
        assert y.dtype == dt
        assert_close(y.float(), float(sliced_wasserstein(X, Y, n_projections=16, seed=0)), rtol=2e-2)
        w = wasserstein_1d(torch.tensor(X[:, 0], dtype=dt), torch.tensor(Y[:, 0], dtype=dt), p=2)
        assert w.dtype == dt
        assert_close(w.float(), float(wasserstein_1d(X[:, 0], Y[:, 0], p=2)), rtol=2e-2)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_batched_clouds_match_loop(xp, rng, estimator):
    Xs = rng.standard_normal((2, 3, 20, 3))
    Y = rng.standard_normal((20, 3)) + 1.0
    a = np.stack([_w(rng, 20) for _ in range(3)])             # (3, n): broadcasts against the (2, 3) batch
    y, s = sliced_wasserstein(xp.asarray(Xs), xp.asarray(Y), xp.asarray(a), None, n_projections=16,
                              estimator=estimator, seed=4, return_std=True)
    assert tuple(y.shape) == (2, 3) and tuple(s.shape) == (2, 3)
    ref = np.array([[float(sliced_wasserstein(Xs[i, j], Y, a[j], None, n_projections=16, estimator=estimator,
                                              seed=4)) for j in range(3)] for i in range(2)])
    assert_close(y, ref, rtol=1e-10, xp=xp)
    y0 = sliced_wasserstein(xp.asarray(Xs), xp.asarray(Y), n_projections=16, estimator=estimator, seed=4)
    ref0 = np.array([[float(sliced_wasserstein(Xs[i, j], Y, n_projections=16, estimator=estimator, seed=4))
                      for j in range(3)] for i in range(2)])
    assert_close(y0, ref0, rtol=1e-10, xp=xp)


@pytest.mark.parametrize("estimator", ["mc", "upper_cv"])
def test_batched_vjp(rng, estimator):
    Xs = rng.standard_normal((2, 8, 3))
    Y = rng.standard_normal((6, 3))
    a = np.stack([_w(rng, 8) for _ in range(2)])
    opts = dict(n_projections=6, estimator=estimator, seed=2)
    check_vjp("ot.sliced_wasserstein", Xs, Y, a, _w(rng, 6), opts=opts, h=1e-8)
    check_vjp("ot.sliced_wasserstein", Xs, rng.standard_normal((8, 3)), None, None, opts=opts)


@pytest.mark.parametrize("t", [1e300, 1e-300, 2.0 ** -1000])
def test_extreme_magnitudes_scale_exactly(rng, t):
    """Issue #13: max_sliced_wasserstein and vmf_sliced_wasserstein returned NaN/inf near the dtype's range;
    the clouds are divided by a power of two first, so every estimator is exactly 1-homogeneous."""
    X, Y = _clouds(rng, 30, 20, 3)
    for fn, kw in ((sliced_wasserstein, {}), (sliced_wasserstein, {"estimator": "upper_cv"}),
                   (max_sliced_wasserstein, {}), (vmf_sliced_wasserstein, {"n_iter": 5})):
        base = float(fn(X, Y, seed=0, **kw))
        y = fn(X * t, Y * t, seed=0, **kw)
        assert np.isfinite(y), fn.__name__
        assert float(y) == pytest.approx(t * base, rel=1e-9), fn.__name__
    with pytest.raises(ValueError, match="overflows"):
        sliced_wasserstein(X * 1e300, Y * 1e300, seed=0, squared=True)


def test_sample_vmf_location_is_normalised_safely():
    """Issue #13: a zero mu gave NaN samples; tiny and huge mu are just directions."""
    with pytest.raises(ValueError, match="mu must be a non-zero vector"):
        sample_vmf(np.zeros(3), 5.0, 10, seed=0)
    ref = sample_vmf(np.array([0.0, 0.0, 1.0]), 5.0, 50, seed=0)
    for s in (1e-300, 1e300):
        assert_close(sample_vmf(np.array([0.0, 0.0, s]), 5.0, 50, seed=0), ref, rtol=0)
    with pytest.raises(ValueError, match="location must be a non-zero vector"):
        vmf_sliced_wasserstein(np.eye(3), np.eye(3)[::-1], location=np.zeros(3))


@pytest.mark.parametrize("bad,exc", [("abc", TypeError), (-1, ValueError), (1.5, TypeError)])
def test_seeds_are_validated(bad, exc):
    """Issue #13: seed="abc" or -1 raised NumPy's own errors; the Seed role names the argument."""
    X = np.eye(3)
    for call in (lambda: sliced_wasserstein(X, X, seed=bad), lambda: max_sliced_wasserstein(X, X, seed=bad),
                 lambda: sample_vmf(np.ones(3), 1.0, 4, seed=bad)):
        with pytest.raises(exc, match="seed"):
            call()


# ---------------------------------------------------------------------------------------------- given directions
def test_given_projections_and_result_match_pot(xp, rng):
    """projections= are used as given (POT's convention); return_result carries POT's log extras."""
    ot = pytest.importorskip("ot")
    X, Y = _clouds(rng)
    a, b = _w(rng, 60), _w(rng, 50)
    P = rng.standard_normal((4, 24))
    P /= np.linalg.norm(P, axis=0)
    v, log = ot.sliced_wasserstein_distance(X, Y, a, b, projections=P, log=True)
    r = sliced_wasserstein(xp.asarray(X), xp.asarray(Y), xp.asarray(a), xp.asarray(b),
                           projections=xp.asarray(P), return_result=True)
    assert_close(r.value, v, rtol=1e-12, xp=xp)
    assert_close(r.projected, log["projected_emds"], rtol=1e-12, xp=xp)
    assert_close(r.projections, P, rtol=0, xp=xp)
    assert float(r.std) > 0 and r.estimator == "mc" and "SlicedResult(" in repr(r)
    v2 = ot.sliced_wasserstein_distance(X, Y, projections=3.0 * P)           # not unit: used as given
    assert_close(sliced_wasserstein(X, Y, projections=3.0 * P), v2, rtol=1e-12)
    big = sliced_wasserstein(X, Y, projections=P * 1e300)                   # scaled like the clouds: exact
    assert_close(big, float(sliced_wasserstein(X, Y, projections=P)) * 1e300, rtol=1e-12)
    check_vjp("ot.sliced_wasserstein", X[:12], Y[:9], _w(rng, 12), _w(rng, 9), opts=dict(projections=P * 1e10))


def test_given_projections_bad_input(rng):
    X, Y = _clouds(rng, 10, 10, 3)
    with pytest.raises(ValueError, match="projections are given, which only estimator='mc' can use"):
        sliced_wasserstein(X, Y, projections=np.eye(3), estimator="lower_cv")
    with pytest.raises(ValueError, match="projections has shape"):
        sliced_wasserstein(X, Y, projections=np.ones((4, 5)))
    with pytest.raises(ValueError, match="projections contains NaN"):
        sliced_wasserstein(X, Y, projections=np.full((3, 2), np.nan))
    torch = pytest.importorskip("torch")
    import optnorm.torch as ont

    with pytest.raises(TypeError, match="return_result=True returns a result object"):
        ont.sliced_wasserstein(torch.tensor(X, requires_grad=True), torch.tensor(Y), return_result=True)


# ---------------------------------------------------------------------------------------------- spherical SW
def _sphere(rng, n, d, shift=0.0):
    z = rng.standard_normal((n, d)) + shift
    return z / np.linalg.norm(z, axis=1, keepdims=True)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_sphere_matches_pot_and_the_circle_lp(xp, rng, p):
    """Same planes as POT; every projected circle distance also equals the LP with the geodesic cost on the
    circle, min(|s - t|, 1 - |s - t|)^p (POT's own binary search is accurate to ~1e-6 only)."""
    ot = pytest.importorskip("ot")
    from optnorm.ot import sliced as S

    X, Y = _sphere(rng, 40, 3), _sphere(rng, 30, 3, [1.0, 0.0, 0.0])
    a, b = _w(rng, 40), _w(rng, 30)
    U = S._sphere_projections(3, 12, np.random.default_rng(1))
    for aa, bb in ((None, None), (a, b)):
        ref = ot.sliced_wasserstein_sphere(X, Y, aa, bb, p=p, projections=U, n_projections=12)
        conv = (lambda z: None if z is None else xp.asarray(z))
        v = sliced_wasserstein_sphere(xp.asarray(X), xp.asarray(Y), conv(aa), conv(bb), p=p,
                                      projections=xp.asarray(U))
        assert_close(v, ref, rtol=1e-5, xp=xp)
    tu, _ = S._circle_coords(X, U, np)
    tv, _ = S._circle_coords(Y, U, np)
    c, _ = S._circle_wpp(tu, tv, a, b, p, np)
    for k in range(3):
        D = np.abs(tu[k][:, None] - tv[k][None])
        lp = float(emd2(a, b, np.minimum(D, 1 - D) ** p))
        assert_close(c[k], lp, rtol=1e-12, atol=1e-16)
    v = sliced_wasserstein_sphere(X, Y, a, b, p=p, projections=U, squared=True)
    assert_close(v, np.mean(c), rtol=1e-12)


def test_sphere_same_measure_is_zero_and_paths_agree(rng):
    import optnorm

    X = _sphere(rng, 50, 4)
    assert float(sliced_wasserstein_sphere(X, X, seed=0)) < 1e-12
    Y = _sphere(rng, 35, 4, 0.7)
    a = _w(rng, 50)
    v = float(sliced_wasserstein_sphere(X, Y, a, None, p=1.5, seed=2))
    with optnorm.use_backend("generic"):
        v0 = float(sliced_wasserstein_sphere(X, Y, a, None, p=1.5, seed=2))
    assert_close(v, v0, rtol=1e-13)
    assert 0 < v < 1


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_sphere_vjp(rng, p):
    """Points (through the angles of their projections) and weights (the optimal shift often sits on a kink,
    which moves with the weights)."""
    for seed in range(3):
        X, Y = _sphere(rng, 9, 3), _sphere(rng, 7, 3, 0.5)
        check_vjp("ot.sliced_wasserstein_sphere", X, Y, _w(rng, 9), _w(rng, 7),
                  opts=dict(seed=seed, n_projections=5, p=p), h=1e-7, rtol=1e-4, atol=1e-7)


def test_sphere_torch_and_jax_gradients_agree(rng):
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    import optnorm.jax as onj
    import optnorm.torch as ont

    X, Y = _sphere(rng, 12, 3), _sphere(rng, 10, 3, 1.0)
    t = torch.tensor(X, requires_grad=True)
    ont.sliced_wasserstein_sphere(t, torch.tensor(Y), seed=0).backward()
    g = jax.grad(lambda x: onj.sliced_wasserstein_sphere(x, jnp.asarray(Y), seed=0))(jnp.asarray(X))
    assert_close(t.grad.numpy(), np.asarray(g), atol=1e-12)


def test_sphere_bad_input(rng):
    X, Y = _sphere(rng, 10, 3), _sphere(rng, 8, 3)
    with pytest.raises(ValueError, match="X must lie on the unit sphere"):
        sliced_wasserstein_sphere(2 * X, Y)
    with pytest.raises(ValueError, match="Y must lie on the unit sphere"):
        sliced_wasserstein_sphere(X, Y * 1.01)
    with pytest.raises(ValueError, match="dimension 'd'"):
        sliced_wasserstein_sphere(X, _sphere(rng, 8, 4))
    with pytest.raises(ValueError, match=r"p must be in \[1, inf\)"):
        sliced_wasserstein_sphere(X, Y, p=0.5)
    with pytest.raises(ValueError, match="projections must have shape"):
        sliced_wasserstein_sphere(X, Y, projections=np.ones((5, 3, 3)))
    with pytest.raises(ValueError, match="X has dimension d = 1"):
        sliced_wasserstein_sphere(np.ones((4, 1)), np.ones((3, 1)))


def test_max_sliced_callback_convention_and_progress(capsys):
    """One callback convention (#18): a MaxSWState per ascent step, True stops; progress= reports on stderr."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    Y = X + np.array([2.0, 0.0, 0.0, 0.0])
    seen = []
    v = oo.max_sliced_wasserstein(X, Y, seed=0, callback=lambda s: seen.append(s) or s.n_iter >= 3)
    assert [s.n_iter for s in seen] == [1, 2, 3]
    assert all(isinstance(s, oo.MaxSWState) and s.direction.shape == (4,) for s in seen)
    assert all(s.value <= t.value for s, t in zip(seen, seen[1:]))          # the ascent never goes down
    assert abs(float(v) - 2.0) < 0.2
    full = oo.max_sliced_wasserstein(X, Y, seed=0, progress=True)
    assert "max_sliced_wasserstein" in capsys.readouterr().err
    assert float(full) >= float(v) - 1e-12
