"""Fused multi-tensor paths of the elementwise rules (Adam/AdamW, SGD, Lion) for ``Rule.step_``.

One dispatcher per kernel: ``numba`` for C-contiguous float32/float64 NumPy buffers
(``optnorm/_numba/optim.py``: one parallel region over all tensors, with the
finiteness check of the gradients fused in), ``cuda`` for CuPy buffers
(``optnorm/_cuda/optim.cu``, one launch per tensor), ``generic`` returns False so
the rule falls back to its pure leaf update.

Each entry point returns True (step done), False (no fast path: nothing written)
or None (a gradient is not finite: nothing written; the caller applies ``nan_policy``).
"""
from __future__ import annotations

import functools

import numpy as np

from .._lib import compat
from .._lib.dispatch import Dispatcher

_adam = Dispatcher("optim.adam_step")
_sgd = Dispatcher("optim.sgd_step")
_lion = Dispatcher("optim.lion_step")


def _numpy_ready(arrays) -> bool:
    dt = None
    for a in arrays:
        if a is None:
            continue
        if not compat.is_numpy(a) or a.dtype not in (np.float32, np.float64) or not a.flags.c_contiguous \
                or not a.flags.writeable:
            return False
        if dt is None:
            dt = a.dtype
        elif a.dtype != dt:
            return False
    return True


def _cupy_ready(arrays) -> bool:
    dt = None
    for a in arrays:
        if a is None:
            continue
        if not compat.is_cupy(a) or str(a.dtype) not in ("float32", "float64") or not a.flags.c_contiguous:
            return False
        if dt is None:
            dt = a.dtype
        elif a.dtype != dt:
            return False
    return True


def _when_numpy(rep, arrays, *a, **k):
    return _numpy_ready(arrays)


def _when_cupy(rep, arrays, *a, **k):
    return _cupy_ready(arrays)


@functools.lru_cache(maxsize=64)
def _chunks(sizes):
    from .._numba.optim import chunks

    return chunks(sizes)


class _Layout:
    """Chunk table of a list of same-dtype 1-D buffers: per-chunk start addresses of any such list."""

    def __init__(self, ps):
        sizes = tuple(int(p.size) for p in ps)
        self.ti, start, self.length = _chunks(sizes)
        self.offset = start * ps[0].dtype.itemsize
        self.like = np.zeros(1, ps[0].dtype)

    def addr(self, arrays):
        base = np.fromiter((a.ctypes.data for a in arrays), dtype=np.int64, count=len(arrays))
        return base[self.ti] + self.offset


def _cuda_finite(gs) -> bool:
    import cupy

    return all(bool(cupy.isfinite(g).all()) for g in gs)


