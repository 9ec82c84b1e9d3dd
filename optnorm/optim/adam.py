"""Adam family: adam, adamw (torch.optim conventions), adamp (AdamP) and fadam (FAdam)."""
from __future__ import annotations

from typing import Any, NamedTuple

from .._lib.typing import Scalar as ScalarT, Schedule
from .._lib.roles import Bool, Choice, NonNegative, Positive, Scalars, UnitInterval
from . import _kernels
from . import transforms as T
from ._common import active, scalar, stable_rms, zeros_state
from .base import LR, NAN_POLICY, Rule, Transform, chain, rule

BETAS = Scalars(UnitInterval(array=True), 2)
EPS_MODES = ("torch", "hf")


class AdamLeaf(NamedTuple):
    """Leaf state of the Adam family: first and second moments (and the running max of the second with
    ``amsgrad``), in float32 for half-precision parameters."""
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any = None


class FAdamLeaf(NamedTuple):
    """Leaf state of :func:`fadam`: momentum of the clipped natural gradient and the diagonal Fisher."""
    momentum: Any
    fim: Any


def _adam(lr, betas, eps, weight_decay, amsgrad, maximize, decoupled, eps_mode, nan_policy) -> Rule:
    parts = [T.flip_sign()] if maximize else []
    if active(weight_decay):
        parts.append(T.decay_weights(weight_decay) if decoupled else T.add_decayed_weights(weight_decay))
    parts += [T.scale_by_adam(betas[0], betas[1], eps, amsgrad=amsgrad, eps_mode=eps_mode), T.scale_by_lr()]
    kernel = _kernels.adam(beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay, decoupled=decoupled,
                           amsgrad=amsgrad, maximize=maximize, hf_eps=eps_mode == "hf")
    return Rule(lr=lr, transform=chain(*parts), leaf=AdamLeaf, nan_policy=nan_policy, kernel=kernel,
                elementwise=True)


_ADAM_ROLES = dict(lr=LR, betas=BETAS, eps=NonNegative(array=True), weight_decay=NonNegative(array=True),
                   amsgrad=Bool(), maximize=Bool(),
                   eps_mode=Choice(EPS_MODES), nan_policy=NAN_POLICY)


@rule("Adam", decoupled_weight_decay=Bool(), **_ADAM_ROLES)
def adam(*, lr: ScalarT | Schedule = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
         weight_decay: float = 0.0, amsgrad: bool = False, maximize: bool = False, decoupled_weight_decay: bool = False,
         eps_mode: str = "torch", nan_policy: str = "raise") -> Rule:
    r"""Adam with torch.optim.Adam's exact conventions.

    .. math::
        m_t = \beta_1 m + (1-\beta_1) g,\quad v_t = \beta_2 v + (1-\beta_2) g^2,\quad
        p \leftarrow p - \frac{lr}{1-\beta_1^t}\,\frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    with coupled L2 decay ``g + wd p`` (``decoupled_weight_decay=True``: AdamW's
    ``p (1 - lr wd)`` first), ``amsgrad`` using ``max`` of the raw ``v``.  "Adam: A
    Method for Stochastic Optimization", D. P. Kingma, J. Ba, 2015.  The chain:
    ``flip_sign`` (maximize), ``add_decayed_weights`` (or ``decay_weights``),
    ``scale_by_adam``, ``scale_by_lr``.

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size; a schedule is called with the number of steps already taken (0 first).
    betas : (float, float)
        EMA factors in [0, 1).
    eps : float
        Added to the bias-corrected ``sqrt(v)`` (``eps_mode="torch"``) or to ``sqrt(v)``
        with step ``lr sqrt(1-b2^t)/(1-b1^t)`` (``eps_mode="hf"``, BERT/Conda style).
    weight_decay : float
    amsgrad, maximize, decoupled_weight_decay : bool
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise ValueError before anything changes ("raise"),
        skip the step leaving params and state untouched ("skip"), or are not checked.

    Returns
    -------
    Rule with ``init``, ``step``, ``step_``; leaf state ``AdamLeaf``.

    Examples
    --------
    >>> import numpy as np
    >>> opt = adam(lr=0.1)
    >>> p = np.ones(3); st = opt.init(p)
    >>> p, st = opt.step(p, np.ones(3), st)
    >>> float(p[0])  # doctest: +ELLIPSIS
    0.9000000...
    """
    return _adam(lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay, eps_mode, nan_policy)


