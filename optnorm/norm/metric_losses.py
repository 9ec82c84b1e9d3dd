"""Metric-learning losses: DEXML's decoupled softmax and the normalised (cosine) softmax with margins."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.roles import Array as ArrayRole, Choice, Float, Labels, NonNegative, Positive
from .._lib.typing import Array
from ._common import REDUCTIONS, reduce_loss, reduce_loss_bwd, safe_norm, sigmoid, softplus


# ---------------------------------------------------------------- decoupled softmax
class DecoupledSoftmaxRes(NamedTuple):
    t: Any
    q: Any
    r: Any
    inv: Any
    w: Any
    reduction: str
    lshape: tuple
    dtype: Any


def _decoupled_example(rng, dtype):
    t = (rng.random((3, 5)) < 0.4).astype(dtype)
    t[:, 0], t[:, 1] = 1, 0
    return (rng.standard_normal((3, 5)).astype(dtype), t, (0.5 + rng.random(3)).astype(dtype)), {}


@public(logits=Float("... c"), targets=ArrayRole("... c", dtype="any", finite=True, sign="nonnegative"),
        weights=Float(optional=True), reduction=Choice(REDUCTIONS), example=_decoupled_example)
def decoupled_softmax_loss(logits: Array, targets: Array, weights: Array | None = None, *,
                           reduction: str = "mean") -> Array:
    r"""Decoupled softmax loss of DEXML: each positive label competes with the negatives only.

    .. math::

        L_i = -\frac{1}{|P_i|} \sum_{p \in P_i} \Bigl[s_{ip} - \log\Bigl(e^{s_{ip}} + \sum_{n \notin P_i}
              e^{s_{in}}\Bigr)\Bigr]
            = \frac{1}{|P_i|} \sum_{p \in P_i} \mathrm{softplus}\Bigl(\operatorname{LSE}_{n \notin P_i} s_{in}
              - s_{ip}\Bigr).

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
    xp = compat.array_namespace(logits, targets, weights)
    if tuple(targets.shape) != tuple(logits.shape):
        raise ValueError(f"targets has shape {tuple(targets.shape)}, expected {tuple(logits.shape)} like logits")
    if weights is not None and tuple(weights.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"weights has shape {tuple(weights.shape)}, expected {tuple(logits.shape[:-1])} (one per "
                         "sample)")
    dt = compat.compute_dtype(logits, xp)
    z = compat.cast(logits, dt, xp)
    t = xp.astype(targets, dt)
    pos = t > 0
    zn = xp.where(pos, -math.inf, z)
    mx = xp.max(zn, axis=-1, keepdims=True)
    mx = xp.where(xp.isfinite(mx), mx, 0.0)
    se = xp.sum(xp.exp(zn - mx), axis=-1, keepdims=True)
    has_neg = se > 0
    lse = xp.where(has_neg, mx + xp.log(xp.where(has_neg, se, 1.0)), -math.inf)
    u = xp.where(has_neg, lse, 0.0) - z  # LSE_neg - s
    npos = xp.sum(t, axis=-1, keepdims=True)
    inv = xp.where(npos > 0, 1.0 / xp.where(npos > 0, npos, 1.0), 0.0)
    sp = xp.where(pos & has_neg, softplus(u, xp), 0.0)
    loss = xp.sum(t * sp, axis=-1) * inv[..., 0]
    w = compat.cast(weights, dt, xp)
    y = reduce_loss(loss if w is None else loss * w, reduction, xp)
    r = xp.where(pos | ~has_neg, 0.0, xp.exp(zn - xp.where(has_neg, lse, 0.0)))
    qn = xp.where(pos & has_neg, sigmoid(u, xp), 0.0)
    res = DecoupledSoftmaxRes(t, qn, r, inv, w, reduction, tuple(loss.shape), logits.dtype)
    return compat.cast(y, logits.dtype, xp), res


def decoupled_softmax_loss_bwd(res: DecoupledSoftmaxRes, dy):
    t = res.t
    xp = compat.array_namespace(t)
    g = reduce_loss_bwd(compat.cast(dy, t.dtype, xp), res.lshape, res.reduction, xp)
    if res.w is not None:
        g = g * res.w
    g = g[..., None] * res.inv
    tq = t * res.q
    dz = g * (-tq + res.r * xp.sum(tq, axis=-1, keepdims=True))
    return compat.cast(dz, res.dtype, xp), None, None


vjp(decoupled_softmax_loss, decoupled_softmax_loss_fwd, decoupled_softmax_loss_bwd, nondiff_argnums=(1, 2),
    validate=True)


