"""Shared argument checks.  Each raises ``ValueError`` or ``TypeError`` naming the argument.

Checks that need the data (finiteness, sums, eigenvalues) run only on concrete
arrays (:func:`optnorm._lib.compat.is_concrete`): under ``jax.jit`` they are skipped.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Sequence

from . import compat

__all__ = [
    "check_array", "check_float", "check_axis", "check_axes", "check_positive", "check_nonnegative",
    "check_in", "check_int", "check_probability", "check_unit_interval", "check_same_namespace",
    "check_shape", "check_broadcastable", "check_finite", "check_square", "check_symmetric",
    "check_nonempty", "check_weights", "check_spd", "check_matrix",
]


def check_array(x: Any, name: str):
    if not compat.is_array(x):
        raise TypeError(f"{name} must be an array (NumPy, CuPy, torch, JAX or any Array-API array), "
                        f"got {type(x).__name__}")
    return x


def check_float(x: Any, name: str, xp=None):
    """``x`` is an array with a real floating dtype (integers and booleans raise TypeError)."""
    check_array(x, name)
    if not compat.is_floating(x, xp):
        raise TypeError(f"{name} must have a floating dtype (float16/bfloat16/float32/float64), got {x.dtype}")
    return x


def check_nonempty(x: Any, name: str, axis: int | None = None):
    n = compat.size(x) if axis is None else x.shape[axis]
    if n == 0:
        where = "" if axis is None else f" along axis {axis}"
        raise ValueError(f"{name} is empty{where} (shape {tuple(x.shape)})")
    return x


def check_axis(axis: Any, ndim: int, name: str = "axis") -> int:
    """Normalise a single axis to ``0 <= axis < ndim``."""
    if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
        raise TypeError(f"{name} must be an int, got {type(axis).__name__}")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array with {ndim} dimensions")
    return int(axis) % ndim


def check_axes(axes: Any, ndim: int, name: str = "axis") -> tuple[int, ...]:
    """Normalise an int or a sequence of ints to sorted non-negative axes, rejecting repeats."""
    if isinstance(axes, numbers.Integral):
        axes = (axes,)
    out = tuple(sorted(check_axis(a, ndim, name) for a in axes))
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has repeated axes: {axes}")
    return out


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return int(value)


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{name} must not be NaN")
    return v


def check_positive(value: Any, name: str) -> float:
    v = _real(value, name)
    if not v > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return v


def check_nonnegative(value: Any, name: str) -> float:
    v = _real(value, name)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return v


def check_unit_interval(value: Any, name: str, *, closed_right: bool = False) -> float:
    """``0 <= value < 1`` (or ``<= 1`` with ``closed_right``)."""
    v = _real(value, name)
    ok = 0 <= v <= 1 if closed_right else 0 <= v < 1
    if not ok:
        rng = "[0, 1]" if closed_right else "[0, 1)"
        raise ValueError(f"{name} must be in {rng}, got {value}")
    return v


def check_in(value: Any, options: Iterable[Any], name: str):
    options = tuple(options)
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def check_same_namespace(**arrays: Any):
    """All non-None arrays come from one library; the error names each argument's library."""
    present = {k: v for k, v in arrays.items() if v is not None}
    kinds = {k: compat.backend_name(v) for k, v in present.items()}
    if len(set(kinds.values())) > 1:
        desc = ", ".join(f"{k} is {v}" for k, v in kinds.items())
        raise TypeError(f"arrays from different libraries were mixed ({desc}): convert them to one library")
    return compat.array_namespace(*present.values())


def check_shape(x: Any, shape: Sequence[int | None], name: str):
    """Exact shape match; ``None`` entries match any size."""
    shp = tuple(x.shape)
    if len(shp) != len(shape) or any(s is not None and s != t for s, t in zip(shape, shp)):
        want = tuple("*" if s is None else s for s in shape)
        raise ValueError(f"{name} has shape {shp}, expected {want}")
    return x


def check_matrix(x: Any, name: str, *, min_ndim: int = 2):
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    return x


def check_broadcastable(name_a: str, shape_a, name_b: str, shape_b) -> tuple[int, ...]:
    a, b = tuple(shape_a), tuple(shape_b)
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da != db and 1 not in (da, db):
            raise ValueError(f"{name_a} (shape {a}) and {name_b} (shape {b}) do not broadcast")
        out.append(max(da, db))
    return tuple(reversed(out))


