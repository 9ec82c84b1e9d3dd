"""torch.optim's adaptive rules: rmsprop, adagrad, adadelta, adamax, nadam, radam.

Each follows its torch 2.13 single-tensor implementation (names, defaults, eps placement, the order of
decay and moment updates), is a chain of leaf transforms, keeps torch's state names (so the torch
wrapper's ``state_dict`` has torch's keys) and has a fused multi-tensor Numba kernel for ``step_``.
Every numeric hyperparameter may be a 0-d array (a traced value under ``optax.inject_hyperparams``).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._lib.typing import Array, Scalar as ScalarT, Schedule
from .._lib import compat
from .._lib.roles import Bool, NonNegative, Scalar, Scalars, UnitInterval
from . import _kernels
from . import transforms as T
from ._common import active, bias_correction, scalar, ssqrt, zeros_state
from .base import LR, NAN_POLICY, Rule, Transform, chain, rule

ARR = dict(array=True)
BETAS = Scalars(UnitInterval(**ARR), 2)
NONNEG = NonNegative(**ARR)


def _decay(weight_decay, decoupled: bool = False) -> list:
    if not active(weight_decay):
        return []
    return [T.decay_weights(weight_decay) if decoupled else T.add_decayed_weights(weight_decay)]


def _head(maximize, weight_decay, decoupled=False) -> list:
    return ([T.flip_sign()] if maximize else []) + _decay(weight_decay, decoupled)


def _where(cond, a, b, like, xp):
    """``a if cond else b`` for a Python bool, ``where`` for a traced 0-d one."""
    if isinstance(cond, bool):
        return a if cond else b
    return xp.where(cond, scalar(a, like, xp) if not compat.is_array(a) else a,
                    scalar(b, like, xp) if not compat.is_array(b) else b)


# ----------------------------------------------------------------------------------------------- RMSprop
class RMSpropLeaf(NamedTuple):
    """Leaf state of :func:`rmsprop` (torch's names): ``square_avg``; ``momentum_buffer`` (momentum > 0) and
    ``grad_avg`` (centered) or None."""
    square_avg: Any
    momentum_buffer: Any = None
    grad_avg: Any = None


def scale_by_rmsprop(alpha, eps, momentum, centered: bool) -> Transform:
    """torch.optim.RMSprop's direction: ``g / (sqrt(v [- gbar^2]) + eps)``, heavy-ball buffer when momentum."""
    use_mom = active(momentum)

    def init(p, ctx):
        xp = ctx.xp
        return {"square_avg": zeros_state(p, xp), "momentum_buffer": zeros_state(p, xp) if use_mom else None,
                "grad_avg": zeros_state(p, xp) if centered else None}

    def update(leaf, s, ctx):
        xp, g = ctx.xp, leaf.u
        v = alpha * s.square_avg + (1.0 - alpha) * (g * g)
        ga = None
        if centered:
            ga = compat.lerp(s.grad_avg, g, 1.0 - alpha)
            var = v - ga * ga
            avg = xp.sqrt(xp.maximum(var, xp.zeros_like(var)))     # torch gives NaN where it rounds below 0
        else:
            avg = xp.sqrt(v)
        d = g / (avg + eps)
        buf = None
        if use_mom:
            buf = momentum * s.momentum_buffer + d
            d = buf
        return leaf._replace(u=d), s._replace(square_avg=v, momentum_buffer=buf, grad_avg=ga)

    return Transform(init, update)


@rule("RMSprop", lr=LR, alpha=UnitInterval(**ARR), eps=NONNEG, weight_decay=NONNEG, momentum=NONNEG, centered=Bool(),
      maximize=Bool(), nan_policy=NAN_POLICY)
def rmsprop(*, lr: ScalarT | Schedule = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
            momentum: float = 0.0, centered: bool = False, maximize: bool = False, nan_policy: str = "raise") -> Rule:
    r"""RMSprop with torch.optim.RMSprop's conventions (eps outside the square root).

    .. math::
        v \leftarrow \alpha v + (1-\alpha) g^2,\quad
        \bar g \leftarrow \mathrm{lerp}(\bar g, g, 1-\alpha)\ (\text{centered}),\quad
        d = \frac{g}{\sqrt{v - \bar g^2} + \epsilon},\quad
        b \leftarrow \mu b + d,\quad p \leftarrow p - lr\, b

    (``g + wd p`` first; without momentum ``p <- p - lr d``; not centered: :math:`\bar g = 0`).
    Tieleman & Hinton, "Lecture 6.5 - RMSProp", COURSERA: Neural Networks for Machine
    Learning, 2012; the centered form is Graves, "Generating Sequences With Recurrent Neural
    Networks", 2013.  optax's ``rmsprop`` differs (decay 0.9, eps inside the root, momentum on
    the lr-scaled step).  Centered: ``v - gbar^2`` is clamped at 0 (torch returns NaN where
    it rounds below 0); elsewhere the two agree.

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size (a schedule is called with the number of steps taken, 0 first).
    alpha : float in [0, 1)
        Smoothing constant of the squared-gradient average.
    eps : float >= 0
        Added to the root.
    weight_decay : float >= 0
        Coupled L2 decay ``g + wd p``.
    momentum : float >= 0
        Heavy-ball factor of the buffer of ``d`` (0: none).
    centered : bool
        Divide by the root of the variance estimate ``v - gbar^2``.
    maximize : bool
        Ascend (negate the gradient first).
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise before anything changes, skip the step, or are not checked.

    Returns
    -------
    Rule
        ``init``/``step``/``step_``; leaf state :class:`RMSpropLeaf` (``square_avg``,
        ``momentum_buffer``, ``grad_avg``).

    Examples
    --------
    >>> import numpy as np
    >>> opt = rmsprop(lr=0.01)
    >>> p, st = opt.step(np.zeros(2), np.array([1.0, -1.0]), opt.init(np.zeros(2)))
    >>> np.round(p, 4).tolist()
    [-0.1, 0.1]
    """
    parts = _head(maximize, weight_decay) + [scale_by_rmsprop(alpha, eps, momentum, centered), T.scale_by_lr()]
    kernel = _kernels.rmsprop(alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered,
                              maximize=maximize)
    return Rule(lr=lr, transform=chain(*parts), leaf=RMSpropLeaf, nan_policy=nan_policy, kernel=kernel,
                elementwise=True)


# ----------------------------------------------------------------------------------------------- Adagrad
class AdagradLeaf(NamedTuple):
    """Leaf state of :func:`adagrad`: the running sum of squared gradients (torch's ``sum``)."""
    sum: Any


def scale_by_adagrad(initial_accumulator_value, eps, lr_decay) -> Transform:
    """Adagrad's direction ``g / (sqrt(s) + eps)`` with ``s += g^2`` and step factor ``1/(1 + (t-1) lr_decay)``."""

    def init(p, ctx):
        z = zeros_state(p, ctx.xp)
        return {"sum": z + initial_accumulator_value if active(initial_accumulator_value) else z}

    def update(leaf, s, ctx):
        xp, g = ctx.xp, leaf.u
        acc = s.sum + g * g
        u = g / (xp.sqrt(acc) + eps)
        scale = leaf.scale / (1.0 + (ctx.t - 1) * lr_decay) if active(lr_decay) else leaf.scale
        return leaf._replace(u=u, scale=scale), s._replace(sum=acc)

    return Transform(init, update)


@rule("Adagrad", lr=LR, lr_decay=NONNEG, weight_decay=NONNEG, initial_accumulator_value=NONNEG, eps=NONNEG,
      maximize=Bool(), nan_policy=NAN_POLICY)
def adagrad(*, lr: ScalarT | Schedule = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
            initial_accumulator_value: float = 0.0, eps: float = 1e-10, maximize: bool = False,
            nan_policy: str = "raise") -> Rule:
    r"""Adagrad with torch.optim.Adagrad's conventions.

    .. math::
        s \leftarrow s + g^2,\quad p \leftarrow p - \frac{lr}{1 + (t-1)\,\eta}\,\frac{g}{\sqrt{s} + \epsilon}

    with ``g + wd p`` first and ``s_0 = initial_accumulator_value``.  Duchi, Hazan,
    Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization", JMLR 2011.  optax's ``adagrad`` differs (``s_0 = 0.1``,
    ``g / sqrt(s + eps)``, eps 1e-7).

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size.
    lr_decay : float >= 0
        :math:`\eta`: the step is divided by ``1 + (t - 1) lr_decay``.
    weight_decay : float >= 0
        Coupled L2 decay.
    initial_accumulator_value : float >= 0
        Initial value of the sum of squares.
    eps : float >= 0
        Added to the root.
    maximize : bool
        Ascend.
    nan_policy : {"raise", "skip", "ignore"}
        See :func:`adam`.

    Returns
    -------
    Rule
        Leaf state :class:`AdagradLeaf` (``sum``).

    Examples
    --------
    >>> import numpy as np
    >>> opt = adagrad(lr=0.1)
    >>> p, st = opt.step(np.zeros(2), np.array([2.0, -1.0]), opt.init(np.zeros(2)))
    >>> np.round(p, 6).tolist()
    [-0.1, 0.1]
    """
    parts = _head(maximize, weight_decay) + [scale_by_adagrad(initial_accumulator_value, eps, lr_decay),
                                             T.scale_by_lr()]
    kernel = _kernels.adagrad(lr_decay=lr_decay, weight_decay=weight_decay, eps=eps, maximize=maximize)
    return Rule(lr=lr, transform=chain(*parts), leaf=AdagradLeaf, nan_policy=nan_policy, kernel=kernel,
                elementwise=True)


# ----------------------------------------------------------------------------------------------- Adadelta
class AdadeltaLeaf(NamedTuple):
    """Leaf state of :func:`adadelta`: averages of squared gradients and of squared updates."""
    square_avg: Any
    acc_delta: Any


def scale_by_adadelta(rho, eps) -> Transform:
    """Adadelta's direction ``sqrt(u + eps) / sqrt(v + eps) g`` (then ``u`` takes the new update)."""

    def init(p, ctx):
        return {"square_avg": zeros_state(p, ctx.xp), "acc_delta": zeros_state(p, ctx.xp)}

    def update(leaf, s, ctx):
        xp, g = ctx.xp, leaf.u
        v = rho * s.square_avg + (1.0 - rho) * (g * g)
        delta = xp.sqrt(s.acc_delta + eps) / xp.sqrt(v + eps) * g
        acc = rho * s.acc_delta + (1.0 - rho) * (delta * delta)
        return leaf._replace(u=delta), s._replace(square_avg=v, acc_delta=acc)

    return Transform(init, update)


@rule("Adadelta", lr=LR, rho=UnitInterval(**ARR), eps=NONNEG, weight_decay=NONNEG, maximize=Bool(),
      nan_policy=NAN_POLICY)
def adadelta(*, lr: ScalarT | Schedule = 1.0, rho: Array | float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
             maximize: bool = False, nan_policy: str = "raise") -> Rule:
    r"""Adadelta with torch.optim.Adadelta's conventions (eps inside both roots).

    .. math::
        v \leftarrow \rho v + (1-\rho) g^2,\quad
        \Delta = \frac{\sqrt{u + \epsilon}}{\sqrt{v + \epsilon}}\, g,\quad
        u \leftarrow \rho u + (1-\rho)\Delta^2,\quad p \leftarrow p - lr\,\Delta

    (``g + wd p`` first).  Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012.

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Multiplier of :math:`\Delta` (1 in the paper).
    rho : float in [0, 1)
        Decay of both averages.
    eps : float >= 0
        Inside both roots.
    weight_decay : float >= 0
        Coupled L2 decay.
    maximize : bool
        Ascend.
    nan_policy : {"raise", "skip", "ignore"}
        See :func:`adam`.

    Returns
    -------
    Rule
        Leaf state :class:`AdadeltaLeaf` (``square_avg``, ``acc_delta``).

    Examples
    --------
    >>> import numpy as np
    >>> opt = adadelta()
    >>> p, st = opt.step(np.zeros(1), np.ones(1), opt.init(np.zeros(1)))
    >>> round(float(p[0]), 6)
    -0.003162
    """
    parts = _head(maximize, weight_decay) + [scale_by_adadelta(rho, eps), T.scale_by_lr()]
    kernel = _kernels.adadelta(rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
    return Rule(lr=lr, transform=chain(*parts), leaf=AdadeltaLeaf, nan_policy=nan_policy, kernel=kernel,
                elementwise=True)


# ----------------------------------------------------------------------------------------------- Adamax
class AdamaxLeaf(NamedTuple):
    """Leaf state of :func:`adamax`: first moment and the exponentially weighted infinity norm."""
    exp_avg: Any
    exp_inf: Any


def scale_by_adamax(b1, b2, eps) -> Transform:
    """Adamax's direction ``m / u`` with ``u = max(b2 u, |g| + eps)`` and step factor ``1/(1 - b1^t)``."""

    def init(p, ctx):
        return {"exp_avg": zeros_state(p, ctx.xp), "exp_inf": zeros_state(p, ctx.xp)}

    def update(leaf, s, ctx):
        xp, g = ctx.xp, leaf.u
        m = T.ema(s.exp_avg, g, b1)
        u = xp.maximum(b2 * s.exp_inf, xp.abs(g) + eps)
        return leaf._replace(u=m / u, scale=leaf.scale / bias_correction(b1, ctx.t)), s._replace(exp_avg=m, exp_inf=u)

    return Transform(init, update)


@rule("Adamax", lr=LR, betas=BETAS, eps=NONNEG, weight_decay=NONNEG, maximize=Bool(), nan_policy=NAN_POLICY)
def adamax(*, lr: ScalarT | Schedule = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
           weight_decay: float = 0.0, maximize: bool = False, nan_policy: str = "raise") -> Rule:
    r"""Adamax (Adam with the infinity norm) with torch.optim.Adamax's conventions.

    .. math::
        m \leftarrow \mathrm{lerp}(m, g, 1-\beta_1),\quad u \leftarrow \max(\beta_2 u, |g| + \epsilon),\quad
        p \leftarrow p - \frac{lr}{1-\beta_1^t}\,\frac{m}{u}

    (``g + wd p`` first; eps sits inside the max, as in torch).  Kingma & Ba, "Adam: A
    Method for Stochastic Optimization", ICLR 2015, section 7.1.

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size.
    betas : (float, float)
        Decay of the first moment and of the infinity norm, each in [0, 1).
    eps : float >= 0
        Added to ``|g|`` inside the max.
    weight_decay : float >= 0
        Coupled L2 decay.
    maximize : bool
        Ascend.
    nan_policy : {"raise", "skip", "ignore"}
        See :func:`adam`.

    Returns
    -------
    Rule
        Leaf state :class:`AdamaxLeaf` (``exp_avg``, ``exp_inf``).

    Examples
    --------
    >>> import numpy as np
    >>> opt = adamax(lr=0.1)
    >>> p, st = opt.step(np.zeros(2), np.array([3.0, -1.0]), opt.init(np.zeros(2)))
    >>> np.round(p, 6).tolist()
    [-0.1, 0.1]
    """
    parts = _head(maximize, weight_decay) + [scale_by_adamax(betas[0], betas[1], eps), T.scale_by_lr()]
    kernel = _kernels.adamax(beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay, maximize=maximize)
    return Rule(lr=lr, transform=chain(*parts), leaf=AdamaxLeaf, nan_policy=nan_policy, kernel=kernel,
                elementwise=True)


# ----------------------------------------------------------------------------------------------- NAdam
class NAdamLeaf(NamedTuple):
    """Leaf state of :func:`nadam` (torch's names): the product of the momentum schedule so far (0-d) and the
    two moments."""
    mu_product: Any
    exp_avg: Any
    exp_avg_sq: Any


def nadam_mu(beta1, momentum_decay, t):
    """torch's momentum schedule ``mu_t = beta1 (1 - 0.5 * 0.96^(t psi))``."""
    return beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))


