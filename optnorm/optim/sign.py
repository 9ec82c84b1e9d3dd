"""Sign-based rules: lion (optax.lion's conventions)."""
from __future__ import annotations

from typing import Any, NamedTuple

from .._lib.typing import Scalar as ScalarT, Schedule
from .._lib.roles import Bool, NonNegative, Scalars, UnitInterval
from . import _kernels
from . import transforms as T
from ._common import active, zeros_state
from .base import LR, NAN_POLICY, Rule, Transform, chain, rule


class LionLeaf(NamedTuple):
    """Leaf state of :func:`lion`: the momentum (updated after its use)."""
    exp_avg: Any


def scale_by_lion(b1: float, b2: float) -> Transform:
    """Lion's direction ``sign((1 - b1) g + b1 m)``, then ``m <- (1 - b2) g + b2 m``."""

    def init(p, ctx):
        return {"exp_avg": zeros_state(p, ctx.xp)}

    def update(leaf, s, ctx):
        g, m = leaf.u, s.exp_avg
        u = ctx.xp.sign((1.0 - b1) * g + b1 * m)
        return leaf._replace(u=u), s._replace(exp_avg=(1.0 - b2) * g + b2 * m)

    return Transform(init, update)


@rule("Lion", lr=LR, betas=Scalars(UnitInterval(array=True), 2), weight_decay=NonNegative(array=True), maximize=Bool(),
      nan_policy=NAN_POLICY)
def lion(*, lr: ScalarT | Schedule = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0,
         maximize: bool = False, nan_policy: str = "raise") -> Rule:
    r"""Lion (EvoLved Sign Momentum), in optax.lion's form.

    .. math::
        p \leftarrow p - lr\,(\mathrm{sign}((1-\beta_1) g + \beta_1 m) + \lambda p),\qquad
        m \leftarrow (1-\beta_2) g + \beta_2 m

    (the momentum is updated after its use; ``sign(0) = 0``).  "Symbolic Discovery of
    Optimization Algorithms", X. Chen et al., NeurIPS 2023.  Defaults follow the
    paper (lr 1e-4, betas (0.9, 0.99)); optax's default weight decay is 1e-3, here 0.
    The chain is ``scale_by_lion``, ``add_decayed_weights``, ``scale_by_lr`` (optax's).

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size; a schedule is called with the number of steps taken (0 first).
    betas : (float, float)
        :math:`\beta_1` (interpolation of the sign) and :math:`\beta_2` (momentum), in [0, 1).
    weight_decay : float >= 0
        Decoupled decay added to the sign update.
    maximize : bool
        Ascend.
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise before anything changes, skip the step, or are not checked.

    Returns
    -------
    Rule
        ``init`` / ``step`` / ``step_``; leaf state ``LionLeaf``.

    Examples
    --------
    >>> import numpy as np
    >>> opt = lion(lr=0.1)
    >>> p, st = opt.step(np.zeros(2), np.array([1.0, -2.0]), opt.init(np.zeros(2)))
    >>> p.tolist()
    [-0.1, 0.1]
    """
    parts = [T.flip_sign()] if maximize else []
    parts.append(scale_by_lion(betas[0], betas[1]))
    if active(weight_decay):
        parts.append(T.add_decayed_weights(weight_decay))
    parts.append(T.scale_by_lr())
    kernel = _kernels.lion(beta1=betas[0], beta2=betas[1], weight_decay=weight_decay, maximize=maximize)
    return Rule(lr=lr, transform=chain(*parts), leaf=LionLeaf, nan_policy=nan_policy, kernel=kernel,
                elementwise=True)
