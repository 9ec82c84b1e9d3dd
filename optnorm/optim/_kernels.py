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


class RMSpropConfig(NamedTuple):
    alpha: float
    eps: float
    weight_decay: float
    momentum: float
    centered: bool
    maximize: bool


class AdagradConfig(NamedTuple):
    lr_decay: float
    weight_decay: float
    eps: float
    maximize: bool


class AdadeltaConfig(NamedTuple):
    rho: float
    eps: float
    weight_decay: float
    maximize: bool


class AdamaxConfig(NamedTuple):
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    maximize: bool


class NAdamConfig(NamedTuple):
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    momentum_decay: float
    decoupled: bool
    maximize: bool


class RAdamConfig(NamedTuple):
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    decoupled: bool
    maximize: bool


class ScheduleFreeConfig(NamedTuple):
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    warmup_steps: int
    r: float
    weight_lr_power: float
    adam: bool


class _Spec(NamedTuple):
    cuda_name: str                  # kernel template in optim.cu
    numba_name: str                 # kernel in optnorm/_numba/optim.py
    buffers: Callable               # (leaves, config) -> one list of state arrays per kernel slot, None if unused
    scalars: Callable | None        # (lr, t, config) -> (scalars, flags); None when ``host`` forms them
    host: Callable | None = None    # (job, config, t) -> (scalars, flags) from the leaves' 0-d state, or None
    after: Callable | None = None   # (job, config, t): updates the leaves' 0-d state after the kernel ran


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


def _rmsprop_buffers(leaves, c):
    return [[s.square_avg for s in leaves], [s.momentum_buffer for s in leaves] if c.momentum != 0 else None,
            [s.grad_avg for s in leaves] if c.centered else None]


def _rmsprop_scalars(lr, t, c):
    return ((lr, c.alpha, 1.0 - c.alpha, c.eps, c.weight_decay, c.momentum),
            (c.centered, c.momentum != 0, c.maximize))


def _adagrad_buffers(leaves, c):
    return [[s.sum for s in leaves]]


def _adagrad_scalars(lr, t, c):
    return (lr / (1.0 + (t - 1) * c.lr_decay), c.eps, c.weight_decay), (c.maximize,)


def _adadelta_buffers(leaves, c):
    return [[s.square_avg for s in leaves], [s.acc_delta for s in leaves]]


def _adadelta_scalars(lr, t, c):
    return (lr, c.rho, 1.0 - c.rho, c.eps, c.weight_decay), (c.maximize,)


def _adamax_buffers(leaves, c):
    return [[s.exp_avg for s in leaves], [s.exp_inf for s in leaves]]


def _adamax_scalars(lr, t, c):
    return (lr / (1.0 - c.beta1 ** t), 1.0 - c.beta1, c.beta2, c.eps, c.weight_decay), (c.maximize,)


def _moments(leaves, c):
    return [[s.exp_avg for s in leaves], [s.exp_avg_sq for s in leaves]]


def _nadam_mu(c, t):
    return c.beta1 * (1.0 - 0.5 * 0.96 ** (t * c.momentum_decay))


def _nadam_host(lr, t, c, job):
    """The two step sizes from the leaves' ``mu_product`` (torch forms them in Python floats); None when the
    leaves' products differ (the generic path then runs each leaf with its own)."""
    prods = [float(s.mu_product) for s in job.leaves]
    if any(x != prods[0] for x in prods):
        return None
    mu, mu_next = _nadam_mu(c, t), _nadam_mu(c, t + 1)
    # the product is kept in the state's dtype, as torch keeps it in a tensor
    prod = float(np.asarray(prods[0] * np.asarray(mu, job.leaves[0].mu_product.dtype)))
    c1, c2 = lr * (1.0 - mu) / (1.0 - prod), lr * mu_next / (1.0 - prod * mu_next)
    decoupled = c.decoupled and c.weight_decay != 0
    return ((c1, c2, 1.0 - c.beta2 ** t, c.eps, 1.0 - c.beta1, c.beta2, 1.0 - c.beta2, c.weight_decay,
             1.0 - lr * c.weight_decay), (decoupled, c.maximize))


def _nadam_after(job, c, t):
    mu = _nadam_mu(c, t)
    for s in job.leaves:
        s.mu_product[...] = s.mu_product * mu


def _radam_scalars(lr, t, c):
    b2 = c.beta2
    bc2 = 1.0 - b2 ** t
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho_t = rho_inf - 2.0 * t * b2 ** t / bc2
    rectified = rho_t > 5.0
    rect = 1.0
    if rectified:
        rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    decoupled = c.decoupled and c.weight_decay != 0
    return ((lr, 1.0 - c.beta1 ** t, math.sqrt(bc2), rect, c.eps, 1.0 - c.beta1, b2, 1.0 - b2, c.weight_decay,
             1.0 - lr * c.weight_decay), (rectified, decoupled, c.maximize))