# ---------------------------------------------------------------- cosine softmax
class CosineSoftmaxRes(NamedTuple):
    xh: Any
    wh: Any
    nx: Any
    nw: Any
    onehot: Any
    p: Any
    dct: Any
    s: float
    reduction: str
    lshape: tuple
    dtypes: tuple


@public(features=Float("n d"), weights=Float("c d"), labels=Labels("n", classes="c"), scale=Positive(),
        margin=NonNegative(), margin_type=Choice(("additive", "angular")), reduction=Choice(REDUCTIONS),
        eps=Positive())
def cosine_softmax_loss(features: Array, weights: Array, labels: Array, *, scale: float = 30.0, margin: float = 0.0,
                        margin_type: str = "additive", reduction: str = "mean", eps: float = 1e-12) -> Array:
    r"""Normalised (cosine) softmax cross-entropy with an additive or angular margin on the target.

    .. math::

        \cos\theta_{ic} = \hat x_i^\top \hat w_c \quad \Bigl(\hat x = \frac{x}{\lVert x \rVert},\
        \hat w = \frac{w}{\lVert w \rVert}\Bigr), \qquad z_{ic} = s \cos\theta_{ic} \ \ (c \ne y_i),

        z_{i y_i} = s\,(\cos\theta_{i y_i} - m) \ \ \text{(additive, CosFace)} \quad \text{or} \quad
        s \cos(\theta_{i y_i} + m) \ \ \text{(angular, ArcFace)}, \qquad
        L_i = -\log \mathrm{softmax}(z_i)_{y_i}.


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

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[2.0, 0.0], [0.0, 3.0]])
    >>> w = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> labels = np.array([0, 1])
    >>> np.round(cosine_softmax_loss(x, w, labels, scale=1.0, reduction="none"), 4)   # log(1 + e^-1)
    array([0.3133, 0.3133])
    >>> np.round(cosine_softmax_loss(x, w, labels, scale=1.0, margin=0.5, reduction="none"), 4)
    array([0.4741, 0.4741])
    """

    return cosine_softmax_loss_fwd(features, weights, labels, scale=scale, margin=margin, margin_type=margin_type,
                                   reduction=reduction, eps=eps)[0]


def cosine_softmax_loss_fwd(features, weights, labels, *, scale=30.0, margin=0.0, margin_type="additive",
                            reduction="mean", eps=1e-12):
    xp = compat.array_namespace(features, weights, labels)
    s, m = float(scale), float(margin)
    C = weights.shape[0]
    dt = compat.compute_dtype(features, xp)
    x, w = compat.cast(features, dt, xp), compat.cast(weights, dt, xp)
    nx = xp.maximum(safe_norm(x, -1, xp), eps)
    nw = xp.maximum(safe_norm(w, -1, xp), eps)
    xh, wh = x / nx, w / nw
    cos = xp.matmul(xh, xp.matrix_transpose(wh))
    onehot = xp.astype(xp.reshape(labels, (-1, 1)) == xp.reshape(compat.arange(C, like=labels, dtype=labels.dtype),
                                                                 (1, C)), dt)
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
    y = reduce_loss(loss, reduction, xp)
    res = CosineSoftmaxRes(xh, wh, nx, nw, onehot, p, dct, s, reduction, tuple(loss.shape),
                           (features.dtype, weights.dtype))
    return compat.cast(y, features.dtype, xp), res


def cosine_softmax_loss_bwd(res: CosineSoftmaxRes, dy):
    xh, wh = res.xh, res.wh
    xp = compat.array_namespace(xh)
    g = reduce_loss_bwd(compat.cast(dy, xh.dtype, xp), res.lshape, res.reduction, xp)
    dz = (res.p - res.onehot) * g[..., None]
    dcos = res.s * dz
    if res.dct is not None:
        dcos = dcos * (1.0 + res.onehot * (res.dct - 1.0))
    dxh = xp.matmul(dcos, wh)
    dwh = xp.matmul(xp.matrix_transpose(dcos), xh)
    dx = (dxh - xh * xp.sum(dxh * xh, axis=-1, keepdims=True)) / res.nx
    dw = (dwh - wh * xp.sum(dwh * wh, axis=-1, keepdims=True)) / res.nw
    return compat.cast(dx, res.dtypes[0], xp), compat.cast(dw, res.dtypes[1], xp), None


vjp(cosine_softmax_loss, cosine_softmax_loss_fwd, cosine_softmax_loss_bwd, nondiff_argnums=(2,), validate=True)
