"""dct_lowrank: run any rule in a DCT-projected low-rank subspace of each 2-D gradient (SVD-free)."""
from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np

from .._lib import compat, validate
from . import transforms as T
from .base import Ctx, Rule, cast, scalar

__all__ = ["dct_lowrank", "dct_matrix"]


class LowRankLeaf(NamedTuple):
    indices: Any     # (rank,) integer indices of the kept DCT basis vectors
    inner: Any       # the wrapped rule's leaf state, on the projected shape


@functools.lru_cache(maxsize=32)
def _dct_np(s: int) -> np.ndarray:
    j = np.arange(s)[:, None]
    k = np.arange(s)[None, :]
    Q = np.sqrt(2.0 / s) * np.cos(np.pi * k * (2 * j + 1) / (2 * s))
    Q[:, 0] /= np.sqrt(2.0)
    return Q


def dct_matrix(n: int, *, like=None, dtype=None):
    r"""Orthonormal DCT-II basis as columns: ``Q[j, k] = c_k cos(pi k (2j+1) / (2n))``, ``c_0 = 1/sqrt(n)``.

    ``A @ Q`` gives the DCT-II coefficients of each row of ``A``.  Cached per size.
    ``like``: an array whose library/device/dtype to use (NumPy float64 by default).

    Examples
    --------
    >>> import numpy as np
    >>> Q = dct_matrix(8)
    >>> bool(np.allclose(Q.T @ Q, np.eye(8)))
    True
    """
    n = validate.check_int(n, "n", low=1)
    Q = _dct_np(n)
    if like is None:
        return Q if dtype is None else Q.astype(dtype)
    xp = compat.array_namespace(like)
    return cast(compat.from_numpy_like(Q, like), like.dtype if dtype is None else dtype, xp)


class DCTLowRank(Rule):
    name = "dct_lowrank"

    def __init__(self, *, inner, rank, update_proj_gap, weight_decay, max_shape, ell_norm, fallback, lr, nan_policy,
                 factory, hyper):
        super().__init__(lr=lr, nan_policy=nan_policy, factory=factory, hyper=hyper)
        if not isinstance(inner, Rule):
            raise TypeError(f"inner must be an optnorm.optim rule (e.g. adam(...)), got {type(inner).__name__}")
        if fallback is not None and not isinstance(fallback, Rule):
            raise TypeError(f"fallback must be an optnorm.optim rule or None, got {type(fallback).__name__}")
        self.inner = inner
        self.fallback = fallback
        self.rank = validate.check_int(rank, "rank", low=1)
        self.update_proj_gap = validate.check_int(update_proj_gap, "update_proj_gap", low=1)
        self.weight_decay = validate.check_nonnegative(weight_decay, "weight_decay")
        self.max_shape = validate.check_int(max_shape, "max_shape", low=1)
        self.ell_norm = validate.check_in(ell_norm, (1, 2), "ell_norm")

    def _projected(self, p):
        return p.ndim == 2 and max(p.shape) < self.max_shape and self.rank < min(p.shape)

    def _low_shape(self, p):
        m, n = p.shape
        return (m, self.rank) if m >= n else (self.rank, n)

    def init_leaf(self, p, *, name, xp):
        if not self._projected(p):
            return (self.fallback or self.inner).init_leaf(p, name=name, xp=xp)
        low = xp.zeros(self._low_shape(p), dtype=compat.compute_dtype(p, xp), device=compat.device(p))
        idx = xp.arange(self.rank, device=compat.device(p))
        return LowRankLeaf(idx, self.inner.init_leaf(low, name=name, xp=xp))

    def _select(self, S, xp, tall):
        ax = 0 if tall else 1                           # score the kept basis vectors (columns of S when tall)
        sc = xp.sum(xp.abs(S), axis=ax) if self.ell_norm == 1 else xp.sum(S * S, axis=ax)
        order = xp.argsort(-sc, stable=True)
        return order[:self.rank]

    def update_leaf(self, p, g, s, ctx: Ctx):
        if not self._projected(p):
            return (self.fallback or self.inner).update_leaf(p, g, s, ctx)
        xp, t = ctx.xp, ctx.t
        cd = compat.compute_dtype(p, xp)
        pc, gc = cast(p, cd, xp), cast(g, cd, xp)
        tall = p.shape[0] >= p.shape[1]
        Q = dct_matrix(min(p.shape), like=pc)
        refresh = (t - 1) % self.update_proj_gap == 0
        if isinstance(t, int) and not refresh:
            idx = s.indices
        else:
            S = gc @ Q if tall else xp.matrix_transpose(Q) @ gc
            new_idx = self._select(S, xp, tall)
            idx = new_idx if isinstance(t, int) else xp.where(refresh, new_idx, s.indices)
        Qr = xp.take(Q, idx, axis=1)                   # (s, r)
        a = gc @ Qr if tall else xp.matrix_transpose(Qr) @ gc
        zero = xp.zeros(a.shape, dtype=cd, device=compat.device(pc))
        delta, inner_s = self.inner.update_leaf(zero, a, s.inner, ctx)   # inner rule's step from 0 = its update
        back = delta @ xp.matrix_transpose(Qr) if tall else Qr @ delta
        lr = scalar(self.inner.lr_at(t), pc, xp)
        if self.weight_decay:
            pc = T.decay_decoupled(pc, lr, self.weight_decay)
        return cast(pc + back, p.dtype, xp), LowRankLeaf(idx, inner_s)


