"""Numba kernels that process ``LANES`` matrix pairs at once, one pair per SIMD lane.

The per-pair kernels of :mod:`optnorm._numba.spd` spend most of their time in the implicit QL iteration for the
eigenvalues of a symmetric tridiagonal matrix: two dependent divisions per rotation, so a pair waits on division
latency.  Here every array carries a trailing lane axis of ``LANES`` pairs: the Cholesky factorisations, the
congruences and the Householder tridiagonalisation run with the lane loop innermost (LLVM vectorises it: one
AVX2 register holds the four lanes), and the QL iteration runs the lanes in lockstep (one shared deflation index,
each lane with its own active block), so the out-of-order core overlaps the lanes' independent division chains.
The arithmetic of each lane is exactly that of the per-pair kernels (same operations in the same order), so the
results agree with them to the last bits up to the compiler's contraction of products into FMAs.

Measured (process time, one thread, 10 000 pairs of 16x16, the loaded 2-core development machine): BW 0.090 s per
pair -> 0.057 s in lanes (load 9 ms, two Cholesky 5 ms, congruence 13 ms, tridiagonalisation 12 ms, QL 18 ms, the
QL alone 2.6x faster than per pair); AIRM 0.085 s -> 0.057 s; pyRiemann 0.12 (BLAS on one thread) 0.47 s and
0.22 s.  The QL step computes ``gamma^2 / c`` as ``gamma^2 r / p`` (``c = p / r``), so its two divisions are
independent and overlap.
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._rows import jit
from .spd import SPD_EPS, SPD_FAST, spd_bw_finish, spd_eig2, spd_log_sum_sq, spd_maxabs, spd_pairs, spd_pairwise

__all__ = ["LANES", "bw_dist2_pairs_lanes", "airm_dist2_pairs_lanes", "airm_dist2_pairwise_lanes",
           "bw_dist2_pairwise_lanes"]

LANES = 8          # pairs per group: 8 measured a little faster than 4 (two AVX2 registers per row)


@jit(parallel=False, fastmath=SPD_FAST)
def _tridiag(a, d, e2, v, p, w, xn2, beta):
    """Householder tridiagonalisation of the symmetric lanes ``a`` (n, n, K) (destroyed; only its lower triangle is
    read and updated): diagonal into ``d`` (n, K), squared off-diagonal into ``e2`` (n, K; ``e2[i]`` couples i and
    i+1, ``e2[n-1] = 0``)."""
    n = a.shape[0]
    K = LANES
    for k in range(n - 2):
        m = n - k - 1
        for q in range(K):
            xn2[q] = 0.0
        for i in range(m):
            for q in range(K):
                x = a[k + 1 + i, k, q]
                v[i, q] = x
                xn2[q] += x * x
        for q in range(K):
            x0 = v[0, q]
            r = math.sqrt(xn2[q])
            alpha = -r if x0 >= 0 else r
            v0 = x0 - alpha
            v[0, q] = v0
            vn2 = xn2[q] - x0 * x0 + v0 * v0
            beta[q] = 2.0 / vn2 if vn2 > 0.0 else 0.0
            e2[k, q] = alpha * alpha
        for q in range(K):
            xn2[q] = 0.0                      # reused: v . p
        for i in range(m):
            for q in range(K):
                p[i, q] = 0.0
        for i in range(m):                        # p = a v from the lower triangle of the symmetric a
            r = k + 1 + i
            for j in range(i):                    # row i left of the diagonal: to p[i], and (symmetry) to p[j]
                for q in range(K):
                    x = a[r, k + 1 + j, q]
                    p[i, q] += x * v[j, q]
                    p[j, q] += x * v[i, q]
            for q in range(K):
                p[i, q] += a[r, r, q] * v[i, q]
        for i in range(m):
            for q in range(K):
                p[i, q] *= beta[q]
                xn2[q] += v[i, q] * p[i, q]
        for q in range(K):
            xn2[q] *= 0.5 * beta[q]
        for i in range(m):
            for q in range(K):
                w[i, q] = p[i, q] - xn2[q] * v[i, q]
        for i in range(m):                        # the rank-2 update of the lower triangle only
            for j in range(i + 1):
                for q in range(K):
                    a[k + 1 + i, k + 1 + j, q] -= v[i, q] * w[j, q] + w[i, q] * v[j, q]
    for i in range(n):
        for q in range(K):
            d[i, q] = a[i, i, q]
    for q in range(K):
        if n >= 2:
            x = a[n - 1, n - 2, q]
            e2[n - 2, q] = x * x
        e2[n - 1, q] = 0.0


@jit(parallel=False, fastmath=False)
def _ql_lanes(d, e2, n, mm, sig, c, s, gam, p, tot):
    """Root-free implicit QL (Pal-Walker-Kahan, as :func:`optnorm._numba.spd._ql_rootfree`) for the K lanes of
    (n, K) tridiagonals in lockstep: eigenvalues into ``d``.  The other arguments are (K,) scratch."""
    K = LANES
    eps2 = SPD_EPS * SPD_EPS
    for l in range(n):
        while True:
            top = -1
            for q in range(K):
                # first negligible off-diagonal at or after l
                m = l
                while m < n - 1:
                    if e2[m, q] <= eps2 * abs(d[m, q] * d[m + 1, q]) or e2[m, q] < 1e-300:
                        break
                    m += 1
                if m < n - 1:
                    e2[m, q] = 0.0
                if m == l or tot[q] > 30 * n:
                    mm[q] = -1                   # lane done at l
                    continue
                if m == l + 1:                   # 2x2 block in closed form
                    rt1, rt2 = spd_eig2(d[l, q], math.sqrt(e2[l, q]), d[l + 1, q])
                    d[l, q] = rt1
                    d[l + 1, q] = rt2
                    e2[l, q] = 0.0
                    mm[q] = -1
                    continue
                tot[q] += 1
                mm[q] = m
                top = max(top, m)
                rte = math.sqrt(e2[l, q])
                sg = (d[l + 1, q] - d[l, q]) / (2.0 * rte)
                r = math.sqrt(sg * sg + 1.0)
                sig[q] = d[l, q] - rte / (sg + (r if sg >= 0.0 else -r))
                c[q] = 1.0
                s[q] = 0.0
                g = d[m, q] - sig[q]
                gam[q] = g
                p[q] = g * g
            if top < 0:
                break
            for i in range(top - 1, l - 1, -1):
                for q in range(K):               # branch-free over the lanes: LLVM vectorises it (vdivpd)
                    m = mm[q]
                    act = i < m                  # lane idle: done, or its block ends above i
                    bb = e2[i, q]
                    pq = p[q]
                    r = pq + bb
                    sq = s[q]
                    e2[i + 1, q] = sq * r if (act and i != m - 1) else e2[i + 1, q]
                    oldc = c[q]
                    inv = 1.0 / r
                    ip = 1.0 / pq                # independent of 1/r: the two divisions overlap
                    cq = pq * inv
                    sn = bb * inv
                    oldgam = gam[q]
                    alpha = d[i, q]
                    g = cq * (alpha - sig[q]) - sn * oldgam
                    # gamma^2 / c with c = p / r is gamma^2 r / p: one division on the critical path, not two
                    pn = g * g * r * ip if cq != 0.0 else oldc * bb
                    d[i + 1, q] = oldgam + (alpha - g) if act else d[i + 1, q]
                    c[q] = cq if act else oldc
                    s[q] = sn if act else sq
                    gam[q] = g if act else oldgam
                    p[q] = pn if act else pq
            for q in range(K):
                if mm[q] >= 0:
                    e2[l, q] = s[q] * p[q]
                    d[l, q] = sig[q] + gam[q]


@jit(parallel=False, fastmath=SPD_FAST)
def _chol_lanes(A, L, ok, t):
    """Lower Cholesky of the (n, n, K) lanes; ``ok[q]`` False where a pivot is not positive (the lane continues on
    a unit pivot, its result is discarded).  ``t`` is (K,) scratch; the lane loop is innermost."""
    n = A.shape[0]
    K = LANES
    for j in range(n):
        for i in range(n):
            for q in range(K):
                L[i, j, q] = 0.0
    for j in range(n):
        for q in range(K):
            t[q] = A[j, j, q]
        for k in range(j):
            for q in range(K):
                t[q] -= L[j, k, q] * L[j, k, q]
        for q in range(K):
            if not t[q] > 0.0:
                ok[q] = False
                t[q] = 1.0
            L[j, j, q] = math.sqrt(t[q])
            t[q] = 1.0 / L[j, j, q]
        for i in range(j + 1, n):
            for q in range(K):
                L[i, j, q] = A[i, j, q]
            for k in range(j):
                for q in range(K):
                    L[i, j, q] -= L[i, k, q] * L[j, k, q]
            for q in range(K):
                L[i, j, q] *= t[q]


@jit(parallel=False, fastmath=SPD_FAST)
def _symmetrize_lanes(M):
    """``M <- (M + M^T) / 2`` in place for the (n, n, K) lanes."""
    n = M.shape[0]
    K = LANES
    for i in range(n):
        for j in range(i + 1, n):
            for q in range(K):
                x = 0.5 * (M[i, j, q] + M[j, i, q])
                M[i, j, q] = x
                M[j, i, q] = x


@jit(parallel=False, fastmath=SPD_FAST)
def _lt_b_l(L, B, T, M):
    """``M = L^T B L`` (symmetrised) for lanes; ``T`` scratch.  The innermost loops run over a contiguous row of
    (column, lane) pairs, which LLVM vectorises in full-width registers."""
    n = L.shape[0]
    K = LANES
    for i in range(n):                       # T = B L: T[i, :k+1] += B[i, k] L[k, :k+1]
        for j in range(n):
            for q in range(K):
                T[i, j, q] = 0.0
        for k in range(n):
            for j in range(k + 1):
                for q in range(K):
                    T[i, j, q] += B[i, k, q] * L[k, j, q]
    for i in range(n):
        for j in range(n):
            for q in range(K):
                M[i, j, q] = 0.0
    for k in range(n):                       # M = L^T T: M[i, :] += L[k, i] T[k, :] for i <= k
        for i in range(k + 1):
            for j in range(n):
                for q in range(K):
                    M[i, j, q] += L[k, i, q] * T[k, j, q]
    _symmetrize_lanes(M)


# inlined: the loop nest the caller had (a call per row measured ~3% slower in AIRM pairwise)
@jit(parallel=False, fastmath=SPD_FAST, inline="always")
def _fwd_row_lanes(L, X, i, r):
    """Row ``i`` of ``L^{-1} X`` in place for lanes, the rows above it done (innermost loops over a contiguous
    row of (column, lane) pairs); ``r`` (K,) scratch."""
    n = X.shape[1]
    K = LANES
    for k in range(i):
        for j in range(n):
            for q in range(K):
                X[i, j, q] -= L[i, k, q] * X[k, j, q]
    for q in range(K):
        r[q] = 1.0 / L[i, i, q]
    for j in range(n):
        for q in range(K):
            X[i, j, q] *= r[q]


@jit(parallel=False, fastmath=SPD_FAST)
def _whiten_lanes(L, S, T, M, r):
    """``M = L^{-1} S L^{-T}`` (symmetrised) for lanes by forward substitutions (innermost loops over a contiguous
    row of (column, lane) pairs); ``T`` scratch, ``r`` (K,) scratch."""
    n = L.shape[0]
    K = LANES
    for i in range(n):
        for j in range(n):
            for q in range(K):
                T[i, j, q] = S[i, j, q]
        _fwd_row_lanes(L, T, i, r)
    for i in range(n):
        for j in range(n):
            for q in range(K):
                M[i, j, q] = T[j, i, q]
        _fwd_row_lanes(L, M, i, r)
    _symmetrize_lanes(M)


@jit(parallel=False, fastmath=SPD_FAST)
def _bw_group(A, B, ia, ib, cnt, out, err, As, Bs, L, T, M, d, e2, v, p, w, x1, x2, ok, mm, sig, c, s, gam, pp, tot):
    """Squared BW distances (trace formula) and error bounds of the ``cnt`` pairs ``(A[ia[q]], B[ib[q]])``."""
    n = A.shape[1]
    K = LANES
    for q in range(K):
        qq = q if q < cnt else cnt - 1
        a = A[ia[qq]]
        b = B[ib[qq]]
        sc = math.sqrt(spd_maxabs(a)) * math.sqrt(spd_maxabs(b))
        x1[q] = sc
        isc = 1.0 / sc
        for i in range(n):
            for j in range(n):
                As[i, j, q] = 0.5 * (a[i, j] + a[j, i]) * isc
                Bs[i, j, q] = 0.5 * (b[i, j] + b[j, i]) * isc
        ok[q] = True
        tot[q] = 0
    _chol_lanes(Bs, L, ok, x2)              # positive definiteness of B (NaN otherwise, as the per-pair kernel)
    _chol_lanes(As, L, ok, x2)
    _lt_b_l(L, Bs, T, M)
    _tridiag(M, d, e2, v, p, w, x2, pp)
    _ql_lanes(d, e2, n, mm, sig, c, s, gam, pp, tot)
    for q in range(cnt):
        if ok[q]:
            trA = 0.0
            trB = 0.0
            for i in range(n):
                trA += As[i, i, q]
                trB += Bs[i, i, q]
            out[q], err[q] = spd_bw_finish(d[:, q], trA, trB, x1[q])
        else:
            out[q] = np.nan
            err[q] = 0.0


@jit(parallel=False, fastmath=SPD_FAST)
def _airm_group(A, B, ia, ib, cnt, out, flag, As, Bs, L, T, M, d, e2, v, p, w, x1, x2, ok, mm, sig, c, s, gam, pp,
                tot, reuse):
    """Squared AIRM distances of the ``cnt`` pairs: ``L = chol(A/a)``; within 1e30 in magnitude the difference
    form ``L^{-1} (B - A)/a L^{-T}`` with ``log1p`` (x1[q] = 0 marks it), else ``L^{-1} (B/b) L^{-T}`` with
    the shift ``x1[q] = log(b/a)`` (as :func:`optnorm._numba.spd_distances._airm_core`)."""
    n = A.shape[1]
    K = LANES
    for q in range(K):
        qq = q if q < cnt else cnt - 1
        a = A[ia[qq]]
        b = B[ib[qq]]
        sa = spd_maxabs(a)
        sb = spd_maxabs(b)
        shift = math.log(sb) - math.log(sa)
        ia_ = 1.0 / sa
        if not reuse:                          # a new A in every lane (the pairwise kernel: a new row)
            for i in range(n):
                for j in range(n):
                    As[i, j, q] = 0.5 * (a[i, j] + a[j, i]) * ia_
            ok[q] = True
        if abs(shift) < 69.0:
            x1[q] = 0.0
            for i in range(n):
                for j in range(n):
                    Bs[i, j, q] = ((b[i, j] - a[i, j]) + (b[j, i] - a[j, i])) * (0.5 * ia_)
        else:
            x1[q] = shift
            ib_ = 1.0 / sb
            for i in range(n):
                for j in range(n):
                    Bs[i, j, q] = 0.5 * (b[i, j] + b[j, i]) * ib_
        tot[q] = 0
    if not reuse:                              # else L (and ok) hold the factor of the same A from the last call
        _chol_lanes(As, L, ok, x2)
    _whiten_lanes(L, Bs, T, M, x2)
    _tridiag(M, d, e2, v, p, w, x2, pp)
    _ql_lanes(d, e2, n, mm, sig, c, s, gam, pp, tot)
    for q in range(cnt):
        if not ok[q]:
            out[q] = np.nan
            flag[q] = 0
            continue
        out[q], flag[q] = spd_log_sum_sq(d[:, q], x1[q], x1[q] == 0.0, n)


@jit(parallel=False)
def _alloc(n, K):
    return (np.empty((n, n, K)), np.empty((n, n, K)), np.empty((n, n, K)), np.empty((n, n, K)), np.empty((n, n, K)),
            np.empty((n, K)), np.empty((n, K)), np.empty((n, K)), np.empty((n, K)), np.empty((n, K)), np.empty(K),
            np.empty(K), np.empty(K, np.bool_), np.empty(K, np.int64), np.empty(K), np.empty(K), np.empty(K),
            np.empty(K), np.empty(K), np.empty(K, np.int64))


@jit(parallel=True)
def _pairs_kernel(A, B, out, aux, kind, n_chunks):
    m, n, _ = A.shape
    K = LANES
    groups = (m + K - 1) // K
    per = (groups + n_chunks - 1) // n_chunks
    for c_ in prange(n_chunks):
        As, Bs, L, T, M, d, e2, v, p, w, x1, x2, ok, mm, sig, c, s, gam, pp, tot = _alloc(n, K)
        ia = np.empty(K, np.int64)
        o = np.empty(K)
        x = np.empty(K)
        fl = np.empty(K, np.int64)
        for g in range(c_ * per, min(groups, (c_ + 1) * per)):
            b0 = g * K
            cnt = min(K, m - b0)
            for q in range(K):
                ia[q] = b0 + (q if q < cnt else cnt - 1)
            if kind == 0:
                _bw_group(A, B, ia, ia, cnt, o, x, As, Bs, L, T, M, d, e2, v, p, w, x1, x2, ok, mm, sig, c, s, gam,
                          pp, tot)
                for q in range(cnt):
                    out[b0 + q] = o[q]
                    aux[b0 + q] = x[q]
            else:
                _airm_group(A, B, ia, ia, cnt, o, fl, As, Bs, L, T, M, d, e2, v, p, w, x1, x2, ok, mm, sig, c, s,
                            gam, pp, tot, False)
                for q in range(cnt):
                    out[b0 + q] = o[q]
                    aux[b0 + q] = fl[q]


def bw_dist2_pairs_lanes(A: np.ndarray, B: np.ndarray):
    """Squared BW distances and error bounds of broadcast-equal (..., n, n) stacks, LANES pairs at a time."""
    return spd_pairs(_pairs_kernel, A, B, np.float64, 0, dtype=np.float64, group=LANES)


def airm_dist2_pairs_lanes(A: np.ndarray, B: np.ndarray):
    """Squared AIRM distances and flags (1: an eigenvalue below the smallest normal number), LANES at a time."""
    d2, fl = spd_pairs(_pairs_kernel, A, B, np.float64, 1, dtype=np.float64, group=LANES)
    return d2, fl.astype(np.int64)


@jit(parallel=True)
def _pairwise_kernel(X, Y, symmetric, out, aux, kind, n_chunks):
    m, n, _ = X.shape
    k = Y.shape[0]
    K = LANES
    for c_ in prange(n_chunks):
        As, Bs, L, T, M, d, e2, v, p, w, x1, x2, ok, mm, sig, c, s, gam, pp, tot = _alloc(n, K)
        ia = np.empty(K, np.int64)
        ib = np.empty(K, np.int64)
        o = np.empty(K)
        x = np.empty(K)
        fl = np.empty(K, np.int64)
        for i in range(c_, m, n_chunks):            # interleaved rows: balanced for the triangle
            j0 = i + 1 if symmetric else 0
            for q in range(K):
                ia[q] = i
            for jb in range(j0, k, K):
                cnt = min(K, k - jb)
                for q in range(K):
                    ib[q] = jb + (q if q < cnt else cnt - 1)
                if kind == 0:
                    _bw_group(X, Y, ia, ib, cnt, o, x, As, Bs, L, T, M, d, e2, v, p, w, x1, x2, ok, mm, sig, c, s,
                              gam, pp, tot)
                    for q in range(cnt):
                        out[i, jb + q] = o[q]
                        aux[i, jb + q] = x[q]
                else:
                    _airm_group(X, Y, ia, ib, cnt, o, fl, As, Bs, L, T, M, d, e2, v, p, w, x1, x2, ok, mm, sig, c,
                                s, gam, pp, tot, jb > j0)          # one Cholesky factor per row
                    for q in range(cnt):
                        out[i, jb + q] = o[q]
                        aux[i, jb + q] = fl[q]


def bw_dist2_pairwise_lanes(X: np.ndarray, Y: np.ndarray | None):
    """(m, k) squared BW distances and error bounds, LANES columns of a row at a time."""
    return spd_pairwise(_pairwise_kernel, X, Y, np.float64, 0, dtype=np.float64)


def airm_dist2_pairwise_lanes(X: np.ndarray, Y: np.ndarray | None):
    """(m, k) squared AIRM distances and flags, LANES columns of a row at a time."""
    d2, fl = spd_pairwise(_pairwise_kernel, X, Y, np.float64, 1, dtype=np.float64)
    return d2, fl.astype(np.int64)
