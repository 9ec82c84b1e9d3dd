"""Riemannian batch norm: prescribed output mean/variance under each metric, running statistics, eval mode,
VJPs (X, bias, weight, M) against finite differences, backends, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sl

import optnorm.spd as spd
from optnorm.testing import assert_close, check_vjp

from .helpers import random_spd, ref_funm, to

CASES = [("bw", {}, False), ("bw", {"power": 0.5}, False), ("gbw", {}, True), ("gbw", {"power": 0.7}, True),
         ("airm", {}, False), ("lem", {}, False)]


@pytest.mark.parametrize("metric,kw,use_m", CASES)
def test_output_has_prescribed_mean_and_variance(rng, metric, kw, use_m):
    n = 3
    X, B, M = random_spd(rng, (16,), n), random_spd(rng, (), n), random_spd(rng, (), n)
    w = np.array(0.7)
    MM = M if use_m else None
    Y, _ = spd.riemannian_batch_norm(X, bias=B, weight=w, M=MM, metric=metric, mean_iter=60, eps=1e-12, **kw)
    G, v = spd.rbn_statistics(Y, metric=metric, M=MM, mean_iter=60, **kw)
    if metric in ("bw", "gbw"):   # statistics live in the whitened space M^{-1/2} X^p M^{-1/2}
        p = kw.get("power", 1.0)
        Mh = np.eye(n) if MM is None else ref_funm(M, lambda x: x ** -0.5)
        target = Mh @ ref_funm(B, lambda x: x ** p) @ Mh
    else:
        target = B
    assert_close(G, target, rtol=1e-9, atol=1e-10)
    assert_close(v, w ** 2, rtol=1e-8)
    # independent check of the variance with the metric object / distance functions
    if metric == "bw" and not kw:
        d2 = spd.bw_distance(Y, B, squared=True)
        assert_close(np.mean(d2), w ** 2, rtol=1e-8)
        assert_close(spd.bures_wasserstein().mean(Y, tol=1e-13).mean, B, rtol=1e-8)
    if metric == "gbw" and not kw:
        g = spd.bures_wasserstein(M)
        assert_close(np.mean(g.distance(Y, B, squared=True)), w ** 2, rtol=1e-8)
    if metric == "airm":
        assert_close(np.mean(spd.airm_distance(Y, B, squared=True)), w ** 2, rtol=1e-8)
    if metric == "lem":
        assert_close(np.mean(spd.lem_distance(Y, B, squared=True)), w ** 2, rtol=1e-8)


@pytest.mark.parametrize("metric,kw,use_m", CASES)
def test_rbn_vjp(rng, metric, kw, use_m):
    n = 3
    X, B, M = random_spd(rng, (2, 2), n, shift=0.3), random_spd(rng, (), n), random_spd(rng, (), n)
    MM = M if use_m else None
    G, v = spd.rbn_statistics(X, metric=metric, M=MM, mean_iter=2, **kw)
    for bias in (None, B, np.eye(n)):          # the identity bias has repeated eigenvalues
        check_vjp("rbn_normalize", X, G, v, bias, np.array(1.3), MM, opts=dict(metric=metric, check=False, **kw),
                  atol=1e-6)


def test_running_statistics_and_eval(rng):
    n = 3
    X = random_spd(rng, (8,), n)
    Y, st = spd.riemannian_batch_norm(X, metric="bw", momentum=0.25)
    G, v = spd.rbn_statistics(X, metric="bw")
    bw = spd.bures_wasserstein()
    assert_close(st.mean, bw.geodesic(np.eye(n), G, 0.25), rtol=1e-10)
    assert_close(st.var, 0.75 + 0.25 * v, rtol=1e-12)
    # eval mode uses the running statistics and leaves the state alone
    Ye, st2 = spd.riemannian_batch_norm(X, st, metric="bw", training=False)
    assert st2 is st
    assert_close(Ye, spd.rbn_normalize(X, st.mean, st.var, metric="bw"), rtol=1e-12)
    # AIRM running mean follows the AIRM geodesic, LEM the log-domain average
    _, sa = spd.riemannian_batch_norm(X, metric="airm", momentum=0.5)
    Ga, _ = spd.rbn_statistics(X, metric="airm")
    assert_close(sa.mean, ref_funm(Ga, np.sqrt), rtol=1e-10)
    _, sl_ = spd.riemannian_batch_norm(X, metric="lem", momentum=0.5)
    Gl, _ = spd.rbn_statistics(X, metric="lem")
    assert_close(sl_.mean, ref_funm(Gl, np.sqrt), rtol=1e-10)


def test_one_step_mean_matches_reference_recipe(rng):
    """Default mean_iter=1: one BW fixed-point step from the arithmetic mean (GBWBN's BaryGeom)."""
    X = random_spd(rng, (6,), 3)
    P = X.mean(0)
    H = np.real(sl.sqrtm(P))
    S = np.mean([np.real(sl.sqrtm(H @ x @ H)) for x in X], axis=0)
    Hi = np.linalg.inv(H)
    G, _ = spd.rbn_statistics(X, metric="bw")
    assert_close(G, Hi @ S @ S @ Hi, rtol=1e-10)


@pytest.mark.parametrize("metric", ["bw", "airm", "lem"])
def test_backends(xp, rng, metric):
    X = random_spd(rng, (5,), 3)
    B = random_spd(rng, (), 3)
    Y, st = spd.riemannian_batch_norm(to(xp, X), bias=to(xp, B), weight=to(xp, np.array(0.5)), metric=metric)
    Yr, str_ = spd.riemannian_batch_norm(X, bias=B, weight=np.array(0.5), metric=metric)
    assert_close(Y, Yr, rtol=1e-9, atol=1e-11, xp=xp)
    assert_close(st.mean, str_.mean, rtol=1e-9, xp=xp)
    Y32, _ = spd.riemannian_batch_norm(to(xp, X.astype(np.float32)), metric=metric)
    assert Y32.dtype == xp.float32


def test_bad_input(rng):
    X = random_spd(rng, (4,), 3)
    with pytest.raises(ValueError, match="M is required for metric='gbw'"):
        spd.riemannian_batch_norm(X, metric="gbw")
    with pytest.raises(ValueError, match="M is only used by metric='gbw'"):
        spd.riemannian_batch_norm(X, metric="bw", M=np.eye(3))
    with pytest.raises(ValueError, match="M must be positive definite"):
        spd.riemannian_batch_norm(X, metric="gbw", M=np.diag([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="power must be non-zero"):
        spd.riemannian_batch_norm(X, power=0.0)
    with pytest.raises(ValueError, match="metric must be one of"):
        spd.riemannian_batch_norm(X, metric="euclid")
    with pytest.raises(ValueError, match="X must have shape"):
        spd.riemannian_batch_norm(X[0])
    with pytest.raises(ValueError, match="X must be positive definite"):
        spd.riemannian_batch_norm(-X)
    with pytest.raises(ValueError, match="bias has shape"):
        spd.riemannian_batch_norm(X, bias=np.eye(4))
    with pytest.raises(ValueError, match="momentum must be in"):
        spd.riemannian_batch_norm(X, momentum=2.0)
    with pytest.raises(ValueError, match="eps must be in \\(0, inf\\)"):
        spd.riemannian_batch_norm(X, eps=0.0)
    with pytest.raises(ValueError, match="state.mean has shape"):
        spd.riemannian_batch_norm(X, spd.RBNState(np.eye(2), np.array(1.0)))


def test_public_layer_uses_the_analytic_vjp_in_torch_and_jax(rng):
    """riemannian_batch_norm differentiates through rbn_normalize's VJP (stats detached) in torch and JAX."""
    n = 3
    X, B, M = random_spd(rng, (5,), n), random_spd(rng, (), n), random_spd(rng, (), n)
    G, v = spd.rbn_statistics(X, metric="gbw", M=M)
    from optnorm.spd.batchnorm import rbn_normalize_bwd as _rbn_bwd, rbn_normalize_fwd

    dY = rng.standard_normal(X.shape)
    _, res = rbn_normalize_fwd(X, G, v, B, np.array(0.8), M, metric="gbw")
    ref = _rbn_bwd(res, dY)
    torch = pytest.importorskip("torch", reason="torch is not installed")
    Xt, Bt, Mt = (torch.tensor(a, requires_grad=True) for a in (X, B, M))
    wt = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    Y, _ = spd.riemannian_batch_norm(Xt, bias=Bt, weight=wt, M=Mt, metric="gbw")
    (Y * torch.tensor(dY)).sum().backward()
    assert_close(Xt.grad, ref[0], rtol=1e-8)
    assert_close(Bt.grad, ref[3], rtol=1e-8)
    assert_close(wt.grad, ref[4], rtol=1e-8)
    assert_close(Mt.grad, ref[5], rtol=1e-8)
    jax = pytest.importorskip("jax", reason="jax is not installed")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def loss(x, b, m):
        Y, _ = spd.riemannian_batch_norm(x, bias=b, weight=jnp.asarray(0.8), M=m, metric="gbw", check=False)
        return jnp.sum(Y * jnp.asarray(dY))

    gx, gb, gm = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(jnp.asarray(X), jnp.asarray(B), jnp.asarray(M))
    assert_close(gx, ref[0], rtol=1e-8)
    assert_close(gb, ref[3], rtol=1e-8)
    assert_close(gm, ref[5], rtol=1e-8)


@pytest.mark.parametrize("metric", ["bw", "airm", "lem"])
def test_ill_conditioned_rbn_finite(metric):
    """Condition number 1e8 (float64) and 1e4 (float32): finite output and gradients."""
    from hypothesis import given, settings, strategies as st

    from optnorm.spd.batchnorm import rbn_normalize_bwd as _rbn_bwd, rbn_normalize_fwd

    @settings(max_examples=8, deadline=None)
    @given(st.floats(1.0, 8.0), st.sampled_from(["float32", "float64"]))
    def inner(log_cond, dtype):
        if dtype == "float32":
            log_cond = min(log_cond, 4.0)
        rng = np.random.default_rng(int(log_cond * 131))
        X = random_spd(rng, (4,), 4, cond=10 ** log_cond).astype(dtype)
        G, v = spd.rbn_statistics(X, metric=metric, check=False)
        Y, res = rbn_normalize_fwd(X, G, v, np.eye(4, dtype=dtype), np.asarray(1.0, dtype), None, metric=metric,
                                   check=False)
        assert np.all(np.isfinite(Y)) and Y.dtype == X.dtype
        g = _rbn_bwd(res, np.ones_like(X))
        assert all(np.all(np.isfinite(a)) for a in g if a is not None)

    inner()


# ---------------------------------------------------------------- hardening (issue 13)
def test_rbn_normalize_validates_its_statistics(rng):
    X = random_spd(rng, (4,), 3)
    G, v = spd.rbn_statistics(X)
    with pytest.raises(ValueError, match="rbn_normalize: mean must be positive definite"):
        spd.rbn_normalize(X, np.diag([1.0, -1.0, 1.0]), v)
    with pytest.raises(ValueError, match="rbn_normalize: mean has shape"):
        spd.rbn_normalize(X, np.eye(4), v)
    with pytest.raises(ValueError, match="rbn_normalize: var must be non-negative"):
        spd.rbn_normalize(X, G, np.asarray(-1.0))
    with pytest.raises(ValueError, match="rbn_normalize: var contains NaN or inf"):
        spd.rbn_normalize(X, G, np.asarray(np.nan))
    with pytest.raises(ValueError, match="rbn_normalize: var must have shape"):
        spd.rbn_normalize(X, G, np.ones(2))
    with pytest.raises(ValueError, match="rbn_normalize: weight contains NaN or inf"):
        spd.rbn_normalize(X, G, v, weight=np.asarray(np.inf))
    with pytest.raises(ValueError, match="rbn_normalize: bias is not symmetric"):
        spd.rbn_normalize(X, G, v, bias=np.triu(np.ones((3, 3))))
    torch = pytest.importorskip("torch", reason="torch is not installed")
    with pytest.raises(TypeError, match="var is torch"):
        spd.rbn_normalize(X, G, torch.tensor(1.0))


@pytest.mark.parametrize("metric,use_m", [("bw", False), ("gbw", True), ("airm", False), ("lem", False)])
@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_batch_norm_near_the_dtype_range(rng, metric, use_m, scale):
    """The normalised batch does not depend on a common scale of the data: finite and equal near the range."""
    X = random_spd(rng, (6,), 3)
    M = random_spd(rng, (), 3) if use_m else None
    Y, _ = spd.riemannian_batch_norm(X, M=M, metric=metric)
    Ys, st = spd.riemannian_batch_norm(X * scale, M=M, metric=metric)
    assert np.all(np.isfinite(Ys)) and np.all(np.isfinite(st.mean))
    G, v = spd.rbn_statistics(X, M=M, metric=metric)
    Gs, vs = spd.rbn_statistics(X * scale, M=M, metric=metric)
    assert_close(Gs / scale, G, rtol=1e-9)
    assert_close(vs / (scale if metric in ("bw", "gbw") else 1.0), v, rtol=1e-9)
    if metric in ("airm", "lem"):     # scale-free normalisation (bw/gbw variance is not scale-free with eps)
        assert_close(Ys, Y, rtol=1e-8, atol=1e-10)


def test_statistics_carry_no_gradient_under_jax_grad(rng):
    """rbn statistics are stop_gradient'ed for JAX too (compat.stop_gradient), as torch's are detached."""
    jax = pytest.importorskip("jax", reason="jax is not installed")
    jnp = jax.numpy
    X = jnp.asarray(random_spd(rng, (5,), 3))

    def loss(x):
        Y, _ = spd.riemannian_batch_norm(x, metric="lem", eps=1e-12)
        return jnp.sum(Y)

    def loss_fixed_stats(x):
        G, v = spd.rbn_statistics(jax.lax.stop_gradient(x), metric="lem")
        return jnp.sum(spd.rbn_normalize(x, G, v, metric="lem", eps=1e-12))

    assert_close(jax.grad(loss)(X), np.asarray(jax.grad(loss_fixed_stats)(X)), rtol=1e-8, atol=1e-10)
