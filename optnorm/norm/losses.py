"""Classification losses on logits: cross_entropy (torch semantics + fused PaLM z-loss), spherical_z_loss."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.dispatch import Dispatcher, numpy_float
from .._lib.roles import Array as ArrayRole, Bool, Choice, Float, Int, NonNegative, Positive, Probability, Scalar
from .._lib.typing import Array
from ._common import REDUCTIONS, reduce_loss


def _is_int(t) -> bool:
    name = str(t.dtype).rsplit(".", 1)[-1]
    return "int" in name and "bool" not in name


def _class_axis(logits, axis):
    """The class axis: ``axis`` of logits, where a 1-D input is one sample (torch: classes on dim 0)."""
    if logits.ndim == 1 and axis == 1:
        return 0
    if not -logits.ndim <= axis < logits.ndim:
        raise ValueError(f"axis={axis} is out of range for logits with {logits.ndim} dimensions")
    return axis % logits.ndim


def _check_labels(target, logits, ax, ignore_index=None):
    """Integer class indices with the shape of logits without the class axis, in [0, C) (or ignore_index)."""
    c = logits.shape[ax]
    want = tuple(s for i, s in enumerate(logits.shape) if i != ax)
    if tuple(target.shape) != want:
        raise ValueError(f"target has shape {tuple(target.shape)}, expected {want} (logits without the class axis)")
    if compat.is_concrete(target) and compat.size(target):
        t = compat.to_numpy(target)
        bad = (t < 0) | (t >= c)
        if ignore_index is not None:
            bad &= t != ignore_index
        if bad.any():
            extra = "" if ignore_index is None else f" that are not ignore_index={ignore_index}"
            raise ValueError(f"target has class index {int(t[bad][0])}, outside [0, {c}){extra}")


def _labels_example(c=5, rows=3, weight=False):
    def example(rng, dtype):
        args = (rng.standard_normal((rows, c)).astype(dtype), rng.integers(0, c, size=rows))
        if weight:
            args += ((0.5 + rng.random(c)).astype(dtype),)
        return args, {}

    return example


# ============================================================================ cross_entropy
class CrossEntropyRes(NamedTuple):
    """Residuals of the generic path (class axis moved last)."""
    lp: Any                 # log-probabilities (..., C)
    target: Any             # integer targets, or the probabilities (..., C)
    integer: bool
    weight: Any             # class weights in the compute dtype, or None
    ax: int
    c: int
    eps: float
    zc: float
    lse: Any
    reduction: str
    denom: Any
    nvalid: Any
    from_log_probs: bool
    valid: Any
    per: Any
    dtype: Any
    tdtype: Any
    wdtype: Any
    ignore_index: int


class CrossEntropyFusedRes(NamedTuple):
    """Residuals of the fused Numba path (integer targets, rows of C classes)."""
    x2: Any
    t0: Any
    vf: Any
    w_t: Any
    lse: Any
    xt: Any
    weight: Any
    wsum: float
    c: int
    eps: float
    zc: float
    reduction: str
    denom: float
    nvalid: float
    per: Any
    lshape: tuple
    ax: int


_ce = Dispatcher("norm.cross_entropy")


@_ce.generic
def _ce_generic(logits, target, weight, *, ax, c, eps, zc, ignore_index, reduction, from_log_probs, integer, xp):
    ct = compat.compute_dtype(logits, xp)
    x = xp.moveaxis(compat.cast(logits, ct, xp), ax, -1)  # (..., C)
    w = compat.cast(weight, ct, xp)
    if from_log_probs:
        lp, lse = x, None
    else:  # one log-sum-exp per row gives both the log-probabilities and the z-loss term
        m = xp.max(x, axis=-1, keepdims=True)
        lse_k = m + xp.log(xp.sum(xp.exp(x - m), axis=-1, keepdims=True))
        lp = x - lse_k
        lse = lse_k[..., 0]
    wc = compat.full((c,), 1.0, like=x) if w is None else w
    if integer:
        valid = target != ignore_index
        t0 = xp.where(valid, target, xp.zeros_like(target))
        onehot = xp.astype(t0[..., None], xp.int64) == compat.arange(c, like=x, dtype=xp.int64)
        lp_t = xp.sum(xp.where(onehot, lp, xp.zeros_like(lp)), axis=-1)
        w_t = xp.sum(xp.where(onehot, wc, xp.zeros_like(lp)), axis=-1)
        vf = xp.astype(valid, ct)
        per = -(1.0 - eps) * w_t * lp_t
        if eps:
            per = per - eps * xp.sum(lp * wc, axis=-1) / c
        per = xp.where(valid, per, xp.zeros_like(per))
        denom = xp.sum(w_t * vf)
        nvalid = xp.sum(vf)
        tres = target
    else:
        p = compat.cast(xp.moveaxis(target, ax, -1), ct, xp)
        pt = (1.0 - eps) * p + eps / c if eps else p
        per = -xp.sum(wc * pt * lp, axis=-1)
        vf = None
        denom = nvalid = float(math.prod(per.shape))
        tres = p
    loss = reduce_loss(per, reduction, xp, denom)
    if zc:
        zper = zc * lse * lse
        if vf is not None:
            zper = zper * vf
        loss = loss + reduce_loss(zper, reduction, xp, nvalid)
    res = CrossEntropyRes(lp, tres, integer, w, ax, c, eps, zc, lse, reduction, denom, nvalid, from_log_probs, vf,
                          per, logits.dtype, target.dtype, None if weight is None else weight.dtype, ignore_index)
    return compat.cast(loss, logits.dtype, xp), res


@_ce.numba(when=lambda logits, target, weight, **kw: kw["integer"] and not kw["from_log_probs"]
           and numpy_float(logits, weight) and compat.fast_path_of(target) == "numba")
def _ce_fused(logits, target, weight, *, ax, c, eps, zc, ignore_index, reduction, from_log_probs, integer, xp):
    """One sweep per row for the forward (LSE, target logit, smoothing sum), one read + one write for the
    backward; the per-row arithmetic on top is O(rows) NumPy."""
    import numpy as np

    from .._numba import norm as nb

    dt = logits.dtype
    x2 = np.ascontiguousarray(np.moveaxis(logits, ax, -1)).reshape(-1, c)
    tflat = np.asarray(target).reshape(-1)
    valid = tflat != ignore_index
    t0 = np.where(valid, tflat, 0).astype(np.int64)
    lse, xt, sw = nb.cross_entropy_rows(x2, t0, weight, bool(eps))
    wc = np.ones(c, dt) if weight is None else np.asarray(weight, dt)
    wsum = wc.sum(dtype=np.float64)
    vf = valid.astype(dt)
    w_t = wc[t0] * vf
    per = -(1.0 - eps) * w_t * (xt - lse)
    if eps:
        per = per - eps / c * (sw - wsum * lse) * vf
    per = per.astype(dt, copy=False)
    denom = w_t.sum(dtype=np.float64)
    nvalid = vf.sum(dtype=np.float64)
    with np.errstate(over="ignore"):
        zper = (zc * lse * lse * vf).astype(dt, copy=False) if zc else None
    shape = tuple(target.shape)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if reduction == "none":
            loss = per + zper if zc else per
            loss = loss.reshape(shape).astype(dt, copy=False)
        else:
            tot = per.sum(dtype=np.float64)
            ztot = zper.sum(dtype=np.float64) if zc else 0.0
            if reduction == "mean":
                loss = tot / denom + (ztot / nvalid if zc else 0.0)
            else:
                loss = tot + ztot
            loss = np.asarray(loss, dtype=dt)
    res = CrossEntropyFusedRes(x2, t0, vf, w_t, lse, xt, weight, wsum, c, eps, zc, reduction, denom, nvalid, per,
                               tuple(logits.shape), ax)
    return loss, res


def _check_z_finite(loss, res, xp):
    """The z-loss term c log^2 Z overflows for logits near the dtype's largest value: no finite loss exists."""
    if not res.zc or not compat.is_concrete(loss):
        return
    lse = compat.to_numpy(res.lse)
    ok_lse = bool((lse == lse).all() and (abs(lse) < float("inf")).all())
    if ok_lse and not bool(xp.all(xp.isfinite(loss))):
        raise ValueError(f"cross_entropy: z_loss * logsumexp(logits)^2 overflows {compat.backend_name(loss)} "
                         f"{str(loss.dtype).rsplit('.', 1)[-1]} (logsumexp up to {float(abs(lse).max()):.3g}): "
                         "rescale logits or compute in a wider dtype")


