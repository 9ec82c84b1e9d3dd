"""Adam family: adam, adamw (torch.optim conventions), adamp (AdamP) and fadam (FAdam)."""
from __future__ import annotations

from typing import Any, NamedTuple

from .._lib import compat, validate
from . import _kernels
from . import transforms as T
from .base import Ctx, Rule, cast, check_betas, scalar, ssqrt

__all__ = ["adam", "adamw", "adamp", "fadam"]


class AdamLeaf(NamedTuple):
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any = None


class FAdamLeaf(NamedTuple):
    momentum: Any
    fim: Any


def _zeros(p, xp):
    return xp.zeros(p.shape, dtype=compat.compute_dtype(p, xp), device=compat.device(p))


def _cast_in(p, g, xp):
    cd = compat.compute_dtype(p, xp)
    return cast(p, cd, xp), cast(g, cd, xp)


class Adam(Rule):
    name = "adam"

    def __init__(self, *, lr, betas, eps, weight_decay, amsgrad, maximize, decoupled, eps_mode, nan_policy,
                 factory, hyper):
        super().__init__(lr=lr, nan_policy=nan_policy, factory=factory, hyper=hyper)
        self.betas = check_betas(betas)
        self.eps = validate.check_nonnegative(eps, "eps")
        self.weight_decay = validate.check_nonnegative(weight_decay, "weight_decay")
        self.amsgrad = bool(amsgrad)
        self.maximize = bool(maximize)
        self.decoupled = bool(decoupled)
        self.eps_mode = validate.check_in(eps_mode, ("torch", "hf"), "eps_mode")

    def init_leaf(self, p, *, name, xp):
        return AdamLeaf(_zeros(p, xp), _zeros(p, xp), _zeros(p, xp) if self.amsgrad else None)

    def _scalars(self, t, xp):
        lr = self.lr_at(t)
        b1, b2 = self.betas
        bc1, bc2 = T.bias_correction(b1, t), T.bias_correction(b2, t)
        if self.eps_mode == "torch":
            return lr, lr / bc1, ssqrt(bc2, xp)
        return lr, lr * ssqrt(bc2, xp) / bc1, ssqrt(bc2, xp)

    def update_leaf(self, p, g, s, ctx: Ctx):
        xp, t = ctx.xp, ctx.t
        b1, b2 = self.betas
        pc, gc = _cast_in(p, g, xp)
        lr, step_size, bc2_sqrt = (scalar(v, pc, xp) for v in self._scalars(t, xp))
        if self.maximize:
            gc = -gc
        if self.weight_decay:
            if self.decoupled:
                pc = T.decay_decoupled(pc, lr, self.weight_decay)
            else:
                gc = T.decay_coupled(gc, pc, self.weight_decay)
        m = T.ema(s.exp_avg, gc, b1)
        v = T.ema_sq(s.exp_avg_sq, gc, b2)
        vmax = xp.maximum(s.max_exp_avg_sq, v) if self.amsgrad else None
        vv = vmax if self.amsgrad else v
        if self.eps_mode == "torch":
            denom = xp.sqrt(vv) / bc2_sqrt + self.eps
        else:
            denom = xp.sqrt(vv) + self.eps
        pc = pc - step_size * (m / denom)
        return cast(pc, p.dtype, xp), AdamLeaf(m, v, vmax)

    def fused_step_(self, ps, gs, ss, t, check=False):
        xp = compat.array_namespace(ps[0])
        lr, step_size, bc2_sqrt = self._scalars(t, xp)
        if not isinstance(lr, float):
            return False
        return _kernels.adam(ps, gs, [s.exp_avg for s in ss], [s.exp_avg_sq for s in ss],
                             [s.max_exp_avg_sq for s in ss], step_size=step_size, bc2_sqrt=bc2_sqrt, eps=self.eps,
                             beta1=self.betas[0], beta2=self.betas[1], weight_decay=self.weight_decay,
                             decay=1.0 - lr * self.weight_decay, decoupled=self.decoupled and self.weight_decay != 0,
                             amsgrad=self.amsgrad, maximize=self.maximize, hf_eps=self.eps_mode == "hf", check=check)


