"""Sign-based rules: lion (optax.lion's conventions)."""
from __future__ import annotations

from typing import Any, NamedTuple

from .._lib import compat, validate
from . import _kernels
from .base import Ctx, Rule, cast, check_betas, scalar

__all__ = ["lion"]


class LionLeaf(NamedTuple):
    exp_avg: Any


class Lion(Rule):
    name = "lion"

    def __init__(self, *, lr, betas, weight_decay, maximize, nan_policy, factory, hyper):
        super().__init__(lr=lr, nan_policy=nan_policy, factory=factory, hyper=hyper)
        self.betas = check_betas(betas)
        self.weight_decay = validate.check_nonnegative(weight_decay, "weight_decay")
        self.maximize = bool(maximize)

    def init_leaf(self, p, *, name, xp):
        return LionLeaf(xp.zeros(p.shape, dtype=compat.compute_dtype(p, xp), device=compat.device(p)))

    def update_leaf(self, p, g, s, ctx: Ctx):
        xp = ctx.xp
        b1, b2 = self.betas
        cd = compat.compute_dtype(p, xp)
        pc, gc = cast(p, cd, xp), cast(g, cd, xp)
        lr = scalar(self.lr_at(ctx.t), pc, xp)
        if self.maximize:
            gc = -gc
        u = xp.sign((1.0 - b1) * gc + b1 * s.exp_avg)
        if self.weight_decay:
            u = u + self.weight_decay * pc
        pc = pc - lr * u
        m = (1.0 - b2) * gc + b2 * s.exp_avg
        return cast(pc, p.dtype, xp), LionLeaf(m)

    def fused_step_(self, ps, gs, ss, t, check=False):
        lr = self.lr_at(t)
        if not isinstance(lr, float):
            return False
        return _kernels.lion(ps, gs, [s.exp_avg for s in ss], lr=lr, beta1=self.betas[0], beta2=self.betas[1],
                             weight_decay=self.weight_decay, maximize=self.maximize, check=check)


def lion(*, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False, nan_policy="raise") -> Rule:
    r"""Lion (EvoLved Sign Momentum), in optax.lion's form.

    .. math::
        p \leftarrow p - lr\,(\mathrm{sign}((1-\beta_1) g + \beta_1 m) + \lambda p),\qquad
        m \leftarrow (1-\beta_2) g + \beta_2 m

    (the momentum is updated after its use; ``sign(0) = 0``).  "Symbolic Discovery of
    Optimization Algorithms", X. Chen et al., NeurIPS 2023.  Defaults follow the
    paper (lr 1e-4, betas (0.9, 0.99)); optax's default weight decay is 1e-3, here 0.

    Examples
    --------
    >>> import numpy as np
    >>> opt = lion(lr=0.1)
    >>> p, st = opt.step(np.zeros(2), np.array([1.0, -2.0]), opt.init(np.zeros(2)))
    >>> p.tolist()
    [-0.1, 0.1]
    """
    hyper = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize, nan_policy=nan_policy)
    return Lion(factory=lion, hyper=hyper, **hyper)
