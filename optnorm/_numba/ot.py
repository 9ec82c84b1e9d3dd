"""Numba kernels for optnorm.ot: 1-D merge of sorted supports, log-domain Sinkhorn half-steps, pairwise boxes.

Plain loops over C-contiguous arrays, parallel over rows/problems; the callers in ``optnorm/ot/*`` do the
sorting, reshaping and allocation.  Parallel kernels use only :data:`optnorm._numba._rows.SAFE_FASTMATH`
(no reassociation), so a kernel loaded from the on-disk cache computes exactly what a fresh one does.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ._rows import SAFE_FASTMATH, jit
from .norm import _exp32

__all__ = ["w1d_value", "merge_sorted", "softmin_rows", "softmin_cols", "sinkhorn_iterations", "box_half_params",
           "pairwise_box_w2", "pairwise_nwd_f32"]

# exp(x) for x < -708 is subnormal in float64, and libm's exp (and every later add) is ~10-35x slower on
# subnormals: the terms of a log-sum-exp are flushed at this exponent instead (each is < 3e-308 of the
# largest term, which is 1, so the sum is unchanged).
_FLUSH = -708.0


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
def softmin_rows(M, h, reg, out):
    """out[b, i] = reg * log sum_j exp((h[b, j] - M[b, i, j]) / reg): max pass, then the sum of flushed exps.

    float64 accumulation; -inf entries of h (zero weights) contribute nothing; a row of -inf gives -inf.
    """
    Bn, n, m = M.shape
    for t in numba.prange(Bn * n):
        b = t // n
        i = t - b * n
        hb = h[b]
        Mr = M[b, i]
        mx = -np.inf
        for j in range(m):
            z = np.float64(hb[j]) - np.float64(Mr[j])
            mx = z if z > mx else mx
        if mx == -np.inf:
            out[b, i] = -np.inf
            continue
        acc = 0.0
        for j in range(m):
            e = (np.float64(hb[j]) - np.float64(Mr[j]) - mx) / reg
            acc += math.exp(e if e > _FLUSH else _FLUSH)
        out[b, i] = mx + reg * math.log(acc)


@jit(fastmath=True)
def softmin_cols(M, h, reg, out):
    """out[b, j] = reg * log sum_i exp((h[b, i] - M[b, i, j]) / reg), reading M row by row.

    Each task owns a block of columns: a max pass, then a pass summing flushed exps, both over the rows in
    memory order (float64 column accumulators).
    """
    Bn, n, m = M.shape
    nchunk = 8 if m >= 64 else 1
    csz = (m + nchunk - 1) // nchunk
    for t in numba.prange(Bn * nchunk):
        b = t // nchunk
        c = t - b * nchunk
        j0 = c * csz
        j1 = min(m, j0 + csz)
        if j0 >= j1:
            continue
        w = j1 - j0
        hb = h[b]
        mx = np.full(w, -np.inf)
        acc = np.zeros(w)
        for i in range(n):
            hi = np.float64(hb[i])
            if hi == -np.inf:
                continue
            Mr = M[b, i]
            for jj in range(w):
                z = hi - np.float64(Mr[j0 + jj])
                mx[jj] = z if z > mx[jj] else mx[jj]
        for i in range(n):
            hi = np.float64(hb[i])
            if hi == -np.inf:
                continue
            Mr = M[b, i]
            for jj in range(w):
                e = (hi - np.float64(Mr[j0 + jj]) - mx[jj]) / reg
                acc[jj] += math.exp(e if e > _FLUSH else _FLUSH)
        for jj in range(w):
            out[b, j0 + jj] = mx[jj] + reg * math.log(acc[jj]) if mx[jj] > -np.inf else -np.inf


def sinkhorn_iterations(M, f, g, loga, logb, reg, n_steps):
    """``n_steps`` log-domain Sinkhorn iterations in cost units, then the column pass (see ``ot._common``)."""
    M = np.ascontiguousarray(M)
    dt = M.dtype
    Bn, n, m = M.shape
    f = np.ascontiguousarray(f, dtype=dt)
    g = np.ascontiguousarray(g, dtype=dt)
    ra = (reg * loga).astype(dt, copy=False)
    rb = (reg * logb).astype(dt, copy=False)
    r = float(reg)
    lc = np.empty((Bn, m), dtype=dt)
    lr = np.empty((Bn, n), dtype=dt)
    for _ in range(n_steps):
        softmin_cols(M, f, r, lc)
        g = rb - lc
        softmin_rows(M, g, r, lr)
        f = ra - lr
    softmin_cols(M, f, r, lc)
    return f, g, lc


# ---------------------------------------------------------------------------------------------- boxes
def box_half_params(boxes: np.ndarray, format: str) -> np.ndarray:
    """(n, 4) array of (cx, cy, w/2, h/2) for axis-aligned boxes (tiny: O(n) NumPy)."""
    b = boxes
    if format == "xyxy":
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2,
                         (b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2], axis=1).astype(b.dtype, copy=False)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] / 2, b[:, 3] / 2], axis=1).astype(b.dtype, copy=False)


@jit(parallel=True, fastmath=True)
def pairwise_box_w2(p1, p2, out, kind, consts):
    """out[i, j] = W2^2 (kind 0), W2 (kind 1) or exp(-sqrt(W2^2 + eps)/C) (kind 2) of boxes i and j.

    ``consts`` = [1/C, eps] in the boxes' dtype, so float32 input stays in float32 arithmetic
    (a float64 constant would promote every entry).  The kind branch is hoisted out of the
    loops so that LLVM vectorises the inner loop over j.  Accumulates in the input dtype: the
    four squared differences are of O(box size) numbers (the caller scales extreme magnitudes).
    """
    n = p1.shape[0]
    m = p2.shape[1]  # p2 is transposed: (4, m), one contiguous row per parameter
    inv_c = consts[0]
    eps = consts[1]
    if kind == 0:
        for i in numba.prange(n):
            _row_d2(p1, p2, i, m, out[i])
    elif kind == 1:
        for i in numba.prange(n):
            row = out[i]
            _row_d2(p1, p2, i, m, row)
            for j in range(m):
                row[j] = math.sqrt(row[j])
    else:
        for i in numba.prange(n):
            row = out[i]
            _row_d2(p1, p2, i, m, row)
            for j in range(m):
                row[j] = math.exp(-math.sqrt(row[j] + eps) * inv_c)


@jit(parallel=False, fastmath=set(SAFE_FASTMATH), inline="always")  # inlined into parallel kernels
def _row_d2(p1, p2, i, m, row):
    x0 = p1[i, 0]
    x1 = p1[i, 1]
    x2 = p1[i, 2]
    x3 = p1[i, 3]
    a0 = p2[0]
    a1 = p2[1]
    a2 = p2[2]
    a3 = p2[3]
    for j in range(m):
        d0 = x0 - a0[j]
        d1 = x1 - a1[j]
        d2 = x2 - a2[j]
        d3 = x3 - a3[j]
        row[j] = d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3


@jit(parallel=True, fastmath=True)
def pairwise_nwd_f32(p1, p2, out, consts):
    """float32 NWD: out[i, j] = exp(-sqrt(W2^2 + eps) / C) with the shared vectorisable float32 exp.

    Without SVML, ``math.exp`` is a scalar libm call per entry (~6 ns: 100 ms for 4096 x 4096, 30x
    a copy of the output); ``_exp32`` (see ``_numba/norm.py``: Cody-Waite reduction, polynomial,
    exponent-bit insertion, exact 0 below the float32 normal range) is plain arithmetic that LLVM
    vectorises across the row.
    """
    n = p1.shape[0]
    m = p2.shape[1]
    inv_c = consts[0]
    eps = consts[1]
    for i in numba.prange(n):
        row = out[i]
        _row_d2(p1, p2, i, m, row)
        for j in range(m):
            row[j] = _exp32(-math.sqrt(row[j] + eps) * inv_c)


# ---------------------------------------------------------------------------------------------- cache probes
def cache_probes() -> dict:
    """Every kernel on adversarial inputs (see :func:`optnorm.testing.numba_fingerprint`): costs and potentials
    near the float range, -inf potentials (zero weights), sizes that take the chunked column path, both dtypes.
    Fresh and cached kernels must return these bit for bit."""
    rng = np.random.default_rng(0)
    out = {}
    for dt, big in ((np.float64, 1e300), (np.float32, 1e30)):
        for n, m in ((5, 4), (50, 4), (33, 130)):
            M = (rng.random((2, n, m)) * big).astype(dt)
            for hscale in (0.0, big):
                for reg in (0.5, 1e-3, 10.0):
                    hr = (rng.random((2, m)) * hscale).astype(dt)
                    hc = (-rng.random((2, n)) * hscale).astype(dt)
                    hr[0, 0] = -np.inf
                    hc[1, -1] = -np.inf
                    o_r = np.empty((2, n), dt)
                    o_c = np.empty((2, m), dt)
                    softmin_rows(M, hr, reg, o_r)
                    softmin_cols(M, hc, reg, o_c)
                    tag = f"{np.dtype(dt).name}:{n}x{m}:h{hscale:g}:reg{reg:g}"
                    out[f"softmin_rows:{tag}"] = o_r
                    out[f"softmin_cols:{tag}"] = o_c
        u = (rng.standard_normal((3, 40)) * big).astype(dt)
        v = (rng.standard_normal((3, 30)) * big).astype(dt)
        for p in (1.0, 2.0, 3.5):
            out[f"w1d:{np.dtype(dt).name}:p{p:g}"] = w1d_value(u, v, None, rng.random((3, 30)), p)
        p1 = (rng.standard_normal((17, 4)) * 1e3).astype(dt)
        p2 = np.ascontiguousarray((rng.standard_normal((23, 4)) * 1e3).astype(dt).T)
        for kind in (0, 1, 2):
            buf = np.empty((17, 23), dt)
            pairwise_box_w2(p1, p2, buf, kind, np.array([1 / 12.8, 1e-7], dt))
            out[f"boxes:{np.dtype(dt).name}:kind{kind}"] = buf
        if dt == np.float32:
            buf = np.empty((17, 23), dt)
            pairwise_nwd_f32(p1, p2, buf, np.array([1 / 12.8, 1e-7], dt))
            out["nwd_f32"] = buf
    return out

