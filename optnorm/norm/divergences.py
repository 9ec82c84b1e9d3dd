"""Divergences between distributions: kl_div (torch semantics) and the (generalised) Jensen-Shannon divergence."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.roles import Axis, Bool, Choice, Float, Scalar
from .._lib.typing import Array
from .._lib.vjp import unbroadcast
from ._common import REDUCTIONS

KL_REDUCTIONS = ("batchmean", "sum", "mean", "none")


def _broadcast(a, b, names):
    try:
        return tuple(np.broadcast_shapes(tuple(a.shape), tuple(b.shape)))
    except ValueError:
        raise ValueError(f"{names[1]} has shape {tuple(b.shape)}, which does not broadcast with {names[0]}'s "
                         f"{tuple(a.shape)}") from None


def _check_nonneg(a, name, fn):
    if compat.is_concrete(a) and compat.size(a):
        v = compat.to_numpy(a)
        if (v < 0).any():
            raise ValueError(f"{fn}: {name} holds probabilities and must be >= 0; it has the entry "
                             f"{float(v[v < 0].min()):.6g}")


def _check_sums(a, ax, name, fn):
    """Probabilities along ``ax`` must sum to one (tolerance 1e-4 sqrt(n): catches counts and unnormalised
    scores, not rounding)."""
    if not (compat.is_concrete(a) and compat.size(a)):
        return
    v = compat.to_numpy(a)
    n = v.shape[ax]
    tol = 1e-4 * n ** 0.5
    dev = np.abs(v.sum(axis=ax, dtype=np.float64) - 1.0)
    if (dev > tol).any():
        raise ValueError(f"{fn}: {name} must hold probabilities summing to 1 along axis {ax} (or pass "
                         f"from_logits=True); a row sums to {float(v.sum(axis=ax, dtype=np.float64).reshape(-1)[int(np.argmax(dev))]):.6g}")


def _kl_reduce(per, reduction, shape, xp):
    if reduction == "none":
        return per
    s = xp.sum(per)
    if reduction == "sum":
        return s
    if reduction == "mean":
        return s / math.prod(per.shape)
    return s / shape[0] if len(shape) else s  # batchmean: a 0-d input is not divided


def _kl_reduce_bwd(dy, reduction, full, in_shape, xp):
    if reduction == "none":
        return dy
    n = {"sum": 1, "mean": math.prod(full), "batchmean": in_shape[0] if len(in_shape) else 1}[reduction]
    return xp.broadcast_to(dy / n, full) if full else dy / n


class KLDivRes(NamedTuple):
    input: Any
    target: Any
    log_target: bool
    reduction: str
    full: tuple
    dtypes: tuple


def _kl_example(rng, dtype):
    q = rng.dirichlet(np.ones(5), size=3)
    p = rng.dirichlet(np.ones(5), size=3)
    return (np.log(q).astype(dtype), p.astype(dtype)), {}


def _js_example(rng, dtype):
    return (rng.dirichlet(np.ones(5), size=3).astype(dtype), rng.dirichlet(np.ones(5), size=3).astype(dtype)), {}


@public(input=Float(), target=Float(), log_target=Bool(), reduction=Choice(KL_REDUCTIONS), example=_kl_example)
def kl_div(input: Array, target: Array, *, log_target: bool = False, reduction: str = "batchmean") -> Array:
    r"""Kullback-Leibler divergence in torch's argument order: ``input`` is :math:`\log q`, ``target`` is :math:`p`.

    .. math::
        \ell = p\,(\log p - \log q) \quad (0 \text{ where } p = 0), \qquad
        \ell = e^{t}\,(t - \log q) \quad \text{with } t = \log p \text{ when } \texttt{log\_target},

    so ``kl_div(log q, p, reduction="batchmean")`` is :math:`\mathrm{KL}(p\,\|\,q)` averaged over the rows
    (Kullback & Leibler, "On Information and Sufficiency", 1951).  Identical to
    ``torch.nn.functional.kl_div`` (values and the gradients of both arguments, including 0 for the target's
    gradient where :math:`p = 0`) except the default reduction: torch defaults to ``"mean"`` (the sum over
    *all elements*, which is not the KL divergence, with a warning); here it is ``"batchmean"`` (the sum over
    the first axis' length; a 0-d input is not divided).  ``input`` and ``target`` broadcast.

    Parameters
    ----------
    input : array
        Log-probabilities :math:`\log q` of the model.
    target : array
        Probabilities :math:`p` (>= 0), or log-probabilities with ``log_target=True``.
    log_target : bool
        ``target`` holds :math:`\log p` (the stable form; no :math:`\log 0`).
    reduction : {"batchmean", "sum", "mean", "none"}
        ``"batchmean"``: sum / ``input.shape[0]``; ``"mean"``: sum / number of elements; ``"none"``: pointwise.

    Returns
    -------
    array
        Scalar, or the pointwise terms for ``"none"``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import kl_div
    >>> p, q = np.array([[0.5, 0.5]]), np.array([[0.9, 0.1]])
    >>> round(float(kl_div(np.log(q), p)), 6)
    0.510826
    """
    return kl_div_fwd(input, target, log_target=log_target, reduction=reduction)[0]


def kl_div_fwd(input, target, *, log_target=False, reduction="batchmean"):
    xp = compat.array_namespace(input, target)
    full = _broadcast(input, target, ("input", "target"))
    if not log_target:
        _check_nonneg(target, "target", "kl_div")
    ct = compat.compute_dtype(input, xp)
    x, t = compat.cast(input, ct, xp), compat.cast(target, ct, xp)
    if log_target:
        per = xp.exp(t) * (t - x)
    else:
        pos = t > 0
        t1 = xp.where(pos, t, xp.ones_like(t))
        per = xp.where(pos, t * (xp.log(t1) - x), xp.zeros_like(t * x))
    dt = xp.result_type(input.dtype, target.dtype)
    y = compat.cast(_kl_reduce(per, reduction, tuple(input.shape), xp), dt, xp)
    return y, KLDivRes(x, t, log_target, reduction, full, (input.dtype, target.dtype, tuple(input.shape),
                                                             tuple(target.shape)))


def kl_div_bwd(res: KLDivRes, dy):
    x, t = res.input, res.target
    xp = compat.array_namespace(x)
    g = _kl_reduce_bwd(compat.cast(dy, x.dtype, xp), res.reduction, res.full, res.dtypes[2], xp)
    if res.log_target:
        e = xp.exp(t)
        dx = -e * g
        dt = g * e * (t - x + 1.0)
    else:
        pos = t > 0
        dx = -t * g
        t1 = xp.where(pos, t, xp.ones_like(t))
        dt = xp.where(pos, g * (xp.log(t1) + 1.0 - x), xp.zeros_like(g * x))
    dx = unbroadcast(xp.broadcast_to(dx, res.full), res.dtypes[2], xp)
    dt = unbroadcast(xp.broadcast_to(dt, res.full), res.dtypes[3], xp)
    return compat.cast(dx, res.dtypes[0], xp), compat.cast(dt, res.dtypes[1], xp)


vjp(kl_div, kl_div_fwd, kl_div_bwd, validate=True)


# ============================================================================ Jensen-Shannon
class JSRes(NamedTuple):
    lp: Any
    lq: Any
    lm: Any
    beta: float
    axis: int
    from_logits: bool
    reduction: str
    rows: tuple
    dtypes: tuple


def _log_probs(a, axis, from_logits, xp):
    if from_logits:
        m = xp.max(a, axis=axis, keepdims=True)
        m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
        return a - m - xp.log(xp.sum(xp.exp(a - m), axis=axis, keepdims=True))
    pos = a > 0
    return xp.where(pos, xp.log(xp.where(pos, a, xp.ones_like(a))), xp.full_like(a, -math.inf))


def _xlog(p_log, d, xp):
    """exp(lp) * d with 0 where lp = -inf (0 log 0 = 0)."""
    dead = p_log == -math.inf
    return xp.exp(p_log) * xp.where(dead, xp.zeros_like(d), d)


@public(p=Float(), q=Float(), beta=Scalar(0.0, 1.0, low_open=True, high_open=True), from_logits=Bool(),
        axis=Axis("p"), reduction=Choice(REDUCTIONS), example=_js_example)
def js_divergence(p: Array, q: Array, *, beta: float = 0.5, from_logits: bool = False, axis: int = -1,
                  reduction: str = "mean") -> Array:
    r"""(Generalised) Jensen-Shannon divergence between distributions along ``axis``, natural log.

    With :math:`M = \beta P + (1-\beta) Q`,

    .. math::
        \mathrm{JSD}_\beta(P, Q) = \beta\,\mathrm{KL}(P\,\|\,M) + (1-\beta)\,\mathrm{KL}(Q\,\|\,M)
            = \sum_i \big[\beta P_i \log P_i + (1-\beta) Q_i \log Q_i - M_i \log M_i\big],

    Lin, "Divergence measures based on the Shannon entropy" (IEEE Trans. Inf. Theory 1991); :math:`\beta = 1/2`
    is the symmetric JSD, bounded by :math:`\log 2` (``scipy.spatial.distance.jensenshannon(p, q) ** 2``),
    and the generalised form is Liger-Kernel's ``LigerJSD(beta)`` used for distillation (whose
    :math:`\beta \in \{0, 1\}` special cases are the forward and reverse KL: use :func:`kl_div` for those;
    here :math:`\beta` is in (0, 1)).  :math:`\log M` is formed as a log-sum-exp of the log-probabilities, so
    logits of any size are safe.  The gradient with respect to :math:`P` is :math:`\beta(\log P - \log M)` (0
    where :math:`P = 0`), chained through the softmax with ``from_logits``.

    Parameters
    ----------
    p, q : array
        Probabilities along ``axis`` (>= 0, summing to one), or logits with ``from_logits=True``.  They broadcast.
    beta : float in (0, 1)
        Weight of ``p`` in the mixture.
    from_logits : bool
        ``p`` and ``q`` are unnormalised log-probabilities (a log-softmax is taken along ``axis``).
    axis : int
        The distribution axis (summed).
    reduction : {"mean", "sum", "none"}
        Combination over the remaining (row) positions.

    Returns
    -------
    array
        Scalar, or one divergence per row for ``"none"``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import js_divergence
    >>> round(float(js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0]))), 6)  # log 2
    0.693147
    """
    return js_divergence_fwd(p, q, beta=beta, from_logits=from_logits, axis=axis, reduction=reduction)[0]


def js_divergence_fwd(p, q, *, beta=0.5, from_logits=False, axis=-1, reduction="mean"):
    xp = compat.array_namespace(p, q)
    full = _broadcast(p, q, ("p", "q"))
    ax = axis - p.ndim if axis >= 0 else axis  # counted from the end: p and q may differ in leading dims
    if not from_logits:
        for a, name in ((p, "p"), (q, "q")):
            _check_nonneg(a, name, "js_divergence")
            _check_sums(a, ax, name, "js_divergence")
    ct = compat.compute_dtype(p, xp)
    pc = xp.broadcast_to(compat.cast(p, ct, xp), full)
    qc = xp.broadcast_to(compat.cast(q, ct, xp), full)
    ax = ax % len(full)
    lp, lq = _log_probs(pc, ax, from_logits, xp), _log_probs(qc, ax, from_logits, xp)
    b = float(beta)
    lm = xp.logaddexp(lp + math.log(b), lq + math.log1p(-b))
    lm0 = xp.where(lm == -math.inf, xp.zeros_like(lm), lm)  # where M = 0 both P and Q are 0: every term is 0
    per = xp.sum(b * _xlog(lp, lp - lm0, xp) + (1.0 - b) * _xlog(lq, lq - lm0, xp), axis=ax)
    from ._common import reduce_loss

    y = compat.cast(reduce_loss(per, reduction, xp), xp.result_type(p.dtype, q.dtype), xp)
    return y, JSRes(lp, lq, lm0, b, ax, bool(from_logits), reduction, tuple(per.shape),
                    (p.dtype, q.dtype, tuple(p.shape), tuple(q.shape)))


def js_divergence_bwd(res: JSRes, dy):
    from ._common import reduce_loss_bwd

    lp, lq, lm, b, ax = res.lp, res.lq, res.lm, res.beta, res.axis
    xp = compat.array_namespace(lp)
    g = xp.expand_dims(reduce_loss_bwd(compat.cast(dy, lp.dtype, xp), res.rows, res.reduction, xp), axis=ax)
    out = []
    for lx, w in ((lp, b), (lq, 1.0 - b)):
        d = xp.where(lx == -math.inf, xp.zeros_like(lx), w * (lx - lm)) * g
        if res.from_logits:
            pr = xp.exp(lx)
            d = pr * (d - xp.sum(pr * d, axis=ax, keepdims=True))
        out.append(d)
    dp = unbroadcast(out[0], res.dtypes[2], xp)
    dq = unbroadcast(out[1], res.dtypes[3], xp)
    return compat.cast(dp, res.dtypes[0], xp), compat.cast(dq, res.dtypes[1], xp)


vjp(js_divergence, js_divergence_fwd, js_divergence_bwd, validate=True)
