"""Row kernels: a kernel written once for C-contiguous ``(rows, n)`` arrays, and the plumbing around it.

A row kernel loops ``for r in prange(x.shape[0])`` over the rows of 2-D C-contiguous arrays and writes
into preallocated outputs; it never deals with axes, batch shapes, strides or allocation (numbagg's
``ndreduce`` / ``ndmoving`` idea).  Two pieces do the rest:

- :func:`row_kernel` compiles the kernel twice, parallel and serial, and each call picks one: few
  rows or little work run the serial build, because waking the thread pool costs far more than a
  small row op (a 3 x 5 softmax spent ~1 ms in the parallel region), so the cost of a call grows
  with its size and nothing else.  The serial twin is a copy of the function under another
  qualified name: Numba's on-disk cache keys compiled code by function name and bytecode, not by
  ``parallel=``, so two builds of one function object would load each other's code.
- :class:`Rows` moves the reduced axis (one axis anywhere, or several trailing axes) of an input last
  and views it as ``(rows, n)``; gives an output buffer that is a view of ``out=`` when its layout
  allows (written in place) or a new array; and turns the buffer back into the caller's shape::

      rows = Rows(x.shape, axes)
      y2, out = rows.output(out, x.dtype)
      _softmax_rows(rows.view(x), y2, ...)
      return rows.finish(y2, out)

``out=`` never aliases an input here: the validation layer computes a call whose ``out`` *is* an
input into a temporary and refuses partial overlap (:class:`optnorm._lib.roles.Out`).
"""
from __future__ import annotations

import math
import types

import numba
import numpy as np

__all__ = ["jit", "row_kernel", "RowKernel", "Rows", "SERIAL_BELOW", "SAFE_FASTMATH"]

# below this many elements (or with one row) a row kernel runs its serial build
SERIAL_BELOW = 1 << 16

# Fastmath flags a parallel kernel may use (and helpers inlined into one).  Not ``reassoc``: a ``prange`` body
# is compiled twice, as its own gufunc library (which the compiling process runs) and as a copy re-optimised
# inside the caller's module (which is the object code the on-disk cache stores), and reassociation lets the
# two optimisations compute different results, so a kernel loaded from the cache would not compute what a
# freshly compiled one does (log-domain Sinkhorn at costs ~1e300: finite fresh, NaN cached).  Not
# ``nnan``/``ninf`` (kernels test for -inf and let NaN propagate) nor ``afn`` (approximate libm calls).
# Reductions that need ``reassoc`` to vectorise keep explicit lane partials instead, or live in small
# non-parallel helpers.
SAFE_FASTMATH = frozenset({"contract", "nsz", "arcp"})


def _options(parallel: bool, fastmath, kw) -> dict:
    """njit options; with ``parallel``, ``fastmath=True`` means :data:`SAFE_FASTMATH` and a set of flags must be a
    subset of it (see above)."""
    if parallel and fastmath is True:
        fastmath = set(SAFE_FASTMATH)
    elif parallel and fastmath:
        bad = set(fastmath) - SAFE_FASTMATH
        if bad:
            raise ValueError(f"fastmath flags {sorted(bad)} make cached kernels differ from fresh ones or break "
                             f"inf/NaN handling; allowed: {sorted(SAFE_FASTMATH)}")
        fastmath = set(fastmath)
    return dict(cache=True, nogil=True, parallel=parallel, fastmath=fastmath, error_model="numpy", **kw)


def jit(*, parallel: bool = True, fastmath=False, **kw):
    """``numba.njit`` with optnorm's defaults: on-disk cache, no GIL, NumPy error model (for kernels that
    are not row kernels, e.g. channel loops; row kernels use :func:`row_kernel`)."""
    return numba.njit(**_options(parallel, fastmath, kw))


def _twin(fn, suffix: str):
    """A copy of ``fn`` with its own qualified name (so its own on-disk cache entry)."""
    f = types.FunctionType(fn.__code__, fn.__globals__, f"{fn.__name__}_{suffix}", fn.__defaults__, fn.__closure__)
    f.__qualname__ = f"{fn.__qualname__}_{suffix}"
    f.__module__ = fn.__module__
    f.__doc__ = fn.__doc__
    return f


