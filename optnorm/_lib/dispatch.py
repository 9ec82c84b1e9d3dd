"""Choice of implementation for a call: ``numba`` (NumPy input), ``cuda`` (CuPy input) or ``generic``.

A public function keeps one generic Array-API body and may register fast paths for it::

    _softmax = Dispatcher("norm.softmax")

    @_softmax.generic
    def _(x, *, axis, out, xp): ...

    @_softmax.numba(when=lambda x, **kw: x.dtype in (np.float32, np.float64))
    def _(x, *, axis, out, xp): ...

    def softmax(x, /, *, axis=-1, out=None):
        xp = array_namespace(x)
        ...validate...
        return _softmax(x, axis=axis, out=out, xp=xp)

The fast path is never a different algorithm: tests run each path against the
generic one and a float64 reference.  ``OPTNORM_BACKEND=generic|numba|cuda|auto``
or ``with optnorm.use_backend("generic"):`` forces a path where it applies (a
forced ``numba`` on a torch tensor still runs the generic body).
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
from typing import Any, Callable

import numpy as np

from . import compat

__all__ = ["Dispatcher", "use_backend", "get_backend", "numba_available", "cupy_available", "BACKENDS",
           "blockwise", "DISPATCHERS", "fast_paths"]

BACKENDS = ("auto", "generic", "numba", "cuda")
_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("optnorm_backend", default=None)
_cache: dict[str, bool] = {}
DISPATCHERS: dict[str, "Dispatcher"] = {}  # every Dispatcher by name (the GPU suite and docs list fast paths)


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


def get_backend() -> str:
    """The forced path: ``use_backend`` first, then ``OPTNORM_BACKEND``, else ``"auto"``."""
    name = _forced.get()
    if name is None:
        name = os.environ.get("OPTNORM_BACKEND", "auto").strip().lower() or "auto"
        if name not in BACKENDS:
            raise ValueError(f"OPTNORM_BACKEND must be one of {BACKENDS}, got {name!r}")
    return name


@contextlib.contextmanager
def use_backend(name: str):
    """Force an implementation path inside a ``with`` block (``"auto"`` restores the default choice)."""
    token = _forced.set(_check_name(name))
    try:
        yield
    finally:
        _forced.reset(token)


def numba_available() -> bool:
    if "numba" not in _cache:
        _cache["numba"] = importlib.util.find_spec("numba") is not None
    return _cache["numba"]


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    if "cupy" not in _cache:
        ok = False
        if importlib.util.find_spec("cupy") is not None:
            try:
                import cupy

                ok = cupy.cuda.runtime.getDeviceCount() > 0
            except Exception:  # no driver, no device: CuPy raises various CUDA errors
                ok = False
        _cache["cupy"] = ok
    return _cache["cupy"]


def _arrays(args, kwargs):
    for a in args:
        if a is not None and compat.is_array(a):
            yield a
    for k, a in kwargs.items():
        if k != "xp" and a is not None and compat.is_array(a):
            yield a


natural_path = compat.fast_path_of


class Dispatcher:
    """Implementations of one function, keyed by path; calling it runs the chosen one."""

    def __init__(self, name: str, *, serves: str | tuple[str, ...] | None = None):
        """``name`` is ``"domain.kernel"``; ``serves`` names the public function(s) whose calls (forward or
        VJP) run through it, as ``"domain.function"`` (default: ``name`` itself).  The capability table,
        ``python -m optnorm info`` and the GPU suite read it; a test checks every name is declared."""
        if name in DISPATCHERS:
            raise ValueError(f"dispatcher {name!r} exists already")
        self.name = name
        self.serves = (serves,) if isinstance(serves, str) else tuple(serves or (name,))
        self._impls: dict[str, tuple[Callable, Callable | None]] = {}
        DISPATCHERS[name] = self

    def register(self, path: str, when: Callable[..., bool] | None = None):
        if path not in ("generic", "numba", "cuda"):
            raise ValueError(f"path must be generic, numba or cuda, got {path!r}")

        def deco(fn):
            self._impls[path] = (fn, when)
            return fn

        return deco

    def generic(self, fn):
        return self.register("generic")(fn)

    def numba(self, fn=None, *, when=None):
        return self.register("numba", when) if fn is None else self.register("numba", when)(fn)

    def cuda(self, fn=None, *, when=None):
        return self.register("cuda", when) if fn is None else self.register("cuda", when)(fn)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(self._impls)

    def path_for(self, *args, **kwargs) -> str:
        """Which path a call with these arguments takes (tests and benchmarks use it)."""
        forced = get_backend()
        if forced == "generic":
            return "generic"
        path = natural_path(*_arrays(args, kwargs))
        if forced not in ("auto", path):  # e.g. numba forced on a torch tensor: the path does not apply
            return "generic"
        if path == "numba" and not numba_available():
            return "generic"
        if path == "cuda" and not cupy_available():
            return "generic"
        entry = self._impls.get(path)
        if entry is None:
            return "generic"
        _, when = entry
        if when is not None and not when(*args, **kwargs):
            return "generic"
        return path

    def __call__(self, *args, **kwargs):
        path = self.path_for(*args, **kwargs)
        try:
            fn, _ = self._impls[path]
        except KeyError:
            raise NotImplementedError(f"{self.name} has no generic implementation") from None
        return fn(*args, **kwargs)

    def __repr__(self):
        return f"Dispatcher({self.name!r}, paths={self.paths}, serves={self.serves})"


def fast_paths() -> dict[str, set[str]]:
    """Public function name -> the fast paths (``numba``, ``cuda``) of the dispatchers serving it."""
    from . import api

    api.load_domains()
    out: dict[str, set[str]] = {}
    for d in DISPATCHERS.values():
        for fn in d.serves:
            out.setdefault(fn, set()).update(p for p in d.paths if p != "generic")
    return out


def numpy_float(*arrays: Any, contiguous: bool = False) -> bool:
    """``when=`` helper: every array is float32/float64 NumPy of one dtype (and C-contiguous if asked)."""
    dts = set()
    for a in arrays:
        if a is None:
            continue
        if not compat.is_numpy(a) or a.dtype not in (np.float32, np.float64):
            return False
        if contiguous and not a.flags.c_contiguous:
            return False
        dts.add(a.dtype)
    return len(dts) <= 1


def _is_dask(x: Any) -> bool:
    import sys

    if "dask" not in sys.modules:
        return False
    import array_api_compat

    return array_api_compat.is_dask_array(x)


def blockwise(signature: str, *, array_args: int = 1, axis_arg: str | None = None, output_dtype=None,
              vectorize: bool = False):
    """Let a public function take Dask arrays: it then runs block by block on NumPy chunks.

    ``signature`` is a generalized-ufunc signature over the first ``array_args``
    positional arrays, e.g. ``"(n)->(n)"`` for a row op, ``"(n,n),(n,n)->()"`` for a
    batched matrix distance, ``"(n,d),(m,d)->()"`` for a batch of point-cloud pairs.
    Core dimensions must be whole inside one chunk (Dask rechunks them if needed);
    leading (loop) dimensions may be chunked freely, and each chunk takes the NumPy
    path of the function (so its Numba kernel) inside the Dask worker.  With
    ``axis_arg`` (a one-core-dimension signature), the core dimension is the axis
    that keyword names.  Keyword options are passed through unchanged.  ``vectorize``
    loops over the leading dimensions for functions that take one problem at a time.
    Non-Dask inputs do not go through this wrapper at all.
    """
    import functools

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            arrs = args[:array_args]
            if not any(_is_dask(a) for a in arrs):
                return fn(*args, **kwargs)
            import dask.array as da

            rest = args[array_args:]
            gu_kw = {}
            if axis_arg is not None:
                axis = kwargs.get(axis_arg, -1)
                if not isinstance(axis, int):
                    raise TypeError(f"{fn.__name__}: with Dask arrays, {axis_arg} must be a single int")
                gu_kw["axis"] = axis
                kwargs = {**kwargs, axis_arg: -1}
            if kwargs.get("out") is not None:
                raise TypeError(f"{fn.__name__}: out= cannot be used with Dask arrays")

            def block(*blocks):
                return np.asarray(fn(*blocks, *rest, **kwargs))

            dt = output_dtype or np.result_type(*[a.dtype for a in arrs if a is not None])
            return da.apply_gufunc(block, signature, *[a for a in arrs], output_dtypes=dt,
                                   allow_rechunk=True, vectorize=vectorize, **gu_kw)

        wrapper.__optnorm_blockwise__ = signature
        return wrapper

    return deco
