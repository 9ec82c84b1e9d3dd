"""Row normalisation layers: layer_norm (with the fixed-std inference form), rms_norm, crms_norm, group_norm.

Statistics are accumulated in float32 for float16/bfloat16 inputs (float64 stays float64).  The generic
bodies scale each row by its largest magnitude before squaring when that exceeds 1, so float32 rows with
entries up to ~1e38 give finite results (torch's float32 kernels overflow (x - mean)^2 from ~1e19,
pytorch/pytorch#178123).  NumPy float32/float64 inputs take the fused Numba row kernels
(:mod:`optnorm._numba.norm`), CuPy inputs the CUDA kernels of ``optnorm/_cuda/norm.cu``.
"""
from __future__ import annotations

import math
import numbers

from .._lib import compat, ops, validate
from .._lib.dispatch import Dispatcher, numpy_float

__all__ = ["layer_norm", "rms_norm", "crms_norm", "group_norm"]


def _to(xp, a, dt):
    return a if a.dtype == dt else xp.astype(a, dt)


def _bshape(shape, axes):
    """Shape that broadcasts an array over ``axes`` of ``shape`` (1 on the other axes)."""
    return tuple(shape[i] if i in axes else 1 for i in range(len(shape)))


def _other_axes(ndim, axes):
    return tuple(i for i in range(ndim) if i not in axes)


def _rstd(d, axes, eps, xp, extra_sq=None, count=None):
    """1/sqrt(sum(d^2)/count + eps) with rows scaled by max|d| (when > 1) before squaring: no overflow.

    ``extra_sq`` (crms_norm) is a per-row term added to sum(d^2), given as a function of the scale.
    """
    if count is None:
        count = math.prod(d.shape[i] for i in axes)
    a = xp.max(xp.abs(d), axis=axes, keepdims=True)
    scale = xp.where(a > 1, a, xp.ones_like(a))
    ds = d / scale
    q = xp.sum(ds * ds, axis=axes, keepdims=True)
    if extra_sq is not None:
        q = q + extra_sq(scale)
    q = q / count
    return 1.0 / (scale * xp.sqrt(q + eps / scale / scale))  # eps/scale^2 may underflow to 0, never overflow


def _check_axes(x, axis, name="axis"):
    axes = validate.check_axes(axis, x.ndim, name)
    if not axes:
        raise ValueError(f"{name} must name at least one axis")
    for a in axes:
        validate.check_nonempty(x, "x", a)
    return axes


def _check_affine(p, name, x, axes):
    if p is None:
        return None
    validate.check_float(p, name)
    want = tuple(x.shape[i] for i in axes)
    if tuple(p.shape) != want:
        raise ValueError(f"{name} has shape {tuple(p.shape)}, expected {want} (the normalized axes of x)")
    return p


def _eps(eps, name="eps"):
    return validate.check_positive(eps, name)


def _trailing(axes, ndim) -> bool:
    return axes == tuple(range(ndim - len(axes), ndim))


def _fast_ok(x, axes, *arrays):
    """Numba/CUDA row kernels: one axis anywhere, or trailing axes (rows of prod(shape[axes]))."""
    return len(axes) == 1 or _trailing(axes, x.ndim)


# ============================================================================ layer_norm
def _layer_norm_generic(x, weight, bias, *, axes, eps, fixed_std, out, xp):
    ct = compat.compute_dtype(x, xp)
    xc = _to(xp, x, ct)
    mu = xp.mean(xc, axis=axes, keepdims=True)
    d = xc - mu
    if fixed_std is None:
        rstd = _rstd(d, axes, eps, xp)
    else:
        rstd = 1.0 / _fixed_std_b(fixed_std, x, axes, xp, ct)
    y = d * rstd
    if weight is not None:
        y = y * xp.reshape(_to(xp, weight, ct), _bshape(x.shape, axes))
    if bias is not None:
        y = y + xp.reshape(_to(xp, bias, ct), _bshape(x.shape, axes))
    y = _to(xp, y, x.dtype)
    return compat.write_out(out, y), mu, rstd