@public(logits=Float(min_ndim=1), target=ArrayRole(dtype="number", min_ndim=0),
        weight=Float(optional=True, min_ndim=1, max_ndim=1), axis=Int(), ignore_index=Int(),
        label_smoothing=Probability(), reduction=Choice(REDUCTIONS), z_loss=NonNegative(), from_log_probs=Bool(),
        example=_labels_example(weight=True))
def cross_entropy(logits: Array, target: Array, weight: Array | None = None, *, axis: int = 1, ignore_index: int = -100,
                  label_smoothing: float = 0.0, reduction: str = "mean", z_loss: float = 0.0,
                  from_log_probs: bool = False) -> Array:
    r"""Cross-entropy of logits against class indices or class probabilities, torch semantics.

    With :math:`\ell = \mathrm{log\_softmax}(x)` over the class ``axis`` (torch layout: ``(N, C, d1, ...)``,
    classes on dim 1; a 1-D input is one sample), class weights :math:`w` (default 1), smoothing
    :math:`\varepsilon` and C classes:

    - integer ``target`` :math:`t`: :math:`L_i = -(1-\varepsilon) w_{t_i}\ell_{i,t_i} -
      (\varepsilon/C)\sum_c w_c \ell_{i,c}`, 0 where :math:`t_i` = ``ignore_index``;
      ``"mean"`` divides the sum by :math:`\sum_{i \text{ not ignored}} w_{t_i}` (a weighted mean; all rows
      ignored gives NaN like torch).
    - probability ``target`` :math:`P` (shape of ``logits``): :math:`\tilde P = (1-\varepsilon)P + \varepsilon/C`,
      :math:`L_i = -\sum_c w_c \tilde P_{i,c}\ell_{i,c}`; ``"mean"`` divides by the number of rows.

    This is exactly ``torch.nn.functional.cross_entropy`` including the weight + ignore_index +
    label_smoothing interaction (pytorch/pytorch#69339, #73205).  ``z_loss`` = :math:`c` adds the PaLM
    penalty :math:`c\,\log^2 Z_i` (:math:`\log Z = \mathrm{LSE}(x_i)`, Chowdhery et al., "PaLM", 2022) per
    non-ignored row, unweighted by ``weight`` and averaged over non-ignored rows for ``"mean"``; it reuses the
    log-sum-exp of the softmax (no extra pass), and its gradient :math:`2c\,\mathrm{LSE}\cdot\mathrm{softmax}`
    is fused into the backward.  The integer target gets no gradient; a probability target does.  When
    :math:`c\,\log^2 Z` itself overflows the dtype (logits near 1e19 in float32 for c = 1e-4), the loss has
    no finite value and a ``ValueError`` says so.

    Parameters
    ----------
    logits : array
        Unnormalised scores (or log-probabilities with ``from_log_probs=True``, then this is
        ``nll_loss``).
    target : array
        Integer class indices of shape ``logits`` without the class axis, or float probabilities of the
        shape of ``logits``.
    weight : array, optional
        Class weights, shape ``(C,)``.
    axis : int
        Class axis (default 1, torch's layout).
    ignore_index : int
        Target value that contributes nothing (integer targets).
    label_smoothing : float
        :math:`\varepsilon \in [0, 1]`.
    reduction : {"mean", "sum", "none"}
        How per-sample losses are combined.
    z_loss : float
        Coefficient of the :math:`\log^2 Z` penalty (PaLM uses 1e-4).
    from_log_probs : bool
        ``logits`` already are log-probabilities (``z_loss`` must then be 0).

    Returns
    -------
    array
        Scalar, or per-sample losses for ``reduction="none"``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import cross_entropy
    >>> x = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> round(float(cross_entropy(x, np.array([0, 2]))), 6)
    0.669079
    """
    return cross_entropy_fwd(logits, target, weight, axis=axis, ignore_index=ignore_index,
                             label_smoothing=label_smoothing, reduction=reduction, z_loss=z_loss,
                             from_log_probs=from_log_probs)[0]


