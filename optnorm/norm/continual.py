"""AdaB²N for continual learning: task-balanced sample weights for batch statistics, and the adaptive momentum."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.roles import Array as ArrayRole, Float, Int, Probability, Scalar
from .._lib.typing import Array


class TaskBalancedRes(NamedTuple):
    onehot: Any
    c: Any
    pi: Any
    e_theta: Any     # exp(task_logits - M)
    S: Any           # sum of the concentrations, in units of exp(M)
    scale: Any       # exp(-M): the units of S
    has_logits: bool
    has_counts: bool
    dtl: Any
    dtc: Any


def _tbw_example(rng, dtype):
    return (rng.integers(0, 3, size=6), (0.5 * rng.standard_normal(3)).astype(dtype),
            rng.integers(0, 5, size=3).astype(dtype)), {}


@public(task_ids=ArrayRole("b", dtype="int"), task_logits=Float("t", optional=True),
        task_counts=Float("t", optional=True, sign="nonnegative"), num_tasks=Int(1, optional=True),
        example=_tbw_example)
def task_balanced_weights(task_ids: Array, task_logits: Array | None = None, task_counts: Array | None = None, *,
                          num_tasks: int | None = None) -> Array:
    r"""Per-sample weights that balance the batch statistics of BN across tasks (AdaB²N).

    .. math::

        \pi_t = \frac{e^{\theta_t} + n_t}{\sum_s (e^{\theta_s} + n_s)}, \qquad
        w_i = \frac{\pi_{t(i)}}{c_{t(i)}},

    with θ = ``task_logits`` (learnable, a Dirichlet-style concentration), n = ``task_counts``
    (the official code's extended task counts), and c_t the number of samples of task t in the
    batch.  Each task present in the batch then carries total weight π_t whatever its share of
    the batch, which removes the recency bias of BN statistics under replay.  Feed the result to
    ``batch_norm(..., sample_weight=w)`` (which normalises the weights to sum to one, so tasks
    absent from the batch are renormalised away), with ``momentum=adab2n_momentum(step, m, κ)``.
    VJP with respect to θ: analytic (softmax-like Jacobian of π).

    Lyu, Wang, Chen, Zhang, Su, Zhu, "Overcoming Recency Bias of Normalization Statistics in
    Continual Learning: Balance and Adaptation" (NeurIPS 2023); official code lvyilin/AdaB2N.

    Parameters
    ----------
    task_ids : integer array (B,)
        Task of each sample, in [0, T).
    task_logits : array (T,), optional
        θ (default zeros).
    task_counts : array (T,), optional
        n (default zeros).
    num_tasks : int, optional
        T when neither ``task_logits`` nor ``task_counts`` is given (default max(task_ids) + 1).

    Returns
    -------
    array (B,): float64 NumPy when no float array is given, else the dtype of ``task_logits`` /
    ``task_counts``.

    Examples
    --------
    >>> import numpy as np
    >>> task_balanced_weights(np.array([0, 1, 1, 1]))     # two tasks, equal prior: 1/2 each
    array([0.5       , 0.16666667, 0.16666667, 0.16666667])
    """
    return task_balanced_weights_fwd(task_ids, task_logits, task_counts, num_tasks=num_tasks)[0]


def task_balanced_weights_fwd(task_ids, task_logits=None, task_counts=None, *, num_tasks=None):
    xp = compat.array_namespace(task_ids, task_logits, task_counts)
    ref = task_logits if task_logits is not None else task_counts
    if ref is not None:
        T = ref.shape[0]
    elif num_tasks is not None:
        T = num_tasks
    elif compat.is_concrete(task_ids):
        T = int(compat.to_numpy(task_ids).max()) + 1
    else:
        raise ValueError("pass num_tasks (or task_logits / task_counts) to fix the number of tasks")
    if compat.is_concrete(task_ids):
        ids = compat.to_numpy(task_ids)
        if ids.min() < 0 or ids.max() >= T:
            raise ValueError(f"task_ids must be in [0, {T}), got values in [{int(ids.min())}, {int(ids.max())}]")
    dt = xp.float64 if ref is None else compat.compute_dtype(ref, xp)
    # concentrations exp(theta) + n in units of exp(M), M = max(theta, log n): no overflow of exp(theta)
    theta = compat.zeros((T,), like=task_ids, dtype=dt) if task_logits is None else compat.cast(task_logits, dt, xp)
    logn = None
    if task_counts is not None:
        n = compat.cast(task_counts, dt, xp)
        logn = xp.where(n > 0, xp.log(xp.where(n > 0, n, xp.ones_like(n))), xp.full_like(n, -math.inf))
    M = xp.max(theta) if logn is None else xp.maximum(xp.max(theta), xp.max(logn))
    e_theta = xp.exp(theta - M)
    conc = e_theta if logn is None else e_theta + xp.exp(logn - M)
    S = xp.sum(conc)
    pi = conc / S
    onehot = xp.astype(xp.reshape(task_ids, (-1, 1)) == xp.reshape(compat.arange(T, like=task_ids,
                                                                                dtype=task_ids.dtype), (1, T)), dt)
    c = xp.sum(onehot, axis=0)
    per_task = xp.where(c > 0, pi / xp.where(c > 0, c, 1.0), 0.0)
    w = xp.matmul(onehot, per_task)
    out_dt = dt if ref is None else ref.dtype
    res = TaskBalancedRes(onehot, c, pi, e_theta, S, xp.exp(-M), task_logits is not None, task_counts is not None,
                          None if task_logits is None else task_logits.dtype,
                          None if task_counts is None else task_counts.dtype)
    return compat.cast(w, out_dt, xp), res


def task_balanced_weights_bwd(res: TaskBalancedRes, dy):
    xp = compat.array_namespace(res.onehot)
    g = compat.cast(dy, res.onehot.dtype, xp)
    dper = xp.matmul(xp.matrix_transpose(res.onehot), g)  # (T,)
    c = res.c
    dpi = xp.where(c > 0, dper / xp.where(c > 0, c, 1.0), 0.0)
    dconc_s = (dpi - xp.sum(dpi * res.pi)) / res.S          # d/d(conc in units of exp(M))
    dl = compat.cast(dconc_s * res.e_theta, res.dtl, xp) if res.has_logits else None
    dc = compat.cast(dconc_s * res.scale, res.dtc, xp) if res.has_counts else None
    return None, dl, dc


vjp(task_balanced_weights, task_balanced_weights_fwd, task_balanced_weights_bwd, nondiff_argnums=(0,),
    validate=True)


@public(step=Int(1), momentum=Scalar(0, 1, low_open=True), kappa=Probability())
def adab2n_momentum(step: int, momentum: float = 0.1, kappa: float = 1.0) -> float:
    r"""AdaB²N's adaptive momentum η_t for the running BN statistics (a pure schedule).

    .. math::

        \eta_1 = m^{\kappa}, \qquad \eta_t = \frac{\eta_{t-1}}{\eta_{t-1} + (1 - m)^{\kappa}},


    so κ = 1 gives the constant EMA momentum m and κ = 0 the cumulative mean η_t = 1/t; in
    between, the running statistics average over a window that grows with t, which balances
    old and new tasks.  Evaluated in closed form: with r = (1 − m)^κ,
    1/η_t = (1 − r^{t−1})/(1 − r) + r^{t−1} m^{−κ}  (and (t − 1) + m^{−κ} when r = 1).
    Use as ``batch_norm(..., momentum=adab2n_momentum(t, m, κ))`` (torch convention: the weight
    of the new batch).

    Lyu et al., "Overcoming Recency Bias of Normalization Statistics in Continual Learning:
    Balance and Adaptation" (NeurIPS 2023).

    Parameters
    ----------
    step : int >= 1
        t, the number of batches tracked including the current one.
    momentum : float in (0, 1]
        m.
    kappa : float in [0, 1]
        κ.

    Returns
    -------
    float η_t in (0, 1].

    Examples
    --------
    >>> [round(adab2n_momentum(t, 0.1, 0.0), 4) for t in (1, 2, 4)]
    [1.0, 0.5, 0.25]
    >>> adab2n_momentum(7, 0.1, 1.0)
    0.1
    """
    t, m, k = int(step), float(momentum), float(kappa)
    if k == 1.0:
        return m
    r = (1.0 - m) ** k
    u1 = m ** (-k)
    if r == 1.0:
        u = (t - 1) + u1
    else:
        rt = r ** (t - 1)
        u = (1.0 - rt) / (1.0 - r) + rt * u1
    return 1.0 / u
