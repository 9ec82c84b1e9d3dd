"""Hutchinson estimators of the Hessian diagonal and trace from Hessian-vector products (seeded Rademacher probes).

One probe generator (:func:`rademacher_like`) serves both estimators and
:func:`~optnorm.optim.adahessian`.  ``hvp`` is the caller's function
``v -> H v`` on the same tree structure as ``params`` (``jax.jvp(jax.grad(f), ...)``,
torch double backward, or an explicit matrix product), so the estimators are
framework-agnostic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .._lib.typing import Seed as SeedT
from .._lib import compat
from .._lib.api import public, public_class
from .._lib.solver import IterState, Monitor, Result
from .._lib.roles import Bool, Callback, Int, NonNegative, Outcome, Perturbation, Role, Seed
from ._common import seed_ints, tree_flatten, tree_unflatten


class Params(Role):
    """A parameter tree: a float array or a list/tuple/dict nest of them (leaves named ``params['w']``)."""

    doc = "float array or list/tuple/dict of float arrays"

    def check(self, value, name, call):
        leaves, _, names = tree_flatten(value, name)
        if not leaves:
            raise call.error(ValueError, f"{name} is empty: it holds no arrays")
        for p, n in zip(leaves, names):
            if not compat.is_floating(p):
                raise call.error(TypeError, f"{n} must have a floating dtype, got {p.dtype}")
        if len({compat.backend_name(p) for p in leaves}) > 1:
            raise call.error(TypeError, f"{name} mixes arrays of different libraries")
        return value

    def example(self, sizes, rng, dtype):
        return rng.standard_normal(3).astype(dtype)

    def perturbations(self, value):
        P, O = Perturbation, Outcome
        return [P("not an array", lambda v, r: "abc", O.ERROR),
                P("int dtype", lambda v, r: np.ones(3, np.int64), O.ERROR),
                P("empty tree", lambda v, r: [], O.ERROR)]


def _example(rng, dtype):
    H = np.diag([1.0, 2.0, 3.0]).astype(dtype)
    return (lambda v: H @ v, np.zeros(3, dtype)), {}


@public(params=Params(), seed=Seed(), step=Int(0, array=True))
def rademacher_like(params: Any, *, seed: SeedT = 0, step: Any = 0) -> Any:
    r"""A tree of independent +-1 arrays shaped like ``params`` (same library, dtype and device).

    Probes are a deterministic function of ``(seed, step)``: NumPy's PCG64 on the host
    for NumPy/CuPy/torch/array-api-strict, ``jax.random`` (``fold_in(key(seed), step)``)
    for JAX arrays, where ``step`` may be a traced integer under ``jax.jit``.

    .. math::
        z_i \in \{-1, +1\},\quad P(z_i = 1) = 1/2,\quad \mathbb E[z z^\top] = I

    Parameters
    ----------
    params : array or list/tuple/dict of arrays
        Only shapes, dtypes and the library are used.
    seed : None, int >= 0 or Generator
        Seed.
    step : int or 0-d int array
        Mixed into the seed (traced under ``jax.jit`` for JAX).

    Returns
    -------
    tree like ``params``
        Arrays of independent :math:`\pm 1` entries.

    Examples
    --------
    >>> import numpy as np
    >>> z = rademacher_like({"w": np.zeros((2, 2))}, seed=1)
    >>> sorted(set(z["w"].ravel().tolist()))
    [-1.0, 1.0]
    """
    return _signs(params, seed_ints(seed), step)


def _signs(params, seeds: tuple, step):
    leaves, tdef, _ = tree_flatten(params, "params")
    return tree_unflatten(tdef, compat.random_signs(leaves, seed=seeds, step=step))


@public(hvp=Callback(optional=False), params=Params(), n_samples=Int(1), seed=Seed(), step=Int(0, array=True),
        example=_example)
def hutchinson_diag(hvp: Callable, params: Any, *, n_samples: int = 1, seed: SeedT = 0, step: Any = 0) -> Any:
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
    seed : None, int >= 0 or np.random.Generator
    step : int
        Mixed into the seed (AdaHessian passes its step count for fresh probes per step).

    Returns
    -------
    tree like ``params``.

    .. math::
        \mathrm{diag}(H) \approx \frac1K\sum_{k=1}^K z_k \odot H z_k


    Examples
    --------
    >>> import numpy as np
    >>> A = np.diag([1.0, 2.0, 3.0])
    >>> hutchinson_diag(lambda v: A @ v, np.zeros(3)).tolist()
    [1.0, 2.0, 3.0]
    """
    seeds = seed_ints(seed)
    _, tdef, _ = tree_flatten(params, "params")
    acc: list = []
    for k in range(n_samples):
        z = _signs(params, (*seeds, k), step)
        zl, _, _ = tree_flatten(z, "z")
        hl, hdef, _ = tree_flatten(hvp(z), "hvp(v)")
        if hdef != tdef:
            raise ValueError("hutchinson_diag: hvp must return a tree with the structure of params")
        prod = [a * b for a, b in zip(zl, hl)]
        acc = prod if not acc else [a + b for a, b in zip(acc, prod)]
    leaves, _, _ = tree_flatten(params, "params")
    # 0-d NumPy arithmetic gives NumPy scalars: keep arrays so the result is a tree like params
    return tree_unflatten(tdef, [compat.array_namespace(p).asarray(a / n_samples) if p.ndim == 0 else a / n_samples
                                 for a, p in zip(acc, leaves)])


