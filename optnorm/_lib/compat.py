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
    "is_floating", "compute_dtype", "float_dtypes", "same_namespace", "size", "cast", "is_writeable", "overlap",
    "asarray_like", "detach", "stop_gradient", "no_grad", "requires_grad", "is_traced", "copy_into", "arange", "eye",
    "zeros", "full", "is_mutable", "fast_path_of", "native_autograd", "dtype_name", "lerp", "addmm", "random_signs",
]


_NUMPY_NS = _aac.array_namespace(np.empty(0))


def array_namespace(*arrays: Any, use_compat: bool | None = None):
    """Array-API namespace of ``arrays`` (``None`` entries and Python scalars are ignored).

    Raises ``TypeError`` when the arrays come from different libraries, naming them.
    """
    arrs = [a for a in arrays if a is not None and not isinstance(a, (int, float, complex, bool))]
    if not arrs or (use_compat is None and all(type(a) is np.ndarray for a in arrs)):
        return _NUMPY_NS
    try:
        return _aac.array_namespace(*arrs, use_compat=use_compat)
    except TypeError as exc:
        kinds = sorted({backend_name(a) for a in arrs})
        raise TypeError(f"arrays from different libraries were mixed ({', '.join(kinds)}): "
                        "convert them to one library first") from exc


def is_numpy(x: Any) -> bool:
    """True for a NumPy ndarray (not a NumPy scalar, not a subclass such as np.matrix)."""
    return type(x) is np.ndarray


def all_numpy(*arrays: Any) -> bool:
    """True when every array that is not None is a NumPy ndarray (``when=`` tests of Numba paths)."""
    return all(a is None or is_numpy(a) for a in arrays)


def dtype_by_name(name: str, like: Any, xp: Any) -> Any:
    """The dtype called ``name`` (``"float64"``) in the library of ``like``; TypeError when it has none."""
    dt = getattr(xp, name, None)
    if dt is None and is_torch(like):
        dt = getattr(_torch(), name, None)
    if dt is None:
        raise TypeError(f"dtype={name!r} is not available for {backend_name(like)} arrays")
    return dt


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
    if is_numpy(x) or isinstance(x, (np.ndarray, np.generic)):   # NumPy scalars (0-d reductions) are NumPy
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


def to_numpy(x: Any) -> Any:
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
    """Put a NumPy array into the library (and device) of ``like``; under ``jax.jit`` (``like`` traced) the
    array becomes a constant of the trace."""
    if is_numpy(like) or isinstance(like, np.ndarray):
        return a
    xp = array_namespace(like)
    if is_jax(like) and not is_concrete(like):
        return xp.asarray(a)
    if is_torch(like):
        # np.require keeps a 0-d array 0-d (np.ascontiguousarray would make it shape (1,))
        return _torch().from_numpy(np.require(a, requirements="C")).to(like.device)
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


_DTYPE_NAMES: dict = {}
_FLOAT_NAMES = frozenset(("float16", "bfloat16", "float32", "float64"))


def dtype_name(dtype: Any) -> str:
    """Library-independent dtype name: ``float32`` for ``np.float32``, ``torch.float32``, ``jnp.float32``..."""
    try:
        return _DTYPE_NAMES[dtype]
    except (KeyError, TypeError):
        name = str(dtype).rsplit(".", 1)[-1]
        try:
            _DTYPE_NAMES[dtype] = name
        except TypeError:  # unhashable dtype object
            pass
        return name


def is_floating(x: Any, xp=None) -> bool:
    """Real floating dtype (float16, bfloat16, float32, float64) in any library."""
    return dtype_name(x.dtype) in _FLOAT_NAMES


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


# ---------------------------------------------------------------------------------------------- shared helpers
def cast(x: Any, dtype: Any, xp=None) -> Any:
    """``x`` in ``dtype``, or ``x`` itself when it already has it (``xp.astype`` copies by default).

    The one cast-if-needed helper of the package."""
    if x is None or x.dtype == dtype:
        return x
    xp = xp or array_namespace(x)
    return xp.astype(x, dtype)


def is_writeable(x: Any) -> bool:
    """Whether ``x`` can be written in place (False for JAX arrays and read-only NumPy views)."""
    if is_jax(x):
        return False
    if isinstance(x, np.ndarray):
        return bool(x.flags.writeable)
    if is_array_api_strict(x):
        return bool(_strict_np(x).flags.writeable)
    return True


def is_mutable(x: Any) -> bool:
    """Whether the library lets optnorm write into ``x`` (all but JAX)."""
    return not is_jax(x)


def _strict_np(x):
    return x._array  # array-api-strict wraps a NumPy array; the only way to ask about its memory


