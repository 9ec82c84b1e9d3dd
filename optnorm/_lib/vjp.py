"""Small pieces shared by the VJPs of every domain."""
from __future__ import annotations

__all__ = ["unbroadcast"]


def unbroadcast(g, shape, xp):
    """Sum a cotangent ``g`` back to ``shape``: the VJP of broadcasting an input of that shape.

    Leading axes that broadcasting added are summed away; axes where the input had size 1
    are summed with ``keepdims``.  ``None`` passes through (no cotangent).
    """
    if g is None:
        return None
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    if lead:
        g = xp.sum(g, axis=tuple(range(lead)))
    axes = tuple(i for i, (s, t) in enumerate(zip(shape, g.shape)) if s == 1 and t != 1)
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
    return g
