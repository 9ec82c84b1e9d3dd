"""The leaf transforms rules are chained from, and the math they share (Array API, jit-safe).

Each transform is a :class:`~optnorm.optim.base.Transform` (see :mod:`optnorm.optim.base`), so a rule
is a short composition::

    sgd    = chain(flip_sign(), add_decayed_weights(wd), trace(mu, ...), scale_by_lr())
    adam   = chain(flip_sign(), add_decayed_weights(wd), scale_by_adam(b1, b2, eps), scale_by_lr())
    adamw  = chain(flip_sign(), decay_weights(wd), scale_by_adam(b1, b2, eps), scale_by_lr())
    adamp  = chain(scale_by_adam(..., lerp=False), project_scale_invariant(...), decay_weights(wd), scale_by_lr())
    muon   = chain(ema_momentum(mu), orthogonalize(...), decay_weights(wd), scale_by_shape(adj), scale_by_lr())

Conventions (``lerp`` forms, eps placement, decay coupling) are written once here.  Nothing branches in
Python on array values, so the pieces run under ``jax.jit``.  Rule-specific transforms (Conda's rotated
moments, SWAN's whitening, AdaHessian's Hessian moment) live next to their rule.
"""
from __future__ import annotations

import math

from typing import Any
from .._lib.typing import Array
from .._lib import compat
from .._lib.api import public
from .._lib.roles import Choice, Float, Int, Positive, Scalar, Scalars
from ._common import bias_correction, scalar, ssqrt, stable_norm, stable_rms, zeros_state
from .base import Transform, no_state

MUON_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


# ----------------------------------------------------------------------------------------------- moments
def ema(m, x, beta):
    """First-moment EMA ``beta m + (1 - beta) x`` in torch's lerp form ``m + (1 - beta)(x - m)``."""
    return compat.lerp(m, x, 1.0 - beta)


def ema_sq(v, g, beta):
    """Second-moment EMA ``beta v + (1 - beta) g^2`` (torch's ``mul_(beta).addcmul_(g, g, 1 - beta)``)."""
    return beta * v + (1.0 - beta) * (g * g)


def decay_coupled(g, p, weight_decay):
    """Coupled L2 decay ``g + wd p`` (Adam, SGD)."""
    return g + weight_decay * p


# ----------------------------------------------------------------------------------------------- norms
def clamp_min(x, v: float, xp):
    """``max(x, v)`` for an array ``x`` and a Python float ``v`` (portable across namespaces)."""
    return xp.maximum(x, xp.full_like(x, v))


def fro_norm(x, xp, axis=(-2, -1), keepdims=True):
    return xp.linalg.vector_norm(x, axis=axis, keepdims=keepdims)


def normalize_rows(x, xp, *, target: float = 1.0, eps: float = 0.0):
    """Scale every row (last axis) of ``x`` to Euclidean norm ``target``: ``target x_i / max(|x_i|, eps)``."""
    n = xp.linalg.vector_norm(x, axis=-1, keepdims=True)
    if eps > 0:
        n = clamp_min(n, eps, xp)
    return x * (target / n)


def normalize_cols(x, xp, *, target: float = 1.0, eps: float = 0.0):
    """Scale every column (axis -2) of ``x`` to Euclidean norm ``target``."""
    n = xp.linalg.vector_norm(x, axis=-2, keepdims=True)
    if eps > 0:
        n = clamp_min(n, eps, xp)
    return x * (target / n)


def standardize_rows(x, xp, *, eps: float = 1e-8):
    """Row standardisation ``(x_i - mean_i) / std_i`` over the last axis (SWAN's GradNorm)."""
    mu = xp.mean(x, axis=-1, keepdims=True)
    c = x - mu
    sd = xp.sqrt(xp.mean(c * c, axis=-1, keepdims=True))
    return c / (sd + eps)


def rms(x, xp):
    """Root mean square over the whole array (0-d)."""
    return xp.sqrt(xp.mean(x * x))


