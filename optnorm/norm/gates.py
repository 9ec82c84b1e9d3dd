"""Sparse gates: top-k softmax (MoE routing), the dense-to-sparse / activation gate, and the soft top-k operator."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.dispatch import Dispatcher, numpy_float
from .._lib.roles import Array as ArrayRole, Axis, Bool, Choice, Float, Int, Positive
from .._lib.typing import Array
from ._common import REDUCTIONS, move_back, move_last, reduce_loss, sigmoid


def _check_k(k, n, name="k"):
    if k > n:
        raise ValueError(f"{name}={k} is larger than the size {n} of the reduced axis")
    return k


def _cuda_float(z):
    return str(z.dtype) in ("float32", "float64")


# ---------------------------------------------------------------- top-k softmax
_topk = Dispatcher("norm.topk_softmax", serves=("norm.topk_softmax", "norm.moe_gate"))


@_topk.generic
def _topk_generic(z, *, k, inv_t, xp):
    """z: (..., n) in the compute dtype -> (dense gate, indices (..., k))."""
    order = xp.argsort(z, axis=-1, descending=True, stable=True)
    idx = order[..., :k]
    rank = xp.argsort(order, axis=-1, stable=True)  # inverse permutation: rank of each entry
    mask = rank < k
    mx = xp.max(z, axis=-1, keepdims=True)
    e = xp.where(mask, xp.exp((z - mx) * inv_t), 0.0)
    return e / xp.sum(e, axis=-1, keepdims=True), idx


@_topk.numba(when=lambda z, **kw: numpy_float(z))
def _topk_numba(z, *, k, inv_t, xp):
    from .._numba import norm as nb

    return nb.topk_softmax(z, k, inv_t)


@_topk.cuda(when=lambda z, *, k, **kw: _cuda_float(z) and k <= 64)
def _topk_cuda(z, *, k, inv_t, xp):
    """One thread per row (rows are short: experts); kernel ``topk_softmax_rows<T>`` in _cuda/norm.cu."""
    import cupy
    import numpy as np

    from .._cuda import launch

    n = z.shape[-1]
    rows = cupy.ascontiguousarray(z.reshape(-1, n))
    r = rows.shape[0]
    out = cupy.empty_like(rows)
    idx = cupy.empty((r, k), dtype=cupy.int64)
    launch.elementwise("norm", "topk_softmax_rows", z.dtype, r,
                       (rows, out, idx, r, n, np.int32(k), np.float64(inv_t)), block=128)
    return out.reshape(z.shape), idx.reshape(z.shape[:-1] + (k,))


class TopkSoftmaxRes(NamedTuple):
    p: Any          # the gate, reduced axis last, compute dtype
    inv_t: float
    axis: int
    dtype: Any


def _softmax_vjp(p, dy, inv_t, xp):
    return p * (dy - xp.sum(p * dy, axis=-1, keepdims=True)) * inv_t


@public(logits=Float("... n"), k=Int(1), axis=Axis("logits"), temperature=Positive(), return_indices=Bool())
def topk_softmax(logits: Array, *, k: int, axis: int = -1, temperature: float = 1.0,
                 return_indices: bool = False) -> Array | tuple[Array, Array]:
    r"""Top-k sparse softmax gate: softmax over the k largest logits, zero elsewhere.

    .. math::

        G(s)_i = \mathbb 1\bigl[i \in \mathrm{TopK}(s, k)\bigr]\,
        \frac{\exp(s_i/\tau)}{\sum_{j \in \mathrm{TopK}(s, k)} \exp(s_j/\tau)}.

    This equals softmax, then top-k, then renormalisation (Mixtral's router) and the
    softmax of the gathered top-k logits.  Ties: among equal logits the lowest index is
    selected first (stable order), on every backend and path.  VJP: the softmax VJP restricted
    to the selected set, ∂s = p ⊙ (dy − ⟨p, dy⟩)/τ, zero elsewhere (the selection is piecewise
    constant).  On NumPy float input a fused Numba row kernel selects and normalises in one pass.

    Shazeer et al., "Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts
    Layer" (2017); Nguyen et al., "Statistical Perspective of Top-K Sparse Softmax Gating
    Mixture of Experts" (ICLR 2024).

    Parameters
    ----------
    logits : array (..., n, ...)
    k : int, 1 <= k <= n
    axis : int
        The expert axis.
    temperature : float > 0
    return_indices : bool
        Also return the selected indices (..., k) along ``axis``, by decreasing logit (int64).

    Returns
    -------
    gate : array like ``logits`` (dense, k non-zeros per row summing to 1)
    indices : int64 array, only with ``return_indices=True``

    Examples
    --------
    >>> import numpy as np
    >>> topk_softmax(np.log(np.array([1.0, 4.0, 3.0, 2.0])), k=2)
    array([0.        , 0.57142857, 0.42857143, 0.        ])
    """
    return topk_softmax_fwd(logits, k=k, axis=axis, temperature=temperature, return_indices=return_indices)[0]


def topk_softmax_fwd(logits, *, k, axis=-1, temperature=1.0, return_indices=False):
    xp = compat.array_namespace(logits)
    _check_k(k, logits.shape[axis])
    dt = compat.compute_dtype(logits, xp)
    inv_t = 1.0 / temperature
    p, idx = _topk(move_last(compat.cast(logits, dt, xp), axis, xp), k=k, inv_t=inv_t, xp=xp)
    y = compat.cast(move_back(p, axis, xp), logits.dtype, xp)
    res = TopkSoftmaxRes(p, inv_t, axis, logits.dtype)
    if return_indices:
        return (y, move_back(idx, axis, xp)), res
    return y, res


def topk_softmax_bwd(res: TopkSoftmaxRes, dy):
    xp = compat.array_namespace(res.p)
    if isinstance(dy, tuple):
        dy = dy[0]
    g = move_last(compat.cast(dy, res.p.dtype, xp), res.axis, xp)
    dx = move_back(_softmax_vjp(res.p, g, res.inv_t, xp), res.axis, xp)
    return (compat.cast(dx, res.dtype, xp),)


vjp(topk_softmax, topk_softmax_fwd, topk_softmax_bwd, validate=True)


# ---------------------------------------------------------------- MoE gate
_ACTIVATIONS = (None, "tanh", "sigmoid")


def _act(h, activation, xp):
    if activation is None:
        return h, None
    if activation == "tanh":
        a = xp.tanh(h)
        return a, 1.0 - a * a
    a = sigmoid(h, xp)
    return a, a * (1.0 - a)


class MoeGateRes(NamedTuple):
    p: Any
    dact: Any       # derivative of the activation (None without one)
    inv_t: float
    axis: int
    dtype: Any


@public(logits=Float("... n"), k=Int(1, optional=True), temperature=Positive(), activation=Choice(_ACTIVATIONS),
        axis=Axis("logits"))
def moe_gate(logits: Array, *, k: int | None = None, temperature: float = 1.0, activation: str | None = None,
             axis: int = -1) -> Array:
    r"""Mixture-of-experts gate: softmax(σ(s)/τ), optionally sparsified to the top k.

    .. math::

        G(s) = \mathrm{softmax}\bigl(\sigma(s)/\tau\bigr), \qquad
        G(s)_i = \mathbb 1\bigl[i \in \mathrm{TopK}(\sigma(s), k)\bigr]\,
        \frac{e^{\sigma(s_i)/\tau}}{\sum_{j \in \mathrm{TopK}(\sigma(s), k)} e^{\sigma(s_j)/\tau}}
        \ \ (k \text{ given}),

    with :math:`\sigma` the identity, :math:`\tanh` or the logistic sigmoid (``activation``).

    - ``activation=None, k=None``: dense-to-sparse gate softmax(s/τ) (τ annealed by the caller).
    - ``k`` given: the top-k sparse gate of :func:`topk_softmax` on σ(s)/τ (same tie rule).
    - ``activation="tanh" | "sigmoid"``: the activation dense-to-sparse gate softmax(σ(s)/τ): the
      linear layer's output goes through an activation before the softmax, which removes the
      interaction (a PDE) between τ and the gating parameters that makes maximum-likelihood
      estimation slower than any polynomial rate.  The paper's guarantee needs σ and its
      derivatives to satisfy first- and second-order linear-independence conditions; tanh and
      sigmoid are offered here, but which activations the paper proves admissible was not
      checked against its definitions.

    Nguyen, Nguyen, Ho et al., "Is Temperature Sample Efficient for Softmax Gaussian Mixture of
    Experts?" (ICML 2024); Nie et al., "Dense-to-Sparse Gate for Mixture-of-Experts" (2021).

    Parameters
    ----------
    logits : array (..., n_experts)
        s = Wx + b.
    k : int or None
        Number of experts kept (None: dense).
    temperature : float > 0
    activation : None, "tanh" or "sigmoid"
    axis : int

    Returns
    -------
    array like ``logits``: gate weights summing to 1 along ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> g = moe_gate(np.array([2.0, -1.0, 0.5]), activation="tanh", temperature=0.5)
    >>> round(float(g.sum()), 12)
    1.0
    """
    return moe_gate_fwd(logits, k=k, temperature=temperature, activation=activation, axis=axis)[0]


def moe_gate_fwd(logits, *, k=None, temperature=1.0, activation=None, axis=-1):
    xp = compat.array_namespace(logits)
    n = logits.shape[axis]
    if k is not None:
        _check_k(k, n)
    dt = compat.compute_dtype(logits, xp)
    z = move_last(compat.cast(logits, dt, xp), axis, xp)
    h, dact = _act(z, activation, xp)
    inv_t = 1.0 / temperature
    if k is None or k == n:
        mx = xp.max(h, axis=-1, keepdims=True)
        e = xp.exp((h - mx) * inv_t)
        p = e / xp.sum(e, axis=-1, keepdims=True)
    else:
        p, _ = _topk(h, k=k, inv_t=inv_t, xp=xp)
    y = compat.cast(move_back(p, axis, xp), logits.dtype, xp)
    return y, MoeGateRes(p, dact, inv_t, axis, logits.dtype)


def moe_gate_bwd(res: MoeGateRes, dy):
    xp = compat.array_namespace(res.p)
    g = move_last(compat.cast(dy, res.p.dtype, xp), res.axis, xp)
    dh = _softmax_vjp(res.p, g, res.inv_t, xp)
    if res.dact is not None:
        dh = dh * res.dact
    return (compat.cast(move_back(dh, res.axis, xp), res.dtype, xp),)


vjp(moe_gate, moe_gate_fwd, moe_gate_bwd, validate=True)


# ---------------------------------------------------------------- soft top-k
def _soft_topk_bisect(z, k, alpha, n_iter, xp):
    """Bisection for t with sum_j sigmoid(alpha (z_j + t)) = k along the last axis; returns (p, t)."""
    n = z.shape[-1]
    if k == n:
        return xp.ones_like(z), None
    r = k / n
    c = math.log(r / (1.0 - r)) / alpha
    lo = c - xp.max(z, axis=-1, keepdims=True)
    hi = c - xp.min(z, axis=-1, keepdims=True)
    for _ in range(n_iter):
        mid = lo / 2 + hi / 2          # no overflow of lo + hi at the dtype's range
        s = xp.sum(sigmoid(alpha * (z + mid), xp), axis=-1, keepdims=True)
        below = s < k
        lo = xp.where(below, mid, lo)
        hi = xp.where(below, hi, mid)
    t = lo / 2 + hi / 2
    return sigmoid(alpha * (z + t), xp), t


_soft_topk = Dispatcher("norm.soft_topk")


@_soft_topk.generic
def _soft_topk_generic(z, *, k, alpha, n_iter, xp):
    return _soft_topk_bisect(z, k, alpha, n_iter, xp)[0]


@_soft_topk.numba(when=lambda z, **kw: numpy_float(z))
def _soft_topk_numba(z, *, k, alpha, n_iter, xp):
    from .._numba import norm as nb

    return nb.soft_topk(z, k, alpha, n_iter)


@_soft_topk.cuda(when=lambda z, **kw: _cuda_float(z))
def _soft_topk_cuda(z, *, k, alpha, n_iter, xp):
    """One thread per row; kernel ``soft_topk_rows<T>`` in _cuda/norm.cu (requires k < n)."""
    import cupy
    import numpy as np

    from .._cuda import launch

    n = z.shape[-1]
    rows = cupy.ascontiguousarray(z.reshape(-1, n))
    r = rows.shape[0]
    out = cupy.empty_like(rows)
    c = math.log((k / n) / (1.0 - k / n)) / alpha
    launch.elementwise("norm", "soft_topk_rows", z.dtype, r,
                       (rows, out, r, n, np.float64(k), np.float64(alpha), np.float64(c), np.int32(n_iter)),
                       block=128)
    return out.reshape(z.shape)


class SoftTopkRes(NamedTuple):
    p: Any
    alpha: float
    axis: int
    dtype: Any


@public(x=Float("... n"), k=Int(1), alpha=Positive(), axis=Axis("x"), n_iter=Int(1))
def soft_topk(x: Array, *, k: int, alpha: float = 1.0, axis: int = -1, n_iter: int = 64) -> Array:
    r"""Soft top-k operator: pⱼ = σ(α(xⱼ + t)) with the threshold t chosen so that Σⱼ pⱼ = k.

    .. math::

        p_j = \sigma\bigl(\alpha (x_j + t)\bigr), \qquad t \ \text{such that} \ \sum_j p_j = k,
        \qquad \sigma(u) = \frac{1}{1 + e^{-u}}.

    t is found by bisection on [logit(k/n)/α − max x, logit(k/n)/α − min x] (the sum is
    monotone in t and crosses k inside that interval); ``n_iter`` halvings.  As α → ∞, p tends
    to the indicator of the k largest entries.  The VJP is the analytic implicit one, not
    back-propagation through the bisection: with v = α p(1 − p),

    ::

        ∂x = v ⊙ dy − v ⟨v, dy⟩ / Σv        (J = diag(v) − v vᵀ / Σv).

    Gupta, Chen, Hsieh, Dhillon et al., "Dual-Encoders for Extreme Multi-Label Classification"
    (DEXML, ICLR 2024).

    Parameters
    ----------
    x : array (..., n, ...)
    k : int, 1 <= k <= n (k = n gives all ones)
    alpha : float > 0
        Sharpness.
    axis : int
    n_iter : int >= 1
        Bisection steps (64 reaches float64 resolution of the bracket).

    Returns
    -------
    array like ``x`` with entries in (0, 1) summing to k along ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> p = soft_topk(np.array([3.0, 1.0, 0.0, -2.0]), k=2, alpha=4.0)
    >>> round(float(p.sum()), 10)
    2.0
    """
    return soft_topk_fwd(x, k=k, alpha=alpha, axis=axis, n_iter=n_iter)[0]


def soft_topk_fwd(x, *, k, alpha=1.0, axis=-1, n_iter=64):
    xp = compat.array_namespace(x)
    n = x.shape[axis]
    _check_k(k, n)
    dt = compat.compute_dtype(x, xp)
    z = move_last(compat.cast(x, dt, xp), axis, xp)
    p = xp.ones_like(z) if k == n else _soft_topk(z, k=k, alpha=float(alpha), n_iter=n_iter, xp=xp)
    return compat.cast(move_back(p, axis, xp), x.dtype, xp), SoftTopkRes(p, float(alpha), axis, x.dtype)


def _soft_topk_vjp(p, alpha, w, xp):
    """Given w = v * dy (v = alpha p (1 - p)), the cotangent of x along the last axis."""
    v = alpha * p * (1.0 - p)
    sv = xp.sum(v, axis=-1, keepdims=True)
    sw = xp.sum(w, axis=-1, keepdims=True)
    return w - v * xp.where(sv > 0, sw / xp.where(sv > 0, sv, 1.0), 0.0)


def soft_topk_bwd(res: SoftTopkRes, dy):
    p, alpha = res.p, res.alpha
    xp = compat.array_namespace(p)
    g = move_last(compat.cast(dy, p.dtype, xp), res.axis, xp)
    w = alpha * p * (1.0 - p) * g
    return (compat.cast(move_back(_soft_topk_vjp(p, alpha, w, xp), res.axis, xp), res.dtype, xp),)


vjp(soft_topk, soft_topk_fwd, soft_topk_bwd, validate=True)


class SoftTopkLossRes(NamedTuple):
    p: Any
    tg: Any
    inv_np: Any
    alpha: float
    reduction: str
    lshape: tuple
    dtype: Any


def _multihot_example(rng, dtype):
    t = (rng.random((3, 5)) < 0.4).astype(dtype)
    t[:, 0] = 1
    return (rng.standard_normal((3, 5)).astype(dtype), t), {"k": 2}


@public(logits=Float("... c"), targets=ArrayRole("... c", dtype="any", finite=True, sign="nonnegative"), k=Int(1),
        alpha=Positive(), n_iter=Int(1), reduction=Choice(REDUCTIONS), example=_multihot_example)
def soft_topk_loss(logits: Array, targets: Array, *, k: int, alpha: float = 1.0, n_iter: int = 64,
                   reduction: str = "mean") -> Array:
    r"""Soft top-k loss of DEXML: ``L = −(1/|P|) Σ_{p ∈ P} log p_p`` with ``p = soft_topk(logits, k)``.

    .. math::

        L = -\frac{1}{|P|} \sum_{j \in P} \log p_j, \qquad p = \mathrm{soft\_topk}(s, k),

    with :math:`P` the positive labels of the row (``targets``).

    Pushes every positive label into the soft top-k.  log p is computed as −softplus(−α(s + t))
    for stability, and the VJP is the analytic one of :func:`soft_topk` combined with
    ``∂L/∂p_p = −1/(|P| p_p)`` (the 1/p cancels against v = α p(1−p)).  Rows without positives
    contribute 0.

    Gupta et al., "Dual-Encoders for Extreme Multi-Label Classification" (DEXML, ICLR 2024).

    Parameters
    ----------
    logits : array (..., C)
        Scores s.
    targets : array (..., C)
        Multi-hot (0/1, float or bool); not differentiated.
    k : int, 1 <= k <= C
        Size of the soft top-k.
    alpha : float > 0
        Sharpness α of :func:`soft_topk`.
    n_iter : int
        Bisection steps of :func:`soft_topk`.
    reduction : {"mean", "sum", "none"}
        Over the leading axes.

    Returns
    -------
    scalar array (or (...) with ``reduction="none"``).

    Examples
    --------
    >>> import numpy as np
    >>> logits = np.array([[3.0, 2.0, -1.0, -2.0]])
    >>> targets = np.array([[1.0, 1.0, 0.0, 0.0]])
    >>> bool(soft_topk_loss(logits, targets, k=2, alpha=4.0) < soft_topk_loss(logits, targets[:, ::-1], k=2, alpha=4.0))
    True
    """

    return soft_topk_loss_fwd(logits, targets, k=k, alpha=alpha, n_iter=n_iter, reduction=reduction)[0]


def soft_topk_loss_fwd(logits, targets, *, k, alpha=1.0, n_iter=64, reduction="mean"):
    xp = compat.array_namespace(logits, targets)
    if tuple(targets.shape) != tuple(logits.shape):
        raise ValueError(f"targets has shape {tuple(targets.shape)}, expected {tuple(logits.shape)} like logits")
    _check_k(k, logits.shape[-1])
    alpha = float(alpha)
    dt = compat.compute_dtype(logits, xp)
    z = compat.cast(logits, dt, xp)
    tg = xp.astype(targets, dt)
    p, t = _soft_topk_bisect(z, k, alpha, n_iter, xp)
    npos = xp.sum(tg, axis=-1, keepdims=True)
    inv_np = xp.where(npos > 0, 1.0 / xp.where(npos > 0, npos, 1.0), 0.0)
    if t is None:
        logp = xp.zeros_like(z)
    else:
        u = alpha * (z + t)
        logp = -(xp.maximum(-u, 0.0) + xp.log1p(xp.exp(-xp.abs(u))))  # log sigmoid(u) = -softplus(-u)
    loss = -xp.sum(tg * logp, axis=-1) * inv_np[..., 0]
    y = reduce_loss(loss, reduction, xp)
    res = SoftTopkLossRes(p, tg, inv_np, alpha, reduction, tuple(loss.shape), logits.dtype)
    return compat.cast(y, logits.dtype, xp), res


def soft_topk_loss_bwd(res: SoftTopkLossRes, dy):
    p, alpha = res.p, res.alpha
    xp = compat.array_namespace(p)
    dy = compat.cast(dy, p.dtype, xp)
    if res.reduction == "none":
        g = dy
    else:
        scale = 1.0 / max(1, math.prod(res.lshape)) if res.reduction == "mean" else 1.0
        g = xp.broadcast_to(dy * scale, res.lshape) if res.lshape else dy * scale
    # w = v * dL/dp = -g alpha (1 - p) tg / |P|
    w = -g[..., None] * alpha * (1.0 - p) * res.tg * res.inv_np
    return compat.cast(_soft_topk_vjp(p, alpha, w, xp), res.dtype, xp), None


vjp(soft_topk_loss, soft_topk_loss_fwd, soft_topk_loss_bwd, nondiff_argnums=(1,), validate=True)
