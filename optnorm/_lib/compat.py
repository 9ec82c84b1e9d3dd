"""Backend detection: the ONLY module that asks "which array library is this?".

Everything else in optnorm calls these helpers instead of testing ``isinstance``
or module names itself.  Generic code gets its namespace from
:func:`array_namespace` and writes against the Array API standard.
"""
from __future__ import annotations

import sys
from typing import Any

import array_api_compat as _aac
import numpy as np

__all__ = [
    "array_namespace", "is_numpy", "is_cupy", "is_torch", "is_jax", "is_array_api_strict",
    "is_array", "is_concrete", "backend_name", "device", "to_numpy", "from_numpy_like", "write_out",
    "is_floating", "compute_dtype", "float_dtypes", "same_namespace", "size",
]


def array_namespace(*arrays: Any, use_compat: bool | None = None):
    """Array-API namespace of ``arrays`` (``None`` entries and Python scalars are ignored).

    Raises ``TypeError`` when the arrays come from different libraries, naming them.
    """
    arrs = [a for a in arrays if a is not None and not isinstance(a, (int, float, complex, bool))]
    if not arrs:
        return _aac.array_namespace(np.empty(0))
    try:
        return _aac.array_namespace(*arrs, use_compat=use_compat)
    except TypeError as exc:
        kinds = sorted({backend_name(a) for a in arrs})
        raise TypeError(f"arrays from different libraries were mixed ({', '.join(kinds)}): "
                        "convert them to one library first") from exc


def is_numpy(x: Any) -> bool:
    """True for a NumPy ndarray (not a NumPy scalar, not a subclass such as np.matrix)."""
    return type(x) is np.ndarray


def is_cupy(x: Any) -> bool:
    return "cupy" in sys.modules and _aac.is_cupy_array(x)


def is_torch(x: Any) -> bool:
    return "torch" in sys.modules and _aac.is_torch_array(x)


def is_jax(x: Any) -> bool:
    return "jax" in sys.modules and _aac.is_jax_array(x)


def is_array_api_strict(x: Any) -> bool:
    if "array_api_strict" not in sys.modules:
        return False
    import array_api_strict

    return isinstance(x, type(array_api_strict.asarray(0.0)))


def is_array(x: Any) -> bool:
    return _aac.is_array_api_obj(x) and not isinstance(x, (int, float, complex, bool))


def backend_name(x: Any) -> str:
    """Short library name of an array: numpy, cupy, torch, jax, array_api_strict, dask or its type."""
    if is_numpy(x) or isinstance(x, np.ndarray):
        return "numpy"
    if is_cupy(x):
        return "cupy"
    if is_torch(x):
        return "torch"
    if is_jax(x):
        return "jax"
    if is_array_api_strict(x):
        return "array_api_strict"
    if "dask" in sys.modules and _aac.is_dask_array(x):
        return "dask"
    return type(x).__name__


def is_concrete(x: Any) -> bool:
    """False for values that cannot be inspected eagerly (JAX tracers, lazy arrays).

    Validation that needs data (finiteness, positive definiteness) only runs when this is true.
    """
    if is_jax(x):
        import jax

        return not isinstance(x, jax.core.Tracer)
    if "dask" in sys.modules and _aac.is_dask_array(x):
        return False
    return True


def device(x: Any):
    """Device of an array in the Array-API sense."""
    return _aac.device(x)


def size(x: Any) -> int:
    return int(_aac.size(x))


def to_numpy(x: Any) -> np.ndarray:
    """Copy any supported array to a host NumPy array (tests, plotting, SciPy fallbacks)."""
    if x is None:
        return None
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return np.asarray(x)
    if is_cupy(x):
        return x.get()
    if is_torch(x):
        t = x.detach().cpu()
        if t.dtype.is_floating_point and t.dtype not in (_torch().float32, _torch().float64):
            t = t.float()
        return t.numpy()
    if is_array_api_strict(x):
        import array_api_strict

        x = array_api_strict.asarray(x, copy=True)
        return np.from_dlpack(x) if x.ndim else np.asarray(float(x) if "float" in str(x.dtype) else x)
    return np.asarray(x)


def from_numpy_like(a: np.ndarray, like: Any):
    """Put a NumPy array into the library (and device) of ``like``."""
    if is_numpy(like) or isinstance(like, np.ndarray):
        return a
    xp = array_namespace(like)
    if is_torch(like):
        return _torch().from_numpy(np.ascontiguousarray(a)).to(like.device)
    return xp.asarray(a, device=device(like))


def write_out(out: Any, y: Any, *, name: str = "out"):
    """Copy ``y`` into the caller's preallocated ``out`` (shape and dtype checked) and return ``out``."""
    if out is None:
        return y
    if is_jax(out):
        raise TypeError(f"{name}= cannot be used with JAX arrays: they are immutable")
    if tuple(out.shape) != tuple(y.shape):
        raise ValueError(f"{name} has shape {tuple(out.shape)}, expected {tuple(y.shape)}")
    if out.dtype != y.dtype:
        raise TypeError(f"{name} has dtype {out.dtype}, expected {y.dtype}")
    if is_torch(out):
        out.copy_(y)
    else:
        out[...] = y
    return out


def _torch():
    import torch

    return torch


def float_dtypes(xp) -> tuple:
    """The floating dtypes a namespace has, smallest first (float16/bfloat16 where present)."""
    out = []
    for nm in ("float16", "bfloat16", "float32", "float64"):
        dt = getattr(xp, nm, None)
        if dt is not None:
            out.append(dt)
    return tuple(out)


def is_floating(x: Any, xp=None) -> bool:
    xp = xp or array_namespace(x)
    dt = x.dtype
    if is_torch(x):
        return dt.is_floating_point
    if str(dt) == "bfloat16":
        return True
    return xp.isdtype(dt, "real floating")


def compute_dtype(x: Any, xp=None):
    """Accumulation dtype for ``x``: float32 for float16/bfloat16 inputs, else the input's dtype."""
    xp = xp or array_namespace(x)
    dt = x.dtype
    if dt == xp.float32 or dt == xp.float64:
        return dt
    return xp.float32


def same_namespace(*arrays: Any) -> bool:
    try:
        array_namespace(*arrays)
    except TypeError:
        return False
    return True