@rule("AdamW", **_ADAM_ROLES)
def adamw(*, lr: ScalarT | Schedule = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 1e-2, amsgrad: bool = False, maximize: bool = False, eps_mode: str = "torch",
          nan_policy: str = "raise") -> Rule:
    r"""AdamW with torch.optim.AdamW's conventions: decoupled decay ``p (1 - lr wd)`` before the Adam step.

    "Decoupled Weight Decay Regularization", I. Loshchilov, F. Hutter, 2019.  Same
    parameters as :func:`adam` (note torch's default ``weight_decay=1e-2``; optax
    uses 1e-4).  The chain is ``decay_weights``, ``scale_by_adam``, ``scale_by_lr``;
    ``step_`` on float32/float64 NumPy buffers runs the fused Numba kernel (one
    parallel pass reading p, g, m, v and writing p, m, v).

    .. math::
        p \leftarrow p(1 - lr\,\lambda) - \frac{lr}{1-\beta_1^t}\,\frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size; a schedule is called with the number of steps taken (0 first).
    betas : (float, float)
        Moment decays, each in [0, 1).
    eps : float >= 0
        Added to the bias-corrected root (``eps_mode="torch"``) or to the raw root (``"hf"``).
    weight_decay : float >= 0
        Decoupled decay ``p (1 - lr wd)`` before the Adam step (torch's default 1e-2).
    amsgrad : bool
        Use the running maximum of ``v``.
    maximize : bool
        Ascend.
    eps_mode : {"torch", "hf"}
        Where eps goes (see :func:`adam`).
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise before anything changes, skip the step, or are not checked.

    Returns
    -------
    Rule
        ``init`` / ``step`` / ``step_``; leaf state ``AdamLeaf``.

    Examples
    --------
    >>> import numpy as np
    >>> opt = adamw(lr=1e-3)
    >>> p = np.ones(4, np.float32); st = opt.init(p)
    >>> st = opt.step_(p, np.ones(4, np.float32), st)   # in place
    """
    return _adam(lr, betas, eps, weight_decay, amsgrad, maximize, True, eps_mode, nan_policy)


@rule("AdamP", lr=LR, betas=BETAS, eps=NonNegative(), weight_decay=NonNegative(), delta=NonNegative(),
      wd_ratio=NonNegative(), nesterov=Bool(), nan_policy=NAN_POLICY)
def adamp(*, lr: ScalarT | Schedule = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.0, delta: float = 0.1, wd_ratio: float = 0.1, nesterov: bool = False,
          nan_policy: str = "raise") -> Rule:
    r"""AdamP: Adam whose update loses its radial component on scale-invariant weights.

    "AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant
    Weights", B. Heo, S. Chun, S. J. Oh, D. Han, S. Yun, G. Kim, Y. Uh, J.-W. Ha, ICLR 2021.
    For parameters with ``ndim > 1``: if ``max_r |cos(g_r, p_r)| < delta/sqrt(d)``
    in the channel view ``(shape[0], -1)`` (else the layer view ``(1, -1)``), the
    update ``u = m_hat/denom`` is projected ``u - p_hat <p_hat, u>`` and the decoupled
    decay is scaled by ``wd_ratio``; then ``p (1 - lr wd mult) - lr/bc1 u``.

    .. math::
        u = \frac{\hat m}{\sqrt{\hat v} + \epsilon},\quad
        u \leftarrow u - \hat p\,\langle \hat p, u\rangle\ \text{(scale-invariant weights)},\quad
        p \leftarrow p(1 - lr\,\lambda\,r) - lr\,u

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size; a schedule is called with the number of steps taken (0 first).
    betas : (float, float)
        Moment decays, each in [0, 1).
    eps : float >= 0
        Added to the root and to the norms of the projection.
    weight_decay : float >= 0
        Decoupled decay (times ``wd_ratio`` where the projection fired).
    delta : float >= 0
        Threshold of the cosine test ``max |cos(g_r, p_r)| < delta / sqrt(d)``.
    wd_ratio : float >= 0
        Decay multiplier for projected (scale-invariant) weights.
    nesterov : bool
        Nesterov look-ahead in the numerator.
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise before anything changes, skip the step, or are not checked.

    Returns
    -------
    Rule
        ``init`` / ``step`` / ``step_``; leaf state ``AdamLeaf``.

    Examples
    --------
    >>> import numpy as np
    >>> opt = adamp(lr=1e-2)
    >>> st = opt.init(np.ones((3, 4)))
    """
    parts = [T.scale_by_adam(betas[0], betas[1], eps, nesterov=nesterov, lerp=False),
             T.project_scale_invariant(delta, eps, wd_ratio)]
    if weight_decay:
        parts.append(T.decay_weights(weight_decay))
    parts.append(T.scale_by_lr())
    return Rule(lr=lr, transform=chain(*parts), leaf=AdamLeaf, nan_policy=nan_policy)


