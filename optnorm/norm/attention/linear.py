"""Linear-time attention: linear attention (Katharopoulos), NaLa (norm-aware), MALA (magnitude-aware) and InLine
(injective, normalised by subtraction).  None builds an ``n x m`` matrix: non-causal forms keep a ``d x d_v``
state, causal linear attention runs in chunks (a masked product within a chunk, the carried state across
chunks), causal InLine uses prefix sums."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..._lib import compat
from ..._lib.api import public, vjp
from ..._lib.roles import Bool, Choice, Int, NonNegative, Positive
from ..._lib.typing import Array
from .._common import safe_norm
from ._common import (QKV, QKVMeta, check_causal, cumsum, feat, feat_grad, finish_grads, la_core_bwd, la_core_fwd,
                      mT, prepare_qkv, qkv_example, revcumsum)


def _square_example(rng, dtype):
    return qkv_example(rng, dtype, n=5, m=5)


# ---------------------------------------------------------------------------------------------- linear attention
class LinearAttentionRes(NamedTuple):
    qc: Any
    kc: Any
    vc: Any
    a: Any
    b: Any
    o: Any
    den: Any
    feature_map: str
    causal: bool
    chunk: int
    meta: QKVMeta


@public(**QKV, feature_map=Choice(("elu1", "relu")), causal=Bool(), eps=NonNegative(), chunk_size=Int(1),
        example=_square_example)
def linear_attention(q: Array, k: Array, v: Array, *, feature_map: str = "elu1", causal: bool = False,
                     eps: float = 1e-6, chunk_size: int = 64) -> Array:
    r"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs").

    .. math::

        O_i = \frac{\varphi(q_i)^\top S}{\varphi(q_i)^\top z + \epsilon}, \qquad
        S = \sum_j \varphi(k_j)\, v_j^\top, \qquad z = \sum_j \varphi(k_j)

    (:math:`j \le i` when causal), :math:`\varphi(x) = \mathrm{elu}(x) + 1` (``feature_map="elu1"``) or
    :math:`\mathrm{relu}(x)`.  Memory is
    ``O(n (d + d_v) + d d_v)``: causal attention runs over chunks of ``chunk_size`` (a masked product inside a
    chunk, the running state across chunks), in the forward and in the VJP (which recomputes the states rather
    than storing one per position).

    Parameters
    ----------
    q : array (..., n, d)
    k : array (..., m, d)
    v : array (..., m, dv)
    feature_map : {"elu1", "relu"}
    causal : bool
        Requires n == m.
    eps : float >= 0
        Added to the denominator (1e-6).
    chunk_size : int

    Returns
    -------
    array (..., n, dv)

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(0)
    >>> q, k, v = r.standard_normal((3, 6, 4)), r.standard_normal((3, 6, 4)), r.standard_normal((3, 6, 2))
    >>> linear_attention(q, k, v, causal=True).shape
    (3, 6, 2)
    """
    return linear_attention_fwd(q, k, v, feature_map=feature_map, causal=causal, eps=eps, chunk_size=chunk_size)[0]


def linear_attention_fwd(q, k, v, *, feature_map="elu1", causal=False, eps=1e-6, chunk_size=64):
    xp = compat.array_namespace(q, k, v)
    check_causal(q, k, causal)
    qc, kc, vc, meta = prepare_qkv(q, k, v, xp)
    a, b = feat(qc, feature_map, xp), feat(kc, feature_map, xp)
    o, den = la_core_fwd(a, b, vc, causal=causal, eps=float(eps), chunk=chunk_size, xp=xp)
    res = LinearAttentionRes(qc, kc, vc, a, b, o, den, feature_map, causal, chunk_size, meta)
    return compat.cast(o, meta.dtype, xp), res


def linear_attention_bwd(res: LinearAttentionRes, dy):
    xp = compat.array_namespace(res.o)
    g = compat.cast(dy, res.o.dtype, xp)
    da, db, dv = la_core_bwd(res.a, res.b, res.vc, res.o, res.den, g, causal=res.causal, chunk=res.chunk, xp=xp)
    fm = res.feature_map
    return finish_grads(res.meta, (da * feat_grad(res.qc, fm, xp), db * feat_grad(res.kc, fm, xp), dv), xp)


vjp(linear_attention, linear_attention_fwd, linear_attention_bwd, validate=True)


