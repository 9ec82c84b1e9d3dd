"""Sparse gates: top-k softmax (MoE routing), the dense-to-sparse / activation gate, and the soft top-k operator."""
from __future__ import annotations

import math

from .._lib import compat, ops, validate
from .._lib.dispatch import Dispatcher, numpy_float

__all__ = ["topk_softmax", "moe_gate", "soft_topk", "soft_topk_loss"]


def _check_k(k, n, name="k"):
    k = validate.check_int(k, name, low=1)
    if k > n:
        raise ValueError(f"{name}={k} is larger than the size {n} of the reduced axis")
    return k


def _move(x, axis, xp):
    return x if axis == x.ndim - 1 else xp.moveaxis(x, axis, -1)


def _unmove(x, axis, xp):
    return x if axis == x.ndim - 1 else xp.moveaxis(x, -1, axis)


# ---------------------------------------------------------------- top-k softmax
_topk = Dispatcher("norm.topk_softmax")


@_topk.generic
def _(z, *, k, inv_t, xp):
    """z: (..., n) in the compute dtype -> (dense gate, indices (..., k))."""
    order = xp.argsort(z, axis=-1, descending=True, stable=True)
    idx = order[..., :k]
    rank = xp.argsort(order, axis=-1, stable=True)  # inverse permutation: rank of each entry
    mask = rank < k
    mx = xp.max(z, axis=-1, keepdims=True)
    e = xp.where(mask, xp.exp((z - mx) * inv_t), 0.0)
    return e / xp.sum(e, axis=-1, keepdims=True), idx


@_topk.numba(when=lambda z, **kw: numpy_float(z))
def _(z, *, k, inv_t, xp):
    import numpy as np

    from .._numba import norm_wave2

    n = z.shape[-1]
    rows = np.ascontiguousarray(z.reshape(-1, n))
    out = np.empty_like(rows)
    idx = np.empty((rows.shape[0], k), dtype=np.int64)
    import numba

    chunks = max(1, min(rows.shape[0], 4 * numba.get_num_threads()))
    norm_wave2.topk_softmax_rows(rows, k, float(inv_t), out, idx, chunks)
    return out.reshape(z.shape), idx.reshape(z.shape[:-1] + (k,))


def _cuda_float(z):
    return str(z.dtype) in ("float32", "float64")


