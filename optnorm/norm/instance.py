"""Instance normalization and IBN-Net's instance-batch normalization (IBN-a channel split, IBN-b)."""
from __future__ import annotations

from .._lib import compat, ops, validate

__all__ = ["instance_norm", "ibn_norm"]


def _as(xp, a, dt):
    return a if a is None or a.dtype == dt else xp.astype(a, dt)


def _check_x(x, axis, xp):
    validate.check_float(x, "x", xp)
    if x.ndim < 3:
        raise ValueError(f"x must have shape (N, C, spatial...) with at least one spatial axis, "
                         f"got shape {tuple(x.shape)}")
    ax = validate.check_axis(axis, x.ndim)
    if ax == 0:
        raise ValueError("axis=0 is the batch axis; the channel axis must be another one")
    return ax


def _param(p, name, c, xp):
    if p is None:
        return None
    validate.check_float(p, name, xp)
    if tuple(p.shape) != (c,):
        raise ValueError(f"{name} has shape {tuple(p.shape)}, expected ({c},)")
    return p


def _in_fwd(x, weight, bias, ax, eps, xp):
    """Instance norm in the compute dtype; returns y and the residuals of the backward."""
    red = tuple(i for i in range(1, x.ndim) if i != ax)
    bshape = tuple(x.shape[i] if i == ax else 1 for i in range(x.ndim))
    mu = xp.mean(x, axis=red, keepdims=True)
    d = x - mu
    var = xp.mean(d * d, axis=red, keepdims=True)
    r = 1.0 / xp.sqrt(var + eps)
    xh = d * r
    y = xh
    g = None if weight is None else xp.reshape(weight, bshape)
    if g is not None:
        y = y * g
    if bias is not None:
        y = y + xp.reshape(bias, bshape)
    return y, (xh, r, g, red, weight is not None, bias is not None)


def _in_bwd(res, gy, xp):
    xh, r, g, red, has_w, has_b = res
    all_but_c = (0,) + tuple(red)  # every axis but the channel axis
    gh = gy if g is None else gy * g
    m1 = xp.mean(gh, axis=red, keepdims=True)
    m2 = xp.mean(gh * xh, axis=red, keepdims=True)
    dx = r * (gh - m1 - xh * m2)
    dw = xp.reshape(xp.sum(gy * xh, axis=all_but_c), (-1,)) if has_w else None
    db = xp.reshape(xp.sum(gy, axis=all_but_c), (-1,)) if has_b else None
    return dx, dw, db


def instance_norm(x, weight=None, bias=None, *, axis=1, eps=1e-5):
    """Instance normalization: each (sample, channel) is normalised over its spatial positions.

    y[n, c, s] = γ_c (x[n, c, s] − μ_{n,c}) / √(σ²_{n,c} + eps) + β_c, with μ, σ² the mean and the
    biased variance over the spatial axes.  Equals ``torch.nn.functional.instance_norm`` without
    running statistics, and group norm with one channel per group.

    Ulyanov, Vedaldi, Lempitsky, "Instance Normalization: The Missing Ingredient for Fast
    Stylization" (2016); used by IBN-Net (Pan, Luo, Shi, Tang, ECCV 2018) and OSNet.

    Parameters
    ----------
    x : array (N, C, spatial...) (channel axis ``axis``, batch axis 0)
    weight, bias : array (C,), optional
    axis : int
        Channel axis (1 for NCHW, -1 for NHWC).
    eps : float > 0

    Returns
    -------
    array like ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> y = instance_norm(np.random.default_rng(0).standard_normal((2, 3, 16)))
    >>> np.allclose(y.mean(axis=2), 0), np.allclose(y.var(axis=2), 1, atol=1e-3)
    (True, True)
    """
    return instance_norm_fwd(x, weight, bias, axis=axis, eps=eps)[0]


def instance_norm_fwd(x, weight=None, bias=None, *, axis=1, eps=1e-5):
    xp = validate.check_same_namespace(x=x, weight=weight, bias=bias)
    ax = _check_x(x, axis, xp)
    eps = validate.check_positive(eps, "eps")
    c = x.shape[ax]
    _param(weight, "weight", c, xp)
    _param(bias, "bias", c, xp)
    dt = compat.compute_dtype(x, xp)
    y, res = _in_fwd(_as(xp, x, dt), _as(xp, weight, dt), _as(xp, bias, dt), ax, eps, xp)
    dts = (x.dtype, None if weight is None else weight.dtype, None if bias is None else bias.dtype)
    return _as(xp, y, x.dtype), (res, dts)