def scale_by_nadam(b1, b2, eps, momentum_decay) -> Transform:
    """NAdam's two-term update with the momentum schedule (torch's form); applies the step itself."""

    def init(p, ctx):
        xp = ctx.xp
        return {"mu_product": compat.full((), 1.0, like=p, dtype=compat.compute_dtype(p, xp), xp=xp),
                "exp_avg": zeros_state(p, xp), "exp_avg_sq": zeros_state(p, xp)}

    def update(leaf, s, ctx):
        xp, g, t, pc = ctx.xp, leaf.u, ctx.t, leaf.p
        mu = nadam_mu(b1, momentum_decay, t)
        mu_next = nadam_mu(b1, momentum_decay, t + 1)
        prod = s.mu_product * scalar(mu, s.mu_product, xp)
        m = T.ema(s.exp_avg, g, b1)
        v = b2 * s.exp_avg_sq + (1.0 - b2) * (g * g)
        den = xp.sqrt(v / scalar(bias_correction(b2, t), v, xp)) + eps
        lr = leaf.scale
        if isinstance(lr, float) and isinstance(mu, float) and compat.is_concrete(prod):
            pr = float(prod)                     # torch forms the two step sizes in Python floats
            c1, c2 = lr * (1.0 - mu) / (1.0 - pr), lr * mu_next / (1.0 - pr * mu_next)
        else:
            lr, pr, mu, mu_next = (scalar(x, pc, xp) for x in (lr, xp.astype(prod, pc.dtype), mu, mu_next))
            c1, c2 = lr * (1.0 - mu) / (1.0 - pr), lr * mu_next / (1.0 - pr * mu_next)
        pn = pc - scalar(c1, pc, xp) * (g / den)
        return leaf._replace(p=pn, u=m / den, scale=c2), s._replace(mu_product=prod, exp_avg=m, exp_avg_sq=v)

    return Transform(init, update)


