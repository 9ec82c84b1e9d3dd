"""The (smoothed) Bures-Wasserstein loss between covariance matrices, batched, with its VJP."""
from __future__ import annotations

from typing import Any, NamedTuple

from .._lib import compat
from .._lib.typing import Array
from .._lib.api import public, vjp
from .._lib.roles import SPD, Bool, NonNegative
from .._lib.vjp import unbroadcast
from ._linalg import bw2_refine, bw2_terms, eigh, eye, is_pd, matrix_scale, recon, sym, trace, upcast


class BWLossRes(NamedTuple):
    U: Any          # eigenvectors of (A + tau I) / s
    h: Any          # square roots of its eigenvalues
    mu: Any         # eigenvalues of H B H / s^2
    V: Any
    a_shape: tuple
    b_shape: tuple
    dtype: Any


@public(A=SPD(psd=True, gate="check"), B=SPD(gate="check"), smoothing=NonNegative(), check=Bool())
def bw_loss(A: Array, B: Array, *, smoothing: float = 0.0, check: bool = True) -> Array:
    r"""Smoothed Bures-Wasserstein loss ``L_tau(A, B) = d_BW^2(A + tau I, B)``.

    .. math::

        \ell(A, B) = d_{BW}^2(A + \tau I, B) = \operatorname{tr}(A + \tau I) + \operatorname{tr}B - 2\operatorname{tr}\bigl((A+\tau I)^{1/2}B(A+\tau I)^{1/2}\bigr)^{1/2}

    ``= tr A + n tau + tr B - 2 tr ((A + tau I)^{1/2} B (A + tau I)^{1/2})^{1/2}`` with ``tau = smoothing``.
    ``A`` is typically a model covariance ``W W^T`` that may be rank deficient, ``B`` the target covariance.
    For ``tau > 0`` the loss is smooth in ``A`` even where ``A`` is singular: Brechet, Papagiannouli, An,
    Montufar, "Critical Points and Convergence Analysis of Generative Deep Linear Networks Trained with
    Bures-Wasserstein Loss", ICML 2023.  The value is computed as :func:`bw_distance` computes ``d^2``
    (trace formula where it is accurate, the Procrustes form where it cancels, as it does when training has
    brought ``A`` close to ``B``), on the pair divided by a common scale.

    VJP: ``grad_A = I - T``, ``grad_B = I - T^{-1}`` with ``T = H^{-1} (H B H)^{1/2} H^{-1}``, ``H = (A+tau I)^{1/2}``
    (the optimal transport map from ``A + tau I`` to ``B``); finite whenever ``A + tau I`` and ``B`` are positive
    definite.  For ``W``-parametrised models chain with ``grad_W = (grad_A + grad_A^T) W``.

    Parameters
    ----------
    A : array (..., n, n)
        Symmetric positive semidefinite; ``A + smoothing I`` must be positive definite.
    B : array (..., n, n)
        SPD target (leading axes broadcast with A).
    smoothing : float >= 0
    check : bool
        Validate the inputs (host eigenvalues/Cholesky); ``False`` skips it.

    Returns
    -------
    array (...)

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> W = np.array([[1.0], [0.0]])                     # rank-1 model covariance W W^T
    >>> round(float(spd.bw_loss(W @ W.T, np.eye(2), smoothing=0.1)), 6)
    0.469927
    """
    return bw_loss_fwd(A, B, smoothing=smoothing, check=check)[0]


def bw_loss_fwd(A, B, *, smoothing=0.0, check=True):
    xp = compat.array_namespace(A, B)
    tau = float(smoothing)
    Ac, dt = upcast(A, xp)
    Bc = compat.cast(B, Ac.dtype, xp)
    n = A.shape[-1]
    As = sym(Ac, xp) + tau * eye(n, Ac, xp)
    if check and not is_pd(As):
        raise ValueError("bw_loss: A + smoothing * I must be positive definite (A is singular: pass smoothing > 0)")
    s = matrix_scale(xp, As, Bc)
    As = As / s
    Bs = sym(Bc, xp) / s
    w, U = eigh(As, xp)
    h = xp.sqrt(w)
    H = recon(U, h, xp)
    mu, V = eigh(H @ Bs @ H, xp)
    val, err = bw2_terms(trace(As, xp), trace(Bs, xp), mu, xp)
    val = bw2_refine(val, err, As, Bs, xp) * s[..., 0, 0]
    return compat.cast(val, dt, xp), BWLossRes(U, h, mu, V, tuple(A.shape), tuple(B.shape), dt)




def bw_loss_bwd(res: BWLossRes, dy):
    U, h, mu, V = res.U, res.h, res.mu, res.V
    xp = compat.array_namespace(U)
    g = compat.cast(dy, U.dtype, xp)[..., None, None]
    I = eye(U.shape[-1], U, xp)
    Hi = recon(U, 1.0 / h, xp)
    H = recon(U, h, xp)
    s = xp.sqrt(mu)
    T = sym(Hi @ recon(V, s, xp) @ Hi, xp)              # scale-free: the same map for the scaled pair
    Tinv = sym(H @ recon(V, 1.0 / s, xp) @ H, xp)
    dA = g * (I - T)
    dB = g * (I - Tinv)
    return (compat.cast(unbroadcast(dA, res.a_shape, xp), res.dtype, xp),
            compat.cast(unbroadcast(dB, res.b_shape, xp), res.dtype, xp))


vjp(bw_loss, bw_loss_fwd, bw_loss_bwd, validate=True)
