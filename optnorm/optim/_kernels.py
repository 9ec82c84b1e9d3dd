"""Fused multi-tensor paths of the elementwise rules (Adam/AdamW, SGD, Lion) for ``Rule.step_``.

One dispatcher per kernel: ``numba`` for C-contiguous float32/float64 NumPy buffers
(``optnorm/_numba/optim.py``), ``cuda`` for CuPy buffers (``optnorm/_cuda/optim.cu``),
``generic`` returns False so the rule falls back to its pure leaf update.  The
kernels run once per tensor, each a single parallel pass over p, g and the state.
"""
from __future__ import annotations

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


# ----------------------------------------------------------------------------------------------- Adam
def adam(ps, gs, ms, vs, vmaxs, *, step_size, bc2_sqrt, eps, beta1, beta2, weight_decay, decay, decoupled,
         amsgrad, maximize, hf_eps) -> bool:
    """Run the fused Adam/AdamW step in place; False when no fast path applies."""
    arrays = [*ps, *gs, *ms, *vs, *(vmaxs if amsgrad else ())]
    return _adam(ps[0], arrays, ps, gs, ms, vs, vmaxs, (step_size, bc2_sqrt, eps, 1.0 - beta1, beta2, 1.0 - beta2,
                                                         weight_decay, decay), (decoupled, amsgrad, maximize, hf_eps))


@_adam.generic
def _(rep, arrays, *a, **k):
    return False


@_adam.numba(when=_when_numpy)
def _(rep, arrays, ps, gs, ms, vs, vmaxs, scal, flags):
    from .._numba.optim import adam_step

    dt = ps[0].dtype.type
    s = tuple(dt(x) for x in scal)
    dummy = np.zeros(1, ps[0].dtype)
    for i in range(len(ps)):
        vm = vmaxs[i] if flags[1] else dummy
        adam_step(ps[i].reshape(-1), gs[i].reshape(-1), ms[i].reshape(-1), vs[i].reshape(-1), vm.reshape(-1),
                  *s, *flags)
    return True


def _launch(name, dtype, n, args):
    from .._cuda import loader

    k = loader.kernel("optim", f"{name}<{loader.dtype_name(dtype)}>")
    threads = 256
    blocks = min(max(1, (n + threads - 1) // threads), 65535 * 8)
    k((blocks,), (threads,), args)


@_adam.cuda(when=_when_cupy)
def _(rep, arrays, ps, gs, ms, vs, vmaxs, scal, flags):
    dt = ps[0].dtype.type
    s = tuple(dt(x) for x in scal)
    fl = np.int32(sum(int(bool(f)) << i for i, f in enumerate(flags)))
    for i in range(len(ps)):
        vm = vmaxs[i] if flags[1] else ms[i]
        n = ps[i].size
        _launch("adam_step", ps[i].dtype, n, (ps[i], gs[i], ms[i], vs[i], vm, np.int64(n), *s, fl))
    return True


# ----------------------------------------------------------------------------------------------- SGD
def sgd(ps, gs, bufs, *, lr, momentum, dampening, weight_decay, nesterov, maximize, first) -> bool:
    arrays = [*ps, *gs, *(bufs if momentum != 0 else ())]
    return _sgd(ps[0], arrays, ps, gs, bufs, (lr, momentum, 1.0 - dampening, weight_decay),
                (nesterov, maximize, first))


@_sgd.generic
def _(rep, arrays, *a, **k):
    return False


@_sgd.numba(when=_when_numpy)
def _(rep, arrays, ps, gs, bufs, scal, flags):
    from .._numba.optim import sgd_step

    dt = ps[0].dtype.type
    s = tuple(dt(x) for x in scal)
    dummy = np.zeros(1, ps[0].dtype)
    for i in range(len(ps)):
        b = bufs[i] if s[1] != 0 else dummy
        sgd_step(ps[i].reshape(-1), gs[i].reshape(-1), b.reshape(-1), *s, *flags)
    return True


@_sgd.cuda(when=_when_cupy)
def _(rep, arrays, ps, gs, bufs, scal, flags):
    dt = ps[0].dtype.type
    s = tuple(dt(x) for x in scal)
    fl = np.int32(sum(int(bool(f)) << i for i, f in enumerate(flags)))
    for i in range(len(ps)):
        b = bufs[i] if scal[1] != 0 else ps[i]
        n = ps[i].size
        _launch("sgd_step", ps[i].dtype, n, (ps[i], gs[i], b, np.int64(n), *s, fl))
    return True


# ----------------------------------------------------------------------------------------------- Lion
def lion(ps, gs, ms, *, lr, beta1, beta2, weight_decay, maximize) -> bool:
    arrays = [*ps, *gs, *ms]
    return _lion(ps[0], arrays, ps, gs, ms, (lr, beta1, 1.0 - beta1, beta2, 1.0 - beta2, weight_decay), (maximize,))


@_lion.generic
def _(rep, arrays, *a, **k):
    return False


@_lion.numba(when=_when_numpy)
def _(rep, arrays, ps, gs, ms, scal, flags):
    from .._numba.optim import lion_step

    dt = ps[0].dtype.type
    s = tuple(dt(x) for x in scal)
    for i in range(len(ps)):
        lion_step(ps[i].reshape(-1), gs[i].reshape(-1), ms[i].reshape(-1), *s, *flags)
    return True


@_lion.cuda(when=_when_cupy)
def _(rep, arrays, ps, gs, ms, scal, flags):
    dt = ps[0].dtype.type
    s = tuple(dt(x) for x in scal)
    fl = np.int32(int(bool(flags[0])))
    for i in range(len(ps)):
        n = ps[i].size
        _launch("lion_step", ps[i].dtype, n, (ps[i], gs[i], ms[i], np.int64(n), *s, fl))
    return True
