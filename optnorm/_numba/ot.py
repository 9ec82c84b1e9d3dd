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
from ._common import _exp32, _exp_le0

__all__ = ["w1d_value", "merge_sorted", "softmin_rows", "softmin_cols", "sinkhorn_iterations", "box_half_params",
           "pairwise_box_w2", "pairwise_nwd_f32"]

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
    """out[b, i] = reg * log sum_j exp((h[b, j] - M[b, i, j]) / reg): max pass, then the sum of exps (_exp_le0).

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
            acc += _exp_le0((np.float64(hb[j]) - np.float64(Mr[j]) - mx) / reg)
        out[b, i] = mx + reg * math.log(acc)


@jit(fastmath=True)
def softmin_cols(M, h, reg, out):
    """out[b, j] = reg * log sum_i exp((h[b, i] - M[b, i, j]) / reg), reading M row by row.

    Each task owns a block of columns: a max pass, then a pass summing exps (_exp_le0), both over the rows in
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
                acc[jj] += _exp_le0((hi - np.float64(Mr[j0 + jj]) - mx[jj]) / reg)
        for jj in range(w):
            out[b, j0 + jj] = mx[jj] + reg * math.log(acc[jj]) if mx[jj] > -np.inf else -np.inf


def _exact_iterations(M, f, g, ra, rb, r, n_steps, lc, lr, phi=(1.0, 1.0), hook=None):
    p1, p2 = phi
    for _ in range(n_steps):
        softmin_cols(M, f, r, lc)
        g = rb - lc if p2 == 1.0 else (rb - p2 * lc).astype(lc.dtype)
        if hook is not None:
            g = np.ascontiguousarray(hook("cols", g, f), dtype=lc.dtype)
        softmin_rows(M, g, r, lr)
        f = ra - lr if p1 == 1.0 else (ra - p1 * lr).astype(lr.dtype)
        if hook is not None:
            f = np.ascontiguousarray(hook("rows", f, g), dtype=lr.dtype)
    softmin_cols(M, f, r, lc)
    return f, g, lc.copy()


class _Absorbed:
    """The half-steps as BLAS products with the kernel of an absorption point g0 (Schmitzer's stabilisation).

    With c_i = max_j (g0_j - M_ij) and K_ij = exp((g0_j - M_ij - c_i) / reg) (float64, row maximum 1):

        softmin_rows(g)_i = c_i + reg (V + log sum_j K_ij e^{v_j - V}),        v = (g - g0) / reg
        softmin_cols(f)_j = reg (W + log sum_i K_ij e^{w_i - W}) - g0_j,        w = (f + c) / reg

    exactly (V, W the maxima).  Exponents are floored at -500 (no subnormal, and NumPy's and BLAS's fast paths),
    which adds at most m e^-500 ~ m 7e-218 to a sum, so wherever a sum is >= 1e-180 the result equals the
    two-pass soft minimum to round-off (m < 1e13); a sum below that (the potentials moved too far from g0)
    makes the half-step report failure and the caller re-absorbs or falls back to the exact kernels.
    """

    LIMIT = 1e-180
    FLOOR = -500.0

    def __init__(self, M, g0, reg, pos_a, pos_b):
        self.reg, self.pos_a, self.pos_b = reg, pos_a, pos_b
        full = bool(pos_b.all())
        self.g0 = g0 if full else np.where(pos_b, g0, 0.0)
        z = self.g0[:, None, :] - M
        if not full:
            z[~np.broadcast_to(pos_b[:, None, :], z.shape)] = -np.inf
        self.c = z.max(axis=2)                                            # (B, n)
        z -= self.c[:, :, None]
        z /= reg
        np.maximum(z, self.FLOOR, out=z)
        np.exp(z, out=z)
        if not full:
            z *= pos_b[:, None, :]                                        # zero-weight columns contribute nothing
        self.K = z

    def rows(self, g):
        v = np.where(self.pos_b, (g - self.g0) / self.reg, -np.inf)
        V = v.max(axis=1, keepdims=True)
        e = np.exp(np.maximum(v - V, self.FLOOR)) * self.pos_b
        s = np.matmul(self.K, e[:, :, None])[:, :, 0]
        if not np.all((s >= self.LIMIT) | ~self.pos_a):
            return None
        return np.where(self.pos_a, self.c + self.reg * (V + np.log(np.where(self.pos_a, s, 1.0))), 0.0)

    def cols(self, f):
        w = np.where(self.pos_a, (f + self.c) / self.reg, -np.inf)
        W = w.max(axis=1, keepdims=True)
        e = np.exp(np.maximum(w - W, self.FLOOR)) * self.pos_a
        t = np.matmul(e[:, None, :], self.K)[:, 0, :]
        if not np.all((t >= self.LIMIT) | ~self.pos_b):
            return None
        return np.where(self.pos_b, self.reg * (W + np.log(np.where(self.pos_b, t, 1.0))) - self.g0, 0.0)


