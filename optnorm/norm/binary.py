"""Binary cross-entropy on probabilities and on logits (torch semantics, pos_weight, stable softplus form)."""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.roles import Choice, Float
from .._lib.typing import Array
from .._lib.vjp import unbroadcast
from ._common import REDUCTIONS, reduce_loss, reduce_loss_bwd, sigmoid, softplus

_LOG_FLOOR = -100.0  # torch clamps the logs of binary_cross_entropy at -100 (so p = 0 or 1 gives a finite loss)


def _check_same_shape(p, y, names, fn):
    if tuple(p.shape) != tuple(y.shape):
        raise ValueError(f"{fn}: {names[1]} has shape {tuple(y.shape)}, expected the shape of {names[0]} "
                         f"{tuple(p.shape)}")


def _check_weight(w, shape, name, fn):
    if w is None:
        return
    try:
        ok = tuple(np.broadcast_shapes(tuple(w.shape), shape)) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{fn}: {name} has shape {tuple(w.shape)}, which does not broadcast to the input's "
                         f"{shape}")


def _check_unit(a, name, fn):
    if compat.is_concrete(a) and compat.size(a):
        v = compat.to_numpy(a)
        bad = ~((v >= 0) & (v <= 1))
        if bad.any():
            raise ValueError(f"{fn}: {name} holds probabilities and must lie in [0, 1]; it has the entry "
                             f"{float(v[bad].reshape(-1)[0]):.6g}")


class BCERes(NamedTuple):
    p: Any
    y: Any
    w: Any
    logp: Any
    log1mp: Any
    reduction: str
    shape: tuple
    dtypes: tuple


def _bce_example(rng, dtype):
    p = (0.05 + 0.9 * rng.random((3, 4))).astype(dtype)
    y = rng.random((3, 4)).astype(dtype)
    return (p, y, (0.5 + rng.random(4)).astype(dtype)), {}


@public(p=Float(), y=Float(), weight=Float(optional=True), reduction=Choice(REDUCTIONS), example=_bce_example,
        contract={"p": {"huge": "error", "nan": "error", "+inf": "error", "-inf": "error"}})
def binary_cross_entropy(p: Array, y: Array, weight: Array | None = None, *, reduction: str = "mean") -> Array:
    r"""Binary cross-entropy of probabilities, torch semantics (logs clamped at -100).

    .. math::
        \ell = -w\,\big[y \max(\log p, -100) + (1 - y) \max(\log(1 - p), -100)\big],

    equal to ``torch.nn.functional.binary_cross_entropy`` in values and gradients.  The gradient with respect
    to :math:`p` is torch's :math:`w(p - y)/\max(p(1-p), 10^{-12})`; ``y`` and ``weight`` get the exact
    gradients of the clamped loss (torch returns none for ``weight``, and :math:`\pm\infty` for ``y`` where
    :math:`p \in \{0, 1\}`; here :math:`\mp 100`, the derivative of the clamped logs).  :math:`p` outside [0, 1] is refused; for logits use
    :func:`binary_cross_entropy_with_logits`, which is exact where this one clamps.

    Parameters
    ----------
    p : array
        Predicted probabilities in [0, 1].
    y : array
        Targets, shape of ``p`` (soft targets in [0, 1] allowed).
    weight : array, optional
        Per-element weight, broadcastable to ``p``.
    reduction : {"mean", "sum", "none"}
        Mean or sum over all elements, or the elementwise losses.

    Returns
    -------
    array
        Scalar, or the shape of ``p`` for ``"none"``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import binary_cross_entropy
    >>> round(float(binary_cross_entropy(np.array([0.9, 0.2]), np.array([1.0, 0.0]))), 6)
    0.164252
    """
    return binary_cross_entropy_fwd(p, y, weight, reduction=reduction)[0]


