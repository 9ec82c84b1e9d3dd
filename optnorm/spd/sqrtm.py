"""Matrix square root and inverse square root of SPD matrices (batched), with VJPs.

Also holds the spectral helpers the other ``optnorm.spd`` modules share
(symmetrisation, clamped eigendecomposition, Daleckii-Krein divided differences,
the matrix-sign Lyapunov iteration).  Only :func:`sqrtm` and :func:`invsqrtm` are public here.
"""
from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np

from .._lib import compat, ops, validate
from .._lib.dispatch import Dispatcher, numpy_float

# ``sqrtm`` itself is exported through ``optnorm.spd.bures`` (see ``bures._unshadow``): the package binds the
# name ``sqrtm`` to this submodule on import and the shared exporter refuses to replace a binding.
__all__ = ["sqrtm", "invsqrtm"]

METHODS = ("eigh", "newton_schulz", "mtp", "mpa")


# ---------------------------------------------------------------------------- shared helpers
def _sym(x, xp):
    return (x + xp.matrix_transpose(x)) / 2


def _mT(x, xp):
    return xp.matrix_transpose(x)


def _eye(n, x, xp):
    return xp.eye(n, dtype=x.dtype, device=compat.device(x))


def _fro(x, xp):
    """Per-matrix Frobenius norm, shape (..., 1, 1)."""
    return xp.sqrt(xp.sum(x * x, axis=(-2, -1), keepdims=True))


def _trace(x, xp):
    return xp.sum(xp.linalg.diagonal(x), axis=-1)


def _upcast(x, xp):
    """(x in its compute dtype, original dtype): float16/bfloat16 are computed in float32."""
    dt = compat.compute_dtype(x, xp)
    return (x if x.dtype == dt else xp.astype(x, dt)), x.dtype


def _cast(y, dtype, xp):
    return y if y.dtype == dtype else xp.astype(y, dtype)


def _floor(w, eps, xp):
    """Eigenvalue floor: ``eps`` (absolute) or, for ``eps=None``, n * machine-eps * max|w| per matrix."""
    if eps is not None:
        return xp.maximum(w, eps)
    n = w.shape[-1]
    tiny = n * float(xp.finfo(w.dtype).eps)
    lo = tiny * xp.max(xp.abs(w), axis=-1, keepdims=True)
    lo = xp.maximum(lo, float(xp.finfo(w.dtype).smallest_normal))
    return xp.maximum(w, lo)


def _eigh(A, xp, eps=None, clamp=True):
    """Eigendecomposition of sym(A) with eigenvalues floored (ReEig-style) when ``clamp``."""
    w, U = xp.linalg.eigh(_sym(A, xp))
    if clamp:
        w = _floor(w, eps, xp)
    return w, U


def _recon(U, f, xp):
    """U diag(f) U^T."""
    return (U * f[..., None, :]) @ _mT(U, xp)


def _rot(U, G, xp):
    """U^T G U."""
    return _mT(U, xp) @ G @ U