# ---------------------------------------------------------------------------------------------- NaLa
class NalaRes(NamedTuple):
    qc: Any
    kc: Any
    vc: Any
    a: Any
    b: Any
    o: Any
    den: Any
    qn: Any
    th: Any
    p: Any
    nn: Any
    t: Any
    tp: Any
    pos: Any
    N: int
    ck: Any          # the scale of k: the key features are (k / ck)^3
    causal: bool
    chunk: int
    meta: QKVMeta


@public(**QKV, causal=Bool(), eps=NonNegative(), norm_eps=Positive(), chunk_size=Int(1), example=_square_example)
def nala_attention(q: Array, k: Array, v: Array, *, causal: bool = False, eps: float = 1e-6, norm_eps: float = 1e-6,
                   chunk_size: int = 64) -> Array:
    r"""NaLa: norm-aware linear attention (NaLaFormer), without RoPE.

    Per query, with :math:`\lVert q \rVert` its L2 norm and the norm-aware power
    :math:`p = 3\,(0.5 + \tanh \lVert q \rVert)` in (1.5, 4.5):

    .. math::

        \varphi(q) = \Bigl[\mathrm{relu}\Bigl(\frac{q}{\lVert q \rVert}\Bigr)^{p},
                           \mathrm{relu}\Bigl(\frac{-q}{\lVert q \rVert}\Bigr)^{p}\Bigr] \quad (2d \text{ features}),
        \qquad \varphi(k) = \bigl[\mathrm{relu}(k^3), \mathrm{relu}(-k^3)\bigr],

        O_i = \frac{\varphi(q_i)^\top \frac1N \sum_j \varphi(k_j)\, v_j^\top}
                   {\varphi(q_i)^\top \frac1N \sum_j \varphi(k_j) + \epsilon}

    so sign halves pair (q+ with k+, q- with k-) and the query norm sets the sharpness.  From the official code
    (``ZacharyMeng/NaLaFormer``, ``NormAwareLinearAttn``), with two documented differences: RoPE (applied there
    to the numerator only) is **omitted**, so rows sum exactly to 1 (up to eps); ``norm_eps`` is added to
    ``||q||`` (the code divides by ``||q||`` and gives 0/0 for a zero query).  The key features are formed in
    units of the largest ``|k|`` (with ``eps`` rescaled to match), so keys up to the dtype's range are fine.
    LePE, the gate and the projections are outside this function.  ``causal=True`` restricts j <= i (the 1/N
    factor stays N = n).
    Meng et al. (ICML 2026), "Norm x Direction: Restoring the Missing Query Norm in Vision Linear Attention"
    (NaLaFormer).

    Parameters
    ----------
    q : array (..., n, d)
    k : array (..., m, d)
    v : array (..., m, dv)
    causal : bool
    eps : float >= 0
        Denominator epsilon (1e-6, as the code).
    norm_eps : float > 0
    chunk_size : int
        Chunk length of the causal form.

    Returns
    -------
    array (..., n, dv)

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(0)
    >>> nala_attention(r.standard_normal((5, 4)), r.standard_normal((5, 4)), r.standard_normal((5, 2))).shape
    (5, 2)
    """
    return nala_attention_fwd(q, k, v, causal=causal, eps=eps, norm_eps=norm_eps, chunk_size=chunk_size)[0]


def nala_attention_fwd(q, k, v, *, causal=False, eps=1e-6, norm_eps=1e-6, chunk_size=64):
    xp = compat.array_namespace(q, k, v)
    check_causal(q, k, causal)
    qc, kc, vc, meta = prepare_qkv(q, k, v, xp)
    N = kc.shape[-2]
    qn = safe_norm(qc, -1, xp)
    th = xp.tanh(qn)
    p = 3.0 * (0.5 + th)
    nn = qn + norm_eps
    u = qc / nn
    t = xp.abs(u)
    tp = xp.where(t > 0, xp.exp(p * xp.log(xp.where(t > 0, t, xp.ones_like(t)))), xp.zeros_like(t))
    pos = u > 0
    z0 = xp.zeros_like(tp)
    a = xp.concat([xp.where(pos, tp, z0), xp.where(u < 0, tp, z0)], axis=-1)
    # O is unchanged when every key feature and eps are divided by ck^3: ck = max |k| keeps k^3 finite
    ck = xp.max(xp.abs(kc))
    ck = xp.where(ck > 0, ck, xp.ones_like(ck))
    kn = kc / ck
    kk = kn * kn * kn
    zk = xp.zeros_like(kk)
    b = xp.concat([xp.maximum(kk, zk), xp.maximum(-kk, zk)], axis=-1) / N
    with np.errstate(over="ignore"):       # eps / ck^3 -> inf for tiny keys: O -> 0, as it should
        eps_s = ((float(eps) / ck) / ck) / ck
    o, den = la_core_fwd(a, b, vc, causal=causal, eps=eps_s, chunk=chunk_size, xp=xp)
    res = NalaRes(qc, kc, vc, a, b, o, den, qn, th, p, nn, t, tp, pos, N, ck, causal, chunk_size, meta)
    return compat.cast(o, meta.dtype, xp), res