@public_class
@dataclass(frozen=True, repr=False)
class TraceResult(Result):
    r"""Result of :func:`hutchinson_trace`.

    Attributes
    ----------
    trace : float
        The estimate of :math:`\operatorname{tr} H` (sum of ``per_leaf``).
    per_leaf : tuple of float
        The trace estimate of every parameter block (HAWQ-V2's layer sensitivities).
    n_iter : int
        Probes used.
    converged : bool
        Whether the running mean's relative change fell below ``tol``.
    errors : tuple of float
        The relative change of the running mean after every probe from the second on.
    """
    trace: float
    per_leaf: tuple
    n_iter: int
    converged: bool
    errors: tuple


@dataclass(frozen=True)
class TraceState(IterState):
    """What :func:`hutchinson_trace`'s ``callback`` receives: ``n_iter`` (probes), ``error`` (relative change
    of the running mean) and the running estimate ``trace``."""
    trace: float = 0.0


@public(hvp=Callback(optional=False), params=Params(), n_samples=Int(1), seed=Seed(), tol=NonNegative(),
        min_samples=Int(1), callback=Callback(), callback_every=Int(1), progress=Bool(), example=_example)
def hutchinson_trace(hvp: Callable, params: Any, *, n_samples: int = 100, seed: SeedT = 0, tol: float = 1e-3,
                     min_samples: int = 2, callback: Callable | None = None, callback_every: int = 1,
                     progress: bool = False) -> TraceResult:
    r"""Hutchinson estimate of ``tr(H)`` (and of each parameter block's trace), with HAWQ-V2's stopping rule.

    ``tr(H) ~ mean_k z_k^T H z_k``.  Probes are drawn until the running mean changes
    by less than ``tol`` relatively (after ``min_samples``) or ``n_samples`` are used;
    running out of probes with ``tol > 0`` gives ``converged=False`` and a
    :class:`optnorm.ConvergenceWarning` (``tol=0`` asks for exactly ``n_samples``).
    The per-leaf traces are the block traces HAWQ-V2 uses as layer sensitivities
    ("HAWQ-V2: Hessian Aware trace-Weighted Quantization of Neural Networks",
    Z. Dong et al., NeurIPS 2020).  Host-side loop: returns Python floats.

    .. math::
        \operatorname{tr} H \approx \frac1K\sum_{k=1}^K z_k^\top H z_k,\qquad z_k \in \{-1, 1\}^d

    Parameters
    ----------
    hvp : callable
        ``v -> H v`` on trees shaped like ``params``.
    params : array or list/tuple/dict of arrays
        Only shapes, dtypes and the library are used.
    n_samples : int >= 1
        Probes at most.
    seed : None, int >= 0 or Generator
        Probe seed.
    tol : float >= 0
        Stop when the running mean changes by less than ``tol`` relatively (0: use all ``n_samples``).
    min_samples : int >= 1
        Probes before the stopping rule applies.
    callback : callable(state) -> bool, optional
        Called every ``callback_every`` probes with a :class:`TraceState` (``n_iter``, ``error``, ``trace``);
        returning True stops.
    callback_every : int >= 1
        Probes between callbacks.
    progress : bool
        Show a progress bar (tqdm when installed, else a line per interval on stderr).

    Returns
    -------
    TraceResult
        ``trace``, ``per_leaf``, ``n_iter``, ``converged``, ``errors``.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.diag([1.0, 2.0, 3.0])
    >>> hutchinson_trace(lambda v: A @ v, np.zeros(3), n_samples=3).trace
    6.0
    """
    seeds = seed_ints(seed)
    leaves, tdef, _ = tree_flatten(params, "params")
    sums = [0.0] * len(leaves)
    prev = None
    mon = Monitor("hutchinson_trace", max_iter=n_samples, tol=tol if tol > 0 and n_samples >= min_samples else None,
                  callback=callback, callback_every=callback_every, progress=progress)
    for k in range(1, n_samples + 1):
        zl, _, _ = tree_flatten(_signs(params, (*seeds, k - 1), 0), "z")
        hl, hdef, _ = tree_flatten(hvp(tree_unflatten(tdef, zl)), "hvp(v)")
        if hdef != tdef:
            raise ValueError("hutchinson_trace: hvp must return a tree with the structure of params")
        for i, (a, b) in enumerate(zip(zl, hl)):
            xp = compat.array_namespace(a)
            sums[i] += float(xp.sum(a * b))
        mean = sum(sums) / k
        if prev is None:
            mon.step(k)
        else:
            err = abs(mean - prev) / max(abs(prev), 1e-30)
            if k < min_samples:          # the stopping rule waits for min_samples; the error is still recorded
                mon.errors.append(err)
                mon.step(k)
            elif mon.update(k, err, lambda: TraceState(k, err, mean)):
                break
        prev = mean
    mon.close()
    k = mon.n_iter
    per = tuple(s / k for s in sums)
    return TraceResult(trace=sum(per), per_leaf=per, n_iter=k, converged=mon.converged, errors=tuple(mon.errors))
