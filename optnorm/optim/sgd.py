"""SGD (torch.optim.SGD conventions) and SGDP (AdamP paper's SGD variant)."""
from __future__ import annotations

from typing import Any, NamedTuple

from .._lib import compat, validate
from . import _kernels
from . import transforms as T
from .base import Ctx, Rule, cast, scalar

__all__ = ["sgd", "sgdp"]


class SGDLeaf(NamedTuple):
    momentum_buffer: Any = None


class SGD(Rule):
    name = "sgd"

    def __init__(self, *, lr, momentum, dampening, weight_decay, nesterov, maximize, nan_policy, factory, hyper):
        super().__init__(lr=lr, nan_policy=nan_policy, factory=factory, hyper=hyper)
        self.momentum = validate.check_nonnegative(momentum, "momentum")
        self.dampening = validate.check_probability(dampening, "dampening")
        self.weight_decay = validate.check_nonnegative(weight_decay, "weight_decay")
        self.nesterov = bool(nesterov)
        self.maximize = bool(maximize)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening = 0")

    def init_leaf(self, p, *, name, xp):
        if self.momentum == 0:
            return SGDLeaf(None)
        return SGDLeaf(xp.zeros(p.shape, dtype=compat.compute_dtype(p, xp), device=compat.device(p)))

    def update_leaf(self, p, g, s, ctx: Ctx):
        xp, t = ctx.xp, ctx.t
        cd = compat.compute_dtype(p, xp)
        pc, d = cast(p, cd, xp), cast(g, cd, xp)
        lr = scalar(self.lr_at(t), pc, xp)
        if self.maximize:
            d = -d
        if self.weight_decay:
            d = T.decay_coupled(d, pc, self.weight_decay)
        buf = None
        if self.momentum:
            mu = self.momentum
            later = mu * s.momentum_buffer + (1.0 - self.dampening) * d
            if isinstance(t, int):
                buf = d if t == 1 else later          # torch: the first buffer is the (decayed) gradient itself
            else:
                buf = xp.where(t == 1, d, later)
            d = d + mu * buf if self.nesterov else buf
        pc = pc - lr * d
        return cast(pc, p.dtype, xp), SGDLeaf(buf)

    def fused_step_(self, ps, gs, ss, t, check=False):
        lr = self.lr_at(t)
        if not isinstance(lr, float):
            return False
        return _kernels.sgd(ps, gs, [s.momentum_buffer for s in ss], lr=lr, momentum=self.momentum,
                            dampening=self.dampening, weight_decay=self.weight_decay, nesterov=self.nesterov,
                            maximize=self.maximize, first=t == 1, check=check)


def sgd(*, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False,
        nan_policy="raise") -> Rule:
    r"""Stochastic gradient descent with torch.optim.SGD's conventions.

    .. math::
        d = \pm g + \lambda p,\quad b_1 = d,\; b_t = \mu b_{t-1} + (1-\tau) d,\quad
        p \leftarrow p - lr\,(d + \mu b_t \text{ if nesterov else } b_t)

    (``maximize`` flips the gradient first; the first momentum buffer is ``d``
    without dampening, as in torch).  Nesterov needs ``momentum > 0`` and
    ``dampening = 0``.  "On the importance of initialization and momentum in deep
    learning", I. Sutskever, J. Martens, G. Dahl, G. Hinton, 2013.

    Examples
    --------
    >>> import numpy as np
    >>> opt = sgd(lr=0.1, momentum=0.9)
    >>> p = np.ones(2); st = opt.init(p)
    >>> p, st = opt.step(p, np.ones(2), st)
    >>> p.tolist()
    [0.9, 0.9]
    """
    hyper = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                 maximize=maximize, nan_policy=nan_policy)
    return SGD(factory=sgd, hyper=hyper, **hyper)


class SGDP(Rule):
    name = "sgdp"

    def __init__(self, *, lr, momentum, dampening, weight_decay, nesterov, eps, delta, wd_ratio, nan_policy,
                 factory, hyper):
        super().__init__(lr=lr, nan_policy=nan_policy, factory=factory, hyper=hyper)
        self.momentum = validate.check_unit_interval(momentum, "momentum")
        self.dampening = validate.check_probability(dampening, "dampening")
        self.weight_decay = validate.check_nonnegative(weight_decay, "weight_decay")
        self.nesterov = bool(nesterov)
        self.eps = validate.check_positive(eps, "eps")
        self.delta = validate.check_nonnegative(delta, "delta")
        self.wd_ratio = validate.check_nonnegative(wd_ratio, "wd_ratio")

    def init_leaf(self, p, *, name, xp):
        return SGDLeaf(xp.zeros(p.shape, dtype=compat.compute_dtype(p, xp), device=compat.device(p)))

    def update_leaf(self, p, g, s, ctx):
        xp, t = ctx.xp, ctx.t
        cd = compat.compute_dtype(p, xp)
        pc, gc = cast(p, cd, xp), cast(g, cd, xp)
        lr = scalar(self.lr_at(t), pc, xp)
        mu = self.momentum
        buf = mu * s.momentum_buffer + (1.0 - self.dampening) * gc   # zero-initialised (unlike torch SGD)
        u = gc + mu * buf if self.nesterov else buf
        u, mult = T.adamp_projection(pc, gc, u, delta=self.delta, eps=self.eps, wd_ratio=self.wd_ratio, xp=xp)
        if self.weight_decay:
            pc = pc * (1.0 - lr * self.weight_decay * mult / (1.0 - mu))
        pc = pc - lr * u
        return cast(pc, p.dtype, xp), SGDLeaf(buf)


def sgdp(*, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, eps=1e-8, delta=0.1,
         wd_ratio=0.1, nan_policy="raise") -> Rule:
    r"""SGDP: SGD with AdamP's projection of the update for scale-invariant weights.

    "AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant
    Weights", B. Heo et al., ICLR 2021.  ``b = mu b + (1 - dampening) g`` (zero
    initial buffer), ``u = g + mu b`` (nesterov) or ``b``, projected as in
    :func:`~optnorm.optim.adamp`; decay ``p (1 - lr wd mult / (1 - mu))``; ``p -= lr u``.
    ``momentum`` must lie in [0, 1) (the decay divides by ``1 - mu``).

    Examples
    --------
    >>> import numpy as np
    >>> st = sgdp(lr=0.1, momentum=0.9).init(np.ones((2, 3)))
    """
    hyper = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                 eps=eps, delta=delta, wd_ratio=wd_ratio, nan_policy=nan_policy)
    return SGDP(factory=sgdp, hyper=hyper, **hyper)


