"""Helpers shared by the modules of :mod:`optnorm.norm` (the domain's one private module of shared code)."""
from __future__ import annotations

import math

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