def _absorbed_iterations(M, f, g, ra, rb, reg, n_steps, pos_a, pos_b, exact, phi=(1.0, 1.0), hook=None,
                         state=None):
    """The block of iterations with absorbed kernels: a half-step the kernel cannot resolve re-absorbs at the
    current potentials (unless the kernel is fresh) and tries again; what still fails runs the exact kernels
    (the first iterations at a small reg, while the plan's columns are far from balanced).  ``state`` (a dict
    kept by the caller across blocks of one problem) carries the kernel over: a block then starts with the
    last one's kernel instead of a new exponential pass, re-absorbing only when a half-step needs it."""
    if state is None:
        state = {}
    if state.get("reg") != reg or "k" not in state:
        state.update(k=_Absorbed(M, g, reg, pos_a, pos_b), fresh=True, reg=reg)

    def half(kind, h, g_now):
        out = getattr(state["k"], kind)(h)
        if out is None and not state["fresh"]:
            state["k"] = _Absorbed(M, g_now, reg, pos_a, pos_b)
            out = getattr(state["k"], kind)(h)
        state["fresh"] = False
        return exact(kind, h) if out is None else out

    p1, p2 = phi
    for _ in range(n_steps):
        g = np.where(pos_b, rb - p2 * half("cols", f, g), -np.inf)
        if hook is not None:
            g = hook("cols", g, f)
        f = np.where(pos_a, ra - p1 * half("rows", g, g), -np.inf)
        if hook is not None:
            f = hook("rows", f, g)
    return f, g, half("cols", f, g)


def sinkhorn_iterations(M, f, g, loga, logb, reg, n_steps, phi=(1.0, 1.0), hook=None, cache=None):
    """``n_steps`` log-domain Sinkhorn iterations in cost units, then the column pass (see ``ot._common``);
    ``phi`` = (phi1, phi2) damps the soft minima (unbalanced transport: g = reg log b - phi2 softmin_cols(f)),
    ``hook(kind, new, other)`` adjusts each half-step's result (translation-invariant Sinkhorn adds a constant);
    ``cache`` (a dict the caller keeps for one problem) carries the absorbed kernel from block to block.

    Blocks of >= 4 iterations on problems whose float64 kernel fits in 512 MiB run the half-steps as BLAS
    products of an absorbed kernel (:class:`_Absorbed`, exact to round-off, an exponential pass per block and
    per re-absorption);
    otherwise, and for any half-step the absorbed kernel cannot resolve, the two-pass Numba kernels.  Neither
    produces a subnormal, so the cost per iteration does not depend on ``reg``.
    """
    M = np.ascontiguousarray(M)
    dt = M.dtype
    Bn, n, m = M.shape
    r = float(reg)
    lc = np.empty((Bn, m), dtype=dt)
    lr = np.empty((Bn, n), dtype=dt)
    if n_steps < 4 or M.size * 8 > 2 ** 29:
        f = np.ascontiguousarray(f, dtype=dt)
        g = np.ascontiguousarray(g, dtype=dt)
        return _exact_iterations(M, f, g, (r * loga).astype(dt, copy=False), (r * logb).astype(dt, copy=False),
                                 r, n_steps, lc, lr, phi, hook)

    def exact(kind, h):
        if kind == "cols":
            softmin_cols(M, np.ascontiguousarray(h, dtype=dt), r, lc)
            return lc.astype(np.float64)
        softmin_rows(M, np.ascontiguousarray(h, dtype=dt), r, lr)
        return lr.astype(np.float64)

    la, lb = np.asarray(loga, np.float64), np.asarray(logb, np.float64)
    pos_a, pos_b = la > -np.inf, lb > -np.inf
    if cache is not None and "M64" not in cache:
        cache["M64"] = np.asarray(M, np.float64)
    M64 = cache["M64"] if cache is not None else np.asarray(M, np.float64)
    f, g, lcol = _absorbed_iterations(M64, np.asarray(f, np.float64), np.asarray(g, np.float64), r * la, r * lb, r,
                                      n_steps, pos_a, pos_b, exact, phi, hook, cache)
    lcol = np.where(pos_b, lcol, 0.0)
    return f.astype(dt), g.astype(dt), lcol.astype(dt)


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

