"""Classification losses on logits: cross_entropy (torch semantics + fused PaLM z-loss), spherical_z_loss."""
from __future__ import annotations

import math

from .._lib import compat, ops, validate
from .._lib.dispatch import Dispatcher, numpy_float

__all__ = ["cross_entropy", "spherical_z_loss"]

REDUCTIONS = ("mean", "sum", "none")


def _to(xp, a, dt):
    return a if a.dtype == dt else xp.astype(a, dt)


def _is_int(t, xp) -> bool:
    if compat.is_torch(t):
        return not t.dtype.is_floating_point and not t.dtype.is_complex and t.dtype != compat._torch().bool
    return xp.isdtype(t.dtype, "integral")


def _class_axis(logits, axis):
    if logits.ndim == 1 and axis == 1:  # torch: a 1-D input is a single sample, classes on dim 0
        return 0
    return validate.check_axis(axis, logits.ndim, "axis")


def _reduce(xp, per, reduction, denom):
    if reduction == "none":
        return per
    s = xp.sum(per)
    return s if reduction == "sum" else s / denom


# ============================================================================ cross_entropy
def cross_entropy(logits, target, weight=None, *, axis=1, ignore_index=-100, label_smoothing=0.0,
                  reduction="mean", z_loss=0.0, from_log_probs=False):
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
    is fused into the backward.  The integer target gets no gradient; a probability target does.

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


def _check_ce(logits, target, weight, axis, ignore_index, label_smoothing, reduction, z_loss, from_log_probs, xp):
    validate.check_same_namespace(logits=logits, target=target, weight=weight)
    validate.check_float(logits, "logits")
    validate.check_array(target, "target")
    if logits.ndim == 0:
        raise ValueError("logits must have at least one dimension (the classes)")
    ax = _class_axis(logits, axis)
    validate.check_nonempty(logits, "logits", ax)
    c = logits.shape[ax]
    validate.check_in(reduction, REDUCTIONS, "reduction")
    eps = validate.check_unit_interval(label_smoothing, "label_smoothing", closed_right=True)
    zc = validate.check_nonnegative(z_loss, "z_loss")
    if from_log_probs and zc:
        raise ValueError("z_loss must be 0 with from_log_probs=True (the log-normaliser of log-probabilities is 0)")
    if weight is not None:
        validate.check_float(weight, "weight")
        validate.check_shape(weight, (c,), "weight")
    integer = _is_int(target, xp)
    if integer:
        validate.check_int(ignore_index, "ignore_index")
        want = tuple(s for i, s in enumerate(logits.shape) if i != ax)
        if tuple(target.shape) != want:
            raise ValueError(f"target has shape {tuple(target.shape)}, expected {want} (logits without the class axis)")
        if compat.is_concrete(target) and compat.size(target):
            bad = (target != ignore_index) & ((target < 0) | (target >= c))
            if bool(xp.any(bad)):
                raise ValueError(f"target has class indices outside [0, {c}) that are not ignore_index={ignore_index}")
    else:
        if not compat.is_floating(target, xp):
            raise TypeError(f"target must hold integer class indices or float probabilities, got {target.dtype}")
        if tuple(target.shape) != tuple(logits.shape):
            raise ValueError(f"target (probabilities) has shape {tuple(target.shape)}, expected the shape of logits "
                             f"{tuple(logits.shape)}")
    return ax, c, eps, zc, integer