def _fixed_std_b(fixed_std, x, axes, xp, ct):
    if isinstance(fixed_std, numbers.Real):
        return xp.asarray(float(fixed_std), dtype=ct, device=compat.device(x))
    fs = _to(xp, fixed_std, ct)
    return xp.reshape(fs, tuple(fs.shape) + (1,) * len(axes))


def _layer_norm_bwd_generic(x, weight, mu, rstd, dy, *, axes, fixed, has_bias, xp):
    ct = compat.compute_dtype(x, xp)
    xc, gc = _to(xp, x, ct), _to(xp, dy, ct)
    xhat = (xc - mu) * rstd
    gh = gc if weight is None else gc * xp.reshape(_to(xp, weight, ct), _bshape(x.shape, axes))
    m1 = xp.mean(gh, axis=axes, keepdims=True)
    if fixed:
        dx = rstd * (gh - m1)
    else:
        m2 = xp.mean(gh * xhat, axis=axes, keepdims=True)
        dx = rstd * (gh - m1 - xhat * m2)
    other = _other_axes(x.ndim, axes)
    dw = None if weight is None else _to(xp, xp.sum(gc * xhat, axis=other), weight.dtype)
    db = _to(xp, xp.sum(gc, axis=other), x.dtype) if has_bias else None
    return _to(xp, dx, x.dtype), dw, db


_ln = Dispatcher("norm.layer_norm")
_ln.generic(_layer_norm_generic)
_ln_bwd = Dispatcher("norm.layer_norm_bwd")
_ln_bwd.generic(_layer_norm_bwd_generic)


@_ln.numba(when=lambda x, weight, bias, **kw: numpy_float(x, weight, bias, kw.get("out"))
           and _fast_ok(x, kw["axes"]))
def _layer_norm_numba(x, weight, bias, *, axes, eps, fixed_std, out, xp):
    from .._numba import norm as nb

    return nb.layer_norm(x, weight, bias, axes=axes, eps=eps, fixed_std=fixed_std, out=out)


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


def _check_ln(x, weight, bias, axis, eps, out):
    validate.check_same_namespace(x=x, weight=weight, bias=bias)
    validate.check_float(x, "x")
    axes = _check_axes(x, axis)
    _check_affine(weight, "weight", x, axes)
    _check_affine(bias, "bias", x, axes)
    validate.check_out(out, x)
    return axes


def _check_fixed_std(fixed_std, x, axes):
    if fixed_std is None:
        return None
    if isinstance(fixed_std, numbers.Real) and not isinstance(fixed_std, bool):
        return validate.check_positive(fixed_std, "fixed_std")
    validate.check_float(fixed_std, "fixed_std")
    validate.check_same_namespace(x=x, fixed_std=fixed_std)
    if not _trailing(axes, x.ndim):
        raise ValueError("fixed_std given as an array needs trailing normalized axes (axis=-1 or (-2, -1), ...)")
    lead = tuple(x.shape[: x.ndim - len(axes)])
    validate.check_broadcastable("fixed_std", fixed_std.shape, "the leading shape of x", lead)
    if len(fixed_std.shape) > len(lead):
        raise ValueError(f"fixed_std has shape {tuple(fixed_std.shape)}, which does not broadcast to the leading "
                         f"shape {lead} of x")
    if compat.is_concrete(fixed_std):
        xp = compat.array_namespace(fixed_std)
        if compat.size(fixed_std) and not bool(xp.all(fixed_std > 0)):
            raise ValueError("fixed_std must be > 0 everywhere")
    return fixed_std


def layer_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-5, fixed_std=None, out=None):
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
    validate.check_array(x, "x")
    xp = compat.array_namespace(x, weight, bias)
    axes = _check_ln(x, weight, bias, axis, eps, out)
    eps = _eps(eps)
    fixed_std = _check_fixed_std(fixed_std, x, axes)
    y, mu, rstd = _ln(x, weight, bias, axes=axes, eps=eps, fixed_std=fixed_std, out=out, xp=xp)
    return y, (x, weight, bias is not None, mu, rstd, axes, fixed_std is not None)


