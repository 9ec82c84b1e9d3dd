"""The (smoothed) Bures-Wasserstein loss between covariance matrices, batched, with its VJP."""
from __future__ import annotations

from .._lib import compat, ops, validate
from .._lib.vjp import unbroadcast
from .sqrtm import _cast, _check_pd_host, _check_spd_input, _eigh, _eye, _recon, _sym, _trace, _upcast

__all__ = ["bw_loss"]


def bw_loss(A, B, *, smoothing=0.0, check=True):
    """Smoothed Bures-Wasserstein loss ``L_tau(A, B) = d_BW^2(A + tau I, B)``.

    ``= tr A + n tau + tr B - 2 tr ((A + tau I)^{1/2} B (A + tau I)^{1/2})^{1/2}`` with ``tau = smoothing``.
    ``A`` is typically a model covariance ``W W^T`` that may be rank deficient, ``B`` the target covariance.
    For ``tau > 0`` the loss is smooth in ``A`` even where ``A`` is singular: Brechet, Papagiannouli, An,
    Montufar, "Critical Points and Convergence Analysis of Generative Deep Linear Networks Trained with
    Bures-Wasserstein Loss", ICML 2023.

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
    xp = validate.check_same_namespace(A=A, B=B)
    tau = validate.check_nonnegative(smoothing, "smoothing")
    validate.check_float(A, "A", xp)
    validate.check_square(A, "A")
    _check_spd_input(B, "B", xp, check=check)
    if A.shape[-1] != B.shape[-1]:
        raise ValueError(f"A has shape {tuple(A.shape)} and B has shape {tuple(B.shape)}: matrix sizes differ")
    validate.check_broadcastable("A", A.shape[:-2], "B", B.shape[:-2])
    Ac, dt = _upcast(A, xp)
    Bc, _ = _upcast(B, xp)
    n = A.shape[-1]
    eye = _eye(n, Ac, xp)
    As = _sym(Ac, xp) + tau * eye
    if check:
        validate.check_finite(A, "A", xp)
        validate.check_symmetric(A, "A", xp=xp)
        _check_pd_host(As, "A + smoothing * I")
    Bs = _sym(Bc, xp)
    w, U = _eigh(As, xp)
    h = xp.sqrt(w)
    H = _recon(U, h, xp)
    mu, V = _eigh(H @ Bs @ H, xp)
    val = _trace(As, xp) + _trace(Bs, xp) - 2 * xp.sum(xp.sqrt(mu), axis=-1)
    val = xp.maximum(val, 0.0)
    return _cast(val, dt, xp), (U, h, mu, V, A.shape, B.shape, dt)


def _bw_loss_bwd(res, dy):
    U, h, mu, V, a_shape, b_shape, dt = res
    xp = compat.array_namespace(U)
    g = (xp.astype(dy, U.dtype) if dy.dtype != U.dtype else dy)[..., None, None]
    eye = _eye(U.shape[-1], U, xp)
    Hi = _recon(U, 1.0 / h, xp)
    H = _recon(U, h, xp)
    s = xp.sqrt(mu)
    T = _sym(Hi @ _recon(V, s, xp) @ Hi, xp)
    Tinv = _sym(H @ _recon(V, 1.0 / s, xp) @ H, xp)
    dA = g * (eye - T)
    dB = g * (eye - Tinv)
    return _cast(unbroadcast(dA, a_shape, xp), dt, xp), _cast(unbroadcast(dB, b_shape, xp), dt, xp)


ops.register("spd.bw_loss", bw_loss, bw_loss_fwd, _bw_loss_bwd)