def binary_cross_entropy_fwd(p, y, weight=None, *, reduction="mean"):
    fn = "binary_cross_entropy"
    xp = compat.array_namespace(p, y, weight)
    _check_same_shape(p, y, ("p", "y"), fn)
    _check_weight(weight, tuple(p.shape), "weight", fn)
    _check_unit(p, "p", fn)
    ct = compat.compute_dtype(p, xp)
    pc, yc, wc = compat.cast(p, ct, xp), compat.cast(y, ct, xp), compat.cast(weight, ct, xp)
    pos, lt1 = pc > 0, pc < 1
    logp = xp.where(pos, xp.maximum(xp.log(xp.where(pos, pc, xp.ones_like(pc))), _LOG_FLOOR),
                    xp.full_like(pc, _LOG_FLOOR))
    log1mp = xp.where(lt1, xp.maximum(xp.log1p(-xp.where(lt1, pc, xp.zeros_like(pc))), _LOG_FLOOR),
                      xp.full_like(pc, _LOG_FLOOR))
    per = -(yc * logp + (1.0 - yc) * log1mp)
    if wc is not None:
        per = per * wc
    out = compat.cast(reduce_loss(per, reduction, xp), p.dtype, xp)
    return out, BCERes(pc, yc, wc, logp, log1mp, reduction, tuple(p.shape),
                       (p.dtype, y.dtype, None if weight is None else weight.dtype,
                        None if weight is None else tuple(weight.shape)))


def binary_cross_entropy_bwd(res: BCERes, dy):
    pc, yc, wc = res.p, res.y, res.w
    xp = compat.array_namespace(pc)
    g = reduce_loss_bwd(compat.cast(dy, pc.dtype, xp), res.shape, res.reduction, xp)
    gw = g if wc is None else g * wc
    dp = gw * (pc - yc) / xp.maximum(pc * (1.0 - pc), 1e-12)
    dyy = -gw * (res.logp - res.log1mp)
    dw = None
    if wc is not None:
        dw = unbroadcast(-g * (yc * res.logp + (1.0 - yc) * res.log1mp), res.dtypes[3], xp)
        dw = compat.cast(dw, res.dtypes[2], xp)
    return compat.cast(dp, res.dtypes[0], xp), compat.cast(dyy, res.dtypes[1], xp), dw


vjp(binary_cross_entropy, binary_cross_entropy_fwd, binary_cross_entropy_bwd, validate=True)


# ============================================================================ with logits
class BCELogitsRes(NamedTuple):
    x: Any
    y: Any
    w: Any
    pw: Any
    reduction: str
    shape: tuple
    dtypes: tuple
    shapes: tuple


def _bcel_example(rng, dtype):
    x = rng.standard_normal((3, 4)).astype(dtype)
    y = rng.random((3, 4)).astype(dtype)
    return (x, y, (0.5 + rng.random((3, 1))).astype(dtype)), {}


@public(logits=Float("... c"), y=Float("... c"), weight=Float(optional=True), pos_weight=Float("c", optional=True),
        reduction=Choice(REDUCTIONS), example=_bcel_example, sizes={"c": 4})
def binary_cross_entropy_with_logits(logits: Array, y: Array, weight: Array | None = None, *,
                                     pos_weight: Array | None = None, reduction: str = "mean") -> Array:
    r"""Binary cross-entropy of logits, log-sum-exp stable, with torch's ``pos_weight``.

    With :math:`l_w = 1 + (\mathrm{pos\_weight} - 1)\,y` and :math:`\mathrm{softplus}(u) = \log(1 + e^u)`
    evaluated as :math:`\max(u, 0) + \log(1 + e^{-|u|})`, and computed as
    :math:`(1 - y)\,\mathrm{softplus}(x) + \mathrm{pos\_weight}\cdot y\,\mathrm{softplus}(-x)` (two non-negative terms:
    no cancellation, so small losses keep their digits where torch's form loses them),

    .. math::
        \ell = w\,\big[(1 - y)\,x + l_w\,\mathrm{softplus}(-x)\big]
             = -w\,\big[\mathrm{pos\_weight}\cdot y \log\sigma(x) + (1 - y) \log(1 - \sigma(x))\big],

    finite for any finite logit, with gradient :math:`w\,(l_w \sigma(x) - \mathrm{pos\_weight}\cdot y)`.
    Identical to ``torch.nn.functional.binary_cross_entropy_with_logits`` in values and in the gradients of the
    logits and the targets; ``weight`` gets its gradient too (torch gives none), ``pos_weight`` is an option (a
    keyword constant, as in torch, where it is not differentiable).  ``pos_weight`` broadcasts along the last
    (class) axis, ``weight`` elementwise.

    Parameters
    ----------
    logits : array
        Scores :math:`x`.
    y : array
        Targets, the shape of ``logits`` (soft targets allowed).
    weight : array, optional
        Per-element weight :math:`w`, broadcastable to ``logits``.
    pos_weight : array, optional
        Weight of the positive term per class (broadcast along the last axis): > 1 raises recall.
    reduction : {"mean", "sum", "none"}
        Mean or sum over all elements, or the elementwise losses.

    Returns
    -------
    array
        Scalar, or the shape of ``logits`` for ``"none"``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import binary_cross_entropy_with_logits
    >>> float(binary_cross_entropy_with_logits(np.array([1000.0]), np.array([0.0])))  # no overflow
    1000.0
    """
    return binary_cross_entropy_with_logits_fwd(logits, y, weight, pos_weight=pos_weight, reduction=reduction)[0]


