"""Numba row kernels for wave-2 normalization functions: fused top-k selection + softmax (MoE gates)."""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._rows import jit

__all__ = ["topk_softmax_rows"]


@jit(parallel=True, fastmath=False)
def topk_softmax_rows(x, k, inv_t, out, idx, n_chunks):
    """One pass per row: keep the k largest entries (ties: lowest index first), softmax over them.

    x: (R, n) C-contiguous; out: (R, n) dense gate (zeros off the top-k); idx: (R, k) int64, the
    selected columns by decreasing logit.  Rows are split into ``n_chunks`` contiguous chunks so
    the small top-k buffers are allocated once per chunk, not once per row.  The running top-k
    buffer is sorted; a new value is inserted only if strictly greater than the current k-th,
    so among equal logits the earlier index stays: the documented tie rule.  Exponentials and
    the sum accumulate in float64 (k terms: the cost is negligible, float32 rows gain ~1 ulp).
    """
    R, n = x.shape
    step = (R + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        vals = np.empty(k, dtype=x.dtype)
        inds = np.empty(k, dtype=np.int64)
        r0 = c * step
        r1 = min(R, r0 + step)
        for r in range(r0, r1):
            row = x[r]
            cnt = 0
            for j in range(n):
                v = row[j]
                if cnt == k and not v > vals[k - 1]:
                    continue
                # position: first slot whose value is strictly smaller than v
                pos = cnt if cnt < k else k - 1
                while pos > 0 and vals[pos - 1] < v:
                    pos -= 1
                last = cnt if cnt < k else k - 1
                q = last
                while q > pos:
                    vals[q] = vals[q - 1]
                    inds[q] = inds[q - 1]
                    q -= 1
                vals[pos] = v
                inds[pos] = j
                if cnt < k:
                    cnt += 1
            orow = out[r]
            for j in range(n):
                orow[j] = 0.0
            m = vals[0]
            s = 0.0
            for q in range(k):
                s += math.exp((np.float64(vals[q]) - m) * inv_t)
            inv_s = 1.0 / s
            for q in range(k):
                orow[inds[q]] = math.exp((np.float64(vals[q]) - m) * inv_t) * inv_s
                idx[r, q] = inds[q]


@jit(parallel=True, fastmath=False)
def soft_topk_rows(z, k, alpha, n_iter, out):
    """Soft top-k of each row: bisection for t with sum_j sigmoid(alpha (z_j + t)) = k, then the sigmoids.

    The same bracket and iteration count as the generic path (``optnorm.norm.gates._soft_topk_core``),
    one row per iteration of the parallel loop, sums accumulated in float64.  Requires 1 <= k < n.
    """
    R, n = z.shape
    r = k / n
    c = math.log(r / (1.0 - r)) / alpha
    for i in prange(R):
        row = z[i]
        mx = np.float64(row[0])
        mn = np.float64(row[0])
        for j in range(1, n):
            v = np.float64(row[j])
            if v > mx:
                mx = v
            if v < mn:
                mn = v
        lo = c - mx
        hi = c - mn
        for _ in range(n_iter):
            mid = (lo + hi) / 2
            s = 0.0
            for j in range(n):
                u = alpha * (np.float64(row[j]) + mid)
                if u >= 0:
                    s += 1.0 / (1.0 + math.exp(-u))
                else:
                    e = math.exp(u)
                    s += e / (1.0 + e)
            if s < k:
                lo = mid
            else:
                hi = mid
        t = (lo + hi) / 2
        orow = out[i]
        for j in range(n):
            u = alpha * (np.float64(row[j]) + t)
            if u >= 0:
                orow[j] = 1.0 / (1.0 + math.exp(-u))
            else:
                e = math.exp(u)
                orow[j] = e / (1.0 + e)