def _sf_buffers(leaves, c):
    return [[s.z for s in leaves], [s.exp_avg_sq for s in leaves] if c.adam else None]


def _sf_host(lr, t, c, job):
    """Warmed-up lr and averaging weight from the leaves' ``lr_max`` / ``weight_sum`` (Python floats, as
    schedule_free forms them); None when the leaves disagree."""
    first = job.leaves[0]
    lm, ws = float(first.lr_max), float(first.weight_sum)
    if any(float(s.lr_max) != lm or float(s.weight_sum) != ws for s in job.leaves):
        return None
    sched = min(1.0, t / c.warmup_steps) if c.warmup_steps > 0 else 1.0
    lr_k = lr * sched
    lm = max(lm, lr_k)
    weight = (t ** c.r) * (lm ** c.weight_lr_power)
    ws = ws + weight
    ck = weight / ws if ws != 0 else 0.0
    job.ctx.lrs["_sf"] = (lm, ws)
    return ((lr_k, ck, lr_k * (c.beta1 * (1.0 - ck) - 1.0), c.beta2, 1.0 - c.beta2, 1.0 - c.beta2 ** t, c.eps,
             c.weight_decay), (c.adam,))


def _sf_after(job, c, t):
    lm, ws = job.ctx.lrs.pop("_sf")
    for s in job.leaves:
        s.lr_max[...] = lm
        s.weight_sum[...] = ws


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

    lr, t = float(job.ctx.lr_value(rule.lr)), job.ctx.t
    sf = spec.host(lr, t, config, job) if spec.host is not None else spec.scalars(lr, t, config)  # type: ignore[misc]
    if sf is None:
        return rule.apply_generic_(job)
    scal, flags = sf
    dt = job.ps[0].dtype.type
    lay = _Layout(job.ps)
    pa = lay.addr(job.ps)
    slots = [pa if slot is None else lay.addr(slot) for slot in spec.buffers(job.leaves, config)]  # unused: never read
    ok = getattr(nb, spec.numba_name)(pa, lay.addr(job.gs), *slots, lay.length, lay.like, bool(job.check),
                                      *(dt(x) for x in scal), *flags)
    if not ok:
        return None
    if spec.after is not None:
        spec.after(job, config, t)
    return True


def _cuda_step(spec: _Spec, rep, rule, job, config) -> bool | None:
    from .._cuda import launch

    xp = job.xp
    if job.check and not all(bool(xp.all(xp.isfinite(g))) for g in job.gs):
        return None
    lr, t = float(job.ctx.lr_value(rule.lr)), job.ctx.t
    sf = spec.host(lr, t, config, job) if spec.host is not None else spec.scalars(lr, t, config)  # type: ignore[misc]
    if sf is None:
        return rule.apply_generic_(job)
    scal, flags = sf
    dt = job.ps[0].dtype
    s = tuple(dt.type(x) for x in scal)
    bits = np.int32(sum(int(bool(f)) << i for i, f in enumerate(flags)))
    slots = spec.buffers(job.leaves, config)
    for i, (p, g) in enumerate(zip(job.ps, job.gs)):
        bufs = tuple(p if slot is None else slot[i] for slot in slots)       # unused slots are never read
        launch.elementwise("optim", spec.cuda_name, dt, p.size, (p, g, *bufs, p.size, *s, bits))
    if spec.after is not None:
        spec.after(job, config, t)
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


_RMSPROP = _dispatcher("optim.rmsprop_step", ("optim.rmsprop",),
                       _Spec("rmsprop_step", "rmsprop_multi", _rmsprop_buffers, _rmsprop_scalars))
_ADAGRAD = _dispatcher("optim.adagrad_step", ("optim.adagrad",),
                       _Spec("adagrad_step", "adagrad_multi", _adagrad_buffers, _adagrad_scalars))
_ADADELTA = _dispatcher("optim.adadelta_step", ("optim.adadelta",),
                        _Spec("adadelta_step", "adadelta_multi", _adadelta_buffers, _adadelta_scalars))
_ADAMAX = _dispatcher("optim.adamax_step", ("optim.adamax",),
                      _Spec("adamax_step", "adamax_multi", _adamax_buffers, _adamax_scalars))
_NADAM = _dispatcher("optim.nadam_step", ("optim.nadam",),
                     _Spec("nadam_step", "nadam_multi", _moments, None, host=_nadam_host, after=_nadam_after))
