"""Linear-time and temperature-scaled attention: InLine, Selective attention, random features and FAVOR+.

Random features and FAVOR+ live here rather than in ``random_features.py`` because a module named like
the function it exports collides in ``optnorm._lib.exports.export_modules`` (the package attribute
``optnorm.norm.random_features`` would be the submodule).
"""
from __future__ import annotations

import math

import numpy as np

from .._lib.vjp import unbroadcast
from .._lib import compat, ops, validate

__all__ = ["inline_attention", "selective_attention", "log_position_temperature", "random_features",
           "random_projection", "favor_attention"]


def _as(xp, a, dt):
    return a if a is None or a.dtype == dt else xp.astype(a, dt)


def _check_qkv(q, k, v, causal):
    xp = validate.check_same_namespace(q=q, k=k, v=v)
    for nm, a in (("q", q), ("k", k), ("v", v)):
        validate.check_float(a, nm, xp)
        if a.ndim < 2:
            raise ValueError(f"{nm} must have shape (..., n, d), got shape {tuple(a.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same feature size, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same number of tokens, got {k.shape[-2]} and {v.shape[-2]}")
    validate.check_broadcastable("q", q.shape[:-2], "k", k.shape[:-2])
    validate.check_broadcastable("k", k.shape[:-2], "v", v.shape[:-2])
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(f"causal=True needs as many queries as keys, got q with {q.shape[-2]} and k with "
                         f"{k.shape[-2]} tokens")
    return xp


def _cumsum(x, axis, xp):
    return xp.cumulative_sum(x, axis=axis)


def _revcumsum(x, axis, xp):
    return xp.flip(xp.cumulative_sum(xp.flip(x, axis=axis), axis=axis), axis=axis)