def nala_attention_bwd(res: NalaRes, dy):
    qc, kc, o = res.qc, res.kc, res.o
    xp = compat.array_namespace(o)
    g = compat.cast(dy, o.dtype, xp)
    da, db, dv = la_core_bwd(res.a, res.b, res.vc, o, res.den, g, causal=res.causal, chunk=res.chunk, xp=xp)
    p, th, nn, t, tp, pos, qn = res.p, res.th, res.nn, res.t, res.tp, res.pos, res.qn
    d = qc.shape[-1]
    da1, da2 = da[..., :d], da[..., d:]
    neg = qc < 0
    z0 = xp.zeros_like(da1)
    ga = xp.where(pos, da1, xp.where(neg, da2, z0))          # cotangent of t^p per element
    tsafe = xp.where(t > 0, t, xp.ones_like(t))
    dt_ = xp.where(t > 0, ga * p * tp / tsafe, z0)             # d/dt of t^p = p t^(p-1)
    dp = xp.sum(xp.where(t > 0, ga * tp * xp.log(tsafe), z0), axis=-1, keepdims=True)
    sgn = xp.sign(qc)
    qs = xp.where(qn > 0, qn, xp.ones_like(qn))
    # t = |q| / (||q|| + norm_eps);  p = 3 (0.5 + tanh ||q||)
    dq = sgn * dt_ / nn
    dq = dq - xp.sum(dt_ * xp.abs(qc), axis=-1, keepdims=True) / (nn * nn) * qc / qs
    dq = dq + dp * 3.0 * (1.0 - th * th) * qc / qs
    # b = [relu(kn^3), relu(-kn^3)] / N with kn = k / ck (ck a constant: O does not depend on it)
    kn = kc / res.ck
    kk = kn * kn * kn
    db = db / res.N
    dkk = xp.where(kk > 0, db[..., :d], xp.where(kk < 0, -db[..., d:], xp.zeros_like(kk)))
    dk = 3.0 * kn * kn * dkk / res.ck
    return finish_grads(res.meta, (dq, dk, dv), xp)


vjp(nala_attention, nala_attention_fwd, nala_attention_bwd, validate=True)


# ---------------------------------------------------------------------------------------------- MALA
class MalaRes(NamedTuple):
    qc: Any
    kc: Any
    vc: Any
    a: Any
    b: Any
    S: Any
    z: Any
    num: Any
    zi: Any
    vbar: Any
    c: Any
    s: float
    N: int
    eps: float
    meta: QKVMeta


@public(**QKV, scale=Positive(optional=True), eps=NonNegative(), example=qkv_example)
def mala_attention(q: Array, k: Array, v: Array, *, scale: float | None = None, eps: float = 1e-6) -> Array:
    r"""MALA: magnitude-aware linear attention (Fan et al., ICCV 2025, "Rectifying Magnitude Neglect in Linear
    Attention"), without RoPE.

    With :math:`\varphi = \mathrm{elu} + 1`, :math:`s` = ``scale`` (default :math:`d^{-1/2}`) and N keys:

    .. math::

        z_i = \frac{s}{N} \sum_j \varphi(q_i)^\top \varphi(k_j), \qquad
        O_i = \Bigl(1 + \frac{1}{z_i + \epsilon}\Bigr) \frac{s}{N} \sum_j \bigl(\varphi(q_i)^\top \varphi(k_j)\bigr)
              v_j \;-\; z_i\, \bar v, \qquad \bar v = \frac1N \sum_j v_j

    The implied weights sum to exactly 1 per query and can be negative; scaling q changes the split between the
    two terms, so the query magnitude matters (unlike plain linear attention).  From the official code
    (``qhfan/MALA``, ``AddLinearAttention``); its RoPE on the numerator, LePE, gate and projections are outside
    this function.  Memory linear in the sequence length.

    Parameters
    ----------
    q : array (..., n, d)
    k : array (..., m, d)
    v : array (..., m, dv)
    scale : float, optional
    eps : float >= 0

    Returns
    -------
    array (..., n, dv)

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(0)
    >>> mala_attention(r.standard_normal((5, 4)), r.standard_normal((6, 4)), r.standard_normal((6, 2))).shape
    (5, 2)
    """
    return mala_attention_fwd(q, k, v, scale=scale, eps=eps)[0]