@rule("NAdam", lr=LR, betas=BETAS, eps=NONNEG, weight_decay=NONNEG, momentum_decay=NONNEG,
      decoupled_weight_decay=Bool(), maximize=Bool(), nan_policy=NAN_POLICY)
def nadam(*, lr: ScalarT | Schedule = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.0, momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False,
          maximize: bool = False, nan_policy: str = "raise") -> Rule:
    r"""NAdam with torch.optim.NAdam's momentum-decay schedule.

    .. math::
        \mu_t = \beta_1\bigl(1 - \tfrac12\, 0.96^{t\psi}\bigr),\quad \Pi_t = \prod_{i\le t}\mu_i,\quad
        \hat v = \frac{v}{1-\beta_2^t},\quad
        p \leftarrow p - lr\frac{1-\mu_t}{1-\Pi_t}\frac{g}{\sqrt{\hat v}+\epsilon}
              - lr\frac{\mu_{t+1}}{1-\Pi_t\mu_{t+1}}\frac{m}{\sqrt{\hat v}+\epsilon}

    with ``m = lerp(m, g, 1 - beta1)`` (the moment uses :math:`\beta_1`, not :math:`\mu_t`),
    ``v = beta2 v + (1 - beta2) g^2``, and ``g + wd p`` first (``decoupled_weight_decay``:
    ``p (1 - lr wd)`` instead, NAdamW).  Dozat, "Incorporating Nesterov Momentum into Adam",
    ICLR 2016 workshop.  optax's ``nadam`` has no :math:`\mu` schedule (it is Adam with a
    Nesterov look-ahead); the two differ numerically.

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size.
    betas : (float, float)
        Moment decays in [0, 1).
    eps : float >= 0
        Added to the bias-corrected root.
    weight_decay : float >= 0
        L2 (coupled) or decoupled decay.
    momentum_decay : float >= 0
        :math:`\psi` of the schedule.
    decoupled_weight_decay : bool
        AdamW-style decay.
    maximize : bool
        Ascend.
    nan_policy : {"raise", "skip", "ignore"}
        See :func:`adam`.

    Returns
    -------
    Rule
        Leaf state :class:`NAdamLeaf` (``mu_product``, ``exp_avg``, ``exp_avg_sq``).

    Examples
    --------
    >>> import numpy as np
    >>> opt = nadam(lr=0.1)
    >>> p, st = opt.step(np.zeros(2), np.array([1.0, -1.0]), opt.init(np.zeros(2)))
    >>> np.round(p, 4).tolist()
    [-0.1056, 0.1056]
    """
    parts = _head(maximize, weight_decay, decoupled_weight_decay) + [       # scale_by_nadam reads the lr's scale
        T.scale_by_lr(), scale_by_nadam(betas[0], betas[1], eps, momentum_decay)]
    kernel = _kernels.nadam(beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay,
                            momentum_decay=momentum_decay, decoupled=decoupled_weight_decay, maximize=maximize)
    return Rule(lr=lr, transform=chain(*parts), leaf=NAdamLeaf, nan_policy=nan_policy, kernel=kernel,
                elementwise=True)


