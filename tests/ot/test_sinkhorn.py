"""sinkhorn / sinkhorn2: POT, dispatch paths, batching, small reg, callbacks, VJPs, adapters, bad input."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import optnorm
from optnorm.ot import sinkhorn, sinkhorn2
from optnorm.testing import assert_close, check_vjp


def _problem(rng, n=30, m=20, d=2):
    x, y = rng.random((n, d)), rng.random((m, d))
    M = ((x[:, None] - y[None]) ** 2).sum(-1)
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return a / a.sum(), b / b.sum(), M


@pytest.mark.parametrize("method", ["log", "stabilized", "eps_scaling"])
def test_matches_pot(xp, rng, method):
    ot = pytest.importorskip("ot")
    a, b, M = _problem(rng)
    reg = 0.05
    res = sinkhorn(xp.asarray(a), xp.asarray(b), xp.asarray(M), reg, method=method, tol=1e-12, max_iter=5000)
    assert res.converged
    ref = ot.sinkhorn2(a, b, M, reg, method="sinkhorn_log", stopThr=1e-14, numItermax=20000)
    assert_close(res.cost, ref, rtol=1e-8, xp=xp)
    P = res.plan()
    assert_close(xp.sum(P, axis=1), a, atol=1e-11, xp=xp)
    assert_close(xp.sum(P, axis=0), b, atol=1e-10, xp=xp)
    Pref = ot.sinkhorn(a, b, M, reg, method="sinkhorn_log", stopThr=1e-14, numItermax=20000)
    assert_close(P, Pref, rtol=1e-6, atol=1e-12, xp=xp)
    # objective = <P, M> + reg * sum P log P
    assert_close(res.objective, float(np.sum(Pref * M) + reg * np.sum(Pref * np.log(Pref))), rtol=1e-7, xp=xp)
    y = sinkhorn2(xp.asarray(a), xp.asarray(b), xp.asarray(M), reg=reg, tol=1e-12, max_iter=5000)
    assert_close(y, ref, rtol=1e-8, xp=xp)


def test_paths_agree_float32_and_float64(path, rng):
    a, b, M = _problem(rng, 40, 35)
    r64 = sinkhorn(a, b, M, 0.02, tol=1e-10, max_iter=5000)
    r32 = sinkhorn(a.astype(np.float32), b.astype(np.float32), M.astype(np.float32), 0.02, tol=1e-5)
    with optnorm.use_backend("generic"):
        g64 = sinkhorn(a, b, M, 0.02, tol=1e-10, max_iter=5000)
    assert r64.n_iter == g64.n_iter
    assert_close(r64.f, g64.f, rtol=1e-9, atol=1e-12)
    assert_close(r64.cost, g64.cost, rtol=1e-10)
    assert r32.f.dtype == np.float32 and r32.converged
    assert_close(r32.cost, r64.cost, rtol=1e-4)


def test_numba_path_matches_generic_at_small_reg(rng):
    # reg so small that exp(-M/reg) underflows for most entries (and far-off terms would be subnormal)
    a, b, M = _problem(rng, 25, 25)
    with pytest.warns(optnorm.ConvergenceWarning):
        r = sinkhorn(a, b, M * 100, 1e-2, max_iter=300)
    with optnorm.use_backend("generic"), pytest.warns(optnorm.ConvergenceWarning):
        g = sinkhorn(a, b, M * 100, 1e-2, max_iter=300)
    assert np.all(np.isfinite(r.f)) and np.all(np.isfinite(r.g))
    assert_close(r.f - r.f.mean(), g.f - g.f.mean(), rtol=1e-8, atol=1e-8)


def test_batched_equals_individual(xp, rng):
    probs = [_problem(rng, 12, 9) for _ in range(3)]
    A = np.stack([p[0] for p in probs])
    B = np.stack([p[1] for p in probs])
    M = np.stack([p[2] for p in probs])
    res = sinkhorn(xp.asarray(A), xp.asarray(B), xp.asarray(M), 0.1, tol=1e-12)
    assert tuple(res.f.shape) == (3, 12) and tuple(res.cost.shape) == (3,)
    for k, (a, b, m) in enumerate(probs):
        r = sinkhorn(a, b, m, 0.1, tol=1e-12)
        assert_close(res.cost[k], r.cost, rtol=1e-9, xp=xp)
    shared = sinkhorn(xp.asarray(A[0]), xp.asarray(B[0]), xp.asarray(M), 0.1, tol=1e-12)
    assert tuple(shared.g.shape) == (3, 9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiny_reg_no_nan_and_reports_non_convergence(xp, rng, dtype):
    a, b, M = _problem(rng, 30, 30)
    with pytest.warns(optnorm.ConvergenceWarning, match="sinkhorn did not converge in 50 iterations"):
        res = sinkhorn(xp.asarray(a.astype(dtype)), xp.asarray(b.astype(dtype)), xp.asarray(M.astype(dtype)), 1e-4,
                       max_iter=50)
    f, g = (np.asarray(optnorm._lib.compat.to_numpy(z)) for z in (res.f, res.g))
    assert np.all(np.isfinite(f)) and np.all(np.isfinite(g))
    assert np.isfinite(float(res.cost)) and np.isfinite(float(res.objective))
    assert res.converged is False and res.n_iter == 50 and np.isfinite(res.errors[-1])


def test_zero_weights(rng):
    a, b, M = _problem(rng, 10, 8)
    a[3] = 0.0
    a /= a.sum()
    res = sinkhorn(a, b, M, 0.05, tol=1e-12)
    P = res.plan()
    assert np.all(P[3] == 0) and res.converged
    keep = np.arange(10) != 3
    r2 = sinkhorn(a[keep], b, M[keep], 0.05, tol=1e-12)
    assert_close(res.cost, r2.cost, rtol=1e-10)
    from optnorm._lib import ops

    sinkhorn2_fwd, sinkhorn2_bwd = ops.get("ot.sinkhorn2").fwd, ops.get("ot.sinkhorn2").bwd

    for value in ("objective", "transport"):
        _, res_ = sinkhorn2_fwd(a, b, M, reg=0.05, value=value)
        grads = sinkhorn2_bwd(res_, np.array(1.0))
        assert all(np.all(np.isfinite(g)) for g in grads), value


def test_callback_and_history(rng):
    a, b, M = _problem(rng)
    seen = []

    def cb(state):
        seen.append((state.iteration, state.error))
        return state.iteration >= 30

    res = sinkhorn(a, b, M, 0.005, callback=cb, callback_every=10, tol=1e-14)
    assert [s[0] for s in seen] == [10, 20, 30]
    assert res.n_iter == 30 and not res.converged
    assert len(res.errors) >= 3 and res.errors[0] > res.errors[-1]
    ea, eb = res.marginal_errors
    assert float(ea) < 1e-12 and float(eb) > 0


@pytest.mark.parametrize("value", ["objective", "transport"])
def test_vjp(rng, value):
    a, b, M = _problem(rng, 8, 6)
    check_vjp("ot.sinkhorn2", a, b, M, opts=dict(reg=0.1, value=value, tol=1e-13), h=1e-7, rtol=1e-5)
    A = np.stack([a, a[::-1]])
    Ms = np.stack([M, M * 2])
    check_vjp("ot.sinkhorn2", A, b, Ms, opts=dict(reg=0.2, value=value, tol=1e-13), h=1e-7, rtol=1e-5)


def test_torch_gradcheck(rng):
    torch = pytest.importorskip("torch")
    import optnorm.torch as ont

    a, b, M = _problem(rng, 6, 5)
    args = [torch.tensor(z, requires_grad=True) for z in (a, b, M)]
    for value in ("objective", "transport"):
        assert torch.autograd.gradcheck(
            lambda *z: ont.sinkhorn2(*z, reg=0.1, value=value, tol=1e-13), args, eps=1e-7, atol=1e-6)


def test_jax_check_grads_and_jit(rng):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    from jax.test_util import check_grads

    import optnorm.jax as onj

    a, b, M = (jnp.asarray(z) for z in _problem(rng, 6, 5))
    check_grads(lambda m: onj.sinkhorn2(a, b, jnp.asarray(m), reg=0.1, tol=1e-13), (M,), order=1, modes=["rev"])
    f = lambda m: onj.sinkhorn2(a, b, m, reg=0.5, value="objective", max_iter=60)  # noqa: E731
    g_jit = jax.jit(jax.grad(f))(M)
    assert_close(g_jit, np.asarray(jax.grad(f)(M)), rtol=1e-8, atol=1e-12)


def test_bad_input(rng):
    a, b, M = _problem(rng, 5, 4)
    with pytest.raises(ValueError, match=r"reg must be in \(0, inf\)"):
        sinkhorn(a, b, M, 0.0)
    with pytest.raises(ValueError, match="a must be non-negative"):
        sinkhorn(a - 0.5, b, M, 0.1)
    with pytest.raises(ValueError, match="b must sum to 1 along its last axis; it is off by up to 1"):
        sinkhorn(a, 2 * b, M, 0.1)
    with pytest.raises(ValueError, match="b has m = 3"):
        sinkhorn(a, b[:3] / b[:3].sum(), M, 0.1)
    with pytest.raises(ValueError, match="M contains NaN"):
        sinkhorn(a, b, M * np.nan, 0.1)
    with pytest.raises(ValueError, match="(a|M) is empty"):
        sinkhorn(a[:0], b, M[:0], 0.1)
    with pytest.raises(ValueError, match="method must be one of"):
        sinkhorn(a, b, M, 0.1, method="greenkhorn")
    with pytest.raises(TypeError, match="M must have a real floating dtype"):
        sinkhorn(a, b, M.astype(int), 0.1)
    with pytest.raises(ValueError, match="value must be one of"):
        sinkhorn2(a, b, M, reg=0.1, value="plan")


def test_numba_iterations_match_generic(rng):
    """The Numba half-step kernels against the generic Array-API ones: zero weights, small reg, float32."""
    from optnorm._lib.dispatch import DISPATCHERS
    from optnorm.ot import _common as cm

    it = DISPATCHERS["ot.sinkhorn_iterations"]
    M = rng.random((2, 37, 70)) * 3
    a, b = rng.random((2, 37)), rng.random((2, 70))
    a[0, 3] = 0.0                                           # zero-weight atoms
    b[1, :5] = 0.0
    a /= a.sum(-1, keepdims=True)
    b /= b.sum(-1, keepdims=True)
    loga, logb = cm.log_weights(a, np), cm.log_weights(b, np)
    f0, g0 = rng.standard_normal((2, 37)), rng.standard_normal((2, 70))
    for reg in (0.5, 0.03, 1e-4):
        kw = dict(loga=loga, logb=logb, reg=reg, n_steps=3, xp=np)
        with optnorm.use_backend("generic"):
            ref = it(M, f0, g0, **kw)
        with optnorm.use_backend("numba"):
            assert it.path_for(M, f0, g0, **kw) == "numba"
            got = it(M, f0, g0, **kw)
            got32 = it(M.astype(np.float32), f0.astype(np.float32), g0.astype(np.float32),
                       **{**kw, "loga": loga.astype(np.float32), "logb": logb.astype(np.float32)})
        for x, y, y32 in zip(got, ref, got32):
            assert_close(x, y, rtol=1e-12, atol=1e-12 * max(1.0, reg * 100))
            assert_close(y32, y, rtol=1e-5, atol=1e-5, check_dtype=False)


@given(reg=st.floats(1e-4, 10.0), scale=st.floats(1e-3, 1e3))
def test_no_nan_for_any_reg_and_scale(reg, scale):
    rng = np.random.default_rng(1)
    a, b, M = _problem(rng, 12, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optnorm.ConvergenceWarning)    # small reg: 200 iterations are not enough
        res = sinkhorn(a, b, M * scale, reg, max_iter=200)
    assert np.all(np.isfinite(res.f)) and np.all(np.isfinite(res.g)) and np.isfinite(res.cost)
    assert np.isfinite(res.errors[-1])
    assert float(res.marginal_errors[0]) < 1e-8              # rows are exact after every row update


def test_solver_records_no_autograd_graph(rng):
    torch = pytest.importorskip("torch")
    a, b, M = _problem(rng, 10, 8)
    Mt = torch.tensor(M, requires_grad=True)
    res = sinkhorn(torch.tensor(a), torch.tensor(b), Mt, 0.1)
    assert not res.f.requires_grad and not res.cost.requires_grad
    from optnorm.ot import sinkhorn_newton_sparse

    assert not sinkhorn_newton_sparse(torch.tensor(a), torch.tensor(b), Mt, 0.1).f.requires_grad


def test_float32_default_tolerance_is_reachable(xp, rng):
    """Issue #13: float32 Sinkhorn with tol=1e-9 never converged (always ran to max_iter)."""
    a, b, M = _problem(rng, 40, 30)
    args = [xp.asarray(z.astype(np.float32)) for z in (a, b, M)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", optnorm.ConvergenceWarning)
        res = sinkhorn(*args, 0.05)
    assert res.converged and res.n_iter < 1000
    assert res.tol == pytest.approx(100 * np.finfo(np.float32).eps)
    assert sinkhorn(a, b, M, 0.05).tol == 1e-9
    ref = sinkhorn(a, b, M, 0.05)
    assert_close(res.cost, float(ref.cost), rtol=1e-4, check_dtype="float32", xp=xp)


def test_non_convergence_warns_unless_a_callback_stopped_it(rng):
    a, b, M = _problem(rng)
    with pytest.warns(optnorm.ConvergenceWarning, match="sinkhorn did not converge in 5 iterations"):
        res = sinkhorn(a, b, M, 0.01, max_iter=5)
    assert not res.converged
    with pytest.warns(optnorm.ConvergenceWarning, match="sinkhorn2 did not converge"):
        sinkhorn2(a, b, M, reg=0.01, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", optnorm.ConvergenceWarning)
        res = sinkhorn(a, b, M, 0.01, callback=lambda s: s.iteration >= 20, callback_every=10)
    assert not res.converged and res.n_iter == 20


@pytest.mark.parametrize("method", ["log", "eps_scaling", "stabilized"])
@pytest.mark.parametrize("scale,reg", [(1e300, 0.5), (1e300, 1e-3), (1e-300, 0.5), (1.0, 1e-8)])
def test_costs_near_the_range_give_finite_results(path, rng, method, scale, reg):
    """Issue #13: sinkhorn / sinkhorn2 returned NaN or inf for costs ~1e300 (M / reg overflowed)."""
    a, b, M = _problem(rng, 20, 15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optnorm.ConvergenceWarning)   # effectively unregularised: slow
        res = sinkhorn(a, b, M * scale, reg, method=method, max_iter=200)
        v = sinkhorn2(a, b, M * scale, reg=reg, method=method, max_iter=200)
    for z in (res.f, res.g, res.cost, res.objective, v):
        assert np.all(np.isfinite(z))
    assert 0 <= float(v) <= float(np.max(M * scale))
    assert float(res.marginal_errors[0]) < 1e-6                # rows exact after the row update


def test_potentials_scale_with_the_costs(rng):
    """Potentials are in cost units: (t M, t reg) has potentials t (f, g) and cost t <P, M>."""
    a, b, M = _problem(rng, 20, 15)
    r1 = sinkhorn(a, b, M, 0.05, tol=1e-12)
    for t in (2.0 ** 900, 2.0 ** -900):
        rt = sinkhorn(a, b, M * t, 0.05 * t, tol=1e-12)
        assert_close(rt.cost, t * float(r1.cost), rtol=1e-9)
        assert_close(rt.f, t * r1.f, rtol=1e-8, atol=1e-8 * t)


@pytest.mark.parametrize("fn", ["sinkhorn", "sinkhorn2", "sinkhorn_newton_sparse"])
def test_reg_must_be_finite(rng, fn):
    """Issue #13: positive-scalar checks accepted inf (reg=inf gave NaN potentials)."""
    import optnorm.ot as ot

    a, b, M = _problem(rng, 6, 5)
    call = (lambda r: ot.sinkhorn2(a, b, M, reg=r)) if fn == "sinkhorn2" else (lambda r: getattr(ot, fn)(a, b, M, r))
    with pytest.raises(ValueError, match="reg must be finite"):
        call(float("inf"))
    with pytest.raises(ValueError, match=r"reg must be in \(0, inf\)"):
        call(0.0)
