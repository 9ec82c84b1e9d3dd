"""Helpers shared by the modules of :mod:`optnorm.norm` (the domain's one private module of shared code)."""
from __future__ import annotations

import math

from .._lib import compat

REDUCTIONS = ("mean", "sum", "none")


def sigmoid(u, xp):
    """Logistic sigmoid without overflow: exp is only taken of -|u|."""
    e = xp.exp(-xp.abs(u))
    return xp.where(u >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus(u, xp):
    """log(1 + e^u) without overflow."""
    return xp.maximum(u, 0.0) + xp.log1p(xp.exp(-xp.abs(u)))


def reduce_loss(per, reduction, xp, denom=None):
    """Combine per-sample losses: ``"none"``, ``"sum"``, or ``"mean"`` (the sum over ``denom``, default the count)."""
    if reduction == "none":
        return per
    s = xp.sum(per)
    if reduction == "sum":
        return s
    return s / (math.prod(per.shape) if denom is None else denom)


def reduce_loss_bwd(dy, shape, reduction, xp):
    """Cotangent of the per-sample losses of shape ``shape`` from the cotangent of :func:`reduce_loss`'s result."""
    if reduction == "none":
        return dy
    n = math.prod(shape) if shape else 1
    g = dy / n if reduction == "mean" else dy
    return xp.broadcast_to(g, shape) if shape else g


def move_last(x, axis, xp):
    return x if axis in (-1, x.ndim - 1) else xp.moveaxis(x, axis, -1)


def move_back(x, axis, xp):
    return x if axis in (-1, x.ndim - 1) else xp.moveaxis(x, -1, axis)


def safe_norm(a, axis, xp):
    """Euclidean norm along ``axis`` (keepdims) formed in units of the largest entry: no overflow or
    underflow of the squares for entries up to the dtype's largest value."""
    m = xp.max(xp.abs(a), axis=axis, keepdims=True)
    ms = xp.where(m > 0, m, xp.ones_like(m))
    u = a / ms
    return ms * xp.sqrt(xp.sum(u * u, axis=axis, keepdims=True))


def var_scaled(d, axes, xp, weights=None):
    """(v, scale): the mean of d^2 over ``axes`` (keepdims; weighted by ``weights`` summing to one over
    ``axes`` when given) is ``v * scale**2``, with d in units of its largest entry (when > 1) so v never
    overflows.  ``1 / (scale * sqrt(v + eps / scale**2))`` is the matching overflow-free rstd."""
    a = xp.max(xp.abs(d), axis=axes, keepdims=True)
    scale = xp.where(a > 1, a, xp.ones_like(a))
    ds = d / scale
    v = xp.mean(ds * ds, axis=axes, keepdims=True) if weights is None else \
        xp.sum(weights * ds * ds, axis=axes, keepdims=True)
    return v, scale


def rstd_of(v, scale, eps, xp):
    """1/sqrt(v scale^2 + eps) without forming v scale^2 (see :func:`var_scaled`)."""
    return 1.0 / (scale * xp.sqrt(v + eps / scale / scale))


def rstd_scaled(d, axes, eps, xp, extra_sq=None, count=None):
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


def _all_finite(a) -> bool:
    return a is None or bool(compat.to_numpy(compat.array_namespace(a).all(compat.array_namespace(a).isfinite(a))))


def check_running_stat(stat, name, x, what, *inputs):
    """A running statistic updated from finite inputs must be finite: otherwise the batch statistic overflowed."""
    if stat is None or not compat.is_concrete(stat):
        return
    s = compat.to_numpy(stat)
    if not bool((abs(s) < float("inf")).all()) and all(_all_finite(a) for a in (x, *inputs)):
        raise ValueError(f"the {what} of x overflows {str(x.dtype).rsplit('.', 1)[-1]}, so {name} has no finite "
                         f"update: rescale x")