_RADAM = _dispatcher("optim.radam_step", ("optim.radam",),
                     _Spec("radam_step", "radam_multi", _moments, _radam_scalars))

_SF = _dispatcher("optim.schedule_free_step", ("optim.schedule_free_adamw", "optim.schedule_free_sgd"),
                  _Spec("schedule_free_step", "schedule_free_multi", _sf_buffers, None, host=_sf_host, after=_sf_after))


class Fused(NamedTuple):
    """A rule's fused in-place step: the kernel's dispatcher and the rule's constants."""
    dispatcher: Dispatcher
    config: Any

    def __call__(self, rule, job):
        return self.dispatcher(job.ps[0], rule, job, self.config)


def adam(**config) -> Fused | None:
    return _fused(_ADAM, AdamConfig, config)


def sgd(**config) -> Fused | None:
    return _fused(_SGD, SGDConfig, config)


def lion(**config) -> Fused | None:
    return _fused(_LION, LionConfig, config)


def rmsprop(**config) -> Fused | None:
    return _fused(_RMSPROP, RMSpropConfig, config)


def adagrad(**config) -> Fused | None:
    return _fused(_ADAGRAD, AdagradConfig, config)


def adadelta(**config) -> Fused | None:
    return _fused(_ADADELTA, AdadeltaConfig, config)


def adamax(**config) -> Fused | None:
    return _fused(_ADAMAX, AdamaxConfig, config)


def nadam(**config) -> Fused | None:
    return _fused(_NADAM, NAdamConfig, config)


def radam(**config) -> Fused | None:
    return _fused(_RADAM, RAdamConfig, config)


def _fused(dispatcher, cls, config) -> Fused | None:
    """The rule's fused step, or None when a hyperparameter is an array (a traced value: the JAX path)."""
    if any(compat.is_array(v) for v in config.values()):
        return None
    return Fused(dispatcher, cls(**config))


def schedule_free(**config) -> Fused | None:
    return _fused(_SF, ScheduleFreeConfig, config)


# ----------------------------------------------------------------------------------------------- Adafactor
class AdafactorConfig(NamedTuple):
    beta2_decay: float
    eps: tuple
    d: float
    weight_decay: float
    maximize: bool
    scale_parameter: bool


def _adafactor_bufs(job):
    out = []
    for p, s in zip(job.ps, job.leaves):
        out += [p, *(a for a in (s.row_var, s.col_var, s.variance) if a is not None)]
    return out + list(job.gs)


def _adafactor_numba(rep, rule, job, c):
    from .._numba import optim as nb

    lr, t = float(job.ctx.lr_value(rule.lr)), job.ctx.t
    dt = job.ps[0].dtype
    eps1 = float(np.finfo(dt).eps) if c.eps[0] is None else float(c.eps[0])
    B, RR, CC, F, R, C, V = [], [], [], [], [], [], []
    for p, s in zip(job.ps, job.leaves):
        if p.ndim > 1:
            B.append(int(np.prod(p.shape[:-2], dtype=np.int64)))
            RR.append(int(p.shape[-2]))
            CC.append(int(p.shape[-1]))
            F.append(True)
            R.append(s.row_var.ctypes.data)
            C.append(s.col_var.ctypes.data)
            V.append(0)
        else:
            B.append(1)
            RR.append(1)
            CC.append(int(p.size))
            F.append(False)
            R.append(0)
            C.append(0)
            V.append(s.variance.ctypes.data)
    i64 = lambda x: np.asarray(x, np.int64)        # noqa: E731
    addr = lambda arrs: i64([a.ctypes.data for a in arrs])   # noqa: E731
    ok = nb.adafactor_multi(addr(job.ps), addr(job.gs), i64(R), i64(C), i64(V), i64(B), i64(RR), i64(CC),
                            np.asarray(F, np.bool_), np.zeros(1, dt), bool(job.check), float(t ** c.beta2_decay),
                            min(lr, 1.0 / math.sqrt(t)), 1.0 - lr * c.weight_decay, eps1, float(c.eps[1]), float(c.d),
                            bool(c.scale_parameter), bool(c.maximize))
    return True if ok else None


_ADAFACTOR = Dispatcher("optim.adafactor_step", serves=("optim.adafactor",))
_ADAFACTOR.generic(lambda rep, rule, job, config: rule.apply_generic_(job))
_ADAFACTOR.numba(_adafactor_numba, when=lambda rep, rule, job, config: _concrete_lr(rule, job)
                 and all(p.size > 0 for p in job.ps) and _numba_ready(_adafactor_bufs(job)))


def adafactor(**config) -> Fused | None:
    """torch convention only (the optax convention runs its chain)."""
    return _fused(_ADAFACTOR, AdafactorConfig, config)