def mala_attention_fwd(q, k, v, *, scale=None, eps=1e-6):
    xp = compat.array_namespace(q, k, v)
    qc, kc, vc, meta = prepare_qkv(q, k, v, xp)
    d = qc.shape[-1]
    N = kc.shape[-2]
    eps = float(eps)
    s = 1.0 / math.sqrt(d) if scale is None else float(scale)
    a = feat(qc, "elu1", xp)
    b = feat(kc, "elu1", xp)
    S = xp.matmul(mT(b, xp), vc) * (s / N)
    z = xp.sum(b, axis=-2) * (s / N)
    num = xp.matmul(a, S)
    zi = xp.sum(a * z[..., None, :], axis=-1)[..., None]       # (..., n, 1)
    vbar = xp.mean(vc, axis=-2)[..., None, :]
    c = 1.0 + 1.0 / (zi + eps)
    o = c * num - zi * vbar
    res = MalaRes(qc, kc, vc, a, b, S, z, num, zi, vbar, c, s, N, eps, meta)
    return compat.cast(o, meta.dtype, xp), res


def mala_attention_bwd(res: MalaRes, dy):
    num, zi, eps, s, N = res.num, res.zi, res.eps, res.s, res.N
    xp = compat.array_namespace(num)
    g = compat.cast(dy, num.dtype, xp)
    dnum = res.c * g
    dzi = -xp.sum(g * num, axis=-1, keepdims=True) / ((zi + eps) * (zi + eps)) - xp.sum(g * res.vbar, axis=-1,
                                                                                        keepdims=True)
    dvbar = -xp.sum(zi * g, axis=-2)                            # (..., dv)
    da = xp.matmul(dnum, mT(res.S, xp)) + dzi * res.z[..., None, :]
    dS = xp.matmul(mT(res.a, xp), dnum)
    dz = xp.sum(res.a * dzi, axis=-2)
    db = (xp.matmul(res.vc, mT(dS, xp)) + dz[..., None, :]) * (s / N)
    dv = xp.matmul(res.b, dS) * (s / N) + dvbar[..., None, :] / N
    return finish_grads(res.meta, (da * feat_grad(res.qc, "elu1", xp), db * feat_grad(res.kc, "elu1", xp), dv), xp)


vjp(mala_attention, mala_attention_fwd, mala_attention_bwd, validate=True)


# ---------------------------------------------------------------------------------------------- InLine
class InlineRes(NamedTuple):
    causal: bool
    q: Any
    k: Any
    v: Any
    M: Any           # K^T V (non-causal) or its prefix sums (causal)
    kbar: Any
    vbar: Any
    qk: Any
    s: float
    meta: QKVMeta


