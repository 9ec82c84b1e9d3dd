"""Launch helpers shared by every CUDA fast path (CuPy arrays in, CuPy arrays out).

- :func:`as_rows` / :func:`from_rows`: move the reduced axis last, view as C-contiguous ``(rows, n)``,
  and back (with ``out=``), the CUDA twin of :mod:`optnorm._numba._rows`;
- :func:`rows`: one block per row (row kernels: softmax, norms);
- :func:`elementwise`: a 1-D grid over ``n`` elements (optimizer steps, one thread per row);
- :func:`grid2d`: a 2-D grid over an ``(n, m)`` output (pairwise kernels, column reductions).

Kernels are looked up through :func:`optnorm._cuda.loader.kernel` (cached per device).
"""
from __future__ import annotations

import numpy as np

from . import loader

__all__ = ["as_rows", "from_rows", "rows", "elementwise", "grid2d", "BLOCK"]

BLOCK = 256


def as_rows(x, axis: int):
    """C-contiguous ``(rows, n)`` CuPy array with ``axis`` as the row (a copy only when the layout needs one)."""
    import cupy

    xm = cupy.moveaxis(x, axis, -1)
    n = xm.shape[-1] if xm.ndim else 1
    return cupy.ascontiguousarray(xm).reshape(-1, n)


def from_rows(buf, shape: tuple, axis: int, out=None):
    """Inverse of :func:`as_rows` for a ``(rows, n)`` result; writes into ``out`` when given."""
    import cupy

    moved = list(shape)
    moved.append(moved.pop(axis))
    y = cupy.moveaxis(buf.reshape(moved), -1, axis)
    if out is None:
        return y
    out[...] = y
    return out


def _ints(args):
    # Python ints become int64 (the kernels take long long sizes); floats stay as given by the caller
    return tuple(np.int64(a) if isinstance(a, int) and not isinstance(a, bool) else a for a in args)


def rows(domain: str, name: str, dtype, n_rows: int, args: tuple, *, block: int = BLOCK, shared_mem: int = 0):
    """Launch ``name<dtype>`` with one block of ``block`` threads per row."""
    if n_rows == 0:
        return
    k = loader.kernel(domain, name, dtype)
    k((int(n_rows),), (block,), _ints(args), shared_mem=shared_mem)


def elementwise(domain: str, name: str, dtype, n: int, args: tuple, *, block: int = BLOCK):
    """Launch ``name<dtype>`` over ``n`` threads (``ceil(n / block)`` blocks)."""
    if n == 0:
        return
    k = loader.kernel(domain, name, dtype)
    k(((int(n) + block - 1) // block,), (block,), _ints(args))


def grid2d(domain: str, name: str, dtype, n: int, m: int, args: tuple, *, block: tuple[int, int] = (32, 8),
           max_grid_y: int = 65535):
    """Launch ``name<dtype>`` on a grid covering ``m`` columns (x) and ``n`` rows (y, strided beyond 65535)."""
    if n == 0 or m == 0:
        return
    k = loader.kernel(domain, name, dtype)
    bx, by = block
    k((((int(m) + bx - 1) // bx), min((int(n) + by - 1) // by, max_grid_y)), (bx, by), _ints(args))
