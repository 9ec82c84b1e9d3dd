"""Shared wrapper for row kernels: move the reduced axis last, view as (rows, n), handle ``out=``.

Kernels take C-contiguous 2-D arrays and write into a preallocated output, and
never deal with axes, batching or allocation (numbagg's decorator idea).
"""
from __future__ import annotations

import numba
import numpy as np

__all__ = ["jit", "as_rows", "from_rows", "row_out"]


def jit(*, parallel: bool = True, fastmath: bool = False, **kw):
    """``numba.njit`` with optnorm's defaults: on-disk cache, no GIL, NumPy error model."""
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