def dct_lowrank(inner: Rule, *, rank: int, update_proj_gap: int = 1, weight_decay: float = 0.0,
                max_shape: int = 32000, ell_norm: int = 1, fallback: Rule | None = None,
                nan_policy="raise") -> Rule:
    r"""Run ``inner`` (e.g. ``adam``) on DCT-projected low-rank gradients of 2-D parameters (SVD-free).

    "SVD-Free Low-Rank Adaptive Gradient Optimization for Large Language Models",
    arXiv:2505.17967, 2025 (reference code IST-DASLab/ISTA-DASLab-Optimizers, ``fft_low_rank``).
    For ``G`` of shape ``(m, n)`` with ``m >= n`` (else on the left), with ``Q`` the
    orthonormal ``n x n`` DCT-II basis: every ``update_proj_gap`` steps keep the
    ``rank`` columns of ``G Q`` with the largest l1 (``ell_norm=1``) or l2 norms;
    ``a = G Q_r`` is fed to ``inner`` (whose state lives on ``(m, rank)``), and its
    update ``u`` is mapped back, ``p <- p (1 - lr wd) + u Q_r^T``.  With
    ``inner=adam(eps=eps)`` this is the paper's DCT-AdamW (torch eps placement).
    The inner rule's own weight decay acts on the (zero) projected variable, so put
    the decay in ``weight_decay`` here.  Parameters that are not 2-D, or have a side
    ``>= max_shape`` or ``<= rank``, use ``fallback`` (default: ``inner`` at full rank).
    The inner state is not rotated when the subspace changes (as the reference).

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.optim import adam
    >>> opt = dct_lowrank(adam(lr=1e-3), rank=2)
    >>> st = opt.init(np.ones((6, 4)))
    """
    hyper = dict(inner=inner, rank=rank, update_proj_gap=update_proj_gap, weight_decay=weight_decay,
                 max_shape=max_shape, ell_norm=ell_norm, fallback=fallback, nan_policy=nan_policy)
    if not isinstance(inner, Rule):
        raise TypeError(f"inner must be an optnorm.optim rule (e.g. adam(...)), got {type(inner).__name__}")
    lr = inner.lr
    return DCTLowRank(lr=lr, factory=dct_lowrank, hyper=hyper, **hyper)
