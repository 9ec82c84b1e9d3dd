"""Hutchinson estimators of the Hessian diagonal and trace from Hessian-vector products (seeded Rademacher probes).

One probe generator (:func:`rademacher_like`) serves both estimators and
:func:`~optnorm.optim.adahessian`.  ``hvp`` is the caller's function
``v -> H v`` on the same tree structure as ``params`` (``jax.jvp(jax.grad(f), ...)``,
torch double backward, or an explicit matrix product), so the estimators are
framework-agnostic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .._lib import compat, validate
from .base import tree_flatten, tree_unflatten

__all__ = ["hutchinson_diag", "hutchinson_trace", "rademacher_like", "TraceResult"]


def _seed_ints(seed) -> list[int]:
    if isinstance(seed, np.random.Generator):
        return [int(seed.integers(0, 2**31 - 1))]
    if isinstance(seed, (tuple, list)):
        return [int(s) for s in seed]
    return [validate.check_int(seed, "seed", low=0)]


def rademacher_like(params: Any, *, seed=0, step: Any = 0) -> Any:
    """A tree of independent +-1 arrays shaped like ``params`` (same library, dtype and device).

    Probes are a deterministic function of ``(seed, step)``: NumPy's PCG64 on the host
    for NumPy/CuPy/torch/array-api-strict, ``jax.random`` (``fold_in(key(seed), step)``)
    for JAX arrays, where ``step`` may be a traced integer under ``jax.jit``.
    """
    leaves, tdef, _ = tree_flatten(params, "params")
    seeds = _seed_ints(seed)
    if compat.is_jax(leaves[0]):
        import jax

        key = jax.random.PRNGKey(seeds[0])
        for s in seeds[1:]:
            key = jax.random.fold_in(key, s)
        key = jax.random.fold_in(key, step)
        keys = jax.random.split(key, len(leaves))
        out = [jax.random.rademacher(k, p.shape, dtype=p.dtype) for k, p in zip(keys, leaves)]
        return tree_unflatten(tdef, out)
    step_i = int(step) if compat.is_concrete(step) else 0
    rng = np.random.default_rng([*seeds, step_i])
    out = []
    for p in leaves:
        z = (rng.integers(0, 2, size=tuple(p.shape), dtype=np.int8) * 2 - 1).astype(np.float64)
        xp = compat.array_namespace(p)
        out.append(xp.astype(compat.from_numpy_like(z, p), p.dtype))
    return tree_unflatten(tdef, out)


def _check_hvp(hvp):
    if not callable(hvp):
        raise TypeError(f"hvp must be a callable v -> H v on the params tree, got {type(hvp).__name__}")


def hutchinson_diag(hvp: Callable, params: Any, *, n_samples: int = 1, seed=0, step: Any = 0) -> Any:
    r"""Hutchinson estimate of the Hessian diagonal: ``diag(H) ~ mean_k z_k * (H z_k)``, ``z_k`` Rademacher.

    Unbiased since ``E[z z^T] = I``.  "A stochastic estimator of the trace of the
    influence matrix for Laplacian smoothing splines", M. F. Hutchinson, 1989;
    used by AdaHessian (Yao et al., 2021).

    Parameters
    ----------
    hvp : callable
        ``v -> H v`` on trees shaped like ``params``.
    params : array or list/tuple/dict of arrays
        Only shapes, dtypes and the library are used.
    n_samples : int
        Probes averaged.
    seed : int, tuple of ints or np.random.Generator
    step : int
        Mixed into the seed (AdaHessian passes its step count for fresh probes per step).

    Returns
    -------
    tree like ``params``.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.diag([1.0, 2.0, 3.0])
    >>> hutchinson_diag(lambda v: A @ v, np.zeros(3)).tolist()
    [1.0, 2.0, 3.0]
    """
    _check_hvp(hvp)
    n_samples = validate.check_int(n_samples, "n_samples", low=1)
    _, tdef, _ = tree_flatten(params, "params")
    acc = None
    for k in range(n_samples):
        z = rademacher_like(params, seed=(*_seed_ints(seed), k), step=step)
        hz = hvp(z)
        zl, _, _ = tree_flatten(z, "z")
        hl, hdef, _ = tree_flatten(hz, "hvp(v)")
        if hdef != tdef:
            raise ValueError("hvp must return a tree with the structure of params")
        prod = [a * b for a, b in zip(zl, hl)]
        acc = prod if acc is None else [a + b for a, b in zip(acc, prod)]
    return tree_unflatten(tdef, [a / n_samples for a in acc])


@dataclass(frozen=True)
class TraceResult:
    """Hutchinson trace estimate: ``trace`` (sum over leaves), ``per_leaf`` traces, probes used, convergence."""
    trace: float
    per_leaf: tuple
    n_iter: int
    converged: bool
    errors: tuple


def hutchinson_trace(hvp: Callable, params: Any, *, n_samples: int = 100, seed=0, tol: float = 1e-3,
                     min_samples: int = 2, callback: Callable | None = None, callback_every: int = 1) -> TraceResult:
    r"""Hutchinson estimate of ``tr(H)`` (and of each parameter block's trace), with HAWQ-V2's stopping rule.

    ``tr(H) ~ mean_k z_k^T H z_k``.  Probes are drawn until the running mean changes
    by less than ``tol`` relatively (after ``min_samples``) or ``n_samples`` are used.
    The per-leaf traces are the block traces HAWQ-V2 uses as layer sensitivities
    ("HAWQ-V2: Hessian Aware trace-Weighted Quantization of Neural Networks",
    Z. Dong et al., NeurIPS 2020).  Host-side loop: returns Python floats.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.diag([1.0, 2.0, 3.0])
    >>> hutchinson_trace(lambda v: A @ v, np.zeros(3), n_samples=3).trace
    6.0
    """
    _check_hvp(hvp)
    n_samples = validate.check_int(n_samples, "n_samples", low=1)
    min_samples = validate.check_int(min_samples, "min_samples", low=1)
    validate.check_nonnegative(tol, "tol")
    callback_every = validate.check_int(callback_every, "callback_every", low=1)
    leaves, tdef, _ = tree_flatten(params, "params")
    sums = [0.0] * len(leaves)
    prev = None
    errors = []
    converged = False
    k = 0
    for k in range(1, n_samples + 1):
        z = rademacher_like(params, seed=(*_seed_ints(seed), k - 1), step=0)
        zl, _, _ = tree_flatten(z, "z")
        hl, hdef, _ = tree_flatten(hvp(z), "hvp(v)")
        if hdef != tdef:
            raise ValueError("hvp must return a tree with the structure of params")
        for i, (a, b) in enumerate(zip(zl, hl)):
            xp = compat.array_namespace(a)
            sums[i] += float(xp.sum(a * b))
        mean = sum(sums) / k
        if prev is not None:
            err = abs(mean - prev) / max(abs(prev), 1e-30)
            errors.append(err)
            if callback is not None and k % callback_every == 0 and callback(k, mean):
                break
            if k >= min_samples and err < tol:
                converged = True
                break
        prev = mean
    per = tuple(s / k for s in sums)
    return TraceResult(trace=sum(per), per_leaf=per, n_iter=k, converged=converged, errors=tuple(errors))
