"""Shared wrapper for row kernels: move the reduced axis last, view as (rows, n), handle ``out=``.

Kernels take C-contiguous 2-D arrays and write into a preallocated output, and
never deal with axes, batching or allocation (numbagg's decorator idea).
"""
from __future__ import annotations

import numba
import numpy as np

__all__ = ["jit", "as_rows", "from_rows", "row_out", "SAFE_FASTMATH"]


# Fastmath flags a parallel kernel may use (and helpers inlined into one).  Not ``reassoc``: a ``prange`` body
# is compiled twice, as its own gufunc library (which the compiling process runs) and as a copy re-optimised
# inside the caller's module (which is the object code the on-disk cache stores), and reassociation lets the
# two optimisations compute different results, so a kernel loaded from the cache would not compute what a
# freshly compiled one does (log-domain Sinkhorn at costs ~1e300: finite fresh, NaN cached).  Not ``nnan``/``ninf`` (kernels test for -inf and let NaN
# propagate) nor ``afn`` (approximate libm calls).  Reductions that need ``reassoc`` to vectorise keep explicit
# lane partials instead, or live in small non-parallel helpers.
SAFE_FASTMATH = frozenset({"contract", "nsz", "arcp"})


def jit(*, parallel: bool = True, fastmath: bool | set = False, **kw):
    """``numba.njit`` with optnorm's defaults: on-disk cache, no GIL, NumPy error model.

    With ``parallel=True``, ``fastmath=True`` means :data:`SAFE_FASTMATH` and a set of flags must be a subset of
    it (see above)."""
    if parallel and fastmath is True:
        fastmath = set(SAFE_FASTMATH)
    elif parallel and fastmath:
        bad = set(fastmath) - SAFE_FASTMATH
        if bad:
            raise ValueError(f"fastmath flags {sorted(bad)} make cached kernels differ from fresh ones or break "
                             f"inf/NaN handling; allowed: {sorted(SAFE_FASTMATH)}")
        fastmath = set(fastmath)
    return numba.njit(cache=True, nogil=True, parallel=parallel, fastmath=fastmath, error_model="numpy", **kw)


def as_rows(x: np.ndarray, axis: int) -> np.ndarray:
    """C-contiguous (rows, n) view (or copy when the layout needs one) with ``axis`` as the row."""
    xm = np.moveaxis(x, axis, -1)
    n = xm.shape[-1] if xm.ndim else 1
    return np.ascontiguousarray(xm).reshape(-1, n)


def row_out(out: np.ndarray | None, shape: tuple, axis: int, dtype) -> tuple[np.ndarray, np.ndarray | None]:
    """A (rows, n) buffer to write into: a view of ``out`` when its layout allows, else a new array.

    Returns ``(buffer2d, out_or_None)``; call :func:`from_rows` with both to finish.
    """
    moved = tuple(np.delete(np.array(shape), axis)) + (shape[axis],) if len(shape) else (1,)
    n = moved[-1] if moved else 1
    if out is not None:
        om = np.moveaxis(out, axis, -1)
        if om.flags.c_contiguous:
            return om.reshape(-1, n), out
    return np.empty((int(np.prod(moved[:-1], dtype=np.int64)), n), dtype=dtype), out


def from_rows(buf: np.ndarray, shape: tuple, axis: int, out: np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`as_rows` for an output buffer; copies into ``out`` when it was not written directly."""
    moved = list(shape)
    moved.append(moved.pop(axis))
    y = np.moveaxis(buf.reshape(moved), -1, axis)
    if out is None:
        return y
    if not np.shares_memory(y, out):
        out[...] = y
    return out
