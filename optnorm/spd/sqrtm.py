"""Matrix square root and inverse square root of SPD matrices (batched), with VJPs: eigendecomposition,
coupled Newton-Schulz, matrix Taylor polynomial (MTP) and matrix Pade approximant (MPA)."""
from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.typing import Array
from .._lib.api import public, vjp
from .._lib.dispatch import Dispatcher, numpy_float
from .._lib.roles import SPD, Bool, Choice, Int, Positive
from ._linalg import eigh, eye, floor, fro, funm_bwd, lyap_sign, recon, sym, upcast

METHODS = ("eigh", "newton_schulz", "mtp", "mpa")


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
    """[m/m] Pade approximant p(z)/q(z) of (1 - z)^power from its Taylor series (exact Gaussian elimination).

    Reference only (tests): the power form loses all accuracy for m >~ 15 (coefficients ~4^m of alternating
    sign); :func:`_pade_fractions` evaluates the same rational function stably."""
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


@functools.lru_cache(maxsize=None)
def _pade_fractions(m: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Partial fractions of the [m/m] Pade approximant of sqrt(1 - z):
    ``r_m(z) = 1 - sum_j alpha_j z / (1 - beta_j z)``, ``alpha_j = 2/(2m+1) sin^2(j pi/(2m+1))``,
    ``beta_j = cos^2(j pi/(2m+1))`` (Higham, "Stable iterations for the matrix square root", Numer.
    Algorithms 1997; Functions of Matrices, 2008, Sec. 6.7).  Every ``I - beta_j Z`` is well conditioned for
    ``0 <= Z < I``, so any order is stable."""
    th = [j * math.pi / (2 * m + 1) for j in range(1, m + 1)]
    return (tuple(2.0 / (2 * m + 1) * math.sin(t) ** 2 for t in th), tuple(math.cos(t) ** 2 for t in th))


def _poly(Z, coeffs, I, xp):
    """sum_k coeffs[k] Z^k by Horner's rule (len(coeffs) - 1 GEMMs)."""
    Y = coeffs[-1] * I + 0 * Z
    for a in reversed(coeffs[:-1]):
        Y = Y @ Z + a * I
    return Y


def _pade(Z, m, I, xp):
    """``r_m(Z)`` by partial fractions: the m shifted systems ``(I - beta_j Z) X_j = Z`` in one batched solve."""
    alpha, beta = _pade_fractions(m)
    dt = Z.dtype
    dev = compat.device(Z)
    b = xp.reshape(xp.asarray(beta, dtype=dt, device=dev), (m,) + (1,) * Z.ndim)
    a = xp.reshape(xp.asarray(alpha, dtype=dt, device=dev), (m,) + (1,) * Z.ndim)
    rhs = xp.broadcast_to(Z, (m,) + tuple(Z.shape))
    X = xp.linalg.solve(I - b * Z, rhs)
    return I - xp.sum(a * X, axis=0)


# ---------------------------------------------------------------------------- forward kernels
_sqrt_both = Dispatcher("spd.sqrtm", serves=("spd.sqrtm", "spd.invsqrtm"))


@_sqrt_both.generic
def _sqrt_generic(A, *, method, n_iter, degree, eps, want, xp):
    """(sqrt or None, invsqrt or None, (w, U) for the eigh backward or None)."""
    n = A.shape[-1]
    if method == "eigh":
        w, U = eigh(A, xp, eps=eps)
        s = xp.sqrt(w)
        Y = recon(U, s, xp) if "sqrt" in want else None
        Z = recon(U, 1.0 / s, xp) if "invsqrt" in want else None
        return Y, Z, (w, U)
    A = sym(A, xp)
    c = fro(A, xp)      # overflow-safe: the iterations see A / ||A||_F, spectrum in (0, 1]
    sc = xp.sqrt(c)
    I = eye(n, A, xp)
    if method == "newton_schulz":
        Y = A / c
        Z = I + 0 * A
        for _ in range(n_iter):
            T = 0.5 * (3.0 * I - Z @ Y)
            Y = Y @ T
            Z = T @ Z
        return sc * Y, Z / sc, None
    Zm = I - A / c
    if method == "mtp":
        Y = Z = None
        if "sqrt" in want:
            Y = sc * _poly(Zm, [float(x) for x in _taylor_coeffs(Fraction(1, 2), degree)], I, xp)
        if "invsqrt" in want:
            Z = _poly(Zm, [float(x) for x in _taylor_coeffs(Fraction(-1, 2), degree)], I, xp) / sc
        return Y, Z, None
    # mpa: sqrt = sc r_m(Z), invsqrt = r_m(Z)^{-1} / sc
    R = _pade(Zm, degree, I, xp)
    Y = sc * R if "sqrt" in want else None
    Z = xp.linalg.solve(R, I + 0 * R) / sc if "invsqrt" in want else None
    return Y, Z, None


@_sqrt_both.numba(when=lambda A, *, method, **kw: method == "eigh" and A.ndim >= 3 and 2 <= A.shape[-1] <= 5
                  and numpy_float(A))
def _sqrt_numba(A, *, method, n_iter, degree, eps, want, xp):
    from .._numba import spd as nb

    w, U = nb.eigh_batched(A)
    w = floor(w, eps, xp)
    s = np.sqrt(w)
    Y = recon(U, s, xp) if "sqrt" in want else None
    Z = recon(U, 1.0 / s, xp) if "invsqrt" in want else None
    return Y, Z, (w, U)


@_sqrt_both.cuda(when=lambda A, *, method, **kw: method == "newton_schulz" and A.ndim >= 2 and A.shape[-1] <= 32
                 and str(A.dtype) in ("float32", "float64"))
def _sqrt_cuda(A, *, method, n_iter, degree, eps, want, xp):
    """One thread per matrix: the same coupled Newton-Schulz iteration in double-precision local arrays."""
    import cupy

    from .._cuda import launch

    n = A.shape[-1]
    a = cupy.ascontiguousarray(A).reshape(-1, n, n)
    count = a.shape[0]
    Y = cupy.empty_like(a)
    Z = cupy.empty_like(a)
    launch.elementwise("spd", "newton_schulz_sqrt", A.dtype, count, (a, Y, Z, count, np.int32(n), np.int32(n_iter)),
                       block=32)
    return Y.reshape(A.shape), Z.reshape(A.shape), None


# ---------------------------------------------------------------------------- public functions
class SqrtmRes(NamedTuple):
    """Residuals of sqrtm/invsqrtm: which root, the method, the eigendecomposition (eigh) and the output."""
    kind: str
    method: str
    eig: Any           # (w, U) for method="eigh", else None
    Y: Any             # the root in the compute dtype
    dtype: Any
    lyap_iter: int


def _defaults(method, n_iter, degree):
    return (20 if n_iter is None else n_iter), ((10 if method == "mtp" else 5) if degree is None else degree)


def _root_fwd(A, kind, method, n_iter, degree, eps, lyap_iter):
    xp = compat.array_namespace(A)
    n_iter, degree = _defaults(method, n_iter, degree)
    Ac, dt = upcast(A, xp)
    Y, Z, eig = _sqrt_both(Ac, method=method, n_iter=n_iter, degree=degree, eps=eps, want=(kind,), xp=xp)
    R = Y if kind == "sqrt" else Z
    return compat.cast(R, dt, xp), SqrtmRes(kind, method, eig, R, dt, lyap_iter)


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
        ``Z = I - A/||A||_F``.  ``"mpa"``: [degree/degree] matrix Pade approximant (default [5/5]) of
        (I - Z)^(1/2), evaluated by its partial fractions (``degree`` shifted solves, stable for every order;
        the inverse root is its inverse).
        For mtp/mpa the error in each eigen-direction is ``sqrt(||A||_F) |r(z_i)|``, r the scalar
        approximation error at z_i = 1 - lambda_i/||A||_F: low accuracy for ill-conditioned input by design
        (Song, Sebe, Wang, "Fast Differentiable Matrix Square Root", ICLR 2022).
    n_iter : int, optional
        Newton-Schulz steps (default 20; a fixed count, no tolerance).
    degree : int, optional
        Taylor degree (mtp, default 10) or Pade order (mpa, default 5).
    eps : float, optional
        Absolute eigenvalue floor for ``"eigh"`` (default: n * machine-eps * max eigenvalue).
    check : bool
        Validate finiteness, symmetry and positive definiteness (a float64 host Cholesky; on failure the
        error reports the smallest eigenvalue).  Pass ``False`` to skip the host round trip (GPU arrays, hot
        loops); shapes and dtypes are always checked.
    lyap_iter : int
        Steps of the matrix-sign iteration solving the backward's Lyapunov equation for the iterative methods
        (default 25; the eigh method uses the exact Daleckii-Krein formula).
"""

_ROOT_ROLES = dict(A=SPD(gate="check"), method=Choice(METHODS), n_iter=Int(1, optional=True),
                   degree=Int(1, optional=True), eps=Positive(optional=True), check=Bool(), lyap_iter=Int(1))


def _doc(text):
    def deco(f):
        f.__doc__ = text
        return f
    return deco


@public(**_ROOT_ROLES, gufunc=("(n,n)->(n,n)", {}))
@_doc(r"""Principal square root ``A^{1/2}`` of SPD matrices, batched and differentiable.

    .. math::

        A^{1/2} = U\operatorname{diag}(\sqrt{\lambda_i})U^\top,\qquad
        \bar A = X,\quad A^{1/2}X + XA^{1/2} = \operatorname{sym}(\bar Y)

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
    """)
def sqrtm(A: Array, *, method: str = "eigh", n_iter: int | None = None, degree: int | None = None,
          eps: float | None = None, check: bool = True, lyap_iter: int = 25) -> Array:
    return _root_fwd(A, "sqrt", method, n_iter, degree, eps, lyap_iter)[0]


@public(**_ROOT_ROLES, gufunc=("(n,n)->(n,n)", {}))
@_doc(r"""Inverse principal square root ``A^{-1/2}`` of SPD matrices, batched and differentiable.

    .. math::

        A^{-1/2} = U\operatorname{diag}(\lambda_i^{-1/2})U^\top

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
    """)
def invsqrtm(A: Array, *, method: str = "eigh", n_iter: int | None = None, degree: int | None = None,
             eps: float | None = None, check: bool = True, lyap_iter: int = 25) -> Array:
    return _root_fwd(A, "invsqrt", method, n_iter, degree, eps, lyap_iter)[0]


def sqrtm_fwd(A, *, method="eigh", n_iter=None, degree=None, eps=None, check=True, lyap_iter=25):
    return _root_fwd(A, "sqrt", method, n_iter, degree, eps, lyap_iter)


def invsqrtm_fwd(A, *, method="eigh", n_iter=None, degree=None, eps=None, check=True, lyap_iter=25):
    return _root_fwd(A, "invsqrt", method, n_iter, degree, eps, lyap_iter)




def sqrtm_bwd(res: SqrtmRes, dY):
    xp = compat.array_namespace(res.Y)
    G = sym(compat.cast(dY, res.Y.dtype, xp), xp)
    if res.method == "eigh":
        w, U = res.eig
        dA = funm_bwd(w, U, G, res.kind, xp)
    elif res.kind == "sqrt":
        dA = lyap_sign(res.Y, G, res.lyap_iter, xp)
    else:
        X = lyap_sign(res.Y, G, res.lyap_iter, xp)
        Y2 = res.Y @ res.Y
        dA = -(Y2 @ X @ Y2)
    return (compat.cast(sym(dA, xp), res.dtype, xp),)


vjp(sqrtm, sqrtm_fwd, sqrtm_bwd, validate=True)
vjp(invsqrtm, invsqrtm_fwd, sqrtm_bwd, validate=True)
