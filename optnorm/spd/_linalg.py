"""Linear algebra shared by the ``optnorm.spd`` modules (private; the one place sibling modules import from).

Spectral functions of symmetric matrices and their Daleckii-Krein derivatives, the Lyapunov solvers
(eigenbasis and matrix-sign iteration), the Bures-Wasserstein optimal-transport map and the accurate
squared BW distance, overflow-safe norms and scalings, and the call of a registered op through the
caller's autograd.  Every helper takes the namespace ``xp`` as its last argument.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from .._lib import compat, ops


# ---------------------------------------------------------------------------- elementary pieces
def sym(x, xp):
    """The symmetric part ``(x + x^T) / 2``."""
    return (x + xp.matrix_transpose(x)) / 2


def mT(x, xp):
    return xp.matrix_transpose(x)


def eye(n, x, xp):
    """``I_n`` in ``x``'s dtype, on its device."""
    return compat.eye(n, like=x, xp=xp)


def trace(x, xp):
    return xp.sum(xp.linalg.diagonal(x), axis=-1)


def upcast(x, xp):
    """``(x in its compute dtype, original dtype)``: float16/bfloat16 are computed in float32."""
    dt = compat.compute_dtype(x, xp)
    return compat.cast(x, dt, xp), x.dtype


def max_abs(x, xp):
    """Per-matrix ``max |x_ij|``, shape ``(..., 1, 1)``."""
    return xp.max(xp.abs(x), axis=(-2, -1), keepdims=True)


def matrix_scale(xp, *mats):
    """Per-matrix scale ``s > 0`` (shape ``(..., 1, 1)``, the broadcast batch): the geometric mean of the
    matrices' largest entry magnitudes (zeros count as 1).  Dividing by it before products keeps them finite
    near the dtype's range (scale before squaring): for one matrix its entries become <= 1; for a pair
    ``(A, B)`` the products ``A B / s^2`` are of order one even when A and B differ by 1e600 in magnitude
    (a common scale by the larger would underflow the smaller)."""
    s = None
    k = len(mats)
    for m in mats:
        a = max_abs(m, xp)
        a = xp.where(a > 0, a, xp.ones_like(a))
        a = a if k == 1 else a ** (1.0 / k)
        s = a if s is None else s * a
    return s


def fro(x, xp):
    """Per-matrix Frobenius norm, shape ``(..., 1, 1)``, without overflow or underflow of the squares."""
    s = matrix_scale(xp, x)
    y = x / s
    return s * xp.sqrt(xp.sum(y * y, axis=(-2, -1), keepdims=True))


def is_pd(A) -> bool:
    """Whether every matrix of the concrete stack ``A`` is positive definite (a float64 host Cholesky); True
    for traced values, which cannot be inspected."""
    if not compat.is_concrete(A):
        return True
    try:
        np.linalg.cholesky(compat.to_numpy(A).astype(np.float64))
    except np.linalg.LinAlgError:
        return False
    return True


# ---------------------------------------------------------------------------- LAPACK threads
_CONTROLLER: list = []


def lapack_single_thread(*arrays):
    """A context running OpenBLAS/MKL single-threaded while NumPy works on a batch of small matrices.

    NumPy's batched ``eigh``/``cholesky``/``solve`` call LAPACK once per matrix; a multi-threaded BLAS under those
    calls synchronises its threads for every small product and loses badly: 1 000 ``eigh`` of 64x64 took 1.1 s
    with one OpenBLAS thread and 5.9-28 s with two on the 2-core development machine (loaded), 32x32 0.31 s
    against 9.8-15 s.  Applied to NumPy stacks of at least 4 matrices of size <= 512 (threadpoolctl, when
    installed, with a cached controller: ~20 us per use); other input: no effect."""
    a = next((x for x in arrays if x is not None and compat.all_numpy(x)), None)
    if a is None or a.ndim < 3 or a.shape[-1] > 512 or math.prod(a.shape[:-2]) < 4:
        return contextlib.nullcontext()
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController

            _CONTROLLER.append(ThreadpoolController())
        except ImportError:
            _CONTROLLER.append(None)
    ctl = _CONTROLLER[0]
    return contextlib.nullcontext() if ctl is None else ctl.limit(limits=1, user_api="blas")


# ---------------------------------------------------------------------------- spectral functions
def floor(w, eps, xp):
    """Eigenvalue floor: ``eps`` (absolute) or, for ``eps=None``, n * machine-eps * max|w| per matrix."""
    if eps is not None:
        return xp.maximum(w, eps)
    n = w.shape[-1]
    tiny = n * float(xp.finfo(w.dtype).eps)
    lo = tiny * xp.max(xp.abs(w), axis=-1, keepdims=True)
    lo = xp.maximum(lo, float(xp.finfo(w.dtype).smallest_normal))
    return xp.maximum(w, lo)


