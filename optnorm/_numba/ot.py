"""Numba kernels for optnorm.ot: 1-D merge of sorted supports, log-domain Sinkhorn half-steps.

Plain loops over C-contiguous arrays, parallel over rows/problems; the callers in ``optnorm/ot/*`` do the
sorting, reshaping and allocation.
"""
from __future__ import annotations

import numba
import numpy as np

from ._rows import jit

__all__ = ["w1d_value", "merge_sorted", "lse_rows", "lse_cols"]


# ---------------------------------------------------------------------------------------------- 1-D W_p
@jit()
def merge_sorted(us, A, vs, B, p, out):
    """out[r] = W_p^p between sorted supports us[r], vs[r] with cumulative breakpoints A[r], B[r] (last = 1).

    North-west-corner walk over the merged breakpoints (ties: A first, like the generic path); the quantile
    interval lengths and the sum are accumulated in float64.
    """
    R, n = us.shape
    m = vs.shape[1]
    for r in numba.prange(R):
        i = 0
        j = 0
        prev = 0.0
        acc = 0.0
        while i < n and j < m:
            a = A[r, i]
            b = B[r, j]
            d = np.float64(us[r, i]) - np.float64(vs[r, j])
            if p == 1.0:
                c = abs(d)
            elif p == 2.0:
                c = d * d
            else:
                c = abs(d) ** p
            if a <= b:
                acc += (a - prev) * c
                prev = a
                i += 1
            else:
                acc += (b - prev) * c
                prev = b
                j += 1
        out[r] = acc


def _sorted_cum(x, w):
    n = x.shape[-1]
    if w is None:
        xs = np.sort(x, axis=-1)
        cum = np.broadcast_to(np.arange(1, n + 1, dtype=np.float64) / n, xs.shape)
        return np.ascontiguousarray(xs), cum
    idx = np.argsort(x, axis=-1, kind="stable")
    xs = np.take_along_axis(x, idx, axis=-1)
    cum = np.cumsum(np.take_along_axis(np.asarray(w, np.float64), idx, axis=-1), axis=-1)
    cum /= cum[..., -1:]
    return np.ascontiguousarray(xs), np.ascontiguousarray(cum)


def w1d_value(u, v, uw, vw, p):
    """W_p^p for batched (..., n) / (..., m) supports (weights optional): NumPy sort + Numba merge."""
    batch = u.shape[:-1]
    n, m = u.shape[-1], v.shape[-1]
    us, A = _sorted_cum(u.reshape(-1, n), None if uw is None else uw.reshape(-1, n))
    vs, B = _sorted_cum(v.reshape(-1, m), None if vw is None else vw.reshape(-1, m))
    out = np.empty(us.shape[0], dtype=np.float64)
    merge_sorted(us, A, vs, B, float(p), out)
    return out.astype(u.dtype).reshape(batch)


# ---------------------------------------------------------------------------------------------- Sinkhorn
@jit(fastmath=True)
def lse_rows(K, s, col, out):
    """out[b, i] = log sum_j exp(col[b, j] - K[b, i, j] * s[b]) for a batch of (n, m) cost matrices.

    ``s[b] = 1/eps``; two passes per row (max, then sum of exp), float64 accumulation.
    """
    Bn, n, m = K.shape
    for t in numba.prange(Bn * n):
        b = t // n
        i = t - b * n
        sb = s[b]
        mx = -np.inf
        for j in range(m):
            z = col[b, j] - K[b, i, j] * sb
            if z > mx:
                mx = z
        if mx == -np.inf:
            out[b, i] = -np.inf
            continue
        acc = 0.0
        for j in range(m):
            acc += np.exp(np.float64(col[b, j] - K[b, i, j] * sb - mx))
        out[b, i] = mx + np.log(acc)


@jit(fastmath=True)
def lse_cols(K, s, row, out):
    """out[b, j] = log sum_i exp(row[b, i] - K[b, i, j] * s[b]); column pass in row-major order.

    Online (max, sum) per column updated row by row so the matrix is read contiguously.
    """
    Bn, n, m = K.shape
    nchunk = 8 if m >= 64 else 1
    csz = (m + nchunk - 1) // nchunk
    for t in numba.prange(Bn * nchunk):
        b = t // nchunk
        c = t - b * nchunk
        j0 = c * csz
        j1 = min(m, j0 + csz)
        if j0 >= j1:
            continue
        sb = s[b]
        w = j1 - j0
        mx = np.full(w, -np.inf)
        acc = np.zeros(w)
        for i in range(n):
            ri = row[b, i]
            if ri == -np.inf:
                continue
            for jj in range(w):
                z = ri - K[b, i, j0 + jj] * sb
                if z > mx[jj]:
                    acc[jj] = acc[jj] * np.exp(mx[jj] - z) + 1.0
                    mx[jj] = z
                else:
                    acc[jj] += np.exp(z - mx[jj])
        for jj in range(w):
            out[b, j0 + jj] = mx[jj] + np.log(acc[jj]) if acc[jj] > 0 else -np.inf
