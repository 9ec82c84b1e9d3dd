"""Sparse probability mappings: sparsemax and 1.5-entmax (exact thresholds, exact VJPs)."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.dispatch import Dispatcher, numpy_float
from .._lib.roles import Axis, Float
from .._lib.typing import Array
from ._common import move_back, move_last

_ROLES = dict(x=Float("... n"), axis=Axis("x"))
_GUFUNC = ("(n)->(n)", {"axis_arg": "axis"})


# ---------------------------------------------------------------------------------------------- generic bodies
def _sorted_scan(z, xp):
    """Descending sort of the rows of z (last axis), their cumulative sums, and k = 1..n."""
    zs = xp.sort(z, axis=-1, descending=True)
    n = z.shape[-1]
    k = compat.arange(n, like=z, dtype=z.dtype) + 1.0
    return zs, k, n


def _pick(v, idx, n, xp):
    """v[..., idx - 1] for a per-row count ``idx`` (keepdims), by a mask (no take_along_axis needed)."""
    k = compat.arange(n, like=v, dtype=xp.int64) + 1
    return xp.sum(xp.where(k == idx, v, xp.zeros_like(v)), axis=-1, keepdims=True)


def _bad_rows(m, xp):
    """Rows whose max is NaN or +-inf (a NaN or +inf entry, or all -inf) give NaN, as in the Numba kernels."""
    bad = ~xp.isfinite(m)
    return bad, xp.where(bad, xp.zeros_like(m), m)


def _nan_rows(y, bad, xp):
    return xp.where(bad, xp.full_like(y, math.nan), y)


def _sparsemax_generic(x, *, axis, xp):
    ct = compat.compute_dtype(x, xp)
    z = move_last(compat.cast(x, ct, xp), axis, xp)
    m = xp.max(z, axis=-1, keepdims=True)
    bad, m = _bad_rows(m, xp)
    z = xp.maximum(z - m, xp.full_like(z, -2.0))  # entries below max - 1 are never in the support: clamping them
    zs, k, n = _sorted_scan(z, xp)                # changes nothing and keeps the cumulative sums from overflowing
    cs = xp.cumulative_sum(zs, axis=-1)
    kstar = xp.sum(xp.astype(k * zs > cs - 1.0, xp.int64), axis=-1, keepdims=True)
    tau = (_pick(cs, kstar, n, xp) - 1.0) / xp.astype(kstar, ct)
    y = xp.maximum(z - tau, xp.zeros_like(z))
    return compat.cast(move_back(_nan_rows(y, bad, xp), axis, xp), x.dtype, xp)


def _entmax15_generic(x, *, axis, xp):
    ct = compat.compute_dtype(x, xp)
    z = move_last(compat.cast(x, ct, xp), axis, xp)
    m = xp.max(z, axis=-1, keepdims=True)
    bad, m = _bad_rows(m, xp)
    z = xp.maximum((z - m) / 2.0, xp.full_like(z, -2.0))  # z < -1 is never in the support: no overflow of z^2
    zs, k, n = _sorted_scan(z, xp)
    mu = xp.cumulative_sum(zs, axis=-1) / k
    msq = xp.cumulative_sum(zs * zs, axis=-1) / k
    ss = k * (msq - mu * mu)
    delta = (1.0 - ss) / k
    tau_k = mu - xp.sqrt(xp.maximum(delta, xp.zeros_like(delta)))
    kstar = xp.sum(xp.astype(tau_k <= zs, xp.int64), axis=-1, keepdims=True)
    tau = _pick(tau_k, kstar, n, xp)
    y = xp.maximum(z - tau, xp.zeros_like(z))
    return compat.cast(move_back(_nan_rows(y * y, bad, xp), axis, xp), x.dtype, xp)


def _sparsemax_bwd_generic(y, dy, *, axis, xp):
    ct = compat.compute_dtype(y, xp)
    yc, g = move_last(compat.cast(y, ct, xp), axis, xp), move_last(compat.cast(dy, ct, xp), axis, xp)
    s = yc > 0
    sf = xp.astype(s, ct)
    mean = xp.sum(g * sf, axis=-1, keepdims=True) / xp.maximum(xp.sum(sf, axis=-1, keepdims=True), 1.0)
    dx = xp.where(s, g - mean, xp.zeros_like(g))
    return compat.cast(move_back(dx, axis, xp), y.dtype, xp)


def _entmax15_bwd_generic(y, dy, *, axis, xp):
    ct = compat.compute_dtype(y, xp)
    yc, g = move_last(compat.cast(y, ct, xp), axis, xp), move_last(compat.cast(dy, ct, xp), axis, xp)
    gs = xp.sqrt(xp.maximum(yc, xp.zeros_like(yc)))
    q = xp.sum(gs * g, axis=-1, keepdims=True) / xp.sum(gs, axis=-1, keepdims=True)
    dx = gs * (g - q)
    return compat.cast(move_back(dx, axis, xp), y.dtype, xp)


_sparsemax = Dispatcher("norm.sparsemax", serves="norm.sparsemax")
_sparsemax.generic(_sparsemax_generic)
_sparsemax_bwd = Dispatcher("norm.sparsemax_bwd", serves="norm.sparsemax")
_sparsemax_bwd.generic(_sparsemax_bwd_generic)
_entmax = Dispatcher("norm.entmax15", serves="norm.entmax15")
_entmax.generic(_entmax15_generic)
_entmax_bwd = Dispatcher("norm.entmax15_bwd", serves="norm.entmax15")
_entmax_bwd.generic(_entmax15_bwd_generic)


def _rows_call(kernel, x, axis, *extra):
    import numpy as np

    from .._numba._rows import Rows

    rows = Rows(x.shape, axis)
    y, _ = rows.output(None, x.dtype)
    args = [rows.view(a, x.dtype) for a in extra]
    if args:
        kernel(rows.view(x), *args, y)
    else:
        kernel(rows.view(x), y, np.empty(rows.count, np.float64))
    return rows.finish(y)


@_sparsemax.numba(when=lambda x, **kw: numpy_float(x))
def _sparsemax_numba(x, *, axis, xp):
    from .._numba import norm_sparse as nb

    return _rows_call(nb.sparsemax_rows, x, axis)


@_entmax.numba(when=lambda x, **kw: numpy_float(x))
def _entmax_numba(x, *, axis, xp):
    from .._numba import norm_sparse as nb

    return _rows_call(nb.entmax15_rows, x, axis)


@_sparsemax_bwd.numba(when=lambda y, dy, **kw: numpy_float(y, dy))
def _sparsemax_bwd_numba(y, dy, *, axis, xp):
    from .._numba import norm_sparse as nb

    return _rows_call(nb.sparsemax_bwd_rows, y, axis, dy)


@_entmax_bwd.numba(when=lambda y, dy, **kw: numpy_float(y, dy))
def _entmax_bwd_numba(y, dy, *, axis, xp):
    from .._numba import norm_sparse as nb

    return _rows_call(nb.entmax15_bwd_rows, y, axis, dy)


class SparseMapRes(NamedTuple):
    """Residuals of sparsemax / entmax15: the output (its support and values give the VJP) and the axis."""
    y: Any
    axis: int


# ---------------------------------------------------------------------------------------------- public
@public(**_ROLES, gufunc=_GUFUNC)
def sparsemax(x: Array, *, axis: int = -1) -> Array:
    r"""Sparsemax: the Euclidean projection of ``x`` onto the probability simplex along ``axis``.

    .. math::
        \mathrm{sparsemax}(x) = \arg\min_{p \in \Delta} \|p - x\|^2 = \max(x - \tau, 0), \qquad
        \sum_i \max(x_i - \tau, 0) = 1,

    Martins & Astudillo, "From Softmax to Sparsemax: A Sparse Model of Attention and Multi-Label
    Classification" (ICML 2016).  Unlike softmax it returns exact zeros; the threshold is exact: with the
    entries sorted, :math:`k^* = \max\{k : 1 + k x_{(k)} > \sum_{j \le k} x_{(j)}\}` and
    :math:`\tau = (\sum_{j \le k^*} x_{(j)} - 1)/k^*`.  The VJP is exact too: on the support
    :math:`S = \{i : y_i > 0\}`, :math:`\bar x_i = \bar y_i - \frac{1}{|S|}\sum_{j \in S} \bar y_j`, 0 elsewhere.
    The generic path sorts each row; the Numba kernel finds :math:`\tau` among the entries within 1 of the row
    max (the support can hold no other), so a row costs three passes like a softmax.  Rows with NaN or
    :math:`\pm\infty` give NaN.

    Parameters
    ----------
    x : array
        Scores (float16/bfloat16 computed in float32).
    axis : int
        Axis along which the outputs sum to one.

    Returns
    -------
    array
        Sparse probabilities, the shape and dtype of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import sparsemax
    >>> sparsemax(np.array([1.0, 0.8, -1.0]))
    array([0.6, 0.4, 0. ])
    """
    xp = compat.array_namespace(x)
    return _sparsemax(x, axis=axis, xp=xp)


def sparsemax_fwd(x, *, axis=-1):
    y = sparsemax(x, axis=axis)
    return y, SparseMapRes(y, axis % x.ndim)


def sparsemax_bwd(res: SparseMapRes, dy):
    xp = compat.array_namespace(res.y)
    return (_sparsemax_bwd(res.y, dy, axis=res.axis, xp=xp),)


@public(**_ROLES, gufunc=_GUFUNC)
def entmax15(x: Array, *, axis: int = -1) -> Array:
    r"""1.5-entmax: the sparse mapping between softmax (:math:`\alpha = 1`) and sparsemax (:math:`\alpha = 2`).

    .. math::
        \mathrm{entmax}_{1.5}(x) = \max\!\Big(\frac{x}{2} - \tau, 0\Big)^2, \qquad
        \sum_i \max\!\Big(\frac{x_i}{2} - \tau, 0\Big)^2 = 1,

    the maximiser of :math:`p^\top x + H^T_{1.5}(p)` (Tsallis entropy) over the simplex: Peters, Niculae &
    Martins, "Sparse Sequence-to-Sequence Models" (ACL 2019).  The threshold is exact (their sort-based
    algorithm: with :math:`z = x/2` sorted, :math:`\tau_k = \mu_k - \sqrt{(1 - k(\overline{z^2}_k - \mu_k^2))/k}`
    over the top k, and :math:`\tau = \tau_{k^*}` for the largest k with :math:`\tau_k \le z_{(k)}`), and so is the
    VJP: with :math:`g = \sqrt{y}`, :math:`\bar x = g \odot \bar y - g\,\frac{g^\top \bar y}{\sum g}`.  The Numba
    kernel searches :math:`\tau` only among entries within 2 of the row max (no other can be in the support).

    Parameters
    ----------
    x : array
        Scores (float16/bfloat16 computed in float32).
    axis : int
        Axis along which the outputs sum to one.

    Returns
    -------
    array
        Sparse probabilities, the shape and dtype of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import entmax15
    >>> y = entmax15(np.array([2.0, 1.0, -3.0]))
    >>> [round(float(v), 6) for v in y]
    [0.830719, 0.169281, 0.0]
    """
    xp = compat.array_namespace(x)
    return _entmax(x, axis=axis, xp=xp)


def entmax15_fwd(x, *, axis=-1):
    y = entmax15(x, axis=axis)
    return y, SparseMapRes(y, axis % x.ndim)


def entmax15_bwd(res: SparseMapRes, dy):
    xp = compat.array_namespace(res.y)
    return (_entmax_bwd(res.y, dy, axis=res.axis, xp=xp),)


vjp(sparsemax, sparsemax_fwd, sparsemax_bwd)
vjp(entmax15, entmax15_fwd, entmax15_bwd)
