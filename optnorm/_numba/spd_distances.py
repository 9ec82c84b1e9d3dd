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

import numpy as np
from numba import prange

from ._rows import jit
from .spd import (SPD_FAST, spd_bw_one, spd_chol, spd_chunks, spd_log_sum_sq, spd_maxabs, spd_pairs, spd_pairwise, spd_scratch,
                  spd_symmetrize, spd_tridiag_eigvals)

__all__ = ["airm_dist2_pairs", "airm_dist2_pairwise", "bw_dist2_pairwise", "sqeuclidean_pairwise"]


@jit(parallel=False, fastmath=SPD_FAST, inline="always")   # inlined, as in spd_lanes._fwd_row_lanes
def _fwd_row(L, X, i):
    """Row ``i`` of ``L^{-1} X`` in place, the rows above it done: ``X[i] = (X[i] - sum_{k<i} L[i, k] X[k]) / L[i, i]``
    (the inner loops run over contiguous rows)."""
    n = X.shape[1]
    for k in range(i):
        lik = L[i, k]
        for j in range(n):
            X[i, j] -= lik * X[k, j]
    inv = 1.0 / L[i, i]
    for j in range(n):
        X[i, j] *= inv


@jit(parallel=False, fastmath=SPD_FAST)
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
        _fwd_row(L, T, i)
    # M = T L^{-T} = (L^{-1} T^T)^T; M is symmetric, so M = L^{-1} T^T: row i of M from the rows above
    for i in range(n):
        for j in range(n):
            M[i, j] = T[j, i]
        _fwd_row(L, M, i)
    spd_symmetrize(M)


@jit(parallel=False, fastmath=SPD_FAST)
def _airm_one(A, B, L, T, M, d, e, p, wv):
    n = A.shape[0]
    a = spd_maxabs(A)
    b = spd_maxabs(B)
    if not spd_chol(A, 1.0 / a, L):
        return np.nan, 0
    return _airm_core(L, a, A, B, b, T, M, d, e, p, wv)


@jit(parallel=False, fastmath=SPD_FAST)
def _airm_core(L, a, A, B, b, T, M, d, e, p, wv):
    """d^2 given ``L = chol(A / a)``: for magnitudes within 1e30 of each other the difference form
    ``L^{-1} (B - A)/a L^{-T} = C - I`` with ``log mu = log1p(delta)`` (no cancellation: d(A, A) = 0 exactly,
    ~1e-13 for close pairs at condition number 1e8, where ``log`` of the eigenvalues of ``C`` gives 1e-10),
    else ``L^{-1} (B / b) L^{-T}`` with the shift ``log(b / a)``."""
    n = A.shape[0]
    shift = math.log(b) - math.log(a)
    if abs(shift) < 69.0:
        _whiten(L, B, 1.0 / a, A, True, T, M)
        spd_tridiag_eigvals(M, d, e, p, wv)
        return spd_log_sum_sq(d, 0.0, True, n)
    _whiten(L, B, 1.0 / b, A, False, T, M)
    spd_tridiag_eigvals(M, d, e, p, wv)
    return spd_log_sum_sq(d, shift, False, n)


@jit(parallel=True)
def _airm_pairs_kernel(A, B, out, flag, n_chunks):
    m, n, _ = A.shape
    per = (m + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        L, T, M, d, e, p, wv = spd_scratch(n)
        for i in range(c * per, min(m, (c + 1) * per)):
            out[i], flag[i] = _airm_one(A[i], B[i], L, T, M, d, e, p, wv)


def airm_dist2_pairs(A: np.ndarray, B: np.ndarray):
    """Squared AIRM distances of broadcast-equal (..., n, n) stacks and a flag per pair (1: an eigenvalue of
    ``(B, A)`` is below the smallest normal number)."""
    return spd_pairs(_airm_pairs_kernel, A, B, np.int64)


@jit(parallel=True)
def _airm_pairwise_kernel(X, Y, symmetric, out, flag, n_chunks):
    m, n, _ = X.shape
    k = Y.shape[0]
    for c in prange(n_chunks):
        L, T, M, d, e, p, wv = spd_scratch(n)
        for i in range(c, m, n_chunks):        # interleaved rows: balanced for the triangle of Y = X
            a = spd_maxabs(X[i])
            ok = spd_chol(X[i], 1.0 / a, L)
            j0 = i + 1 if symmetric else 0
            for j in range(j0, k):
                if not ok:
                    out[i, j] = np.nan
                    continue
                out[i, j], flag[i, j] = _airm_core(L, a, X[i], Y[j], spd_maxabs(Y[j]), T, M, d, e, p, wv)


def airm_dist2_pairwise(X: np.ndarray, Y: np.ndarray | None):
    """(m, k) squared AIRM distances between the stacks ``X`` (m, n, n) and ``Y`` (k, n, n) (``Y=None``: X with
    itself, zero diagonal, each pair computed once) and the flags."""
    return spd_pairwise(_airm_pairwise_kernel, X, Y, np.int64)


@jit(parallel=True)
def _bw_pairwise_kernel(X, Y, symmetric, out, err, n_chunks):
    m, n, _ = X.shape
    k = Y.shape[0]
    for c in prange(n_chunks):
        L, T, M, d, e, p, wv = spd_scratch(n)
        for i in range(c, m, n_chunks):
            j0 = i + 1 if symmetric else 0
            for j in range(j0, k):
                out[i, j], err[i, j] = spd_bw_one(X[i], Y[j], L, T, M, d, e, p, wv)


def bw_dist2_pairwise(X: np.ndarray, Y: np.ndarray | None):
    """(m, k) squared Bures-Wasserstein distances by the trace formula and their rounding-error bounds (the
    caller recomputes the pairs whose bound is too large in the Procrustes form)."""
    return spd_pairwise(_bw_pairwise_kernel, X, Y, np.float64)


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
    _sqeuclid_kernel(F, G, sym, out, spd_chunks(F.shape[0]))
    if sym:
        out += out.T
    return out