# ---------------------------------------------------------------- InLine attention
def inline_attention(q, k, v, *, scale=None, causal=False):
    """Injective linear attention (InLine): linear attention normalised by subtraction, not division.

    ::

        Oᵢ = Σⱼ [ s qᵢᵀkⱼ − s qᵢᵀk̄ + 1 ] / N · vⱼ,   k̄ = (1/N) Σⱼ kⱼ,  s = d^(−1/2),

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
    xp = _check_qkv(q, k, v, causal)
    d = q.shape[-1]
    s = 1.0 / math.sqrt(d) if scale is None else validate.check_positive(scale, "scale")
    dt = compat.compute_dtype(q, xp)
    qc, kc, vc = _as(xp, q, dt), _as(xp, k, dt), _as(xp, v, dt)
    n = k.shape[-2]
    if not causal:
        KV = xp.matmul(xp.matrix_transpose(kc), vc)
        kbar = xp.mean(kc, axis=-2)
        vbar = xp.mean(vc, axis=-2)
        qk = xp.sum(qc * kbar[..., None, :], axis=-1, keepdims=True)
        o = (s / n) * xp.matmul(qc, KV) + (1.0 - s * qk) * vbar[..., None, :]
        res = (False, qc, kc, vc, KV, kbar, vbar, qk, s)
    else:
        cnt = xp.reshape(xp.arange(1, n + 1, dtype=dt), (n, 1))
        S = _cumsum(kc[..., :, :, None] * vc[..., :, None, :], -3, xp)  # (..., n, d, dv)
        kbar = _cumsum(kc, -2, xp) / cnt
        vbar = _cumsum(vc, -2, xp) / cnt
        qS = xp.matmul(qc[..., :, None, :], S)[..., 0, :]  # (..., n, dv)
        qk = xp.sum(qc * kbar, axis=-1, keepdims=True)
        o = (s / cnt) * qS + (1.0 - s * qk) * vbar
        res = (True, qc, kc, vc, S, kbar, vbar, qk, s)
    shapes = (tuple(q.shape), tuple(k.shape), tuple(v.shape), q.dtype, k.dtype, v.dtype)
    return _as(xp, o, q.dtype), (res, shapes)


def inline_attention_bwd(res, dy):
    (causal, q, k, v, M, kbar, vbar, qk, s), (sq, sk, sv, dtq, dtk, dtv) = res
    xp = compat.array_namespace(q)
    g = _as(xp, dy, q.dtype)
    n = k.shape[-2]
    a = xp.sum(g * (vbar[..., None, :] if not causal else vbar), axis=-1, keepdims=True)  # dO·v̄
    c = 1.0 - s * qk
    if not causal:
        dq = (s / n) * xp.matmul(g, xp.matrix_transpose(M)) - s * a * kbar[..., None, :]
        dKV = (s / n) * xp.matmul(xp.matrix_transpose(q), g)
        dkbar = -s * xp.sum(a * q, axis=-2)
        dvbar = xp.sum(c * g, axis=-2)
        dk = xp.matmul(v, xp.matrix_transpose(dKV)) + dkbar[..., None, :] / n
        dv = xp.matmul(k, dKV) + dvbar[..., None, :] / n
    else:
        cnt = xp.reshape(xp.arange(1, n + 1, dtype=q.dtype), (n, 1))
        dq = (s / cnt) * xp.matmul(M, g[..., :, :, None])[..., 0] - s * a * kbar
        dS = (s / cnt)[..., None] * (q[..., :, :, None] * g[..., :, None, :])  # (..., n, d, dv)
        R = _revcumsum(dS, -3, xp)
        dk = xp.matmul(R, v[..., :, :, None])[..., 0] + _revcumsum(-s * a * q / cnt, -2, xp)
        dv = xp.matmul(xp.matrix_transpose(R), k[..., :, :, None])[..., 0] + _revcumsum(c * g / cnt, -2, xp)
    return (_as(xp, unbroadcast(dq, sq, xp), dtq), _as(xp, unbroadcast(dk, sk, xp), dtk),
            _as(xp, unbroadcast(dv, sv, xp), dtv))


ops.register("norm.inline_attention", inline_attention, inline_attention_fwd, inline_attention_bwd)


# ---------------------------------------------------------------- Selective attention
def _check_temp(t, name, q, xp):
    if t is None:
        return None
    validate.check_float(t, name, xp)
    want = tuple(q.shape[:-1]) + (1,)
    if t.ndim < 1 or t.shape[-1] != 1:
        raise ValueError(f"{name} must broadcast to {want} (one temperature per token, last axis of size 1), "
                         f"got shape {tuple(t.shape)}")
    validate.check_broadcastable(name, t.shape, "the tokens", want)
    return t


def selective_attention(q, k, v, q_temperature=None, v_temperature=None, *, causal=True, scale=None):
    """Selective self-attention (SSA): softmax attention with per-query and per-value inverse temperatures.

    ::

        q̃ᵢ = τ_q,ᵢ qᵢ,   ṽⱼ = τ_v,ⱼ vⱼ,   O = softmax(s Q̃Kᵀ + mask) Ṽ,   s = d^(−1/2).

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
    q : array (..., n_q, d); k : array (..., n, d); v : array (..., n, d_v)
    q_temperature : array broadcastable to (..., n_q, 1), optional
    v_temperature : array broadcastable to (..., n, 1), optional
    causal : bool
        Token i attends to j <= i (needs n_q = n).
    scale : float, optional
        s (default d^(−1/2)).

    Returns
    -------
    array (..., n_q, d_v)
    """
    return selective_attention_fwd(q, k, v, q_temperature, v_temperature, causal=causal, scale=scale)[0]


def selective_attention_fwd(q, k, v, q_temperature=None, v_temperature=None, *, causal=True, scale=None):
    xp = _check_qkv(q, k, v, causal)
    validate.check_same_namespace(q=q, q_temperature=q_temperature, v_temperature=v_temperature)
    _check_temp(q_temperature, "q_temperature", q, xp)
    _check_temp(v_temperature, "v_temperature", v, xp)
    d = q.shape[-1]
    s = 1.0 / math.sqrt(d) if scale is None else validate.check_positive(scale, "scale")
    dt = compat.compute_dtype(q, xp)
    qc, kc, vc = _as(xp, q, dt), _as(xp, k, dt), _as(xp, v, dt)
    tq, tv = _as(xp, q_temperature, dt), _as(xp, v_temperature, dt)
    qt = qc if tq is None else tq * qc
    vt = vc if tv is None else tv * vc
    z = s * xp.matmul(qt, xp.matrix_transpose(kc))
    if causal:
        n = q.shape[-2]
        i = xp.reshape(xp.arange(n), (n, 1))
        j = xp.reshape(xp.arange(n), (1, n))
        z = xp.where(i >= j, z, -math.inf)
    mx = xp.max(z, axis=-1, keepdims=True)
    e = xp.exp(z - mx)
    A = e / xp.sum(e, axis=-1, keepdims=True)
    o = xp.matmul(A, vt)
    shapes = tuple(None if a is None else (tuple(a.shape), a.dtype)
                   for a in (q, k, v, q_temperature, v_temperature))
    return _as(xp, o, q.dtype), (qc, kc, vc, tq, tv, qt, vt, A, s, shapes)


def selective_attention_bwd(res, dy):
    qc, kc, vc, tq, tv, qt, vt, A, s, shapes = res
    xp = compat.array_namespace(qc)
    g = _as(xp, dy, qc.dtype)
    dvt = xp.matmul(xp.matrix_transpose(A), g)
    dA = xp.matmul(g, xp.matrix_transpose(vt))
    dz = A * (dA - xp.sum(dA * A, axis=-1, keepdims=True))
    dqt = s * xp.matmul(dz, kc)
    dk = s * xp.matmul(xp.matrix_transpose(dz), qt)
    dq = dqt if tq is None else tq * dqt
    dv = dvt if tv is None else tv * dvt
    dtq = None if tq is None else xp.sum(dqt * qc, axis=-1, keepdims=True)
    dtv = None if tv is None else xp.sum(dvt * vc, axis=-1, keepdims=True)
    out = []
    for grad, sh in zip((dq, dk, dv, dtq, dtv), shapes):
        out.append(None if sh is None else _as(xp, unbroadcast(grad, sh[0], xp), sh[1]))
    return tuple(out)


ops.register("norm.selective_attention", selective_attention, selective_attention_fwd, selective_attention_bwd)


def log_position_temperature(n, alpha, *, offset=1.0):
    """Position temperature of selective attention: τ_pos(i) = offset + σ(α) log i for i = 1..n.

    σ(α) ∈ (0, 1) is a learnable gate, so the temperature grows at most logarithmically with
    the position, countering the flattening of softmax over long contexts (attention
    dilution).  Zhang et al., "Selective Attention: Enhancing Transformer through Principled
    Context Control" (NeurIPS 2024); the form follows the reference note and should be checked
    against Sec. 3 of the paper (arXiv 2411.12892).

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
    n = validate.check_int(n, "n", low=1)
    if compat.is_array(alpha):
        xp = compat.array_namespace(alpha)
        validate.check_float(alpha, "alpha", xp)
        a = alpha
    else:
        xp = compat.array_namespace(np.empty(0))
        a = xp.asarray(validate._real(alpha, "alpha"), dtype=xp.float64)
    gate = 1.0 / (1.0 + xp.exp(-a))
    pos = xp.log(xp.astype(xp.arange(1, n + 1), a.dtype))
    return offset + gate[..., None, None] * xp.reshape(pos, (n, 1))