def cross_entropy_fwd(logits, target, weight=None, *, axis=1, ignore_index=-100, label_smoothing=0.0,
                      reduction="mean", z_loss=0.0, from_log_probs=False):
    xp = compat.array_namespace(logits, target, weight)
    ax = _class_axis(logits, axis)
    c = logits.shape[ax]
    if from_log_probs and z_loss:
        raise ValueError("z_loss must be 0 with from_log_probs=True (the log-normaliser of log-probabilities is 0)")
    if weight is not None and tuple(weight.shape) != (c,):
        raise ValueError(f"weight has shape {tuple(weight.shape)}, expected ({c},) (one per class of logits)")
    integer = _is_int(target)
    if integer:
        _check_labels(target, logits, ax, ignore_index)
    else:
        if not compat.is_floating(target):
            raise TypeError(f"cross_entropy: target must hold integer class indices or float probabilities, got "
                            f"{target.dtype}")
        if tuple(target.shape) != tuple(logits.shape):
            raise ValueError(f"target (probabilities) has shape {tuple(target.shape)}, expected the shape of logits "
                             f"{tuple(logits.shape)}")
    loss, res = _ce(logits, target, weight, ax=ax, c=c, eps=float(label_smoothing), zc=float(z_loss),
                    ignore_index=ignore_index, reduction=reduction, from_log_probs=from_log_probs, integer=integer,
                    xp=xp)
    _check_z_finite(loss, res, xp)
    return loss, res


