"""tract_precondition: the official closed forms (primal and dual), batching, and magnitudes near the dtype's range."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm.optim import tract_precondition
from optnorm.testing import assert_close


@pytest.mark.parametrize("shape", [(30, 8), (6, 20)])           # primal (n <= b) and dual (b < n)
def test_huge_inputs_do_not_overflow(rng, shape):
    """a^T a overflowed for inputs ~1e200 (float64) / 1e25 (float32); the answer is tiny, not inf/NaN.

    DeltaW(c a) = (1/c) g^T a (a^T a / b + lam / c^2 I)^{-1}, and lam / c^2 is negligible."""
    b, n = shape
    a, g = rng.standard_normal((b, n)), rng.standard_normal((b, 5))
    for c, dt, rtol in ((1e200, np.float64, 1e-8), (1e25, np.float32, 1e-3)):
        got = tract_precondition(g.astype(dt), (a * c).astype(dt), lam=0.1)
        assert got.dtype == dt and np.all(np.isfinite(got))
        if b >= n:
            ref = (g.T @ a) @ np.linalg.inv(a.T @ a / b) / c
        else:
            ref = np.linalg.solve(a @ a.T / b, g).T @ a / c
        assert_close(got, ref, rtol=rtol, atol=0, check_dtype=False)


def test_tiny_inputs_give_the_scaled_gradient(rng):
    a, g = rng.standard_normal((30, 8)), rng.standard_normal((30, 5))
    c = 1e-200
    got = tract_precondition(g, a * c, lam=0.1)
    assert_close(got, c * (g.T @ a) / 0.1, rtol=1e-12)


def test_errors_name_the_argument(rng):
    a, g = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    with pytest.raises(ValueError, match="lam"):
        tract_precondition(g, a, lam=0.0)
    with pytest.raises(ValueError, match="grad_out"):
        tract_precondition(g[:5], a)
    with pytest.raises(ValueError, match="method"):
        tract_precondition(g, a, method="svd")
    with pytest.raises(ValueError, match="inputs"):
        tract_precondition(g, a[:, 0])


def _official_closed_forms(g, a, lam):
    """Both expressions as written in the official torch_tract backward (re-typed with NumPy inverses)."""
    b, n = a.shape
    primal = g.T @ a @ np.linalg.inv(a.T @ a / b + lam * np.eye(n))
    A = a @ a.T / b
    Ib = np.eye(b)
    dual = g.T @ (Ib - 1.0 / lam * A @ np.linalg.inv(A / lam + Ib)) @ a / lam
    return primal, dual


@pytest.mark.parametrize("shape", [(30, 8), (6, 20)])
def test_tract_precondition_closed_forms(xp, rng, shape):
    b, n = shape
    a, g = rng.standard_normal((b, n)), rng.standard_normal((b, 5))
    primal, dual = _official_closed_forms(g, a, 0.1)
    assert_close(primal, dual, rtol=1e-8, atol=1e-10)
    for method, ref in (("primal", primal), ("dual", dual), ("auto", primal)):
        got = tract_precondition(xp.asarray(g), xp.asarray(a), lam=0.1, method=method)
        assert_close(got, ref, rtol=1e-8, atol=1e-10, xp=xp)


def test_tract_auto_choice_and_batched(rng):
    a, g = rng.standard_normal((2, 3, 10)), rng.standard_normal((2, 3, 4))
    primal, dual = _official_closed_forms(g.reshape(6, 4), a.reshape(6, 10), 0.5)
    assert_close(tract_precondition(g, a, lam=0.5), dual, rtol=1e-8)
    y = tract_precondition(g.astype(np.float32), a.astype(np.float32))
    assert y.dtype == np.float32 and y.shape == (4, 10)


def test_tract_large_lambda_is_scaled_gradient(rng):
    a, g = rng.standard_normal((40, 6)), rng.standard_normal((40, 3))
    lam = 1e6
    assert_close(tract_precondition(g, a, lam=lam) * lam, g.T @ a, rtol=1e-4)