class RowKernel:
    """A row kernel compiled parallel and serial; calling it runs the build that suits the first argument.

    ``par_axis`` is the axis of the first argument that the kernel's ``prange`` runs over (0: rows).
    """

    def __init__(self, fn, *, fastmath=False, par_axis: int = 0, serial_below: int = SERIAL_BELOW, **kw):
        self.py_func = fn
        self.par_axis = par_axis
        self.serial_below = serial_below
        self.parallel = numba.njit(**_options(True, fastmath, kw))(fn)
        self.serial = numba.njit(**_options(False, fastmath, kw))(_twin(fn, "serial"))
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    def build_for(self, x):
        """The compiled build a call whose first argument is ``x`` runs."""
        if x.shape[self.par_axis] < 2 or x.size < self.serial_below or numba.get_num_threads() < 2:
            return self.serial
        return self.parallel

    def __call__(self, x, *args):
        return self.build_for(x)(x, *args)

    def __repr__(self):
        return f"RowKernel({self.__name__})"


def row_kernel(fn=None, /, *, fastmath=False, par_axis: int = 0, serial_below: int = SERIAL_BELOW, **kw):
    """Decorator: ``fn`` becomes a :class:`RowKernel` (parallel and serial builds, cached on disk)."""

    def deco(f):
        return RowKernel(f, fastmath=fastmath, par_axis=par_axis, serial_below=serial_below, **kw)

    return deco if fn is None else deco(fn)


class Rows:
    """The ``(rows, n)`` layout of an array reduced over ``axes``: one axis anywhere, or trailing axes.

    ``n`` is the row length (the product of the reduced axes), ``count`` the number of rows, and
    :attr:`stat_shape` the keepdims shape of a per-row statistic.
    """

    def __init__(self, shape, axes):
        shape = tuple(int(s) for s in shape)
        axes = (axes,) if isinstance(axes, (int, np.integer)) else tuple(axes)
        nd = len(shape)
        axes = tuple(sorted(int(a) % max(nd, 1) for a in axes))
        if len(axes) > 1 and axes != tuple(range(nd - len(axes), nd)):
            raise ValueError(f"row kernels reduce one axis or trailing axes, got axes {axes} of a {nd}-d array")
        self.shape = shape
        self.axes = axes
        self.n = math.prod(shape[a] for a in axes)
        self.count = math.prod(s for i, s in enumerate(shape) if i not in axes)
        self._single = len(axes) == 1 and axes[0] != nd - 1

    @property
    def stat_shape(self) -> tuple:
        return tuple(1 if i in self.axes else s for i, s in enumerate(self.shape))

    def _moved(self, a):
        return np.moveaxis(a, self.axes[0], -1) if self._single else a

    def view(self, x, dtype=None) -> np.ndarray:
        """``x`` as a C-contiguous ``(rows, n)`` array (a copy only when its layout, or ``dtype``, needs one)."""
        return np.ascontiguousarray(self._moved(x), dtype=dtype).reshape(self.count, self.n)

    def output(self, out=None, dtype=None):
        """``(buffer, out)``: a ``(rows, n)`` view of ``out`` when its layout allows (the kernel then writes
        the caller's array directly), else a new buffer; :meth:`finish` takes both."""
        if out is not None:
            om = self._moved(out)
            if om.flags.c_contiguous:
                return om.reshape(self.count, self.n), out
        return np.empty((self.count, self.n), dtype=dtype if dtype is not None else out.dtype), out

    def finish(self, buf, out=None) -> np.ndarray:
        """The ``(rows, n)`` result in the caller's shape; copied into ``out`` unless it was written in place."""
        if self._single:
            moved = [s for i, s in enumerate(self.shape) if i != self.axes[0]] + [self.shape[self.axes[0]]]
            y = np.moveaxis(buf.reshape(moved), -1, self.axes[0])
        else:
            y = buf.reshape(self.shape)
        if out is None:
            return y
        if not np.shares_memory(y, out):
            out[...] = y
        return out

    def stats(self, s) -> np.ndarray:
        """A per-row statistic ``(rows,)`` in the keepdims shape."""
        return s.reshape(self.stat_shape)