@public(**QKV, scale=Positive(optional=True), causal=Bool(), example=_square_example)
def inline_attention(q: Array, k: Array, v: Array, *, scale: float | None = None, causal: bool = False) -> Array:
    r"""Injective linear attention (InLine): linear attention normalised by subtraction, not division.

    .. math::

        O_i = \sum_j \frac{s\, q_i^\top k_j - s\, q_i^\top \bar k + 1}{N}\, v_j, \qquad
        \bar k = \frac1N \sum_j k_j, \qquad s = d^{-1/2},


    so the weights of each row sum to 1 exactly, and the map from queries to attention rows is
    injective (division-normalised linear attention maps collinear queries to the same row).
    Computed in linear time as Oᵢ = (s/N) qᵢᵀ(Σⱼ kⱼvⱼᵀ) + (1 − s qᵢᵀk̄) v̄.  With ``causal=True``
    token i attends to j ≤ i and N becomes i (prefix sums; O(N d d_v) memory).  The feature map
    is the identity, as in the official code; the paper's local (depthwise-conv) term is
    architecture and is left to the caller.  VJP: analytic (reverse prefix sums when causal).

    Han, Pu, Xia, Han, Song, Huang, "Bridging the Divide: Reconsidering Softmax and Linear
    Attention" (NeurIPS 2024).

    Parameters
    ----------
    q : array (..., n_q, d)
    k : array (..., n, d)
    v : array (..., n, d_v)
    scale : float, optional
        s (default d^(−1/2)).
    causal : bool

    Returns
    -------
    array (..., n_q, d_v)

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> q, k, v = (rng.standard_normal((5, 4)) for _ in range(3))
    >>> inline_attention(q, k, np.ones((5, 2)))     # rows of weights sum to one
    array([[1., 1.],
           [1., 1.],
           [1., 1.],
           [1., 1.],
           [1., 1.]])
    """
    return inline_attention_fwd(q, k, v, scale=scale, causal=causal)[0]


def inline_attention_fwd(q, k, v, *, scale=None, causal=False):
    xp = compat.array_namespace(q, k, v)
    check_causal(q, k, causal)
    qc, kc, vc, meta = prepare_qkv(q, k, v, xp)
    d = qc.shape[-1]
    s = 1.0 / math.sqrt(d) if scale is None else float(scale)
    n = kc.shape[-2]
    if not causal:
        KV = xp.matmul(mT(kc, xp), vc)
        kbar = xp.mean(kc, axis=-2)
        vbar = xp.mean(vc, axis=-2)
        qk = xp.sum(qc * kbar[..., None, :], axis=-1, keepdims=True)
        o = (s / n) * xp.matmul(qc, KV) + (1.0 - s * qk) * vbar[..., None, :]
        M = KV
    else:
        cnt = xp.reshape(compat.arange(n, like=qc, dtype=qc.dtype) + 1.0, (n, 1))
        M = cumsum(kc[..., :, :, None] * vc[..., :, None, :], -3, xp)  # (..., n, d, dv)
        kbar = cumsum(kc, -2, xp) / cnt
        vbar = cumsum(vc, -2, xp) / cnt
        qS = xp.matmul(qc[..., :, None, :], M)[..., 0, :]  # (..., n, dv)
        qk = xp.sum(qc * kbar, axis=-1, keepdims=True)
        o = (s / cnt) * qS + (1.0 - s * qk) * vbar
    return compat.cast(o, meta.dtype, xp), InlineRes(causal, qc, kc, vc, M, kbar, vbar, qk, s, meta)


def inline_attention_bwd(res: InlineRes, dy):
    causal, q, k, v, M, kbar, vbar, qk, s = res[:9]
    xp = compat.array_namespace(q)
    g = compat.cast(dy, q.dtype, xp)
    n = k.shape[-2]
    a = xp.sum(g * (vbar[..., None, :] if not causal else vbar), axis=-1, keepdims=True)  # dO . vbar
    c = 1.0 - s * qk
    if not causal:
        dq = (s / n) * xp.matmul(g, mT(M, xp)) - s * a * kbar[..., None, :]
        dKV = (s / n) * xp.matmul(mT(q, xp), g)
        dkbar = -s * xp.sum(a * q, axis=-2)
        dvbar = xp.sum(c * g, axis=-2)
        dk = xp.matmul(v, mT(dKV, xp)) + dkbar[..., None, :] / n
        dv = xp.matmul(k, dKV) + dvbar[..., None, :] / n
    else:
        cnt = xp.reshape(compat.arange(n, like=q, dtype=q.dtype) + 1.0, (n, 1))
        dq = (s / cnt) * xp.matmul(M, g[..., :, :, None])[..., 0] - s * a * kbar
        dS = (s / cnt)[..., None] * (q[..., :, :, None] * g[..., :, None, :])  # (..., n, d, dv)
        R = revcumsum(dS, -3, xp)
        dk = xp.matmul(R, v[..., :, :, None])[..., 0] + revcumsum(-s * a * q / cnt, -2, xp)
        dv = xp.matmul(mT(R, xp), k[..., :, :, None])[..., 0] + revcumsum(c * g / cnt, -2, xp)
    return finish_grads(res.meta, (dq, dk, dv), xp)


vjp(inline_attention, inline_attention_fwd, inline_attention_bwd, validate=True)
