"""Distances between SPD matrices: Bures-Wasserstein, affine-invariant (AIRM), log-Euclidean; batched, with VJPs."""
from __future__ import annotations

import numpy as np

from .._lib import compat, ops, validate
from .._lib.dispatch import Dispatcher, numpy_float
from .sqrtm import (_cast, _check_pd_host, _check_spd_input, _floor, _funm, _funm_bwd, _mT, _recon, _sym,
                    _trace, _upcast)
from .._lib.vjp import unbroadcast

__all__ = ["bw_distance", "airm_distance", "lem_distance"]


def _prep_pair(A, B, check, need_pd=True):
    xp = validate.check_same_namespace(A=A, B=B)
    _check_spd_input(A, "A", xp, check=check, need_pd=need_pd)
    _check_spd_input(B, "B", xp, check=check, need_pd=need_pd)
    if A.shape[-1] != B.shape[-1]:
        raise ValueError(f"A has shape {tuple(A.shape)} and B has shape {tuple(B.shape)}: matrix sizes differ")
    validate.check_broadcastable("A", A.shape[:-2], "B", B.shape[:-2])
    Ac, dt = _upcast(A, xp)
    Bc, _ = _upcast(B, xp)
    if Bc.dtype != Ac.dtype:
        raise TypeError(f"A has dtype {A.dtype} and B has dtype {B.dtype}: use one dtype")
    return xp, _sym(Ac, xp), _sym(Bc, xp), dt


def _finish(d2, squared, xp, dt):
    d2 = xp.maximum(d2, 0.0)
    d = d2 if squared else xp.sqrt(d2)
    return _cast(d, dt, xp)


def _dist_scale(d2, dy, squared, xp):
    """Cotangent of d^2 given the cotangent of the output (d or d^2); 0 at d = 0 (a subgradient)."""
    dy = xp.astype(dy, d2.dtype) if dy.dtype != d2.dtype else dy
    if squared:
        return dy
    d = xp.sqrt(xp.maximum(d2, 0.0))
    pos = d > 0
    return xp.where(pos, dy / (2 * xp.where(pos, d, xp.ones_like(d))), xp.zeros_like(d))


# ---------------------------------------------------------------------------- Bures-Wasserstein
_bw2 = Dispatcher("spd.bw_distance")


@_bw2.generic
def _bw2_generic(A, B, *, xp):
    L = xp.linalg.cholesky(A)
    mu = xp.linalg.eigvalsh(_sym(_mT(L, xp) @ B @ L, xp))
    return _trace(A, xp) + _trace(B, xp) - 2 * xp.sum(xp.sqrt(xp.maximum(mu, 0.0)), axis=-1)


@_bw2.numba(when=lambda A, B, **kw: numpy_float(A, B) and A.shape[-1] <= 64)
def _bw2_numba(A, B, *, xp):
    from .._numba import spd as nb

    shp = np.broadcast_shapes(A.shape, B.shape)
    d2 = nb.bw_dist2_batched(np.broadcast_to(A, shp), np.broadcast_to(B, shp))
    return d2.astype(A.dtype, copy=False)


def _cupy_small(A, B=None):
    """``when=`` for the CUDA kernels: CuPy float32/float64 stacks with n <= 32 (the kernels' local-array size)."""
    arrs = [a for a in (A, B) if a is not None]
    return (all(str(a.dtype) in ("float32", "float64") and a.dtype == arrs[0].dtype for a in arrs)
            and arrs[0].shape[-1] <= 32 and arrs[0].ndim >= 2)