def _data(x: Any):
    """``(array, namespace)`` to inspect values with: JAX arrays go to the host (eager ops on a concrete
    array would be traced inside an enclosing ``jit``), torch tensors are detached (no autograd warnings)."""
    if compat.is_jax(x):
        import numpy as np

        a = compat.to_numpy(x)
        return a, compat.array_namespace(np.empty(0))
    if compat.is_torch(x):
        x = x.detach()
    return x, compat.array_namespace(x)


def check_finite(x: Any, name: str, xp=None):
    if x is None or not compat.is_concrete(x):
        return x
    x_, xp = _data(x)
    if not bool(xp.all(xp.isfinite(x_))):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def check_square(x: Any, name: str):
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name} must be a square matrix or a stack of them (shape (..., n, n)), "
                         f"got shape {tuple(x.shape)}")
    return x


def check_symmetric(x: Any, name: str, *, rtol: float | None = None, xp=None):
    """Symmetric up to ``rtol`` times the largest entry (default: 100 eps of the dtype)."""
    check_square(x, name)
    if not compat.is_concrete(x):
        return x
    x, xp = _data(x)
    if rtol is None:
        rtol = 100 * float(xp.finfo(x.dtype).eps)
    xt = xp.matrix_transpose(x)
    err = float(xp.max(xp.abs(x - xt))) if compat.size(x) else 0.0
    scale = float(xp.max(xp.abs(x))) if compat.size(x) else 0.0
    if err > rtol * max(scale, 1e-300):
        raise ValueError(f"{name} is not symmetric: max |A - A^T| = {err:.3g} (tolerance {rtol:.3g} x max |A| = "
                         f"{rtol * scale:.3g})")
    return x


def check_spd(x: Any, name: str, xp=None, *, check_sym: bool = True):
    """Symmetric positive definite; the error reports the smallest eigenvalue found.

    A float64 host Cholesky decides (one factorisation per matrix); eigenvalues are computed only
    to word the error when it fails.
    """
    if check_sym:
        check_symmetric(x, name, xp=xp)
    else:
        check_square(x, name)
    if not compat.is_concrete(x):
        return x
    import numpy as np

    a = compat.to_numpy(x).astype(np.float64, copy=False)
    if a.size == 0:
        return x
    a = 0.5 * (a + np.swapaxes(a, -1, -2))
    try:
        np.linalg.cholesky(a)
        return x
    except np.linalg.LinAlgError:
        pass
    lo = float(np.linalg.eigvalsh(a).min())
    raise ValueError(f"{name} must be positive definite; its smallest eigenvalue is {lo:.6g}")


def check_weights(w: Any, name: str, *, axis: int = -1, normalized: bool = True, atol: float | None = None,
                  xp=None):
    """Non-negative weights, optionally summing to one along ``axis`` (the error says by how much they miss)."""
    check_float(w, name)
    if not compat.is_concrete(w):
        return w
    w_orig = w
    w, xp = _data(w)
    if compat.size(w) == 0:
        raise ValueError(f"{name} is empty")
    mn = float(xp.min(w))
    if mn < 0:
        raise ValueError(f"{name} must be non-negative; its smallest entry is {mn:.6g}")
    check_finite(w, name, xp)
    if normalized:
        s = xp.sum(w, axis=axis)
        tol = atol if atol is not None else max(1e-6, 100 * float(xp.finfo(w.dtype).eps)) * w.shape[axis] ** 0.5
        dev = float(xp.max(xp.abs(s - 1)))
        if dev > tol:
            raise ValueError(f"{name} must sum to 1 along axis {axis}; it is off by up to {dev:.3g}")
    return w_orig


def check_probability(value: Any, name: str) -> float:
    """A number in [0, 1]."""
    return check_unit_interval(value, name, closed_right=True)


def check_out(out: Any, x: Any, name: str = "out"):
    """``out`` has the shape, dtype and library of ``x`` and is writeable (functions not yet declared with
    an :class:`optnorm._lib.roles.Out` role; declared ones get this from the role)."""
    if out is None:
        return
    if compat.is_jax(out) or compat.is_jax(x):
        raise TypeError(f"{name}= cannot be used with JAX arrays: they are immutable")
    check_same_namespace(x=x, out=out)
    if not compat.is_writeable(out):
        raise ValueError(f"{name} is read-only")
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"{name} has shape {tuple(out.shape)}, expected {tuple(x.shape)}")
    if out.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {out.dtype}, expected {x.dtype}")
    if compat.overlap(out, x) == "partial":
        raise ValueError(f"{name} overlaps x in memory without being the same array")