def _extent(x: Any):
    """(start address, end address, strides-in-bytes, shape, itemsize) of an array's memory, or None."""
    if isinstance(x, np.ndarray):
        a = x
    elif is_array_api_strict(x):
        a = _strict_np(x)
    elif is_torch(x):
        if x.numel() == 0:
            return None
        isz = x.element_size()
        strides = tuple(s * isz for s in x.stride())
        start = x.data_ptr()
        lo = start + sum(min(0, s * (n - 1)) for s, n in zip(strides, x.shape))
        hi = start + sum(max(0, s * (n - 1)) for s, n in zip(strides, x.shape)) + isz
        return (lo, hi, strides, tuple(x.shape), isz, start, x.device)
    elif is_cupy(x):
        if x.size == 0:
            return None
        start = x.data.ptr
        lo = start + sum(min(0, s * (n - 1)) for s, n in zip(x.strides, x.shape))
        hi = start + sum(max(0, s * (n - 1)) for s, n in zip(x.strides, x.shape)) + x.itemsize
        return (lo, hi, tuple(x.strides), tuple(x.shape), x.itemsize, start, x.device)
    else:
        return None
    if a.size == 0:
        return None
    start = a.__array_interface__["data"][0]
    lo = start + sum(min(0, s * (n - 1)) for s, n in zip(a.strides, a.shape))
    hi = start + sum(max(0, s * (n - 1)) for s, n in zip(a.strides, a.shape)) + a.itemsize
    return (lo, hi, tuple(a.strides), tuple(a.shape), a.itemsize, start, "cpu")


def overlap(a: Any, b: Any) -> str:
    """How the memory of two arrays relates: ``"none"``, ``"same"`` (identical layout) or ``"partial"``.

    Decided from address ranges (a conservative answer: interleaved views that never touch the
    same element still count as ``"partial"``); NumPy's exact ``shares_memory`` settles NumPy pairs.
    """
    ea, eb = _extent(a), _extent(b)
    if ea is None or eb is None or ea[6] != eb[6]:
        return "none"
    if ea[1] <= eb[0] or eb[1] <= ea[0]:
        return "none"
    if ea[5] == eb[5] and ea[2] == eb[2] and ea[3] == eb[3] and ea[4] == eb[4]:
        return "same"
    na = a if isinstance(a, np.ndarray) else (_strict_np(a) if is_array_api_strict(a) else None)
    nb = b if isinstance(b, np.ndarray) else (_strict_np(b) if is_array_api_strict(b) else None)
    work: Any = 10**6   # bounded exact check (NumPy's stubs only admit the special values)
    if na is not None and nb is not None and not np.shares_memory(na, nb, max_work=work):
        return "none"
    return "partial"


def asarray_like(host: np.ndarray, values: Any = (), xp=None):
    """A NumPy array (from a Python list) in the library and device of the arrays among ``values``."""
    vals = values.values() if isinstance(values, dict) else values
    like = next((v for v in vals if is_array(v) and not isinstance(v, np.generic)), None)
    if like is None or isinstance(like, np.ndarray):
        return host
    return from_numpy_like(host, like)


def detach(x: Any) -> Any:
    """``x`` without autograd history (torch ``detach``; other libraries: ``x`` itself)."""
    return x.detach() if is_torch(x) else x


def stop_gradient(x: Any) -> Any:
    """``x`` as a constant for autodiff: torch ``detach``, JAX ``lax.stop_gradient`` (under ``jax.grad`` too),
    other libraries ``x`` itself.  For statistics that must carry no gradient (batch-norm running means)."""
    if x is None:
        return None
    if is_torch(x):
        return x.detach()
    if is_jax(x):
        import jax

        return jax.lax.stop_gradient(x)
    return x


def requires_grad(*arrays: Any) -> bool:
    """True when any torch tensor among ``arrays`` records autograd history."""
    return any(is_torch(a) and a.requires_grad for a in arrays if a is not None)


def is_traced(*arrays: Any) -> bool:
    """True when any array is an abstract value (a JAX tracer inside jit/grad/vmap)."""
    return any(a is not None and is_array(a) and not is_concrete(a) for a in arrays)


def native_autograd(*arrays: Any) -> str | None:
    """Which adapter must run a differentiable op so that the caller's autograd sees it.

    ``"torch"`` when a torch tensor requires grad, ``"jax"`` when a JAX array is traced,
    else None (run the plain function)."""
    if requires_grad(*arrays):
        return "torch"
    if any(is_jax(a) and not is_concrete(a) for a in arrays if a is not None):
        return "jax"
    return None


def no_grad(*arrays: Any):
    """A context manager: ``torch.no_grad()`` when any input is a torch tensor, else a no-op."""
    import contextlib

    if any(is_torch(a) for a in arrays if a is not None):
        return _torch().no_grad()
    return contextlib.nullcontext()


def copy_into(dst: Any, src: Any) -> Any:
    """Write ``src`` into the mutable array ``dst`` (same shape) and return ``dst``."""
    if is_torch(dst):
        with _torch().no_grad():
            dst.copy_(src)
    elif is_jax(dst):
        raise TypeError("JAX arrays are immutable: cannot write into one")
    else:
        dst[...] = src
    return dst


def _dev_kw(like: Any) -> dict:
    # an uncommitted JAX array (jnp.ones(...), not device_put) lives on the default device: the new array
    # stays uncommitted too, so jit sees one commitment for a state built from it (no retrace on the next call)
    if like is None or (is_jax(like) and (not is_concrete(like) or not like.committed)):
        return {}
    return {"device": device(like)}