def clip_ratio_by_rms(x, den, clip: float, xp):
    """``y c / max(1, RMS(y))`` for ``y = x / den`` (FAdam's clipping), without forming ``y``.

    With ``d = min(den)`` and ``q = x d / den`` (``|q| <= |x|``), the result is ``q c / max(d, RMS(q))``: the
    same value, but finite where ``x / den`` would overflow (a tiny denominator) and 0 for ``x = 0``.
    """
    tiny = float(xp.finfo(den.dtype).smallest_normal)
    den = clamp_min(den, tiny, xp)
    d = xp.min(den)
    q = x * (d / den)
    return q * (clip / xp.maximum(stable_rms(q, xp), d))


# ----------------------------------------------------------------------------------------------- matrices
def matrix_shape_scale(shape, mode: str) -> float:
    """Muon's lr adjustment for a ``(fan_out, fan_in)`` matrix.

    ``"original"``: ``sqrt(max(1, fan_out/fan_in))`` (Keller Jordan, torch default);
    ``"match_rms_adamw"``: ``0.2 sqrt(max(fan_out, fan_in))`` (Moonshot);
    ``"spectral"``: ``sqrt(fan_out/fan_in)`` (Yang, Simon, Bernstein); ``"none"``: 1.
    """
    a, b = int(shape[0]), int(shape[1])
    if mode == "original":
        return math.sqrt(max(1.0, a / b))
    if mode == "match_rms_adamw":
        return 0.2 * math.sqrt(max(a, b))
    if mode == "spectral":
        return math.sqrt(a / b)
    return 1.0


def resolve_dtype(x, dtype, xp):
    """Compute dtype of a matmul iteration: None keeps ``x``'s (float32 for half), ``"auto"`` is bfloat16 where
    the namespace has it (torch, JAX) and ``x``'s elsewhere."""
    if dtype == "auto":
        dtype = "bfloat16" if getattr(xp, "bfloat16", None) is not None else None
    if dtype is None:
        return compat.compute_dtype(x, xp)
    if isinstance(dtype, str) and dtype in ("float32", "float64"):
        return getattr(xp, dtype)
    if dtype == "bfloat16":
        bf = getattr(xp, "bfloat16", None)
        if bf is None:
            raise ValueError(f"dtype='bfloat16' needs torch or JAX arrays (the {compat.backend_name(x)} namespace has "
                             "no bfloat16 matmul); use dtype='float32'")
        return bf
    return dtype


@public(G=Float("... m n"), steps=Int(0), coefficients=Scalars(Scalar(), 3), eps=Positive(),
        dtype=Choice((None, "float32", "float64", "bfloat16")))
def newton_schulz_orthogonalize(G: Array, /, steps: int = 5, *,
                                coefficients: tuple[float, float, float] = MUON_COEFFICIENTS, eps: float = 1e-7,
                                dtype: Any = None) -> Array:
    r"""Approximate orthogonalisation ``U S' V^T`` of ``G = U S V^T`` by Muon's quintic Newton-Schulz iteration.

    .. math::
        X_0 = G / \max(\|G\|_F, \epsilon),\quad A = X X^\top,\quad X \leftarrow aX + (bA + cA^2)X

    on the short side (``X = G^T`` when ``G`` has more rows than columns), with
    Keller Jordan's coefficients ``(a, b, c) = (3.4445, -4.7750, 2.0315)``.  After 5
    steps singular values ``sigma/|G|_F >= 1e-3`` land in about ``[0.47, 1.2]``
    (this is not the exact polar factor).  "Muon: An optimizer for hidden layers in
    neural networks", K. Jordan et al., 2024; torch.optim.Muon.

    Parameters
    ----------
    G : array (..., m, n)
        Matrix or stack of matrices.
    steps : int
        Iterations (5 in Muon).
    coefficients : (a, b, c)
    eps : float
        Floor of the Frobenius norm (torch's ``clamp(min=eps)``).
    dtype : None, "float32", "float64" or "bfloat16"
        Compute dtype of the matmuls: None keeps the input's (float32 for half
        inputs); ``"bfloat16"`` (torch or JAX arrays) is what torch.optim.Muon does,
        about 4x faster GEMMs on bf16 hardware at about 3% relative error.

    Returns
    -------
    array with ``G``'s shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> O = newton_schulz_orthogonalize(np.random.default_rng(0).standard_normal((4, 8)))
    >>> O.shape
    (4, 8)
    """
    xp = compat.array_namespace(G)
    return newton_schulz(G, steps, coefficients, eps, resolve_dtype(G, dtype, xp), xp)


