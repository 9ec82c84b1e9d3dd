"""Numba kernels of :mod:`optnorm.norm`: softmax / log_softmax (safe, online, two-pass), layer_norm, rms_norm,
the fused cross-entropy, the top-k gates and the batch-norm channel statistics.

Row kernels take C-contiguous ``(rows, n)`` arrays, run ``prange`` over rows and write into preallocated
outputs (:func:`optnorm._numba._rows.row_kernel`: parallel and serial builds); the Python wrappers move
axes and honour ``out=`` through :class:`optnorm._numba._rows.Rows`.

Numerical and speed decisions (measured on a 2-core AVX-512 machine):

- Numba has no SVML here, so ``np.exp`` is a scalar libm call (4x slower than torch's softmax).
  ``_exp32`` is the Cephes ``expf`` scheme written so LLVM vectorises it: Cody-Waite reduction
  x = k ln2 + r with ln2 = 0.693359375 - 2.12194440e-4, a degree-7 polynomial for e^r (max rel. error
  ~1e-7), 2^k by exponent-bit insertion.  Inputs below -87.34 return exactly 0 (masked entries stay 0).
- A float max reduction does not vectorise; 16 independent lane maxima do (5x faster max pass).
- Fastmath flags are chosen per function: reductions (small helpers, inlined by LLVM) get ``reassoc`` so sums
  vectorise with lane partials; elementwise passes and the exp reduction do not, because reassociation turns
  ``(x - m) - log s`` into ``x - (m + log s)`` (wrong log_softmax at |x| ~ 1e30) and breaks Cody-Waite.
  No function gets ``nnan``/``ninf``: masked rows and NaN propagation need IEEE inf/NaN.
- layer_norm / rms_norm accumulate sums of x and squares in float64 even for float32 rows: no overflow of
  (x - mean)^2 up to |x| ~ 1e38 (pytorch/pytorch#178123), ~1e-16 relative error at n = 262144, and never the
  one-pass E[x^2] - E[x]^2 variance.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir as llir
from numba import prange
from numba.core import types
from numba.extending import intrinsic, overload

from ._common import (_BLOCK, _C1, _C2, _F32, _FM, _FM_RED, _HALF32, _LOG2E32, _dot, _exp, _exp32, _exp_small,
                      _exp_store_sum, _fill_masked, _ln_bwd_sums, _pow2_32, _pow2_64, _rms_bwd_sums, _rowmax, _rstd64,
                      _scalar_like, _sum, _sum64, _sum_exp, _zero)
from ._rows import Rows, row_kernel

__all__ = ["softmax", "softmax_bwd", "layer_norm", "layer_norm_bwd", "rms_norm", "rms_norm_bwd", "cross_entropy_rows",
           "cross_entropy_grad", "topk_softmax", "soft_topk", "batch_norm_forward", "using_svml"]

def using_svml() -> bool:
    return bool(getattr(numba.config, "USING_SVML", False))


# ------------------------------------------------------------------------------------------ softmax kernels
@row_kernel(fastmath=_FM)
def _softmax_safe_rows(x, y, log, masked_zero):
    rows, n = x.shape
    for r in prange(rows):
        xr = x[r]
        yr = y[r]
        m = _rowmax(xr)
        if m == -np.inf:
            _fill_masked(yr, log, masked_zero)
            continue
        if log:
            ls = np.log(_sum_exp(xr, m))
            for j in range(n):
                yr[j] = (xr[j] - m) - ls
        else:
            s = _exp_store_sum(xr, yr, m)
            inv = _scalar_like(1.0, s) / s
            for j in range(n):
                yr[j] = yr[j] * inv


@row_kernel(fastmath=_FM)
def _softmax_online_rows(x, y, log, masked_zero):
    """Online normaliser (Milakov & Gimelshein) per block: (m, d) <- (m', d e^{m - m'} + sum_block e^{x - m'})."""
    rows, n = x.shape
    for r in prange(rows):
        xr = x[r]
        yr = y[r]
        d = _zero(xr)
        m = _scalar_like(-np.inf, d)  # keep the row's float type (a float64 m would route exp to libm)
        for b0 in range(0, n, _BLOCK):
            b1 = min(b0 + _BLOCK, n)
            blk = xr[b0:b1]  # 0-based view: loops over a runtime offset keep Numba's wraparound checks
            bm = _rowmax(blk)
            if bm > m:
                if m != -np.inf:  # first-step guard: exp(-inf - -inf) must count as 0
                    d = d * _exp(m - bm)
                m = bm
            if m == -np.inf:
                continue
            d += _sum_exp(blk, m)
        if m == -np.inf:
            _fill_masked(yr, log, masked_zero)
            continue
        if log:
            ld = np.log(d)
            for j in range(n):
                yr[j] = (xr[j] - m) - ld
        else:
            inv = _scalar_like(1.0, d) / d
            for j in range(n):
                yr[j] = _exp(xr[j] - m) * inv


def _pow2f(d, like):
    return 2.0 ** d


@overload(_pow2f)
def _ol_pow2f(d, like):
    """2**d for integer-valued float d <= 0, 0 below the normal range."""
    if like == types.float32:
        def impl(d, like):
            k = d if d > _F32(-127.0) else _F32(-127.0)  # a float64 literal would promote the whole chain
            return _pow2_32(np.int32(k))
        return impl

    def impl64(d, like):
        k = d if d > -1023.0 else -1023.0
        return _pow2_64(int(k))
    return impl64


@numba.njit(fastmath=False, cache=True)
def _reduce32(v):
    """(k, r) with v = k ln2 + r, |r| <= ln2/2: Cody-Waite while |k| < 2**14, base 2 beyond (exact f = u - k),
    so |v| up to 2e38 stays finite.  No fastmath at all, and kept out of the callers'
    bodies (an overload body inherits the caller's flags): reassociation loses the Cody-Waite split, and
    contracting u - k into fma(v, log2e, -k) makes f inexact (k was rounded from the product)."""
    vc = _F32(-2.0e38) if v < _F32(-2.0e38) else (_F32(2.0e38) if v > _F32(2.0e38) else v)
    u = vc * _LOG2E32
    k = np.floor(u + _HALF32)
    rcw = (vc - k * _C1) - k * _C2
    rb2 = (u - k) * _F32(0.6931471805599453)
    rr = rcw if abs(k) < _F32(16384.0) else rb2
    return k, rr


@numba.njit(fastmath=False, cache=True)
def _reduce64(v):
    vc = -1.0e308 if v < -1.0e308 else (1.0e308 if v > 1.0e308 else v)
    u = vc * 1.4426950408889634
    k = np.floor(u + 0.5)
    rcw = (vc - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10
    rb2 = (u - k) * 0.6931471805599453
    rr = rcw if abs(k) < 16384.0 else rb2
    return k, rr


def _reduce(v, like):
    """Pure-Python fallback (NUMBA_DISABLE_JIT=1); compiled calls go through the overload below."""
    return _reduce32(v) if isinstance(like, np.float32) else _reduce64(v)


@overload(_reduce)
def _ol_reduce(v, like):
    if like == types.float32:
        return lambda v, like: _reduce32(v)
    return lambda v, like: _reduce64(v)


@numba.njit(fastmath=_FM, cache=True)
def _tp_block_terms(xb, yb, kb, z):
    """yb[j] = m_j 2^(n_j - kb) for a block, with e^x_j = m_j 2^n_j (-inf entries give 0, NaN propagates)."""
    for j in range(xb.shape[0]):
        v = xb[j]
        k, rr = _reduce(z if v == -np.inf else v, z)
        t = _exp_small(rr) * _pow2f(k - kb, z)
        yb[j] = z if v == -np.inf else t


@row_kernel(fastmath=_FM)
def _softmax_two_pass_rows(x, y, log, masked_zero):
    """Dukhan & Ablavatski: e^x = m 2^n with a float exponent n; pass 1 accumulates (M, N), pass 2 writes
    m 2^(n - N) / M.  No exp of a large argument is ever formed, so any finite input is safe.

    Pass 1 works on L1-sized blocks so that it vectorises: the block exponent is n(max x) (n is monotone
    in x, so this is the block's largest n_i), the block sum is a plain vectorised reduction, and blocks
    merge as (M, N) (+) (M_b, N_b) by exponent shifts.  The row is read from memory once per pass.
    """
    rows, n = x.shape
    for r in prange(rows):
        xr = x[r]
        yr = y[r]
        z = _zero(xr)
        ln2 = _scalar_like(0.6931471805599453, z)
        big_m = z
        big_n = z
        started = False
        bad = False
        for b0 in range(0, n, _BLOCK):
            b1 = min(b0 + _BLOCK, n)
            xb = xr[b0:b1]
            yb = yr[b0:b1]
            bmax = _rowmax(xb)
            if bmax == np.inf:
                bad = True
            if bmax == -np.inf:
                continue
            kb, _ = _reduce(bmax, z)
            _tp_block_terms(xb, yb, kb, z)  # the output row is the scratch space (L1-resident)
            mb = _sum(yb)
            if not started:  # no sentinel exponent: any finite float exponent is possible (|k| up to 2.9e38)
                big_m = mb
                big_n = kb
                started = True
            elif kb > big_n:
                big_m = big_m * _pow2f(big_n - kb, z) + mb
                big_n = kb
            else:
                big_m = big_m + mb * _pow2f(kb - big_n, z)
        if bad or big_m != big_m:  # the row holds NaN or +inf -> NaN like torch
            for j in range(n):
                yr[j] = np.nan
            continue
        if big_m == 0:
            _fill_masked(yr, log, masked_zero)
            continue
        if log:
            lm = np.log(big_m)
            for j in range(n):
                v = xr[j]
                if v == -np.inf:
                    yr[j] = -np.inf
                else:
                    k, rr = _reduce(v, z)
                    yr[j] = ((k - big_n) * ln2 + rr) - lm
        else:
            inv = _scalar_like(1.0, z) / big_m
            for j in range(n):
                v = xr[j]
                k, rr = _reduce(z if v == -np.inf else v, z)
                e = _exp_small(rr) * _pow2f(k - big_n, z) * inv
                yr[j] = z if v == -np.inf else e


@row_kernel(fastmath=_FM)
def _softmax_bwd_rows(y, g, dx, log, masked_zero):
    rows, n = y.shape
    for r in prange(rows):
        yr = y[r]
        gr = g[r]
        dr = dx[r]
        if log:
            if masked_zero and yr[0] == -np.inf and _rowmax(yr) == -np.inf:
                for j in range(n):
                    dr[j] = 0
                continue
            s = _sum(gr)
            for j in range(n):
                dr[j] = gr[j] - _exp(yr[j]) * s
        else:
            s = _dot(gr, yr)
            for j in range(n):
                dr[j] = yr[j] * (gr[j] - s)


# ------------------------------------------------------------------------------------------ layer / rms kernels
@row_kernel(fastmath=_FM)
def _layer_norm_rows(x, w, b, y, mean, rstd, eps, has_w, has_b, fixed, fs):
    rows, n = x.shape
    for r in prange(rows):
        xr = x[r]
        yr = y[r]
        mu = _sum64(xr) / n
        if fixed:
            rs = 1.0 / fs[r]
        else:  # two-pass variance in float64: no overflow for |x| up to ~1e38
            rs = _rstd64(xr, mu, n, eps)
        mean[r] = mu
        rstd[r] = rs
        mu_c = mean[r]  # the output pass runs in the row's dtype with float64-accurate statistics
        rs_c = rstd[r]
        if has_w and has_b:
            for j in range(n):
                yr[j] = (xr[j] - mu_c) * rs_c * w[j] + b[j]
        elif has_w:
            for j in range(n):
                yr[j] = (xr[j] - mu_c) * rs_c * w[j]
        elif has_b:
            for j in range(n):
                yr[j] = (xr[j] - mu_c) * rs_c + b[j]
        else:
            for j in range(n):
                yr[j] = (xr[j] - mu_c) * rs_c


_FLUSH = 256  # rows accumulated into the row-dtype dweight partials before they are added in float64


@numba.njit(fastmath=_FM_RED, cache=True)
def _flush(acc64, part):
    for j in range(part.shape[0]):
        acc64[j] += part[j]
        part[j] = 0


@row_kernel(fastmath=_FM)
def _layer_norm_bwd_rows(x, g, w, mean, rstd, dx, dw_part, db_part, has_w, fixed):
    """dx per row; dweight/dbias as per-chunk partials: row-dtype sums over <= 256 rows (vectorisable, one
    dtype in the loop), flushed into float64 partials (accuracy over many rows)."""
    rows, n = x.shape
    nchunk = dw_part.shape[0]
    per = (rows + nchunk - 1) // nchunk
    for c in prange(nchunk):
        r0 = c * per
        r1 = min(rows, r0 + per)
        dwp = np.zeros(n, x.dtype)
        dbp = np.zeros(n, x.dtype)
        for r in range(r0, r1):
            xr = x[r]
            gr = g[r]
            dr = dx[r]
            mu = mean[r]
            rs = rstd[r]
            c1, c2 = _ln_bwd_sums(xr, gr, w, mu, rs, dwp, dbp, has_w)
            nn = _scalar_like(float(n), c1)  # keep the row dtype (int / float32 would be float64 in Numba)
            c1 = c1 / nn
            c2 = 0 * c2 if fixed else c2 / nn
            if has_w:
                for j in range(n):
                    dr[j] = rs * (gr[j] * w[j] - c1 - (xr[j] - mu) * rs * c2)
            else:
                for j in range(n):
                    dr[j] = rs * (gr[j] - c1 - (xr[j] - mu) * rs * c2)
            if (r - r0) % _FLUSH == _FLUSH - 1 or r == r1 - 1:
                _flush(dw_part[c], dwp)
                _flush(db_part[c], dbp)


@row_kernel(fastmath=_FM)
def _rms_norm_rows(x, w, y, rstd, eps, has_w):
    rows, n = x.shape
    for r in prange(rows):
        xr = x[r]
        yr = y[r]
        rstd[r] = _rstd64(xr, 0.0, n, eps)
        rs = rstd[r]
        if has_w:
            for j in range(n):
                yr[j] = xr[j] * rs * w[j]
        else:
            for j in range(n):
                yr[j] = xr[j] * rs


@row_kernel(fastmath=_FM)
def _rms_norm_bwd_rows(x, g, w, rstd, dx, dw_part, has_w):
    rows, n = x.shape
    nchunk = dw_part.shape[0]
    per = (rows + nchunk - 1) // nchunk
    for c in prange(nchunk):
        r0 = c * per
        r1 = min(rows, r0 + per)
        dwp = np.zeros(n if has_w else 1, x.dtype)
        for r in range(r0, r1):
            xr = x[r]
            gr = g[r]
            dr = dx[r]
            rs = rstd[r]
            c2 = _rms_bwd_sums(xr, gr, w, rs, dwp, has_w) / _scalar_like(float(n), rs)
            if has_w:
                for j in range(n):
                    dr[j] = rs * (gr[j] * w[j] - xr[j] * rs * c2)
            else:
                for j in range(n):
                    dr[j] = rs * (gr[j] - xr[j] * rs * c2)
            if has_w and ((r - r0) % _FLUSH == _FLUSH - 1 or r == r1 - 1):
                _flush(dw_part[c], dwp)


# ------------------------------------------------------------------------------------------ Python wrappers
def _vec(p, dtype, n):
    return np.ascontiguousarray(p, dtype=dtype).reshape(-1) if p is not None else np.zeros(1 if n else 0, dtype)


def _nchunks(kernel, x2):
    """Chunks of rows for the kernels that accumulate per-chunk partials: one per thread (one when serial)."""
    if kernel.build_for(x2) is kernel.serial:
        return 1
    return max(1, min(x2.shape[0], numba.get_num_threads()))


_SOFTMAX_KERNELS = {"safe": _softmax_safe_rows, "online": _softmax_online_rows, "two_pass": _softmax_two_pass_rows}


def softmax(x, *, axis, method, masked_row, log, out=None):
    """softmax / log_softmax of a float32/float64 NumPy array along ``axis`` (``out=`` written in place)."""
    rows = Rows(x.shape, axis)
    y, out = rows.output(out, x.dtype)
    _SOFTMAX_KERNELS[method](rows.view(x), y, bool(log), masked_row == "zero")
    return rows.finish(y, out)


def softmax_bwd(y, dy, *, axis, log, masked_row):
    rows = Rows(y.shape, axis)
    dx, _ = rows.output(None, y.dtype)
    _softmax_bwd_rows(rows.view(y), rows.view(dy, y.dtype), dx, bool(log), masked_row == "zero")
    return rows.finish(dx)


def layer_norm(x, weight, bias, *, axes, eps, fixed_std, out=None):
    """Returns (y, mean, rstd); mean and rstd are per row, shape (rows,)."""
    rows = Rows(x.shape, axes)
    x2 = rows.view(x)
    n = rows.n
    buf, out = rows.output(out, x.dtype)
    mean = np.empty(rows.count, x.dtype)
    rstd = np.empty(rows.count, x.dtype)
    fixed = fixed_std is not None
    if fixed:
        lead = tuple(s for i, s in enumerate(x.shape) if i not in rows.axes)
        fs = np.ascontiguousarray(np.broadcast_to(np.asarray(fixed_std, dtype=np.float64), lead)).reshape(-1)
    else:
        fs = np.ones(1, np.float64)
    _layer_norm_rows(x2, _vec(weight, x.dtype, n), _vec(bias, x.dtype, n), buf, mean, rstd, float(eps),
                     weight is not None, bias is not None, fixed, fs)
    return rows.finish(buf, out), mean, rstd


def layer_norm_bwd(x, weight, mu, rstd, dy, *, axes, fixed, has_bias):
    rows = Rows(x.shape, axes)
    x2 = rows.view(x)
    n = rows.n
    dx, _ = rows.output(None, x.dtype)
    k = _nchunks(_layer_norm_bwd_rows, x2)
    dw_part = np.zeros((k, n), np.float64)
    db_part = np.zeros((k, n), np.float64)
    _layer_norm_bwd_rows(x2, rows.view(dy, x.dtype), _vec(weight, x.dtype, n),
                         np.ascontiguousarray(mu, dtype=x.dtype).reshape(-1),
                         np.ascontiguousarray(rstd, dtype=x.dtype).reshape(-1), dx, dw_part, db_part,
                         weight is not None, bool(fixed))
    wshape = tuple(x.shape[a] for a in rows.axes)
    dw = dw_part.sum(axis=0).astype(weight.dtype).reshape(wshape) if weight is not None else None
    db = db_part.sum(axis=0).astype(x.dtype).reshape(wshape) if has_bias else None
    return rows.finish(dx), dw, db


def rms_norm(x, weight, *, axes, eps, out=None):
    """Returns (y, rstd) with rstd per row, shape (rows,)."""
    rows = Rows(x.shape, axes)
    buf, out = rows.output(out, x.dtype)
    rstd = np.empty(rows.count, x.dtype)
    _rms_norm_rows(rows.view(x), _vec(weight, x.dtype, rows.n), buf, rstd, float(eps), weight is not None)
    return rows.finish(buf, out), rstd


def rms_norm_bwd(x, weight, rstd, dy, *, axes):
    rows = Rows(x.shape, axes)
    x2 = rows.view(x)
    n = rows.n
    dx, _ = rows.output(None, x.dtype)
    k = _nchunks(_rms_norm_bwd_rows, x2)
    dw_part = np.zeros((k, n) if weight is not None else (k, 1), np.float64)
    _rms_norm_bwd_rows(x2, rows.view(dy, x.dtype), _vec(weight, x.dtype, n),
                       np.ascontiguousarray(rstd, dtype=x.dtype).reshape(-1), dx, dw_part, weight is not None)
    dw = None
    if weight is not None:
        dw = dw_part.sum(axis=0).astype(weight.dtype).reshape(tuple(x.shape[a] for a in rows.axes))
    return rows.finish(dx), dw


# ------------------------------------------------------------------------------------------ fused cross-entropy
@row_kernel(fastmath=_FM)
def _ce_fwd_rows(x, t, w, has_w, need_sw, lse, xt, sw):
    """Per row: log-sum-exp, the target logit and (for label smoothing) sum_c w_c x_c, in one sweep of the row."""
    rows, c = x.shape
    for r in prange(rows):
        xr = x[r]
        m = _rowmax(xr)
        lse[r] = m + np.log(_sum_exp(xr, m))
        xt[r] = xr[t[r]]
        if need_sw:
            sw[r] = _dot(w, xr) if has_w else _sum(xr)


@row_kernel(fastmath=_FM)
def _ce_bwd_rows(x, t, lse, alpha, beta, gamma, w, has_w, dx):
    """dx_j = alpha e^(x_j - lse) - gamma w_j - beta [j = t]: softmax, smoothing and z-loss terms in one write."""
    rows, c = x.shape
    for r in prange(rows):
        xr = x[r]
        dr = dx[r]
        a = alpha[r]
        lr = lse[r]
        gm = gamma[r]
        if has_w:
            for j in range(c):
                dr[j] = a * _exp(xr[j] - lr) - gm * w[j]
        else:
            for j in range(c):
                dr[j] = a * _exp(xr[j] - lr) - gm
        dr[t[r]] -= beta[r]


def cross_entropy_rows(x2, t0, weight, need_sw):
    """(lse, x_target, sum_c w_c x_c) per row of a C-contiguous (rows, C) float array; t0 has no ignored index."""
    rows, c = x2.shape
    lse = np.empty(rows, x2.dtype)
    xt = np.empty(rows, x2.dtype)
    sw = np.empty(rows if need_sw else 1, x2.dtype)
    w = _vec(weight, x2.dtype, c)
    _ce_fwd_rows(x2, np.ascontiguousarray(t0, dtype=np.int64), w, weight is not None, bool(need_sw), lse, xt, sw)
    return lse, xt, (sw if need_sw else None)


def cross_entropy_grad(x2, t0, lse, alpha, beta, gamma, weight):
    rows, c = x2.shape
    dx = np.empty_like(x2)
    dt = x2.dtype
    _ce_bwd_rows(x2, np.ascontiguousarray(t0, dtype=np.int64), lse, np.ascontiguousarray(alpha, dt),
                 np.ascontiguousarray(beta, dt), np.ascontiguousarray(gamma, dt), _vec(weight, dt, c),
                 weight is not None, dx)
    return dx


# ------------------------------------------------------------------------------------------ gates (top-k)
@row_kernel
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


@row_kernel
def soft_topk_rows(z, k, alpha, n_iter, out):
    """Soft top-k of each row: bisection for t with sum_j sigmoid(alpha (z_j + t)) = k, then the sigmoids.

    The same bracket and iteration count as the generic path (``optnorm.norm.gates._soft_topk_bisect``),
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


def topk_softmax(z, k, inv_t):
    """(dense gate, indices) of ``z`` (..., n) float32/float64 along the last axis."""
    n = z.shape[-1]
    rows = np.ascontiguousarray(z.reshape(-1, n))
    out = np.empty_like(rows)
    idx = np.empty((rows.shape[0], k), dtype=np.int64)
    chunks = 1 if topk_softmax_rows.build_for(rows) is topk_softmax_rows.serial else \
        max(1, min(rows.shape[0], 4 * numba.get_num_threads()))
    topk_softmax_rows(rows, k, float(inv_t), out, idx, chunks)
    return out.reshape(z.shape), idx.reshape(z.shape[:-1] + (k,))


def soft_topk(z, k, alpha, n_iter):
    """Soft top-k of ``z`` (..., n) along the last axis (1 <= k < n)."""
    n = z.shape[-1]
    rows = np.ascontiguousarray(z.reshape(-1, n))
    out = np.empty_like(rows)
    soft_topk_rows(rows, k, float(alpha), n_iter, out)
    return out.reshape(z.shape)


# ------------------------------------------------------------------------------------------ batch statistics
@row_kernel(par_axis=1)
def bn_channel_stats(x3, mean, var, scale):
    """Per-channel mean and biased variance of x3 (N, C, M) in float64: variance = var * scale**2, where scale
    is 1 unless the squares overflow float64 (|x| ~ 1e154 and up), then the channel's largest deviation."""
    N, C, M = x3.shape
    inv = 1.0 / (N * M)
    for c in prange(C):
        s = 0.0
        for n in range(N):
            for m in range(M):
                s += x3[n, c, m]
        mu = s * inv
        q = 0.0
        for n in range(N):
            for m in range(M):
                d = x3[n, c, m] - mu
                q += d * d
        sc = 1.0
        if q == np.inf:
            for n in range(N):
                for m in range(M):
                    d = abs(x3[n, c, m] - mu)
                    sc = d if d > sc else sc
            q = 0.0
            for n in range(N):
                for m in range(M):
                    d = (x3[n, c, m] - mu) / sc
                    q += d * d
        mean[c] = mu
        var[c] = q * inv
        scale[c] = sc


@row_kernel(par_axis=1)
def bn_channel_apply(x3, mean, scale, shift, out):
    """out[n, c, m] = (x3[n, c, m] - mean[c]) * scale[c] + shift[c] (centred first: no cancellation)."""
    N, C, M = x3.shape
    for c in prange(C):
        mu = mean[c]
        s = scale[c]
        t = shift[c]
        for n in range(N):
            for m in range(M):
                out[n, c, m] = (x3[n, c, m] - mu) * s + t


def batch_norm_forward(x, running_mean, running_var, weight, bias, training, momentum, eps, axis, unbiased=True):
    """NumPy float32/float64 batch_norm forward (no sample weights); returns (y, new_rm, new_rv)."""
    xm = np.moveaxis(x, axis, 1)
    shp = xm.shape
    N, C = shp[0], shp[1]
    x3 = np.ascontiguousarray(xm).reshape(N, C, -1)
    if training:
        mean = np.empty(C, np.float64)
        v = np.empty(C, np.float64)
        sc = np.empty(C, np.float64)
        bn_channel_stats(x3, mean, v, sc)
        scale = 1.0 / (sc * np.sqrt(v + eps / sc / sc))
        with np.errstate(over="ignore"):
            var = v * sc * sc  # inf only when the variance overflows float64 (then no running update exists)
    else:
        mean = running_mean.astype(np.float64)
        var = running_var.astype(np.float64)
        scale = 1.0 / np.sqrt(var + eps)
    if weight is not None:
        scale = scale * weight.astype(np.float64)
    shift = np.zeros(C) if bias is None else bias.astype(np.float64)
    out = np.empty(x3.shape, x.dtype)
    bn_channel_apply(x3, mean, scale, shift, out)
    y = np.moveaxis(out.reshape(shp), 1, axis)
    if not training:
        return y, running_mean, running_var
    if running_mean is None:
        return y, None, None
    n = N * x3.shape[2]
    rm = ((1 - momentum) * running_mean.astype(np.float64) + momentum * mean).astype(running_mean.dtype)
    with np.errstate(over="ignore"):
        rv = ((1 - momentum) * running_var.astype(np.float64)
              + momentum * var * (n / (n - 1) if unbiased else 1.0)).astype(running_var.dtype)
    return y, rm, rv