def cross_entropy_bwd(res, dy):
    if isinstance(res, CrossEntropyFusedRes):
        return _ce_fused_bwd(res, dy)
    lp = res.lp
    xp = compat.array_namespace(lp)
    ct = lp.dtype
    c, eps, zc, red = res.c, res.eps, res.zc, res.reduction
    g = compat.cast(dy, ct, xp)
    wc1 = compat.full((c,), 1.0, like=lp) if res.weight is None else res.weight
    # per-row upstream factors for the CE part and the z part
    if red in ("none", "sum"):
        g_ce = g_z = g
    else:
        g_ce = g / res.denom
        g_z = g / res.nvalid
    dtarget = None
    dweight = None
    if res.integer:
        target, vf = res.target, res.valid
        t0 = xp.where(target != res.ignore_index, target, xp.zeros_like(target))
        onehot = xp.astype(t0[..., None], xp.int64) == compat.arange(c, like=lp, dtype=xp.int64)
        ohf = xp.astype(onehot, ct)
        w_t = xp.sum(ohf * wc1, axis=-1)
        # d L_i / d lp_ic (then chained through log_softmax)
        dlp = -(1.0 - eps) * w_t[..., None] * ohf
        if eps:
            dlp = dlp - (eps / c) * wc1
        dlp = dlp * (vf * (g_ce if red == "none" else 1.0))[..., None]
        if red != "none":
            dlp = dlp * g_ce
        if res.weight is not None:
            lpz = xp.where(ohf > 0, lp, xp.zeros_like(lp))  # avoid 0 * -inf
            dw_rows = -(1.0 - eps) * lpz
            if eps:
                dw_rows = dw_rows - (eps / c) * lp
            dw_rows = dw_rows * vf[..., None]
            if red == "none":
                dweight = xp.sum(xp.reshape(dw_rows * g[..., None], (-1, c)), axis=0)
            else:
                dweight = xp.sum(xp.reshape(dw_rows, (-1, c)), axis=0)
                if red == "mean":
                    # loss = S / D with D = sum_i valid_i w_{t_i}
                    s_num = xp.sum(res.per)
                    dden = xp.sum(xp.reshape(ohf * vf[..., None], (-1, c)), axis=0)
                    dweight = (dweight - s_num / res.denom * dden) / res.denom
                dweight = dweight * g
    else:
        p = res.target
        gce = g_ce[..., None] if red == "none" else g_ce
        pt = (1.0 - eps) * p + eps / c if eps else p
        dlp = -(wc1 * pt) * gce
        dtarget = -(1.0 - eps) * wc1 * lp * gce
        if res.weight is not None:
            dweight = xp.sum(xp.reshape(-pt * lp * gce, (-1, c)), axis=0)
    if res.from_log_probs:
        dx = dlp
    else:
        sm = xp.exp(lp)
        dx = dlp - sm * xp.sum(dlp, axis=-1, keepdims=True)
        if zc:
            zrow = 2.0 * zc * res.lse * (g if red == "none" else g_z)
            if res.valid is not None:
                zrow = zrow * res.valid
            dx = dx + zrow[..., None] * sm
    dx = compat.cast(xp.moveaxis(dx, -1, res.ax), res.dtype, xp)
    if dtarget is not None:
        dtarget = compat.cast(xp.moveaxis(dtarget, -1, res.ax), res.tdtype, xp)
    if dweight is not None:
        dweight = compat.cast(dweight, res.wdtype, xp)
    return dx, dtarget, dweight