def newton_schulz(G, steps, coefficients, eps, cdt, xp):
    """:func:`newton_schulz_orthogonalize` without argument checks (``cdt``: the compute dtype)."""
    a, b, c = coefficients
    X = compat.cast(G, cdt, xp)
    tr = G.shape[-2] > G.shape[-1]
    if tr:
        X = xp.matrix_transpose(X)
    X = X / clamp_min(stable_norm(X, xp, axis=(-2, -1), keepdims=True), eps, xp)    # torch's clamp(min=eps)
    for _ in range(steps):
        A = X @ xp.matrix_transpose(X)
        B = compat.addmm(A, A, A, beta=b, alpha=c)
        X = compat.addmm(X, B, X, beta=a, alpha=1.0)
    if tr:
        X = xp.matrix_transpose(X)
    return compat.cast(X, G.dtype, xp)


# ----------------------------------------------------------------------------------------------- AdamP projection
def _cos_rows(a, b, eps, xp):
    na = clamp_min(xp.linalg.vector_norm(a, axis=1), eps, xp)
    nb = clamp_min(xp.linalg.vector_norm(b, axis=1), eps, xp)
    return xp.abs(xp.sum(a * b, axis=1)) / (na * nb)


def adamp_projection(p, g, u, *, delta: float, eps: float, wd_ratio: float, xp):
    """AdamP/SGDP projection: remove the radial component of the update ``u`` of a scale-invariant weight.

    Tries the channel view ``(shape[0], -1)`` then the layer view ``(1, -1)``: when
    ``max_r |cos(g_r, p_r)| < delta / sqrt(d)`` the update's component along the
    unit rows ``p_r/(|p_r|+eps)`` is removed and the weight decay is multiplied by
    ``wd_ratio``.  Branch-free (both views computed, selected with ``where``) so it
    runs under ``jax.jit``.  Returns ``(u, wd_mult)``; 1-D parameters pass through.
    """
    if p.ndim <= 1:
        return u, 1.0
    shape = p.shape
    out_u = u
    fired_any = None
    for view in ((shape[0], -1), (1, -1)):
        P, G, U = xp.reshape(p, view), xp.reshape(g, view), xp.reshape(u, view)
        d = P.shape[1]
        fired = xp.max(_cos_rows(G, P, eps, xp)) < delta / math.sqrt(d)
        Pn = P / (xp.linalg.vector_norm(P, axis=1, keepdims=True) + eps)
        proj = xp.reshape(U - Pn * xp.sum(Pn * U, axis=1, keepdims=True), shape)
        if fired_any is None:
            out_u = xp.where(fired, proj, u)
            fired_any = fired
        else:
            out_u = xp.where(xp.logical_or(fired_any, xp.logical_not(fired)), out_u, proj)
            fired_any = xp.logical_or(fired_any, fired)
    one = compat.full((), 1.0, like=p, xp=xp)
    mult = xp.where(fired_any, compat.full((), wd_ratio, like=p, xp=xp), one)
    return out_u, mult


# ----------------------------------------------------------------------------------------------- leaf transforms
def flip_sign() -> Transform:
    """``maximize=True``: ascend, i.e. negate the gradient first (torch's convention)."""

    def update(leaf, s, ctx):
        return leaf._replace(u=-leaf.u, g=-leaf.g), s

    return Transform(no_state, update)


def add_decayed_weights(weight_decay: float) -> Transform:
    """Coupled L2 decay on the direction: ``u + wd p`` (Adam, SGD; Lion's decay)."""

    def update(leaf, s, ctx):
        if not ctx.on("weight_decay"):
            return leaf, s
        return leaf._replace(u=decay_coupled(leaf.u, leaf.p, weight_decay)), s

    return Transform(no_state, update)


def decay_weights(weight_decay: float, *, divisor: float = 1.0) -> Transform:
    """Decoupled, lr-scaled decay of the parameter: ``p (1 - lr wd m / divisor)`` with ``m`` the leaf's decay
    multiplier (AdamW, Lion, Muon; AdamP's ``wd_ratio``; SGDP divides by ``1 - momentum``)."""

    def update(leaf, s, ctx):
        if not ctx.on("weight_decay"):
            return leaf, s
        lr = scalar(ctx.lr, leaf.p, ctx.xp)
        return leaf._replace(p=leaf.p * (1.0 - lr * weight_decay * leaf.wd_mult / divisor)), s

    return Transform(no_state, update)


