"""Helpers shared by the optim modules: parameter trees, step scalars, overflow-safe norms."""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .._lib import compat


# ----------------------------------------------------------------------------------------------- parameter trees
def tree_flatten(tree: Any, name: str = "params") -> tuple[list, Any, list[str]]:
    """Leaves, structure and a readable name per leaf (``params['w']``, ``params[2]``) of an array tree.

    A tree is one array, or a list/tuple/dict of trees (dict keys in sorted order, like JAX); a NumPy float
    scalar is read as a 0-d array.
    """
    leaves: list = []
    names: list[str] = []

    def rec(t, nm):
        if isinstance(t, dict):
            keys = sorted(t)
            return ("dict", tuple(keys), tuple(rec(t[k], f"{nm}[{k!r}]") for k in keys))
        if isinstance(t, (list, tuple)) and not compat.is_array(t):
            kind = "list" if isinstance(t, list) else "tuple"
            return (kind, len(t), tuple(rec(v, f"{nm}[{i}]") for i, v in enumerate(t)))
        if isinstance(t, np.generic) and t.dtype.kind in "fc":
            t = np.asarray(t)            # 0-d NumPy arithmetic (an hvp of a 0-d parameter) gives NumPy scalars
        if not compat.is_array(t):
            raise TypeError(f"{nm} must be an array or a list/tuple/dict of arrays, got {type(t).__name__}")
        leaves.append(t)
        names.append(nm)
        return ("leaf",)

    treedef = rec(tree, name)
    return leaves, treedef, names


def tree_unflatten(treedef: Any, leaves: list) -> Any:
    """Inverse of :func:`tree_flatten`."""
    it = iter(leaves)

    def rec(d):
        if d[0] == "leaf":
            return next(it)
        if d[0] == "dict":
            return {k: rec(c) for k, c in zip(d[1], d[2])}
        vals = [rec(c) for c in d[2]]
        return vals if d[0] == "list" else tuple(vals)

    return rec(treedef)


# ----------------------------------------------------------------------------------------------- step scalars
def scalar(v: Any, like: Any, xp) -> Any:
    """A step scalar ready to combine with ``like``: Python floats stay floats, arrays get ``like``'s dtype
    (a traced learning rate or bias correction under ``jax.jit`` must not promote float32 state)."""
    if isinstance(v, numbers.Real):
        return float(v)
    return xp.astype(v, like.dtype)


def ssqrt(v: Any, xp) -> Any:
    """sqrt of a Python float (math) or of a 0-d array (xp, traced under jit)."""
    return math.sqrt(v) if isinstance(v, numbers.Real) else xp.sqrt(v)


def bias_correction(beta: float, t: Any) -> Any:
    """``1 - beta^t`` (float for a concrete step, 0-d array for a traced one)."""
    return 1.0 - beta ** t


def active(v: Any) -> bool:
    """Whether a hyperparameter switches its term on: a nonzero number, or any array (a traced value under
    ``jax.jit`` / ``optax.inject_hyperparams`` cannot be compared, so its term is always computed)."""
    if v is None:
        return False
    if isinstance(v, numbers.Number):
        return v != 0
    return True


def zeros_state(p: Any, xp, shape=None) -> Any:
    """A zero state buffer for ``p``: its shape (or ``shape``) and device, in the compute dtype
    (float32 for float16/bfloat16 parameters)."""
    return compat.zeros(tuple(p.shape) if shape is None else shape, like=p, dtype=compat.compute_dtype(p, xp), xp=xp)


# ----------------------------------------------------------------------------------------------- norms
def stable_norm(x: Any, xp, *, axis=None, keepdims: bool = False) -> Any:
    """Euclidean norm over ``axis`` (all axes when None) that neither overflows nor underflows.

    The entries are scaled by a power of two ``2^-k`` (``2^k`` near their largest magnitude) before
    squaring and the norm is scaled back: both scalings are exact, so where the plain norm is finite this
    is bitwise the library's norm (torch.optim's rounding), and entries near the dtype's range (``1e300``
    in float64, ``1e30`` in float32) give their true norm instead of inf.
    """
    if x.ndim == 0:
        return xp.abs(x)
    ax = tuple(range(x.ndim)) if axis is None else axis
    if axis is None and compat.is_concrete(x) and str(compat.device(x)) == "cpu" and compat.size(x) > 4096:
        # one pass instead of three for a large CPU array: the library's norm itself, unless it overflowed or
        # is small enough that flushed squares (below the smallest normal) could matter
        n = xp.linalg.vector_norm(x, axis=ax, keepdims=keepdims)
        fn = float(n)
        fi = xp.finfo(x.dtype)
        if math.isfinite(fn) and fn * fn > compat.size(x) * float(fi.smallest_normal) / float(fi.eps):
            return n
    s = xp.max(xp.abs(x), axis=ax, keepdims=True)
    k = xp.floor(xp.log2(xp.where(s > 0, s, xp.ones_like(s))))
    n = xp.linalg.vector_norm(x * 2.0 ** -k, axis=ax, keepdims=True) * 2.0 ** k
    if not keepdims:
        n = xp.reshape(n, tuple(d for i, d in enumerate(n.shape) if i not in _axes(ax, x.ndim)))
    return n


def _axes(ax, nd):
    ax = (ax,) if isinstance(ax, int) else tuple(ax)
    return {a % nd for a in ax} if nd else set()


def stable_rms(x: Any, xp) -> Any:
    """Root mean square of all entries (0-d), scaled like :func:`stable_norm`."""
    n = compat.size(x)
    return stable_norm(x, xp) / math.sqrt(max(n, 1))


def seed_ints(seed) -> tuple[int, ...]:
    """A probe seed (the Seed role's values) as a tuple of ints: an int as is; a Generator, a SeedSequence or
    None (fresh entropy) draws one, so probes stay a function of ``(seed, step)``."""
    if isinstance(seed, np.random.Generator):
        return (int(seed.integers(0, 2**31 - 1)),)
    if isinstance(seed, np.random.SeedSequence):
        return (int(seed.generate_state(1)[0]),)
    if seed is None:
        return (int(np.random.default_rng().integers(0, 2**31 - 1)),)
    return (int(seed),)