def cross_entropy_fwd(logits, target, weight=None, *, axis=1, ignore_index=-100, label_smoothing=0.0,
                      reduction="mean", z_loss=0.0, from_log_probs=False):
    validate.check_array(logits, "logits")
    validate.check_array(target, "target")
    xp = compat.array_namespace(logits, target, weight)
    ax, c, eps, zc, integer = _check_ce(logits, target, weight, axis, ignore_index, label_smoothing, reduction,
                                        z_loss, from_log_probs, xp)
    if integer and not from_log_probs:
        fast = _ce_fast(logits, target, weight, ax=ax, c=c, eps=eps, zc=zc, ignore_index=ignore_index,
                        reduction=reduction)
        if fast is not None:
            return fast
    ct = compat.compute_dtype(logits, xp)
    x = xp.moveaxis(_to(xp, logits, ct), ax, -1)  # (..., C)
    dev = compat.device(x)
    w = None if weight is None else _to(xp, weight, ct)
    if from_log_probs:
        lp, lse = x, None
    else:  # one log-sum-exp per row gives both the log-probabilities and the z-loss term
        m = xp.max(x, axis=-1, keepdims=True)
        lse_k = m + xp.log(xp.sum(xp.exp(x - m), axis=-1, keepdims=True))
        lp = x - lse_k
        lse = lse_k[..., 0]
    wc = xp.ones((c,), dtype=ct, device=dev) if w is None else w
    wsum = xp.sum(wc)
    if integer:
        valid = target != ignore_index
        t0 = xp.where(valid, target, xp.zeros_like(target))
        onehot = xp.astype(t0[..., None], xp.int64) == xp.arange(c, dtype=xp.int64, device=dev)
        lp_t = xp.sum(xp.where(onehot, lp, xp.zeros_like(lp)), axis=-1)
        w_t = xp.sum(xp.where(onehot, wc, xp.zeros_like(lp)), axis=-1)
        vf = xp.astype(valid, ct)
        smooth = -xp.sum(lp * wc, axis=-1) / c if eps else None
        per = -(1.0 - eps) * w_t * lp_t
        if eps:
            per = per + eps * smooth
        per = xp.where(valid, per, xp.zeros_like(per))
        denom = xp.sum(w_t * vf)
        nvalid = xp.sum(vf)
        n_rows = None
    else:
        p = _to(xp, xp.moveaxis(target, ax, -1), ct)
        pt = (1.0 - eps) * p + eps / c if eps else p
        per = -xp.sum(wc * pt * lp, axis=-1)
        vf = None
        n_rows = math.prod(per.shape)
        denom = nvalid = float(n_rows)
    loss = _reduce(xp, per, reduction, denom)
    zper = None
    if zc:
        zper = zc * lse * lse
        if vf is not None:
            zper = zper * vf
        loss = loss + _reduce(xp, zper, reduction, nvalid)
    res = dict(lp=lp, target=target if integer else p, integer=integer, weight=w, has_weight=weight is not None,
               ax=ax, c=c, eps=eps, zc=zc, lse=lse, reduction=reduction, denom=denom, nvalid=nvalid,
               from_log_probs=from_log_probs, valid=vf, wsum=wsum, per=per, dtype=logits.dtype,
               tdtype=target.dtype, wdtype=None if weight is None else weight.dtype, ignore_index=ignore_index)
    return _to(xp, loss, logits.dtype), res


def cross_entropy_bwd(res, dy):
    if res.get("fast"):
        return _ce_fast_bwd(res, dy)
    lp = res["lp"]
    xp = compat.array_namespace(lp)
    ct = lp.dtype
    c, eps, zc, red = res["c"], res["eps"], res["zc"], res["reduction"]
    g = _to(xp, dy, ct)
    wc = res["weight"]
    wc1 = xp.ones((c,), dtype=ct, device=compat.device(lp)) if wc is None else wc
    # per-row upstream factors for the CE part and the z part
    if red == "none":
        g_ce = g
        g_z = g
    elif red == "sum":
        g_ce = g_z = g
    else:
        g_ce = g / res["denom"]
        g_z = g / res["nvalid"]
    dtarget = None
    dweight = None
    if res["integer"]:
        target = res["target"]
        vf = res["valid"]
        t0 = xp.where(target != res["ignore_index"], target, xp.zeros_like(target))
        onehot = xp.astype(t0[..., None], xp.int64) == xp.arange(c, dtype=xp.int64, device=compat.device(lp))
        ohf = xp.astype(onehot, ct)
        w_t = xp.sum(ohf * wc1, axis=-1)
        # d L_i / d lp_ic (then chained through log_softmax)
        dlp = -(1.0 - eps) * w_t[..., None] * ohf
        if eps:
            dlp = dlp - (eps / c) * wc1
        dlp = dlp * (vf * (g_ce if red == "none" else 1.0))[..., None]
        if red != "none":
            dlp = dlp * g_ce
        if res["has_weight"]:
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
                    s_num = xp.sum(res["per"])
                    dden = xp.sum(xp.reshape(ohf * vf[..., None], (-1, c)), axis=0)
                    dweight = (dweight - s_num / res["denom"] * dden) / res["denom"]
                dweight = dweight * g
    else:
        p = res["target"]
        gce = g_ce[..., None] if red == "none" else g_ce
        dlp = -(wc1 * ((1.0 - eps) * p + eps / c if eps else p)) * gce
        dtarget = -(1.0 - eps) * wc1 * lp * gce
        if res["has_weight"]:
            pt = (1.0 - eps) * p + eps / c if eps else p
            dweight = xp.sum(xp.reshape(-pt * lp * gce, (-1, c)), axis=0)
    if res["from_log_probs"]:
        dx = dlp
    else:
        sm = xp.exp(lp)
        dx = dlp - sm * xp.sum(dlp, axis=-1, keepdims=True)
        if zc:
            gz = g_z if red != "none" else g
            zrow = 2.0 * zc * res["lse"] * gz
            if res["valid"] is not None:
                zrow = zrow * res["valid"]
            dx = dx + zrow[..., None] * sm
    dx = xp.moveaxis(dx, -1, res["ax"])
    dx = _to(xp, dx, res["dtype"])
    if dtarget is not None:
        dtarget = _to(xp, xp.moveaxis(dtarget, -1, res["ax"]), res["tdtype"])
    if dweight is not None:
        dweight = _to(xp, dweight, res["wdtype"])
    return dx, dtarget, dweight


