"""Adafactor: factored second moments (torch.optim.Adafactor's conventions by default, optax's on request)."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .._lib.typing import Scalar as ScalarT, Schedule
from .._lib import compat
from .._lib.roles import Bool, Choice, Int, NonNegative, Scalar, Scalars, UnitInterval
from . import transforms as T
from ._common import active, scalar, stable_norm, zeros_state
from .base import LR, NAN_POLICY, Rule, Transform, chain, rule

CONVENTIONS = ("torch", "optax")


class AdafactorLeaf(NamedTuple):
    """Leaf state of :func:`adafactor`: the factored second moment (``row_var``, ``col_var``) of a factored
    parameter or the full one (``variance``) of the others, and the optax convention's momentum
    (``exp_avg``, None without ``momentum``).  torch's names; in the optax convention ``row_var`` /
    ``col_var`` are optax's ``v_row`` / ``v_col`` (the largest and second-largest axes reduced)."""
    row_var: Any = None
    col_var: Any = None
    variance: Any = None
    exp_avg: Any = None


def _rms(x, xp):
    return stable_norm(x, xp) / math.sqrt(max(compat.size(x), 1))


def optax_factored_dims(shape, factored: bool, min_dim_size_to_factor: int):
    """optax's choice: ``(d1, d0)`` the second-largest and the largest axis when the second-largest has at least
    ``min_dim_size_to_factor`` entries, else None."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape, kind="stable")
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def _eps1(eps, leaf, convention, xp):
    if eps[0] is not None:
        return eps[0]
    return 1e-30 if convention == "optax" else float(xp.finfo(leaf.dtype).eps)


def scale_by_adafactor_torch(beta2_decay, eps, d, scale_parameter: bool) -> Transform:
    """torch.optim.Adafactor's update: relative step ``max(eps2, RMS(p)) min(lr, 1/sqrt(t))``, factored
    moments over the last two axes, update clipped to RMS ``d``."""

    def init(p, ctx):
        xp = ctx.xp
        if p.ndim > 1:
            rs, cs = list(p.shape), list(p.shape)
            rs[-1], cs[-2] = 1, 1
            return {"row_var": zeros_state(p, xp, tuple(rs)), "col_var": zeros_state(p, xp, tuple(cs))}
        return {"variance": zeros_state(p, xp)}

    def update(leaf, s, ctx):
        xp, g, t, pc = ctx.xp, leaf.u, ctx.t, leaf.p
        e1 = _eps1(eps, leaf, "torch", xp)
        bhc = scalar(t ** beta2_decay if isinstance(t, int) else xp.astype(t, pc.dtype) ** beta2_decay, pc, xp)
        lr = ctx.lr
        if isinstance(lr, (int, float)) and isinstance(t, int):
            rho = min(lr, 1.0 / math.sqrt(t))
        else:
            rho = xp.minimum(scalar(lr, pc, xp), 1.0 / xp.sqrt(scalar(t, pc, xp)))
        if scale_parameter:
            alpha = xp.maximum(_rms(leaf.p0, xp), xp.full((), eps[1], dtype=pc.dtype)) * rho
        else:
            alpha = rho
        if g.ndim > 1:
            rm = xp.sum(g * g, axis=-1, keepdims=True) / g.shape[-1]
            cm = xp.sum(g * g, axis=-2, keepdims=True) / g.shape[-2]
            R = compat.lerp(s.row_var, rm, bhc)
            C = compat.lerp(s.col_var, cm, bhc)
            V = (R @ C) / T.clamp_min(xp.mean(R, axis=-2, keepdims=True), e1, xp)
            s = s._replace(row_var=R, col_var=C)
        else:
            V = compat.lerp(s.variance, g * g, bhc)
            s = s._replace(variance=V)
        U = g / xp.sqrt(T.clamp_min(V, e1 * e1, xp))
        den = xp.maximum(_rms(U, xp) / d, xp.ones((), dtype=U.dtype))
        return leaf._replace(u=U, scale=alpha / den), s

    return Transform(init, update)


def scale_by_adafactor_optax(beta2_decay, eps, d, scale_parameter: bool, min_dim_size_to_factor: int,
                             factored: bool, momentum, weight_decay) -> Transform:
    """optax.adafactor's chain: factored RMS scaling over the two largest axes, block-RMS clipping, lr,
    parameter scale, momentum (no debiasing), decay ``+ wd p`` (not scaled by lr)."""
    use_mom = active(momentum)

    def init(p, ctx):
        xp = ctx.xp
        out: dict = {"exp_avg": zeros_state(p, xp) if use_mom else None}
        dims = optax_factored_dims(tuple(p.shape), factored, min_dim_size_to_factor)
        if dims is None:
            out["variance"] = zeros_state(p, xp)
        else:
            d1, d0 = dims
            out["row_var"] = zeros_state(p, xp, tuple(n for i, n in enumerate(p.shape) if i != d0))
            out["col_var"] = zeros_state(p, xp, tuple(n for i, n in enumerate(p.shape) if i != d1))
        return out

    def update(leaf, s, ctx):
        xp, g, t, pc = ctx.xp, leaf.u, ctx.t, leaf.p
        e1 = _eps1(eps, leaf, "optax", xp)
        if isinstance(t, int) and isinstance(beta2_decay, (int, float)):
            # optax forms the decay in float32 whatever the parameters' dtype: so do we, to follow it
            bhat = float(np.float32(1.0) - np.float32(t) ** np.float32(beta2_decay))
        else:
            bhat = 1.0 - xp.astype(t, xp.float32) ** beta2_decay
        bhat = scalar(bhat, pc, xp)
        g2 = g * g + e1
        dims = optax_factored_dims(tuple(g.shape), factored, min_dim_size_to_factor)
        if dims is not None:
            d1, d0 = dims
            vr = bhat * s.row_var + (1.0 - bhat) * xp.mean(g2, axis=d0)
            vc = bhat * s.col_var + (1.0 - bhat) * xp.mean(g2, axis=d1)
            rd1 = d1 - 1 if d1 > d0 else d1
            rcm = xp.mean(vr, axis=rd1, keepdims=True)
            rf = (vr / rcm) ** -0.5
            cf = vc ** -0.5
            U = g * xp.expand_dims(rf, axis=d0) * xp.expand_dims(cf, axis=d1)
            s = s._replace(row_var=vr, col_var=vc)
        else:
            v = bhat * s.variance + (1.0 - bhat) * g2
            U = g * v ** -0.5
            s = s._replace(variance=v)
        if not (isinstance(d, (int, float)) and math.isinf(d)):
            U = U / xp.maximum(xp.ones((), dtype=U.dtype), _rms(U, xp) / d)
        U = U * scalar(ctx.lr, pc, xp)
        if scale_parameter:
            U = U * xp.maximum(_rms(leaf.p0, xp), xp.full((), eps[1], dtype=pc.dtype))
        if use_mom:
            m = (1.0 - momentum) * U + momentum * s.exp_avg
            U = m
            s = s._replace(exp_avg=m)
        if active(weight_decay) and ctx.on("weight_decay"):
            U = U + weight_decay * pc
        return leaf._replace(u=U, scale=1.0), s

    return Transform(init, update)


@rule("Adafactor", lr=LR, beta2_decay=Scalar(None, 0, array=True), eps=Scalars(NonNegative(optional=True), 2),
      d=Scalar(1, None, finite=False, array=True), weight_decay=NonNegative(array=True), maximize=Bool(),
      convention=Choice(CONVENTIONS), multiply_by_parameter_scale=Bool(), min_dim_size_to_factor=Int(1),
      factored=Bool(), momentum=UnitInterval(optional=True, array=True), nan_policy=NAN_POLICY)
def adafactor(*, lr: ScalarT | Schedule = 1e-2, beta2_decay: float = -0.8,
              eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0, weight_decay: float = 0.0,
              maximize: bool = False, convention: str = "torch", multiply_by_parameter_scale: bool = True,
              min_dim_size_to_factor: int = 128, factored: bool = True, momentum: float | None = None,
              nan_policy: str = "raise") -> Rule:
    r"""Adafactor: Adam's second moment stored as row and column factors, no first moment.

    Default ``convention="torch"`` (torch.optim.Adafactor, torch 2.13): with
    :math:`\hat\beta_t = 1 - t^{c}` (``c = beta2_decay``), over the last two axes of a
    parameter with ``ndim >= 2``

    .. math::
        R \leftarrow \mathrm{lerp}(R, \overline{g^2}^{\,\text{row}}, 1-\hat\beta_t),\;
        C \leftarrow \mathrm{lerp}(C, \overline{g^2}^{\,\text{col}}, 1-\hat\beta_t),\;
        \hat V = \frac{RC}{\max(\bar R, \epsilon_1)},\;
        U = \frac{g}{\sqrt{\max(\hat V, \epsilon_1^2)}},

    .. math::
        p \leftarrow p(1 - lr\,\lambda) - \frac{\max(\epsilon_2, \mathrm{RMS}(p))\,\min(lr, 1/\sqrt t)}
        {\max(1, \mathrm{RMS}(U)/d)}\,U

    (other parameters keep the full ``V``; :math:`\epsilon_1` defaults to the dtype's
    machine epsilon).  ``convention="optax"`` is optax.adafactor's chain: factored only when
    the second-largest axis has ``min_dim_size_to_factor`` entries (over the two largest
    axes), ``g^2 + eps1`` (eps1 1e-30), no relative step (``lr`` multiplies the clipped update,
    then ``max(RMS(p), eps2)``), optional momentum (``exp_avg``, not debiased) and decay
    ``+ wd p`` not scaled by lr.  optax's ``learning_rate=None`` is ``lr=1``;
    ``decay_rate=0.8`` is ``beta2_decay=-0.8``; ``clipping_threshold`` is ``d``.
    Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
    ICML 2018.

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        torch: the cap of the relative step :math:`\min(lr, 1/\sqrt t)` and the decay's
        multiplier; optax: the multiplier of the update.
    beta2_decay : float <= 0
        Exponent :math:`c` of :math:`1 - \hat\beta_t = t^{c}`.
    eps : (float or None, float)
        :math:`(\epsilon_1, \epsilon_2)`: the floor of the second moment (None: the
        convention's default) and of the parameter RMS.
    d : float >= 1
        Clipping threshold of the update's RMS (``inf``: none).
    weight_decay : float >= 0
        torch: ``p (1 - lr wd)``; optax: ``+ wd p`` in the update.
    maximize : bool
        Ascend.
    convention : {"torch", "optax"}
        Whose update to reproduce.
    multiply_by_parameter_scale : bool
        Scale by ``max(eps2, RMS(p))`` (the relative step).
    min_dim_size_to_factor : int
        optax convention: factor only when the second-largest axis has this many entries.
    factored : bool
        optax convention: factor at all.
    momentum : float in [0, 1) or None
        optax convention: EMA of the update.
    nan_policy : {"raise", "skip", "ignore"}
        See :func:`adam`.

    Returns
    -------
    Rule
        Leaf state :class:`AdafactorLeaf`.

    Examples
    --------
    >>> import numpy as np
    >>> opt = adafactor(lr=1e-2)
    >>> W = np.ones((3, 4)); st = opt.init(W)
    >>> W, st = opt.step(W, np.full((3, 4), 0.5), st)
    >>> round(float(W[0, 0]), 6)        # relative step: RMS(W) * min(lr, 1) = 0.01
    0.99
    """
    if convention == "optax":
        body = scale_by_adafactor_optax(beta2_decay, eps, d, multiply_by_parameter_scale, min_dim_size_to_factor,
                                        factored, momentum, weight_decay)
        parts = ([T.flip_sign()] if maximize else []) + [body]
    else:
        parts = [T.flip_sign()] if maximize else []
        if active(weight_decay):
            parts.append(T.decay_weights(weight_decay))
        parts.append(scale_by_adafactor_torch(beta2_decay, eps, d, multiply_by_parameter_scale))
    kernel = None
    if convention == "torch":
        from . import _kernels

        kernel = _kernels.adafactor(beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay,
                                    maximize=maximize, scale_parameter=multiply_by_parameter_scale)
    return Rule(lr=lr, transform=chain(*parts), leaf=AdafactorLeaf, nan_policy=nan_policy, kernel=kernel)