def adam(*, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
         decoupled_weight_decay=False, eps_mode="torch", nan_policy="raise") -> Rule:
    r"""Adam with torch.optim.Adam's exact conventions.

    .. math::
        m_t = \beta_1 m + (1-\beta_1) g,\quad v_t = \beta_2 v + (1-\beta_2) g^2,\quad
        p \leftarrow p - \frac{lr}{1-\beta_1^t}\,\frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    with coupled L2 decay ``g + wd p`` (``decoupled_weight_decay=True``: AdamW's
    ``p (1 - lr wd)`` first), ``amsgrad`` using ``max`` of the raw ``v``.  "Adam: A
    Method for Stochastic Optimization", D. P. Kingma, J. Ba, 2015.

    Parameters
    ----------
    lr : float or callable(step) -> float
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
    Rule with ``init``, ``step``, ``step_``; leaf state :class:`AdamLeaf`.

    Examples
    --------
    >>> import numpy as np
    >>> opt = adam(lr=0.1)
    >>> p = np.ones(3); st = opt.init(p)
    >>> p, st = opt.step(p, np.ones(3), st)
    >>> float(p[0])  # doctest: +ELLIPSIS
    0.9000000...
    """
    hyper = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                 decoupled_weight_decay=decoupled_weight_decay, eps_mode=eps_mode, nan_policy=nan_policy)
    r = Adam(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
             decoupled=decoupled_weight_decay, eps_mode=eps_mode, nan_policy=nan_policy, factory=adam, hyper=hyper)
    return r


def adamw(*, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False,
          eps_mode="torch", nan_policy="raise") -> Rule:
    r"""AdamW with torch.optim.AdamW's conventions: decoupled decay ``p (1 - lr wd)`` before the Adam step.

    "Decoupled Weight Decay Regularization", I. Loshchilov, F. Hutter, 2019.  Same
    parameters as :func:`adam` (note torch's default ``weight_decay=1e-2``; optax
    uses 1e-4).  ``step_`` on float32/float64 NumPy buffers runs the fused Numba
    kernel (one parallel pass reading p, g, m, v and writing p, m, v).

    Examples
    --------
    >>> import numpy as np
    >>> opt = adamw(lr=1e-3)
    >>> p = np.ones(4, np.float32); st = opt.init(p)
    >>> st = opt.step_(p, np.ones(4, np.float32), st)   # in place
    """
    hyper = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                 eps_mode=eps_mode, nan_policy=nan_policy)
    r = Adam(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
             decoupled=True, eps_mode=eps_mode, nan_policy=nan_policy, factory=adamw, hyper=hyper)
    r.name = "adamw"
    return r


# ----------------------------------------------------------------------------------------------- AdamP
class AdamP(Adam):
    name = "adamp"

    def __init__(self, *, delta, wd_ratio, nesterov, **kw):
        super().__init__(amsgrad=False, maximize=False, decoupled=True, eps_mode="torch", **kw)
        self.delta = validate.check_nonnegative(delta, "delta")
        self.wd_ratio = validate.check_nonnegative(wd_ratio, "wd_ratio")
        self.nesterov = bool(nesterov)

    def update_leaf(self, p, g, s, ctx):
        xp, t = ctx.xp, ctx.t
        b1, b2 = self.betas
        pc, gc = _cast_in(p, g, xp)
        lr, step_size, bc2_sqrt = (scalar(v, pc, xp) for v in self._scalars(t, xp))
        m = b1 * s.exp_avg + (1.0 - b1) * gc
        v = T.ema_sq(s.exp_avg_sq, gc, b2)
        denom = xp.sqrt(v) / bc2_sqrt + self.eps
        u = (b1 * m + (1.0 - b1) * gc) / denom if self.nesterov else m / denom
        u, mult = T.adamp_projection(pc, gc, u, delta=self.delta, eps=self.eps, wd_ratio=self.wd_ratio, xp=xp)
        if self.weight_decay:
            pc = pc * (1.0 - lr * self.weight_decay * mult)
        pc = pc - step_size * u
        return cast(pc, p.dtype, xp), AdamLeaf(m, v, None)

    def fused_step_(self, ps, gs, ss, t, check=False):
        return False


