"""Distances between SPD matrices: Bures-Wasserstein, affine-invariant (AIRM), log-Euclidean; batched, with VJPs."""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.typing import Array
from .._lib.api import public, vjp
from .._lib.dispatch import Dispatcher, numpy_float
from .._lib.roles import SPD, Bool
from .._lib.vjp import unbroadcast
from ._linalg import (bw2_refine, bw2_terms, bw2_trace, eye, floor, funm, funm_bwd, matrix_scale, mT, recon, sym,
                      trace, upcast)

_PAIR = dict(A=SPD(gate="check"), B=SPD(gate="check"), squared=Bool(), check=Bool())
_GUFUNC = ("(n,n),(n,n)->()", {"array_args": 2})


def _prep_pair(A, B):
    """``(xp, sym(A)/s, sym(B)/s, s, dtype)``: compute dtype, symmetrised, divided by the per-pair scale ``s``
    (geometric mean of the two largest entry magnitudes) so that products stay finite near the dtype's range."""
    xp = compat.array_namespace(A, B)
    Ac, dt = upcast(A, xp)
    Bc = compat.cast(B, Ac.dtype, xp)
    s = matrix_scale(xp, Ac, Bc)
    return xp, sym(Ac, xp) / s, sym(Bc, xp) / s, s, dt


def _finish(d2, squared, xp, dt):
    d2 = xp.maximum(d2, 0.0)
    d = d2 if squared else xp.sqrt(d2)
    return compat.cast(d, dt, xp)


def _dist_scale(d2, dy, squared, xp):
    """Cotangent of d^2 given the cotangent of the output (d or d^2); 0 at d = 0 (a subgradient)."""
    dy = compat.cast(dy, d2.dtype, xp)
    if squared:
        return dy
    d = xp.sqrt(xp.maximum(d2, 0.0))
    pos = d > 0
    return xp.where(pos, dy / (2 * xp.where(pos, d, xp.ones_like(d))), xp.zeros_like(d))


class DistanceRes(NamedTuple):
    """Residuals of the three distances: a factor/eigenbasis pair, the true d^2, the shapes."""
    F: Any          # bw, airm: Cholesky factor L of A/s; lem: (eigh of A/s, eigh of B/s)
    mu: Any         # bw: eig(L^T B L); airm: generalized eigenvalues; lem: None
    V: Any          # their eigenvectors; lem: D = log A - log B
    d2: Any         # the true d^2
    s: Any          # the scale the pair was divided by, (..., 1, 1)
    squared: bool
    a_shape: tuple
    b_shape: tuple
    dtype: Any


# ---------------------------------------------------------------------------- Bures-Wasserstein
_bw2 = Dispatcher("spd.bw_distance", serves="spd.bw_distance")


@_bw2.generic
def _bw2_generic(A, B, *, xp):
    """(d^2 by the trace formula, its error bound) for SPD A, B (symmetrised and scaled here)."""
    return bw2_trace(A, B, xp)


@_bw2.numba(when=lambda A, B, **kw: numpy_float(A, B) and A.shape[-1] <= 64)
def _bw2_numba(A, B, *, xp):
    """The kernel symmetrises and scales each pair itself (no extra passes over the batch), eight pairs per SIMD
    lane group (optnorm/_numba/spd_lanes.py)."""
    from .._numba import spd_lanes as nb

    shp = np.broadcast_shapes(A.shape, B.shape)
    d2, err = nb.bw_dist2_pairs_lanes(np.broadcast_to(A, shp), np.broadcast_to(B, shp))
    return d2.astype(A.dtype, copy=False), err.astype(A.dtype, copy=False)


def _cupy_small(A, B=None):
    """``when=`` for the CUDA kernels: CuPy float32/float64 stacks with n <= 32 (the kernels' local-array size)."""
    arrs = [a for a in (A, B) if a is not None]
    return (all(str(a.dtype) in ("float32", "float64") and a.dtype == arrs[0].dtype for a in arrs)
            and arrs[0].shape[-1] <= 32 and arrs[0].ndim >= 2)