def layer_norm_bwd(res, dy):
    x, weight, has_bias, mu, rstd, axes, fixed = res
    xp = compat.array_namespace(x)
    return _ln_bwd(x, weight, mu, rstd, dy, axes=axes, fixed=fixed, has_bias=has_bias, xp=xp)


ops.register("norm.layer_norm", layer_norm, layer_norm_fwd, layer_norm_bwd)


# ============================================================================ rms_norm
def _default_eps(x, xp, eps):
    if eps is None:
        return float(xp.finfo(compat.compute_dtype(x, xp)).eps)
    return _eps(eps)


def _rms_norm_generic(x, weight, *, axes, eps, out, xp):
    ct = compat.compute_dtype(x, xp)
    xc = _to(xp, x, ct)
    rstd = _rstd(xc, axes, eps, xp)
    y = xc * rstd
    if weight is not None:
        y = y * xp.reshape(_to(xp, weight, ct), _bshape(x.shape, axes))
    return compat.write_out(out, _to(xp, y, x.dtype)), rstd


def _rms_norm_bwd_generic(x, weight, rstd, dy, *, axes, xp):
    ct = compat.compute_dtype(x, xp)
    xc, gc = _to(xp, x, ct), _to(xp, dy, ct)
    xhat = xc * rstd
    gh = gc if weight is None else gc * xp.reshape(_to(xp, weight, ct), _bshape(x.shape, axes))
    dx = rstd * (gh - xhat * xp.mean(gh * xhat, axis=axes, keepdims=True))
    dw = None if weight is None else _to(xp, xp.sum(gc * xhat, axis=_other_axes(x.ndim, axes)), weight.dtype)
    return _to(xp, dx, x.dtype), dw


_rms = Dispatcher("norm.rms_norm")
_rms.generic(_rms_norm_generic)
_rms_bwd = Dispatcher("norm.rms_norm_bwd")
_rms_bwd.generic(_rms_norm_bwd_generic)


@_rms.numba(when=lambda x, weight, **kw: numpy_float(x, weight, kw.get("out")) and _fast_ok(x, kw["axes"]))
def _rms_norm_numba(x, weight, *, axes, eps, out, xp):
    from .._numba import norm as nb

    return nb.rms_norm(x, weight, axes=axes, eps=eps, out=out)


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


def rms_norm(x, weight=None, *, axis=-1, eps=None, out=None):
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
    validate.check_array(x, "x")
    xp = compat.array_namespace(x, weight)
    validate.check_same_namespace(x=x, weight=weight)
    validate.check_float(x, "x")
    axes = _check_axes(x, axis)
    _check_affine(weight, "weight", x, axes)
    validate.check_out(out, x)
    eps = _default_eps(x, xp, eps)
    y, rstd = _rms(x, weight, axes=axes, eps=eps, out=out, xp=xp)
    return y, (x, weight, rstd, axes)


def rms_norm_bwd(res, dy):
    x, weight, rstd, axes = res
    xp = compat.array_namespace(x)
    return _rms_bwd(x, weight, rstd, dy, axes=axes, xp=xp)


ops.register("norm.rms_norm", rms_norm, rms_norm_fwd, rms_norm_bwd)


# ============================================================================ crms_norm
def crms_norm(x, weight=None, *, axis=-1, eps=None, out=None):
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
    validate.check_array(x, "x")
    xp = compat.array_namespace(x, weight)
    validate.check_same_namespace(x=x, weight=weight)
    validate.check_float(x, "x")
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension, got a 0-d array")
    ax = validate.check_axis(axis, x.ndim)
    validate.check_nonempty(x, "x", ax)
    axes = (ax,)
    _check_affine(weight, "weight", x, axes)
    validate.check_out(out, x)
    eps = _default_eps(x, xp, eps)
    ct = compat.compute_dtype(x, xp)
    xc = _to(xp, x, ct)
    d = x.shape[ax] + 1
    ssum = xp.sum(xc, axis=ax, keepdims=True)

    def extra(scale):
        t = ssum / scale
        return t * t

    rstd = _rstd(xc, axes, eps, xp, extra_sq=extra, count=d)
    y = xc * rstd
    if weight is not None:
        y = y * xp.reshape(_to(xp, weight, ct), _bshape(x.shape, axes))
    y = compat.write_out(out, _to(xp, y, x.dtype))
    return y, (x, weight, rstd, ssum, ax)