def _ce_fused_bwd(res: CrossEntropyFusedRes, dy):
    import numpy as np

    from .._numba import norm as nb

    dt = res.x2.dtype
    c, eps, zc, red = res.c, res.eps, res.zc, res.reduction
    vf, w_t, lse = res.vf, res.w_t, res.lse
    g = np.asarray(dy, dtype=np.float64)
    if red == "none":
        g_ce = g.reshape(-1) * vf
        g_z = g_ce
    elif red == "sum":
        g_ce = g_z = float(g) * vf
    else:
        g_ce = float(g) / res.denom * vf
        g_z = float(g) / res.nvalid * vf
    alpha = g_ce * ((1.0 - eps) * w_t + eps * res.wsum / c)
    if zc:
        alpha = alpha + 2.0 * zc * lse * g_z
    beta = g_ce * (1.0 - eps) * w_t
    gamma = g_ce * (eps / c)
    dx2 = nb.cross_entropy_grad(res.x2, res.t0, lse, alpha, beta, gamma, res.weight)
    moved = list(res.lshape)
    moved.append(moved.pop(res.ax))
    dx = np.moveaxis(dx2.reshape(moved), -1, res.ax)
    dweight = None
    if res.weight is not None:
        t0, x2 = res.t0, res.x2
        lp_t = (res.xt - lse).astype(np.float64)
        rw = g_ce if red == "none" else vf.astype(np.float64)  # per-row factor before the reduction scalar
        dwt = -(1.0 - eps) * np.bincount(t0, weights=rw * lp_t, minlength=c)
        if eps:
            dwt -= eps / c * (x2.T.astype(np.float64) @ rw - (rw * lse).sum())
        if red != "none":
            if red == "mean":
                dden = np.bincount(t0, weights=vf.astype(np.float64), minlength=c)
                dwt = (dwt - res.per.sum(dtype=np.float64) / res.denom * dden) / res.denom
            dwt = dwt * float(g)
        dweight = dwt.astype(res.weight.dtype)
    return dx.astype(dt, copy=False), None, dweight


vjp(cross_entropy, cross_entropy_fwd, cross_entropy_bwd, nondiff_argnums=(), validate=True)