# ---------------------------------------------------------------- random features (Performer / SimRF)
_COUPLINGS = ("iid", "orthogonal", "simplex")


def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _haar(rng, d):
    """Haar-random orthogonal d x d matrix (QR of a Gaussian with the sign of R's diagonal fixed)."""
    qm, r = np.linalg.qr(rng.standard_normal((d, d)))
    return qm * np.sign(np.diag(r))[None, :]


def random_projection(d, num_features, *, coupling="simplex", seed=None):
    """The (num_features, d) Gaussian-marginal projection W used by :func:`random_features` (float64 NumPy).

    Each row wᵢ has the N(0, I_d) marginal; rows come in blocks of d coupled as

    - ``"iid"``: independent;
    - ``"orthogonal"``: Haar-random orthonormal directions, independent χ_d norms (ORF, FAVOR+);
    - ``"simplex"``: the d unit vertices of a regular simplex (sᵢᵀsⱼ = −1/(d − 1)), rotated by one
      Haar-random orthogonal matrix per block, with independent χ_d norms (SimRF).

    The simplex vertices are the normalised rows of I − 𝟙𝟙ᵀ/d; any rotation of them is the same
    coupling once the Haar rotation is applied.
    """
    d = validate.check_int(d, "d", low=1)
    m = validate.check_int(num_features, "num_features", low=1)
    validate.check_in(coupling, _COUPLINGS, "coupling")
    rng = _rng(seed)
    if coupling == "iid":
        return rng.standard_normal((m, d))
    if coupling == "simplex" and d < 2:
        raise ValueError("coupling='simplex' needs a feature dimension d >= 2")
    blocks = []
    for _ in range(-(-m // d)):
        norms = np.linalg.norm(rng.standard_normal((d, d)), axis=1)
        rot = _haar(rng, d)
        if coupling == "orthogonal":
            dirs = rot
        else:
            e = np.eye(d) - 1.0 / d
            dirs = (e / np.linalg.norm(e, axis=1, keepdims=True)) @ rot.T
        blocks.append(norms[:, None] * dirs)
    return np.concatenate(blocks, 0)[:m]


def _features(xs, W, xp, stab_axis=None):
    """exp(W x − ‖x‖²/2 − c)/√m with c a stabiliser (0, per-row max, or global max)."""
    m = W.shape[0]
    u = xp.matmul(xs, xp.matrix_transpose(W)) - 0.5 * xp.sum(xs * xs, axis=-1, keepdims=True)
    if stab_axis == "row":
        u = u - xp.max(u, axis=-1, keepdims=True)
    elif stab_axis == "all":
        u = u - xp.max(u)
    return xp.exp(u) / math.sqrt(m)


def random_features(x, *, num_features, kind="positive", coupling="simplex", seed=None, scale=None):
    """Random features φ with E[φ(x)ᵀφ(y)] = exp(xᵀy) (the softmax kernel).

    - ``kind="positive"`` (FAVOR+): φ(x) = exp(−‖x‖²/2)/√m · [exp(wᵢᵀx)]_{i ≤ m}, strictly positive,
      so attention weights estimated with it stay positive;
    - ``kind="trig"``: φ(x) = exp(‖x‖²/2)/√m · [cos(wᵢᵀx), sin(wᵢᵀx)] (2m features).

    The wᵢ come from :func:`random_projection` with the chosen ``coupling``; the same ``seed``
    gives the same projection, so features of queries and keys must be drawn with one seed.
    Simplex coupling gives the lowest estimator variance of the three for positive features.

    Choromanski et al., "Rethinking Attention with Performers" (ICLR 2021); Reid, Choromanski,
    Likhosherstov, Weller, "Simplex Random Features" (ICML 2023).

    Parameters
    ----------
    x : array (..., d)
    num_features : int
        m (rows of the projection; blocks of d are coupled).
    kind : {"positive", "trig"}
    coupling : {"iid", "orthogonal", "simplex"}
    seed : int, numpy Generator or None
    scale : float, optional
        x is multiplied by it first (d^(−1/4) for softmax attention).

    Returns
    -------
    array (..., m) (or (..., 2m) for ``"trig"``) in x's library and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([0.3, -0.2, 0.1, 0.4])
    >>> phi = random_features(np.stack([x, x]), num_features=4096, seed=0)
    >>> abs(float(phi[0] @ phi[1]) - float(np.exp(x @ x))) < 0.02
    True
    """
    xp = compat.array_namespace(x)
    validate.check_float(x, "x", xp)
    if x.ndim < 1:
        raise ValueError("x must have shape (..., d)")
    validate.check_in(kind, ("positive", "trig"), "kind")
    d = x.shape[-1]
    W = random_projection(d, num_features, coupling=coupling, seed=seed)
    dt = compat.compute_dtype(x, xp)
    Wx = _as(xp, compat.from_numpy_like(W, x), dt)
    xs = _as(xp, x, dt)
    if scale is not None:
        xs = validate.check_positive(scale, "scale") * xs
    if kind == "positive":
        phi = _features(xs, Wx, xp)
    else:
        u = xp.matmul(xs, xp.matrix_transpose(Wx))
        amp = xp.exp(0.5 * xp.sum(xs * xs, axis=-1, keepdims=True)) / math.sqrt(W.shape[0])
        phi = xp.concat([amp * xp.cos(u), amp * xp.sin(u)], axis=-1)
    return _as(xp, phi, x.dtype)


# ---------------------------------------------------------------- FAVOR+ attention
def favor_attention(q, k, v, *, num_features, coupling="simplex", seed=None, causal=False, scale=None):
    """FAVOR+ linear attention: softmax attention estimated with positive random features.

    ::

        O = D⁻¹ φ(Q) (φ(K)ᵀ V),   D = diag(φ(Q) φ(K)ᵀ 𝟙),

    with φ = :func:`random_features` (positive) applied to s·q and s·k, s = d^(−1/4) (default),
    so φ(q)ᵀφ(k) estimates exp(qᵀk/√d).  Stabilisers (a per-row maximum for φ(Q), a global one for
    φ(K)) are subtracted inside the exponentials; they cancel in D⁻¹ exactly.  ``causal=True``
    uses prefix sums (O(n m d_v) memory).  Linear in the sequence length.  The VJP is analytic
    (features included; the projection is a constant of the seed).

    Choromanski et al., "Rethinking Attention with Performers" (ICLR 2021); Reid et al.,
    "Simplex Random Features" (ICML 2023).

    Parameters
    ----------
    q : array (..., n_q, d); k : array (..., n, d); v : array (..., n, d_v)
    num_features : int
    coupling : {"iid", "orthogonal", "simplex"}
    seed : int, numpy Generator or None
        One projection for q and k, reproducible for an int.
    causal : bool
    scale : float, optional
        s (default d^(−1/4)).

    Returns
    -------
    array (..., n_q, d_v)
    """
    return favor_attention_fwd(q, k, v, num_features=num_features, coupling=coupling, seed=seed, causal=causal,
                               scale=scale)[0]


def favor_attention_fwd(q, k, v, *, num_features, coupling="simplex", seed=None, causal=False, scale=None):
    xp = _check_qkv(q, k, v, causal)
    d = q.shape[-1]
    s = d ** -0.25 if scale is None else validate.check_positive(scale, "scale")
    if isinstance(seed, np.random.Generator):
        raise TypeError("seed must be an int or None for favor_attention: the VJP redraws nothing, but a "
                        "Generator would give q and k different projections across calls")
    W = random_projection(d, num_features, coupling=coupling, seed=seed)
    dt = compat.compute_dtype(q, xp)
    Wx = _as(xp, compat.from_numpy_like(W, q), dt)
    qs, ks, vc = s * _as(xp, q, dt), s * _as(xp, k, dt), _as(xp, v, dt)
    A = _features(qs, Wx, xp, "row")
    B = _features(ks, Wx, xp, "all")
    if not causal:
        KV = xp.matmul(xp.matrix_transpose(B), vc)  # (..., m, dv)
        z = xp.sum(B, axis=-2)  # (..., m)
        num = xp.matmul(A, KV)
        den = xp.sum(A * z[..., None, :], axis=-1, keepdims=True)
        M = (KV, z)
    else:
        S = _cumsum(B[..., :, :, None] * vc[..., :, None, :], -3, xp)  # (..., n, m, dv)
        z = _cumsum(B, -2, xp)
        num = xp.matmul(A[..., :, None, :], S)[..., 0, :]
        den = xp.sum(A * z, axis=-1, keepdims=True)
        M = (S, z)
    o = num / den
    shapes = (tuple(q.shape), tuple(k.shape), tuple(v.shape), q.dtype, k.dtype, v.dtype)
    return _as(xp, o, q.dtype), (causal, qs, ks, vc, Wx, A, B, M, o, den, s, shapes)


def _features_bwd(xs, W, phi, dphi, xp):
    du = dphi * phi
    return xp.matmul(du, W) - xp.sum(du, axis=-1, keepdims=True) * xs


def favor_attention_bwd(res, dy):
    causal, qs, ks, vc, W, A, B, M, o, den, s, (sq, sk, sv, dtq, dtk, dtv) = res
    xp = compat.array_namespace(qs)
    g = _as(xp, dy, qs.dtype)
    dnum = g / den
    dden = -xp.sum(g * o, axis=-1, keepdims=True) / den
    if not causal:
        KV, z = M
        dA = xp.matmul(dnum, xp.matrix_transpose(KV)) + dden * z[..., None, :]
        dKV = xp.matmul(xp.matrix_transpose(A), dnum)
        dz = xp.sum(dden * A, axis=-2)
        dB = xp.matmul(vc, xp.matrix_transpose(dKV)) + dz[..., None, :]
        dv = xp.matmul(B, dKV)
    else:
        S, z = M
        dA = xp.matmul(S, dnum[..., :, :, None])[..., 0] + dden * z
        R = _revcumsum(A[..., :, :, None] * dnum[..., :, None, :], -3, xp)  # (..., n, m, dv)
        dB = xp.matmul(R, vc[..., :, :, None])[..., 0] + _revcumsum(dden * A, -2, xp)
        dv = xp.matmul(xp.matrix_transpose(R), B[..., :, :, None])[..., 0]
    dq = s * _features_bwd(qs, W, A, dA, xp)
    dk = s * _features_bwd(ks, W, B, dB, xp)
    return (_as(xp, unbroadcast(dq, sq, xp), dtq), _as(xp, unbroadcast(dk, sk, xp), dtk),
            _as(xp, unbroadcast(dv, sv, xp), dtv))


ops.register("norm.favor_attention", favor_attention, favor_attention_fwd, favor_attention_bwd)