@_bw2.cuda(when=lambda A, B, **kw: _cupy_small(A, B))
def _bw2_cuda(A, B, *, xp):
    import cupy

    from .._cuda import launch

    s = matrix_scale(xp, A, B)
    A, B = A / s, B / s
    shp = tuple(np.broadcast_shapes(A.shape, B.shape))
    n = shp[-1]
    a = cupy.ascontiguousarray(cupy.broadcast_to(A, shp)).reshape(-1, n, n)
    b = cupy.ascontiguousarray(cupy.broadcast_to(B, shp)).reshape(-1, n, n)
    count = a.shape[0]
    out = cupy.empty(count, dtype=A.dtype)
    err = cupy.empty(count, dtype=A.dtype)
    launch.elementwise("spd", "bw_dist2_batched", A.dtype, count, (a, b, out, err, count, np.int32(n)), block=64)
    s = s[..., 0, 0]
    return out.reshape(shp[:-2]) * s, err.reshape(shp[:-2]) * s


@public(**_PAIR, gufunc=_GUFUNC)
def bw_distance(A: Array, B: Array, *, squared: bool = False, check: bool = True) -> Array:
    r"""Bures-Wasserstein distance between SPD matrices (the 2-Wasserstein distance of centred Gaussians).

    .. math::

        d_{BW}^2(A, B) = \operatorname{tr}A + \operatorname{tr}B - 2\operatorname{tr}\bigl(A^{1/2}BA^{1/2}\bigr)^{1/2} = \operatorname{tr}A + \operatorname{tr}B - 2\sum_i\sqrt{\mu_i},\quad \mu = \operatorname{eig}(L^\top BL),\ A = LL^\top

    ``d^2(A, B) = tr A + tr B - 2 tr (A^{1/2} B A^{1/2})^{1/2}`` (Bhatia, Jain, Lim, "On the Bures-Wasserstein
    distance between positive definite matrices", Expo. Math. 2019).  Computed as
    ``tr A + tr B - 2 sum_i sqrt(mu_i)``, ``mu = eig(L^T B L)``, ``A = L L^T`` (one Cholesky and one symmetric
    eigenvalue problem) wherever that is accurate; where it is not (``A`` close to ``B``, or both
    ill-conditioned in the same directions: the subtraction cancels, or tiny ``mu_i`` lose half their digits
    under the square root) the pair is recomputed as a sum of squares, ``min_U ||L_A - L_B U||_F^2``
    through one SVD, so that ``d(A, A)`` is ~1e-16 at any condition number.  Both matrices are divided by
    a common scale first (``d^2`` is homogeneous), so entries near the dtype's range give finite
    results.  On NumPy float32/float64 with n <= 64 a Numba kernel (Cholesky, congruence, Householder
    tridiagonalisation, implicit QL; eight pairs per SIMD lane group, parallel over the batch) computes the trace
    formula and its error bound.

    VJP: ``grad_A d^2 = I - T``, ``grad_B d^2 = I - T^{-1}``, ``T = L^{-T} (L^T B L)^{1/2} L^{-1}`` the optimal
    transport map from ``A`` to ``B``; for ``squared=False`` the cotangent is divided by ``2 d`` (0 at d = 0).

    Parameters
    ----------
    A, B : array (..., n, n)
        SPD matrices, leading axes broadcast.
    squared : bool
        Return ``d^2`` instead of ``d``.
    check : bool
        Validate finiteness, symmetry and positive definiteness (host Cholesky); ``False`` skips it.

    Returns
    -------
    array (...)

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> float(spd.bw_distance(np.eye(2), 4 * np.eye(2), squared=True))
    2.0
    """
    xp = compat.array_namespace(A, B)
    Ac, dt = upcast(A, xp)
    Bc = compat.cast(B, Ac.dtype, xp)
    d2, err = _bw2(Ac, Bc, xp=xp)    # the trace formula: every path symmetrises and scales the pair itself
    return _finish(bw2_refine(d2, err, Ac, Bc, xp), squared, xp, dt)


def bw_distance_fwd(A, B, *, squared=False, check=True):
    xp, As, Bs, s, dt = _prep_pair(A, B)
    L = xp.linalg.cholesky(As)
    mu, V = xp.linalg.eigh(sym(mT(L, xp) @ Bs @ L, xp))
    d2, err = bw2_terms(trace(As, xp), trace(Bs, xp), mu, xp)
    d2 = bw2_refine(d2, err, As, Bs, xp) * s[..., 0, 0]      # the pair is scaled already: refine's scale is ~1
    res = DistanceRes(L, floor(mu, None, xp), V, d2, s, squared, tuple(A.shape), tuple(B.shape), dt)
    return _finish(d2, squared, xp, dt), res