def adamp(*, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, delta=0.1, wd_ratio=0.1, nesterov=False,
          nan_policy="raise") -> Rule:
    r"""AdamP: Adam whose update loses its radial component on scale-invariant weights.

    "AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant
    Weights", B. Heo, S. Chun, S. J. Oh, D. Han, S. Yun, G. Kim, Y. Uh, J.-W. Ha, ICLR 2021.
    For parameters with ``ndim > 1``: if ``max_r |cos(g_r, p_r)| < delta/sqrt(d)``
    in the channel view ``(shape[0], -1)`` (else the layer view ``(1, -1)``), the
    update ``u = m_hat/denom`` is projected ``u - p_hat <p_hat, u>`` and the decoupled
    decay is scaled by ``wd_ratio``; then ``p (1 - lr wd mult) - lr/bc1 u``.

    Examples
    --------
    >>> import numpy as np
    >>> opt = adamp(lr=1e-2)
    >>> st = opt.init(np.ones((3, 4)))
    """
    hyper = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, delta=delta, wd_ratio=wd_ratio,
                 nesterov=nesterov, nan_policy=nan_policy)
    return AdamP(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, delta=delta, wd_ratio=wd_ratio,
                 nesterov=nesterov, nan_policy=nan_policy, factory=adamp, hyper=hyper)


# ----------------------------------------------------------------------------------------------- FAdam
class FAdam(Rule):
    name = "fadam"

    def __init__(self, *, lr, betas, eps, weight_decay, clip, power, adaptive_eps, maximize, nan_policy, factory,
                 hyper):
        super().__init__(lr=lr, nan_policy=nan_policy, factory=factory, hyper=hyper)
        self.betas = check_betas(betas)
        self.eps = validate.check_nonnegative(eps, "eps")
        self.weight_decay = validate.check_nonnegative(weight_decay, "weight_decay")
        self.clip = validate.check_positive(clip, "clip")
        self.power = validate.check_nonnegative(power, "power")
        self.adaptive_eps = validate.check_in(adaptive_eps, ("min", "max"), "adaptive_eps")
        self.maximize = bool(maximize)

    def init_leaf(self, p, *, name, xp):
        return FAdamLeaf(_zeros(p, xp), _zeros(p, xp) + 1.0)

    def update_leaf(self, p, g, s, ctx):
        xp, t = ctx.xp, ctx.t
        b1, b2 = self.betas
        pc, gc = _cast_in(p, g, xp)
        lr = scalar(self.lr_at(t), pc, xp)
        if self.maximize:
            gc = -gc
        b2hat = scalar(b2 * (1.0 - b2 ** (t - 1)) / (1.0 - b2 ** t), pc, xp)
        fim = b2hat * s.fim + (1.0 - b2hat) * (gc * gc)
        rg = T.rms(gc, xp)
        one = xp.ones_like(rg)
        eps_t = self.eps * (xp.minimum(one, rg) if self.adaptive_eps == "min" else xp.maximum(one, rg))
        den = fim ** self.power + eps_t
        nat = T.clip_by_rms(gc / den, self.clip, xp)
        m = b1 * s.momentum + (1.0 - b1) * nat
        w = T.clip_by_rms(pc / den, self.clip, xp)
        pc = pc - lr * (m + self.weight_decay * w)
        return cast(pc, p.dtype, xp), FAdamLeaf(m, fim)


def fadam(*, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, clip=1.0, power=0.5, adaptive_eps="min",
          maximize=False, nan_policy="raise") -> Rule:
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
    later NaN fix).  ``power`` is the paper's ``p`` (0.5).

    Examples
    --------
    >>> import numpy as np
    >>> st = fadam().init(np.ones(3))
    """
    hyper = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, clip=clip, power=power,
                 adaptive_eps=adaptive_eps, maximize=maximize, nan_policy=nan_policy)
    return FAdam(factory=fadam, hyper=hyper, **hyper)


