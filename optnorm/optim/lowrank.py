"""dct_lowrank: run any rule in a DCT-projected low-rank subspace of each 2-D gradient (SVD-free)."""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np

from .._lib.typing import Array
from .._lib import compat
from .._lib.api import public
from .._lib.roles import Choice, Float, Int, NonNegative, Option
from . import transforms as T
from ._common import zeros_state
from .base import NAN_POLICY, Rule, RuleArg, Transform, chain, rule


class LowRankLeaf(NamedTuple):
    """Leaf state of a projected parameter of :func:`dct_lowrank`: the kept DCT indices and the inner rule's
    state on the projected shape."""
    indices: Any     # (rank,) integer indices of the kept DCT basis vectors
    inner: Any       # the wrapped rule's leaf state, on the projected shape


@functools.lru_cache(maxsize=32)
def _dct_np(s: int) -> np.ndarray:
    j = np.arange(s)[:, None]
    k = np.arange(s)[None, :]
    Q = np.sqrt(2.0 / s) * np.cos(np.pi * k * (2 * j + 1) / (2 * s))
    Q[:, 0] /= np.sqrt(2.0)
    return Q


@public(n=Int(1), like=Float(optional=True), dtype=Option())
def dct_matrix(n: int, *, like: Array | None = None, dtype: Any = None) -> Array:
    r"""Orthonormal DCT-II basis as columns: ``Q[j, k] = c_k cos(pi k (2j+1) / (2n))``, ``c_0 = 1/sqrt(n)``.

    ``A @ Q`` gives the DCT-II coefficients of each row of ``A``.  Cached per size.
    ``like``: an array whose library/device/dtype to use (NumPy float64 by default).

    .. math::
        Q_{jk} = c_k \cos\frac{\pi k (2j + 1)}{2n},\qquad c_0 = \sqrt{1/n},\ c_k = \sqrt{2/n}

    Parameters
    ----------
    n : int >= 1
        Size of the basis.
    like : array, optional
        Array whose library, device and dtype the result takes.
    dtype : dtype, optional
        Result dtype (default ``like``'s, else float64).

    Returns
    -------
    array (n, n)
        Orthonormal DCT-II basis as columns.

    Examples
    --------
    >>> import numpy as np
    >>> Q = dct_matrix(8)
    >>> bool(np.allclose(Q.T @ Q, np.eye(8)))
    True
    """
    Q = _dct_np(n)
    if like is None:
        return Q if dtype is None else Q.astype(dtype)
    return compat.cast(compat.from_numpy_like(Q, like), like.dtype if dtype is None else dtype)


def project_dct(inner: Rule, rank: int, update_proj_gap: int, ell_norm: int) -> Transform:
    """Run ``inner`` on the gradient projected onto ``rank`` DCT basis vectors of the short side (chosen by
    the largest l1/l2 scores every ``update_proj_gap`` steps) and map its update back.  State fields
    ``indices`` and ``inner``."""

    def low_shape(p):
        m, n = p.shape
        return (m, rank) if m >= n else (rank, n)

    def init(p, ctx):
        xp = ctx.xp
        low = zeros_state(p, xp, low_shape(p))
        return {"indices": compat.arange(rank, like=p, xp=xp), "inner": inner.init_leaf(low, name=ctx.name, xp=xp)}

    def select(S, xp, tall):
        ax = 0 if tall else 1                           # score the kept basis vectors (columns of S when tall)
        sc = xp.sum(xp.abs(S), axis=ax) if ell_norm == 1 else xp.sum(S * S, axis=ax)
        return xp.argsort(-sc, stable=True)[:rank]

    def update(leaf, s, ctx):
        xp, t, g = ctx.xp, ctx.t, leaf.u
        tall = g.shape[0] >= g.shape[1]
        Q = dct_matrix(min(g.shape), like=g)
        refresh = (t - 1) % update_proj_gap == 0
        if isinstance(t, int) and not refresh:
            idx = s.indices
        else:
            new_idx = select(g @ Q if tall else xp.matrix_transpose(Q) @ g, xp, tall)
            idx = new_idx if isinstance(t, int) else xp.where(refresh, new_idx, s.indices)
        Qr = xp.take(Q, idx, axis=1)                   # (s, r)
        a = g @ Qr if tall else xp.matrix_transpose(Qr) @ g
        zero = compat.zeros(a.shape, like=a, xp=xp)
        delta, inner_s = inner.update_leaf(zero, a, s.inner, ctx)   # the inner rule's step from 0 is its update
        back = delta @ xp.matrix_transpose(Qr) if tall else Qr @ delta
        return leaf._replace(u=-back), s._replace(indices=idx, inner=inner_s)

    return Transform(init, update)


@rule("DCTLowRank", inner=RuleArg(optional=False), rank=Int(1), update_proj_gap=Int(1), weight_decay=NonNegative(),
      max_shape=Int(1), ell_norm=Choice((1, 2)), fallback=RuleArg(), nan_policy=NAN_POLICY,
      example=lambda rng, dtype: ((_default_inner(),), {"rank": 2}))
def dct_lowrank(inner: Rule, *, rank: int, update_proj_gap: int = 1, weight_decay: float = 0.0, max_shape: int = 32000,
                ell_norm: int = 1, fallback: Rule | None = None, nan_policy: str = "raise") -> Rule:
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

    .. math::
        a = G Q_r,\quad (u, s) \leftarrow \mathrm{inner}(a, s),\quad p \leftarrow p(1 - lr\,\lambda) + u Q_r^\top

    Parameters
    ----------
    inner : Rule
        The rule run on the projected ``(m, rank)`` gradients (e.g. ``adam(...)``).
    rank : int >= 1
        Number of DCT columns kept.
    update_proj_gap : int >= 1
        Steps between re-selections of the columns.
    weight_decay : float >= 0
        Decoupled decay of the full weight ``p (1 - lr wd)``.
    max_shape : int
        Parameters with a side this long or longer use ``fallback``.
    ell_norm : {1, 2}
        Norm ranking the DCT columns.
    fallback : Rule, optional
        Rule for other parameters (default: ``inner`` at full rank).
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise before anything changes, skip the step, or are not checked.

    Returns
    -------
    Rule
        ``init`` / ``step`` / ``step_``; leaf state ``LowRankLeaf``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.optim import adam
    >>> opt = dct_lowrank(adam(lr=1e-3), rank=2)
    >>> st = opt.init(np.ones((6, 4)))
    """
    parts = [project_dct(inner, rank, update_proj_gap, ell_norm)]
    if weight_decay:
        parts.append(T.decay_weights(weight_decay))

    def projected(p):
        return p.ndim == 2 and max(p.shape) < max_shape and rank < min(p.shape)

    return Rule(lr=inner.lr, transform=chain(*parts), leaf=LowRankLeaf, accepts=projected,
                fallback=fallback or inner, nan_policy=nan_policy)


def _default_inner():
    from .adam import adam

    return adam(lr=1e-2)
