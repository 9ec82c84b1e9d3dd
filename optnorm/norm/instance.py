"""Instance normalization and IBN-Net's instance-batch normalization (IBN-a channel split, IBN-b)."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.roles import Axis, Bool, Choice, Float, Positive, Probability
from .._lib.typing import Array
from ._common import rstd_of, var_scaled
from ._common import check_running_stat
from .batch import batch_norm_bwd, batch_norm_fwd


def _check_channel_axis(x, axis):
    if axis == 0:
        raise ValueError("axis=0 is the batch axis; the channel axis must be another one")


def _check_param(p, name, c):
    if p is not None and tuple(p.shape) != (c,):
        raise ValueError(f"{name} has shape {tuple(p.shape)}, expected ({c},)")


class InstanceNormRes(NamedTuple):
    xh: Any
    r: Any
    g: Any
    red: tuple
    has_w: bool
    has_b: bool
    dtypes: tuple


def _in_fwd(x, weight, bias, ax, eps, xp):
    """Instance norm of x (compute dtype): y and the residuals of the backward."""
    red = tuple(i for i in range(1, x.ndim) if i != ax)
    bshape = tuple(x.shape[i] if i == ax else 1 for i in range(x.ndim))
    mu = xp.mean(x, axis=red, keepdims=True)
    d = x - mu
    v, scale = var_scaled(d, red, xp)
    r = rstd_of(v, scale, eps, xp)
    xh = d * r
    y = xh
    g = None if weight is None else xp.reshape(weight, bshape)
    if g is not None:
        y = y * g
    if bias is not None:
        y = y + xp.reshape(bias, bshape)
    return y, (xh, r, g, red)


def _in_bwd(res: InstanceNormRes, gy, xp):
    xh, r, g, red = res.xh, res.r, res.g, res.red
    all_but_c = (0,) + tuple(red)  # every axis but the channel axis
    gh = gy if g is None else gy * g
    m1 = xp.mean(gh, axis=red, keepdims=True)
    m2 = xp.mean(gh * xh, axis=red, keepdims=True)
    dx = r * (gh - m1 - xh * m2)
    dw = xp.reshape(xp.sum(gy * xh, axis=all_but_c), (-1,)) if res.has_w else None
    db = xp.reshape(xp.sum(gy, axis=all_but_c), (-1,)) if res.has_b else None
    return dx, dw, db


def _nchw_example(rng, dtype):
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    return (x, (1 + 0.1 * rng.standard_normal(3)).astype(dtype), (0.1 * rng.standard_normal(3)).astype(dtype)), {}


def _stats_example(rng, dtype):
    (x, w, b), _ = _nchw_example(rng, dtype)
    return (x, w, b, (0.1 * rng.standard_normal(3)).astype(dtype), (0.5 + rng.random(3)).astype(dtype)), {}


class InstanceNormStatsRes(NamedTuple):
    """Residuals with running statistics: the instance-norm residuals (input statistics) or, with
    ``use_input_stats=False``, what the VJP of normalising by the running statistics needs."""
    res_in: Any             # InstanceNormRes, or None
    xc: Any                 # use_input_stats=False: x in the compute dtype
    rm: Any
    r: Any                  # 1 / sqrt(running_var + eps), channel-shaped
    g: Any
    bshape: tuple
    red: tuple
    momentum: float
    has: tuple              # (weight, bias) given
    dtypes: tuple           # x, weight, bias, running_mean, running_var


_VEC1: dict[str, Any] = dict(optional=True, min_ndim=1, max_ndim=1)


@public(x=Float(min_ndim=3), weight=Float(**_VEC1), bias=Float(**_VEC1), running_mean=Float(**_VEC1),
        running_var=Float(sign="nonnegative", **_VEC1), use_input_stats=Bool(), momentum=Probability(),
        eps=Positive(), axis=Axis("x"), example=_stats_example)
def instance_norm(x: Array, weight: Array | None = None, bias: Array | None = None, running_mean: Array | None = None,
                  running_var: Array | None = None, *, use_input_stats: bool = True, momentum: float = 0.1,
                  eps: float = 1e-5, axis: int = 1) -> Array | tuple[Array, Array, Array]:
    r"""Instance normalization: each (sample, channel) is normalised over its spatial positions.

    .. math::
        y_{n,c,s} = \gamma_c\,\frac{x_{n,c,s} - \mu_{n,c}}{\sqrt{\sigma^2_{n,c} + \epsilon}} + \beta_c,

    with :math:`\mu, \sigma^2` the mean and the biased variance over the spatial axes (group norm with one
    channel per group).  Running statistics follow ``torch.nn.functional.instance_norm``: with
    ``use_input_stats=True`` (default) the batch's statistics normalise and, when ``running_mean`` and
    ``running_var`` are given, they are updated to :math:`(1-m)\,r + m\,\overline{\mu_{\cdot,c}}` and
    :math:`(1-m)\,r + m\,\overline{s^2_{\cdot,c}}` (:math:`s^2` the unbiased instance variance, both averaged
    over the batch); with ``use_input_stats=False`` the running statistics normalise (as a batch norm in eval
    mode).  Instead of updating the buffers in place as torch does, the call returns the new ones.

    Ulyanov, Vedaldi, Lempitsky, "Instance Normalization: The Missing Ingredient for Fast
    Stylization" (2016); used by IBN-Net (Pan, Luo, Shi, Tang, ECCV 2018) and OSNet.

    ==================================  =========================================  ===========================
    torch                               optnorm                                    note
    ==================================  =========================================  ===========================
    ``instance_norm(x, rm, rv, w, b)``  ``instance_norm(x, w, b, rm, rv)``          positional order
    running stats updated in place      ``(y, new_rm, new_rv)`` returned            no mutation
    ==================================  =========================================  ===========================

    Parameters
    ----------
    x : array
        Input (N, C, spatial...), channel axis ``axis``, batch axis 0.
    weight : array, optional
        Per-channel scale :math:`\gamma`, shape (C,).
    bias : array, optional
        Per-channel shift :math:`\beta`, shape (C,).
    running_mean : array, optional
        Running mean per channel, shape (C,) (given together with ``running_var``).
    running_var : array, optional
        Running variance per channel, shape (C,).
    use_input_stats : bool
        Normalise with the input's statistics (True) or the running ones (False; they must be given).
    momentum : float in [0, 1]
        Weight :math:`m` of the new statistics in the running update.
    eps : float > 0
        Added to the variance.
    axis : int
        Channel axis (1 for NCHW, -1 for NHWC).

    Returns
    -------
    array, or (array, array, array)
        ``y`` like ``x``; with running statistics ``(y, new_running_mean, new_running_var)``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import instance_norm
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 16))
    >>> y = instance_norm(x)
    >>> np.allclose(y.mean(axis=2), 0), np.allclose(y.var(axis=2), 1, atol=1e-3)
    (True, True)
    >>> y, rm, rv = instance_norm(x, running_mean=np.zeros(3), running_var=np.ones(3))
    >>> rm.shape
    (3,)
    """
    return instance_norm_fwd(x, weight, bias, running_mean, running_var, use_input_stats=use_input_stats,
                             momentum=momentum, eps=eps, axis=axis)[0]


def instance_norm_fwd(x, weight=None, bias=None, running_mean=None, running_var=None, *, use_input_stats=True,
                      momentum=0.1, eps=1e-5, axis=1):
    xp = compat.array_namespace(x, weight, bias, running_mean, running_var)
    _check_channel_axis(x, axis)
    c = x.shape[axis]
    _check_param(weight, "weight", c)
    _check_param(bias, "bias", c)
    if (running_mean is None) != (running_var is None):
        missing = "running_var" if running_var is None else "running_mean"
        raise ValueError(f"instance_norm: {missing} is required when the other running statistic is given")
    _check_param(running_mean, "running_mean", c)
    _check_param(running_var, "running_var", c)
    stats = running_mean is not None
    if not use_input_stats and not stats:
        raise ValueError("instance_norm: use_input_stats=False normalises by running_mean and running_var: pass "
                         "both")
    dt = compat.compute_dtype(x, xp)
    xc = compat.cast(x, dt, xp)
    wc, bc = compat.cast(weight, dt, xp), compat.cast(bias, dt, xp)
    red = tuple(i for i in range(1, x.ndim) if i != axis)
    bshape = tuple(x.shape[i] if i == axis else 1 for i in range(x.ndim))
    dts = (x.dtype, None if weight is None else weight.dtype, None if bias is None else bias.dtype)
    if not stats:
        y, (xh, r, g, red) = _in_fwd(xc, wc, bc, axis, float(eps), xp)
        return compat.cast(y, x.dtype, xp), InstanceNormRes(xh, r, g, red, weight is not None, bias is not None, dts)
    sdts = dts + (running_mean.dtype, running_var.dtype)
    rm, rv = compat.cast(running_mean, dt, xp), compat.cast(running_var, dt, xp)
    g = None if wc is None else xp.reshape(wc, bshape)
    if use_input_stats:
        y, (xh, r, g, red) = _in_fwd(xc, wc, bc, axis, float(eps), xp)
        cnt = math.prod(x.shape[i] for i in red)
        mu = xp.mean(xc, axis=red, keepdims=True)
        v, scale = var_scaled(xc - mu, red, xp)  # no overflow of (x - mu)^2 before the variance itself overflows
        var_u = v * scale * scale * (cnt / max(cnt - 1, 1))
        m = float(momentum)
        new_rm = (1.0 - m) * rm + m * xp.reshape(xp.mean(mu, axis=0), (-1,))
        new_rv = (1.0 - m) * rv + m * xp.reshape(xp.mean(var_u, axis=0), (-1,))
        check_running_stat(new_rm, "running_mean", x, "mean", weight, bias, running_mean, running_var)
        check_running_stat(new_rv, "running_var", x, "variance", weight, bias, running_mean, running_var)
        res = InstanceNormStatsRes(InstanceNormRes(xh, r, g, red, weight is not None, bias is not None, dts),
                                   None, None, None, None, bshape, red, m, (weight is not None, bias is not None),
                                   sdts)
    else:
        r = 1.0 / xp.sqrt(xp.reshape(rv, bshape) + float(eps))
        y = (xc - xp.reshape(rm, bshape)) * r
        if g is not None:
            y = y * g
        if bc is not None:
            y = y + xp.reshape(bc, bshape)
        new_rm, new_rv = rm, rv
        res = InstanceNormStatsRes(None, xc, xp.reshape(rm, bshape), r, g, bshape, red, float(momentum),
                                   (weight is not None, bias is not None), sdts)
    out = (compat.cast(y, x.dtype, xp), compat.cast(new_rm, running_mean.dtype, xp),
           compat.cast(new_rv, running_var.dtype, xp))
    return out, res


def instance_norm_bwd(res, dy):
    if isinstance(res, InstanceNormRes):
        xp = compat.array_namespace(res.xh)
        dx, dw, db = _in_bwd(res, compat.cast(dy, res.xh.dtype, xp), xp)
        return tuple(compat.cast(a, d, xp) for a, d in zip((dx, dw, db), res.dtypes)) + (None, None)
    gy, grm, grv = dy
    dts = res.dtypes
    if res.res_in is not None:   # input statistics; the new running statistics depend on x through mu, s^2
        inner = res.res_in
        xp = compat.array_namespace(inner.xh)
        ct = inner.xh.dtype
        dx, dw, db = _in_bwd(inner, compat.cast(gy, ct, xp), xp)
        m = res.momentum
        n = inner.xh.shape[0]
        cnt = math.prod(inner.xh.shape[i] for i in res.red)
        drm = drv = None
        if grm is not None:
            gm = compat.cast(grm, ct, xp)
            dx = dx + xp.reshape(gm, res.bshape) * (m / (n * cnt))
            drm = (1.0 - m) * gm
        if grv is not None:
            gv = compat.cast(grv, ct, xp)
            centred = inner.xh / inner.r
            dx = dx + xp.reshape(gv, res.bshape) * (2.0 * m / (n * max(cnt - 1, 1))) * centred
            drv = (1.0 - m) * gv
    else:                        # running statistics normalise: y = (x - rm) r g + b
        xc = res.xc
        xp = compat.array_namespace(xc)
        g_ = compat.cast(gy, xc.dtype, xp)
        all_but_c = (0,) + tuple(res.red)
        gh = g_ if res.g is None else g_ * res.g
        d = xc - res.rm
        dx = gh * res.r
        dw = xp.reshape(xp.sum(g_ * d * res.r, axis=all_but_c), (-1,)) if res.has[0] else None
        db = xp.reshape(xp.sum(g_, axis=all_but_c), (-1,)) if res.has[1] else None
        drm = -xp.reshape(xp.sum(gh * res.r, axis=all_but_c), (-1,))
        drv = xp.reshape(xp.sum(gh * d * (-0.5) * res.r ** 3, axis=all_but_c), (-1,))
        if grm is not None:
            drm = drm + compat.cast(grm, xc.dtype, xp)
        if grv is not None:
            drv = drv + compat.cast(grv, xc.dtype, xp)
    return tuple(None if a is None else compat.cast(a, t, xp) for a, t in zip((dx, dw, db, drm, drv), dts))


vjp(instance_norm, instance_norm_fwd, instance_norm_bwd, validate=True)


# ---------------------------------------------------------------- IBN
def _split(x, ax, c1):
    lo = tuple(slice(None) if i != ax else slice(0, c1) for i in range(x.ndim))
    hi = tuple(slice(None) if i != ax else slice(c1, None) for i in range(x.ndim))
    return x[lo], x[hi]


class IbnNormRes(NamedTuple):
    variant: str
    res_in: Any     # InstanceNormRes of the IN channels (None when there are none)
    res_bn: Any     # batch-norm residuals of the BN channels (None when there are none)
    axis: int
    c1: int


def _ibn_example(rng, dtype):
    x = rng.standard_normal((4, 6, 5)).astype(dtype)
    p = [(1 + 0.1 * rng.standard_normal(3)).astype(dtype) for _ in range(4)]
    rm = (0.1 * rng.standard_normal(3)).astype(dtype)
    rv = (0.5 + rng.random(3)).astype(dtype)
    return (x, *p, rm, rv), {}


_VEC: dict[str, Any] = dict(optional=True, min_ndim=1, max_ndim=1)


@public(x=Float(min_ndim=3), in_weight=Float(**_VEC), in_bias=Float(**_VEC), bn_weight=Float(**_VEC),
        bn_bias=Float(**_VEC), running_mean=Float(**_VEC), running_var=Float(sign="nonnegative", **_VEC),
        ratio=Probability(), variant=Choice(("a", "b")), training=Bool(), momentum=Probability(), eps=Positive(),
        axis=Axis("x"), example=_ibn_example)
def ibn_norm(x: Array, in_weight: Array | None = None, in_bias: Array | None = None, bn_weight: Array | None = None,
             bn_bias: Array | None = None, running_mean: Array | None = None, running_var: Array | None = None, *,
             ratio: float = 0.5, variant: str = "a", training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
             axis: int = 1) -> tuple[Array, Array | None, Array | None]:
    r"""IBN-Net normalization: instance norm on part of the channels, batch norm on the rest.

    .. math::

        \text{IBN-a:}\quad y = \bigl[\,\mathrm{IN}(x_{:, :C_1}),\ \mathrm{BN}(x_{:, C_1:})\,\bigr], \quad
        C_1 = \lfloor \mathrm{ratio} \cdot C \rfloor; \qquad \text{IBN-b:}\quad y = \mathrm{IN}(x).

    - IBN-a: with C₁ = ⌊ratio · C⌋,  y = concat(IN(x[:, :C₁]; in_weight, in_bias), BN(x[:, C₁:];
      bn_weight, bn_bias, running stats)) along the channel axis (the official ``IBN`` module).

    - IBN-b: y = IN(x; in_weight, in_bias) on all channels (the network applies it after the
      residual addition); no batch-norm part, so ``bn_*`` and the running statistics must be None.

    The BN half is :func:`optnorm.norm.batch_norm` (torch semantics: biased variance to normalise,
    unbiased in the running update, ``momentum`` weighting the new batch), the IN half is
    :func:`instance_norm`; the VJP is theirs on each half.

    Pan, Luo, Shi, Tang, "Two at Once: Enhancing Learning and Generalization Capacities via
    IBN-Net" (ECCV 2018).

    Parameters
    ----------
    x : array (N, C, spatial...)
    in_weight, in_bias : array (C₁,) for IBN-a, (C,) for IBN-b; optional
    bn_weight, bn_bias : array (C − C₁,), optional (IBN-a)
    running_mean, running_var : array (C − C₁,), optional (IBN-a; required when ``training=False``)
    ratio : float in [0, 1]
        Fraction of channels given to instance norm (IBN-a).
    variant : {"a", "b"}
    training, momentum, eps, axis :
        As in :func:`optnorm.norm.batch_norm` (``axis`` is the channel axis).

    Returns
    -------
    y, new_running_mean, new_running_var
        The running statistics are None when not given (and always for IBN-b).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((4, 6, 5, 5))
    >>> y, rm, rv = ibn_norm(x, running_mean=np.zeros(3), running_var=np.ones(3))
    >>> y.shape, rm.shape
    ((4, 6, 5, 5), (3,))
    """
    return ibn_norm_fwd(x, in_weight, in_bias, bn_weight, bn_bias, running_mean, running_var, ratio=ratio,
                        variant=variant, training=training, momentum=momentum, eps=eps, axis=axis)[0]


def ibn_norm_fwd(x, in_weight=None, in_bias=None, bn_weight=None, bn_bias=None, running_mean=None,
                 running_var=None, *, ratio=0.5, variant="a", training=True, momentum=0.1, eps=1e-5, axis=1):
    xp = compat.array_namespace(x, in_weight, in_bias, bn_weight, bn_bias, running_mean, running_var)
    _check_channel_axis(x, axis)
    C = x.shape[axis]
    if variant == "b":
        for nm, v in (("bn_weight", bn_weight), ("bn_bias", bn_bias), ("running_mean", running_mean),
                      ("running_var", running_var)):
            if v is not None:
                raise ValueError(f"{nm} must be None for variant='b' (IBN-b is instance norm on all channels)")
        y, res = instance_norm_fwd(x, in_weight, in_bias, axis=axis, eps=eps)
        return (y, None, None), IbnNormRes("b", res, None, axis, C)
    c1 = int(ratio * C)
    _check_param(in_weight, "in_weight", c1)
    _check_param(in_bias, "in_bias", c1)
    for nm, v in (("bn_weight", bn_weight), ("bn_bias", bn_bias), ("running_mean", running_mean),
                  ("running_var", running_var)):
        _check_param(v, nm, C - c1)
    xa, xb = _split(x, axis, c1)
    parts, res_in, res_bn = [], None, None
    rm = rv = None
    if c1 > 0:
        ya, res_in = instance_norm_fwd(xa, in_weight, in_bias, axis=axis, eps=eps)
        parts.append(ya)
    elif in_weight is not None or in_bias is not None:
        raise ValueError(f"in_weight/in_bias must be None when ratio={ratio} gives no instance-norm channels")
    if c1 < C:
        (yb, rm, rv), res_bn = batch_norm_fwd(xb, running_mean, running_var, bn_weight, bn_bias, training=training,
                                              momentum=momentum, eps=eps, axis=axis)
        parts.append(yb)
    y = parts[0] if len(parts) == 1 else xp.concat(parts, axis=axis)
    return (y, rm, rv), IbnNormRes("a", res_in, res_bn, axis, c1)


def ibn_norm_bwd(res: IbnNormRes, dy):
    gy, grm, grv = dy
    if res.variant == "b":
        dx, dw, db = instance_norm_bwd(res.res_in, gy)[:3]
        return dx, dw, db, None, None, None, None
    xp = compat.array_namespace(gy)
    ga, gb = _split(gy, res.axis, res.c1)
    parts = []
    dwi = dbi = dwb = dbb = drm = drv = None
    if res.res_in is not None:
        dxa, dwi, dbi = instance_norm_bwd(res.res_in, ga)[:3]
        parts.append(dxa)
    if res.res_bn is not None:
        dxb, drm, drv, dwb, dbb, _ = batch_norm_bwd(res.res_bn, (gb, grm, grv))
        parts.append(dxb)
    dx = parts[0] if len(parts) == 1 else xp.concat(parts, axis=res.axis)
    return dx, dwi, dbi, dwb, dbb, drm, drv


vjp(ibn_norm, ibn_norm_fwd, ibn_norm_bwd, validate=True)