def binary_cross_entropy_with_logits_fwd(logits, y, weight=None, *, pos_weight=None, reduction="mean"):
    fn = "binary_cross_entropy_with_logits"
    xp = compat.array_namespace(logits, y, weight, pos_weight)
    shape = tuple(logits.shape)
    _check_same_shape(logits, y, ("logits", "y"), fn)
    _check_weight(weight, shape, "weight", fn)
    _check_weight(pos_weight, shape, "pos_weight", fn)
    ct = compat.compute_dtype(logits, xp)
    x, yc = compat.cast(logits, ct, xp), compat.cast(y, ct, xp)
    wc, pw = compat.cast(weight, ct, xp), compat.cast(pos_weight, ct, xp)
    # (1 - y) x + l_w softplus(-x) written as (1 - y) softplus(x) + pos_weight y softplus(-x): two non-negative
    # terms, no cancellation (torch's form loses all digits of log1p(e^-30) ~ 9.4e-14 at x = -30, y = 0)
    spn, spp = softplus(-x, xp), softplus(x, xp)
    per = (1.0 - yc) * spp + (yc if pw is None else pw * yc) * spn
    if wc is not None:
        per = per * wc
    out = compat.cast(reduce_loss(per, reduction, xp), logits.dtype, xp)
    dts = (logits.dtype, y.dtype, None if weight is None else weight.dtype,
           None if pos_weight is None else pos_weight.dtype)
    shapes = (None if weight is None else tuple(weight.shape), None if pos_weight is None else tuple(pos_weight.shape))
    return out, BCELogitsRes(x, yc, wc, pw, reduction, shape, dts, shapes)


def binary_cross_entropy_with_logits_bwd(res: BCELogitsRes, dy):
    x, yc, wc, pw = res.x, res.y, res.w, res.pw
    xp = compat.array_namespace(x)
    g = reduce_loss_bwd(compat.cast(dy, x.dtype, xp), res.shape, res.reduction, xp)
    gw = g if wc is None else g * wc
    s = sigmoid(x, xp)
    spn, spp = softplus(-x, xp), softplus(x, xp)
    if pw is None:
        dx = gw * (s - yc)
        dyy = gw * (-x)
    else:
        dx = gw * ((1.0 + (pw - 1.0) * yc) * s - pw * yc)
        dyy = gw * (pw * spn - spp)
    dw = None
    if wc is not None:
        unweighted = (1.0 - yc) * spp + (yc if pw is None else pw * yc) * spn
        dw = compat.cast(unbroadcast(g * unweighted, res.shapes[0], xp), res.dtypes[2], xp)
    return compat.cast(dx, res.dtypes[0], xp), compat.cast(dyy, res.dtypes[1], xp), dw


vjp(binary_cross_entropy_with_logits, binary_cross_entropy_with_logits_fwd, binary_cross_entropy_with_logits_bwd,
    validate=True)