def scale_by_lr() -> Transform:
    """Multiply the step by the rule's learning rate (of this step)."""

    def update(leaf, s, ctx):
        return leaf._replace(scale=ctx.lr * leaf.scale), s

    return Transform(no_state, update)


def apply_update() -> Transform:
    """Apply the step now, ``p <- p - scale u``, so later transforms act on the updated parameter."""

    def update(leaf, s, ctx):
        p = leaf.p - scalar(leaf.scale, leaf.p, ctx.xp) * leaf.u
        return leaf._replace(p=p, u=None, scale=1.0), s

    return Transform(no_state, update)


def trace(momentum: float, *, dampening: float = 0.0, nesterov: bool = False, first_is_gradient: bool = True):
    """Heavy-ball buffer ``b = mu b + (1 - dampening) u``; ``nesterov``: ``u + mu b``, else ``b``.

    ``first_is_gradient`` is torch.optim.SGD's first step, ``b = u`` (no dampening); otherwise the buffer
    starts at zero (SGDP).  State field ``momentum_buffer``."""

    def init(p, ctx):
        return {"momentum_buffer": zeros_state(p, ctx.xp)}

    def update(leaf, s, ctx):
        d, t = leaf.u, ctx.t
        buf = momentum * s.momentum_buffer + (1.0 - dampening) * d
        if first_is_gradient:
            buf = (d if t == 1 else buf) if isinstance(t, int) else ctx.xp.where(t == 1, d, buf)
        u = d + momentum * buf if nesterov else buf
        return leaf._replace(u=u), s._replace(momentum_buffer=buf)

    return Transform(init, update)


def scale_by_adam(b1: float, b2: float, eps: float, *, amsgrad: bool = False, eps_mode: str = "torch",
                  nesterov: bool = False, lerp: bool = True) -> Transform:
    """Adam's direction ``m / (sqrt(v)/sqrt(1 - b2^t) + eps)`` and step factor ``1/(1 - b1^t)``.

    ``eps_mode="hf"``: ``m / (sqrt(v) + eps)`` with factor ``sqrt(1 - b2^t)/(1 - b1^t)``; ``amsgrad`` uses the
    running max of the raw ``v``; ``nesterov`` (AdamP) the look-ahead ``b1 m + (1 - b1) g``; ``lerp=False``
    the moment as ``b1 m + (1 - b1) g`` (AdamP's reference) instead of torch's lerp.  State fields
    ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``."""

    def init(p, ctx):
        xp = ctx.xp
        return {"exp_avg": zeros_state(p, xp), "exp_avg_sq": zeros_state(p, xp),
                "max_exp_avg_sq": zeros_state(p, xp) if amsgrad else None}

    def update(leaf, s, ctx):
        xp, t, g = ctx.xp, ctx.t, leaf.u
        m = ema(s.exp_avg, g, b1) if lerp else b1 * s.exp_avg + (1.0 - b1) * g
        v = ema_sq(s.exp_avg_sq, g, b2)
        vmax = xp.maximum(s.max_exp_avg_sq, v) if amsgrad else None
        vv = vmax if amsgrad else v
        bc1, bc2 = bias_correction(b1, t), bias_correction(b2, t)
        if eps_mode == "torch":
            denom = xp.sqrt(vv) / scalar(ssqrt(bc2, xp), leaf.p, xp) + eps
            factor = leaf.scale / bc1
        else:
            denom = xp.sqrt(vv) + eps
            factor = leaf.scale * ssqrt(bc2, xp) / bc1
        num = b1 * m + (1.0 - b1) * g if nesterov else m
        return (leaf._replace(u=num / denom, scale=factor),
                s._replace(exp_avg=m, exp_avg_sq=v, max_exp_avg_sq=vmax))

    return Transform(init, update)


