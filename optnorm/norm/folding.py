"""Folding a fixed-std LayerNorm into the next linear map, and the TrAct first-layer linear op."""
from __future__ import annotations

from typing import Any, NamedTuple

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.roles import Bool, Float, Positive
from .._lib.typing import Array


def _fold_example(rng, dtype):
    return tuple(a.astype(dtype) for a in (rng.standard_normal((3, 5)), rng.standard_normal(3),
                                           1 + 0.1 * rng.standard_normal(5), 0.1 * rng.standard_normal(5))), \
        {"std": 2.0}


@public(w_next=Float("o n"), b_next=Float("o", optional=True), ln_weight=Float("n", optional=True),
        ln_bias=Float("n", optional=True), std=Positive(), center=Bool(), example=_fold_example)
def fold_layer_norm(w_next: Array, b_next: Array | None = None, ln_weight: Array | None = None,
                    ln_bias: Array | None = None, *, std: float, center: bool = True) -> tuple[Array, Array]:
    r"""Fold a LayerNorm with a fixed standard deviation into the linear map that follows it.

    With the per-token std replaced by a fixed scalar σ̄ (``layer_norm(..., fixed_std=σ̄)``), the
    LayerNorm is affine, z = γ ⊙ (x − mean(x))/σ̄ + β, and the next layer y = W z + b becomes

    .. math::

        y = W' x + b', \qquad W' = \frac{W \operatorname{diag}(\gamma)}{\bar\sigma}, \qquad b' = b + W \beta,

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
        Bias of the next linear layer (None: 0).
    ln_weight, ln_bias : array (n,), optional
        γ and β of the LayerNorm (None: 1 and 0).
    std : float > 0
        σ̄, the fixed standard deviation (a scalar: a per-position std cannot be folded into one map).
    center : bool
        Fold the mean subtraction into W' too (see above).


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
    xp = compat.array_namespace(w_next, b_next, ln_weight, ln_bias)
    out_f = w_next.shape[0]
    W = w_next if ln_weight is None else w_next * ln_weight[None, :]
    W = W / std
    if center:
        W = W - xp.mean(W, axis=1, keepdims=True)
    b = compat.zeros((out_f,), like=w_next) if b_next is None else b_next
    if ln_bias is not None:
        b = b + xp.matmul(w_next, ln_bias)
    return W, b


# ---------------------------------------------------------------- TrAct linear op
class TractLinearRes(NamedTuple):
    x: Any
    w: Any
    has_b: bool
    lam: float


@public(x=Float("... n"), w=Float("m n"), b=Float("m", optional=True), lam=Positive())
def tract_linear(x: Array, w: Array, b: Array | None = None, *, lam: float = 0.1) -> Array:
    r"""Linear layer y = x wᵀ + b whose backward puts the TrAct update in the weight slot.

    .. math::

        y = x W^\top + b, \qquad
        \Delta W = g^\top a \Bigl(\frac{a^\top a}{B} + \lambda I_n\Bigr)^{-1}
        \quad (g = \partial L / \partial y,\ a = x \text{ as } B \times n)

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
        Input (the layer's activations a).
    w : array (m, n)
        Weight.
    b : array (m,), optional
        Bias.
    lam : float > 0
        λ, the TrAct regulariser (0.1 as the paper).

    Returns
    -------
    array (..., m)

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(0)
    >>> x, w, b = r.standard_normal((8, 5)), r.standard_normal((3, 5)), r.standard_normal(3)
    >>> y = tract_linear(x, w, b)
    >>> y.shape, bool(np.allclose(y, x @ w.T + b))
    ((8, 3), True)
    """

    return tract_linear_fwd(x, w, b, lam=lam)[0]


def tract_linear_fwd(x, w, b=None, *, lam=0.1):
    xp = compat.array_namespace(x, w, b)
    y = xp.matmul(x, xp.matrix_transpose(w))
    if b is not None:
        y = y + b
    return y, TractLinearRes(x, w, b is not None, float(lam))


def tract_linear_bwd(res: TractLinearRes, dy):
    from ..optim import tract_precondition

    x, w = res.x, res.w
    xp = compat.array_namespace(x)
    dy = compat.cast(dy, x.dtype, xp)
    dx = xp.matmul(dy, w)
    x2 = x if x.ndim >= 2 else x[None, :]
    g2 = dy if dy.ndim >= 2 else dy[None, :]
    dw = compat.cast(tract_precondition(g2, x2, lam=res.lam), w.dtype, xp)
    db = xp.sum(xp.reshape(dy, (-1, w.shape[0])), axis=0) if res.has_b else None
    return dx, dw, db


vjp(tract_linear, tract_linear_fwd, tract_linear_bwd, skip_check_argnums=(1,), validate=True)
