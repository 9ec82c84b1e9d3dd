"""sqrtm / invsqrtm (eigh, Newton-Schulz, MTP, MPA) and lyapunov: forward against SciPy with the documented
accuracy, VJPs against finite differences, fast path against the generic one, bad input."""
from __future__ import annotations

import importlib

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, strategies as st

import optnorm
import optnorm.spd as spd
from optnorm.spd.sqrtm import _pade_coeffs, _taylor_coeffs
from optnorm.testing import assert_close, check_vjp

_SQRTM_MODULE = importlib.import_module("optnorm.spd.sqrtm")  # the module; optnorm.spd.sqrtm is the function

from .helpers import random_spd, ref_funm, ref_sqrtm, to

METHODS = ["eigh", "newton_schulz", "mtp", "mpa"]


def _scalar_error(lam, c, method, n_iter, degree, inverse):
    """Predicted error in each eigen-direction: the scalar version of each iteration (they act on eigenvalues)."""
    z = 1.0 - lam / c
    exact = np.sqrt(lam) if not inverse else 1.0 / np.sqrt(lam)
    if method == "eigh":
        return np.zeros_like(lam)
    if method == "newton_schulz":
        y, zz = lam / c, np.ones_like(lam)
        for _ in range(n_iter):
            t = 0.5 * (3.0 - zz * y)
            y, zz = y * t, t * zz
        approx = np.sqrt(c) * y if not inverse else zz / np.sqrt(c)
    elif method == "mtp":
        a = [float(x) for x in _taylor_coeffs(Fraction(1, 2) if not inverse else Fraction(-1, 2), degree)]
        poly = sum(ak * z ** k for k, ak in enumerate(a))
        approx = np.sqrt(c) * poly if not inverse else poly / np.sqrt(c)
    else:
        p, q = _pade_coeffs(Fraction(1, 2), degree)
        P = sum(pk * z ** k for k, pk in enumerate(p))
        Q = sum(qk * z ** k for k, qk in enumerate(q))
        approx = np.sqrt(c) * P / Q if not inverse else Q / P / np.sqrt(c)
    return np.abs(approx - exact)


def test_pade_coefficients_match_paper():
    p, q = _pade_coeffs(Fraction(1, 2), 5)
    np.testing.assert_allclose(p, [1, -11 / 4, 11 / 4, -77 / 64, 55 / 256, -11 / 1024], rtol=1e-15)
    np.testing.assert_allclose(q, [1, -9 / 4, 7 / 4, -35 / 64, 15 / 256, -1 / 1024], rtol=1e-15)
    np.testing.assert_allclose([float(x) for x in _taylor_coeffs(Fraction(1, 2), 4)],
                               [1, -1 / 2, -1 / 8, -1 / 16, -5 / 128])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("inverse", [False, True])
def test_sqrtm_matches_scipy_to_documented_accuracy(xp, rng, method, inverse):
    A = random_spd(rng, (2, 3), 6, cond=30.0)
    n_iter, degree = 20, (10 if method == "mtp" else 5)
    f = spd.invsqrtm if inverse else spd.sqrtm
    Y = f(to(xp, A), method=method)
    ref = ref_sqrtm(A)
    if inverse:
        ref = np.linalg.inv(ref)
    lam = np.linalg.eigvalsh(A)
    c = np.linalg.norm(A, axis=(-2, -1))[..., None]
    bound = _scalar_error(lam, c, method, n_iter, degree, inverse).max(axis=-1)
    err = np.linalg.norm(np.asarray(optnorm._lib.compat.to_numpy(Y)) - ref, ord=2, axis=(-2, -1))
    scale = np.linalg.norm(ref, ord=2, axis=(-2, -1))
    assert np.all(err <= 1.05 * bound + 1e-11 * scale), (err, bound)
    if method in ("mtp", "mpa"):  # low-accuracy forwards: the bound is attained, not vacuous
        assert np.all(err >= 0.5 * bound)


@pytest.mark.parametrize("method", METHODS)
def test_sqrtm_float32_keeps_dtype(xp, rng, method):
    A = random_spd(rng, (3,), 5).astype(np.float32)
    Y = spd.sqrtm(to(xp, A), method=method, degree=40 if method == "mtp" else 8)
    assert Y.dtype == xp.float32
    assert_close(Y, ref_sqrtm(A), rtol=2e-3, atol=2e-3, check_dtype=False, xp=xp)


def test_sqrtm_float16_computed_in_float32():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    A = random_spd(np.random.default_rng(0), (2,), 4)
    Y = spd.sqrtm(torch.tensor(A, dtype=torch.bfloat16))
    assert Y.dtype == torch.bfloat16
    assert_close(Y.float(), ref_sqrtm(A), rtol=3e-2, atol=3e-2, check_dtype=False)


@pytest.mark.parametrize("method,opts", [("eigh", {}), ("newton_schulz", {"lyap_iter": 40}),
                                         ("mpa", {"degree": 12, "lyap_iter": 40}),
                                         ("mtp", {"degree": 80, "lyap_iter": 40})])