def eigh(A, xp, eps=None, clamp=True):
    """Eigendecomposition of sym(A) with eigenvalues floored (ReEig-style) when ``clamp``."""
    with lapack_single_thread(A):
        w, U = xp.linalg.eigh(sym(A, xp))
    if clamp:
        w = floor(w, eps, xp)
    return w, U


def recon(U, f, xp):
    """``U diag(f) U^T``."""
    return (U * f[..., None, :]) @ mT(U, xp)


def rot(U, G, xp):
    """``U^T G U``."""
    return mT(U, xp) @ G @ U


def divdiff(w, kind, xp, p=None):
    """Divided-difference (Loewner) matrix ``K_ij = f[w_i, w_j]`` in cancellation-free form.

    kind: "sqrt", "invsqrt", "log", "exp", "pow" (exponent p), "inv".
    """
    a = w[..., :, None]
    b = w[..., None, :]
    if kind == "sqrt":
        s = xp.sqrt(w)
        return 1.0 / (s[..., :, None] + s[..., None, :])
    if kind == "invsqrt":
        s = xp.sqrt(w)
        sa, sb = s[..., :, None], s[..., None, :]
        return -1.0 / (sa * sb * (sa + sb))
    if kind == "inv":
        return -1.0 / (a * b)
    tiny = 1e-6 if w.dtype == xp.float64 else 1e-3
    if kind == "log":
        # log(a/b)/(a-b) = log1p(d)/(b d), d = (a-b)/b; series 1/b (1 - d/2 + d^2/3) for small d
        d = (a - b) / b
        small = xp.abs(d) < tiny
        dd = xp.where(small, xp.ones_like(d), d)
        return xp.where(small, (1.0 - d / 2 + d * d / 3) / b, xp.log1p(dd) / (b * dd))
    if kind == "exp":
        # (e^a - e^b)/(a-b) = e^b expm1(a-b)/(a-b); pair with the larger value as the base for stability
        m = xp.maximum(a, b)
        d = -xp.abs(a - b)
        small = xp.abs(d) < tiny
        dd = xp.where(small, -xp.ones_like(d), d)
        return xp.exp(m) * xp.where(small, 1.0 + d / 2 + d * d / 6, xp.expm1(dd) / dd)
    if kind == "pow":
        # (a^p - b^p)/(a-b) = b^(p-1) expm1(p log1p(d))/d, d = (a-b)/b
        d = (a - b) / b
        small = xp.abs(d) < tiny
        dd = xp.where(small, xp.ones_like(d), d)
        series = p + p * (p - 1) / 2 * d + p * (p - 1) * (p - 2) / 6 * d * d
        return b ** (p - 1) * xp.where(small, series, xp.expm1(p * xp.log1p(dd)) / dd)
    raise ValueError(kind)


def fun(w, kind, xp, p=None):
    if kind == "sqrt":
        return xp.sqrt(w)
    if kind == "invsqrt":
        return 1.0 / xp.sqrt(w)
    if kind == "log":
        return xp.log(w)
    if kind == "exp":
        return xp.exp(w)
    if kind == "pow":
        return w ** p
    if kind == "inv":
        return 1.0 / w
    raise ValueError(kind)


def funm(A, kind, xp, p=None, eps=None):
    """``(f(A), (w, U))`` for the spectral function ``kind`` of sym(A)."""
    w, U = eigh(A, xp, eps=eps, clamp=kind != "exp")
    return recon(U, fun(w, kind, xp, p), xp), (w, U)


def funm_bwd(w, U, G, kind, xp, p=None):
    """Daleckii-Krein VJP: ``U (K o U^T sym(G) U) U^T``."""
    K = divdiff(w, kind, xp, p)
    return U @ (K * rot(U, sym(G, xp), xp)) @ mT(U, xp)


def sqrt_pair(P, xp):
    """``(P^{1/2}, P^{-1/2}, (w, U))``."""
    w, U = eigh(P, xp)
    s = xp.sqrt(w)
    return recon(U, s, xp), recon(U, 1.0 / s, xp), (w, U)


# ---------------------------------------------------------------------------- Lyapunov equation
def lyap_eig(w, U, Q, xp):
    """Solve ``A X + X A = Q`` given ``eigh(A) = (w, U)``."""
    return U @ (rot(U, Q, xp) / (w[..., :, None] + w[..., None, :])) @ mT(U, xp)


