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


def test_numba_and_generic_paths_agree(rng):
    """The Numba kernels (CSR Hessian, compiled PCG) and the Array-API body take the same steps."""
    import optnorm

    a, b, M = _problem(rng, 120)
    r = sinkhorn_newton_sparse(a, b, M, 2e-3, tol=1e-10)
    with optnorm.use_backend("generic"):
        r0 = sinkhorn_newton_sparse(a, b, M, 2e-3, tol=1e-10)
    assert r.converged and r0.converged and abs(r.n_iter - r0.n_iter) <= 1
    assert_close(r.cost, r0.cost, rtol=1e-9)
    assert_close(r.f - r.f.mean(), r0.f - r0.f.mean(), atol=1e-9)


def test_kernels_against_dense_references(rng):
    from optnorm._numba import sparse_newton as nb

    n, m, reg = 70, 50, 0.05
    M = rng.random((n, m))
    f, g = rng.standard_normal(n) * 0.05, rng.standard_normal(m) * 0.05
    f[3] = -np.inf                                             # a zero weight: its row is exactly 0
    z = (f[:, None] + g[None] - M) / reg
    P = np.exp(z)
    r = np.empty(n)
    cpart, hpart, spart = np.empty((8, m)), np.empty((8, nb.NBINS), np.int64), np.empty(8)
    nb.dual_pass(M, f, g, reg, r, cpart, hpart, spart)
    assert_close(r, P.sum(1), rtol=1e-13)
    assert_close(cpart.sum(0), P.sum(0), rtol=1e-13)
    assert_close(spart.sum(), P.sum(), rtol=1e-13)
    assert r[3] == 0.0 and hpart.sum() == np.sum(z >= nb.ZLO)
    zcut = nb.threshold(hpart.sum(0), 200)
    assert np.sum(z >= zcut) >= 200 and np.sum(z >= zcut + nb.ZBIN) < 200
    indptr, indices, data = nb.collect(M, f, g, reg, zcut)
    S = np.zeros((n, m))
    for i in range(n):
        S[i, indices[indptr[i]:indptr[i + 1]]] = data[indptr[i]:indptr[i + 1]]
    assert_close(S, np.where(z >= zcut, P, 0.0), rtol=1e-13)
    rr, cc = P.sum(1) + 1e-3, P.sum(0) + 1e-3
    B = np.block([[np.diag(rr), S], [S.T, np.diag(cc)]])
    zz = np.r_[np.ones(n), -np.ones(m)] / np.sqrt(n + m)
    rho = rr.mean()
    rhs = rng.standard_normal(n + m)
    x = np.empty(n + m)
    nb.pcg(indptr, indices, data, rr, cc, rho, rhs, 1e-13, 1000, x)
    assert_close(x, np.linalg.solve(B + rho * np.outer(zz, zz), rhs), rtol=1e-9, atol=1e-11)


def test_progress_and_callback_state(rng, capsys):
    a, b, M = _problem(rng, 50)
    states = []
    r = sinkhorn_newton_sparse(a, b, M, 0.003, progress=True, callback=lambda s: states.append(s) or False)
    assert r.converged and states and states[-1].n_iter <= r.n_iter and np.isfinite(states[-1].error)
    assert states[0].f.shape == (50,) and "sinkhorn_newton_sparse" in capsys.readouterr().err
    stopped = sinkhorn_newton_sparse(a, b, M, 0.003, callback=lambda s: True)
    assert not stopped.converged                                 # stopped by the callback: no warning