def crms_norm_bwd(res, dy):
    x, weight, rstd, ssum, ax = res
    xp = compat.array_namespace(x)
    ct = compat.compute_dtype(x, xp)
    xc, gc = _to(xp, x, ct), _to(xp, dy, ct)
    xhat = xc * rstd
    gh = gc if weight is None else gc * xp.reshape(_to(xp, weight, ct), _bshape(x.shape, (ax,)))
    c = xp.sum(gh * xhat, axis=ax, keepdims=True) / (x.shape[ax] + 1)
    dx = rstd * (gh - c * (xhat + ssum * rstd))
    dw = None if weight is None else _to(xp, xp.sum(gc * xhat, axis=_other_axes(x.ndim, (ax,))), weight.dtype)
    return _to(xp, dx, x.dtype), dw


ops.register("norm.crms_norm", crms_norm, crms_norm_fwd, crms_norm_bwd)


# ============================================================================ group_norm
def group_norm(x, weight=None, bias=None, *, num_groups, eps=1e-5):
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


def _check_gn(x, weight, bias, num_groups, eps):
    validate.check_same_namespace(x=x, weight=weight, bias=bias)
    validate.check_float(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, C, *), got shape {tuple(x.shape)}")
    g = validate.check_int(num_groups, "num_groups", low=1)
    c = x.shape[1]
    if c % g:
        raise ValueError(f"num_groups={g} must divide the number of channels C={c}")
    for p, nm in ((weight, "weight"), (bias, "bias")):
        if p is not None:
            validate.check_float(p, nm)
            validate.check_shape(p, (c,), nm)
    validate.check_nonempty(x, "x")
    return g, _eps(eps)


def group_norm_fwd(x, weight=None, bias=None, *, num_groups, eps=1e-5):
    validate.check_array(x, "x")
    xp = compat.array_namespace(x, weight, bias)
    g, eps = _check_gn(x, weight, bias, num_groups, eps)
    ct = compat.compute_dtype(x, xp)
    shape = tuple(x.shape)
    xg = xp.reshape(_to(xp, x, ct), (shape[0], g, -1))
    mu = xp.mean(xg, axis=-1, keepdims=True)
    d = xg - mu
    rstd = _rstd(d, (2,), eps, xp)
    y = xp.reshape(d * rstd, shape)
    cshape = (1, shape[1]) + (1,) * (len(shape) - 2)
    if weight is not None:
        y = y * xp.reshape(_to(xp, weight, ct), cshape)
    if bias is not None:
        y = y + xp.reshape(_to(xp, bias, ct), cshape)
    return _to(xp, y, x.dtype), (x, weight, bias is not None, mu, rstd, g)


def group_norm_bwd(res, dy):
    x, weight, has_bias, mu, rstd, g = res
    xp = compat.array_namespace(x)
    ct = compat.compute_dtype(x, xp)
    shape = tuple(x.shape)
    cshape = (1, shape[1]) + (1,) * (len(shape) - 2)
    gc = _to(xp, dy, ct)
    xg = xp.reshape(_to(xp, x, ct), (shape[0], g, -1))
    xhat = (xg - mu) * rstd
    gh = gc if weight is None else gc * xp.reshape(_to(xp, weight, ct), cshape)
    ghg = xp.reshape(gh, (shape[0], g, -1))
    m1 = xp.mean(ghg, axis=-1, keepdims=True)
    m2 = xp.mean(ghg * xhat, axis=-1, keepdims=True)
    dx = xp.reshape(rstd * (ghg - m1 - xhat * m2), shape)
    red = (0,) + tuple(range(2, len(shape)))
    dw = None if weight is None else _to(xp, xp.sum(gc * xp.reshape(xhat, shape), axis=red), weight.dtype)
    db = None if not has_bias else _to(xp, xp.sum(gc, axis=red), x.dtype)
    return _to(xp, dx, x.dtype), dw, db


ops.register("norm.group_norm", group_norm, group_norm_fwd, group_norm_bwd)


