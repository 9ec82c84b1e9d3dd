"""Metric-learning losses: DEXML's decoupled softmax and the normalised (cosine) softmax with margins."""
from __future__ import annotations

import math

from .._lib import compat, ops, validate

__all__ = ["decoupled_softmax_loss", "cosine_softmax_loss"]


def _as(xp, a, dt):
    return a if a is None or a.dtype == dt else xp.astype(a, dt)


def _softplus(u, xp):
    return xp.maximum(u, 0.0) + xp.log1p(xp.exp(-xp.abs(u)))


def _sigmoid(u, xp):
    e = xp.exp(-xp.abs(u))
    return xp.where(u >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _reduce(loss, w, reduction, xp):
    if w is not None:
        loss = loss * w
    if reduction == "none":
        return loss
    return xp.sum(loss) if reduction == "sum" else xp.mean(loss)


def _reduce_bwd(dy, shape, reduction, xp):
    if reduction == "none":
        return dy
    n = math.prod(shape) if shape else 1
    g = dy / n if reduction == "mean" else dy
    return xp.broadcast_to(g, shape) if shape else g


def _check_weights(weights, shape, xp):
    if weights is None:
        return None
    validate.check_float(weights, "weights", xp)
    if tuple(weights.shape) != tuple(shape):
        raise ValueError(f"weights has shape {tuple(weights.shape)}, expected {tuple(shape)} (one per sample)")
    return weights


# ---------------------------------------------------------------- decoupled softmax
def decoupled_softmax_loss(logits, targets, weights=None, *, reduction="mean"):
    """Decoupled softmax loss of DEXML: each positive label competes with the negatives only.

    ::

        Lᵢ = −(1/|Pᵢ|) Σ_{p ∈ Pᵢ} [ s_ip − log( e^{s_ip} + Σ_{n ∉ Pᵢ} e^{s_in} ) ]
           =  (1/|Pᵢ|) Σ_{p ∈ Pᵢ} softplus(LSE_{n ∉ Pᵢ} s_in − s_ip).

    The plain multi-label softmax loss puts the other positives in every denominator, so
    positives compete with each other; decoupling removes that, which matters with many
    positives per row (extreme multi-label classification).  Rows without positives give 0;
    rows without negatives give 0.  VJP: ``∂/∂s_p = −q_p/|P|``, ``∂/∂s_n = r_n Σ_p q_p/|P|`` with
    ``q_p = σ(LSE_neg − s_p)`` and r the softmax over the negatives.

    Gupta, Chen, Hsieh, Dhillon et al., "Dual-Encoders for Extreme Multi-Label Classification"
    (DEXML, ICLR 2024).

    Parameters
    ----------
    logits : array (..., C)
    targets : array (..., C)
        Multi-hot labels (0/1, float or bool); not differentiated.
    weights : array (...), optional
        Per-sample weights (not differentiated).
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    scalar array, or (...) with ``reduction="none"``.

    Examples
    --------
    >>> import numpy as np
    >>> s = np.array([[2.0, 2.0, 0.0]]); t = np.array([[1.0, 1.0, 0.0]])
    >>> round(float(decoupled_softmax_loss(s, t)), 6)     # = log(1 + e^-2): the positives do not compete
    0.126928
    """
    return decoupled_softmax_loss_fwd(logits, targets, weights, reduction=reduction)[0]


def decoupled_softmax_loss_fwd(logits, targets, weights=None, *, reduction="mean"):
    xp = validate.check_same_namespace(logits=logits, targets=targets, weights=weights)
    validate.check_float(logits, "logits", xp)
    if logits.ndim < 1:
        raise ValueError("logits must have shape (..., C)")
    validate.check_array(targets, "targets")
    if tuple(targets.shape) != tuple(logits.shape):
        raise ValueError(f"targets has shape {tuple(targets.shape)}, expected {tuple(logits.shape)} like logits")
    _check_weights(weights, logits.shape[:-1], xp)
    validate.check_in(reduction, ("mean", "sum", "none"), "reduction")
    dt = compat.compute_dtype(logits, xp)
    z = _as(xp, logits, dt)
    t = xp.astype(targets, dt)
    pos = t > 0
    zn = xp.where(pos, -math.inf, z)
    mx = xp.max(zn, axis=-1, keepdims=True)
    mx = xp.where(xp.isfinite(mx), mx, 0.0)
    se = xp.sum(xp.exp(zn - mx), axis=-1, keepdims=True)
    has_neg = se > 0
    lse = xp.where(has_neg, mx + xp.log(xp.where(has_neg, se, 1.0)), -math.inf)
    u = lse - z  # LSE_neg − s
    npos = xp.sum(t, axis=-1, keepdims=True)
    inv = xp.where(npos > 0, 1.0 / xp.where(npos > 0, npos, 1.0), 0.0)
    sp = xp.where(pos & has_neg, _softplus(xp.where(has_neg, u, 0.0), xp), 0.0)
    loss = xp.sum(t * sp, axis=-1) * inv[..., 0]
    w = _as(xp, weights, dt)
    y = _reduce(loss, w, reduction, xp)
    r = xp.where(pos | ~has_neg, 0.0, xp.exp(zn - xp.where(has_neg, lse, 0.0)))
    qn = xp.where(pos & has_neg, _sigmoid(xp.where(has_neg, u, 0.0), xp), 0.0)
    res = (t, qn, r, inv, w, reduction, tuple(loss.shape), logits.dtype)
    return _as(xp, y, logits.dtype), res


def decoupled_softmax_loss_bwd(res, dy):
    t, q, r, inv, w, reduction, lshape, dtype = res
    xp = compat.array_namespace(t)
    g = _reduce_bwd(_as(xp, dy, t.dtype), lshape, reduction, xp)
    if w is not None:
        g = g * w
    g = g[..., None] * inv
    tq = t * q
    dz = g * (-tq + r * xp.sum(tq, axis=-1, keepdims=True))
    return _as(xp, dz, dtype), None, None


ops.register("norm.decoupled_softmax_loss", decoupled_softmax_loss, decoupled_softmax_loss_fwd,
             decoupled_softmax_loss_bwd, nondiff_argnums=(1, 2))


# ---------------------------------------------------------------- cosine softmax
def cosine_softmax_loss(features, weights, labels, *, scale=30.0, margin=0.0, margin_type="additive",
                        reduction="mean", eps=1e-12):
    """Normalised (cosine) softmax cross-entropy with an additive or angular margin on the target.

    ::

        cos θ_{ic} = x̂ᵢᵀŵ_c  (x̂ = x/‖x‖, ŵ = w/‖w‖),   zᵢc = s·cos θ_ic for c ≠ yᵢ,
        z_{i,yᵢ} = s·(cos θ − m)  (additive, CosFace)   or   s·cos(θ + m)  (angular, ArcFace),
        Lᵢ = −log softmax(zᵢ)_{yᵢ}.

    m = 0 is NormFace / the normalised softmax; a larger s sharpens the softmax on the unit
    sphere.  cos(θ + m) = cos θ cos m − sin θ sin m with sin θ = √(1 − cos²θ) (θ ∈ [0, π]; no
    "easy margin" or θ + m > π correction).  The adaptive scale/margin schedules of
    hyperspherical / CFCD (MadaCos) training are left to the caller: ``scale`` and ``margin``
    are plain numbers per call.  VJP: analytic (cross-entropy → margin → normalisation).

    Wang et al., "NormFace" (2017); Wang et al., "CosFace" (CVPR 2018); Deng et al., "ArcFace"
    (CVPR 2019); used for hyperspherical novel-class embeddings and in "Coarse-to-Fine" CFCD.

    Parameters
    ----------
    features : array (N, d)
    weights : array (C, d)
        Class prototypes.
    labels : integer array (N,)
    scale : float > 0
    margin : float >= 0
    margin_type : {"additive", "angular"}
    reduction : {"mean", "sum", "none"}
    eps : float > 0
        Lower bound of the norms.

    Returns
    -------
    scalar array, or (N,) with ``reduction="none"``.
    """
    return cosine_softmax_loss_fwd(features, weights, labels, scale=scale, margin=margin, margin_type=margin_type,
                                   reduction=reduction, eps=eps)[0]


def cosine_softmax_loss_fwd(features, weights, labels, *, scale=30.0, margin=0.0, margin_type="additive",
                            reduction="mean", eps=1e-12):
    xp = validate.check_same_namespace(features=features, weights=weights, labels=labels)
    validate.check_float(features, "features", xp)
    validate.check_float(weights, "weights", xp)
    if features.ndim != 2:
        raise ValueError(f"features must have shape (N, d), got shape {tuple(features.shape)}")
    if weights.ndim != 2 or weights.shape[1] != features.shape[1]:
        raise ValueError(f"weights must have shape (C, {features.shape[1]}), got shape {tuple(weights.shape)}")
    validate.check_array(labels, "labels")
    if compat.is_floating(labels, xp):
        raise TypeError(f"labels must be an integer array, got {labels.dtype}")
    if tuple(labels.shape) != (features.shape[0],):
        raise ValueError(f"labels has shape {tuple(labels.shape)}, expected ({features.shape[0]},)")
    s = validate.check_positive(scale, "scale")
    m = validate.check_nonnegative(margin, "margin")
    validate.check_in(margin_type, ("additive", "angular"), "margin_type")
    validate.check_in(reduction, ("mean", "sum", "none"), "reduction")
    eps = validate.check_positive(eps, "eps")
    C = weights.shape[0]
    if compat.is_concrete(labels) and compat.size(labels):
        lo, hi = int(xp.min(labels)), int(xp.max(labels))
        if lo < 0 or hi >= C:
            raise ValueError(f"labels must be in [0, {C}) (one per class of weights), got values in [{lo}, {hi}]")
    dt = compat.compute_dtype(features, xp)
    x, w = _as(xp, features, dt), _as(xp, weights, dt)
    nx = xp.maximum(xp.sqrt(xp.sum(x * x, axis=-1, keepdims=True)), eps)
    nw = xp.maximum(xp.sqrt(xp.sum(w * w, axis=-1, keepdims=True)), eps)
    xh, wh = x / nx, w / nw
    cos = xp.matmul(xh, xp.matrix_transpose(wh))
    onehot = xp.astype(xp.reshape(labels, (-1, 1)) == xp.reshape(xp.arange(C, dtype=labels.dtype), (1, C)), dt)
    if margin_type == "additive":
        ct = cos - m
        dct = None
    else:
        c1 = xp.clip(cos, -1.0, 1.0)
        sin = xp.sqrt(xp.maximum(1.0 - c1 * c1, 0.0))
        ct = c1 * math.cos(m) - sin * math.sin(m)
        dct = math.cos(m) + math.sin(m) * c1 / xp.maximum(sin, 1e-12)
    z = s * (cos + onehot * (ct - cos))
    mx = xp.max(z, axis=-1, keepdims=True)
    e = xp.exp(z - mx)
    se = xp.sum(e, axis=-1, keepdims=True)
    loss = (mx + xp.log(se))[..., 0] - xp.sum(onehot * z, axis=-1)
    p = e / se
    y = _reduce(loss, None, reduction, xp)
    res = (xh, wh, nx, nw, onehot, p, dct, s, reduction, tuple(loss.shape), features.dtype, weights.dtype)
    return _as(xp, y, features.dtype), res


def cosine_softmax_loss_bwd(res, dy):
    xh, wh, nx, nw, onehot, p, dct, s, reduction, lshape, dtf, dtw = res
    xp = compat.array_namespace(xh)
    g = _reduce_bwd(_as(xp, dy, xh.dtype), lshape, reduction, xp)
    dz = (p - onehot) * g[..., None]
    dcos = s * dz
    if dct is not None:
        dcos = dcos * (1.0 + onehot * (dct - 1.0))
    dxh = xp.matmul(dcos, wh)
    dwh = xp.matmul(xp.matrix_transpose(dcos), xh)
    dx = (dxh - xh * xp.sum(dxh * xh, axis=-1, keepdims=True)) / nx
    dw = (dwh - wh * xp.sum(dwh * wh, axis=-1, keepdims=True)) / nw
    return _as(xp, dx, dtf), _as(xp, dw, dtw), None


ops.register("norm.cosine_softmax_loss", cosine_softmax_loss, cosine_softmax_loss_fwd, cosine_softmax_loss_bwd,
             nondiff_argnums=(2,))