def _launch(name, dtype, n, args):
    from .._cuda import loader

    k = loader.kernel("optim", f"{name}<{loader.dtype_name(dtype)}>")
    threads = 256
    blocks = min(max(1, (n + threads - 1) // threads), 65535 * 8)
    k((blocks,), (threads,), args)


def _result(ok):
    return True if ok else None


# ----------------------------------------------------------------------------------------------- Adam
def adam(ps, gs, ms, vs, vmaxs, *, step_size, bc2_sqrt, eps, beta1, beta2, weight_decay, decay, decoupled,
         amsgrad, maximize, hf_eps, check):
    """Fused Adam/AdamW step in place: True, False (no fast path) or None (non-finite gradient, nothing written)."""
    arrays = [*ps, *gs, *ms, *vs, *(vmaxs if amsgrad else ())]
    return _adam(ps[0], arrays, ps, gs, ms, vs, vmaxs, (step_size, bc2_sqrt, eps, 1.0 - beta1, beta2, 1.0 - beta2,
                                                         weight_decay, decay), (decoupled, amsgrad, maximize, hf_eps),
                 check)


@_adam.generic
def _(rep, arrays, *a, **k):
    return False


@_adam.numba(when=_when_numpy)
def _(rep, arrays, ps, gs, ms, vs, vmaxs, scal, flags, check):
    from .._numba.optim import adam_multi

    dt = ps[0].dtype.type
    lay = _Layout(ps)
    mm = lay.addr(ms)
    vm = lay.addr(vmaxs) if flags[1] else mm          # never touched without amsgrad
    ok = adam_multi(lay.addr(ps), lay.addr(gs), mm, lay.addr(vs), vm, lay.length, lay.like, bool(check),
                    *(dt(x) for x in scal), *flags)
    return _result(ok)


@_adam.cuda(when=_when_cupy)
def _(rep, arrays, ps, gs, ms, vs, vmaxs, scal, flags, check):
    if check and not _cuda_finite(gs):
        return None
    dt = ps[0].dtype.type
    s = tuple(dt(x) for x in scal)
    fl = np.int32(sum(int(bool(f)) << i for i, f in enumerate(flags)))
    for i in range(len(ps)):
        vm = vmaxs[i] if flags[1] else ms[i]
        n = ps[i].size
        _launch("adam_step", ps[i].dtype, n, (ps[i], gs[i], ms[i], vs[i], vm, np.int64(n), *s, fl))
    return True


# ----------------------------------------------------------------------------------------------- SGD
def sgd(ps, gs, bufs, *, lr, momentum, dampening, weight_decay, nesterov, maximize, first, check):
    arrays = [*ps, *gs, *(bufs if momentum != 0 else ())]
    return _sgd(ps[0], arrays, ps, gs, bufs, (lr, momentum, 1.0 - dampening, weight_decay),
                (nesterov, maximize, first), check)


@_sgd.generic
def _(rep, arrays, *a, **k):
    return False


@_sgd.numba(when=_when_numpy)
def _(rep, arrays, ps, gs, bufs, scal, flags, check):
    from .._numba.optim import sgd_multi

    dt = ps[0].dtype.type
    lay = _Layout(ps)
    pp = lay.addr(ps)
    b = lay.addr(bufs) if scal[1] != 0 else pp       # never touched without momentum
    ok = sgd_multi(pp, lay.addr(gs), b, lay.length, lay.like, bool(check), *(dt(x) for x in scal), *flags)
    return _result(ok)


@_sgd.cuda(when=_when_cupy)
def _(rep, arrays, ps, gs, bufs, scal, flags, check):
    if check and not _cuda_finite(gs):
        return None
    dt = ps[0].dtype.type
    s = tuple(dt(x) for x in scal)
    fl = np.int32(sum(int(bool(f)) << i for i, f in enumerate(flags)))
    for i in range(len(ps)):
        b = bufs[i] if scal[1] != 0 else ps[i]
        n = ps[i].size
        _launch("sgd_step", ps[i].dtype, n, (ps[i], gs[i], b, np.int64(n), *s, fl))
    return True


# ----------------------------------------------------------------------------------------------- Lion
def lion(ps, gs, ms, *, lr, beta1, beta2, weight_decay, maximize, check):
    arrays = [*ps, *gs, *ms]
    return _lion(ps[0], arrays, ps, gs, ms, (lr, beta1, 1.0 - beta1, beta2, 1.0 - beta2, weight_decay),
                 (maximize,), check)


@_lion.generic
def _(rep, arrays, *a, **k):
    return False


@_lion.numba(when=_when_numpy)
def _(rep, arrays, ps, gs, ms, scal, flags, check):
    from .._numba.optim import lion_multi

    dt = ps[0].dtype.type
    lay = _Layout(ps)
    ok = lion_multi(lay.addr(ps), lay.addr(gs), lay.addr(ms), lay.length, lay.like, bool(check),
                    *(dt(x) for x in scal), *flags)
    return _result(ok)


@_lion.cuda(when=_when_cupy)
def _(rep, arrays, ps, gs, ms, scal, flags, check):
    if check and not _cuda_finite(gs):
        return None
    dt = ps[0].dtype.type
    s = tuple(dt(x) for x in scal)
    fl = np.int32(int(bool(flags[0])))
    for i in range(len(ps)):
        n = ps[i].size
        _launch("lion_step", ps[i].dtype, n, (ps[i], gs[i], ms[i], np.int64(n), *s, fl))
    return True