def _divdiff(w, kind, xp, p=None):
    """Divided-difference (Loewner) matrix K_ij = f[w_i, w_j] in cancellation-free form.

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


def _fun(w, kind, xp, p=None):
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


def _funm(A, kind, xp, p=None, eps=None):
    """(f(A), (w, U)) for the spectral function ``kind`` of sym(A)."""
    w, U = _eigh(A, xp, eps=eps, clamp=kind != "exp")
    return _recon(U, _fun(w, kind, xp, p), xp), (w, U)


def _funm_bwd(w, U, G, kind, xp, p=None):
    """Daleckii-Krein VJP: U (K o U^T sym(G) U) U^T."""
    K = _divdiff(w, kind, xp, p)
    return U @ (K * _rot(U, _sym(G, xp), xp)) @ _mT(U, xp)


def _lyap_eig(w, U, Q, xp):
    """Solve A X + X A = Q given eigh(A) = (w, U)."""
    return U @ (_rot(U, Q, xp) / (w[..., :, None] + w[..., None, :])) @ _mT(U, xp)


def _lyap_sign(B, Q, n_iter, xp):
    """Solve B X + X B = Q (B SPD) by the coupled Newton-Schulz matrix-sign iteration.

    sign([[B, Q], [0, -B]]) = [[I, 2X], [0, -I]]; B is scaled by its Frobenius norm first,
    so the spectrum lies in (0, 1] and the iteration converges (Song, Sebe, Wang 2022, Sec. 3.3).
    """
    c = _fro(B, xp)
    c = xp.where(c > 0, c, xp.ones_like(c))
    Bk = B / c
    Ck = Q / c
    eye = _eye(B.shape[-1], B, xp)
    for _ in range(n_iter):
        B2 = Bk @ Bk
        Ck = 0.5 * (Ck @ (3.0 * eye - B2) - B2 @ Ck + Bk @ Ck @ Bk)
        Bk = 0.5 * Bk @ (3.0 * eye - B2)
    return 0.5 * Ck


def _check_pd_host(A, name):
    """Positive definiteness through a float64 host Cholesky (the error reports the smallest eigenvalue)."""
    validate.check_spd(A, name, check_sym=False)


def _check_spd_input(A, name, xp, *, check=True, need_pd=True, sym_rtol=None):
    """Shared input checks for SPD arguments (square, floating, finite, symmetric, positive definite)."""
    validate.check_float(A, name, xp)
    validate.check_square(A, name)
    if not check:
        return
    if compat.is_torch(A):
        A = A.detach()   # data checks only: no autograd warnings
    validate.check_finite(A, name, xp)
    validate.check_symmetric(A, name, rtol=sym_rtol, xp=xp)
    if need_pd:
        _check_pd_host(A, name)


# ---------------------------------------------------------------------------- MTP / MPA coefficients
@functools.lru_cache(maxsize=None)
def _taylor_coeffs(power: Fraction, K: int) -> tuple:
    """Taylor coefficients of (1 - z)^power up to degree K (exact fractions)."""
    c = [Fraction(1)]
    for k in range(1, K + 1):
        c.append(c[-1] * (k - 1 - power) / k)
    return tuple(c)


@functools.lru_cache(maxsize=None)
def _pade_coeffs(power: Fraction, m: int) -> tuple:
    """[m/m] Pade approximant p(z)/q(z) of (1 - z)^power from its Taylor series (exact Gaussian elimination)."""
    c = _taylor_coeffs(power, 2 * m)
    # q_0 = 1;  sum_{j=0..m} q_j c_{k-j} = 0 for k = m+1..2m
    rows = [[c[k - j] if k - j >= 0 else Fraction(0) for j in range(1, m + 1)] + [-c[k]]
            for k in range(m + 1, 2 * m + 1)]
    n = m
    for i in range(n):
        piv = next(r for r in range(i, n) if rows[r][i] != 0)
        rows[i], rows[piv] = rows[piv], rows[i]
        for r in range(n):
            if r != i and rows[r][i] != 0:
                f = rows[r][i] / rows[i][i]
                rows[r] = [x - f * y for x, y in zip(rows[r], rows[i])]
    q = [Fraction(1)] + [rows[i][n] / rows[i][i] for i in range(n)]
    p = [sum(q[j] * c[k - j] for j in range(0, min(k, m) + 1)) for k in range(m + 1)]
    return tuple(float(x) for x in p), tuple(float(x) for x in q)


def _poly(Z, coeffs, eye, xp):
    """sum_k coeffs[k] Z^k by Horner's rule (len(coeffs) - 1 GEMMs)."""
    Y = coeffs[-1] * eye + 0 * Z
    for a in reversed(coeffs[:-1]):
        Y = Y @ Z + a * eye
    return Y


def _powers(Z, m, xp):
    out = [None, Z]
    for _ in range(2, m + 1):
        out.append(out[-1] @ Z)
    return out


# ---------------------------------------------------------------------------- forward kernels
_sqrt_both = Dispatcher("spd.sqrtm")


@_sqrt_both.generic
def _sqrt_generic(A, *, method, n_iter, degree, eps, want, xp):
    """(sqrt or None, invsqrt or None, residual for the backward)."""
    n = A.shape[-1]
    if method == "eigh":
        w, U = _eigh(A, xp, eps=eps)
        s = xp.sqrt(w)
        Y = _recon(U, s, xp) if "sqrt" in want else None
        Z = _recon(U, 1.0 / s, xp) if "invsqrt" in want else None
        return Y, Z, (w, U)
    A = _sym(A, xp)
    c = _fro(A, xp)
    c = xp.where(c > 0, c, xp.ones_like(c))
    sc = xp.sqrt(c)
    eye = _eye(n, A, xp)
    if method == "newton_schulz":
        Y = A / c
        Z = eye + 0 * A
        for _ in range(n_iter):
            T = 0.5 * (3.0 * eye - Z @ Y)
            Y = Y @ T
            Z = T @ Z
        return sc * Y, Z / sc, None
    Zm = eye - A / c
    if method == "mtp":
        Y = Z = None
        if "sqrt" in want:
            Y = sc * _poly(Zm, [float(x) for x in _taylor_coeffs(Fraction(1, 2), degree)], eye, xp)
        if "invsqrt" in want:
            Z = _poly(Zm, [float(x) for x in _taylor_coeffs(Fraction(-1, 2), degree)], eye, xp) / sc
        return Y, Z, None
    # mpa: [m/m] Pade of sqrt(1 - z): sqrt = sc * q(Z)^{-1} p(Z); invsqrt = p(Z)^{-1} q(Z) / sc
    p, q = _pade_coeffs(Fraction(1, 2), degree)
    pw = _powers(Zm, degree, xp)
    P = p[0] * eye + sum(p[k] * pw[k] for k in range(1, degree + 1))
    Q = q[0] * eye + sum(q[k] * pw[k] for k in range(1, degree + 1))
    Y = sc * xp.linalg.solve(Q, P) if "sqrt" in want else None
    Z = xp.linalg.solve(P, Q) / sc if "invsqrt" in want else None
    return Y, Z, None


