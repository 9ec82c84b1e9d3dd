"""logm / expm / powm / funm: values against SciPy and pyRiemann on every backend, Daleckii-Krein VJPs against
finite differences (also at repeated eigenvalues), bad input."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sl

import optnorm.spd as spd
from optnorm.testing import assert_close, check_vjp

from .helpers import random_spd, to


def _sym(rng, shape, n):
    a = rng.standard_normal(tuple(shape) + (n, n))
    return (a + np.swapaxes(a, -1, -2)) / 2


def test_logm_expm_powm_match_scipy(xp, rng):
    A = random_spd(rng, (3,), 5)
    S = _sym(rng, (3,), 5)
    assert_close(spd.logm(to(xp, A)), np.stack([sl.logm(a) for a in A]), rtol=1e-11, atol=1e-13, xp=xp)
    assert_close(spd.expm(to(xp, S)), np.stack([sl.expm(s) for s in S]), rtol=1e-11, atol=1e-13, xp=xp)
    assert_close(spd.powm(to(xp, A), 0.3), np.stack([sl.fractional_matrix_power(a, 0.3) for a in A]), rtol=1e-11,
                 xp=xp)
    assert_close(spd.powm(to(xp, A), -2.0), np.stack([np.linalg.matrix_power(np.linalg.inv(a), 2) for a in A]),
                 rtol=1e-10, xp=xp)
    cube = spd.funm(to(xp, S), f=lambda w: w * w * w, df=lambda w: 3 * w * w)
    assert_close(cube, S @ S @ S, rtol=1e-10, atol=1e-12, xp=xp)


def test_match_pyriemann(rng):
    base = pytest.importorskip("pyriemann.geometry.base", reason="pyRiemann is not installed")
    A = random_spd(rng, (4,), 6)
    S = _sym(rng, (4,), 6)
    assert_close(spd.logm(A), base.logm(A), rtol=1e-12, atol=1e-14)
    assert_close(spd.expm(S), base.expm(S), rtol=1e-12)
    assert_close(spd.powm(A, 0.7), base.powm(A, 0.7), rtol=1e-12)


def test_float32_and_batches(rng):
    A = random_spd(rng, (2, 3), 4).astype(np.float32)
    for f, ref in ((spd.logm, lambda a: sl.logm(a)), (lambda a: spd.powm(a, 1.5),
                                                       lambda a: sl.fractional_matrix_power(a, 1.5))):
        Y = f(A)
        assert Y.dtype == np.float32 and Y.shape == A.shape
        assert_close(Y, np.stack([ref(a) for a in A.astype(np.float64).reshape(-1, 4, 4)]).reshape(A.shape),
                     rtol=1e-4, atol=1e-5, check_dtype=False)


@pytest.mark.parametrize("cond", [1e2, 1e6])
def test_logm_expm_inverse(rng, cond):
    A = random_spd(rng, (4,), 6, cond=cond)
    assert_close(spd.expm(spd.logm(A)), A, rtol=1e-10, atol=1e-10 * float(np.abs(A).max()))
    S = spd.logm(A)
    assert_close(spd.logm(spd.expm(S)), S, rtol=1e-10, atol=1e-10)


def test_near_the_dtype_range(rng):
    A = random_spd(rng, (2,), 4)
    assert_close(spd.logm(A * 1e300), spd.logm(A) + np.log(1e300) * np.eye(4), rtol=1e-12, atol=1e-11)
    assert_close(spd.powm(A * 1e-300, 0.5), spd.powm(A, 0.5) * 1e-150, rtol=1e-12)
    with pytest.raises(ValueError, match="powm"):
        spd.powm(A * 1e300, 3.0)


@pytest.mark.parametrize("op", ["spd.logm", "spd.expm"])
def test_vjp(rng, op):
    A = random_spd(rng, (2,), 4, shift=0.5)
    check_vjp(op, A, opts=dict(check=False))


def test_powm_vjp_in_matrix_and_exponent(rng):
    A = random_spd(rng, (2,), 4, shift=0.5)
    check_vjp("spd.powm", A, np.asarray(0.7), opts=dict(check=False))
    check_vjp("spd.powm", A, np.asarray(-1.3), opts=dict(check=False))


def test_vjps_finite_at_repeated_eigenvalues():
    """At the identity every eigenvalue is repeated: autodiff through eigh divides by zero, Daleckii-Krein not."""
    check_vjp("spd.logm", 2.0 * np.eye(3), opts=dict(check=False))
    check_vjp("spd.expm", np.eye(3), opts=dict(check=False))
    check_vjp("spd.powm", 3.0 * np.eye(3), np.asarray(0.5), opts=dict(check=False))
    check_vjp("spd.funm", np.diag([1.0, 1.0, 2.0]), opts=dict(f=np.sin, df=np.cos, check=False))


def test_funm_vjp_general_function(rng):
    S = _sym(rng, (2,), 4)
    check_vjp("spd.funm", S, opts=dict(f=np.tanh, df=lambda w: 1 - np.tanh(w) ** 2, check=False))


def test_funm_near_equal_eigenvalues_gradient_is_accurate():
    """Eigenvalues 1e-10 apart: the quotient would lose 6 digits; the midpoint rule keeps them."""
    import optnorm.torch as ot
    torch = pytest.importorskip("torch")
    A = torch.tensor(np.diag([1.0, 1.0 + 1e-10, 3.0]), requires_grad=True)
    Y = ot.funm(A, f=torch.exp, df=torch.exp)
    G = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    (Y * G).sum().backward()
    assert abs(float(A.grad[0, 1]) - np.e) < 1e-9


def test_funm_without_derivative_refuses_the_gradient():
    import optnorm.torch as ot
    torch = pytest.importorskip("torch")
    A = torch.eye(2, dtype=torch.float64, requires_grad=True)
    Y = ot.funm(A, f=torch.exp)
    with pytest.raises(ValueError, match="df"):
        Y.sum().backward()


def test_torch_autograd_through_the_ops(rng):
    torch = pytest.importorskip("torch")
    import optnorm.torch as ot
    A = torch.tensor(random_spd(rng, (), 3), requires_grad=True)
    ot.logm(A).sum().backward()
    w, U = np.linalg.eigh(A.detach().numpy())
    K = np.where(np.isclose(w[:, None], w[None, :]), 1 / w[:, None],
                 (np.log(w[:, None]) - np.log(w[None, :])) / (w[:, None] - w[None, :] + np.eye(3)))
    ref = U @ (K * (U.T @ np.ones((3, 3)) @ U)) @ U.T
    assert_close(A.grad.numpy(), ref, rtol=1e-10)


def test_bad_input(rng):
    A = random_spd(rng, (), 3)
    with pytest.raises(ValueError, match="logm: A must be positive definite"):
        spd.logm(A - 10 * np.eye(3))
    with pytest.raises(ValueError, match="A is not symmetric"):
        spd.expm(A + np.triu(np.ones((3, 3)), 1))
    with pytest.raises(ValueError, match="p contains NaN or inf"):
        spd.powm(A, float("nan"))
    with pytest.raises(ValueError, match="p contains NaN or inf"):
        spd.powm(A, float("inf"))
    with pytest.raises(TypeError, match="f must be callable"):
        spd.funm(A, f=3)
    with pytest.raises(ValueError, match="A must be positive definite"):
        spd.powm(np.zeros((3, 3)), 0.5)