# ----------------------------------------------------------------------------------------------- FAdam
def scale_by_fadam(b1, b2, eps, clip, power, adaptive_eps, weight_decay) -> Transform:
    """FAdam's direction: momentum of the clipped natural gradient plus the Fisher-preconditioned decay."""

    def init(p, ctx):
        xp = ctx.xp
        return {"momentum": zeros_state(p, xp), "fim": zeros_state(p, xp) + 1.0}

    def update(leaf, s, ctx):
        xp, t = ctx.xp, ctx.t
        g, pc = leaf.u, leaf.p
        b2hat = scalar(b2 * (1.0 - b2 ** (t - 1)) / (1.0 - b2 ** t), pc, xp)
        fim = b2hat * s.fim + (1.0 - b2hat) * (g * g)
        rg = stable_rms(g, xp)
        one = xp.ones_like(rg)
        adapt = xp.minimum(one, rg) if adaptive_eps == "min" else xp.maximum(one, rg)
        # an all-zero gradient leaf has no scale to adapt eps to (and fim = 0 on the first step): keep eps
        adapt = xp.where(rg > 0, adapt, one)
        den = fim ** power + eps * adapt
        m = b1 * s.momentum + (1.0 - b1) * T.clip_ratio_by_rms(g, den, clip, xp)
        u = m + weight_decay * T.clip_ratio_by_rms(pc, den, clip, xp)
        return leaf._replace(u=u), s._replace(momentum=m, fim=fim)

    return Transform(init, update)


@rule("FAdam", lr=LR, betas=BETAS, eps=Positive(), weight_decay=NonNegative(), clip=Positive(), power=NonNegative(),
      adaptive_eps=Choice(("min", "max")), maximize=Bool(), nan_policy=NAN_POLICY)
def fadam(*, lr: ScalarT | Schedule = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.1, clip: float = 1.0, power: float = 0.5, adaptive_eps: str = "min",
          maximize: bool = False, nan_policy: str = "raise") -> Rule:
    r"""FAdam: Adam as natural gradient with the diagonal empirical Fisher (and Fisher-preconditioned decay).

    "FAdam: Adam is a natural gradient optimizer using diagonal empirical Fisher
    information", D. Hwang, 2024 (Algorithm 1, v3):

    .. math::
        \hat\beta_2 = \beta_2\frac{1-\beta_2^{t-1}}{1-\beta_2^t},\;
        F \leftarrow \hat\beta_2 F + (1-\hat\beta_2) g^2,\;
        \epsilon_t = \epsilon\min(1, \mathrm{RMS}(g)),\;
        \bar g = \mathrm{clip}(g / (F^{p} + \epsilon_t)),\;
        m \leftarrow \beta_1 m + (1-\beta_1)\bar g,\;
        p \leftarrow p - lr\,(m + \lambda\,\mathrm{clip}(p / (F^{p}+\epsilon_t)))

    with ``clip(x) = x c / max(1, RMS(x))`` and ``F`` initialised to ones.
    ``adaptive_eps="max"`` uses ``eps max(1, RMS(g))`` (the reference repository's
    later NaN fix).  ``power`` is the paper's ``p`` (0.5).  A parameter whose
    gradient is all zero uses ``eps_t = eps`` (``RMS(g) = 0`` leaves nothing to adapt
    to; the paper's form would divide 0 by 0), and the clipped ratios are formed
    without overflow where ``F^p + eps_t`` is tiny.

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size; a schedule is called with the number of steps taken (0 first).
    betas : (float, float)
        Moment decays, each in [0, 1).
    eps : float > 0
        :math:`\epsilon` of the adaptive floor.
    weight_decay : float >= 0
        Multiplier of the Fisher-preconditioned, clipped decay term.
    clip : float > 0
        RMS target of the clipping ``x c / max(1, RMS(x))``.
    power : float >= 0
        Exponent :math:`p` of the Fisher (0.5 in the paper).
    adaptive_eps : {"min", "max"}
        ``eps min(1, RMS(g))`` (paper) or ``eps max(1, RMS(g))``.
    maximize : bool
        Ascend.
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise before anything changes, skip the step, or are not checked.

    Returns
    -------
    Rule
        ``init`` / ``step`` / ``step_``; leaf state ``FAdamLeaf``.

    Examples
    --------
    >>> import numpy as np
    >>> st = fadam().init(np.ones(3))
    """
    parts = [T.flip_sign()] if maximize else []
    parts += [scale_by_fadam(betas[0], betas[1], eps, clip, power, adaptive_eps, weight_decay), T.scale_by_lr()]
    return Rule(lr=lr, transform=chain(*parts), leaf=FAdamLeaf, nan_policy=nan_policy)
