"""Rotated-basis Adam for matrices: conda (column-normalised Adam)."""
from __future__ import annotations

from typing import Any, NamedTuple

from .._lib.typing import Scalar as ScalarT, Schedule
from .._lib import compat
from .._lib.roles import Int, NonNegative, Positive, Scalars, UnitInterval
from . import transforms as T
from ._common import bias_correction, ssqrt, zeros_state
from .base import LR, NAN_POLICY, MatrixRule, Rule, RuleArg, Transform, chain, rule


class CondaLeaf(NamedTuple):
    """Leaf state of :func:`conda`: momentum (original coordinates), second moment (rotated coordinates,
    not re-rotated on refresh, as in the reference) and the orthogonal basis of the short side."""
    exp_avg: Any        # (m, n)
    exp_avg_sq: Any     # (m, n)
    proj: Any           # (n, n) if m >= n else (m, m)


def scale_by_conda(b1: float, b2: float, eps: float, update_proj_gap: int, scale: float) -> Transform:
    """Conda's direction: Adam (HF eps placement) in the singular basis of the momentum, refreshed every
    ``update_proj_gap`` steps, rotated back and times ``scale``; step factor ``sqrt(1-b2^t)/(1-b1^t)``."""

    def init(p, ctx):
        xp = ctx.xp
        m, n = p.shape
        return {"exp_avg": zeros_state(p, xp), "exp_avg_sq": zeros_state(p, xp),
                "proj": compat.eye(n if m >= n else m, like=p, dtype=compat.compute_dtype(p, xp), xp=xp)}

    def basis(mom, xp):
        U, _, Vh = xp.linalg.svd(mom, full_matrices=False)
        return Vh if mom.shape[0] >= mom.shape[1] else U

    def update(leaf, s, ctx):
        xp, t, g = ctx.xp, ctx.t, leaf.u
        tall = g.shape[0] >= g.shape[1]
        mom = b1 * s.exp_avg + (1.0 - b1) * g
        if isinstance(t, int):
            P = basis(mom, xp) if (t - 1) % update_proj_gap == 0 else s.proj
        else:
            P = xp.where((t - 1) % update_proj_gap == 0, basis(mom, xp), s.proj)

        def rotate(X):
            return X @ xp.matrix_transpose(P) if tall else xp.matrix_transpose(P) @ X

        v = T.ema_sq(s.exp_avg_sq, rotate(g), b2)
        u = rotate(mom) / (xp.sqrt(v) + eps)
        u = (u @ P if tall else P @ u) * scale
        factor = leaf.scale * ssqrt(bias_correction(b2, t), xp) / bias_correction(b1, t)
        return leaf._replace(u=u, scale=factor), s._replace(exp_avg=mom, exp_avg_sq=v, proj=P)

    return Transform(init, update)


@rule("Conda", lr=LR, betas=Scalars(UnitInterval(), 2), eps=NonNegative(), weight_decay=NonNegative(),
      update_proj_gap=Int(1), scale=Positive(), fallback=RuleArg(), nan_policy=NAN_POLICY)
def conda(*, lr: ScalarT | Schedule = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.0, update_proj_gap: int = 2000, scale: float = 1.0, fallback: Rule | None = None,
          nan_policy: str = "raise") -> Rule:
    r"""Conda: Adam whose second moment lives in the singular basis of the momentum (column-normalised Adam).

    Conda, column-normalised Adam (2025; reference code jie040109/Conda).  For ``G`` of shape
    ``(m, n)``, every ``update_proj_gap`` steps ``P`` is the right (``m >= n``) or
    left singular basis of the momentum ``M`` (full square rotation, no rank cut);

    .. math::
        \tilde g = G P^\top,\; \tilde M = M P^\top,\; v \leftarrow \beta_2 v + (1-\beta_2)\tilde g^2,\;
        p \leftarrow p - lr\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,s\,\frac{\tilde M}{\sqrt v + \epsilon} P

    then ``p -= lr wd p`` (decay after the step, as the reference).  ``scale`` is
    the reference's per-group ``scale`` (its configs use 0.25).  With
    ``update_proj_gap=1``-style refresh and ``wd=0`` this is Adam (HF eps
    convention) in a rotated basis.

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size; a schedule is called with the number of steps taken (0 first).
    betas : (float, float)
        Moment decays, each in [0, 1).
    eps : float >= 0
        Added to the root.
    weight_decay : float >= 0
        Decoupled decay after the step.
    update_proj_gap : int >= 1
        Steps between recomputations of the singular basis ``P``.
    scale : float
        The reference's per-group multiplier :math:`s`.
    fallback : Rule, optional
        Rule for the parameters that are not 2-D (biases, gains); without one they raise, naming the parameter.
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise before anything changes, skip the step, or are not checked.

    Returns
    -------
    Rule
        ``init`` / ``step`` / ``step_``; leaf state ``CondaLeaf``.

    Examples
    --------
    >>> import numpy as np
    >>> st = conda(update_proj_gap=10).init(np.ones((5, 3)))
    """
    parts = [scale_by_conda(betas[0], betas[1], eps, update_proj_gap, scale), T.scale_by_lr()]
    if weight_decay:
        parts += [T.apply_update(), T.decay_weights(weight_decay)]
    return MatrixRule(lr=lr, transform=chain(*parts), leaf=CondaLeaf, fallback=fallback, nan_policy=nan_policy)