def bw_distance_bwd(res: DistanceRes, dy):
    L, mu, V = res.F, res.mu, res.V
    xp = compat.array_namespace(L)
    g = _dist_scale(res.d2, dy, res.squared, xp)[..., None, None]
    I = eye(L.shape[-1], L, xp)
    Li = xp.linalg.inv(L)
    s = xp.sqrt(mu)
    T = mT(Li, xp) @ recon(V, s, xp) @ Li            # scale-free: the same map for (A, B) and (A/s, B/s)
    Tinv = L @ recon(V, 1.0 / s, xp) @ mT(L, xp)
    dA = g * (I - sym(T, xp))
    dB = g * (I - sym(Tinv, xp))
    return (compat.cast(unbroadcast(dA, res.a_shape, xp), res.dtype, xp),
            compat.cast(unbroadcast(dB, res.b_shape, xp), res.dtype, xp))


vjp(bw_distance, bw_distance_fwd, bw_distance_bwd, validate=True)


# ---------------------------------------------------------------------------- AIRM
@public(**_PAIR, gufunc=_GUFUNC)
def airm_distance(A: Array, B: Array, *, squared: bool = False, check: bool = True) -> Array:
    r"""Affine-invariant Riemannian distance ``||log(A^{-1/2} B A^{-1/2})||_F = sqrt(sum_i log^2 mu_i)``.

    .. math::

        d_{AIRM}(A, B) = \bigl\|\log(A^{-1/2}BA^{-1/2})\bigr\|_F = \Bigl(\sum_i \log^2\mu_i\Bigr)^{1/2},\quad \mu = \operatorname{eig}(L^{-1}BL^{-\top}),\ A = LL^\top

    ``mu`` are the generalized eigenvalues of ``(B, A)``, from ``eig(L^{-1} B L^{-T})``, ``A = L L^T``
    (Pennec, Fillard, Ayache, "A Riemannian framework for tensor computing", IJCV 2006).  Scale-invariant, so
    both matrices are divided by a common scale first.  Computed in the difference form
    ``eig(L^{-1} (B - A) L^{-T}) = mu - 1`` with ``log mu = log1p(mu - 1)``: ``d(A, A) = 0`` exactly, and close
    pairs keep their digits at condition number 1e8.  On NumPy float32/float64 with n <= 64 a Numba kernel
    (Cholesky, triangular substitutions, Householder tridiagonalisation, implicit QL; eight pairs per SIMD lane
    group, parallel over the batch) computes ``d^2``.
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
    xp = compat.array_namespace(A, B)
    Ac, dt = upcast(A, xp)
    Bc = compat.cast(B, Ac.dtype, xp)
    d2, low = _airm2(Ac, Bc, xp=xp)
    if check and low is not None and bool(xp.any(low)):
        raise ValueError(AIRM_RANGE)
    return _finish(d2, squared, xp, dt)


AIRM_RANGE = ("airm_distance: the generalized eigenvalues of (B, A) leave the dtype's range (A and B differ in "
               "magnitude by more than it spans, or are singular to working precision)")
_airm2 = Dispatcher("spd.airm_distance", serves="spd.airm_distance")


@_airm2.generic
def airm2_generic(A, B, *, xp):
    """(d^2, flag of eigenvalues below the smallest normal number) from the generalized eigenvalues only."""
    _, As, Bs, _, _ = _prep_pair(A, B)
    _, _, lg, _, low = _airm_eig(As, Bs, xp, vectors=False)
    return xp.sum(lg * lg, axis=-1), low


def _airm_eig(As, Bs, xp, vectors):
    """``(L, mu, log mu, V, low)`` for the scaled pair: ``As = L L^T``, ``mu`` the generalized eigenvalues of
    ``(Bs, As)`` floored as :func:`floor` does, V the eigenvectors (or None), ``low`` whether an eigenvalue is
    below the smallest normal number (None under tracing).  From the difference form
    ``L^{-1}(Bs - As)L^{-T} = C - I``, ``log mu = log1p(delta)``: no cancellation for close pairs (d(A, A) is
    exactly 0 and ~1e-13 for close pairs at condition number 1e8, where eig(C) gives 1e-10)."""
    L = xp.linalg.cholesky(As)
    D = sym(xp.linalg.solve(L, mT(xp.linalg.solve(L, Bs - As), xp)), xp)
    if vectors:
        delta, V = xp.linalg.eigh(D)
    else:
        delta, V = xp.linalg.eigvalsh(D), None
    mu = 1.0 + delta
    low = xp.any(mu < float(xp.finfo(mu.dtype).smallest_normal), axis=-1) if compat.is_concrete(mu) else None
    muf = floor(mu, None, xp)
    floored = muf > mu
    lg = xp.where(floored, xp.log(muf), xp.log1p(xp.where(floored, xp.zeros_like(delta), delta)))
    return L, muf, lg, V, low


@_airm2.numba(when=lambda A, B, **kw: numpy_float(A, B) and A.shape[-1] <= 64)
def _airm2_numba(A, B, *, xp):
    """Cholesky, two triangular substitutions, tridiagonal QL, eight pairs per SIMD lane group
    (optnorm/_numba/spd_lanes.py)."""
    from .._numba import spd_lanes as nb

    shp = np.broadcast_shapes(A.shape, B.shape)
    d2, flag = nb.airm_dist2_pairs_lanes(np.broadcast_to(A, shp), np.broadcast_to(B, shp))
    return d2.astype(A.dtype, copy=False), flag > 0


def airm_distance_fwd(A, B, *, squared=False, check=True):
    xp, As, Bs, s, dt = _prep_pair(A, B)
    L, mu, lg, V, low = _airm_eig(As, Bs, xp, vectors=True)
    if check and low is not None and bool(xp.any(low)):
        raise ValueError(AIRM_RANGE)
    d2 = xp.sum(lg * lg, axis=-1)
    res = DistanceRes(L, (mu, lg), V, d2, s, squared, tuple(A.shape), tuple(B.shape), dt)
    return _finish(d2, squared, xp, dt), res




def airm_distance_bwd(res: DistanceRes, dy):
    L, (mu, lg), V = res.F, res.mu, res.V
    xp = compat.array_namespace(L)
    g = _dist_scale(res.d2, dy, res.squared, xp)[..., None, None]
    W = xp.linalg.solve(mT(L, xp), V)            # for the scaled pair: W^T (A/s) W = I
    dB = g * recon(W, 2 * lg / mu, xp) / res.s    # d^2 is scale-invariant: grad at A is grad at A/s over s
    dA = -g * recon(W, 2 * lg, xp) / res.s
    return (compat.cast(unbroadcast(dA, res.a_shape, xp), res.dtype, xp),
            compat.cast(unbroadcast(dB, res.b_shape, xp), res.dtype, xp))


vjp(airm_distance, airm_distance_fwd, airm_distance_bwd, validate=True)


# ---------------------------------------------------------------------------- log-Euclidean
@public(**_PAIR, gufunc=_GUFUNC)
def lem_distance(A: Array, B: Array, *, squared: bool = False, check: bool = True) -> Array:
    r"""Log-Euclidean distance ``||log A - log B||_F`` (Arsigny, Fillard, Pennec, Ayache, SIAM J. Matrix Anal. 2007).

    .. math::

        d_{LEM}(A, B) = \|\log A - \log B\|_F

    Invariant under a common scaling, so both matrices are divided by a common scale first.
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
    xp, As, Bs, s, dt = _prep_pair(A, B)
    LA, ea = funm(As, "log", xp)
    LB, eb = funm(Bs, "log", xp)
    D = LA - LB
    d2 = xp.sum(D * D, axis=(-2, -1))
    return _finish(d2, squared, xp, dt), DistanceRes((ea, eb), None, D, d2, s, squared, tuple(A.shape),
                                                     tuple(B.shape), dt)




def lem_distance_bwd(res: DistanceRes, dy):
    (ea, eb), D = res.F, res.V
    xp = compat.array_namespace(D)
    g = _dist_scale(res.d2, dy, res.squared, xp)[..., None, None]
    dA = funm_bwd(ea[0], ea[1], 2 * g * D, "log", xp) / res.s
    dB = funm_bwd(eb[0], eb[1], -2 * g * D, "log", xp) / res.s
    return (compat.cast(unbroadcast(dA, res.a_shape, xp), res.dtype, xp),
            compat.cast(unbroadcast(dB, res.b_shape, xp), res.dtype, xp))


vjp(lem_distance, lem_distance_fwd, lem_distance_bwd, validate=True)