@_sqrt_both.numba(when=lambda A, *, method, **kw: method == "eigh" and A.ndim >= 3 and 2 <= A.shape[-1] <= 5
                  and numpy_float(A))
def _sqrt_numba(A, *, method, n_iter, degree, eps, want, xp):
    from .._numba import spd as nb

    w, U = nb.eigh_batched(A)
    w = _floor(w, eps, xp)
    s = np.sqrt(w)
    Y = _recon(U, s, xp) if "sqrt" in want else None
    Z = _recon(U, 1.0 / s, xp) if "invsqrt" in want else None
    return Y, Z, (w, U)


@_sqrt_both.cuda(when=lambda A, *, method, **kw: method == "newton_schulz" and A.ndim >= 2 and A.shape[-1] <= 32
                 and str(A.dtype) in ("float32", "float64"))
def _sqrt_cuda(A, *, method, n_iter, degree, eps, want, xp):
    """One thread per matrix: the same coupled Newton-Schulz iteration in double-precision local arrays."""
    import cupy

    from .._cuda import loader

    n = A.shape[-1]
    a = cupy.ascontiguousarray(A).reshape(-1, n, n)
    count = a.shape[0]
    Y = cupy.empty_like(a)
    Z = cupy.empty_like(a)
    if count:
        k = loader.kernel("spd", f"newton_schulz_sqrt<{loader.dtype_name(A.dtype)}>")
        threads = 32
        k(((count + threads - 1) // threads,), (threads,), (a, Y, Z, np.int64(count), np.int32(n), np.int32(n_iter)))
    return Y.reshape(A.shape), Z.reshape(A.shape), None


def _prep(A, method, n_iter, degree, eps, check, lyap_iter, name="A"):
    xp = compat.array_namespace(A)
    validate.check_in(method, METHODS, "method")
    _check_spd_input(A, name, xp, check=check)
    if n_iter is None:
        n_iter = 20
    n_iter = validate.check_int(n_iter, "n_iter", low=1)
    if degree is None:
        degree = 10 if method == "mtp" else 5
    degree = validate.check_int(degree, "degree", low=1)
    if eps is not None:
        validate.check_positive(eps, "eps")
    lyap_iter = validate.check_int(lyap_iter, "lyap_iter", low=1)
    return xp, n_iter, degree


_DOC_OPTS = """
    Parameters
    ----------
    A : array (..., n, n)
        SPD matrices (batched over leading axes); float16/bfloat16 are computed in float32.
        Symmetry is checked to 100 machine epsilons of the dtype times max|A| and the input is symmetrised.
    method : {"eigh", "newton_schulz", "mtp", "mpa"}
        ``"eigh"``: exact, through a batched eigendecomposition (eigenvalues floored at ``eps``).
        ``"newton_schulz"``: coupled Newton-Schulz (Denman-Beavers type) iteration on ``A/||A||_F`` for
        ``n_iter`` steps (GEMM only): the error in the eigen-direction of eigenvalue lambda is that of the
        scalar iteration started at lambda/||A||_F (quadratic once lambda/||A||_F is near 1; about
        log(kappa)/log(1.5) + 5 steps are needed for condition number kappa).
        ``"mtp"``: matrix Taylor polynomial of degree ``degree`` (default 10) of (I - Z)^(+-1/2),
        ``Z = I - A/||A||_F``.  ``"mpa"``: [degree/degree] matrix Pade approximant (default [5/5]).
        For mtp/mpa the error in each eigen-direction is ``sqrt(||A||_F) |r(z_i)|``, r the scalar
        approximation error at z_i = 1 - lambda_i/||A||_F: low accuracy for ill-conditioned input by design
        (Song, Sebe, Wang, "Fast Differentiable Matrix Square Root", ICLR 2022).
    n_iter : int, optional
        Newton-Schulz steps (default 20).
    degree : int, optional
        Taylor degree (mtp, default 10) or Pade order (mpa, default 5).
    eps : float, optional
        Absolute eigenvalue floor for ``"eigh"`` (default: n * machine-eps * max eigenvalue).
    check : bool
        Validate symmetry, finiteness and positive definiteness (a float64 host Cholesky; on failure the error
        reports the smallest eigenvalue).  Pass ``False`` to skip the host round trip (GPU arrays, jit).
    lyap_iter : int
        Steps of the matrix-sign iteration solving the backward's Lyapunov equation for the iterative methods
        (default 25; the eigh method uses the exact Daleckii-Krein formula).
"""


def sqrtm(A, *, method="eigh", n_iter=None, degree=None, eps=None, check=True, lyap_iter=25):
    return sqrtm_fwd(A, method=method, n_iter=n_iter, degree=degree, eps=eps, check=check, lyap_iter=lyap_iter)[0]


# The docstring shares its option list with invsqrtm, so it is assembled here.
_SQRTM_DOC = """Principal square root ``A^{1/2}`` of SPD matrices, batched and differentiable.

    ``A^{1/2} = U diag(sqrt(lambda)) U^T`` for ``A = U diag(lambda) U^T``.  The VJP solves the Lyapunov
    equation ``Y X + X Y = sym(dY)`` (``Y = A^{1/2}``): for ``method="eigh"`` exactly,
    ``X = U (U^T G U / (sqrt(l_i) + sqrt(l_j))) U^T`` (Daleckii-Krein; finite for repeated eigenvalues),
    for the iterative methods with the matrix-sign Newton-Schulz iteration (Song, Sebe, Wang, ICLR 2022).
    """ + _DOC_OPTS + """
    Returns
    -------
    array (..., n, n), same dtype as ``A``.

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> Y = spd.sqrtm(np.diag([4.0, 9.0]))
    >>> np.allclose(Y, np.diag([2.0, 3.0]))
    True
    """
sqrtm.__doc__ = _SQRTM_DOC


def sqrtm_fwd(A, *, method="eigh", n_iter=None, degree=None, eps=None, check=True, lyap_iter=25):
    xp, n_iter, degree = _prep(A, method, n_iter, degree, eps, check, lyap_iter)
    Ac, dt = _upcast(A, xp)
    Y, _, res = _sqrt_both(Ac, method=method, n_iter=n_iter, degree=degree, eps=eps, want=("sqrt",), xp=xp)
    return _cast(Y, dt, xp), ("sqrt", method, res, Y, dt, lyap_iter)


def invsqrtm(A, *, method="eigh", n_iter=None, degree=None, eps=None, check=True, lyap_iter=25):
    return invsqrtm_fwd(A, method=method, n_iter=n_iter, degree=degree, eps=eps, check=check,
                        lyap_iter=lyap_iter)[0]


# The docstring shares its option list with invsqrtm, so it is assembled here.
_INVSQRTM_DOC = """Inverse principal square root ``A^{-1/2}`` of SPD matrices, batched and differentiable.

    VJP: with ``Y = A^{-1/2}``, ``dA = -Y^2 X Y^2`` where ``Y X + X Y = sym(dY)`` (exact Daleckii-Krein
    weights ``-1/(s_i s_j (s_i + s_j))``, ``s = sqrt(lambda)``, for ``"eigh"``; matrix-sign iteration with a
    per-matrix normalisation otherwise).
    """ + _DOC_OPTS + """
    Returns
    -------
    array (..., n, n), same dtype as ``A``.

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> np.allclose(spd.invsqrtm(np.diag([4.0, 0.25])), np.diag([0.5, 2.0]))
    True
    """
invsqrtm.__doc__ = _INVSQRTM_DOC


def invsqrtm_fwd(A, *, method="eigh", n_iter=None, degree=None, eps=None, check=True, lyap_iter=25):
    xp, n_iter, degree = _prep(A, method, n_iter, degree, eps, check, lyap_iter)
    Ac, dt = _upcast(A, xp)
    _, Z, res = _sqrt_both(Ac, method=method, n_iter=n_iter, degree=degree, eps=eps, want=("invsqrt",), xp=xp)
    return _cast(Z, dt, xp), ("invsqrt", method, res, Z, dt, lyap_iter)


def _sqrt_bwd(res, dY):
    kind, method, eig, Y, dt, lyap_iter = res
    xp = compat.array_namespace(Y)
    G = _sym(xp.astype(dY, Y.dtype) if dY.dtype != Y.dtype else dY, xp)
    if method == "eigh":
        w, U = eig
        dA = _funm_bwd(w, U, G, kind, xp)
    elif kind == "sqrt":
        dA = _lyap_sign(Y, G, lyap_iter, xp)
    else:
        X = _lyap_sign(Y, G, lyap_iter, xp)
        Y2 = Y @ Y
        dA = -(Y2 @ X @ Y2)
    return (_cast(_sym(dA, xp), dt, xp),)


ops.register("spd.sqrtm", sqrtm, sqrtm_fwd, _sqrt_bwd)
ops.register("spd.invsqrtm", invsqrtm, invsqrtm_fwd, _sqrt_bwd)