# ---------------------------------------------------------------------------- fused Numba path (integer targets)
_ce_fast = Dispatcher("norm.cross_entropy_fused")


@_ce_fast.generic
def _ce_not_fused(logits, target, weight, **kw):
    return None  # the generic body in cross_entropy_fwd handles it


@_ce_fast.numba(when=lambda logits, target, weight, **kw: numpy_float(logits, weight)
                and compat.is_numpy(target))
def _ce_fused(logits, target, weight, *, ax, c, eps, zc, ignore_index, reduction):
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
    zper = (zc * lse * lse * vf).astype(dt, copy=False) if zc else None
    shape = tuple(target.shape)
    if reduction == "none":
        loss = per + zper if zc else per
        loss = loss.reshape(shape).astype(dt, copy=False)
    else:
        tot = per.sum(dtype=np.float64)
        ztot = zper.sum(dtype=np.float64) if zc else 0.0
        if reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                loss = tot / denom + (ztot / nvalid if zc else 0.0)
        else:
            loss = tot + ztot
        loss = np.asarray(loss, dtype=dt)
    res = dict(fast=True, x2=x2, t0=t0, vf=vf, w_t=w_t, lse=lse, xt=xt, weight=weight, wc=wc, wsum=wsum, c=c,
               eps=eps, zc=zc, reduction=reduction, denom=denom, nvalid=nvalid, per=per, shape=shape,
               lshape=tuple(logits.shape), ax=ax, dtype=dt)
    return loss, res


def _ce_fast_bwd(res, dy):
    import numpy as np

    from .._numba import norm as nb

    dt, c, eps, zc, red = res["dtype"], res["c"], res["eps"], res["zc"], res["reduction"]
    vf, w_t, lse = res["vf"], res["w_t"], res["lse"]
    g = np.asarray(dy, dtype=np.float64)
    if red == "none":
        g_ce = g.reshape(-1) * vf
        g_z = g_ce
    elif red == "sum":
        g_ce = g_z = float(g) * vf
    else:
        g_ce = float(g) / res["denom"] * vf
        g_z = float(g) / res["nvalid"] * vf
    alpha = g_ce * ((1.0 - eps) * w_t + eps * res["wsum"] / c)
    if zc:
        alpha = alpha + 2.0 * zc * lse * g_z
    beta = g_ce * (1.0 - eps) * w_t
    gamma = g_ce * (eps / c)
    dx2 = nb.cross_entropy_grad(res["x2"], res["t0"], lse, alpha, beta, gamma, res["weight"])
    moved = list(res["lshape"])
    moved.append(moved.pop(res["ax"]))
    dx = np.moveaxis(dx2.reshape(moved), -1, res["ax"])
    dweight = None
    if res["weight"] is not None:
        t0 = res["t0"]
        x2 = res["x2"]
        lp_t = (res["xt"] - lse).astype(np.float64)
        rw = g_ce if red == "none" else vf.astype(np.float64)  # per-row factor before the reduction scalar
        dwt = -(1.0 - eps) * np.bincount(t0, weights=rw * lp_t, minlength=c)
        if eps:
            dwt -= eps / c * (x2.T.astype(np.float64) @ rw - (rw * lse).sum())
        if red != "none":
            if red == "mean":
                dden = np.bincount(t0, weights=vf.astype(np.float64), minlength=c)
                dwt = (dwt - res["per"].sum(dtype=np.float64) / res["denom"] * dden) / res["denom"]
            dwt = dwt * float(g)
        dweight = dwt.astype(res["weight"].dtype)
    return dx, None, dweight


