"""Spectral matrix functions of symmetric / SPD matrices: ``logm``, ``expm``, ``powm`` and the general ``funm``,
batched over leading axes, with exact Daleckii-Krein VJPs (finite for repeated eigenvalues)."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.roles import SPD, Bool, Callback, Float, Symmetric
from .._lib.typing import Array
from .._lib.vjp import unbroadcast
from ._linalg import divdiff, eigh, funm_bwd, matrix_scale, mT, recon, rot, sym, upcast

__all__: list[str] = []


class MatfunRes(NamedTuple):
    """Residuals of a spectral function: the eigendecomposition of sym(A) (of ``A / s`` for ``powm``)."""
    kind: str
    w: Any
    U: Any
    p: Any          # powm: the exponent (compute dtype, 0-d); funm: (f, df); else None
    fw: Any         # f(w) (powm: the scaled f(w), used by the exponent's cotangent)
    s: Any          # powm: the scale A was divided by; else None
    p_shape: tuple
    dtype: Any


def _fwd(A, kind, p=None):
    xp = compat.array_namespace(A)
    Ac, dt = upcast(A, xp)
    if kind == "exp":
        w, U = eigh(Ac, xp, clamp=False)
        f = xp.exp(w)
        Y = compat.cast(recon(U, f, xp), dt, xp)
        if compat.is_concrete(Y) and not bool(xp.all(xp.isfinite(Y))):
            raise ValueError(f"expm: exp(A) overflows {compat.dtype_name(dt)}: the largest eigenvalue of A is "
                             f"{float(xp.max(w)):.6g}")
        return Y, MatfunRes(kind, w, U, None, f, None, (), dt)
    if kind == "log":
        s = matrix_scale(xp, Ac)          # log(A) = log(A / s) + log(s) I: finite near the dtype's range
        w, U = eigh(Ac / s, xp)
        f = xp.log(w) + xp.log(s[..., 0])
        return compat.cast(recon(U, f, xp), dt, xp), MatfunRes(kind, w * s[..., 0], U, None, f, None, (), dt)
    # pow: A^p = s^p (A/s)^p
    pc = compat.cast(p, Ac.dtype, xp)
    s = matrix_scale(xp, Ac)
    w, U = eigh(Ac / s, xp)
    f = w ** pc * s[..., 0] ** pc
    Y = compat.cast(recon(U, f, xp), dt, xp)
    if compat.is_concrete(Y) and not bool(xp.all(xp.isfinite(Y))):
        raise ValueError(f"powm: A^p overflows {compat.dtype_name(dt)} (p = {float(compat.to_numpy(pc)):.6g})")
    return Y, MatfunRes(kind, w, U, pc, f, s, tuple(p.shape), dt)


# ---------------------------------------------------------------------------- logm / expm
@public(A=SPD(gate="check"), check=Bool(), gufunc=("(n,n)->(n,n)", {}))
def logm(A: Array, *, check: bool = True) -> Array:
    r"""Principal matrix logarithm of SPD matrices, batched and differentiable.

    .. math::

        \log A = U\,\mathrm{diag}(\log\lambda_i)\,U^\top,\qquad A = U\,\mathrm{diag}(\lambda)\,U^\top .

    Computed for :math:`A/s` (``s`` its largest entry) plus :math:`\log(s) I`, so entries near the dtype's
    range give finite results; eigenvalues are floored at ``n`` machine epsilons of the largest (ReEig-style),
    so a singular-to-working-precision input gives a large negative, finite logarithm.  The VJP is the
    Daleckii-Krein formula :math:`\bar A = U\,(K\circ U^\top \mathrm{sym}(\bar Y) U)\,U^\top` with
    :math:`K_{ij} = (\log\lambda_i - \log\lambda_j)/(\lambda_i-\lambda_j)` evaluated as
    :math:`\mathrm{log1p}(\delta)/(\lambda_j\delta)`, :math:`\delta = (\lambda_i-\lambda_j)/\lambda_j`
    (no cancellation; :math:`1/\lambda_i` on repeated eigenvalues).  Higham, *Functions of Matrices*, SIAM
    2008, ch. 3 and 11; pyRiemann's ``logm`` / ``ddlogm``.

    Parameters
    ----------
    A : array (..., n, n)
        SPD matrices (leading axes are a batch).
    check : bool
        Validate finiteness, symmetry and positive definiteness (a float64 host Cholesky); ``False`` skips
        the host round trip (shapes and dtypes are still checked).

    Returns
    -------
    array (..., n, n)
        The symmetric logarithm, dtype of ``A``.

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> np.allclose(spd.logm(np.diag([1.0, np.e])), np.diag([0.0, 1.0]))
    True
    """
    return _fwd(A, "log")[0]


def logm_fwd(A, *, check=True):
    return _fwd(A, "log")


@public(A=Symmetric(gate="check"), check=Bool(), gufunc=("(n,n)->(n,n)", {}))
def expm(A: Array, *, check: bool = True) -> Array:
    r"""Matrix exponential of symmetric matrices, batched and differentiable; the result is SPD.

    .. math::

        \exp A = U\,\mathrm{diag}(e^{\lambda_i})\,U^\top .

    VJP: Daleckii-Krein with :math:`K_{ij} = e^{\max(\lambda_i,\lambda_j)}\,\mathrm{expm1}(-|\delta|)/(-|\delta|)`,
    :math:`\delta = \lambda_i - \lambda_j` (no cancellation; :math:`e^{\lambda_i}` on repeated eigenvalues).
    An exponential beyond the dtype's range raises ``ValueError``.  Higham, *Functions of Matrices*,
    SIAM 2008, ch. 10.

    Parameters
    ----------
    A : array (..., n, n)
        Symmetric matrices (tangent vectors at the identity).
    check : bool
        Validate finiteness and symmetry; ``False`` skips it.

    Returns
    -------
    array (..., n, n)

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> np.allclose(spd.expm(np.diag([0.0, 1.0])), np.diag([1.0, np.e]))
    True
    """
    return _fwd(A, "exp")[0]


def expm_fwd(A, *, check=True):
    return _fwd(A, "exp")


def _spectral_bwd(res: MatfunRes, dY):
    xp = compat.array_namespace(res.w)
    G = compat.cast(dY, res.w.dtype, xp)
    dA = funm_bwd(res.w, res.U, G, res.kind, xp)
    return (compat.cast(dA, res.dtype, xp),)


logm_bwd = expm_bwd = _spectral_bwd
vjp(logm, logm_fwd, logm_bwd, validate=True)
vjp(expm, expm_fwd, expm_bwd, validate=True)


# ---------------------------------------------------------------------------- powm
@public(A=SPD(gate="check"), p=Float("", finite=True), check=Bool(), gufunc=("(n,n),()->(n,n)", {"array_args": 2}))
def powm(A: Array, p: Array | float, *, check: bool = True) -> Array:
    r"""Real matrix power of SPD matrices, batched and differentiable in ``A`` and in ``p``.

    .. math::

        A^p = U\,\mathrm{diag}(\lambda_i^p)\,U^\top,\qquad
        \frac{\partial\,\langle \bar Y, A^p\rangle}{\partial p} = \sum_i (U^\top\bar Y U)_{ii}\,\lambda_i^p\log\lambda_i .

    ``p`` is a finite real number (a Python float or a 0-d array; positional, as pyRiemann's
    ``powm(C, alpha)``).  Computed as :math:`s^p (A/s)^p`; a result beyond the dtype's range raises
    ``ValueError``.  VJP in ``A``: Daleckii-Krein with
    :math:`K_{ij} = \lambda_j^{p-1}\,\mathrm{expm1}(p\,\mathrm{log1p}(\delta))/\delta`,
    :math:`\delta = (\lambda_i-\lambda_j)/\lambda_j` (:math:`p\lambda_i^{p-1}` on repeated eigenvalues).
    Higham, *Functions of Matrices*, SIAM 2008, ch. 11.

    Parameters
    ----------
    A : array (..., n, n)
        SPD matrices.
    p : float or array ()
        The exponent, finite.
    check : bool
        Validate finiteness, symmetry and positive definiteness of ``A``; ``False`` skips it.

    Returns
    -------
    array (..., n, n)

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> np.allclose(spd.powm(np.diag([4.0, 9.0]), 0.5), np.diag([2.0, 3.0]))
    True
    """
    return _fwd(A, "pow", p)[0]


def powm_fwd(A, p, *, check=True):
    return _fwd(A, "pow", p)




def powm_bwd(res: MatfunRes, dY):
    xp = compat.array_namespace(res.w)
    w, U, pc = res.w, res.U, res.p
    G = rot(U, sym(compat.cast(dY, w.dtype, xp), xp), xp)
    s = res.s[..., 0]
    # A^p = s^p (A/s)^p: the Jacobian at A is s^(p-1) times the one at A/s (the divided differences of
    # t -> t^p at the eigenvalues of A/s)
    K = divdiff(w, "pow", xp, p=pc) * (s ** (pc - 1))[..., None]
    dA = U @ (K * G) @ mT(U, xp)
    dp = xp.sum(xp.linalg.diagonal(G) * res.fw * (xp.log(w) + xp.log(s)), axis=-1)
    return (compat.cast(dA, res.dtype, xp), compat.cast(unbroadcast(dp, res.p_shape, xp), res.dtype, xp))


vjp(powm, powm_fwd, powm_bwd, validate=True)


# ---------------------------------------------------------------------------- funm
def _funm_example(rng, dtype):
    import numpy as np

    a = rng.standard_normal((2, 3, 3))
    A = ((a + np.swapaxes(a, -1, -2)) / 2).astype(dtype)
    return (A,), {"f": lambda w: w * w * w + w, "df": lambda w: 3 * w * w + 1}


def _divdiff_general(w, f, fw, df, xp):
    """``K_ij = (f(w_i) - f(w_j)) / (w_i - w_j)``, and ``(f'(w_i) + f'(w_j)) / 2`` where the two eigenvalues
    agree to ``sqrt(eps)`` relative (the midpoint rule's error is ``O(delta^2)``, below the rounding error of
    the quotient it replaces, which is ``eps |f| / delta``)."""
    a = w[..., :, None]
    b = w[..., None, :]
    d = a - b
    scale = xp.maximum(xp.maximum(xp.abs(a), xp.abs(b)), float(xp.finfo(w.dtype).smallest_normal))
    close = xp.abs(d) <= (float(xp.finfo(w.dtype).eps) ** 0.5) * scale
    dfw = df(w)
    mid = (dfw[..., :, None] + dfw[..., None, :]) / 2
    safe = xp.where(close, xp.ones_like(d), d)
    return xp.where(close, mid, (fw[..., :, None] - fw[..., None, :]) / safe)


@public(A=Symmetric(gate="check"), f=Callback(optional=False), df=Callback(), check=Bool(), example=_funm_example,
        contract={"A": {"huge": "ok", "tiny": "ok"}})
def funm(A: Array, *, f: Callable[[Array], Array], df: Callable[[Array], Array] | None = None,
         check: bool = True) -> Array:
    r"""Spectral function ``f(A)`` of symmetric matrices, batched, with the exact Daleckii-Krein VJP.

    .. math::

        f(A) = U\,\mathrm{diag}(f(\lambda_i))\,U^\top,\qquad
        \bar A = U\bigl(K \circ U^\top\mathrm{sym}(\bar Y)\,U\bigr)U^\top,\quad
        K_{ij} = \begin{cases}\dfrac{f(\lambda_i)-f(\lambda_j)}{\lambda_i-\lambda_j} & \lambda_i\ne\lambda_j\\[1ex]
        f'(\lambda_i) & \lambda_i=\lambda_j\end{cases}

    (Daleckii & Krein 1965; Higham, *Functions of Matrices*, SIAM 2008, Thm. 3.11).  Eigenvalues that agree to
    :math:`\sqrt{\epsilon}` relative use :math:`(f'(\lambda_i)+f'(\lambda_j))/2`, so the gradient is finite
    and accurate for repeated eigenvalues.  :func:`logm`, :func:`expm`, :func:`powm`, :func:`sqrtm` are this
    with cancellation-free divided differences.

    Differences from ``scipy.linalg.funm(A, func)``: ``f`` acts on the *vector of eigenvalues* (an array of
    ``A``'s library, so ``lambda w: w ** 3`` works on every backend; ``np.exp`` only on NumPy), ``A`` must be
    symmetric, and ``f`` and ``df`` are keyword-only (positional parameters of differentiable optnorm
    functions are arrays).

    Parameters
    ----------
    A : array (..., n, n)
        Symmetric matrices.
    f : callable
        Elementwise function of an eigenvalue array (same library and dtype in, same out).
    df : callable, optional
        Its derivative; needed for the gradient only (the VJP raises ``ValueError`` without it).
    check : bool
        Validate finiteness and symmetry of ``A``; ``False`` skips it.

    Returns
    -------
    array (..., n, n)

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> A = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> np.allclose(spd.funm(A, f=lambda w: w ** 2, df=lambda w: 2 * w), A @ A)
    True
    """
    return funm_fwd(A, f=f, df=df, check=check)[0]


def funm_fwd(A, *, f, df=None, check=True):
    xp = compat.array_namespace(A)
    Ac, dt = upcast(A, xp)
    w, U = eigh(Ac, xp, clamp=False)
    fw = f(w)
    return compat.cast(recon(U, fw, xp), dt, xp), MatfunRes("funm", w, U, (f, df), fw, None, (), dt)




def funm_bwd_(res: MatfunRes, dY):
    f, df = res.p
    if df is None:
        raise ValueError("funm: the gradient needs df= (the derivative of f)")
    xp = compat.array_namespace(res.w)
    K = _divdiff_general(res.w, f, res.fw, df, xp)
    G = rot(res.U, sym(compat.cast(dY, res.w.dtype, xp), xp), xp)
    return (compat.cast(res.U @ (K * G) @ mT(res.U, xp), res.dtype, xp),)


vjp(funm, funm_fwd, funm_bwd_, validate=True)
