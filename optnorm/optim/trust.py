"""Layer-wise trust-ratio rules: lamb (LAMB) and lars (LARS), in optax's conventions (torch.optim has neither)."""
from __future__ import annotations

from typing import Callable, Any, NamedTuple

from .._lib.typing import Scalar as ScalarT, Schedule
from .._lib.roles import Bool, Callback, NonNegative, Scalars, UnitInterval
from . import transforms as T
from ._common import active, zeros_state
from .base import LR, NAN_POLICY, Rule, Transform, chain, rule

ARR = dict(array=True)


class LambLeaf(NamedTuple):
    """Leaf state of :func:`lamb`: the two Adam moments."""
    exp_avg: Any
    exp_avg_sq: Any


class LarsLeaf(NamedTuple):
    """Leaf state of :func:`lars`: the momentum trace of the lr-scaled update (None without momentum)."""
    momentum_buffer: Any = None


def lr_trace(momentum, nesterov: bool) -> Transform:
    """optax.trace on the lr-scaled step: ``b = u lr + mu b``; the update is ``b`` (nesterov:
    ``u lr + mu b``).  The lr is folded in here, so schedule changes act on the next step at once."""
    use = active(momentum)

    def init(p, ctx):
        return {"momentum_buffer": zeros_state(p, ctx.xp) if use else None}

    def update(leaf, s, ctx):
        u = leaf.u * leaf.scale if not isinstance(leaf.scale, float) or leaf.scale != 1.0 else leaf.u
        if not use:
            return leaf._replace(u=u, scale=1.0), s
        b = u + momentum * s.momentum_buffer
        out = u + momentum * b if nesterov else b
        return leaf._replace(u=out, scale=1.0), s._replace(momentum_buffer=b)

    return Transform(init, update)


@rule("LAMB", lr=LR, betas=Scalars(UnitInterval(**ARR), 2), eps=NonNegative(**ARR), eps_root=NonNegative(**ARR),
      weight_decay=NonNegative(**ARR), mask=Callback(), nan_policy=NAN_POLICY)
def lamb(*, lr: ScalarT | Schedule = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
         eps_root: float = 0.0, weight_decay: float = 0.0, mask: Callable | None = None,
         nan_policy: str = "raise") -> Rule:
    r"""LAMB: Adam's direction plus decay, scaled per parameter by the trust ratio (optax.lamb's form).

    .. math::
        u = \frac{\hat m}{\sqrt{\hat v + \epsilon_r} + \epsilon} + \lambda p,\qquad
        p \leftarrow p - lr\,\frac{\|p\|}{\|u\|}\,u

    per parameter tensor (ratio 1 where either norm is 0), with optax's Adam moments
    (``m = (1 - b1) g + b1 m``, both bias-corrected).  ``mask`` (a predicate of the
    parameter, e.g. ``lambda p: p.ndim > 1``) limits the decay to the parameters it
    accepts; the trust ratio applies to all, as in optax.  You et al., "Large Batch
    Optimization for Deep Learning: Training BERT in 76 minutes", ICLR 2020.

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size.
    betas : (float, float)
        Moment decays in [0, 1).
    eps : float >= 0
        Added to the root.
    eps_root : float >= 0
        Added inside the root.
    weight_decay : float >= 0
        Decoupled decay added to the direction before the trust ratio.
    mask : callable(param) -> bool, optional
        Which parameters are decayed (None: all).
    nan_policy : {"raise", "skip", "ignore"}
        See :func:`adam`.

    Returns
    -------
    Rule
        Leaf state :class:`LambLeaf`.

    Examples
    --------
    >>> import numpy as np
    >>> opt = lamb(lr=0.1)
    >>> p, st = opt.step(np.full(4, 2.0), np.ones(4), opt.init(np.full(4, 2.0)))
    >>> np.round(p, 6).tolist()          # |p| / |u| = 2: a step of 0.1 * 2
    [1.8, 1.8, 1.8, 1.8]
    """
    parts = [T.scale_by_adam_optax(betas[0], betas[1], eps, eps_root)]
    if active(weight_decay):
        parts.append(T.add_decayed_weights(weight_decay))
    parts += [T.scale_by_trust_ratio(), T.scale_by_lr()]
    return Rule(lr=lr, transform=chain(*parts), leaf=LambLeaf, nan_policy=nan_policy, masks={"weight_decay": mask},
                elementwise=True)


@rule("LARS", lr=LR, weight_decay=NonNegative(**ARR), weight_decay_mask=Callback(),
      trust_coefficient=NonNegative(**ARR),
      eps=NonNegative(**ARR), trust_ratio_mask=Callback(), momentum=UnitInterval(**ARR), nesterov=Bool(),
      nan_policy=NAN_POLICY)
def lars(*, lr: ScalarT | Schedule = 1.0, weight_decay: float = 0.0, weight_decay_mask: Callable | None = None,
         trust_coefficient: float = 0.001, eps: float = 0.0, trust_ratio_mask: Callable | None = None,
         momentum: float = 0.9, nesterov: bool = False, nan_policy: str = "raise") -> Rule:
    r"""LARS: SGD with momentum whose per-parameter step is scaled by the trust ratio (optax.lars's form).

    .. math::
        u = g + \lambda p,\quad u \leftarrow u\,\frac{\eta\,\|p\|}{\|u\| + \epsilon},\quad
        b \leftarrow lr\,u + \mu b,\quad p \leftarrow p - b\ \ (\text{nesterov: } lr\,u + \mu b)

    (trust ratio 1 where either norm is 0).  The momentum accumulates the lr-scaled step,
    as in optax; the ratio uses :math:`\|g + \lambda p\|` (the paper divides by
    :math:`\|g\| + \lambda\|p\|`).  ``weight_decay_mask`` / ``trust_ratio_mask`` (predicates of
    the parameter) exclude parameters from the decay / the ratio.  You, Gitman, Ginsburg,
    "Large Batch Training of Convolutional Networks", 2017.

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size (optax has no default; 1.0 here).
    weight_decay : float >= 0
        Coupled decay :math:`\lambda`.
    weight_decay_mask : callable(param) -> bool, optional
        Which parameters are decayed (None: all).
    trust_coefficient : float >= 0
        :math:`\eta`.
    eps : float >= 0
        Added to the update norm.
    trust_ratio_mask : callable(param) -> bool, optional
        Which parameters get the trust ratio (None: all).
    momentum : float in [0, 1)
        :math:`\mu`.
    nesterov : bool
        Nesterov's look-ahead.
    nan_policy : {"raise", "skip", "ignore"}
        See :func:`adam`.

    Returns
    -------
    Rule
        Leaf state :class:`LarsLeaf`.

    Examples
    --------
    >>> import numpy as np
    >>> opt = lars(lr=0.1, trust_coefficient=1.0, momentum=0.0)
    >>> p, st = opt.step(np.full(4, 2.0), np.ones(4), opt.init(np.full(4, 2.0)))
    >>> np.round(p, 6).tolist()
    [1.8, 1.8, 1.8, 1.8]
    """
    parts = []
    if active(weight_decay):
        parts.append(T.add_decayed_weights(weight_decay))
    parts += [T.scale_by_trust_ratio(trust_coefficient, eps), T.scale_by_lr(), lr_trace(momentum, nesterov)]
    return Rule(lr=lr, transform=chain(*parts), leaf=LarsLeaf, nan_policy=nan_policy,
                masks={"weight_decay": weight_decay_mask, "trust_ratio": trust_ratio_mask}, elementwise=True)
