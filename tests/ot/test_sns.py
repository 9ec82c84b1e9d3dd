"""sinkhorn_newton_sparse: same potentials as log-Sinkhorn in far fewer iterations; backends; bad input."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm.ot import sinkhorn, sinkhorn_newton_sparse
from optnorm.testing import assert_close


def _problem(rng, n):
    x, y = rng.random((n, 2)), rng.random((n, 2))
    return np.full(n, 1 / n), np.full(n, 1 / n), ((x[:, None] - y[None]) ** 2).sum(-1)


def test_same_potentials_far_fewer_iterations(rng):
    a, b, M = _problem(rng, 150)
    reg = 0.003
    ref = sinkhorn(a, b, M, reg, tol=1e-10, max_iter=20000, check_every=1)
    res = sinkhorn_newton_sparse(a, b, M, reg, tol=1e-10)
    assert ref.converged and res.converged
    assert res.n_iter * 10 <= ref.n_iter, (res.n_iter, ref.n_iter)
    assert_close(res.f - res.f.mean(), ref.f - ref.f.mean(), atol=1e-8)
    assert_close(res.cost, ref.cost, rtol=1e-8)
    ea, eb = res.marginal_errors
    assert float(ea) < 1e-9 and float(eb) < 1e-9


def test_backends(xp, rng):
    a, b, M = _problem(rng, 40)
    ref = sinkhorn(a, b, M, 0.01, tol=1e-11, max_iter=20000)
    res = sinkhorn_newton_sparse(xp.asarray(a), xp.asarray(b), xp.asarray(M), 0.01, tol=1e-11, density=0.2)
    assert res.converged
    assert_close(res.cost, ref.cost, rtol=1e-8, xp=xp)


def test_callback_and_density_one(rng):
    a, b, M = _problem(rng, 60)
    seen = []
    res = sinkhorn_newton_sparse(a, b, M, 0.005, density=1.0, callback=lambda s: seen.append(s.error) or False)
    assert res.converged and len(seen) >= 1
    assert res.errors[-1] < 1e-9


def test_bad_input(rng):
    a, b, M = _problem(rng, 5)
    with pytest.raises(ValueError, match="density must be in"):
        sinkhorn_newton_sparse(a, b, M, 0.1, density=2.0)
    with pytest.raises(ValueError, match=r"reg must be in \(0, inf\)"):
        sinkhorn_newton_sparse(a, b, M, -1.0)
    with pytest.raises(ValueError, match=r"n_sinkhorn must be in \[0, inf\)"):
        sinkhorn_newton_sparse(a, b, M, 0.1, n_sinkhorn=-1)


def test_non_convergence_warns_and_extreme_costs_stay_finite(rng):
    import warnings

    import optnorm

    n = 40
    x, y = rng.random((n, 2)), rng.random((n, 2))
    M = ((x[:, None] - y[None]) ** 2).sum(-1)
    a = np.full(n, 1 / n)
    with pytest.warns(optnorm.ConvergenceWarning, match="sinkhorn_newton_sparse did not converge"):
        r = sinkhorn_newton_sparse(a, a, M, 1e-3, max_iter=1, n_sinkhorn=2)
    assert not r.converged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optnorm.ConvergenceWarning)
        for scale, reg in ((1e300, 0.5), (1e-300, 0.5), (1.0, 1e-9)):
            r = sinkhorn_newton_sparse(a, a, M * scale, reg, max_iter=20)
            assert np.all(np.isfinite(r.f)) and np.all(np.isfinite(r.g)) and np.isfinite(r.cost)
    r32 = sinkhorn_newton_sparse(a.astype(np.float32), a.astype(np.float32), M.astype(np.float32), 0.05)
    assert r32.converged and r32.tol > 1e-6                     # a float32 tolerance it can reach