# ----------------------------------------------------------------------------------------------- RAdam
def radam_terms(b2, t):
    """``(rho_t, rect)`` of RAdam at step ``t``: the SMA length and the variance rectification (valid for
    ``rho_t > 4``)."""
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    bc2 = bias_correction(b2, t)
    rho_t = rho_inf - 2.0 * t * b2 ** t / bc2
    return rho_t, rho_inf


def scale_by_radam(b1, b2, eps) -> Transform:
    """RAdam's direction: the bias-corrected momentum, rectified and scaled by the adaptive term once
    ``rho_t > 5`` (torch's threshold), plain momentum before."""

    def init(p, ctx):
        return {"exp_avg": zeros_state(p, ctx.xp), "exp_avg_sq": zeros_state(p, ctx.xp)}

    def update(leaf, s, ctx):
        xp, g, t, pc = ctx.xp, leaf.u, ctx.t, leaf.p
        m = T.ema(s.exp_avg, g, b1)
        v = b2 * s.exp_avg_sq + (1.0 - b2) * (g * g)
        bc1, bc2 = bias_correction(b1, t), bias_correction(b2, t)
        mhat = m / scalar(bc1, m, xp)
        rho_t, rho_inf = radam_terms(b2, t)
        lr = scalar(leaf.scale, pc, xp)
        if isinstance(rho_t, float):
            if rho_t > 5.0:
                rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                u = mhat * lr * (math.sqrt(bc2) / (xp.sqrt(v) + eps)) * rect
            else:
                u = mhat * lr
        else:                                    # traced step or betas: both branches, selected
            rt = scalar(rho_t, pc, xp)
            ri = scalar(rho_inf, pc, xp)
            safe = xp.where(rt > 5.0, rt, xp.full_like(rt, 6.0))
            rect = xp.sqrt((safe - 4) * (safe - 2) * ri / ((ri - 4) * (ri - 2) * safe))
            adapt = ssqrt(scalar(bc2, pc, xp), xp) / (xp.sqrt(v) + eps) * rect
            u = mhat * lr * xp.where(rt > 5.0, adapt, xp.ones_like(adapt))
        return leaf._replace(u=u, scale=1.0), s._replace(exp_avg=m, exp_avg_sq=v)

    return Transform(init, update)