@pytest.mark.parametrize("op", ["spd.sqrtm", "spd.invsqrtm"])
def test_sqrtm_vjp(rng, method, opts, op):
    A = random_spd(rng, (2,), 4, shift=0.5)
    check_vjp(op, A, opts=dict(method=method, check=False, **opts))


def test_eigh_vjp_repeated_eigenvalues():
    """Daleckii-Krein stays exact at the identity (autograd through eigh would give NaN)."""
    check_vjp("spd.sqrtm", np.eye(3) * 2.0, opts=dict(check=False))
    check_vjp("spd.invsqrtm", np.eye(3), opts=dict(check=False))


def test_iterative_vjp_approaches_exact(rng):
    """The sign-iteration Lyapunov backward agrees with the exact DK backward of the same point."""
    A = random_spd(rng, (3,), 6, cond=100.0)
    G = rng.standard_normal(A.shape)
    _, res_e = _SQRTM_MODULE.sqrtm_fwd(A)
    _, res_n = _SQRTM_MODULE.sqrtm_fwd(A, method="newton_schulz", n_iter=30, lyap_iter=40)
    from optnorm.spd.sqrtm import sqrtm_bwd as _sqrt_bwd

    assert_close(_sqrt_bwd(res_n, G)[0], _sqrt_bwd(res_e, G)[0], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("n", [3, 5, 7])
def test_numba_path_matches_generic(rng, path, n):
    A = random_spd(rng, (50,), n)
    Y = spd.sqrtm(A)
    Z = spd.invsqrtm(A)
    assert_close(Y, ref_sqrtm(A), rtol=1e-11, atol=1e-12)
    assert_close(Z, np.linalg.inv(ref_sqrtm(A)), rtol=1e-10, atol=1e-11)


def test_jacobi_eigh_kernel(rng):
    from optnorm._numba import spd as nb

    for n in (2, 5, 16, 33):
        A = random_spd(rng, (20,), n)
        A[0] = np.eye(n)  # repeated eigenvalues
        w, V = nb.eigh_batched(A)
        assert_close(w, np.linalg.eigvalsh(A), rtol=1e-12, atol=1e-12)
        assert_close(V @ (w[..., None] * np.swapaxes(V, -1, -2)), A, atol=1e-12)
        assert_close(np.swapaxes(V, -1, -2) @ V, np.broadcast_to(np.eye(n), A.shape), atol=1e-12)


@given(st.floats(2.0, 8.0), st.sampled_from(["float32", "float64"]), st.sampled_from(METHODS))
def test_ill_conditioned_finite(log_cond, dtype, method):
    """Condition numbers up to 1e8 (float64) / 1e4 (float32): finite results and gradients."""
    if dtype == "float32":
        log_cond = min(log_cond, 4.0)
    rng = np.random.default_rng(int(log_cond * 1000))
    A = random_spd(rng, (2,), 5, cond=10 ** log_cond).astype(dtype)
    for fwd in ("sqrtm_fwd", "invsqrtm_fwd"):
        Y, res = _SQRTM_MODULE.__dict__[fwd](A, method=method, check=False)
        assert np.all(np.isfinite(Y))
        g = _SQRTM_MODULE.sqrtm_bwd(res, np.ones_like(A))[0]
        assert np.all(np.isfinite(g)) and g.dtype == A.dtype
    if method == "eigh":
        rel = np.linalg.norm(spd.sqrtm(A, check=False).astype(np.float64) - ref_funm(A, np.sqrt)) / \
            np.linalg.norm(ref_funm(A, np.sqrt))
        assert rel < (1e-4 if dtype == "float32" else 1e-12)


# ---------------------------------------------------------------- lyapunov
@pytest.mark.parametrize("method", ["eigh", "sign"])
def test_lyapunov_solves(xp, rng, method):
    import scipy.linalg as sl

    A = random_spd(rng, (3,), 5, cond=50.0)
    Q = rng.standard_normal((3, 5, 5))
    X = spd.lyapunov(to(xp, A), to(xp, Q), method=method)
    ref = np.stack([sl.solve_continuous_lyapunov(a, q) for a, q in zip(A, Q)])
    assert_close(X, ref, rtol=1e-9, atol=1e-10, xp=xp)


@pytest.mark.parametrize("method", ["eigh", "sign"])
def test_lyapunov_vjp(rng, method):
    A = random_spd(rng, (2,), 4, shift=0.5)
    Q = rng.standard_normal((2, 4, 4))
    check_vjp("spd.lyapunov", A, Q, opts=dict(method=method, check=False))
    check_vjp("spd.lyapunov", A, Q[0], opts=dict(method=method, check=False))


# ---------------------------------------------------------------- bad input
def test_bad_input_messages(rng):
    A = random_spd(rng, (), 3)
    with pytest.raises(ValueError, match="A has shape \\(2, 3\\)"):
        spd.sqrtm(np.ones((2, 3)))
    with pytest.raises(ValueError, match="A is not symmetric"):
        spd.sqrtm(A + np.triu(np.ones((3, 3)), 1))
    with pytest.raises(ValueError, match="A must be positive definite; its smallest eigenvalue is -1"):
        spd.invsqrtm(np.diag([1.0, 2.0, -1.0]), method="newton_schulz")
    with pytest.raises(TypeError, match="A must have a real floating dtype"):
        spd.sqrtm(np.eye(3, dtype=np.int64))
    with pytest.raises(ValueError, match="method must be one of"):
        spd.sqrtm(A, method="denman")
    with pytest.raises(ValueError, match="n_iter must be in \\[1, inf\\)"):
        spd.sqrtm(A, method="newton_schulz", n_iter=0)
    with pytest.raises(ValueError, match="eps must be in \\(0, inf\\)"):
        spd.sqrtm(A, eps=0.0)
    with pytest.raises(ValueError, match="A contains NaN"):
        spd.sqrtm(A * np.nan)
    with pytest.raises(ValueError, match="Q has shape"):
        spd.lyapunov(A, np.ones((4, 4)))
    with pytest.raises(ValueError, match="the batch dimensions of Q .* and of A .* do not broadcast"):
        spd.lyapunov(random_spd(rng, (2,), 3), np.ones((3, 3, 3)))


# ---------------------------------------------------------------- hardening (issue 13)
@pytest.mark.parametrize("inverse", [False, True])
def test_mpa_high_degree_is_stable(rng, inverse):
    """[m/m] Pade by partial fractions: degree 40 is more accurate than degree 5 (the power form gave 1e2 error)."""
    A = random_spd(rng, (3,), 6, cond=30.0)
    ref = ref_sqrtm(A)
    if inverse:
        ref = np.linalg.inv(ref)
    f = spd.invsqrtm if inverse else spd.sqrtm
    errs = []
    for degree in (5, 20, 40, 80):
        Y = f(A, method="mpa", degree=degree)
        err = np.linalg.norm(Y - ref, ord=2, axis=(-2, -1)).max()
        errs.append(err / np.linalg.norm(ref, ord=2, axis=(-2, -1)).max())
    assert errs[0] > errs[1] > errs[2] > errs[3]
    assert errs[2] < 1e-6 and errs[3] < 1e-11, errs


def test_pade_partial_fractions_equal_the_pade_approximant():
    from optnorm.spd.sqrtm import _pade_fractions

    z = np.linspace(0.0, 0.95, 11)
    for m in (1, 3, 5, 8):
        p, q = _pade_coeffs(Fraction(1, 2), m)
        a, b = _pade_fractions(m)
        rational = sum(pk * z ** k for k, pk in enumerate(p)) / sum(qk * z ** k for k, qk in enumerate(q))
        fractions = 1 - sum(ak * z / (1 - bk * z) for ak, bk in zip(a, b))
        np.testing.assert_allclose(fractions, rational, rtol=1e-10)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_roots_near_the_dtype_range_are_finite_and_scaled(rng, method, scale):
    """Newton-Schulz/MTP/MPA normalise by an overflow-safe Frobenius norm (the squares of 1e300 overflowed)."""
    A = random_spd(rng, (2,), 4, cond=10.0)
    for f, power in ((spd.sqrtm, 0.5), (spd.invsqrtm, -0.5)):
        Y = f(A * scale, method=method)
        assert np.all(np.isfinite(Y))
        assert_close(Y / scale ** power, f(A, method=method), rtol=1e-10)


def test_check_false_skips_the_value_checks(rng):
    A = random_spd(rng, (), 3)
    bad = A.copy()
    bad[0, 1] += 1e-3                                   # slightly asymmetric: refused with check=True
    with pytest.raises(ValueError, match="A is not symmetric"):
        spd.sqrtm(bad)
    assert_close(spd.sqrtm(bad, check=False), ref_sqrtm((bad + bad.T) / 2), rtol=1e-10)
    with pytest.raises(ValueError, match="A has shape"):  # shapes are checked whatever check says
        spd.sqrtm(np.ones((2, 3)), check=False)


def test_lyapunov_validates_its_spd_matrix(rng):
    Q = rng.standard_normal((3, 3))
    with pytest.raises(ValueError, match="lyapunov: A must be positive definite"):
        spd.lyapunov(np.diag([1.0, -1.0, 2.0]), Q)
    with pytest.raises(ValueError, match="lyapunov: Q contains NaN"):
        spd.lyapunov(np.eye(3), Q * np.nan)


def test_adapters_validate_like_the_plain_call(rng):
    """The fwd the torch/JAX adapters call runs the same argument checks as the function."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    import optnorm.torch as ont

    bad = torch.tensor(np.diag([1.0, -2.0, 3.0]), requires_grad=True)
    with pytest.raises(ValueError, match="sqrtm: A must be positive definite"):
        ont.sqrtm(bad)
