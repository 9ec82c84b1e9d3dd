"""Schedule-free AdamW and SGD (Defazio et al. 2024): averaging and interpolation instead of a decaying schedule.

The parameter a rule holds is ``y`` (where gradients are taken); the state keeps ``z`` (the base iterate)
and the running ``lr_max`` and ``weight_sum`` of the averaging weights.  Evaluate with the average
``x``: :meth:`ScheduleFreeRule.eval_params` (pure) returns it, ``train_params`` goes back to ``y``; the
torch wrapper has ``eval()`` / ``train()`` that swap the parameters in place (and ``step()`` refuses to
run in eval mode), as facebookresearch/schedule_free does.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._lib.typing import Scalar as ScalarT, Schedule
from .._lib import compat
from .._lib.api import public_class
from .._lib.roles import Int, NonNegative, Scalar, Scalars, UnitInterval
from ._common import active, bias_correction, scalar, tree_flatten, tree_unflatten, zeros_state
from .base import LR, NAN_POLICY, OptState, Rule, Transform, rule

ARR = dict(array=True)


class ScheduleFreeLeaf(NamedTuple):
    """Leaf state of the schedule-free rules: the base iterate ``z``, the second moment (AdamW; None for SGD),
    and the averaging's running maximum learning rate and weight sum (0-d)."""
    z: Any
    exp_avg_sq: Any
    lr_max: Any
    weight_sum: Any


@public_class
class ScheduleFreeRule(Rule):
    """A schedule-free rule: the parameters it steps are ``y``; :meth:`eval_params` gives the average ``x``.

    ``eval_params(params, state)`` (:meth:`optnorm.optim.Rule.eval_params`) returns
    ``x = lerp(y, z, 1 - 1/beta1)`` (the weights to evaluate and checkpoint), ``train_params(params, state)``
    maps ``x`` back to ``y = lerp(x, z, 1 - beta1)``.  Both are pure.
    """

    def __init__(self, *, beta1: float, **kw):
        super().__init__(**kw)
        self.beta1 = beta1

    def eval_leaf(self, p, s):
        if self.accepts is not None and not self.accepts(p):
            return super().eval_leaf(p, s)
        if isinstance(self.beta1, (int, float)) and self.beta1 == 0:
            raise ValueError(f"{self.name}: eval_params needs momentum/betas[0] > 0 (with 0 the average is not "
                             "recoverable from y and z)")
        xp = compat.array_namespace(p)
        pc = compat.cast(p, s.z.dtype, xp)
        return compat.lerp(pc, s.z, scalar(1.0 - 1.0 / self.beta1, pc, xp))

    def train_params(self, params: Any, state: OptState) -> Any:
        """The training parameters ``y = lerp(x, z, 1 - beta1)`` back from the averaged ones ``x``."""
        ps, tdef, _ = tree_flatten(params, "params")
        xp = compat.array_namespace(ps[0])
        out = []
        for p, s in zip(ps, state.leaves):
            pc = compat.cast(p, s.z.dtype, xp)
            out.append(compat.cast(compat.lerp(pc, s.z, scalar(1.0 - self.beta1, pc, xp)), p.dtype, xp))
        return tree_unflatten(tdef, out)


def _averaging(ctx, s, lr, warmup_steps, r, weight_lr_power, like):
    """``(lr_k, ckp1, lr_max, weight_sum)`` of step ``t``: warmed-up lr, the averaging weight of the new point."""
    xp, t = ctx.xp, ctx.t
    concrete = (isinstance(t, int) and isinstance(lr, (int, float)) and compat.is_concrete(s.lr_max)
                and all(isinstance(v, (int, float)) for v in (r, weight_lr_power)))
    if concrete:               # Python floats, as schedule_free computes them
        sched = min(1.0, t / warmup_steps) if warmup_steps > 0 else 1.0
        lr_k = lr * sched
        lr_max = max(float(s.lr_max), lr_k)
        weight = (t ** r) * (lr_max ** weight_lr_power)
        ws = float(s.weight_sum) + weight
        ck = weight / ws if ws != 0 else 0.0
        full = lambda v: compat.full((), v, like=s.lr_max, dtype=s.lr_max.dtype, xp=xp)  # noqa: E731
        return lr_k, ck, full(lr_max), full(ws)
    tt = scalar(t, like, xp) if not compat.is_array(t) else xp.astype(t, like.dtype)
    sched = xp.minimum(xp.ones_like(tt), tt / warmup_steps) if warmup_steps > 0 else 1.0
    lr_k = scalar(lr, like, xp) * sched
    lr_max = xp.maximum(s.lr_max, xp.astype(xp.asarray(lr_k), s.lr_max.dtype) + xp.zeros_like(s.lr_max))
    weight = tt ** r * lr_max ** weight_lr_power
    ws = s.weight_sum + weight
    ck = xp.where(ws != 0, weight / xp.where(ws != 0, ws, xp.ones_like(ws)), xp.zeros_like(ws))
    return lr_k, ck, lr_max, ws


