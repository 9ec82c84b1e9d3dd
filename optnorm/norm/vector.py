"""Vector normalisation: ``normalize`` (torch's ``F.normalize``: x / max(||x||_p, eps))."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.roles import Axis, Float, Positive
from .._lib.typing import Array


def _pnorm(x, p, axis, xp):
    """||x||_p along ``axis`` (keepdims), formed in units of the largest |x| (no overflow or underflow of |x|^p)."""
    a = xp.abs(x)
    m = xp.max(a, axis=axis, keepdims=True)
    if p == math.inf:
        return m
    ms = xp.where(m > 0, m, xp.ones_like(m))
    u = a / ms
    if p == 2.0:
        s = xp.sqrt(xp.sum(u * u, axis=axis, keepdims=True))
    elif p == 1.0:
        s = xp.sum(u, axis=axis, keepdims=True)
    else:
        s = xp.sum(u ** p, axis=axis, keepdims=True) ** (1.0 / p)
    return ms * s


class NormalizeRes(NamedTuple):
    """Residuals: the input (compute dtype), its norm, and the options."""
    x: Any
    n: Any
    p: float
    axis: int
    eps: float
    dtype: Any


@public(x=Float("... n"), p=Positive(finite=False), axis=Axis("x"), eps=Positive(),
        gufunc=("(n)->(n)", {"axis_arg": "axis"}))
def normalize(x: Array, *, p: float = 2.0, axis: int = -1, eps: float = 1e-12) -> Array:
    r"""Scale vectors to unit :math:`\ell_p` norm along ``axis``: :math:`y = x / \max(\|x\|_p, \epsilon)`.

    .. math::
        \|x\|_p = \Big(\sum_i |x_i|^p\Big)^{1/p}, \qquad \|x\|_\infty = \max_i |x_i|,

    ``torch.nn.functional.normalize`` with one difference: the default axis is the last one (torch's ``dim``
    defaults to 1).  A vector whose norm is at most ``eps`` (the zero vector) is divided by ``eps``: no NaN.
    The norm is formed in units of the largest entry, so entries up to the dtype's largest value neither overflow
    nor underflow when raised to the power p.  The VJP is exact: for :math:`\|x\|_p > \epsilon`,
    :math:`\bar x = \bar y / \|x\|_p - (\bar y^\top x)\,\nabla\|x\|_p / \|x\|_p^2` with
    :math:`\nabla_i\|x\|_p = \mathrm{sign}(x_i)(|x_i|/\|x\|_p)^{p-1}` (for :math:`p = \infty`: spread evenly over
    the entries of largest magnitude); :math:`\bar x = \bar y/\epsilon` on the clamped branch.

    Parameters
    ----------
    x : array
        Vectors along ``axis``.
    p : float > 0
        Exponent of the norm (``inf`` for the max norm).
    axis : int
        Axis of the vectors.
    eps : float > 0
        Lower bound of the divisor.

    Returns
    -------
    array
        Unit-norm vectors, the shape and dtype of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import normalize
    >>> normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    array([[0.6, 0.8],
           [0. , 0. ]])
    """
    return normalize_fwd(x, p=p, axis=axis, eps=eps)[0]


def normalize_fwd(x, *, p=2.0, axis=-1, eps=1e-12):
    xp = compat.array_namespace(x)
    ct = compat.compute_dtype(x, xp)
    xc = compat.cast(x, ct, xp)
    pf = float(p)
    n = _pnorm(xc, pf, axis, xp)
    y = xc / xp.maximum(n, eps)
    return compat.cast(y, x.dtype, xp), NormalizeRes(xc, n, pf, axis % x.ndim, float(eps), x.dtype)


def normalize_bwd(res: NormalizeRes, dy):
    xc, n, p, ax, eps = res.x, res.n, res.p, res.axis, res.eps
    xp = compat.array_namespace(xc)
    g = compat.cast(dy, xc.dtype, xp)
    big = n > eps
    n1 = xp.where(big, n, xp.ones_like(n))
    a = xp.abs(xc)
    sgn = xp.sign(xc)
    if p == math.inf:
        top = xp.astype(a == n1, xc.dtype)
        grad_n = sgn * top / xp.sum(top, axis=ax, keepdims=True)
    elif p == 1.0:
        grad_n = sgn
    else:
        u = a / n1
        pw = xp.where(a > 0, u ** (p - 1.0), xp.zeros_like(u)) if p < 1.0 else u ** (p - 1.0)
        grad_n = sgn * pw
    dx_big = g / n1 - xp.sum(g * xc, axis=ax, keepdims=True) / (n1 * n1) * grad_n
    dx = xp.where(big, dx_big, g / eps)
    return (compat.cast(dx, res.dtype, xp),)


vjp(normalize, normalize_fwd, normalize_bwd)