def lyap_sign(B, Q, n_iter, xp):
    """Solve ``B X + X B = Q`` (B SPD) by the coupled Newton-Schulz matrix-sign iteration.

    ``sign([[B, Q], [0, -B]]) = [[I, 2X], [0, -I]]``; B is scaled by its Frobenius norm first, so the
    spectrum lies in (0, 1] and the iteration converges (Song, Sebe, Wang 2022, Sec. 3.3).
    """
    c = fro(B, xp)
    Bk = B / c
    Ck = Q / c
    I = eye(B.shape[-1], B, xp)
    for _ in range(n_iter):
        B2 = Bk @ Bk
        Ck = 0.5 * (Ck @ (3.0 * I - B2) - B2 @ Ck + Bk @ Ck @ Bk)
        Bk = 0.5 * Bk @ (3.0 * I - B2)
    return 0.5 * Ck


# ---------------------------------------------------------------------------- Bures-Wasserstein
def ot_map(A, B, xp):
    """``T_{A->B} = A^{-1/2} (A^{1/2} B A^{1/2})^{1/2} A^{-1/2}`` (symmetric; ``T A T = B``)."""
    H, Hi, _ = sqrt_pair(A, xp)
    S, _ = funm(H @ B @ H, "sqrt", xp)
    return sym(Hi @ S @ Hi, xp)


# Relative accuracy asked of d^2 from the trace formula before the Procrustes form replaces it.
_BW_RTOL = {"float64": 1e-10, "float32": 1e-4}


def bw2_terms(trA, trB, mu, xp):
    """Squared BW distance by the trace formula ``tr A + tr B - 2 sum_i sqrt(mu_i)`` (``mu`` the eigenvalues
    of ``L^T B L``) and a bound on its rounding error.

    Eigenvalues of ``L^T B L`` carry an absolute error of about ``n eps tr A tr B``; where some ``mu_i`` are
    that small their square roots lose half the digits, and where ``d^2`` is small next to ``tr A + tr B``
    the subtraction cancels.  The bound covers both: ``2 sum_i delta / (sqrt(mu_i + delta) + sqrt(mu_i))
    + n eps (tr A + tr B)``, ``delta = n eps tr A tr B``."""
    n = mu.shape[-1]
    eps = float(xp.finfo(mu.dtype).eps)
    mu0 = xp.maximum(mu, 0.0)
    s = xp.sqrt(mu0)
    d2 = trA + trB - 2 * xp.sum(s, axis=-1)
    delta = (n * eps) * trA * trB
    den = xp.sqrt(mu0 + delta[..., None]) + s
    den = xp.where(den > 0, den, xp.ones_like(den))
    err = 2 * xp.sum(delta[..., None] / den, axis=-1) + (n * eps) * (trA + trB)
    return xp.maximum(d2, 0.0), err


def bw2_procrustes(A, B, xp):
    """Squared BW distance as a sum of squares, without cancellation: ``min_U ||L_A - L_B U||_F^2``
    (``A = L_A L_A^T``, ``B = L_B L_B^T``; Bhatia, Jain, Lim 2019, Thm 1), minimised by the polar factor
    ``U = Q P^T`` of ``L_A^T L_B = P S Q^T``: ``d^2 = ||L_A P - L_B Q||_F^2``.  Accurate to a few ulp of
    ``||L_A|| + ||L_B||`` in ``d`` (so ``d(A, A)`` is ~1e-16 where the trace formula gives ~1e-8); about
    three times the cost of the trace formula.  Any magnitudes: computed for the scaled pair."""
    s = matrix_scale(xp, A, B)
    LA = xp.linalg.cholesky(sym(A, xp) / s)
    LB = xp.linalg.cholesky(sym(B, xp) / s)
    P, _, Qt = xp.linalg.svd(mT(LA, xp) @ LB)
    D = LA @ P - LB @ mT(Qt, xp)
    return xp.sum(D * D, axis=(-2, -1)) * s[..., 0, 0]


def bw2_refine(d2, err, A, B, xp):
    """``d2`` from :func:`bw2_terms` (for the pair ``A``, ``B`` as given), with the entries whose error bound
    exceeds the target relative accuracy recomputed by :func:`bw2_procrustes` (all entries under tracing,
    where the bound cannot be read)."""
    if not compat.is_concrete(d2):
        return bw2_procrustes(A, B, xp)
    rtol = _BW_RTOL.get(str(d2.dtype).rsplit(".", 1)[-1], 1e-4)
    need = err > rtol * d2
    if bool(xp.any(need)):
        d2 = xp.where(need, bw2_procrustes(A, B, xp), d2)
    return d2