def scale_by_adam_optax(b1, b2, eps, eps_root=0.0, *, nesterov: bool = False) -> Transform:
    """optax.scale_by_adam's direction ``mhat / (sqrt(vhat + eps_root) + eps)`` with both moments bias-corrected
    and ``m = (1 - b1) g + b1 m`` (optax's ``update_moment``).  State fields ``exp_avg``, ``exp_avg_sq``."""

    def init(p, ctx):
        return {"exp_avg": zeros_state(p, ctx.xp), "exp_avg_sq": zeros_state(p, ctx.xp)}

    def update(leaf, s, ctx):
        xp, t, g = ctx.xp, ctx.t, leaf.u
        m = (1.0 - b1) * g + b1 * s.exp_avg
        v = (1.0 - b2) * (g * g) + b2 * s.exp_avg_sq
        if nesterov:
            mhat = (b1 * m / scalar(1.0 - b1 ** (t + 1), m, xp)
                    + (1.0 - b1) * g / scalar(bias_correction(b1, t), m, xp))
        else:
            mhat = m / scalar(bias_correction(b1, t), m, xp)
        vhat = v / scalar(bias_correction(b2, t), v, xp)
        return leaf._replace(u=mhat / (xp.sqrt(vhat + eps_root) + eps)), s._replace(exp_avg=m, exp_avg_sq=v)

    return Transform(init, update)


def scale_by_trust_ratio(trust_coefficient=1.0, eps=0.0, min_norm=0.0) -> Transform:
    """optax.scale_by_trust_ratio: ``u coeff |p| / (|u| + eps)`` per parameter, 1 where a norm is 0 (norms
    floored at ``min_norm``); skipped where the leaf's ``"trust_ratio"`` mask is False."""

    def update(leaf, s, ctx):
        if not ctx.on("trust_ratio"):
            return leaf, s
        xp, u = ctx.xp, leaf.u
        pn, un = stable_norm(leaf.p, xp), stable_norm(u, xp)
        if min_norm:
            pn, un = clamp_min(pn, min_norm, xp), clamp_min(un, min_norm, xp)
        ratio = trust_coefficient * pn / (un + eps)
        zero = xp.logical_or(pn == 0.0, un == 0.0)
        ratio = xp.where(zero, xp.ones_like(ratio), ratio)
        return leaf._replace(u=u * ratio), s

    return Transform(no_state, update)


def project_scale_invariant(delta: float, eps: float, wd_ratio: float) -> Transform:
    """AdamP/SGDP: remove the radial part of the update of a scale-invariant weight (:func:`adamp_projection`,
    tested on the raw gradient) and scale its decay by ``wd_ratio``."""

    def update(leaf, s, ctx):
        u, mult = adamp_projection(leaf.p, leaf.g, leaf.u, delta=delta, eps=eps, wd_ratio=wd_ratio, xp=ctx.xp)
        return leaf._replace(u=u, wd_mult=mult), s

    return Transform(no_state, update)


def ema_momentum(momentum: float, *, nesterov: bool) -> Transform:
    """EMA momentum ``B = lerp(B, g, 1 - mu)``; ``nesterov``: ``lerp(g, B, mu)`` (torch/Keller Muon), else
    ``B``.  State field ``momentum_buffer``."""

    def init(p, ctx):
        return {"momentum_buffer": zeros_state(p, ctx.xp)}

    def update(leaf, s, ctx):
        g = leaf.u
        buf = ema(s.momentum_buffer, g, momentum)
        u = compat.lerp(g, buf, momentum) if nesterov else buf
        return leaf._replace(u=u), s._replace(momentum_buffer=buf)

    return Transform(init, update)


def orthogonalize(coefficients, steps: int, eps: float, dtype) -> Transform:
    """Replace the direction by its Newton-Schulz orthogonalisation (:func:`newton_schulz_orthogonalize`);
    ``dtype="auto"``: bfloat16 matmuls where the namespace has them (torch.optim.Muon's choice)."""

    def update(leaf, s, ctx):
        xp = ctx.xp
        u = newton_schulz(leaf.u, steps, coefficients, eps, resolve_dtype(leaf.u, dtype, xp), xp)
        return leaf._replace(u=u), s

    return Transform(no_state, update)


def scale_by_shape(mode: str) -> Transform:
    """Multiply the step by Muon's shape factor :func:`matrix_shape_scale` of the parameter."""

    def update(leaf, s, ctx):
        return leaf._replace(scale=leaf.scale * matrix_shape_scale(leaf.p.shape, mode)), s

    return Transform(no_state, update)
