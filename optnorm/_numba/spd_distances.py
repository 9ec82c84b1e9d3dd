"""Numba kernels for SPD distances over many pairs: the affine-invariant distance of pairs, and pairwise
distance matrices (AIRM, Bures-Wasserstein, Euclidean distances of feature vectors for the log-Euclidean and
log-Cholesky metrics), parallel over the batch, no LAPACK call per pair.

AIRM, one pair: ``A/a = L L^T`` (Cholesky, ``a = max|A|``), ``C = L^{-1} (B/b) L^{-T}`` by two triangular
substitutions, the eigenvalues of ``C`` by Householder tridiagonalisation and root-free implicit QL
(:func:`optnorm._numba.spd._tridiag_eigvals`), then ``d^2 = sum_i (log mu_i + log(b/a))^2``: each matrix is
divided by its own largest entry, so inputs near the dtype's range (and pairs 1e300 apart) stay finite, the
distance being scale-invariant up to the ``log(b/a)`` shift.  Eigenvalues are floored as the generic path
floors them (``n eps max mu``) and a flag reports those below the smallest normal number (the caller raises).

A pairwise matrix factors each row matrix once (its Cholesky factor is reused for every column), computes only
``j > i`` for ``Y = X`` and interleaves rows across threads (row ``i`` has ``m - i`` pairs).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from ._rows import jit
from .spd import _FAST, _bw_one, _tridiag_eigvals

__all__ = ["airm_dist2_pairs", "airm_dist2_pairwise", "bw_dist2_pairwise", "sqeuclidean_pairwise"]

_TINY = 2.2250738585072014e-308
_LOG_TINY = math.log(_TINY)
_EPS = 2.220446049250313e-16


@jit(parallel=False, fastmath=_FAST)
def _maxabs(A):
    n = A.shape[0]
    s = 0.0
    for i in range(n):
        for j in range(n):
            s = max(s, abs(A[i, j]))
    if not s > 0.0 or not s < np.inf:
        s = 1.0
    return s


@jit(parallel=False, fastmath=_FAST)
def _chol(A, isc, L):
    """Lower Cholesky factor of ``sym(A) * isc`` into ``L``; False when not positive definite."""
    n = A.shape[0]
    for i in range(n):
        for j in range(n):
            L[i, j] = 0.0
    for j in range(n):
        s = A[j, j] * isc
        for k in range(j):
            s -= L[j, k] * L[j, k]
        if not s > 0.0:
            return False
        ljj = math.sqrt(s)
        L[j, j] = ljj
        inv = 1.0 / ljj
        for i in range(j + 1, n):
            t = 0.5 * (A[i, j] + A[j, i]) * isc
            for k in range(j):
                t -= L[i, k] * L[j, k]
            L[i, j] = t * inv
    return True


@jit(parallel=False, fastmath=_FAST)
def _whiten(L, B, isc, A, diff, T, M):
    """``M = L^{-1} S L^{-T}`` (symmetric), ``S = sym(B - A) isc`` (``diff``) or ``sym(B) isc``, by row-oriented
    forward substitutions (contiguous inner loops); ``T`` is scratch.  The difference is taken before any
    product (exactly 0 for B = A, whatever the compiler contracts into FMAs)."""
    n = L.shape[0]
    h = 0.5 * isc
    # T = L^{-1} S: row i of T = (S[i, :] - sum_{k<i} L[i, k] T[k, :]) / L[i, i]
    for i in range(n):
        if diff:
            for j in range(n):
                T[i, j] = ((B[i, j] - A[i, j]) + (B[j, i] - A[j, i])) * h
        else:
            for j in range(n):
                T[i, j] = (B[i, j] + B[j, i]) * h
        for k in range(i):
            lik = L[i, k]
            for j in range(n):
                T[i, j] -= lik * T[k, j]
        inv = 1.0 / L[i, i]
        for j in range(n):
            T[i, j] *= inv
    # M = T L^{-T} = (L^{-1} T^T)^T; M is symmetric, so M = L^{-1} T^T: row i of M from the rows above
    for i in range(n):
        for j in range(n):
            M[i, j] = T[j, i]
        for k in range(i):
            lik = L[i, k]
            for j in range(n):
                M[i, j] -= lik * M[k, j]
        inv = 1.0 / L[i, i]
        for j in range(n):
            M[i, j] *= inv
    for i in range(n):
        for j in range(i + 1, n):
            s = 0.5 * (M[i, j] + M[j, i])
            M[i, j] = s
            M[j, i] = s


@jit(parallel=False, fastmath=_FAST)
def _log_sum_sq(d, shift, delta, n):
    """``(sum_i (log max(mu_i, floor) + shift)^2, flag)``: the floor is the generic path's ``n eps max mu``;
    the flag is 1 when an eigenvalue of the unscaled pair is below the smallest normal number.  ``delta``:
    ``d`` holds ``mu - 1`` (the difference form), whose logarithm is ``log1p(d)``, exact near 0."""
    one = 1.0 if delta else 0.0
    mx = 0.0
    for i in range(n):
        mx = max(mx, d[i] + one)
    lo = n * _EPS * mx
    flag = 0
    acc = 0.0
    for i in range(n):
        mu = d[i] + one
        if not mu > 0.0 or math.log(mu) + shift < _LOG_TINY:
            flag = 1
        if not mu >= lo:
            if not lo > 0.0:
                return np.inf, 1
            t = math.log(lo) + shift
        elif delta:
            t = math.log1p(d[i])
        else:
            t = math.log(mu) + shift
        acc += t * t
    return acc, flag


@jit(parallel=False, fastmath=_FAST)
def _airm_one(A, B, L, T, M, d, e, p, wv):
    n = A.shape[0]
    a = _maxabs(A)
    b = _maxabs(B)
    if not _chol(A, 1.0 / a, L):
        return np.nan, 0
    return _airm_core(L, a, A, B, b, T, M, d, e, p, wv)


@jit(parallel=False, fastmath=_FAST)
def _airm_core(L, a, A, B, b, T, M, d, e, p, wv):
    """d^2 given ``L = chol(A / a)``: for magnitudes within 1e30 of each other the difference form
    ``L^{-1} (B - A)/a L^{-T} = C - I`` with ``log mu = log1p(delta)`` (no cancellation: d(A, A) = 0 exactly,
    ~1e-13 for close pairs at condition number 1e8, where ``log`` of the eigenvalues of ``C`` gives 1e-10),
    else ``L^{-1} (B / b) L^{-T}`` with the shift ``log(b / a)``."""
    n = A.shape[0]
    shift = math.log(b) - math.log(a)
    if abs(shift) < 69.0:
        _whiten(L, B, 1.0 / a, A, True, T, M)
        _tridiag_eigvals(M, d, e, p, wv)
        return _log_sum_sq(d, 0.0, True, n)
    _whiten(L, B, 1.0 / b, A, False, T, M)
    _tridiag_eigvals(M, d, e, p, wv)
    return _log_sum_sq(d, shift, False, n)


@jit(parallel=True)
def _airm_pairs_kernel(A, B, out, flag, n_chunks):
    m, n, _ = A.shape
    per = (m + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        L = np.empty((n, n))
        T = np.empty((n, n))
        M = np.empty((n, n))
        d = np.empty(n)
        e = np.empty(n)
        p = np.empty(n)
        wv = np.empty(n)
        for i in range(c * per, min(m, (c + 1) * per)):
            out[i], flag[i] = _airm_one(A[i], B[i], L, T, M, d, e, p, wv)


def _chunks(m):
    return max(1, min(m, 8 * numba.get_num_threads()))


def airm_dist2_pairs(A: np.ndarray, B: np.ndarray):
    """Squared AIRM distances of broadcast-equal (..., n, n) stacks and a flag per pair (1: an eigenvalue of
    ``(B, A)`` is below the smallest normal number)."""
    shp = A.shape
    n = shp[-1]
    a = np.ascontiguousarray(A.reshape(-1, n, n))
    b = np.ascontiguousarray(B.reshape(-1, n, n))
    out = np.empty(a.shape[0], dtype=np.float64)
    flag = np.zeros(a.shape[0], dtype=np.int64)
    _airm_pairs_kernel(a, b, out, flag, _chunks(a.shape[0]))
    return out.reshape(shp[:-2]), flag.reshape(shp[:-2])


@jit(parallel=True)
def _airm_pairwise_kernel(X, Y, symmetric, out, flag, n_chunks):
    m, n, _ = X.shape
    k = Y.shape[0]
    for c in prange(n_chunks):
        L = np.empty((n, n))
        T = np.empty((n, n))
        M = np.empty((n, n))
        d = np.empty(n)
        e = np.empty(n)
        p = np.empty(n)
        wv = np.empty(n)
        for i in range(c, m, n_chunks):        # interleaved rows: balanced for the triangle of Y = X
            a = _maxabs(X[i])
            ok = _chol(X[i], 1.0 / a, L)
            j0 = i + 1 if symmetric else 0
            for j in range(j0, k):
                if not ok:
                    out[i, j] = np.nan
                    continue
                out[i, j], flag[i, j] = _airm_core(L, a, X[i], Y[j], _maxabs(Y[j]), T, M, d, e, p, wv)


def _pairwise_out(m, k):
    return np.zeros((m, k), dtype=np.float64), np.zeros((m, k), dtype=np.int64)


def airm_dist2_pairwise(X: np.ndarray, Y: np.ndarray | None):
    """(m, k) squared AIRM distances between the stacks ``X`` (m, n, n) and ``Y`` (k, n, n) (``Y=None``: X with
    itself, zero diagonal, each pair computed once) and the flags."""
    sym = Y is None
    X = np.ascontiguousarray(X)
    Y = X if sym else np.ascontiguousarray(Y)
    out, flag = _pairwise_out(X.shape[0], Y.shape[0])
    _airm_pairwise_kernel(X, Y, sym, out, flag, _chunks(X.shape[0]))
    if sym:
        out += out.T
        flag += flag.T
    return out, flag


@jit(parallel=True)
def _bw_pairwise_kernel(X, Y, symmetric, out, err, n_chunks):
    m, n, _ = X.shape
    k = Y.shape[0]
    for c in prange(n_chunks):
        L = np.empty((n, n))
        T = np.empty((n, n))
        M = np.empty((n, n))
        d = np.empty(n)
        e = np.empty(n)
        p = np.empty(n)
        wv = np.empty(n)
        for i in range(c, m, n_chunks):
            j0 = i + 1 if symmetric else 0
            for j in range(j0, k):
                out[i, j], err[i, j] = _bw_one(X[i], Y[j], L, T, M, d, e, p, wv)


def bw_dist2_pairwise(X: np.ndarray, Y: np.ndarray | None):
    """(m, k) squared Bures-Wasserstein distances by the trace formula and their rounding-error bounds (the
    caller recomputes the pairs whose bound is too large in the Procrustes form)."""
    sym = Y is None
    X = np.ascontiguousarray(X)
    Y = X if sym else np.ascontiguousarray(Y)
    out = np.zeros((X.shape[0], Y.shape[0]), dtype=np.float64)
    err = np.zeros_like(out)
    _bw_pairwise_kernel(X, Y, sym, out, err, _chunks(X.shape[0]))
    if sym:
        out += out.T
        err += err.T
    return out, err


@jit(parallel=True, fastmath=True)  # SAFE_FASTMATH: a parallel kernel may not reassociate (see _rows)
def _sqeuclid_kernel(F, G, symmetric, out, n_chunks):
    m, f = F.shape
    k = G.shape[0]
    for c in prange(n_chunks):
        for i in range(c, m, n_chunks):
            j0 = i + 1 if symmetric else 0
            for j in range(j0, k):
                acc = 0.0
                for q in range(f):
                    t = F[i, q] - G[j, q]
                    acc += t * t
                out[i, j] = acc


def sqeuclidean_pairwise(F: np.ndarray, G: np.ndarray | None):
    """(m, k) squared Euclidean distances of feature rows by explicit differences (no ``|a|^2 + |b|^2 - 2ab``
    cancellation: a row's distance to itself is exactly 0)."""
    sym = G is None
    F = np.ascontiguousarray(F, dtype=np.float64)
    G = F if sym else np.ascontiguousarray(G, dtype=np.float64)
    out = np.zeros((F.shape[0], G.shape[0]), dtype=np.float64)
    _sqeuclid_kernel(F, G, sym, out, _chunks(F.shape[0]))
    if sym:
        out += out.T
    return out
