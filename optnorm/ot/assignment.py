"""Assignment: exact linear assignment (batched, SciPy underneath) and the differentiable Sinkhorn operator."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._lib import compat, ops, validate

__all__ = ["linear_assignment", "Assignment", "sinkhorn_normalize"]


class Assignment(NamedTuple):
    """Result of :func:`linear_assignment`: ``perm[..., i]`` is the column given to row ``i`` (−1 if none),
    ``cost[...]`` the total cost of the assignment."""

    perm: object
    cost: object


def linear_assignment(cost, *, maximize=False, allow_more_rows=False):
    """Exact linear assignment problem (LAP), batched over leading axes.

    For each matrix C (n × m, n ≤ m) finds the injective map σ: rows → columns minimising
    (or with ``maximize=True`` maximising) Σᵢ C[i, σ(i)].  Solved by
    :func:`scipy.optimize.linear_sum_assignment` (shortest augmenting path, Crouse 2016) on
    the host: the cost matrix is copied to NumPy and the result is put back into the input's
    library and device.  Used e.g. for permutation-based weight matching (Ainsworth, Hayase,
    Srinivasa, "Git Re-Basin", 2023) and for Hungarian matching in detection.

    Parameters
    ----------
    cost : array (..., n, m)
        Real cost matrices; NaN or inf raises.
    maximize : bool
        Maximise the total instead of minimising it.
    allow_more_rows : bool
        With n > m only m rows can be assigned; this raises unless allowed, in which case the
        unassigned rows get −1 in ``perm``.

    Returns
    -------
    Assignment
        ``perm``: integer array (..., n) (int64), the column of each row; ``cost``: array (...)
        in the cost's dtype, the total cost Σᵢ C[i, perm[i]].

    Examples
    --------
    >>> import numpy as np
    >>> C = np.array([[4.0, 1, 3], [2, 0, 5], [3, 2, 2]])
    >>> perm, total = linear_assignment(C)
    >>> perm.tolist(), float(total)
    ([1, 0, 2], 5.0)
    """
    xp = compat.array_namespace(cost)
    validate.check_float(cost, "cost", xp)
    validate.check_matrix(cost, "cost")
    n, m = cost.shape[-2], cost.shape[-1]
    if n > m and not allow_more_rows:
        raise ValueError(f"cost has more rows than columns (shape {tuple(cost.shape)}): not every row can be "
                         "assigned; pass allow_more_rows=True to leave the extra rows unassigned (perm = -1), "
                         "or transpose the cost")
    if not compat.is_concrete(cost):
        raise TypeError("cost must be a concrete array: linear_assignment runs SciPy on the host and cannot be "
                        "traced (e.g. under jax.jit)")
    from scipy.optimize import linear_sum_assignment

    c = compat.to_numpy(cost).astype(np.float64, copy=False)
    if not np.all(np.isfinite(c)):
        raise ValueError("cost contains NaN or inf")
    batch = c.shape[:-2]
    flat = c.reshape((-1, n, m))
    perm = np.full((flat.shape[0], n), -1, dtype=np.int64)
    total = np.zeros(flat.shape[0], dtype=np.float64)
    for b in range(flat.shape[0]):
        r, col = linear_sum_assignment(flat[b], maximize=bool(maximize))
        perm[b, r] = col
        total[b] = flat[b][r, col].sum()
    perm = perm.reshape(batch + (n,))
    total = total.reshape(batch)
    out_perm = compat.from_numpy_like(perm, cost)
    out_cost = compat.from_numpy_like(np.asarray(total), cost)
    if out_cost.dtype != cost.dtype:
        out_cost = xp.astype(out_cost, cost.dtype)
    return Assignment(out_perm, out_cost)


# ---------------------------------------------------------------- Sinkhorn operator
def _lse(x, axis, xp):
    mx = xp.max(x, axis=axis, keepdims=True)
    mx = xp.where(xp.isfinite(mx), mx, 0.0)
    return mx + xp.log(xp.sum(xp.exp(x - mx), axis=axis, keepdims=True))


def _gumbel(shape, seed, dtype_np):
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    u = rng.uniform(np.finfo(np.float64).tiny, 1.0, size=shape)
    return (-np.log(-np.log(u))).astype(dtype_np)


def sinkhorn_normalize(log_alpha, *, n_iter=20, tau=1.0, gumbel_noise=False, seed=None):
    """Sinkhorn operator: a doubly-stochastic relaxation of a permutation, unrolled and differentiable.

    Starting from X = (log α + g)/τ (g = 0, or Gumbel noise with ``gumbel_noise=True``), it
    alternates L = ``n_iter`` times the row and column normalisations in the log domain,

    ::

        X ← X − logsumexp_row(X),   X ← X − logsumexp_col(X),

    and returns exp(X).  As τ → 0 (and L → ∞) the result tends to the permutation matrix
    maximising ⟨P, log α⟩.  The VJP is the exact one of the unrolled iterations (each
    normalisation's Jacobian applied in reverse, iterates kept from the forward).

    Santa Cruz, Fernando, Cherian, Gould, "DeepPermNet: Visual Permutation Learning" (CVPR 2017);
    Mena, Belanger, Linderman, Snoek, "Learning Latent Permutations with Gumbel-Sinkhorn
    Networks" (ICLR 2018).  Equals :func:`optnorm.ot.sinkhorn` with uniform marginals,
    cost −log α and ε = τ after the same number of iterations.

    Parameters
    ----------
    log_alpha : array (..., n, n)
        Scores; batched over leading axes.
    n_iter : int >= 1
    tau : float > 0
        Temperature.
    gumbel_noise : bool
        Add i.i.d. Gumbel(0, 1) noise (Gumbel-Sinkhorn); drawn on the host from ``seed``.
    seed : int, numpy Generator or None
        Seed of the noise (reproducible for an int).

    Returns
    -------
    array (..., n, n), doubly stochastic up to the last row normalisation (columns sum to 1
    exactly, rows approximately).

    Examples
    --------
    >>> import numpy as np
    >>> P = sinkhorn_normalize(np.array([[3.0, 0.0], [0.0, 3.0]]), n_iter=50)
    >>> P.sum(axis=0).round(6), P.sum(axis=1).round(6)
    (array([1., 1.]), array([1., 1.]))
    """
    return sinkhorn_normalize_fwd(log_alpha, n_iter=n_iter, tau=tau, gumbel_noise=gumbel_noise, seed=seed)[0]


def sinkhorn_normalize_fwd(log_alpha, *, n_iter=20, tau=1.0, gumbel_noise=False, seed=None):
    xp = compat.array_namespace(log_alpha)
    validate.check_float(log_alpha, "log_alpha", xp)
    validate.check_square(log_alpha, "log_alpha")
    n_iter = validate.check_int(n_iter, "n_iter", low=1)
    tau = validate.check_positive(tau, "tau")
    dt = compat.compute_dtype(log_alpha, xp)
    x = xp.astype(log_alpha, dt) if log_alpha.dtype != dt else log_alpha
    if gumbel_noise:
        np_dt = np.float32 if dt == xp.float32 else np.float64
        g = compat.from_numpy_like(_gumbel(tuple(log_alpha.shape), seed, np_dt), log_alpha)
        x = x + g
    x = x / tau
    iters = []
    for _ in range(n_iter):
        x = x - _lse(x, -1, xp)
        iters.append(x)
        x = x - _lse(x, -2, xp)
        iters.append(x)
    y = xp.exp(x)
    res = (iters, tau, log_alpha.dtype)
    return (xp.astype(y, log_alpha.dtype) if y.dtype != log_alpha.dtype else y), res


def sinkhorn_normalize_bwd(res, dy):
    iters, tau, dtype = res
    xp = compat.array_namespace(iters[-1])
    x = iters[-1]
    dy = xp.astype(dy, x.dtype) if dy.dtype != x.dtype else dy
    g = dy * xp.exp(x)  # through exp
    # y = x - lse(x, axis): dx = dy - softmax(x) * sum(dy, axis) = dy - exp(y) * sum(dy, axis)
    for k in range(len(iters) - 1, -1, -1):
        axis = -1 if k % 2 == 0 else -2
        g = g - xp.exp(iters[k]) * xp.sum(g, axis=axis, keepdims=True)
    g = g / tau
    return (xp.astype(g, dtype) if g.dtype != dtype else g,)


ops.register("ot.sinkhorn_normalize", sinkhorn_normalize, sinkhorn_normalize_fwd, sinkhorn_normalize_bwd)
