"""tract_precondition at magnitudes near the dtype's range (the closed forms are tested in tests/norm)."""
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