def arange(n: int, *, like: Any, dtype=None, xp=None):
    """``xp.arange(n)`` on ``like``'s device."""
    xp = xp or array_namespace(like)
    return xp.arange(n, dtype=dtype, **_dev_kw(like))


def eye(n: int, *, like: Any, dtype=None, xp=None):
    """``xp.eye(n)`` on ``like``'s device, in ``dtype`` (default: ``like``'s dtype)."""
    xp = xp or array_namespace(like)
    return xp.eye(n, dtype=dtype if dtype is not None else like.dtype, **_dev_kw(like))


def zeros(shape, *, like: Any, dtype=None, xp=None):
    xp = xp or array_namespace(like)
    return xp.zeros(shape, dtype=dtype if dtype is not None else like.dtype, **_dev_kw(like))


def full(shape, value, *, like: Any, dtype=None, xp=None):
    xp = xp or array_namespace(like)
    return xp.full(shape, value, dtype=dtype if dtype is not None else like.dtype, **_dev_kw(like))


def fast_path_of(*arrays: Any) -> str:
    """The fast path the inputs' library suggests: ``"numba"`` (all NumPy), ``"cuda"`` (any CuPy) or
    ``"generic"`` (torch, JAX, array-api-strict, mixed)."""
    arrs = [a for a in arrays if a is not None]
    if arrs and all(is_numpy(a) for a in arrs):
        return "numba"
    if arrs and any(is_cupy(a) for a in arrs):
        return "cuda"
    return "generic"


# ---------------------------------------------------------------------------------------------- fused numerics
def lerp(a: Any, b: Any, w: float, xp=None) -> Any:
    """``a + w (b - a)`` for a Python float ``w``, rounded like ``torch.lerp``: ``b - (b - a)(1 - w)`` when
    ``w >= 0.5``.  On torch tensors of one dtype it is ``torch.lerp`` itself (one fused pass, torch.optim's
    exact rounding)."""
    if is_torch(a) and is_torch(b) and a.dtype == b.dtype and isinstance(w, float):
        return _torch().lerp(a, b, w)
    if isinstance(w, float) and w >= 0.5:
        return b - (b - a) * (1.0 - w)
    return a + w * (b - a)


def addmm(c: Any, a: Any, b: Any, *, beta: float, alpha: float, xp=None) -> Any:
    """``beta c + alpha (a @ b)`` for matrices; ``torch.addmm`` on 2-D torch tensors (one fused GEMM, the
    rounding torch.optim.Muon's Newton-Schulz iteration has, which matters in bfloat16)."""
    if is_torch(c) and c.ndim == 2 and a.ndim == 2 and b.ndim == 2:
        return _torch().addmm(c, a, b, beta=beta, alpha=alpha)
    return beta * c + alpha * (a @ b)


def random_signs(likes, *, seed: tuple, step: Any = 0) -> list:
    """Independent +-1 arrays shaped like each array of ``likes`` (same library, dtype and device), a
    deterministic function of ``(seed, step)`` (``seed`` a tuple of ints).

    NumPy's PCG64 on the host for every library but JAX; JAX uses ``jax.random``
    (``fold_in(key(seed[0]), seed[1:], step)``), so ``step`` may be a traced integer inside ``jax.jit``."""
    likes = list(likes)
    if likes and is_jax(likes[0]):
        import jax

        key = jax.random.PRNGKey(seed[0])
        for s in seed[1:]:
            key = jax.random.fold_in(key, s)
        key = jax.random.fold_in(key, step)
        keys = jax.random.split(key, len(likes))
        return [jax.random.rademacher(k, p.shape, dtype=p.dtype) for k, p in zip(keys, likes)]
    step_i = int(step) if is_concrete(step) else 0
    rng = np.random.default_rng([*seed, step_i])
    out = []
    for p in likes:
        z = np.asarray(rng.integers(0, 2, size=tuple(p.shape), dtype=np.int8) * 2 - 1, dtype=np.float64)  # 0-d too
        out.append(cast(from_numpy_like(z, p), p.dtype))
    return out


def random_normal(likes, *, seed: tuple, step: Any = 0) -> list:
    """Independent standard normal arrays shaped like each array of ``likes`` (same library, dtype and
    device), a deterministic function of ``(seed, step)``: :func:`random_signs`' scheme (NumPy's PCG64 on
    the host; ``jax.random`` for JAX, where ``step`` may be traced)."""
    likes = list(likes)
    if likes and is_jax(likes[0]):
        import jax

        key = jax.random.PRNGKey(seed[0])
        for s in seed[1:]:
            key = jax.random.fold_in(key, s)
        key = jax.random.fold_in(key, step)
        keys = jax.random.split(key, len(likes))
        return [jax.random.normal(k, p.shape, dtype=p.dtype) for k, p in zip(keys, likes)]
    step_i = int(step) if is_concrete(step) else 0
    rng = np.random.default_rng([*seed, step_i])
    return [cast(from_numpy_like(np.asarray(rng.standard_normal(size=tuple(p.shape))), p), p.dtype) for p in likes]