def instance_norm_bwd(res, dy):
    r, dts = res
    xp = compat.array_namespace(r[0])
    dx, dw, db = _in_bwd(r, _as(xp, dy, r[0].dtype), xp)
    return _as(xp, dx, dts[0]), _as(xp, dw, dts[1]), _as(xp, db, dts[2])


ops.register("norm.instance_norm", instance_norm, instance_norm_fwd, instance_norm_bwd)


# ---------------------------------------------------------------- IBN
def _split(x, ax, c1, xp):
    lo = tuple(slice(None) if i != ax else slice(0, c1) for i in range(x.ndim))
    hi = tuple(slice(None) if i != ax else slice(c1, None) for i in range(x.ndim))
    return x[lo], x[hi]


def ibn_norm(x, in_weight=None, in_bias=None, bn_weight=None, bn_bias=None, running_mean=None, running_var=None, *,
             ratio=0.5, variant="a", training=True, momentum=0.1, eps=1e-5, axis=1):
    """IBN-Net normalization: instance norm on part of the channels, batch norm on the rest.

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
    from .batch import batch_norm_fwd

    xp = validate.check_same_namespace(x=x, in_weight=in_weight, in_bias=in_bias, bn_weight=bn_weight,
                                       bn_bias=bn_bias, running_mean=running_mean, running_var=running_var)
    validate.check_in(variant, ("a", "b"), "variant")
    ax = _check_x(x, axis, xp)
    C = x.shape[ax]
    if variant == "b":
        for nm, v in (("bn_weight", bn_weight), ("bn_bias", bn_bias), ("running_mean", running_mean),
                      ("running_var", running_var)):
            if v is not None:
                raise ValueError(f"{nm} must be None for variant='b' (IBN-b is instance norm on all channels)")
        y, res = instance_norm_fwd(x, in_weight, in_bias, axis=ax, eps=eps)
        return (y, None, None), ("b", res)
    ratio = validate.check_probability(ratio, "ratio")
    c1 = int(ratio * C)
    _param(in_weight, "in_weight", c1, xp)
    _param(in_bias, "in_bias", c1, xp)
    for nm, v in (("bn_weight", bn_weight), ("bn_bias", bn_bias), ("running_mean", running_mean),
                  ("running_var", running_var)):
        _param(v, nm, C - c1, xp)
    xa, xb = _split(x, ax, c1, xp)
    parts, res_in, res_bn = [], None, None
    rm = rv = None
    if c1 > 0:
        ya, res_in = instance_norm_fwd(xa, in_weight, in_bias, axis=ax, eps=eps)
        parts.append(ya)
    elif in_weight is not None or in_bias is not None:
        raise ValueError(f"in_weight/in_bias must be None when ratio={ratio} gives no instance-norm channels")
    if c1 < C:
        (yb, rm, rv), res_bn = batch_norm_fwd(xb, running_mean, running_var, bn_weight, bn_bias, training=training,
                                              momentum=momentum, eps=eps, axis=ax)
        parts.append(yb)
    y = parts[0] if len(parts) == 1 else xp.concat(parts, axis=ax)
    return (y, rm, rv), ("a", (res_in, res_bn, ax, c1, C))


def ibn_norm_bwd(res, dy):
    from .batch import batch_norm_bwd

    kind, r = res
    gy, grm, grv = dy
    if kind == "b":
        dx, dw, db = instance_norm_bwd(r, gy)
        return dx, dw, db, None, None, None, None
    res_in, res_bn, ax, c1, C = r
    xp = compat.array_namespace(gy)
    ga, gb = _split(gy, ax, c1, xp)
    parts = []
    dwi = dbi = dwb = dbb = drm = drv = None
    if res_in is not None:
        dxa, dwi, dbi = instance_norm_bwd(res_in, ga)
        parts.append(dxa)
    if res_bn is not None:
        dxb, drm, drv, dwb, dbb, _ = batch_norm_bwd(res_bn, (gb, grm, grv))
        parts.append(dxb)
    dx = parts[0] if len(parts) == 1 else xp.concat(parts, axis=ax)
    return dx, dwi, dbi, dwb, dbb, drm, drv


ops.register("norm.ibn_norm", ibn_norm, ibn_norm_fwd, ibn_norm_bwd)
