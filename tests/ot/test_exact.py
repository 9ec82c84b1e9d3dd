"""emd / emd2: POT, a dense LP reference, assignment path, potentials, VJP, adapters, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm.ot import emd, emd2
from optnorm.testing import assert_close, check_vjp


def _problem(rng, n=12, m=9):
    x, y = rng.random((n, 2)), rng.random((m, 2))
    M = ((x[:, None] - y[None]) ** 2).sum(-1)
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return a / a.sum(), b / b.sum(), M


def test_matches_pot(xp, rng):
    ot = pytest.importorskip("ot")
    a, b, M = _problem(rng)
    r = emd(xp.asarray(a), xp.asarray(b), xp.asarray(M))
    assert r.method == "network_simplex" and r.converged
    assert_close(r.cost, ot.emd2(a, b, M), rtol=1e-10, xp=xp)
    P = np.asarray(r.plan)
    assert_close(P.sum(1), a, atol=1e-12)
    assert_close(P.sum(0), b, atol=1e-12)
    f, g = np.asarray(r.f), np.asarray(r.g)
    assert np.max(f[:, None] + g[None] - M) < 1e-10                     # dual feasible
    assert_close(a @ f + b @ g, float(r.cost), rtol=1e-10)              # strong duality
    assert_close(a @ f, b @ g, rtol=1e-10, atol=1e-14)                  # gauge
    assert_close(emd2(xp.asarray(a), xp.asarray(b), xp.asarray(M)), ot.emd2(a, b, M), rtol=1e-10, xp=xp)


def test_assignment_path(xp, rng):
    ot = pytest.importorskip("ot")
    _, _, M = _problem(rng, 15, 15)
    r = emd(None, None, xp.asarray(M), method="assignment")
    assert r.method == "assignment"
    assert_close(r.cost, ot.emd2([], [], M), rtol=1e-12, xp=xp)
    f, g = np.asarray(r.f), np.asarray(r.g)
    assert np.max(f[:, None] + g[None] - M) < 1e-12
    assert_close(f.mean() + g.mean(), float(r.cost), rtol=1e-10)


def test_float32_keeps_dtype(xp, rng):
    a, b, M = _problem(rng)
    r = emd2(xp.asarray(a.astype(np.float32)), xp.asarray(b.astype(np.float32)), xp.asarray(M.astype(np.float32)))
    assert r.dtype == xp.float32
    assert_close(r, float(emd2(a, b, M)), rtol=1e-5, xp=xp)


def test_vjp(rng):
    a, b, M = _problem(rng, 7, 6)
    check_vjp("ot.emd2", a, b, M, h=1e-8)
    check_vjp("ot.emd2", None, None, _problem(rng, 6, 6)[2])


def test_torch_gradcheck_and_jax(rng):
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    from jax.test_util import check_grads

    import optnorm.jax as onj
    import optnorm.torch as ont

    a, b, M = _problem(rng, 5, 4)
    args = [torch.tensor(z, requires_grad=True) for z in (a, b, M)]
    assert torch.autograd.gradcheck(lambda *z: ont.emd2(*z), args, eps=1e-8, atol=1e-5)
    check_grads(lambda m: onj.emd2(jnp.asarray(a), jnp.asarray(b), jnp.asarray(m)), (jnp.asarray(M),), order=1,
                modes=["rev"])
    with pytest.raises(TypeError, match="host"):          # SciPy cannot run on tracers: a clear error under jit
        jax.jit(lambda m: onj.emd2(None, None, m))(jnp.asarray(M[:4]))


def test_bad_input(rng):
    a, b, M = _problem(rng, 4, 3)
    with pytest.raises(ValueError, match="a must be non-negative"):
        emd(a - 1, b, M)
    with pytest.raises(ValueError, match="b must sum to 1 along its last axis; it is off by up to"):
        emd(a, b * 3, M)
    with pytest.raises(ValueError, match="a has n = 2"):
        emd(a[:2] / a[:2].sum(), b, M)
    with pytest.raises(ValueError, match="M contains NaN"):
        emd(a, b, M * np.inf)
    with pytest.raises(ValueError, match="M is empty"):
        emd(None, None, np.ones((0, 3)))


def _gauss_hist(n, mu, sd):
    x = np.arange(n, dtype=float)
    h = np.exp(-0.5 * ((x - mu) / sd) ** 2)
    return h / h.sum(), x


def test_small_costs_are_exact(rng):
    """Issue #13: costs ~1e-8 gave a cost off by more than 100% (HiGHS's tolerances are absolute)."""
    ot = pytest.importorskip("ot")
    for scale in (1e-8, 1e-12, 1e-200):
        a, b, M = _problem(rng, 12, 9)
        ref = ot.emd2(a, b, M) * scale
        assert_close(emd(a, b, M * scale).cost, ref, rtol=1e-10)
        assert_close(emd2(a, b, M * scale), ref, rtol=1e-10)


