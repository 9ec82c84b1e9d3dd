"""partial_wasserstein(2): POT (exact and entropic), the LP oracle, emd when m is the whole mass, gradients
(finite differences of the exact value), backends, callbacks, bad input."""
from __future__ import annotations

import numpy as np
import pytest

import optnorm
from optnorm.ot import emd2, partial_wasserstein, partial_wasserstein2
from optnorm.testing import assert_close

ot = pytest.importorskip("ot")


def _problem(rng, n=12, k=9, ratio=0.7):
    x, y = rng.random((n, 2)), rng.random((k, 2))
    M = ((x[:, None] - y[None]) ** 2).sum(-1)
    a, b = rng.random(n) + 0.1, rng.random(k) + 0.1
    return a / a.sum(), b / b.sum() * ratio, M


def _lp(a, b, M, m):
    """The partial LP {P >= 0, P1 <= a, P^T1 <= b, sum P = m} by HiGHS (independent of the dummy construction)."""
    from scipy.optimize import linprog

    n, k = M.shape
    A_ub = np.vstack([np.kron(np.eye(n), np.ones(k)), np.kron(np.ones(n), np.eye(k))])
    r = linprog(M.ravel(), A_ub=A_ub, b_ub=np.concatenate([a, b]), A_eq=np.ones((1, n * k)), b_eq=[m],
                bounds=(0, None), method="highs")
    return r.fun


@pytest.mark.parametrize("m", [0.1, 0.45, 0.7])
def test_exact_matches_pot_and_the_lp(rng, m):
    a, b, M = _problem(rng)
    G, log = ot.partial.partial_wasserstein(a, b, M, m=m, log=True)
    r = partial_wasserstein(a, b, M, m=m)
    assert r.converged and r.mass == m
    assert_close(r.cost, log["partial_w_dist"], rtol=1e-12)
    assert_close(r.cost, _lp(a, b, M, m), rtol=1e-9)
    P = np.asarray(r.plan)
    assert P.min() >= 0 and np.all(P.sum(1) <= a + 1e-15) and np.all(P.sum(0) <= b + 1e-15)
    assert_close(P.sum(), m, rtol=1e-13)
    assert_close(partial_wasserstein2(a, b, M, m=m), log["partial_w_dist"], rtol=1e-12)


def test_whole_mass_is_emd_and_zero_mass_is_free(rng):
    a, b, M = _problem(rng, ratio=1.0)
    assert_close(partial_wasserstein2(a, b, M, m=1.0), emd2(a, b, M), rtol=1e-12)
    r = partial_wasserstein(a, b, M, m=0.0)
    assert float(r.cost) == 0.0 and float(np.abs(r.plan).sum()) == 0.0
    r = partial_wasserstein(a, b, M - 3.0, m=0.4)                    # negative costs: still exactly m moves
    assert_close(np.asarray(r.plan).sum(), 0.4, rtol=1e-13)
    assert_close(r.cost, _lp(a, b, M - 3.0, 0.4), rtol=1e-9)


@pytest.mark.parametrize("reg", [0.1, 0.01])
@pytest.mark.parametrize("m", [0.2, 0.5])
def test_entropic_matches_pot(rng, reg, m):
    a, b, M = _problem(rng)
    G = ot.partial.entropic_partial_wasserstein(a, b, M, reg, m=m, numItermax=3000, method="sinkhorn_log")
    r = partial_wasserstein(a, b, M, m=m, reg=reg, max_iter=3000)
    assert r.converged and r.reg == reg
    assert_close(r.plan, G, atol=1e-9)
    assert_close(r.cost, np.sum(G * M), rtol=1e-7)
    P = np.asarray(r.plan)
    assert_close(P.sum(), m, rtol=1e-12)
    assert np.all(P.sum(1) <= a * (1 + 1e-8)) and np.all(P.sum(0) <= b * (1 + 1e-8))


def test_entropic_small_reg_approaches_the_exact_cost(rng):
    a, b, M = _problem(rng)
    exact = float(partial_wasserstein2(a, b, M, m=0.4))
    r = partial_wasserstein(a, b, M, m=0.4, reg=1e-4, max_iter=20000, tol=1e-7)
    assert abs(float(r.cost) - exact) < 2e-3 * exact + 1e-5
    assert np.all(np.isfinite(np.asarray(r.plan)))


