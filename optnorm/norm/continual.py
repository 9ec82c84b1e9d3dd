"""AdaB²N for continual learning: task-balanced sample weights for batch statistics, and the adaptive momentum."""
from __future__ import annotations

from .._lib import compat, ops, validate

__all__ = ["task_balanced_weights", "adab2n_momentum"]


def _as(xp, a, dt):
    return a if a is None or a.dtype == dt else xp.astype(a, dt)


def task_balanced_weights(task_ids, task_logits=None, task_counts=None, *, num_tasks=None):
    """Per-sample weights that balance the batch statistics of BN across tasks (AdaB²N).

    ::

        π_t = (exp θ_t + n_t) / Σ_s (exp θ_s + n_s),     wᵢ = π_{t(i)} / c_{t(i)},

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
    xp = validate.check_same_namespace(task_ids=task_ids, task_logits=task_logits, task_counts=task_counts)
    validate.check_array(task_ids, "task_ids")
    if compat.is_floating(task_ids, xp):
        raise TypeError(f"task_ids must be an integer array, got {task_ids.dtype}")
    if task_ids.ndim != 1:
        raise ValueError(f"task_ids must have shape (B,), got shape {tuple(task_ids.shape)}")
    T = None
    for nm, v in (("task_logits", task_logits), ("task_counts", task_counts)):
        if v is not None:
            validate.check_float(v, nm, xp)
            if v.ndim != 1:
                raise ValueError(f"{nm} must have shape (T,), got shape {tuple(v.shape)}")
            if T is not None and v.shape[0] != T:
                raise ValueError(f"task_logits and task_counts must have the same length, got {T} and {v.shape[0]}")
            T = v.shape[0]
    if T is None:
        if num_tasks is not None:
            T = validate.check_int(num_tasks, "num_tasks", low=1)
        elif compat.is_concrete(task_ids) and compat.size(task_ids):
            T = int(xp.max(task_ids)) + 1
        else:
            raise ValueError("pass num_tasks (or task_logits / task_counts) to fix the number of tasks")
    if compat.is_concrete(task_ids) and compat.size(task_ids):
        lo, hi = int(xp.min(task_ids)), int(xp.max(task_ids))
        if lo < 0 or hi >= T:
            raise ValueError(f"task_ids must be in [0, {T}), got values in [{lo}, {hi}]")
    ref = task_logits if task_logits is not None else task_counts
    dt = xp.float64 if ref is None else compat.compute_dtype(ref, xp)
    e_theta = xp.ones((T,), dtype=dt) if task_logits is None else xp.exp(_as(xp, task_logits, dt))
    conc = e_theta if task_counts is None else e_theta + _as(xp, task_counts, dt)
    S = xp.sum(conc)
    pi = conc / S
    onehot = xp.astype(xp.reshape(task_ids, (-1, 1)) == xp.reshape(xp.arange(T, dtype=task_ids.dtype), (1, T)),
                       dt)
    c = xp.sum(onehot, axis=0)
    per_task = xp.where(c > 0, pi / xp.where(c > 0, c, 1.0), 0.0)
    w = xp.matmul(onehot, per_task)
    out_dt = dt if ref is None else ref.dtype
    res = (onehot, c, pi, e_theta, S, task_logits is not None, task_counts is not None,
           None if task_logits is None else task_logits.dtype, None if task_counts is None else task_counts.dtype)
    return _as(xp, w, out_dt), res


def task_balanced_weights_bwd(res, dy):
    onehot, c, pi, e_theta, S, has_l, has_c, dtl, dtc = res
    xp = compat.array_namespace(onehot)
    g = _as(xp, dy, onehot.dtype)
    dper = xp.matmul(xp.matrix_transpose(onehot), g)  # (T,)
    dpi = xp.where(c > 0, dper / xp.where(c > 0, c, 1.0), 0.0)
    dconc = (dpi - xp.sum(dpi * pi)) / S
    dl = _as(xp, dconc * e_theta, dtl) if has_l else None
    dc = _as(xp, dconc, dtc) if has_c else None
    return None, dl, dc


ops.register("norm.task_balanced_weights", task_balanced_weights, task_balanced_weights_fwd,
             task_balanced_weights_bwd, nondiff_argnums=(0,))


def adab2n_momentum(step, momentum=0.1, kappa=1.0):
    """AdaB²N's adaptive momentum η_t for the running BN statistics (a pure schedule).

    ::

        η₁ = m^κ,   η_t = η_{t−1} / (η_{t−1} + (1 − m)^κ),

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
    t = validate.check_int(step, "step", low=1)
    m = validate.check_probability(momentum, "momentum")
    if m == 0:
        raise ValueError("momentum must be > 0, got 0")
    k = validate.check_probability(kappa, "kappa")
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