def bw2_trace(A, B, xp):
    """``(d^2, error bound)`` by the trace formula for symmetric positive definite ``A``, ``B`` of any
    magnitude: computed for the pair divided by a common scale (``d^2`` is homogeneous of degree 1)."""
    s = matrix_scale(xp, A, B)
    As, Bs = sym(A, xp) / s, sym(B, xp) / s
    L = xp.linalg.cholesky(As)
    mu = xp.linalg.eigvalsh(sym(mT(L, xp) @ Bs @ L, xp))
    d2, err = bw2_terms(trace(As, xp), trace(Bs, xp), mu, xp)
    return d2 * s[..., 0, 0], err * s[..., 0, 0]


def bw2(A, B, xp):
    """Accurate squared BW distance of symmetric positive definite ``A``, ``B`` (batched, broadcast), any
    magnitude."""
    d2, err = bw2_trace(A, B, xp)
    return bw2_refine(d2, err, A, B, xp)


# ---------------------------------------------------------------------------- covariance
def covariance_body(X, axis, estimator, shrinkage, assume_centered, return_shrinkage, fn, name):
    """The covariance estimate of :func:`optnorm.spd.covariance` (validated arguments; ``fn`` and ``name`` word
    the overflow error): the observations on ``axis``, computed for ``X / s`` (entries <= 1, scale before
    squaring) and multiplied by ``s^2``; an estimate beyond the dtype's range raises ``ValueError``."""
    xp = compat.array_namespace(X)
    Xc, dt = upcast(X, xp)
    if axis == X.ndim - 1:
        Xc = mT(Xc, xp)
    n, p = Xc.shape[-2], Xc.shape[-1]
    s = matrix_scale(xp, Xc)
    Xc = Xc / s
    if not assume_centered:
        Xc = Xc - xp.mean(Xc, axis=-2, keepdims=True)
    S = sym(mT(Xc, xp) @ Xc, xp) / n
    mu = xp.sum(xp.linalg.diagonal(S), axis=-1) / p
    if estimator == "scm":
        rho = xp.zeros_like(mu) + (0.0 if shrinkage is None else shrinkage)
    elif p == 1:
        rho = xp.zeros_like(mu)
    elif estimator == "ledoit_wolf":
        sq = xp.sum(Xc * Xc, axis=-1)                    # ||x_s||^2
        beta_ = xp.sum(sq * sq, axis=-1)                 # sum_s ||x_s||^4
        delta_ = xp.sum(S * S, axis=(-2, -1))            # ||S||_F^2
        beta = (beta_ / n - delta_) / (p * n)
        delta = (delta_ - 2.0 * mu * mu * p + p * mu * mu) / p
        beta = xp.minimum(beta, delta)
        safe = xp.where(delta > 0, delta, xp.ones_like(delta))
        rho = xp.where(beta == 0, xp.zeros_like(beta), beta / safe)
    else:  # oas
        alpha = xp.mean(xp.reshape(S * S, S.shape[:-2] + (p * p,)), axis=-1)
        num = alpha + mu * mu
        den = (n + 1) * (alpha - mu * mu / p)
        safe = xp.where(den == 0, xp.ones_like(den), den)
        rho = xp.where(den == 0, xp.ones_like(den), xp.minimum(num / safe, 1.0))
    r = rho[..., None, None]
    C = ((1.0 - r) * S + (r * mu[..., None, None]) * eye(p, S, xp)) * s * s
    C = compat.cast(C, dt, xp)
    if compat.is_concrete(C) and not bool(xp.all(xp.isfinite(C))):
        raise ValueError(f"{fn}: the covariance of {name} overflows {dt}: its entries are too large "
                         f"(max |{name}| = {float(xp.max(s)):.3g}); rescale {name}")
    return (C, compat.cast(rho, dt, xp)) if return_shrinkage else C


# ---------------------------------------------------------------------------- autograd
def apply_native(name, *arrays, **opts):
    """Run the registered op ``name`` so that the caller's autograd sees optnorm's VJP: through the torch
    adapter when a tensor requires grad, the JAX adapter when an array is traced, else the plain call."""
    kind = compat.native_autograd(*arrays)
    if kind == "torch":
        from .. import torch as adapter
    elif kind == "jax":
        from .. import jax as adapter
    else:
        return ops.get(name).fn(*arrays, **opts)
    return adapter.apply(name, *arrays, **opts)