class RAdamLeaf(NamedTuple):
    """Leaf state of :func:`radam`: the two moments."""
    exp_avg: Any
    exp_avg_sq: Any


@rule("RAdam", lr=LR, betas=BETAS, eps=NONNEG, weight_decay=NONNEG, decoupled_weight_decay=Bool(), maximize=Bool(),
      nan_policy=NAN_POLICY)
def radam(*, lr: ScalarT | Schedule = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.0, decoupled_weight_decay: bool = False, maximize: bool = False,
          nan_policy: str = "raise") -> Rule:
    r"""RAdam (rectified Adam) with torch.optim.RAdam's conventions.

    .. math::
        \rho_\infty = \frac{2}{1-\beta_2} - 1,\quad
        \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t},\quad
        r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}},

    .. math::
        p \leftarrow p - lr\,\frac{m}{1-\beta_1^t}\cdot
        \begin{cases} r_t\,\dfrac{\sqrt{1-\beta_2^t}}{\sqrt{v}+\epsilon} & \rho_t > 5\\ 1 & \text{else}\end{cases}

    (``g + wd p`` first, or ``p (1 - lr wd)`` with ``decoupled_weight_decay``).  Liu et al.,
    "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.  optax's
    ``radam`` tests ``rho_t >= 5`` and adds eps to the bias-corrected root.

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size.
    betas : (float, float)
        Moment decays in [0, 1).
    eps : float >= 0
        Added to the raw root.
    weight_decay : float >= 0
        L2 (coupled) or decoupled decay.
    decoupled_weight_decay : bool
        AdamW-style decay.
    maximize : bool
        Ascend.
    nan_policy : {"raise", "skip", "ignore"}
        See :func:`adam`.

    Returns
    -------
    Rule
        Leaf state :class:`RAdamLeaf` (``exp_avg``, ``exp_avg_sq``).

    Examples
    --------
    >>> import numpy as np
    >>> opt = radam(lr=0.1)
    >>> p, st = opt.step(np.zeros(2), np.array([1.0, -1.0]), opt.init(np.zeros(2)))
    >>> np.round(p, 4).tolist()          # the first steps are momentum SGD
    [-0.1, 0.1]
    """
    parts = _head(maximize, weight_decay, decoupled_weight_decay) + [T.scale_by_lr(),
                                                                    scale_by_radam(betas[0], betas[1], eps)]
    kernel = _kernels.radam(beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay,
                            decoupled=decoupled_weight_decay, maximize=maximize)
    return Rule(lr=lr, transform=chain(*parts), leaf=RAdamLeaf, nan_policy=nan_policy, kernel=kernel,
                elementwise=True)