def schedule_free_step(b1, b2, eps, weight_decay, warmup_steps, r, weight_lr_power, adam: bool) -> Transform:
    """The production form: ``y <- lerp(y, z, c) + lr (b1 (1 - c) - 1) d``, ``z <- z - lr d`` with
    ``d = g / (sqrt(v / (1 - b2^t)) + eps) + wd y`` (AdamW) or ``g + wd y`` (SGD)."""

    def init(p, ctx):
        xp = ctx.xp
        cd = compat.compute_dtype(p, xp)
        z = compat.cast(p, cd, xp)
        z = z + xp.zeros_like(z)                            # a copy
        zero = compat.full((), 0.0, like=p, dtype=cd, xp=xp)
        return {"z": z, "exp_avg_sq": zeros_state(p, xp) if adam else None, "lr_max": zero,
                "weight_sum": compat.full((), 0.0, like=p, dtype=cd, xp=xp)}

    def update(leaf, s, ctx):
        xp, g, y = ctx.xp, leaf.u, leaf.p
        lr_k, ck, lr_max, ws = _averaging(ctx, s, ctx.lr, warmup_steps, r, weight_lr_power, y)
        v = None
        if adam:
            v = b2 * s.exp_avg_sq + (1.0 - b2) * (g * g)
            d = g / (xp.sqrt(v / scalar(bias_correction(b2, ctx.t), v, xp)) + eps)
        else:
            d = g
        if active(weight_decay) and ctx.on("weight_decay"):
            d = d + weight_decay * y
        ckc = scalar(ck, y, xp)
        lrc = scalar(lr_k, y, xp)
        y = compat.lerp(y, s.z, ckc) + lrc * (b1 * (1.0 - ckc) - 1.0) * d
        z = s.z - lrc * d
        return leaf._replace(p=y, u=None, scale=1.0), s._replace(z=z, exp_avg_sq=v, lr_max=lr_max, weight_sum=ws)

    return Transform(init, update)


_SF = dict(lr=LR, weight_decay=NonNegative(**ARR), warmup_steps=Int(0), r=Scalar(0, None, **ARR),
           weight_lr_power=Scalar(0, None, **ARR), nan_policy=NAN_POLICY)


