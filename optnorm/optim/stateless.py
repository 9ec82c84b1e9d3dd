"""Stateless matrix rules: swan (GradNorm + GradWhitening) and sinkgd (alternating row/column normalisation)."""
from __future__ import annotations

import math
from typing import NamedTuple

from .._lib.typing import Array, Scalar as ScalarT, Schedule
from .._lib import compat
from .._lib.api import public
from .._lib.roles import Bool, Choice, Float, Int, Positive
from . import transforms as T
from .base import LR, NAN_POLICY, MatrixRule, Rule, RuleArg, Transform, chain, no_state, rule


class EmptyLeaf(NamedTuple):
    """Leaf state of the stateless rules (:func:`swan`, :func:`sinkgd`): no buffers at all."""


def _whiten(x, xp, *, method, eps, ns_steps):
    """``(X X^T)^{-1/2} X`` on the short side: exact (eigh) or by a coupled Newton-Schulz inverse square root."""
    tall = x.shape[0] > x.shape[1]
    X = xp.matrix_transpose(x) if tall else x
    k = X.shape[0]
    S = X @ xp.matrix_transpose(X)
    I = compat.eye(k, like=X, xp=xp)
    if method == "eigh":
        w, V = xp.linalg.eigh(S)
        # pseudo-inverse square root: a row-centred G~ with more rows than columns has rank <= n - 1, so the
        # Gram matrix is singular; its null directions carry only rounding noise and are dropped.
        tol = xp.max(w) * (S.shape[-1] * float(xp.finfo(S.dtype).eps) * 10.0)
        w_ok = w > tol
        scale = xp.where(w_ok, 1.0 / xp.sqrt(T.clamp_min(w, 0.0, xp) + eps), xp.zeros_like(w))
        inv = (V * scale) @ xp.matrix_transpose(V)
    else:
        c = xp.linalg.vector_norm(S) + eps            # Y0 = S/|S|_F, Z0 = I; Y -> S^{1/2}/sqrt(c), Z -> (S/c)^{-1/2}
        Y, Z = S / c + eps / c * I, I
        for _ in range(ns_steps):
            W = 0.5 * (3.0 * I - Z @ Y)
            Y, Z = Y @ W, W @ Z
        inv = Z / xp.sqrt(c)
    out = inv @ X
    return xp.matrix_transpose(out) if tall else out


def whiten(eps: float, method: str, ns_steps: int, keep_norm: bool) -> Transform:
    """SWAN's direction: row-standardised (GradNorm), then whitened (GradWhitening) gradient; ``keep_norm``
    rescales it to the standardised gradient's Frobenius norm."""

    def update(leaf, s, ctx):
        xp = ctx.xp
        gn = T.standardize_rows(leaf.u, xp, eps=eps)
        dw = _whiten(gn, xp, method=method, eps=eps, ns_steps=ns_steps)
        if keep_norm:
            dw = dw * (T.fro_norm(gn, xp) / (T.fro_norm(dw, xp) + eps))
        return leaf._replace(u=dw), s

    return Transform(no_state, update)


@rule("SWAN", lr=LR, eps=Positive(), whitening=Choice(("eigh", "newton_schulz")), ns_steps=Int(1), keep_norm=Bool(),
      fallback=RuleArg(), nan_policy=NAN_POLICY)
def swan(*, lr: ScalarT | Schedule = 1e-3, eps: float = 1e-8, whitening: str = "eigh", ns_steps: int = 10,
         keep_norm: bool = False, fallback: Rule | None = None, nan_policy: str = "raise") -> Rule:
    r"""SWAN: stateless update from row-standardised, whitened gradients.

    SWAN (arXiv:2412.13148, ICML 2025; GradNorm + GradWhitening):

    .. math::
        \tilde G = (G - \mu_{row}\mathbf 1^\top) / s_{row},\qquad
        \Delta W = (\tilde G\tilde G^\top)^{-1/2}\tilde G,\qquad p \leftarrow p - lr\,\Delta W

    (row mean/std over each row's ``n`` entries; whitening on the short side, so
    ``Delta W`` is the polar factor ``U V^T`` of ``G~``).  ``whitening="eigh"``
    is exact (pseudo-inverse square root of the Gram matrix: a row-centred ``G~`` with
    ``m > n`` has rank ``<= n - 1`` and its null direction is dropped);
    ``"newton_schulz"`` (full-rank Gram, i.e. ``m < n``) uses ``ns_steps`` of the
    coupled Newton-Schulz inverse square root.  ``keep_norm`` rescales ``Delta W``
    to ``|G~|_F``.  The paper's code was not published; this follows its
    equations (step counts and normalisation of the iteration are our choice).

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size; a schedule is called with the number of steps taken (0 first).
    eps : float > 0
        Added to the row std and to the eigenvalues.
    whitening : {"eigh", "newton_schulz"}
        Exact inverse square root or the coupled Newton-Schulz iteration.
    ns_steps : int >= 1
        Iterations of ``"newton_schulz"``.
    keep_norm : bool
        Rescale to the standardised gradient's Frobenius norm.
    fallback : Rule, optional
        Rule for the parameters that are not 2-D (biases, gains); without one they raise, naming the parameter.
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise before anything changes, skip the step, or are not checked.

    Returns
    -------
    Rule
        ``init`` / ``step`` / ``step_``; leaf state ``EmptyLeaf``.

    Examples
    --------
    >>> import numpy as np
    >>> st = swan().init(np.ones((4, 6)))
    """
    return MatrixRule(lr=lr, transform=chain(whiten(eps, whitening, ns_steps, keep_norm), T.scale_by_lr()),
                      leaf=EmptyLeaf, fallback=fallback, nan_policy=nan_policy)


