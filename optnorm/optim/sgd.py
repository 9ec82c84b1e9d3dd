"""SGD (torch.optim.SGD conventions) and SGDP (AdamP paper's SGD variant)."""
from __future__ import annotations

from typing import Any, NamedTuple

from .._lib.typing import Scalar as ScalarT, Schedule
from .._lib.roles import Bool, NonNegative, Positive, Probability, UnitInterval
from . import _kernels
from . import transforms as T
from ._common import active
from .base import LR, NAN_POLICY, Rule, chain, rule


class SGDLeaf(NamedTuple):
    """Leaf state of :func:`sgd` and :func:`sgdp`: the momentum buffer (None without momentum)."""
    momentum_buffer: Any = None


@rule("SGD", lr=LR, momentum=NonNegative(array=True), dampening=Probability(array=True),
      weight_decay=NonNegative(array=True), nesterov=Bool(), maximize=Bool(), nan_policy=NAN_POLICY)
def sgd(*, lr: ScalarT | Schedule = 1e-3, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
        nesterov: bool = False, maximize: bool = False, nan_policy: str = "raise") -> Rule:
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
    if nesterov and (not active(momentum) or active(dampening)) and not _traced(momentum, dampening):
        raise ValueError("sgd: nesterov=True requires momentum > 0 and dampening = 0")
    parts = [T.flip_sign()] if maximize else []
    if active(weight_decay):
        parts.append(T.add_decayed_weights(weight_decay))
    if active(momentum):
        parts.append(T.trace(momentum, dampening=dampening, nesterov=nesterov))
    parts.append(T.scale_by_lr())
    kernel = _kernels.sgd(momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                          maximize=maximize)
    return Rule(lr=lr, transform=chain(*parts), leaf=SGDLeaf, nan_policy=nan_policy, kernel=kernel,
                elementwise=True)


def _traced(*vals) -> bool:
    from .._lib import compat

    return any(compat.is_array(v) and not compat.is_concrete(v) for v in vals)


@rule("SGDP", lr=LR, momentum=UnitInterval(), dampening=Probability(), weight_decay=NonNegative(), nesterov=Bool(),
      eps=Positive(), delta=NonNegative(), wd_ratio=NonNegative(), nan_policy=NAN_POLICY)
def sgdp(*, lr: ScalarT | Schedule = 1e-3, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
         nesterov: bool = False, eps: float = 1e-8, delta: float = 0.1, wd_ratio: float = 0.1,
         nan_policy: str = "raise") -> Rule:
    r"""SGDP: SGD with AdamP's projection of the update for scale-invariant weights.

    "AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant
    Weights", B. Heo et al., ICLR 2021.  ``b = mu b + (1 - dampening) g`` (zero
    initial buffer), ``u = g + mu b`` (nesterov) or ``b``, projected as in
    :func:`~optnorm.optim.adamp`; decay ``p (1 - lr wd mult / (1 - mu))``; ``p -= lr u``.
    ``momentum`` must lie in [0, 1) (the decay divides by ``1 - mu``).

    .. math::
        b \leftarrow \mu b + (1-\tau) g,\quad u = b \text{ (or } g + \mu b),\quad
        u \leftarrow u - \hat p\,\langle\hat p, u\rangle,\quad p \leftarrow p - lr\,u

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size; a schedule is called with the number of steps taken (0 first).
    momentum : float in [0, 1)
        Heavy-ball factor (the decay divides by ``1 - momentum``).
    dampening : float in [0, 1]
        The gradient enters the buffer times ``1 - dampening``.
    weight_decay : float >= 0
        Decoupled decay ``p (1 - lr wd mult / (1 - momentum))``.
    nesterov : bool
        Nesterov momentum.
    eps : float > 0
        Added to the norms of the projection.
    delta : float >= 0
        Threshold of the cosine test.
    wd_ratio : float >= 0
        Decay multiplier for projected weights.
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise before anything changes, skip the step, or are not checked.

    Returns
    -------
    Rule
        ``init`` / ``step`` / ``step_``; leaf state ``SGDLeaf``.

    Examples
    --------
    >>> import numpy as np
    >>> st = sgdp(lr=0.1, momentum=0.9).init(np.ones((2, 3)))
    """
    parts = [T.trace(momentum, dampening=dampening, nesterov=nesterov, first_is_gradient=False),
             T.project_scale_invariant(delta, eps, wd_ratio)]
    if weight_decay:
        parts.append(T.decay_weights(weight_decay, divisor=1.0 - momentum))
    parts.append(T.scale_by_lr())
    return Rule(lr=lr, transform=chain(*parts), leaf=SGDLeaf, nan_policy=nan_policy)