def test_tiny_tail_weights_are_feasible():
    """Issue #13: Gaussian histograms of 100 bins (tails ~1e-56) made HiGHS report an infeasible problem."""
    ot = pytest.importorskip("ot")
    a, x = _gauss_hist(100, 20, 5)
    b, _ = _gauss_hist(100, 60, 10)
    M = (x[:, None] - x[None]) ** 2
    M /= M.max()
    assert a.min() < 1e-50
    r = emd(a, b, M)
    assert_close(r.cost, ot.emd2(a, b, M), rtol=1e-10)
    assert_close(np.asarray(r.plan).sum(1), a, atol=1e-12)


def test_huge_costs_solve_scaled():
    """Issue #13: costs ~1e300 made the solver fail; the problem is solved on M / 2^k and scaled back."""
    ot = pytest.importorskip("ot")
    a, x = _gauss_hist(40, 10, 4)
    b, _ = _gauss_hist(40, 25, 6)
    M = np.abs(x[:, None] - x[None]) / 39.0
    ref = ot.emd2(a, b, M)
    for scale in (1e300, 1e307):
        r = emd(a, b, M * scale)
        assert np.isfinite(float(r.cost)) and np.all(np.isfinite(np.asarray(r.f)))
        assert_close(r.cost, ref * scale, rtol=1e-10)
        assert np.max(np.asarray(r.f)[:, None] + np.asarray(r.g)[None] - M * scale) <= 1e-10 * scale


def test_equal_uniform_weights(rng):
    """Issue #13: emd(a, b, M) with explicit uniform weights took the n*m LP (n = 300: 4.7 s); the assignment
    method still requires uniform square problems."""
    ot = pytest.importorskip("ot")
    n = 300
    _, _, M = _problem(rng, n, n)
    u = np.full(n, 1.0 / n)
    r = emd(u, u, M)
    assert_close(r.cost, ot.emd2(u, u, M), rtol=1e-10)
    assert_close(r.cost, emd(None, None, M).cost, rtol=1e-14)
    assert_close(emd(u, u, M, method="assignment").cost, r.cost, rtol=1e-12)
    with pytest.raises(ValueError, match="assignment"):
        emd(u, np.r_[u[:-2], 1.5 / n, 0.5 / n], M, method="assignment")


def test_cost_is_0d_for_torch(rng):
    """Issue #13: with torch inputs emd(...).cost had shape (1,)."""
    torch = pytest.importorskip("torch")
    a, b, M = _problem(rng, 5, 4)
    r = emd(torch.tensor(a), torch.tensor(b), torch.tensor(M))
    assert tuple(r.cost.shape) == () and isinstance(r.cost, torch.Tensor)
    assert tuple(emd2(torch.tensor(a), torch.tensor(b), torch.tensor(M)).shape) == ()


