"""Numba kernels for batches of small SPD matrices (n <= ~64): parallel over the batch, no LAPACK per matrix.

- :func:`eigh_batched`: cyclic Jacobi eigensolver per matrix (eigenvalues ascending, eigenvectors in columns).
- :func:`bw_dist2_batched`: squared Bures-Wasserstein distance per pair,
  ``tr A + tr B - 2 sum_i sqrt(mu_i)`` with ``mu = eig(L^T B L)``, ``A = L L^T``: a Cholesky, one congruence,
  a Householder tridiagonalisation and implicit QL for the eigenvalues only (no eigenvectors).

Every kernel computes in float64 internally (small scratch arrays), so float32 inputs lose nothing.
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._rows import jit

__all__ = ["eigh_batched", "bw_dist2_batched", "eigvalsh_batched"]


@jit(parallel=False)
def _jacobi(a, v, max_sweeps):
    """In-place cyclic Jacobi on the symmetric float64 matrix ``a``; ``v`` receives the eigenvectors."""
    n = a.shape[0]
    for i in range(n):
        for j in range(n):
            v[i, j] = 1.0 if i == j else 0.0
    for _sweep in range(max_sweeps):
        off = 0.0
        diag = 0.0
        for p in range(n):
            diag += a[p, p] * a[p, p]
            for q in range(p + 1, n):
                off += a[p, q] * a[p, q]
        if off <= 1e-32 * diag or off == 0.0:
            break
        for p in range(n - 1):
            for q in range(p + 1, n):
                apq = a[p, q]
                if apq == 0.0:
                    continue
                theta = (a[q, q] - a[p, p]) / (2.0 * apq)
                t = 1.0 / (abs(theta) + math.sqrt(theta * theta + 1.0))
                if theta < 0.0:
                    t = -t
                c = 1.0 / math.sqrt(t * t + 1.0)
                s = t * c
                for k in range(n):  # columns p, q
                    akp = a[k, p]
                    akq = a[k, q]
                    a[k, p] = c * akp - s * akq
                    a[k, q] = s * akp + c * akq
                for k in range(n):  # rows p, q
                    apk = a[p, k]
                    aqk = a[q, k]
                    a[p, k] = c * apk - s * aqk
                    a[q, k] = s * apk + c * aqk
                a[p, q] = 0.0
                a[q, p] = 0.0
                for k in range(n):
                    vkp = v[k, p]
                    vkq = v[k, q]
                    v[k, p] = c * vkp - s * vkq
                    v[k, q] = s * vkp + c * vkq


@jit(parallel=True)
def _eigh_kernel(A, w_out, V_out):
    m, n, _ = A.shape
    for b in prange(m):
        a = np.empty((n, n))
        v = np.empty((n, n))
        for i in range(n):
            for j in range(n):
                a[i, j] = 0.5 * (A[b, i, j] + A[b, j, i])
        _jacobi(a, v, 30)
        # selection sort ascending (n is small)
        idx = np.empty(n, np.int64)
        for i in range(n):
            idx[i] = i
        for i in range(n):
            best = i
            for j in range(i + 1, n):
                if a[idx[j], idx[j]] < a[idx[best], idx[best]]:
                    best = j
            tmp = idx[i]
            idx[i] = idx[best]
            idx[best] = tmp
        for i in range(n):
            w_out[b, i] = a[idx[i], idx[i]]
            for k in range(n):
                V_out[b, k, i] = v[k, idx[i]]


def eigh_batched(A: np.ndarray):
    """Batched symmetric eigendecomposition of (..., n, n) float32/float64 arrays by cyclic Jacobi."""
    shp = A.shape
    n = shp[-1]
    a = np.ascontiguousarray(A.reshape(-1, n, n))
    w = np.empty((a.shape[0], n), dtype=A.dtype)
    V = np.empty((a.shape[0], n, n), dtype=A.dtype)
    _eigh_kernel(a, w, V)
    return w.reshape(shp[:-1]), V.reshape(shp)


@jit(parallel=False, fastmath=True)
def _tridiag_eigvals(a, d, e, p, wv):
    """Eigenvalues of the symmetric float64 matrix ``a`` (destroyed) into ``d``: Householder + implicit QL."""
    n = a.shape[0]
    v = np.empty(n)
    for k in range(n - 2):
        m = n - k - 1
        xnorm2 = 0.0
        for i in range(m):
            v[i] = a[k + 1 + i, k]
            xnorm2 += v[i] * v[i]
        if xnorm2 == 0.0:
            e[k] = 0.0
            continue
        x0 = v[0]
        alpha = -math.sqrt(xnorm2) if x0 >= 0 else math.sqrt(xnorm2)
        v[0] = x0 - alpha  # v = x - alpha e1
        vnorm2 = xnorm2 - x0 * x0 + v[0] * v[0]
        beta = 2.0 / vnorm2
        vp = 0.0
        for i in range(m):
            s = 0.0
            for j in range(m):
                s += a[k + 1 + i, k + 1 + j] * v[j]
            p[i] = beta * s
            vp += v[i] * p[i]
        kk = 0.5 * beta * vp
        for i in range(m):
            wv[i] = p[i] - kk * v[i]
        for i in range(m):
            vi = v[i]
            wi = wv[i]
            for j in range(m):
                a[k + 1 + i, k + 1 + j] -= vi * wv[j] + wi * v[j]
        e[k] = alpha
    for i in range(n):
        d[i] = a[i, i]
    if n >= 2:
        e[n - 2] = a[n - 1, n - 2]
    e[n - 1] = 0.0
    # implicit QL with Wilkinson-type shifts (eigenvalues only)
    eps = 2.220446049250313e-16
    for l in range(n):
        it = 0
        while True:
            m = l
            while m < n - 1:
                dd = abs(d[m]) + abs(d[m + 1])
                if abs(e[m]) <= eps * dd:
                    break
                m += 1
            if m == l or it >= 60:
                break
            it += 1
            g = (d[l + 1] - d[l]) / (2.0 * e[l])
            r = math.sqrt(g * g + 1.0)
            g = d[m] - d[l] + e[l] / (g + (r if g >= 0 else -r))
            s = 1.0
            c = 1.0
            pp = 0.0
            i = m - 1
            under = False
            while i >= l:
                f = s * e[i]
                b = c * e[i]
                r = math.sqrt(f * f + g * g)
                e[i + 1] = r
                if r == 0.0:
                    d[i + 1] -= pp
                    e[m] = 0.0
                    under = True
                    break
                s = f / r
                c = g / r
                g = d[i + 1] - pp
                r = (d[i] - g) * s + 2.0 * c * b
                pp = s * r
                d[i + 1] = g + pp
                g = c * r - b
                i -= 1
            if under:
                continue
            d[l] -= pp
            e[l] = g
            e[m] = 0.0


@jit(parallel=True)
def _eigvalsh_kernel(A, w_out):
    m, n, _ = A.shape
    for b in prange(m):
        a = np.empty((n, n))
        d = np.empty(n)
        e = np.empty(n)
        p = np.empty(n)
        wv = np.empty(n)
        for i in range(n):
            for j in range(n):
                a[i, j] = 0.5 * (A[b, i, j] + A[b, j, i])
        _tridiag_eigvals(a, d, e, p, wv)
        for i in range(n):
            w_out[b, i] = d[i]


def eigvalsh_batched(A: np.ndarray) -> np.ndarray:
    """Eigenvalues (unsorted) of a batch of symmetric matrices (tests use it against NumPy)."""
    shp = A.shape
    n = shp[-1]
    a = np.ascontiguousarray(A.reshape(-1, n, n))
    w = np.empty((a.shape[0], n), dtype=np.float64)
    _eigvalsh_kernel(a, w)
    return w.reshape(shp[:-1])


@jit(parallel=False, fastmath=True)
def _bw_one(A, B, L, T, M, d, e, p, wv):
    """Squared BW distance of one pair (float64 scratch passed in)."""
    n = A.shape[0]
    # Cholesky of sym(A) (lower), row-oriented so the inner loops run over contiguous memory
    for i in range(n):
        for j in range(n):
            L[i, j] = 0.0
    for j in range(n):
        s = A[j, j]
        for k in range(j):
            s -= L[j, k] * L[j, k]
        if not s > 0.0:
            return np.nan
        ljj = math.sqrt(s)
        L[j, j] = ljj
        inv = 1.0 / ljj
        for i in range(j + 1, n):
            t = 0.5 * (A[i, j] + A[j, i])
            for k in range(j):
                t -= L[i, k] * L[j, k]
            L[i, j] = t * inv
    trA = 0.0
    trB = 0.0
    for i in range(n):
        trA += A[i, i]
        trB += B[i, i]
    # T = sym(B) L: T[i, :k+1] += B[i, k] L[k, :k+1]  (contiguous inner loop)
    for i in range(n):
        for j in range(n):
            T[i, j] = 0.0
        for k in range(n):
            bik = 0.5 * (B[i, k] + B[k, i])
            for j in range(k + 1):
                T[i, j] += bik * L[k, j]
    # M = L^T T: M[i, :] += L[k, i] T[k, :] for k >= i
    for i in range(n):
        for j in range(n):
            M[i, j] = 0.0
    for k in range(n):
        for i in range(k + 1):
            lki = L[k, i]
            for j in range(n):
                M[i, j] += lki * T[k, j]
    for i in range(n):
        for j in range(i + 1, n):
            sym = 0.5 * (M[i, j] + M[j, i])
            M[i, j] = sym
            M[j, i] = sym
    _tridiag_eigvals(M, d, e, p, wv)
    acc = 0.0
    for i in range(n):
        if d[i] > 0.0:
            acc += math.sqrt(d[i])
    r = trA + trB - 2.0 * acc
    return r if r > 0.0 else 0.0


@jit(parallel=True)
def _bw_kernel(A, B, out, n_chunks):
    m, n, _ = A.shape
    per = (m + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):   # scratch allocated once per chunk, not per pair
        L = np.empty((n, n))
        T = np.empty((n, n))
        M = np.empty((n, n))
        d = np.empty(n)
        e = np.empty(n)
        p = np.empty(n)
        wv = np.empty(n)
        for b in range(c * per, min(m, (c + 1) * per)):
            out[b] = _bw_one(A[b], B[b], L, T, M, d, e, p, wv)


def bw_dist2_batched(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Squared BW distances of broadcast-equal (..., n, n) stacks A and B (float64 result)."""
    shp = A.shape
    n = shp[-1]
    a = np.ascontiguousarray(A.reshape(-1, n, n))
    b = np.ascontiguousarray(B.reshape(-1, n, n))
    out = np.empty(a.shape[0], dtype=np.float64)
    import numba

    _bw_kernel(a, b, out, max(1, min(a.shape[0], 8 * numba.get_num_threads())))
    return out.reshape(shp[:-2])