@public(G=Float("... m n"), n_iter=Int(1), eps=Positive())
def sinkhorn_normalize_gradient(G: Array, /, n_iter: int = 5, *, eps: float = 1e-8) -> Array:
    r"""SR-Sinkhorn normalisation: alternately scale rows to norm ``sqrt(n)`` and columns to ``sqrt(m)``.

    The fixed point has every row of norm ``sqrt(n)`` and every column of norm
    ``sqrt(m)`` (RMS 1).  "Gradient Multi-Normalization for Stateless and Scalable
    LLM Training" (arXiv:2502.06742, 2025).  The map is scale-invariant: ``G`` is
    first divided by its largest magnitude, so entries near the dtype's range neither
    overflow nor underflow; rows and columns whose norm is below ``eps`` (after that
    scaling) are divided by ``eps``.

    .. math::
        X \leftarrow \sqrt n\,\mathrm{diag}(\|X_{i,:}\|)^{-1}X,\qquad
        X \leftarrow \sqrt m\,X\,\mathrm{diag}(\|X_{:,j}\|)^{-1}

    Parameters
    ----------
    G : array (..., m, n)
        Gradient matrix (or a stack).
    n_iter : int >= 1
        Alternating normalisations.
    eps : float > 0
        Floor of the norms (after scaling by the largest magnitude).

    Returns
    -------
    array like ``G``
        The normalised gradient.

    Examples
    --------
    >>> import numpy as np
    >>> X = sinkhorn_normalize_gradient(np.arange(1.0, 7.0).reshape(2, 3))
    >>> round(float((X ** 2).mean()), 6)
    1.0
    """
    return _sinkhorn(G, n_iter, eps, compat.array_namespace(G))


def _sinkhorn(G, n_iter, eps, xp):
    m, n = G.shape[-2], G.shape[-1]
    s = xp.max(xp.abs(G), axis=(-2, -1), keepdims=True)
    X = G / xp.where(s > 0, s, xp.ones_like(s))
    for _ in range(n_iter):
        X = T.normalize_rows(X, xp, target=math.sqrt(n), eps=eps)
        X = T.normalize_cols(X, xp, target=math.sqrt(m), eps=eps)
    return X


def sinkhorn_normalize(n_iter: int, eps: float) -> Transform:
    """SinkGD's direction: the SR-Sinkhorn normalised gradient (:func:`sinkhorn_normalize_gradient`)."""

    def update(leaf, s, ctx):
        return leaf._replace(u=_sinkhorn(leaf.u, n_iter, eps, ctx.xp)), s

    return Transform(no_state, update)


@rule("SinkGD", lr=LR, n_iter=Int(1), eps=Positive(), fallback=RuleArg(), nan_policy=NAN_POLICY)
def sinkgd(*, lr: ScalarT | Schedule = 1e-3, n_iter: int = 5, eps: float = 1e-8, fallback: Rule | None = None,
           nan_policy: str = "raise") -> Rule:
    r"""SinkGD: stateless descent along the SR-Sinkhorn-normalised gradient.

    "Gradient Multi-Normalization for Stateless and Scalable LLM Training"
    (arXiv:2502.06742, 2025): ``X = G``; ``n_iter`` times
    ``X <- sqrt(n) diag(|X_i,:|)^{-1} X``, ``X <- sqrt(m) X diag(|X_:,j|)^{-1}``
    (norms floored at ``eps``); ``p -= lr X``.  No state (SGD memory).

    .. math::
        X \leftarrow \sqrt n\,\mathrm{diag}(\|X_{i,:}\|)^{-1}X,\quad
        X \leftarrow \sqrt m\,X\,\mathrm{diag}(\|X_{:,j}\|)^{-1},\quad p \leftarrow p - lr\,X

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size; a schedule is called with the number of steps taken (0 first).
    n_iter : int >= 1
        Alternating normalisations.
    eps : float > 0
        Floor of the row and column norms.
    fallback : Rule, optional
        Rule for the parameters that are not 2-D (biases, gains); without one they raise, naming the parameter.
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise before anything changes, skip the step, or are not checked.

    Returns
    -------
    Rule
        ``init`` / ``step`` / ``step_``; leaf state ``EmptyLeaf``.

    Examples
    --------
    >>> import numpy as np
    >>> st = sinkgd().init(np.ones((4, 6)))
    """
    return MatrixRule(lr=lr, transform=chain(sinkhorn_normalize(n_iter, eps), T.scale_by_lr()), leaf=EmptyLeaf,
                      fallback=fallback, nan_policy=nan_policy)