# ---------------------------------------------------------------------------------------------- network simplex
def _check_optimal(r, a, b, M, ref, rtol=1e-11):
    P, f, g = np.asarray(r.plan), np.asarray(r.f), np.asarray(r.g)
    assert P.min() >= 0
    assert_close(P.sum(1), a, atol=1e-14)
    assert_close(P.sum(0), b, atol=1e-14)
    scale = max(1.0, np.abs(M).max())
    assert np.max(f[:, None] + g[None] - M) <= 1e-12 * scale                 # dual feasible
    assert_close(a @ f + b @ g, float(r.cost), rtol=rtol, atol=1e-13 * scale)   # strong duality
    assert_close(float(r.cost), ref, rtol=rtol, atol=1e-14 * scale)


@pytest.mark.parametrize("kind", ["random", "integer", "points", "line"])
def test_network_simplex_against_highs_and_pot(rng, kind):
    """Degenerate problems (uniform weights, ties in integer costs, collinear points) against POT's C++ network
    simplex and the HiGHS LP."""
    ot = pytest.importorskip("ot")
    for trial in range(25):
        n, m = (int(k) for k in rng.integers(1, 25, 2))
        if kind == "random":
            M = rng.random((n, m))
        elif kind == "integer":
            M = rng.integers(0, 3, (n, m)).astype(float)
        elif kind == "points":
            M = ((rng.random((n, 2))[:, None] - rng.random((m, 2))[None]) ** 2).sum(-1)
        else:
            M = np.abs(np.arange(n)[:, None] / n - np.arange(m)[None] / m)
        if trial % 2:
            a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
        else:
            a, b = rng.random(n) + 0.01, rng.random(m) + 0.01
            a, b = a / a.sum(), b / b.sum()
        r = emd(a, b, M)
        assert r.method == "network_simplex" and r.converged
        _check_optimal(r, a, b, M, ot.emd2(a, b, M))
        assert_close(r.cost, emd(a, b, M, method="highs").cost, rtol=1e-9, atol=1e-12)


def test_network_simplex_generic_path_is_the_same_algorithm(rng):
    """The interpreted kernel (use_backend("generic")) pivots exactly as the compiled one."""
    import optnorm

    a, b, M = _problem(rng, 9, 7)
    r = emd(a, b, M)
    with optnorm.use_backend("generic"):
        r0 = emd(a, b, M)
    assert r0.n_iter == r.n_iter
    assert_close(r0.plan, r.plan, rtol=0, atol=0)
    assert_close(r0.f, r.f, rtol=0, atol=0)


def test_zero_weights_are_dropped_and_get_feasible_potentials(rng):
    ot = pytest.importorskip("ot")
    a, b, M = _problem(rng, 10, 8)
    a[[1, 4]] = 0.0
    b[[0, 7]] = 0.0
    a, b = a / a.sum(), b / b.sum()
    r = emd(a, b, M)
    _check_optimal(r, a, b, M, ot.emd2(a, b, M))
    assert np.all(np.asarray(r.plan)[[1, 4]] == 0) and np.all(np.asarray(r.plan)[:, [0, 7]] == 0)


def test_network_simplex_medium_size_matches_pot(rng):
    """n = 400 (HiGHS would take seconds): exact cost to 1e-12 relative against POT."""
    ot = pytest.importorskip("ot")
    a, b, M = _problem(rng, 400, 350)
    r = emd(a, b, M)
    _check_optimal(r, a, b, M, ot.emd2(a, b, M, numItermax=10 ** 7), rtol=1e-12)
    assert r.n_iter > 0 and "network_simplex" in repr(r) and len(repr(r)) < 300


def test_max_iter_warns(rng):
    import optnorm

    a, b, M = _problem(rng, 30, 30)
    with pytest.warns(optnorm.ConvergenceWarning, match="emd did not converge in 3 iterations"):
        r = emd(a, b, M, max_iter=3)
    assert not r.converged and r.n_iter == 3
    with pytest.raises(ValueError, match="max_iter must be"):
        emd(a, b, M, max_iter=0)
    with pytest.raises(ValueError, match="method must be one of"):
        emd(a, b, M, method="simplex")