@_topk.cuda(when=lambda z, *, k, **kw: _cuda_float(z) and k <= 64)
def _(z, *, k, inv_t, xp):
    """One thread per row (rows are short: experts); kernel ``topk_softmax_rows<T>`` in _cuda/wave2.cu."""
    import cupy
    import numpy as np

    from .._cuda import loader

    n = z.shape[-1]
    rows = cupy.ascontiguousarray(z.reshape(-1, n))
    R = rows.shape[0]
    out = cupy.empty_like(rows)
    idx = cupy.empty((R, k), dtype=cupy.int64)
    if R:
        ker = loader.kernel("norm", "topk_softmax_rows", z.dtype)
        ker(((R + 127) // 128,), (128,), (rows, out, idx, np.int64(R), np.int64(n), np.int32(k), np.float64(inv_t)))
    return out.reshape(z.shape), idx.reshape(z.shape[:-1] + (k,))


def _prep_logits(logits, name, axis):
    xp = compat.array_namespace(logits)
    validate.check_float(logits, name, xp)
    if logits.ndim < 1:
        raise ValueError(f"{name} must have at least 1 dimension, got a 0-d array")
    ax = validate.check_axis(axis, logits.ndim)
    return xp, ax


def topk_softmax(logits, *, k, axis=-1, temperature=1.0, return_indices=False):
    """Top-k sparse softmax gate: softmax over the k largest logits, zero elsewhere.

    G(s)ᵢ = 1[i ∈ TopK(s, k)] · exp(sᵢ/τ) / Σ_{j ∈ TopK(s, k)} exp(sⱼ/τ).

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
    xp, ax = _prep_logits(logits, "logits", axis)
    k = _check_k(k, logits.shape[ax])
    t = validate.check_positive(temperature, "temperature")
    dt = compat.compute_dtype(logits, xp)
    z = _move(xp.astype(logits, dt) if logits.dtype != dt else logits, ax, xp)
    p, idx = _topk(z, k=k, inv_t=1.0 / t, xp=xp)
    y = _unmove(p, ax, xp)
    y = xp.astype(y, logits.dtype) if y.dtype != logits.dtype else y
    res = (p, t, ax, logits.dtype)
    if return_indices:
        return (y, _unmove(idx, ax, xp)), res
    return y, res


def _softmax_vjp(p, dy, inv_t, xp):
    return p * (dy - xp.sum(p * dy, axis=-1, keepdims=True)) * inv_t


def topk_softmax_bwd(res, dy):
    p, t, ax, dtype = res
    xp = compat.array_namespace(p)
    if isinstance(dy, tuple):
        dy = dy[0]
    g = _move(xp.astype(dy, p.dtype) if dy.dtype != p.dtype else dy, ax, xp)
    dx = _unmove(_softmax_vjp(p, g, 1.0 / t, xp), ax, xp)
    return (xp.astype(dx, dtype) if dx.dtype != dtype else dx,)


ops.register("norm.topk_softmax", topk_softmax, topk_softmax_fwd, topk_softmax_bwd)


# ---------------------------------------------------------------- MoE gate
_ACTIVATIONS = (None, "tanh", "sigmoid")


def _sigmoid(u, xp):
    e = xp.exp(-xp.abs(u))
    return xp.where(u >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _act(h, activation, xp):
    if activation is None:
        return h, None
    if activation == "tanh":
        a = xp.tanh(h)
        return a, 1.0 - a * a
    a = _sigmoid(h, xp)
    return a, a * (1.0 - a)


def moe_gate(logits, *, k=None, temperature=1.0, activation=None, axis=-1):
    """Mixture-of-experts gate: softmax(σ(s)/τ), optionally sparsified to the top k.

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
    xp, ax = _prep_logits(logits, "logits", axis)
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    t = validate.check_positive(temperature, "temperature")
    n = logits.shape[ax]
    if k is not None:
        k = _check_k(k, n)
    dt = compat.compute_dtype(logits, xp)
    z = _move(xp.astype(logits, dt) if logits.dtype != dt else logits, ax, xp)
    h, dact = _act(z, activation, xp)
    if k is None or k == n:
        mx = xp.max(h, axis=-1, keepdims=True)
        e = xp.exp((h - mx) / t)
        p = e / xp.sum(e, axis=-1, keepdims=True)
    else:
        p, _ = _topk(h, k=k, inv_t=1.0 / t, xp=xp)
    y = _unmove(p, ax, xp)
    return (xp.astype(y, logits.dtype) if y.dtype != logits.dtype else y), (p, dact, t, ax, logits.dtype)


def moe_gate_bwd(res, dy):
    p, dact, t, ax, dtype = res
    xp = compat.array_namespace(p)
    g = _move(xp.astype(dy, p.dtype) if dy.dtype != p.dtype else dy, ax, xp)
    dh = _softmax_vjp(p, g, 1.0 / t, xp)
    if dact is not None:
        dh = dh * dact
    dx = _unmove(dh, ax, xp)
    return (xp.astype(dx, dtype) if dx.dtype != dtype else dx,)


ops.register("norm.moe_gate", moe_gate, moe_gate_fwd, moe_gate_bwd)


# ---------------------------------------------------------------- soft top-k
_soft_topk_paths = Dispatcher("norm.soft_topk")


@_soft_topk_paths.generic
def _(z, *, k, alpha, n_iter, xp):
    return _soft_topk_bisect(z, k, alpha, n_iter, xp)[0]


@_soft_topk_paths.numba(when=lambda z, **kw: numpy_float(z))
def _(z, *, k, alpha, n_iter, xp):
    import numpy as np

    from .._numba import norm_wave2

    n = z.shape[-1]
    rows = np.ascontiguousarray(z.reshape(-1, n))
    out = np.empty_like(rows)
    norm_wave2.soft_topk_rows(rows, k, float(alpha), n_iter, out)
    return out.reshape(z.shape)


@_soft_topk_paths.cuda(when=lambda z, **kw: _cuda_float(z))
def _(z, *, k, alpha, n_iter, xp):
    """One thread per row; kernel ``soft_topk_rows<T>`` in _cuda/wave2.cu (requires k < n)."""
    import cupy
    import numpy as np

    from .._cuda import loader

    n = z.shape[-1]
    rows = cupy.ascontiguousarray(z.reshape(-1, n))
    R = rows.shape[0]
    out = cupy.empty_like(rows)
    r = k / n
    c = math.log(r / (1.0 - r)) / alpha
    if R:
        ker = loader.kernel("norm", "soft_topk_rows", z.dtype)
        ker(((R + 127) // 128,), (128,), (rows, out, np.int64(R), np.int64(n), np.float64(k), np.float64(alpha),
                                           np.float64(c), np.int32(n_iter)))
    return out.reshape(z.shape)


def _soft_topk_core(z, k, alpha, n_iter, xp):
    """p = σ(α(z + t)) with Σⱼ pⱼ = k along the last axis (bisection for t; fast path on NumPy)."""
    if k == z.shape[-1]:
        return xp.ones_like(z)
    return _soft_topk_paths(z, k=k, alpha=alpha, n_iter=n_iter, xp=xp)


def _soft_topk_bisect(z, k, alpha, n_iter, xp):
    """Bisection for t with Σⱼ σ(α(zⱼ + t)) = k along the last axis; returns (p, t)."""
    n = z.shape[-1]
    r = k / n
    if k == n:
        return xp.ones_like(z), None
    c = math.log(r / (1.0 - r)) / alpha
    lo = c - xp.max(z, axis=-1, keepdims=True)
    hi = c - xp.min(z, axis=-1, keepdims=True)
    for _ in range(n_iter):
        mid = (lo + hi) / 2
        s = xp.sum(_sigmoid(alpha * (z + mid), xp), axis=-1, keepdims=True)
        below = s < k
        lo = xp.where(below, mid, lo)
        hi = xp.where(below, hi, mid)
    t = (lo + hi) / 2
    return _sigmoid(alpha * (z + t), xp), t


def soft_topk(x, *, k, alpha=1.0, axis=-1, n_iter=64):
    """Soft top-k operator: pⱼ = σ(α(xⱼ + t)) with the threshold t chosen so that Σⱼ pⱼ = k.

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
    xp, ax = _prep_logits(x, "x", axis)
    k = _check_k(k, x.shape[ax])
    alpha = validate.check_positive(alpha, "alpha")
    n_iter = validate.check_int(n_iter, "n_iter", low=1)
    dt = compat.compute_dtype(x, xp)
    z = _move(xp.astype(x, dt) if x.dtype != dt else x, ax, xp)
    p = _soft_topk_core(z, k, alpha, n_iter, xp)
    y = _unmove(p, ax, xp)
    return (xp.astype(y, x.dtype) if y.dtype != x.dtype else y), (p, alpha, ax, x.dtype)


def _soft_topk_vjp(p, alpha, w, xp):
    """Given w = v ⊙ dy (v = α p(1−p)), the cotangent of x along the last axis."""
    v = alpha * p * (1.0 - p)
    sv = xp.sum(v, axis=-1, keepdims=True)
    sw = xp.sum(w, axis=-1, keepdims=True)
    return w - v * xp.where(sv > 0, sw / xp.where(sv > 0, sv, 1.0), 0.0)


def soft_topk_bwd(res, dy):
    p, alpha, ax, dtype = res
    xp = compat.array_namespace(p)
    g = _move(xp.astype(dy, p.dtype) if dy.dtype != p.dtype else dy, ax, xp)
    w = alpha * p * (1.0 - p) * g
    dx = _unmove(_soft_topk_vjp(p, alpha, w, xp), ax, xp)
    return (xp.astype(dx, dtype) if dx.dtype != dtype else dx,)


ops.register("norm.soft_topk", soft_topk, soft_topk_fwd, soft_topk_bwd)


def _reduce(loss, reduction, xp):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return xp.sum(loss)
    return xp.mean(loss)


def soft_topk_loss(logits, targets, *, k, alpha=1.0, n_iter=64, reduction="mean"):
    """Soft top-k loss of DEXML: ``L = −(1/|P|) Σ_{p ∈ P} log p_p`` with ``p = soft_topk(logits, k)``.

    Pushes every positive label into the soft top-k.  log p is computed as −softplus(−α(s + t))
    for stability, and the VJP is the analytic one of :func:`soft_topk` combined with
    ``∂L/∂p_p = −1/(|P| p_p)`` (the 1/p cancels against v = α p(1−p)).  Rows without positives
    contribute 0.

    Gupta et al., "Dual-Encoders for Extreme Multi-Label Classification" (DEXML, ICLR 2024).

    Parameters
    ----------
    logits : array (..., C)
    targets : array (..., C)
        Multi-hot (0/1, float or bool); not differentiated.
    k : int, 1 <= k <= C
    alpha : float > 0
    n_iter : int
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    scalar array (or (...) with ``reduction="none"``).
    """
    return soft_topk_loss_fwd(logits, targets, k=k, alpha=alpha, n_iter=n_iter, reduction=reduction)[0]


def _targets(targets, logits, xp):
    validate.check_array(targets, "targets")
    if tuple(targets.shape) != tuple(logits.shape):
        raise ValueError(f"targets has shape {tuple(targets.shape)}, expected {tuple(logits.shape)} like logits")
    return targets


def soft_topk_loss_fwd(logits, targets, *, k, alpha=1.0, n_iter=64, reduction="mean"):
    xp, _ = _prep_logits(logits, "logits", -1)
    xp = validate.check_same_namespace(logits=logits, targets=targets)
    _targets(targets, logits, xp)
    validate.check_in(reduction, ("mean", "sum", "none"), "reduction")
    k = _check_k(k, logits.shape[-1])
    alpha = validate.check_positive(alpha, "alpha")
    n_iter = validate.check_int(n_iter, "n_iter", low=1)
    dt = compat.compute_dtype(logits, xp)
    z = xp.astype(logits, dt) if logits.dtype != dt else logits
    tg = xp.astype(targets, dt)
    p, t = _soft_topk_bisect(z, k, alpha, n_iter, xp)
    npos = xp.sum(tg, axis=-1, keepdims=True)
    inv_np = xp.where(npos > 0, 1.0 / xp.where(npos > 0, npos, 1.0), 0.0)
    if t is None:
        logp = xp.zeros_like(z)
    else:
        u = alpha * (z + t)
        logp = -(xp.maximum(-u, 0.0) + xp.log1p(xp.exp(-xp.abs(u))))  # log σ(u) = −softplus(−u)
    loss = -xp.sum(tg * logp, axis=-1) * inv_np[..., 0]
    y = _reduce(loss, reduction, xp)
    res = (p, tg, inv_np, alpha, reduction, tuple(loss.shape), logits.dtype)
    return (xp.astype(y, logits.dtype) if y.dtype != logits.dtype else y), res


def soft_topk_loss_bwd(res, dy):
    p, tg, inv_np, alpha, reduction, lshape, dtype = res
    xp = compat.array_namespace(p)
    dy = xp.astype(dy, p.dtype) if dy.dtype != p.dtype else dy
    if reduction == "none":
        g = dy
    else:
        scale = 1.0 / max(1, math.prod(lshape)) if reduction == "mean" else 1.0
        g = xp.broadcast_to(dy * scale, lshape) if lshape else dy * scale
    # w = v ⊙ dL/dp = −g α (1 − p) tg / |P|
    w = -g[..., None] * alpha * (1.0 - p) * tg * inv_np
    dx = _soft_topk_vjp(p, alpha, w, xp)
    return (xp.astype(dx, dtype) if dx.dtype != dtype else dx, None)


ops.register("norm.soft_topk_loss", soft_topk_loss, soft_topk_loss_fwd, soft_topk_loss_bwd, nondiff_argnums=(1,))
