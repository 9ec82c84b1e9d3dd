"""regularized_newton_step and gradnorm_newton: values, argument validation, non-convergence warnings."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import optnorm
import optnorm.optim as oo
from optnorm.testing import assert_close


def _spd(rng, d):
    a = rng.standard_normal((d, 2 * d))
    return a @ a.T / (2 * d) + 0.5 * np.eye(d)


def test_regularized_newton_step_matches_a_dense_solve(xp, rng):
    d = 5
    g, H, B = rng.standard_normal(d), _spd(rng, d), _spd(rng, d)
    ref = -np.linalg.solve(H + 0.7 * np.eye(d), g)
    assert_close(oo.regularized_newton_step(xp.asarray(g), xp.asarray(H), 0.7), ref, rtol=1e-12, xp=xp)
    ref_b = -np.linalg.solve(H + 0.7 * B, g)
    assert_close(oo.regularized_newton_step(xp.asarray(g), xp.asarray(H), 0.7, xp.asarray(B)), ref_b, rtol=1e-12,
                 xp=xp)


def test_regularized_newton_step_validates_its_arguments(rng):
    """It used to validate nothing: wrong shapes, non-symmetric H, indefinite B, singular systems."""
    g, H = rng.standard_normal(3), _spd(rng, 3)
    with pytest.raises(ValueError, match="g"):
        oo.regularized_newton_step(rng.standard_normal(4), H, 0.5)
    with pytest.raises(ValueError, match="H is not symmetric"):
        oo.regularized_newton_step(g, H + np.triu(np.ones((3, 3)), 1), 0.5)
    with pytest.raises(ValueError, match="lam"):
        oo.regularized_newton_step(g, H, -1.0)
    with pytest.raises(ValueError, match="lam"):
        oo.regularized_newton_step(g, H, np.inf)
    with pytest.raises(ValueError, match="B must be positive definite"):
        oo.regularized_newton_step(g, H, 0.5, -np.eye(3))
    with pytest.raises(ValueError, match="g contains NaN"):
        oo.regularized_newton_step(np.array([1.0, np.nan, 0.0]), H, 0.5)
    with pytest.raises(ValueError, match="singular"):
        oo.regularized_newton_step(g, np.zeros((3, 3)), 0.0)
    with pytest.raises(TypeError, match="g"):
        oo.regularized_newton_step(g.astype(int), H, 0.5)


def _quadratic(rng, d=4):
    A = _spd(rng, d)
    b = rng.standard_normal(d)
    return A, b, (lambda x: 0.5 * x @ A @ x - b @ x), (lambda x: A @ x - b), (lambda x: A)


def test_gradnorm_newton_converges_and_warns_at_max_iter(rng):
    A, b, f, g, H = _quadratic(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = oo.gradnorm_newton(f, g, H, np.zeros(4), tol=1e-10)
    assert r.converged and isinstance(r, oo.NewtonResult)
    assert_close(r.x, np.linalg.solve(A, b), rtol=1e-8)
    with pytest.warns(optnorm.ConvergenceWarning, match="gradnorm_newton did not converge in 1 iterations"):
        r = oo.gradnorm_newton(f, g, H, np.zeros(4), max_iter=1, tol=1e-14)
    assert not r.converged and r.n_iter == 1


def test_gradnorm_newton_refuses_a_non_finite_objective(rng):
    A, b, f, g, H = _quadratic(rng)
    with pytest.raises(ValueError, match="x0"), np.errstate(over="ignore"):   # the quadratic overflows at 1e300
        oo.gradnorm_newton(f, g, H, np.full(4, 1e300))
    with pytest.raises(TypeError, match="fun"):
        oo.gradnorm_newton(None, g, H, np.zeros(4))
    with pytest.raises(ValueError, match="x0"):
        oo.gradnorm_newton(f, g, H, np.zeros((2, 2)))


def test_gradnorm_newton_float32_default_tolerance_is_reachable(rng):
    A, b, f, g, H = _quadratic(rng)
    f32 = (lambda x: (0.5 * x @ A @ x - b @ x).astype(np.float32), lambda x: (A @ x - b).astype(np.float32),
           lambda x: A.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = oo.gradnorm_newton(*f32, np.zeros(4, np.float32))
    assert r.converged and r.errors[-1] <= 1.2e-5