# ============================================================================ nll_loss
@public(log_probs=Float(min_ndim=1), target=ArrayRole(dtype="int", min_ndim=0),
        weight=Float(optional=True, min_ndim=1, max_ndim=1), axis=Int(), ignore_index=Int(),
        reduction=Choice(REDUCTIONS), example=_labels_example(weight=True))
def nll_loss(log_probs: Array, target: Array, weight: Array | None = None, *, axis: int = 1, ignore_index: int = -100,
             reduction: str = "mean") -> Array:
    r"""Negative log-likelihood of integer targets under log-probabilities, torch semantics.

    .. math:: L_i = -w_{t_i}\,\ell_{i, t_i}, \qquad \text{"mean"}: \sum_i L_i \Big/ \sum_{i \text{ not ignored}} w_{t_i},

    with :math:`\ell` the log-probabilities along the class ``axis`` (torch layout ``(N, C, d1, ...)``, classes on
    dim 1; a 1-D input is one sample), class weights :math:`w` (default 1) and rows whose target is
    ``ignore_index`` contributing nothing.  Equal to ``torch.nn.functional.nll_loss`` (values and gradients);
    it is :func:`cross_entropy` with ``from_log_probs=True``, so ``nll_loss(log_softmax(x, axis=1), t)``
    equals ``cross_entropy(x, t)`` (Bishop, "Pattern Recognition and Machine Learning", 2006, sec. 4.3.4).

    Parameters
    ----------
    log_probs : array
        Log-probabilities (e.g. :func:`log_softmax` output), classes along ``axis``.
    target : int array
        Class index per sample: the shape of ``log_probs`` without the class axis, in [0, C) or ``ignore_index``.
    weight : array, optional
        Class weights, shape ``(C,)``.
    axis : int
        Class axis (default 1, torch's layout).
    ignore_index : int
        Target value that contributes nothing.
    reduction : {"mean", "sum", "none"}
        Weighted mean, sum, or per-sample losses.

    Returns
    -------
    array
        Scalar, or per-sample losses for ``reduction="none"``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import nll_loss
    >>> lp = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    >>> round(float(nll_loss(lp, np.array([0, 2]))), 6)
    0.458145
    """
    return nll_loss_fwd(log_probs, target, weight, axis=axis, ignore_index=ignore_index, reduction=reduction)[0]


def nll_loss_fwd(log_probs, target, weight=None, *, axis=1, ignore_index=-100, reduction="mean"):
    return cross_entropy_fwd(log_probs, target, weight, axis=axis, ignore_index=ignore_index, reduction=reduction,
                             from_log_probs=True)


def nll_loss_bwd(res, dy):
    dx, _, dweight = cross_entropy_bwd(res, dy)
    return dx, None, dweight


vjp(nll_loss, nll_loss_fwd, nll_loss_bwd, nondiff_argnums=(1,), validate=True)


# ============================================================================ spherical_z_loss
class SphericalZLossRes(NamedTuple):
    z: Any
    sigma: Any
    zc: Any
    onehot: Any
    t: Any
    a: float
    reduction: str
    n: int
    ax: int
    dtype: Any


@public(logits=Float(min_ndim=1), target=ArrayRole(dtype="int"), a=Positive(), b=Scalar(), eps=Positive(), axis=Int(),
        reduction=Choice(REDUCTIONS),
        example=lambda rng, dtype: (_labels_example()(rng, dtype)[0], {"a": 1.0, "b": 1.0}))