ops.register("norm.cross_entropy", cross_entropy, cross_entropy_fwd, cross_entropy_bwd)


# ============================================================================ spherical_z_loss
def spherical_z_loss(logits, target, *, a, b, eps=1e-12, axis=1, reduction="mean"):
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
    validate.check_array(logits, "logits")
    validate.check_array(target, "target")
    xp = compat.array_namespace(logits, target)
    validate.check_same_namespace(logits=logits, target=target)
    validate.check_float(logits, "logits")
    validate.check_array(target, "target")
    if not _is_int(target, xp):
        raise TypeError(f"target must hold integer class indices, got {target.dtype}")
    if logits.ndim == 0:
        raise ValueError("logits must have at least one dimension (the classes)")
    ax = _class_axis(logits, axis)
    validate.check_nonempty(logits, "logits", ax)
    a = validate.check_positive(a, "a")
    b = float(validate._real(b, "b"))
    eps = validate.check_positive(eps, "eps")
    validate.check_in(reduction, REDUCTIONS, "reduction")
    c = logits.shape[ax]
    want = tuple(s for i, s in enumerate(logits.shape) if i != ax)
    if tuple(target.shape) != want:
        raise ValueError(f"target has shape {tuple(target.shape)}, expected {want} (logits without the class axis)")
    if compat.is_concrete(target) and compat.size(target) and bool(xp.any((target < 0) | (target >= c))):
        raise ValueError(f"target has class indices outside [0, {c})")
    ct = compat.compute_dtype(logits, xp)
    o = xp.moveaxis(_to(xp, logits, ct), ax, -1)
    mu = xp.mean(o, axis=-1, keepdims=True)
    d = o - mu
    amax = xp.max(xp.abs(d), axis=-1, keepdims=True)
    scale = xp.where(amax > 1, amax, xp.ones_like(amax))
    ds = d / scale
    sigma = scale * xp.sqrt(xp.mean(ds * ds, axis=-1, keepdims=True) + eps / scale / scale)
    z = d / sigma
    onehot = xp.astype(target[..., None], xp.int64) == xp.arange(c, dtype=xp.int64, device=compat.device(o))
    zc = xp.sum(xp.where(onehot, z, xp.zeros_like(z)), axis=-1)
    t = a * (b - zc)
    per = xp.logaddexp(xp.zeros_like(t), t) / a
    n = math.prod(per.shape)
    loss = _reduce(xp, per, reduction, float(n))
    res = (z, sigma, zc, onehot, t, a, reduction, n, ax, logits.dtype)
    return _to(xp, loss, logits.dtype), res


def spherical_z_loss_bwd(res, dy):
    z, sigma, zc, onehot, t, a, reduction, n, ax, dtype = res
    xp = compat.array_namespace(z)
    ct = z.dtype
    g = _to(xp, dy, ct)
    if reduction == "mean":
        g = g / n
    s = 1.0 / (1.0 + xp.exp(-t))  # sigmoid(a(b - z_c)); dL/dz_c = -s
    dd = z.shape[-1]
    coef = (-s * (g if reduction != "none" else g))[..., None]
    dx = coef * (xp.astype(onehot, ct) - 1.0 / dd - zc[..., None] * z / dd) / sigma
    return _to(xp, xp.moveaxis(dx, -1, ax), dtype), None


ops.register("norm.spherical_z_loss", spherical_z_loss, spherical_z_loss_fwd, spherical_z_loss_bwd)
