"""Fused multi-tensor in-place steps of the elementwise rules (Adam/AdamW, SGD, Lion) for ``Rule.step_``.

One :class:`~optnorm._lib.dispatch.Dispatcher` per kernel, naming the rules it serves:

- ``generic``: the rule's own leaf update (its transform chain), copied into the buffers
  (:meth:`optnorm.optim.Rule.apply_generic_`): the reference the fast paths are tested against;
- ``numba``: C-contiguous float32/float64 NumPy buffers, one parallel region over all tensors with the
  finiteness check of the gradients fused in (``optnorm/_numba/optim.py``);
- ``cuda``: CuPy buffers, one launch per tensor through :func:`optnorm._cuda.launch.elementwise`
  (``optnorm/_cuda/optim.cu``).

The three kernels differ only in their :class:`_Spec` (which state buffers they update, which scalars and
flags they take), so one Numba adapter and one CUDA adapter serve all of them.  Every path returns True (step
done) or None (a gradient is not finite: nothing written; the caller applies ``nan_policy``).  Scalars
(``lr / bc1``, ``sqrt(bc2)``, ``1 - lr wd``) are computed on the host in float64 and passed in the buffers'
dtype: float32 math like torch's CPU kernels.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.dispatch import Dispatcher


class AdamConfig(NamedTuple):
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    decoupled: bool
    amsgrad: bool
    maximize: bool
    hf_eps: bool


class SGDConfig(NamedTuple):
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool
    maximize: bool


class LionConfig(NamedTuple):
    beta1: float
    beta2: float
    weight_decay: float
    maximize: bool


class _Spec(NamedTuple):
    cuda_name: str                  # kernel template in optim.cu
    numba_name: str                 # kernel in optnorm/_numba/optim.py
    buffers: Callable               # (leaves, config) -> one list of state arrays per kernel slot, None if unused
    scalars: Callable               # (lr, t, config) -> (scalars, flags)


def _adam_buffers(leaves, c):
    return [[s.exp_avg for s in leaves], [s.exp_avg_sq for s in leaves],
            [s.max_exp_avg_sq for s in leaves] if c.amsgrad else None]


def _adam_scalars(lr, t, c):
    bc1, bc2 = 1.0 - c.beta1 ** t, 1.0 - c.beta2 ** t
    step_size = lr * math.sqrt(bc2) / bc1 if c.hf_eps else lr / bc1
    decoupled = c.decoupled and c.weight_decay != 0
    return ((step_size, math.sqrt(bc2), c.eps, 1.0 - c.beta1, c.beta2, 1.0 - c.beta2, c.weight_decay,
             1.0 - lr * c.weight_decay), (decoupled, c.amsgrad, c.maximize, c.hf_eps))


def _sgd_buffers(leaves, c):
    return [[s.momentum_buffer for s in leaves] if c.momentum != 0 else None]


def _sgd_scalars(lr, t, c):
    return (lr, c.momentum, 1.0 - c.dampening, c.weight_decay), (c.nesterov, c.maximize, t == 1)


def _lion_buffers(leaves, c):
    return [[s.exp_avg for s in leaves]]


def _lion_scalars(lr, t, c):
    return (lr, c.beta1, 1.0 - c.beta1, c.beta2, 1.0 - c.beta2, c.weight_decay), (c.maximize,)


# ----------------------------------------------------------------------------------------------- the paths
def _in_use(job, spec, config) -> list:
    slots = spec.buffers(job.leaves, config)
    return [*job.ps, *job.gs, *(a for slot in slots if slot is not None for a in slot)]


def _one_float_dtype(arrays) -> bool:
    """Every buffer C-contiguous and writeable, all float32 or all float64."""
    dt = arrays[0].dtype
    return dt in (np.float32, np.float64) and all(
        a.dtype == dt and a.flags.c_contiguous and compat.is_writeable(a) for a in arrays)


def _numba_ready(arrays) -> bool:
    return compat.fast_path_of(*arrays) == "numba" and _one_float_dtype(arrays)


def _cuda_ready(arrays) -> bool:
    return all(compat.fast_path_of(a) == "cuda" for a in arrays) and _one_float_dtype(arrays)


def _concrete_lr(rule, job) -> bool:
    lr = job.ctx.lr_value(rule.lr)
    return not compat.is_array(lr) or compat.is_concrete(lr)


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


def _numba_step(spec: _Spec, rep, rule, job, config) -> bool | None:
    from .._numba import optim as nb

    scal, flags = spec.scalars(float(job.ctx.lr_value(rule.lr)), job.ctx.t, config)
    dt = job.ps[0].dtype.type
    lay = _Layout(job.ps)
    pa = lay.addr(job.ps)
    slots = [pa if slot is None else lay.addr(slot) for slot in spec.buffers(job.leaves, config)]  # unused: never read
    ok = getattr(nb, spec.numba_name)(pa, lay.addr(job.gs), *slots, lay.length, lay.like, bool(job.check),
                                      *(dt(x) for x in scal), *flags)
    return True if ok else None


def _cuda_step(spec: _Spec, rep, rule, job, config) -> bool | None:
    from .._cuda import launch

    xp = job.xp
    if job.check and not all(bool(xp.all(xp.isfinite(g))) for g in job.gs):
        return None
    scal, flags = spec.scalars(float(job.ctx.lr_value(rule.lr)), job.ctx.t, config)
    dt = job.ps[0].dtype
    s = tuple(dt.type(x) for x in scal)
    bits = np.int32(sum(int(bool(f)) << i for i, f in enumerate(flags)))
    slots = spec.buffers(job.leaves, config)
    for i, (p, g) in enumerate(zip(job.ps, job.gs)):
        bufs = tuple(p if slot is None else slot[i] for slot in slots)       # unused slots are never read
        launch.elementwise("optim", spec.cuda_name, dt, p.size, (p, g, *bufs, p.size, *s, bits))
    return True


def _dispatcher(name: str, serves: tuple, spec: _Spec) -> Dispatcher:
    d = Dispatcher(name, serves=serves)
    d.generic(lambda rep, rule, job, config: rule.apply_generic_(job))
    d.numba(functools.partial(_numba_step, spec),
            when=lambda rep, rule, job, config: _concrete_lr(rule, job)
            and _numba_ready(_in_use(job, spec, config)))
    d.cuda(functools.partial(_cuda_step, spec),
           when=lambda rep, rule, job, config: _cuda_ready(_in_use(job, spec, config)))
    return d


_ADAM = _dispatcher("optim.adam_step", ("optim.adam", "optim.adamw"),
                    _Spec("adam_step", "adam_multi", _adam_buffers, _adam_scalars))
_SGD = _dispatcher("optim.sgd_step", ("optim.sgd",), _Spec("sgd_step", "sgd_multi", _sgd_buffers, _sgd_scalars))
_LION = _dispatcher("optim.lion_step", ("optim.lion",),
                    _Spec("lion_step", "lion_multi", _lion_buffers, _lion_scalars))


class Fused(NamedTuple):
    """A rule's fused in-place step: the kernel's dispatcher and the rule's constants."""
    dispatcher: Dispatcher
    config: Any

    def __call__(self, rule, job):
        return self.dispatcher(job.ps[0], rule, job, self.config)


def adam(**config) -> Fused:
    return Fused(_ADAM, AdamConfig(**config))


def sgd(**config) -> Fused:
    return Fused(_SGD, SGDConfig(**config))


def lion(**config) -> Fused:
    return Fused(_LION, LionConfig(**config))