# ============================================================================ CUDA launchers
def _cuda_ok(*arrays) -> bool:
    arrs = [a for a in arrays if a is not None]
    return all(str(a.dtype) in ("float32", "float64") and a.dtype == arrs[0].dtype for a in arrs)


_CUDA_BLOCK = 256


def _cuda_rows(x, axes):
    """(rows, n) C-contiguous CuPy view/copy with the normalized axes last."""
    import cupy

    if len(axes) == 1:
        xm = cupy.moveaxis(x, axes[0], -1)
        n = xm.shape[-1]
    else:
        xm = x
        n = math.prod(x.shape[a] for a in axes)
    return cupy.ascontiguousarray(xm).reshape(-1, n), n


def _cuda_unrows(buf, x, axes):
    import cupy

    if len(axes) == 1:
        shp = list(x.shape)
        shp.append(shp.pop(axes[0]))
        return cupy.moveaxis(buf.reshape(shp), -1, axes[0])
    return buf.reshape(x.shape)


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

    from .._cuda import loader

    ctype = loader.dtype_name(x.dtype)
    rows, n = _cuda_rows(x, axes)
    r = rows.shape[0]
    y = cupy.empty_like(rows)
    mean = cupy.zeros((r,), dtype=x.dtype)
    rstd = cupy.empty((r,), dtype=x.dtype)
    w, b = _cuda_vec(weight, x), _cuda_vec(bias, x)
    has_w, has_b = np.int32(weight is not None), np.int32(bias is not None)
    e = np.dtype(x.dtype).type(eps)
    if r:
        if rms:
            k = loader.kernel("norm", f"rms_norm_fwd<{ctype}>")
            k((r,), (_CUDA_BLOCK,), (rows, w, y, rstd, np.int64(n), e, has_w))
        else:
            k = loader.kernel("norm", f"layer_norm_fwd<{ctype}>")
            k((r,), (_CUDA_BLOCK,), (rows, w, b, y, mean, rstd, np.int64(n), e, has_w, has_b))
    yy = _cuda_unrows(y, x, axes)
    keep = _stat_shape(x, axes)
    if out is not None:
        out[...] = yy
        yy = out
    return yy, mean.reshape(keep), rstd.reshape(keep)


def _stat_shape(x, axes):
    return tuple(1 if i in axes else x.shape[i] for i in range(x.ndim))


def _cuda_layer_norm_bwd(x, weight, mu, rstd, dy, *, axes, rms, has_bias):
    """Launch ``layer_norm_bwd<T>`` / ``rms_norm_bwd<T>`` (dx per row); dweight/dbias are column sums."""
    import cupy
    import numpy as np

    from .._cuda import loader

    ctype = loader.dtype_name(x.dtype)
    rows, n = _cuda_rows(x, axes)
    g, _ = _cuda_rows(cupy.asarray(dy, dtype=x.dtype), axes)
    r = rows.shape[0]
    dx = cupy.empty_like(rows)
    rs = cupy.ascontiguousarray(rstd, dtype=x.dtype).reshape(-1)
    w = _cuda_vec(weight, x)
    has_w = np.int32(weight is not None)
    if rms:
        xhat = rows * rs[:, None]
    else:
        mm = cupy.ascontiguousarray(mu, dtype=x.dtype).reshape(-1)
        xhat = (rows - mm[:, None]) * rs[:, None]
    if r:
        if rms:
            k = loader.kernel("norm", f"rms_norm_bwd<{ctype}>")
            k((r,), (_CUDA_BLOCK,), (rows, g, w, rs, dx, np.int64(n), has_w))
        else:
            k = loader.kernel("norm", f"layer_norm_bwd<{ctype}>")
            k((r,), (_CUDA_BLOCK,), (rows, g, w, mm, rs, dx, np.int64(n), has_w))
    wshape = tuple(x.shape[a] for a in axes)
    dw = None if weight is None else (g * xhat).sum(axis=0).reshape(wshape).astype(weight.dtype, copy=False)
    db = g.sum(axis=0).reshape(wshape) if has_bias else None
    return _cuda_unrows(dx, x, axes), dw, db