@_bw2.cuda(when=lambda A, B, **kw: _cupy_small(A, B))
def _bw2_cuda(A, B, *, xp):
    import cupy

    from .._cuda import loader

    shp = tuple(np.broadcast_shapes(A.shape, B.shape))
    n = shp[-1]
    a = cupy.ascontiguousarray(cupy.broadcast_to(A, shp)).reshape(-1, n, n)
    b = cupy.ascontiguousarray(cupy.broadcast_to(B, shp)).reshape(-1, n, n)
    count = a.shape[0]
    out = cupy.empty(count, dtype=A.dtype)
    if count:
        k = loader.kernel("spd", f"bw_dist2_batched<{loader.dtype_name(A.dtype)}>")
        threads = 64
        k(((count + threads - 1) // threads,), (threads,), (a, b, out, np.int64(count), np.int32(n)))
    return out.reshape(shp[:-2])


def bw_distance(A, B, *, squared=False, check=True):
    """Bures-Wasserstein distance between SPD matrices (the 2-Wasserstein distance of centred Gaussians).

    ``d^2(A, B) = tr A + tr B - 2 tr (A^{1/2} B A^{1/2})^{1/2} = tr A + tr B - 2 sum_i sqrt(mu_i)`` with
    ``mu = eig(L^T B L)``, ``A = L L^T`` (one Cholesky and one symmetric eigenvalue problem; the square of the
    result is clamped at 0, so ``d(A, A) = 0`` without NaN).  Bhatia, Jain, Lim, "On the Bures-Wasserstein
    distance between positive definite matrices", Expo. Math. 2019.  On NumPy float32/float64 with n <= 64 a
    Numba kernel (Cholesky, congruence, Householder tridiagonalisation, implicit QL, parallel over the batch)
    computes it.

    VJP: ``grad_A d^2 = I - T``, ``grad_B d^2 = I - T^{-1}``, ``T = L^{-T} (L^T B L)^{1/2} L^{-1}`` the optimal
    transport map from ``A`` to ``B``; for ``squared=False`` the cotangent is divided by ``2 d`` (0 at d = 0).

    Parameters
    ----------
    A, B : array (..., n, n)
        SPD matrices, leading axes broadcast.
    squared : bool
        Return ``d^2`` instead of ``d``.
    check : bool
        Validate symmetry/positive definiteness (host Cholesky).

    Returns
    -------
    array (...)

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> float(spd.bw_distance(np.eye(2), 4 * np.eye(2), squared=True))
    2.0
    """
    xp = validate.check_same_namespace(A=A, B=B)
    # the Numba kernel Cholesky-factors both A and B and returns NaN where one is not positive definite, so the
    # host positive-definiteness check runs only to report such a failure (saves a pass over the batch)
    lazy_pd = check and _bw2.path_for(A, B, xp=xp) == "numba"
    xp, As, Bs, dt = _prep_pair(A, B, check, need_pd=not lazy_pd)
    d2 = _bw2(As, Bs, xp=xp)
    if lazy_pd and bool(np.isnan(d2).any()):
        _check_pd_host(A, "A")
        _check_pd_host(B, "B")
    return _finish(d2, squared, xp, dt)


def bw_distance_fwd(A, B, *, squared=False, check=True):
    xp, As, Bs, dt = _prep_pair(A, B, check)
    L = xp.linalg.cholesky(As)
    mu, V = xp.linalg.eigh(_sym(_mT(L, xp) @ Bs @ L, xp))
    mu = _floor(mu, None, xp)
    d2 = _trace(As, xp) + _trace(Bs, xp) - 2 * xp.sum(xp.sqrt(mu), axis=-1)
    return _finish(d2, squared, xp, dt), (L, mu, V, d2, squared, A.shape, B.shape, dt)


def _bw_distance_bwd(res, dy):
    L, mu, V, d2, squared, a_shape, b_shape, dt = res
    xp = compat.array_namespace(L)
    g = _dist_scale(d2, dy, squared, xp)[..., None, None]
    n = L.shape[-1]
    eye = xp.eye(n, dtype=L.dtype, device=compat.device(L))
    Li = xp.linalg.inv(L)
    s = xp.sqrt(mu)
    T = _mT(Li, xp) @ _recon(V, s, xp) @ Li
    Tinv = L @ _recon(V, 1.0 / s, xp) @ _mT(L, xp)
    dA = g * (eye - _sym(T, xp))
    dB = g * (eye - _sym(Tinv, xp))
    return _cast(unbroadcast(dA, a_shape, xp), dt, xp), _cast(unbroadcast(dB, b_shape, xp), dt, xp)


ops.register("spd.bw_distance", bw_distance, bw_distance_fwd, _bw_distance_bwd)


# ---------------------------------------------------------------------------- AIRM
def airm_distance(A, B, *, squared=False, check=True):
    """Affine-invariant Riemannian distance ``||log(A^{-1/2} B A^{-1/2})||_F = sqrt(sum_i log^2 mu_i)``.

    ``mu`` are the generalized eigenvalues of ``(B, A)``, from ``eig(L^{-1} B L^{-T})``, ``A = L L^T``
    (Pennec, Fillard, Ayache, "A Riemannian framework for tensor computing", IJCV 2006).
    VJP: with ``W = L^{-T} V`` (``W^T A W = I``), ``grad_B d^2 = W diag(2 log mu / mu) W^T`` and
    ``grad_A d^2 = -W diag(2 log mu) W^T``.

    Parameters
    ----------
    A, B : array (..., n, n)
        SPD matrices, leading axes broadcast.
    squared : bool
    check : bool

    Returns
    -------
    array (...)

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> round(float(spd.airm_distance(np.eye(2), np.e * np.eye(2))), 6)
    1.414214
    """
    return airm_distance_fwd(A, B, squared=squared, check=check)[0]


def airm_distance_fwd(A, B, *, squared=False, check=True):
    xp, As, Bs, dt = _prep_pair(A, B, check)
    L = xp.linalg.cholesky(As)
    C = xp.linalg.solve(L, _mT(xp.linalg.solve(L, Bs), xp))  # L^{-1} B L^{-T}
    mu, V = xp.linalg.eigh(_sym(C, xp))
    mu = _floor(mu, None, xp)
    lg = xp.log(mu)
    d2 = xp.sum(lg * lg, axis=-1)
    return _finish(d2, squared, xp, dt), (L, mu, V, d2, squared, A.shape, B.shape, dt)


def _airm_bwd(res, dy):
    L, mu, V, d2, squared, a_shape, b_shape, dt = res
    xp = compat.array_namespace(L)
    g = _dist_scale(d2, dy, squared, xp)[..., None, None]
    W = xp.linalg.solve(_mT(L, xp), V)
    lg = xp.log(mu)
    dB = g * _recon(W, 2 * lg / mu, xp)
    dA = -g * _recon(W, 2 * lg, xp)
    return _cast(unbroadcast(dA, a_shape, xp), dt, xp), _cast(unbroadcast(dB, b_shape, xp), dt, xp)


ops.register("spd.airm_distance", airm_distance, airm_distance_fwd, _airm_bwd)


# ---------------------------------------------------------------------------- log-Euclidean
def lem_distance(A, B, *, squared=False, check=True):
    """Log-Euclidean distance ``||log A - log B||_F`` (Arsigny, Fillard, Pennec, Ayache, SIAM J. Matrix Anal. 2007).

    VJP: ``grad_A d^2 = 2 Dlog_A[D]``, ``grad_B d^2 = -2 Dlog_B[D]``, ``D = log A - log B``, with the
    Daleckii-Krein derivative of the matrix logarithm (divided differences ``log1p``-stable).

    Parameters
    ----------
    A, B : array (..., n, n)
    squared : bool
    check : bool

    Returns
    -------
    array (...)

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> round(float(spd.lem_distance(np.eye(2), np.e * np.eye(2))), 6)
    1.414214
    """
    return lem_distance_fwd(A, B, squared=squared, check=check)[0]


def lem_distance_fwd(A, B, *, squared=False, check=True):
    xp, As, Bs, dt = _prep_pair(A, B, check)
    LA, ea = _funm(As, "log", xp)
    LB, eb = _funm(Bs, "log", xp)
    D = LA - LB
    d2 = xp.sum(D * D, axis=(-2, -1))
    return _finish(d2, squared, xp, dt), (ea, eb, D, d2, squared, A.shape, B.shape, dt)


def _lem_bwd(res, dy):
    ea, eb, D, d2, squared, a_shape, b_shape, dt = res
    xp = compat.array_namespace(D)
    g = _dist_scale(d2, dy, squared, xp)[..., None, None]
    dA = _funm_bwd(ea[0], ea[1], 2 * g * D, "log", xp)
    dB = _funm_bwd(eb[0], eb[1], -2 * g * D, "log", xp)
    return _cast(unbroadcast(dA, a_shape, xp), dt, xp), _cast(unbroadcast(dB, b_shape, xp), dt, xp)


ops.register("spd.lem_distance", lem_distance, lem_distance_fwd, _lem_bwd)