def test_gradients_by_finite_differences(rng):
    """The exact value's derivatives w.r.t. a, b (through the dummy masses too) and M."""
    a, b, M = _problem(rng, 7, 6)
    m = 0.4
    r = partial_wasserstein(a, b, M, m=m)
    h = 1e-7
    for k in range(3):
        E = rng.standard_normal(M.shape)
        fd = (float(partial_wasserstein2(a, b, M + h * E, m=m)) - float(partial_wasserstein2(a, b, M - h * E, m=m)))
        assert_close(np.sum(np.asarray(r.plan) * E), fd / (2 * h), rtol=1e-5, atol=1e-9)
        e = rng.random(7) * 0.1
        fd = (float(partial_wasserstein2(a + h * e, b, M, m=m)) - float(partial_wasserstein2(a - h * e, b, M, m=m)))
        assert_close(np.asarray(r.f) @ e, fd / (2 * h), rtol=1e-5, atol=1e-9)
        e = rng.random(6) * 0.1
        fd = (float(partial_wasserstein2(a, b + h * e, M, m=m)) - float(partial_wasserstein2(a, b - h * e, M, m=m)))
        assert_close(np.asarray(r.g) @ e, fd / (2 * h), rtol=1e-5, atol=1e-9)


def test_torch_gradient_and_backends(xp, rng):
    a, b, M = _problem(rng, 8, 6)
    ref = partial_wasserstein(a, b, M, m=0.3, reg=0.05)
    r = partial_wasserstein(xp.asarray(a), xp.asarray(b), xp.asarray(M), m=0.3, reg=0.05)
    assert_close(r.plan, np.asarray(ref.plan), atol=1e-12, xp=xp)
    ex = partial_wasserstein2(xp.asarray(a), xp.asarray(b), xp.asarray(M), m=0.3)
    assert_close(ex, float(partial_wasserstein2(a, b, M, m=0.3)), rtol=1e-12, xp=xp)


def test_numba_and_generic_sweeps_agree(rng):
    a, b, M = _problem(rng, 9, 7)
    r = partial_wasserstein(a, b, M, m=0.3, reg=0.02)
    with optnorm.use_backend("generic"):
        r0 = partial_wasserstein(a, b, M, m=0.3, reg=0.02)
    assert r.n_iter == r0.n_iter
    assert_close(r.plan, r0.plan, atol=1e-14)


def test_uniform_defaults_extreme_costs_float32(rng):
    _, _, M = _problem(rng, 6, 5)
    r = partial_wasserstein(None, None, M, m=0.5, reg=0.05)
    assert_close(np.asarray(r.plan).sum(1).max() <= 1 / 6 + 1e-9, True)
    big = partial_wasserstein(None, None, M * 1e300, m=0.5, reg=0.05 * 1e300)
    assert_close(big.plan, r.plan, rtol=1e-9, atol=1e-15)
    r32 = partial_wasserstein(None, None, M.astype(np.float32), m=0.5, reg=0.05)
    assert r32.plan.dtype == np.float32 and r32.converged
    assert_close(r32.cost, float(r.cost), rtol=1e-4)


def test_callback_progress_and_non_convergence(rng, capsys):
    a, b, M = _problem(rng)
    seen = []
    r = partial_wasserstein(a, b, M, m=0.5, reg=0.01, callback=lambda s: seen.append(s.n_iter) or s.n_iter == 4)
    assert seen == [1, 2, 3, 4] and not r.converged and r.n_iter == 4
    with pytest.warns(optnorm.ConvergenceWarning, match="partial_wasserstein did not converge in 3 iterations"):
        r = partial_wasserstein(a, b, M, m=0.5, reg=0.01, max_iter=3)
    assert len(r.errors) == 3
    partial_wasserstein(a, b, M, m=0.5, reg=0.05, progress=True)
    assert "partial_wasserstein" in capsys.readouterr().err
    assert "PartialResult(" in repr(r) and len(repr(r)) < 300


def test_bad_input(rng):
    a, b, M = _problem(rng, 5, 4)
    with pytest.raises(ValueError, match="m = 0.9 is more mass than the smaller measure"):
        partial_wasserstein(a, b, M, m=0.9)
    with pytest.raises(ValueError, match=r"m must be in \[0, inf\)"):
        partial_wasserstein(a, b, M, m=-0.1)
    with pytest.raises(ValueError, match="m must be finite"):
        partial_wasserstein(a, b, M, m=np.inf)
    with pytest.raises(ValueError, match=r"reg must be in \(0, inf\)"):
        partial_wasserstein(a, b, M, m=0.2, reg=0.0)
    with pytest.raises(ValueError, match="reg must not be NaN"):
        partial_wasserstein(a, b, M, m=0.2, reg=np.nan)
    with pytest.raises(TypeError, match="missing .*m"):
        partial_wasserstein(a, b, M)
    with pytest.raises(ValueError, match="a must be non-negative"):
        partial_wasserstein(-a, b, M, m=0.2)