@rule("AdamWScheduleFree", betas=Scalars(UnitInterval(**ARR), 2), eps=NonNegative(**ARR), **_SF)
def schedule_free_adamw(*, lr: ScalarT | Schedule = 0.0025, betas: tuple[float, float] = (0.9, 0.999),
                        eps: float = 1e-8,
                        weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0,
                        nan_policy: str = "raise") -> ScheduleFreeRule:
    r"""Schedule-free AdamW (facebookresearch/schedule_free ``AdamWScheduleFree``, its defaults).

    With :math:`lr_k = lr\min(1, t/\text{warmup})`, :math:`w_t = t^{r}\,(\max_{i\le t} lr_i)^{q}`,
    :math:`c_t = w_t / \sum_{i\le t} w_i` and ``y`` the parameters:

    .. math::
        d = \frac{g}{\sqrt{v/(1-\beta_2^t)} + \epsilon} + \lambda y,\quad
        y \leftarrow (1-c_t)\,y + c_t z + lr_k(\beta_1(1-c_t) - 1)\,d,\quad
        z \leftarrow z - lr_k\, d,

    equivalently :math:`z \leftarrow z - lr_k d`, :math:`x \leftarrow (1-c_t)x + c_t z`,
    :math:`y = \beta_1 x + (1-\beta_1) z` with the gradient taken at ``y``.  Evaluate at
    ``x = rule.eval_params(params, state)`` (torch wrapper: ``opt.eval()`` / ``opt.train()``).
    No learning-rate decay is needed.  Defazio, Yang, Mehta, Mishchenko, Khaled, Cutkosky,
    "The Road Less Scheduled", NeurIPS 2024.  optax.contrib.schedule_free_adamw is the same
    method (without ``r``; its warmup is ``warmup_constant_schedule``).

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Peak step size (a schedule multiplies the warmup).
    betas : (float, float)
        :math:`\beta_1` (interpolation, > 0 for ``eval_params``) and :math:`\beta_2`.
    eps : float >= 0
        Added to the bias-corrected root.
    weight_decay : float >= 0
        :math:`\lambda`, evaluated at ``y``.
    warmup_steps : int >= 0
        Linear warmup length.
    r : float >= 0
        Polynomial weighting of the average.
    weight_lr_power : float >= 0
        :math:`q`: the weights follow the maximum lr to this power.
    nan_policy : {"raise", "skip", "ignore"}
        See :func:`adam`.

    Returns
    -------
    ScheduleFreeRule
        Leaf state :class:`ScheduleFreeLeaf`; ``eval_params`` / ``train_params``.

    Examples
    --------
    >>> import numpy as np
    >>> opt = schedule_free_adamw(lr=0.1)
    >>> y = np.ones(3); st = opt.init(y)
    >>> for _ in range(20):
    ...     y, st = opt.step(y, 2 * y, st)          # minimise |y|^2
    >>> x = opt.eval_params(y, st)
    >>> bool(np.all(np.abs(x) < 1.0))
    True
    """
    return _sf(lr, betas[0], betas[1], eps, weight_decay, warmup_steps, r, weight_lr_power, True, nan_policy)


@rule("SGDScheduleFree", momentum=UnitInterval(**ARR), **_SF)
def schedule_free_sgd(*, lr: ScalarT | Schedule = 1.0, momentum: float = 0.9, weight_decay: float = 0.0,
                      warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0,
                      nan_policy: str = "raise") -> ScheduleFreeRule:
    r"""Schedule-free SGD (facebookresearch/schedule_free ``SGDScheduleFree``, its defaults).

    .. math::
        d = g + \lambda y,\quad
        y \leftarrow (1-c_t)\,y + c_t z + lr_k(\mu(1-c_t) - 1)\,d,\quad
        z \leftarrow z - lr_k\, d

    with the warmup, weights and :math:`c_t` of :func:`schedule_free_adamw` and
    :math:`\mu` = ``momentum`` in the role of :math:`\beta_1`.  Defazio et al., "The Road
    Less Scheduled", NeurIPS 2024.

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Peak step size.
    momentum : float in [0, 1)
        Interpolation :math:`\mu` (> 0 for ``eval_params``).
    weight_decay : float >= 0
        :math:`\lambda`, evaluated at ``y``.
    warmup_steps : int >= 0
        Linear warmup length.
    r : float >= 0
        Polynomial weighting of the average.
    weight_lr_power : float >= 0
        Exponent of the maximum lr in the weights.
    nan_policy : {"raise", "skip", "ignore"}
        See :func:`adam`.

    Returns
    -------
    ScheduleFreeRule
        Leaf state :class:`ScheduleFreeLeaf` (``exp_avg_sq`` None).

    Examples
    --------
    >>> import numpy as np
    >>> opt = schedule_free_sgd(lr=0.1)
    >>> y = np.ones(2); st = opt.init(y)
    >>> y, st = opt.step(y, 2 * y, st)
    >>> np.round(opt.eval_params(y, st), 6).tolist()      # x = z after one step
    [0.8, 0.8]
    """
    return _sf(lr, momentum, 0.0, 0.0, weight_decay, warmup_steps, r, weight_lr_power, False, nan_policy)


def _sf(lr, b1, b2, eps, wd, warmup, r, power, adam, nan_policy):
    from . import _kernels

    kernel = _kernels.schedule_free(beta1=b1, beta2=b2, eps=eps, weight_decay=wd, warmup_steps=warmup, r=r,
                                    weight_lr_power=power, adam=adam)
    return ScheduleFreeRule(beta1=b1, lr=lr, transform=schedule_free_step(b1, b2, eps, wd, warmup, r, power, adam),
                            leaf=ScheduleFreeLeaf, nan_policy=nan_policy, kernel=kernel, elementwise=True)
