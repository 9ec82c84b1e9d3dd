"""Assignment: exact linear assignment (batched, SciPy underneath) and the differentiable Sinkhorn operator."""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.typing import Array, Seed as SeedT
from .._lib.api import public, public_class, vjp
from .._lib.roles import Bool, Cost, Float, Int, Positive, Seed
from . import _common as cm


@public_class
class Assignment(NamedTuple):
    """Result of :func:`linear_assignment`: ``perm[..., i]`` is the column given to row ``i`` (−1 if none),
    ``cost[...]`` the total cost of the assignment."""

    perm: object
    cost: object


@public(cost=Cost("... n m"), maximize=Bool(), allow_more_rows=Bool(), sizes={"n": 4, "m": 5})
def linear_assignment(cost: Array, *, maximize: bool = False, allow_more_rows: bool = False) -> Assignment:
    r"""Exact linear assignment problem (LAP), batched over leading axes.

    For each matrix C (n × m, n ≤ m) finds the injective map σ: rows → columns minimising
    (or with ``maximize=True`` maximising) the total cost

    .. math::

        \sigma^\star = \arg\min_{\sigma\ \text{injective}} \sum_i C_{i\,\sigma(i)}.

    Solved by
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
    n, m = cost.shape[-2], cost.shape[-1]
    if n > m and not allow_more_rows:
        raise ValueError(f"linear_assignment: cost has more rows than columns (shape {tuple(cost.shape)}): not every "
                         "row can be assigned; pass allow_more_rows=True to leave the extra rows unassigned "
                         "(perm = -1), or transpose the cost")
    if not compat.is_concrete(cost):
        raise TypeError("linear_assignment: cost must be a concrete array: it runs SciPy on the host and cannot be "
                        "traced (e.g. under jax.jit)")
    from scipy.optimize import linear_sum_assignment

    xp = compat.array_namespace(cost)
    c = compat.to_numpy(cost).astype(np.float64, copy=False)
    top = float(np.max(np.abs(c))) if c.size else 0.0
    s = float(2.0 ** np.floor(np.log2(top))) if top > 0 else 1.0    # exact: same assignment, no overflow inside
    batch = c.shape[:-2]
    flat = c.reshape((-1, n, m))
    perm = np.full((flat.shape[0], n), -1, dtype=np.int64)
    total = np.zeros(flat.shape[0], dtype=np.float64)
    for b in range(flat.shape[0]):
        r, col = linear_sum_assignment(flat[b] / s, maximize=bool(maximize))
        perm[b, r] = col
        total[b] = flat[b][r, col].sum()
    perm = perm.reshape(batch + (n,))
    total = total.reshape(batch)
    out_perm = compat.from_numpy_like(perm, cost)
    out_cost = compat.cast(compat.from_numpy_like(np.asarray(total), cost), cost.dtype, xp)
    return Assignment(out_perm, out_cost)


# ---------------------------------------------------------------- Sinkhorn operator
def _gumbel(shape, seed, dtype_np):
    rng = cm.rng(seed)
    u = rng.uniform(np.finfo(np.float64).tiny, 1.0, size=shape)
    return (-np.log(-np.log(u))).astype(dtype_np)


@public(log_alpha=Float("... n n", finite=True), n_iter=Int(1), tau=Positive(), gumbel_noise=Bool(), seed=Seed())
def sinkhorn_normalize(log_alpha: Array, *, n_iter: int = 20, tau: float = 1.0, gumbel_noise: bool = False,
                       seed: SeedT = None) -> Array:
    r"""Sinkhorn operator: a doubly-stochastic relaxation of a permutation, unrolled and differentiable.

    Starting from :math:`X = (\log\alpha + g)/\tau` (g = 0, or Gumbel noise with ``gumbel_noise=True``), it
    alternates L = ``n_iter`` times the row and column normalisations in the log domain,

    .. math::

        X \leftarrow X - \mathrm{LSE}_{\text{row}}(X),\qquad X \leftarrow X - \mathrm{LSE}_{\text{col}}(X),

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
    return _sinkhorn_normalize(log_alpha, n_iter, float(tau), gumbel_noise, seed)[0]


class SinkhornNormalizeRes(NamedTuple):
    """Residuals of sinkhorn_normalize: every iterate (the unrolled VJP replays them backwards)."""
    iters: list
    tau: float
    dtype: Any


def _sinkhorn_normalize(log_alpha, n_iter, tau, gumbel_noise, seed):
    xp = compat.array_namespace(log_alpha)
    dt = compat.compute_dtype(log_alpha, xp)
    x = compat.cast(log_alpha, dt, xp)
    if gumbel_noise:
        g = compat.from_numpy_like(_gumbel(tuple(log_alpha.shape), seed, cm.np_dtype(x)), log_alpha)
        x = x + g
    x = x / tau
    iters = []
    for _ in range(n_iter):
        x = x - cm.lse(x, -1, xp, keepdims=True)
        iters.append(x)
        x = x - cm.lse(x, -2, xp, keepdims=True)
        iters.append(x)
    return compat.cast(xp.exp(x), log_alpha.dtype, xp), SinkhornNormalizeRes(iters, tau, log_alpha.dtype)


def sinkhorn_normalize_fwd(log_alpha, *, n_iter=20, tau=1.0, gumbel_noise=False, seed=None):
    return _sinkhorn_normalize(log_alpha, n_iter, float(tau), gumbel_noise, seed)


def sinkhorn_normalize_bwd(res: SinkhornNormalizeRes, dy):
    iters, tau, dtype = res
    xp = compat.array_namespace(iters[-1])
    x = iters[-1]
    dy = compat.cast(dy, x.dtype, xp)
    g = dy * xp.exp(x)  # through exp
    # y = x - lse(x, axis): dx = dy - softmax(x) * sum(dy, axis) = dy - exp(y) * sum(dy, axis)
    for k in range(len(iters) - 1, -1, -1):
        axis = -1 if k % 2 == 0 else -2
        g = g - xp.exp(iters[k]) * xp.sum(g, axis=axis, keepdims=True)
    g = g / tau
    return (compat.cast(g, dtype, xp),)


vjp(sinkhorn_normalize, sinkhorn_normalize_fwd, sinkhorn_normalize_bwd, validate=True)
