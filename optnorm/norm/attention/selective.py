"""Selective attention: softmax attention with per-query and per-value temperatures, and the position
temperature of the paper."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..._lib import compat
from ..._lib.api import public, vjp
from ..._lib.roles import Bool, Float, Int, Positive, Scalar
from ..._lib.vjp import unbroadcast
from ..._lib.typing import Array
from .._common import sigmoid
from ._common import QKV, check_causal, mT, qkv_example


class SelectiveAttentionRes(NamedTuple):
    qc: Any
    kc: Any
    vc: Any
    tq: Any
    tv: Any
    qt: Any
    vt: Any
    A: Any
    s: float
    shapes: tuple     # (shape, dtype) of q, k, v, q_temperature, v_temperature (None when absent)


def _check_temp(t, name, like):
    """A temperature broadcasts to (..., tokens, 1): one per token (or per head, per batch)."""
    if t is None:
        return
    want = tuple(like.shape[:-1]) + (1,)
    try:
        ok = t.shape[-1] == 1 and np.broadcast_shapes(tuple(t.shape), want) == np.broadcast_shapes(want)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must broadcast to {want} (one temperature per token, last axis of size 1), got "
                         f"shape {tuple(t.shape)}")


def _example(rng, dtype):
    (q, k, v), _ = qkv_example(rng, dtype, n=5, m=5)
    return (q, k, v, (0.5 + rng.random((2, 5, 1))).astype(dtype), (0.5 + rng.random((2, 5, 1))).astype(dtype)), {}


@public(**QKV, q_temperature=Float(optional=True, min_ndim=1), v_temperature=Float(optional=True, min_ndim=1),
        causal=Bool(), scale=Positive(optional=True), example=_example)
def selective_attention(q: Array, k: Array, v: Array, q_temperature: Array | None = None,
                        v_temperature: Array | None = None, *, causal: bool = True,
                        scale: float | None = None) -> Array:
    r"""Selective self-attention (SSA): softmax attention with per-query and per-value inverse temperatures.

    .. math::

        \tilde q_i = \tau_{q,i}\, q_i, \qquad \tilde v_j = \tau_{v,j}\, v_j, \qquad
        O = \mathrm{softmax}\bigl(s\, \tilde Q K^\top + M\bigr)\, \tilde V, \qquad s = d^{-1/2},

    with :math:`M_{ij} = -\infty` for :math:`j > i` when causal (0 otherwise).

    τ_q sharpens or flattens each query's attention (contextual sparsity), τ_v scales each
    value (relevance).  The paper parameterises τ(x, i) = τ_tok(x) + τ_pos(i) with a learnable
    token term and the position term 1 + σ(α) log i (see :func:`log_position_temperature`),
    which counters attention dilution in long contexts; here the temperatures are arrays
    broadcastable to (..., n, 1), so any parameterisation stays in user code (and is
    differentiated through this op's VJP).  Also covers log-n scaled attention
    (τ_q = log_position_temperature).

    Zhang, Chang, Li, Roy-Chowdhury, Chen, Oymak, "Selective Attention: Enhancing Transformer
    through Principled Context Control" (NeurIPS 2024).

    Parameters
    ----------
    q : array (..., n_q, d)
    k : array (..., n, d)
    v : array (..., n, d_v)
    q_temperature : array broadcastable to (..., n_q, 1), optional
    v_temperature : array broadcastable to (..., n, 1), optional
    causal : bool
        Token i attends to j <= i (needs n_q = n).
    scale : float, optional
        s (default d^(−1/2)).

    Returns
    -------
    array (..., n_q, d_v)

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(0)
    >>> q, k, v = r.standard_normal((2, 5, 4)), r.standard_normal((2, 5, 4)), r.standard_normal((2, 5, 3))
    >>> tau = log_position_temperature(5, 0.0)
    >>> selective_attention(q, k, v, q_temperature=tau).shape
    (2, 5, 3)
    """
    return selective_attention_fwd(q, k, v, q_temperature, v_temperature, causal=causal, scale=scale)[0]


def selective_attention_fwd(q, k, v, q_temperature=None, v_temperature=None, *, causal=True, scale=None):
    xp = compat.array_namespace(q, k, v, q_temperature, v_temperature)
    check_causal(q, k, causal)
    _check_temp(q_temperature, "q_temperature", q)
    _check_temp(v_temperature, "v_temperature", v)
    d = q.shape[-1]
    s = 1.0 / math.sqrt(d) if scale is None else float(scale)
    dt = compat.compute_dtype(q, xp)
    qc, kc, vc = compat.cast(q, dt, xp), compat.cast(k, dt, xp), compat.cast(v, dt, xp)
    tq, tv = compat.cast(q_temperature, dt, xp), compat.cast(v_temperature, dt, xp)
    qt = qc if tq is None else tq * qc
    vt = vc if tv is None else tv * vc
    z = s * xp.matmul(qt, mT(kc, xp))
    if causal:
        n = q.shape[-2]
        i = xp.reshape(compat.arange(n, like=z), (n, 1))
        j = xp.reshape(compat.arange(n, like=z), (1, n))
        z = xp.where(i >= j, z, -math.inf)
    mx = xp.max(z, axis=-1, keepdims=True)
    e = xp.exp(z - mx)
    A = e / xp.sum(e, axis=-1, keepdims=True)
    o = xp.matmul(A, vt)
    shapes = tuple(None if a is None else (tuple(a.shape), a.dtype)
                   for a in (q, k, v, q_temperature, v_temperature))
    return compat.cast(o, q.dtype, xp), SelectiveAttentionRes(qc, kc, vc, tq, tv, qt, vt, A, s, shapes)


def selective_attention_bwd(res: SelectiveAttentionRes, dy):
    qc, kc, vc, tq, tv, qt, vt, A, s = res[:9]
    xp = compat.array_namespace(qc)
    g = compat.cast(dy, qc.dtype, xp)
    dvt = xp.matmul(mT(A, xp), g)
    dA = xp.matmul(g, mT(vt, xp))
    dz = A * (dA - xp.sum(dA * A, axis=-1, keepdims=True))
    dqt = s * xp.matmul(dz, kc)
    dk = s * xp.matmul(mT(dz, xp), qt)
    dq = dqt if tq is None else tq * dqt
    dv = dvt if tv is None else tv * dvt
    dtq = None if tq is None else xp.sum(dqt * qc, axis=-1, keepdims=True)
    dtv = None if tv is None else xp.sum(dvt * vc, axis=-1, keepdims=True)
    out = []
    for grad, sh in zip((dq, dk, dv, dtq, dtv), res.shapes):
        out.append(None if sh is None else compat.cast(unbroadcast(grad, sh[0], xp), sh[1], xp))
    return tuple(out)


vjp(selective_attention, selective_attention_fwd, selective_attention_bwd, validate=True)


@public(n=Int(1), alpha=Float("..."), offset=Scalar(), example=lambda rng, dtype: ((4, np.asarray(0.3, dtype)), {}))
def log_position_temperature(n: int, alpha: Array, *, offset: float = 1.0) -> Array:
    r"""Position temperature of selective attention: τ_pos(i) = offset + σ(α) log i for i = 1..n.

    .. math::

        \tau_{\mathrm{pos}}(i) = \mathrm{offset} + \sigma(\alpha)\, \log i, \qquad i = 1, \dots, n


    σ(α) ∈ (0, 1) is a learnable gate, so the temperature grows at most logarithmically with
    the position, countering the flattening of softmax over long contexts (attention
    dilution).  Zhang et al., "Selective Attention: Enhancing Transformer through Principled
    Context Control" (NeurIPS 2024); the form was not checked against Sec. 3 of the paper
    (arXiv 2411.12892).

    Parameters
    ----------
    n : int >= 1
        Number of positions.
    alpha : float or array (...)
        Gate logit(s), e.g. one per head.  An array keeps its library (and is differentiable by
        that library's autodiff: the function is plain array arithmetic).
    offset : float

    Returns
    -------
    array (..., n, 1): ready to pass as ``q_temperature`` of :func:`selective_attention`.

    Examples
    --------
    >>> log_position_temperature(3, 0.0)[:, 0].round(4)
    array([1.    , 1.3466, 1.5493])
    """
    xp = compat.array_namespace(alpha)
    gate = sigmoid(alpha, xp)
    pos = xp.log(compat.arange(n, like=alpha, dtype=alpha.dtype) + 1.0)
    return offset + gate[..., None, None] * xp.reshape(pos, (n, 1))
