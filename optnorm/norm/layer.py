"""Row normalisation layers: layer_norm (with the fixed-std inference form), rms_norm, crms_norm, group_norm.

Statistics are accumulated in float32 for float16/bfloat16 inputs (float64 stays float64).  The generic
bodies scale each row by its largest magnitude before squaring when that exceeds 1, so rows with entries
up to the dtype's largest value give finite results (torch's float32 kernels overflow (x - mean)^2 from
~1e19, pytorch/pytorch#178123).  NumPy float32/float64 inputs take the fused Numba row kernels
(:mod:`optnorm._numba.norm`), CuPy inputs the CUDA kernels of ``optnorm/_cuda/norm.cu``.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.dispatch import Dispatcher, numpy_float
from .._lib.roles import Axis, Float, Int, Out, Positive
from .._lib.typing import Array
from ._common import rstd_scaled

_ROWS_GUFUNC = ("(n)->(n)", {"axis_arg": "axis"})


def _bshape(shape, axes):
    """Shape that broadcasts an array over ``axes`` of ``shape`` (1 on the other axes)."""
    return tuple(shape[i] if i in axes else 1 for i in range(len(shape)))


def _stat_shape(shape, axes):
    """Keepdims shape of a per-row statistic (mean, rstd) of an array reduced over ``axes``."""
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def _other_axes(ndim, axes):
    return tuple(i for i in range(ndim) if i not in axes)


def _axes(axis, ndim) -> tuple[int, ...]:
    """The (validated, non-negative) ``axis`` option as a sorted tuple."""
    return tuple(sorted(axis)) if isinstance(axis, tuple) else (axis,)


def _check_affine(p, name, x, axes):
    """An affine parameter has the shape of the normalized axes (roles cannot say which axes those are)."""
    if p is None:
        return
    want = tuple(x.shape[i] for i in axes)
    if tuple(p.shape) != want:
        raise ValueError(f"{name} has shape {tuple(p.shape)}, expected {want} (the normalized axes of x)")


def _trailing(axes, ndim) -> bool:
    return axes == tuple(range(ndim - len(axes), ndim))


def _fast_ok(x, axes):
    """Numba/CUDA row kernels: one axis anywhere, or trailing axes (rows of prod(shape[axes]))."""
    return len(axes) == 1 or _trailing(axes, x.ndim)


def _cuda_ok(*arrays) -> bool:
    arrs = [a for a in arrays if a is not None]
    return all(str(a.dtype) in ("float32", "float64") and a.dtype == arrs[0].dtype for a in arrs)


def _affine_example(shape_x, shape_w, n_params=2):
    """Example call (x, weight[, bias]) for the generated suites (the roles cannot tie weight to axis)."""

    def example(rng, dtype):
        x = rng.standard_normal(shape_x).astype(dtype)
        w = (1.0 + 0.1 * rng.standard_normal(shape_w)).astype(dtype)
        b = (0.1 * rng.standard_normal(shape_w)).astype(dtype)
        return (x, w, b)[:1 + n_params], {}

    return example


# ============================================================================ layer_norm
def _layer_norm_generic(x, weight, bias, *, axes, eps, fixed_std, out, xp):
    ct = compat.compute_dtype(x, xp)
    xc = compat.cast(x, ct, xp)
    mu = xp.mean(xc, axis=axes, keepdims=True)
    d = xc - mu
    if fixed_std is None:
        rstd = rstd_scaled(d, axes, eps, xp)
    else:
        rstd = 1.0 / _fixed_std_b(fixed_std, x, axes, xp, ct)
    y = d * rstd
    if weight is not None:
        y = y * xp.reshape(compat.cast(weight, ct, xp), _bshape(x.shape, axes))
    if bias is not None:
        y = y + xp.reshape(compat.cast(bias, ct, xp), _bshape(x.shape, axes))
    return compat.write_out(out, compat.cast(y, x.dtype, xp)), mu, rstd


def _fixed_std_b(fixed_std, x, axes, xp, ct):
    fs = compat.cast(fixed_std, ct, xp)
    return xp.reshape(fs, tuple(fs.shape) + (1,) * len(axes))


def _layer_norm_bwd_generic(x, weight, mu, rstd, dy, *, axes, fixed, has_bias, xp):
    ct = compat.compute_dtype(x, xp)
    xc, gc = compat.cast(x, ct, xp), compat.cast(dy, ct, xp)
    xhat = (xc - mu) * rstd
    gh = gc if weight is None else gc * xp.reshape(compat.cast(weight, ct, xp), _bshape(x.shape, axes))
    m1 = xp.mean(gh, axis=axes, keepdims=True)
    if fixed:
        dx = rstd * (gh - m1)
    else:
        m2 = xp.mean(gh * xhat, axis=axes, keepdims=True)
        dx = rstd * (gh - m1 - xhat * m2)
    other = _other_axes(x.ndim, axes)
    dw = None if weight is None else compat.cast(xp.sum(gc * xhat, axis=other), weight.dtype, xp)
    db = compat.cast(xp.sum(gc, axis=other), x.dtype, xp) if has_bias else None
    return compat.cast(dx, x.dtype, xp), dw, db


_ln = Dispatcher("norm.layer_norm")
_ln.generic(_layer_norm_generic)
_ln_bwd = Dispatcher("norm.layer_norm_bwd", serves="norm.layer_norm")
_ln_bwd.generic(_layer_norm_bwd_generic)


@_ln.numba(when=lambda x, weight, bias, **kw: numpy_float(x, weight, bias, kw.get("out"))
           and _fast_ok(x, kw["axes"]))
def _layer_norm_numba(x, weight, bias, *, axes, eps, fixed_std, out, xp):
    from .._numba import norm as nb

    y, mean, rstd = nb.layer_norm(x, weight, bias, axes=axes, eps=eps, fixed_std=fixed_std, out=out)
    st = _stat_shape(x.shape, axes)
    return y, mean.reshape(st), rstd.reshape(st)


@_ln_bwd.numba(when=lambda x, weight, mu, rstd, dy, **kw: numpy_float(x, weight, dy) and _fast_ok(x, kw["axes"]))
def _layer_norm_bwd_numba(x, weight, mu, rstd, dy, *, axes, fixed, has_bias, xp):
    from .._numba import norm as nb

    return nb.layer_norm_bwd(x, weight, mu, rstd, dy, axes=axes, fixed=fixed, has_bias=has_bias)


@_ln.cuda(when=lambda x, weight, bias, **kw: _cuda_ok(x, weight, bias) and _fast_ok(x, kw["axes"])
          and kw["fixed_std"] is None)
def _layer_norm_cuda(x, weight, bias, *, axes, eps, fixed_std, out, xp):
    return _cuda_layer_norm(x, weight, bias, axes=axes, eps=eps, out=out, rms=False)


@_ln_bwd.cuda(when=lambda x, weight, mu, rstd, dy, **kw: _cuda_ok(x, weight, dy) and _fast_ok(x, kw["axes"])
              and not kw["fixed"])
def _layer_norm_bwd_cuda(x, weight, mu, rstd, dy, *, axes, fixed, has_bias, xp):
    return _cuda_layer_norm_bwd(x, weight, mu, rstd, dy, axes=axes, rms=False, has_bias=has_bias)


def _check_fixed_std(fixed_std, x, axes):
    """fixed_std (positive: its role) is a scalar or an array broadcastable to the leading shape of x."""
    if fixed_std is None:
        return None
    lead = tuple(x.shape[: x.ndim - len(axes)])
    if fixed_std.ndim:
        if not _trailing(axes, x.ndim):
            raise ValueError("fixed_std given as an array needs trailing normalized axes (axis=-1 or (-2, -1), "
                             "...)")
        fs = tuple(fixed_std.shape)
        if len(fs) > len(lead) or any(a not in (1, b) for a, b in zip(fs[::-1], lead[::-1])):
            raise ValueError(f"fixed_std has shape {fs}, which does not broadcast to the leading shape {lead} "
                             f"of x")
    return fixed_std


class LayerNormRes(NamedTuple):
    x: Any
    weight: Any
    mu: Any
    rstd: Any
    axes: tuple
    has_bias: bool
    fixed: bool


@public(x=Float("... n"), weight=Float(optional=True, min_ndim=1), bias=Float(optional=True, min_ndim=1),
        axis=Axis("x", multiple=True), eps=Positive(), fixed_std=Float("...", optional=True, sign="positive"),
        out=Out("x"),
        gufunc=_ROWS_GUFUNC, example=_affine_example((2, 5), (5,)))
def layer_norm(x: Array, weight: Array | None = None, bias: Array | None = None, *, axis: int | tuple[int, ...] = -1,
               eps: float = 1e-5, fixed_std: float | Array | None = None, out: Array | None = None) -> Array:
    r"""Layer normalisation: :math:`y = \gamma \odot (x - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta` per row.

    Ba, Kiros, Hinton, "Layer Normalization" (2016).  :math:`\mu` and the **biased** variance
    :math:`\sigma^2` are taken over ``axis`` (an int or a tuple of axes; a tuple of trailing axes is
    torch's ``normalized_shape``).  Matches ``torch.nn.functional.layer_norm``.

    ``fixed_std`` gives the inference-time form of Baroni et al., "Transformers Don't Need LayerNorm at
    Inference Time" (2025): the per-row standard deviation is replaced by a fixed, previously measured
    value :math:`\bar\sigma` (no :math:`\epsilon`), :math:`y = \gamma (x - \mu)/\bar\sigma + \beta`.
    It is a positive float or an array broadcastable to the leading (non-normalized) shape of ``x``,
    e.g. one value per position with a separate one for position 0 (BOS).  It is a constant: no
    gradient flows to it.  After that, :math:`\gamma/\bar\sigma` and :math:`\beta` fold into the
    next linear map.

    Parameters
    ----------
    x : array
        Input (float16/bfloat16 computed in float32).
    weight, bias : array, optional
        Affine parameters with the shape of the normalized axes (``x.shape[axis]``).
    axis : int or tuple of int
        Axes to normalise over.
    eps : float
        Added to the variance (default 1e-5 like torch).
    fixed_std : float or array, optional
        Fixed standard deviation (see above).
    out : array, optional
        Preallocated output.

    Returns
    -------
    array
        Same shape and dtype as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import layer_norm
    >>> np.round(layer_norm(np.array([1.0, 2.0, 3.0])), 4)
    array([-1.2247,  0.    ,  1.2247])
    """
    return layer_norm_fwd(x, weight, bias, axis=axis, eps=eps, fixed_std=fixed_std, out=out)[0]


def layer_norm_fwd(x, weight=None, bias=None, *, axis=-1, eps=1e-5, fixed_std=None, out=None):
    xp = compat.array_namespace(x)
    axes = _axes(axis, x.ndim)
    _check_affine(weight, "weight", x, axes)
    _check_affine(bias, "bias", x, axes)
    fixed_std = _check_fixed_std(fixed_std, x, axes)
    y, mu, rstd = _ln(x, weight, bias, axes=axes, eps=float(eps), fixed_std=fixed_std, out=out, xp=xp)
    return y, LayerNormRes(x, weight, mu, rstd, axes, bias is not None, fixed_std is not None)


def layer_norm_bwd(res: LayerNormRes, dy):
    xp = compat.array_namespace(res.x)
    return _ln_bwd(res.x, res.weight, res.mu, res.rstd, dy, axes=res.axes, fixed=res.fixed, has_bias=res.has_bias,
                   xp=xp)


vjp(layer_norm, layer_norm_fwd, layer_norm_bwd, validate=True)


# ============================================================================ rms_norm
def _default_eps(x, xp, eps):
    if eps is None:
        return float(xp.finfo(compat.compute_dtype(x, xp)).eps)
    return float(eps)


def _rms_norm_generic(x, weight, *, axes, eps, out, xp):
    ct = compat.compute_dtype(x, xp)
    xc = compat.cast(x, ct, xp)
    rstd = rstd_scaled(xc, axes, eps, xp)
    y = xc * rstd
    if weight is not None:
        y = y * xp.reshape(compat.cast(weight, ct, xp), _bshape(x.shape, axes))
    return compat.write_out(out, compat.cast(y, x.dtype, xp)), rstd


def _rms_norm_bwd_generic(x, weight, rstd, dy, *, axes, xp):
    ct = compat.compute_dtype(x, xp)
    xc, gc = compat.cast(x, ct, xp), compat.cast(dy, ct, xp)
    xhat = xc * rstd
    gh = gc if weight is None else gc * xp.reshape(compat.cast(weight, ct, xp), _bshape(x.shape, axes))
    dx = rstd * (gh - xhat * xp.mean(gh * xhat, axis=axes, keepdims=True))
    dw = None if weight is None else compat.cast(xp.sum(gc * xhat, axis=_other_axes(x.ndim, axes)), weight.dtype, xp)
    return compat.cast(dx, x.dtype, xp), dw


_rms = Dispatcher("norm.rms_norm")
_rms.generic(_rms_norm_generic)
_rms_bwd = Dispatcher("norm.rms_norm_bwd", serves="norm.rms_norm")
_rms_bwd.generic(_rms_norm_bwd_generic)


@_rms.numba(when=lambda x, weight, **kw: numpy_float(x, weight, kw.get("out")) and _fast_ok(x, kw["axes"]))
def _rms_norm_numba(x, weight, *, axes, eps, out, xp):
    from .._numba import norm as nb

    y, rstd = nb.rms_norm(x, weight, axes=axes, eps=eps, out=out)
    return y, rstd.reshape(_stat_shape(x.shape, axes))


@_rms_bwd.numba(when=lambda x, weight, rstd, dy, **kw: numpy_float(x, weight, dy) and _fast_ok(x, kw["axes"]))
def _rms_norm_bwd_numba(x, weight, rstd, dy, *, axes, xp):
    from .._numba import norm as nb

    return nb.rms_norm_bwd(x, weight, rstd, dy, axes=axes)


@_rms.cuda(when=lambda x, weight, **kw: _cuda_ok(x, weight) and _fast_ok(x, kw["axes"]))
def _rms_norm_cuda(x, weight, *, axes, eps, out, xp):
    y, _, rstd = _cuda_layer_norm(x, weight, None, axes=axes, eps=eps, out=out, rms=True)
    return y, rstd


@_rms_bwd.cuda(when=lambda x, weight, rstd, dy, **kw: _cuda_ok(x, weight, dy) and _fast_ok(x, kw["axes"]))
def _rms_norm_bwd_cuda(x, weight, rstd, dy, *, axes, xp):
    dx, dw, _ = _cuda_layer_norm_bwd(x, weight, None, rstd, dy, axes=axes, rms=True, has_bias=False)
    return dx, dw


class RmsNormRes(NamedTuple):
    x: Any
    weight: Any
    rstd: Any
    axes: tuple


@public(x=Float("... n"), weight=Float(optional=True, min_ndim=1), axis=Axis("x", multiple=True),
        eps=Positive(optional=True), out=Out("x"), gufunc=_ROWS_GUFUNC, example=_affine_example((2, 5), (5,), 1))
def rms_norm(x: Array, weight: Array | None = None, *, axis: int | tuple[int, ...] = -1, eps: float | None = None,
             out: Array | None = None) -> Array:
    r"""RMS normalisation: :math:`y = \gamma \odot x / \sqrt{\mathrm{mean}(x^2) + \epsilon}` per row.

    Zhang & Sennrich, "Root Mean Square Layer Normalization" (NeurIPS 2019).  Matches
    ``torch.nn.functional.rms_norm``, including its default ``eps=None``, which means
    ``finfo(compute dtype).eps``: 1.19e-7 for float32 **and** float16/bfloat16 inputs (computed in
    float32), 2.22e-16 for float64.  :math:`\epsilon` is added to the mean square, inside the root.
    The fused Numba kernel reads the row twice and writes once, forward and backward (torch's CPU
    rms_norm is a composite of five elementwise ops).

    Parameters
    ----------
    x : array
        Input.
    weight : array, optional
        Gain with the shape of the normalized axes.
    axis : int or tuple of int
        Axes to normalise over.
    eps : float, optional
        Added to mean(x^2); default torch's (see above).
    out : array, optional
        Preallocated output.

    Returns
    -------
    array
        Same shape and dtype as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import rms_norm
    >>> rms_norm(np.array([3.0, 4.0]), eps=1e-12)
    array([0.84852814, 1.13137085])
    """
    return rms_norm_fwd(x, weight, axis=axis, eps=eps, out=out)[0]


def rms_norm_fwd(x, weight=None, *, axis=-1, eps=None, out=None):
    xp = compat.array_namespace(x)
    axes = _axes(axis, x.ndim)
    _check_affine(weight, "weight", x, axes)
    y, rstd = _rms(x, weight, axes=axes, eps=_default_eps(x, xp, eps), out=out, xp=xp)
    return y, RmsNormRes(x, weight, rstd, axes)


def rms_norm_bwd(res: RmsNormRes, dy):
    xp = compat.array_namespace(res.x)
    return _rms_bwd(res.x, res.weight, res.rstd, dy, axes=res.axes, xp=xp)


vjp(rms_norm, rms_norm_fwd, rms_norm_bwd, validate=True)


# ============================================================================ crms_norm
class CrmsNormRes(NamedTuple):
    x: Any
    weight: Any
    rstd: Any
    ssum_rstd: Any      # sum(x) * rstd (the stored-away entry, normalised)
    axis: int


@public(x=Float("... n"), weight=Float(optional=True, min_ndim=1), axis=Axis("x"), eps=Positive(optional=True),
        out=Out("x"), example=_affine_example((2, 5), (5,), 1))
def crms_norm(x: Array, weight: Array | None = None, *, axis: int = -1, eps: float | None = None,
              out: Array | None = None) -> Array:
    r"""Compressed RMSNorm of a zero-mean vector stored without its last entry.

    Jiang, Gu, Zhu, Pan, "Pre-RMSNorm and Pre-CRMSNorm Transformers: Equivalent and Efficient
    Pre-LN Transformers" (NeurIPS 2023).  A zero-mean :math:`x \in R^d` is stored losslessly as its first
    :math:`d-1` entries :math:`\tilde x` (:math:`x_d = -\sum_i \tilde x_i`), and

    .. math:: \mathrm{CRMSNorm}(\tilde x) = \gamma \odot \tilde x /
              \sqrt{(\textstyle\sum_i \tilde x_i^2 + (\sum_i \tilde x_i)^2)/d + \epsilon},

    which is RMSNorm of the implied full vector restricted to the stored entries (so, for zero-mean
    inputs, LayerNorm).  :math:`\epsilon` is placed as in :func:`rms_norm` (the paper's placement was not
    checked; this is optnorm's choice) with the same default.

    Parameters
    ----------
    x : array
        Compressed input, ``d - 1`` entries along ``axis``.
    weight : array, optional
        Gain of shape ``(d - 1,)``.
    axis : int
        Axis holding the compressed vector.
    eps : float, optional
        As in :func:`rms_norm`.
    out : array, optional
        Preallocated output.

    Returns
    -------
    array
        Same shape and dtype as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import crms_norm, rms_norm
    >>> full = np.array([1.0, -3.0, 2.0])          # zero mean
    >>> np.allclose(crms_norm(full[:2]), rms_norm(full)[:2])
    True
    """
    return crms_norm_fwd(x, weight, axis=axis, eps=eps, out=out)[0]


def crms_norm_fwd(x, weight=None, *, axis=-1, eps=None, out=None):
    xp = compat.array_namespace(x)
    axes = (axis,)
    _check_affine(weight, "weight", x, axes)
    eps = _default_eps(x, xp, eps)
    ct = compat.compute_dtype(x, xp)
    xc = compat.cast(x, ct, xp)
    d = x.shape[axis] + 1
    # the stored-away entry is -sum(x): summed in units of the row's largest entry (no overflow)
    amax = xp.max(xp.abs(xc), axis=axis, keepdims=True)
    s0 = xp.where(amax > 1, amax, xp.ones_like(amax))
    ssum_s = xp.sum(xc / s0, axis=axis, keepdims=True)
    rstd = rstd_scaled(xc, axes, eps, xp, extra_sq=lambda scale: (ssum_s * (s0 / scale)) ** 2, count=d)
    y = xc * rstd
    if weight is not None:
        y = y * xp.reshape(compat.cast(weight, ct, xp), _bshape(x.shape, axes))
    y = compat.write_out(out, compat.cast(y, x.dtype, xp))
    return y, CrmsNormRes(x, weight, rstd, ssum_s * (s0 * rstd), axis)


def crms_norm_bwd(res: CrmsNormRes, dy):
    x, weight, rstd, ssum_rstd, ax = res
    xp = compat.array_namespace(x)
    ct = compat.compute_dtype(x, xp)
    xc, gc = compat.cast(x, ct, xp), compat.cast(dy, ct, xp)
    xhat = xc * rstd
    gh = gc if weight is None else gc * xp.reshape(compat.cast(weight, ct, xp), _bshape(x.shape, (ax,)))
    c = xp.sum(gh * xhat, axis=ax, keepdims=True) / (x.shape[ax] + 1)
    dx = rstd * (gh - c * (xhat + ssum_rstd))
    dw = None if weight is None else compat.cast(xp.sum(gc * xhat, axis=_other_axes(x.ndim, (ax,))), weight.dtype, xp)
    return compat.cast(dx, x.dtype, xp), dw


vjp(crms_norm, crms_norm_fwd, crms_norm_bwd, validate=True)


# ============================================================================ group_norm
class GroupNormRes(NamedTuple):
    x: Any
    weight: Any
    mu: Any
    rstd: Any
    groups: int
    has_bias: bool


def _group_norm_example(rng, dtype):
    (x, w, b), _ = _affine_example((2, 4, 3), (4,))(rng, dtype)
    return (x, w, b), {"num_groups": 2}


@public(x=Float(min_ndim=2), weight=Float("c", optional=True), bias=Float("c", optional=True), num_groups=Int(1),
        eps=Positive(), example=_group_norm_example)
def group_norm(x: Array, weight: Array | None = None, bias: Array | None = None, *, num_groups: int,
               eps: float = 1e-5) -> Array:
    r"""Group normalisation (Wu & He, "Group Normalization", ECCV 2018), torch semantics.

    ``x`` has shape ``(N, C, *)``; the C channels are split into ``num_groups`` consecutive groups and
    each (sample, group) block of ``C/G`` channels times all spatial positions is normalised with its
    mean and biased variance; then the per-channel affine :math:`\gamma_c, \beta_c` is applied.
    Matches ``torch.nn.functional.group_norm(x, num_groups, weight, bias, eps)``, except that
    ``num_groups`` is a keyword option here (optnorm's positional parameters are the arrays).

    Parameters
    ----------
    x : array
        Input of shape ``(N, C, *)``.
    weight, bias : array, optional
        Per-channel affine, shape ``(C,)``.
    num_groups : int
        Number of groups G; C must be divisible by G.
    eps : float
        Added to the variance (default 1e-5).

    Returns
    -------
    array
        Same shape and dtype as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import group_norm
    >>> y = group_norm(np.arange(24.0).reshape(2, 4, 3), num_groups=2)
    >>> y.shape
    (2, 4, 3)
    """
    return group_norm_fwd(x, weight, bias, num_groups=num_groups, eps=eps)[0]


def group_norm_fwd(x, weight=None, bias=None, *, num_groups, eps=1e-5):
    xp = compat.array_namespace(x)
    g = num_groups
    c = x.shape[1]
    if c % g:
        raise ValueError(f"num_groups={g} must divide the number of channels C={c} (x.shape[1])")
    for p, nm in ((weight, "weight"), (bias, "bias")):
        if p is not None and tuple(p.shape) != (c,):
            raise ValueError(f"{nm} has shape {tuple(p.shape)}, expected ({c},) (one entry per channel of x)")
    ct = compat.compute_dtype(x, xp)
    shape = tuple(x.shape)
    xg = xp.reshape(compat.cast(x, ct, xp), (shape[0], g, -1))
    mu = xp.mean(xg, axis=-1, keepdims=True)
    d = xg - mu
    rstd = rstd_scaled(d, (2,), float(eps), xp)
    y = xp.reshape(d * rstd, shape)
    cshape = (1, shape[1]) + (1,) * (len(shape) - 2)
    if weight is not None:
        y = y * xp.reshape(compat.cast(weight, ct, xp), cshape)
    if bias is not None:
        y = y + xp.reshape(compat.cast(bias, ct, xp), cshape)
    return compat.cast(y, x.dtype, xp), GroupNormRes(x, weight, mu, rstd, g, bias is not None)


def group_norm_bwd(res: GroupNormRes, dy):
    x, weight, mu, rstd, g, has_bias = res
    xp = compat.array_namespace(x)
    ct = compat.compute_dtype(x, xp)
    shape = tuple(x.shape)
    cshape = (1, shape[1]) + (1,) * (len(shape) - 2)
    gc = compat.cast(dy, ct, xp)
    xg = xp.reshape(compat.cast(x, ct, xp), (shape[0], g, -1))
    xhat = (xg - mu) * rstd
    gh = gc if weight is None else gc * xp.reshape(compat.cast(weight, ct, xp), cshape)
    ghg = xp.reshape(gh, (shape[0], g, -1))
    m1 = xp.mean(ghg, axis=-1, keepdims=True)
    m2 = xp.mean(ghg * xhat, axis=-1, keepdims=True)
    dx = xp.reshape(rstd * (ghg - m1 - xhat * m2), shape)
    red = (0,) + tuple(range(2, len(shape)))
    dw = None if weight is None else compat.cast(xp.sum(gc * xp.reshape(xhat, shape), axis=red), weight.dtype, xp)
    db = None if not has_bias else compat.cast(xp.sum(gc, axis=red), x.dtype, xp)
    return compat.cast(dx, x.dtype, xp), dw, db


vjp(group_norm, group_norm_fwd, group_norm_bwd, validate=True)


# ============================================================================ CUDA launchers
def _cuda_rows(x, axes):
    """(rows, n) C-contiguous CuPy array with the normalized axes last."""
    from .._cuda import launch

    if len(axes) == 1:
        r = launch.as_rows(x, axes[0])
        return r, r.shape[1]
    import cupy

    n = math.prod(x.shape[a] for a in axes)
    return cupy.ascontiguousarray(x).reshape(-1, n), n


def _cuda_unrows(buf, x, axes, out=None):
    from .._cuda import launch

    if len(axes) == 1:
        return launch.from_rows(buf, tuple(x.shape), axes[0], out)
    y = buf.reshape(x.shape)
    if out is not None:
        out[...] = y
        return out
    return y


def _cuda_vec(p, x):
    """Affine parameter as a flat contiguous array, or a 1-element dummy when absent (flag passed separately)."""
    import cupy

    if p is None:
        return cupy.zeros((1,), dtype=x.dtype)
    return cupy.ascontiguousarray(p, dtype=x.dtype).reshape(-1)


def _cuda_layer_norm(x, weight, bias, *, axes, eps, out, rms):
    """Launch ``layer_norm_fwd<T>`` / ``rms_norm_fwd<T>``: one block per row, returns (y, mean, rstd)."""
    import cupy
    import numpy as np

    from .._cuda import launch

    rows, n = _cuda_rows(x, axes)
    r = rows.shape[0]
    y = cupy.empty_like(rows)
    mean = cupy.zeros((r,), dtype=x.dtype)
    rstd = cupy.empty((r,), dtype=x.dtype)
    w, b = _cuda_vec(weight, x), _cuda_vec(bias, x)
    has_w, has_b = np.int32(weight is not None), np.int32(bias is not None)
    e = np.dtype(x.dtype).type(eps)
    if rms:
        launch.rows("norm", "rms_norm_fwd", x.dtype, r, (rows, w, y, rstd, n, e, has_w))
    else:
        launch.rows("norm", "layer_norm_fwd", x.dtype, r, (rows, w, b, y, mean, rstd, n, e, has_w, has_b))
    st = _stat_shape(x.shape, axes)
    return _cuda_unrows(y, x, axes, out), mean.reshape(st), rstd.reshape(st)


def _cuda_layer_norm_bwd(x, weight, mu, rstd, dy, *, axes, rms, has_bias):
    """Launch ``layer_norm_bwd<T>`` / ``rms_norm_bwd<T>`` (dx per row); dweight/dbias are column sums."""
    import cupy
    import numpy as np

    from .._cuda import launch

    rows, n = _cuda_rows(x, axes)
    g, _ = _cuda_rows(cupy.asarray(dy, dtype=x.dtype), axes)
    r = rows.shape[0]
    dx = cupy.empty_like(rows)
    rs = cupy.ascontiguousarray(rstd, dtype=x.dtype).reshape(-1)
    w = _cuda_vec(weight, x)
    has_w = np.int32(weight is not None)
    if rms:
        xhat = rows * rs[:, None]
        launch.rows("norm", "rms_norm_bwd", x.dtype, r, (rows, g, w, rs, dx, n, has_w))
    else:
        mm = cupy.ascontiguousarray(mu, dtype=x.dtype).reshape(-1)
        xhat = (rows - mm[:, None]) * rs[:, None]
        launch.rows("norm", "layer_norm_bwd", x.dtype, r, (rows, g, w, mm, rs, dx, n, has_w))
    wshape = tuple(x.shape[a] for a in axes)
    dw = None if weight is None else (g * xhat).sum(axis=0).reshape(wshape).astype(weight.dtype, copy=False)
    db = g.sum(axis=0).reshape(wshape) if has_bias else None
    return _cuda_unrows(dx, x, axes), dw, db