def spherical_z_loss(logits: Array, target: Array, *, a: float, b: float, eps: float = 1e-12, axis: int = 1,
                     reduction: str = "mean") -> Array:
    r"""Z-loss of de Brébisson & Vincent, "An Exploration of Softmax Alternatives Belonging to the Spherical
    Loss Family" (ICLR 2016): a softplus of the target's standardised logit.

    Per row :math:`o \in R^D` with target :math:`c`: :math:`\mu = \mathrm{mean}(o)`,
    :math:`\sigma = \sqrt{\mathrm{var}(o) + \epsilon}` (population variance),
    :math:`z_k = (o_k - \mu)/\sigma`, and

    .. math:: L = \frac{1}{a}\,\mathrm{softplus}\big(a\,(b - z_c)\big)
              = \frac{1}{a}\log\big(1 + e^{a(b - z_c)}\big).

    It is invariant to :math:`o \to \alpha o + \beta` (:math:`\alpha > 0`) up to :math:`\epsilon`, and
    depends only on :math:`\sum o, \sum o^2, o_c`.  The paper tunes :math:`a` and :math:`b` per task, so
    both are required here (no default is claimed to be the paper's).  Not to be confused with the PaLM
    z-loss (``cross_entropy(z_loss=...)``).

    Parameters
    ----------
    logits : array
        Scores, classes along ``axis`` (default 1, torch layout).
    target : array
        Integer class index per row.
    a : float
        Slope (> 0).
    b : float
        Offset (margin in units of the row standard deviation).
    eps : float
        Added to the variance (guards constant rows).
    axis : int
        Class axis.
    reduction : {"mean", "sum", "none"}
        Combination over rows.

    Returns
    -------
    array
        Scalar, or per-row losses.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import spherical_z_loss
    >>> o = np.array([[3.0, 0.0, 0.0]])
    >>> bool(np.isclose(spherical_z_loss(o, np.array([0]), a=1.0, b=1.0),
    ...                 spherical_z_loss(5 * o + 2, np.array([0]), a=1.0, b=1.0)))
    True
    """
    return spherical_z_loss_fwd(logits, target, a=a, b=b, eps=eps, axis=axis, reduction=reduction)[0]


def spherical_z_loss_fwd(logits, target, *, a, b, eps=1e-12, axis=1, reduction="mean"):
    xp = compat.array_namespace(logits, target)
    ax = _class_axis(logits, axis)
    c = logits.shape[ax]
    _check_labels(target, logits, ax)
    ct = compat.compute_dtype(logits, xp)
    o = xp.moveaxis(compat.cast(logits, ct, xp), ax, -1)
    mu = xp.mean(o, axis=-1, keepdims=True)
    d = o - mu
    amax = xp.max(xp.abs(d), axis=-1, keepdims=True)
    scale = xp.where(amax > 1, amax, xp.ones_like(amax))
    ds = d / scale
    sigma = scale * xp.sqrt(xp.mean(ds * ds, axis=-1, keepdims=True) + eps / scale / scale)
    z = d / sigma
    onehot = xp.astype(target[..., None], xp.int64) == compat.arange(c, like=o, dtype=xp.int64)
    zc = xp.sum(xp.where(onehot, z, xp.zeros_like(z)), axis=-1)
    t = a * (b - zc)
    per = xp.logaddexp(xp.zeros_like(t), t) / a
    n = math.prod(per.shape)
    loss = reduce_loss(per, reduction, xp, float(n))
    res = SphericalZLossRes(z, sigma, zc, onehot, t, float(a), reduction, n, ax, logits.dtype)
    return compat.cast(loss, logits.dtype, xp), res


def spherical_z_loss_bwd(res: SphericalZLossRes, dy):
    z = res.z
    xp = compat.array_namespace(z)
    g = compat.cast(dy, z.dtype, xp)
    if res.reduction == "mean":
        g = g / res.n
    s = 1.0 / (1.0 + xp.exp(-res.t))  # sigmoid(a(b - z_c)); dL/dz_c = -s
    dd = z.shape[-1]
    coef = (-s * g)[..., None]
    dx = coef * (xp.astype(res.onehot, z.dtype) - 1.0 / dd - res.zc[..., None] * z / dd) / res.sigma
    return compat.cast(xp.moveaxis(dx, -1, res.ax), res.dtype, xp), None


vjp(spherical_z_loss, spherical_z_loss_fwd, spherical_z_loss_bwd, nondiff_argnums=(1,), validate=True)
