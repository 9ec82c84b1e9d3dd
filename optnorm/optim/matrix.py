"""Rotated-basis Adam for matrices: conda (column-normalised Adam)."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._lib import compat, validate
from . import transforms as T
from .base import Ctx, MatrixRule, Rule, cast, check_betas, scalar, ssqrt

__all__ = ["conda"]


class CondaLeaf(NamedTuple):
    exp_avg: Any        # (m, n), original coordinates
    exp_avg_sq: Any     # (m, n), rotated coordinates (not re-rotated on refresh, as in the reference)
    proj: Any           # (n, n) if m >= n else (m, m): orthogonal basis of the short side


class Conda(MatrixRule):
    name = "conda"

    def __init__(self, *, betas, eps, weight_decay, update_proj_gap, scale, **kw):
        super().__init__(**kw)
        self.betas = check_betas(betas)
        self.eps = validate.check_nonnegative(eps, "eps")
        self.weight_decay = validate.check_nonnegative(weight_decay, "weight_decay")
        self.update_proj_gap = validate.check_int(update_proj_gap, "update_proj_gap", low=1)
        self.scale = validate.check_positive(scale, "scale")

    def init_matrix(self, p, *, name, xp):
        cd = compat.compute_dtype(p, xp)
        m, n = p.shape
        k = n if m >= n else m
        z = xp.zeros(p.shape, dtype=cd, device=compat.device(p))
        return CondaLeaf(z, xp.zeros(p.shape, dtype=cd, device=compat.device(p)),
                         xp.eye(k, dtype=cd, device=compat.device(p)))

    def _basis(self, m_, xp):
        U, _, Vh = xp.linalg.svd(m_, full_matrices=False)
        return Vh if m_.shape[0] >= m_.shape[1] else U

    def update_matrix(self, p, g, s, ctx: Ctx):
        xp, t = ctx.xp, ctx.t
        b1, b2 = self.betas
        cd = compat.compute_dtype(p, xp)
        pc, gc = cast(p, cd, xp), cast(g, cd, xp)
        lr = scalar(self.lr_at(t), pc, xp)
        tall = p.shape[0] >= p.shape[1]
        mom = b1 * s.exp_avg + (1.0 - b1) * gc
        if isinstance(t, int):
            P = self._basis(mom, xp) if (t - 1) % self.update_proj_gap == 0 else s.proj
        else:
            P = xp.where((t - 1) % self.update_proj_gap == 0, self._basis(mom, xp), s.proj)

        def proj(X):
            return X @ xp.matrix_transpose(P) if tall else xp.matrix_transpose(P) @ X

        gt, mt = proj(gc), proj(mom)
        v = T.ema_sq(s.exp_avg_sq, gt, b2)
        step = scalar(self.lr_at(t) * ssqrt(T.bias_correction(b2, t), xp) / T.bias_correction(b1, t), pc, xp)
        u = mt / (xp.sqrt(v) + self.eps)
        u = (u @ P if tall else P @ u) * self.scale
        pc = pc - step * u
        if self.weight_decay:
            pc = pc - lr * self.weight_decay * pc           # decay after the update, on the updated p
        return cast(pc, p.dtype, xp), CondaLeaf(mom, v, P)


def conda(*, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, update_proj_gap=2000, scale=1.0,
          fallback: Rule | None = None, nan_policy="raise") -> Rule:
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

    Examples
    --------
    >>> import numpy as np
    >>> st = conda(update_proj_gap=10).init(np.ones((5, 3)))
    """
    hyper = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, update_proj_gap=update_proj_gap,
                 scale=scale, fallback=fallback, nan_policy=nan_policy)
    return Conda(factory=conda, hyper=hyper, **hyper)
