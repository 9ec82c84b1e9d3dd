"""Folding a fixed-std LayerNorm into the next linear map, and the TrAct first-layer linear op."""
from __future__ import annotations

from .._lib import compat, ops, validate

__all__ = ["fold_layer_norm", "tract_linear"]


def _as(xp, a, dt):
    return a if a is None or a.dtype == dt else xp.astype(a, dt)


def fold_layer_norm(w_next, b_next=None, ln_weight=None, ln_bias=None, *, std, center=True):
    """Fold a LayerNorm with a fixed standard deviation into the linear map that follows it.

    With the per-token std replaced by a fixed scalar σ̄ (``layer_norm(..., fixed_std=σ̄)``), the
    LayerNorm is affine, z = γ ⊙ (x − mean(x))/σ̄ + β, and the next layer y = W z + b becomes

    ::

        y = W' x + b',   W' = W diag(γ)/σ̄,   b' = b + W β,

    and with ``center=True`` the centring is folded too: W' ← W' − (W' 𝟙/n) 𝟙ᵀ (each row of W' minus
    its mean), so the folded layer takes the raw residual stream x.  With ``center=False`` the
    caller keeps subtracting mean(x).  A position-dependent σ̄ (the paper's separate σ̄ for the
    BOS token) cannot fold into one map: fold the common one and treat position 0 apart.

    Baroni, Khara, Schoots, Ghiasvand, Rasi, Dziadowicz, Pietrzak, "Transformers Don't Need
    LayerNorm at Inference Time" (2025); TransformerLens ``fold_ln`` / ``center_writing_weights``.

    Parameters
    ----------
    w_next : array (out, n)
        Weight of the next linear layer (torch layout: y = z @ w_next.T + b_next).
    b_next : array (out,), optional
    ln_weight, ln_bias : array (n,), optional
        γ and β of the LayerNorm (None: 1 and 0).
    std : float > 0
        σ̄, the fixed standard deviation.
    center : bool

    Returns
    -------
    (w', b') : arrays (out, n) and (out,) (b' is returned even when ``b_next`` is None).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> W, b = rng.standard_normal((3, 4)), rng.standard_normal(3)
    >>> g, be, x = rng.random(4), rng.random(4), rng.random(4)
    >>> Wf, bf = fold_layer_norm(W, b, g, be, std=2.0)
    >>> np.allclose(Wf @ x + bf, W @ (g * (x - x.mean()) / 2.0 + be) + b)
    True
    """
    xp = validate.check_same_namespace(w_next=w_next, b_next=b_next, ln_weight=ln_weight, ln_bias=ln_bias)
    validate.check_float(w_next, "w_next", xp)
    if w_next.ndim != 2:
        raise ValueError(f"w_next must have shape (out, n), got shape {tuple(w_next.shape)}")
    out_f, n = w_next.shape
    for nm, v, want in (("b_next", b_next, (out_f,)), ("ln_weight", ln_weight, (n,)), ("ln_bias", ln_bias, (n,))):
        if v is not None:
            validate.check_float(v, nm, xp)
            if tuple(v.shape) != want:
                raise ValueError(f"{nm} has shape {tuple(v.shape)}, expected {want}")
    if compat.is_array(std):
        raise TypeError("std must be a scalar: a per-position std cannot be folded into one linear map")
    std = validate.check_positive(std, "std")
    W = w_next if ln_weight is None else w_next * ln_weight[None, :]
    W = W / std
    if center:
        W = W - xp.mean(W, axis=1, keepdims=True)
    b = xp.zeros((out_f,), dtype=w_next.dtype) if b_next is None else b_next
    if ln_bias is not None:
        b = b + xp.matmul(w_next, ln_bias)
    return W, b


# ---------------------------------------------------------------- TrAct linear op
def tract_linear(x, w, b=None, *, lam=0.1):
    """Linear layer y = x wᵀ + b whose backward puts the TrAct update in the weight slot.

    The forward is the plain linear map.  The backward returns the true gradients for ``x``
    (dy w) and ``b`` (Σ dy), but for ``w`` it returns **not the gradient** gᵀ a but TrAct's
    preconditioned update :func:`optnorm.optim.tract_precondition` (g = dy, a = x, λ = ``lam``),
    so that any optimizer stepping on "w.grad" performs the TrAct first-layer update.  Use it
    for the first layer only (the paper's setting).  The op is registered with
    ``skip_check_argnums=(1,)``: gradient checks skip the weight slot on purpose.

    Petersen et al., "TrAct: Making First-layer Pre-Activations Trainable" (NeurIPS 2024).

    Parameters
    ----------
    x : array (..., n)
    w : array (m, n)
    b : array (m,), optional
    lam : float > 0

    Returns
    -------
    array (..., m)
    """
    return tract_linear_fwd(x, w, b, lam=lam)[0]


def tract_linear_fwd(x, w, b=None, *, lam=0.1):
    xp = validate.check_same_namespace(x=x, w=w, b=b)
    validate.check_float(x, "x", xp)
    validate.check_float(w, "w", xp)
    if w.ndim != 2:
        raise ValueError(f"w must have shape (m, n), got shape {tuple(w.shape)}")
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"x has shape {tuple(x.shape)}, its last axis must be n = {w.shape[1]} like w")
    if b is not None:
        validate.check_float(b, "b", xp)
        if tuple(b.shape) != (w.shape[0],):
            raise ValueError(f"b has shape {tuple(b.shape)}, expected ({w.shape[0]},)")
    lam = validate.check_positive(lam, "lam")
    y = xp.matmul(x, xp.matrix_transpose(w))
    if b is not None:
        y = y + b
    return y, (x, w, b is not None, lam)


def tract_linear_bwd(res, dy):
    from ..optim.tract import tract_precondition

    x, w, has_b, lam = res
    xp = compat.array_namespace(x)
    dy = _as(xp, dy, x.dtype)
    dx = xp.matmul(dy, w)
    x2 = x if x.ndim >= 2 else x[None, :]
    g2 = dy if dy.ndim >= 2 else dy[None, :]
    dw = _as(xp, tract_precondition(g2, x2, lam=lam), w.dtype)
    db = xp.sum(xp.reshape(dy, (-1, w.shape[0])), axis=0) if has_b else None
    return dx, dw, db


ops.register("norm.tract_linear", tract_linear, tract_linear_fwd, tract_linear_bwd, skip_check_argnums=(1,))
