"""Numba kernels of :func:`optnorm.norm.scaled_dot_product_attention`: blocked online-softmax ("flash")
forward and backward that never form the (L, S) score matrix.

Layout (built by :func:`sdpa_fwd` / :func:`sdpa_bwd` below, every array C-contiguous):

- *pairs* ``p = 0..P-1`` are the positions of the broadcast output batch ``(N, ..., Hq)``; ``qmap[p]`` and
  ``kvmap[p]`` index the query heads and the key/value heads, so broadcast batch dimensions and grouped-query
  heads (query head ``h`` reads key head ``h // (Hq / H)``, torch's ``repeat_interleave``) are index maps,
  not copies;
- queries are pre-multiplied by ``scale`` and padded to whole blocks, ``qs (Pq, nqb, Bq, E)``; keys and values
  are padded to whole blocks of ``Bk`` rows, ``kb (Pk, nkb, Bk, E)``, ``vb (Pk, nkb, Bk, Ev)``; padded keys
  are masked like causal ones;
- a mask is one additive array (a boolean mask becomes 0 / -inf) read through an element offset per pair
  and two strides, so a broadcast mask is never expanded.

The forward runs one work item per (pair, query block): ``S = Qs K_j^T`` by BLAS (``np.dot`` on blocks),
masking, the online (max, sum) update of Milakov & Gimelshein and ``acc += P V_j`` per key block; it stores
the output and the row log-sum-exp.  The backward (Dao, "FlashAttention-2", 2023) runs one work item per
pair (and, when there are fewer pairs than threads, per range of key blocks with its own dQ partial):
for each key block it loops over the query blocks, recomputes ``P = exp(S - lse)`` from the saved LSE and
accumulates ``dV += P^T dO``, ``dS = P (dP - D)``, ``dK += dS^T Qs``, ``dQ += dS K`` with ``D = rowsum(dO O)``.
Memory is O((L + S) d) per pair plus one (Bq, Bk) tile per thread.

Threads: work items run as serial ``nogil`` kernels on a thread pool of ``numba.get_num_threads()`` Python
threads rather than under ``prange``: OpenBLAS (which ``np.dot`` calls) warns and may hang when it is
entered from an OpenMP parallel region, and Numba's default threading layer here is OpenMP.  BLAS itself
is held to one thread during the call through threadpoolctl when it is installed (every kernel thread
runs its own small GEMMs).

Dropout keeps entry (p, i, j) when a 32-bit hash of (seed, p, i, j) is at least ``p_drop * 2**24`` (top 24
bits), so the backward regenerates the mask instead of storing it; :func:`dropout_keep` is the NumPy twin the
generic path and the tests use.
"""
from __future__ import annotations

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numba
import numpy as np

from ._common import _exp, _exp_store_sum, _rowmax, _scalar_like

__all__ = ["sdpa_fwd", "sdpa_bwd", "dropout_keep", "block_sizes", "threshold", "Layout"]

_FM = {"contract", "nsz", "arcp"}
_M32 = np.uint64(0xFFFFFFFF)
_H1 = np.uint64(0x7FEB352D)
_H2 = np.uint64(0x846CA68B)
_S15, _S16, _S8 = np.uint64(15), np.uint64(16), np.uint64(8)
_BQ, _BK = 256, 512
_BIG = math.exp(20.0)  # lazy rescaling threshold of the forward (a score 20 above the running max)
# below this many multiply-adds (P * L * S * E) a call runs on the calling thread only
_PARALLEL_WORK = 1 << 22


def block_sizes(L: int, S: int) -> tuple[int, int]:
    """(Bq, Bk): 256 x 512 tiles, smaller for short inputs.  OpenBLAS runs the tile GEMMs (K = 64) at 146 GF/s
    on 128 x 256 tiles, 179 on 256 x 512 (measured single-threaded, AVX-512): the larger tile took a forward
    from 0.053 to 0.041 CPU-s on 4 heads x 2048 tokens; a float32 score tile is 512 KB (L2-resident)."""
    return min(_BQ, L), min(_BK, S)


# ------------------------------------------------------------------------------------------------ dropout hash
@numba.njit(cache=True)
def _mix32(x):
    """Chris Wellons' lowbias32 integer hash on a uint64 holding 32 bits."""
    x ^= x >> _S16
    x = (x * _H1) & _M32
    x ^= x >> _S15
    x = (x * _H2) & _M32
    x ^= x >> _S16
    return x


@numba.njit(cache=True)
def _row_key(seed, p, i):
    return _mix32(_mix32(np.uint64(seed) ^ _mix32(np.uint64(p) & _M32)) ^ (np.uint64(i) & _M32))


def dropout_keep(seed: int, pairs, rows, cols, p_drop: float) -> np.ndarray:
    """NumPy twin of the kernels' dropout mask: True where entry (pair, row, col) is kept.  ``pairs``,
    ``rows``, ``cols`` are integer arrays that broadcast together."""
    m = np.uint64(0xFFFFFFFF)

    def mix(x):
        x = x ^ (x >> np.uint64(16))
        x = (x * np.uint64(0x7FEB352D)) & m
        x = x ^ (x >> np.uint64(15))
        x = (x * np.uint64(0x846CA68B)) & m
        return x ^ (x >> np.uint64(16))

    u64 = np.uint64
    pk = mix(mix(u64(seed) ^ mix(np.asarray(pairs).astype(u64) & m)) ^ (np.asarray(rows).astype(u64) & m))
    h = mix(pk ^ (np.asarray(cols).astype(u64) & m))
    return (h >> u64(8)) >= u64(threshold(p_drop))


def threshold(p_drop: float) -> int:
    """The 24-bit keep threshold of a dropout probability (entries whose hash is below it are dropped)."""
    return int(math.ceil(p_drop * (1 << 24)))


# ------------------------------------------------------------------------------------------------ row helpers
@numba.njit(fastmath=_FM, cache=True)
def _mask_row(sr, i, j0, S, causal, madd, mflat, moff, msl, mss):
    """Scores of query ``i`` against keys ``j0 ..``: the additive mask added, -inf for padded keys (j >= S) and,
    with ``causal``, for keys after the query (j > i, top-left aligned as torch's ``is_causal``)."""
    nk = sr.shape[0]
    lim = S - j0
    if causal and i + 1 - j0 < lim:
        lim = i + 1 - j0
    if lim < 0:
        lim = 0
    if lim > nk:
        lim = nk
    if madd:
        off = moff + i * msl + j0 * mss
        for c in range(lim):
            sr[c] += mflat[off + c * mss]
    for c in range(lim, nk):
        sr[c] = -np.inf


@numba.njit(fastmath=_FM, cache=True)
def _exp_minus(sr, v):
    for c in range(sr.shape[0]):
        sr[c] = _exp(sr[c] - v)


@numba.njit(cache=True)
def _keep_row(seed, p, i, j0, thresh, keep_scale, z):
    """z[c] = 1 / (1 - p_drop) where entry (p, i, j0 + c) is kept, else 0 (keep from the hash of (seed, p, i, j))."""
    key = _row_key(seed, p, i)
    for c in range(z.shape[0]):
        h = _mix32(key ^ (np.uint64(j0 + c) & _M32))
        z[c] = keep_scale if (h >> _S8) >= thresh else keep_scale * 0


@numba.njit(cache=True)
def _apply_keep(pr, zr, seed, p, i, j0, thresh, keep_scale):
    """pr *= Z / (1 - p_drop) for one row, ``zr`` a scratch row."""
    _keep_row(seed, p, i, j0, thresh, keep_scale, zr)
    for c in range(pr.shape[0]):
        pr[c] *= zr[c]


# ------------------------------------------------------------------------------------------------ forward
@numba.njit(fastmath=_FM, cache=True, nogil=True)
def _fwd_items(qs, kb, vb, qmap, kvmap, L, S, causal, madd, mflat, moff, msl, mss, thresh, seed, keep_scale,
               o, lse, it0, it1):
    nqb, Bq = qs.shape[1], qs.shape[2]
    nkb, Bk = kb.shape[1], kb.shape[2]
    Ev = vb.shape[3]
    dt = qs.dtype
    sbuf = np.empty((Bq, Bk), dt)
    pbuf = np.empty((Bq, Bk), dt)
    pv = np.empty((Bq, Ev), dt)
    acc = np.empty((Bq, Ev), dt)
    m = np.empty(Bq, dt)
    ls = np.empty(Bq, dt)
    drop = thresh > 0
    big = _scalar_like(_BIG, keep_scale)
    for item in range(it0, it1):
        p = item // nqb
        ib = item % nqb
        i0 = ib * Bq
        nq = min(Bq, L - i0)
        qi = qs[qmap[p], ib]
        acc[:] = 0
        m[:] = -np.inf
        ls[:] = 0
        jb_end = nkb
        if causal:
            jb_end = min(nkb, (i0 + nq + Bk - 1) // Bk)
        for jb in range(jb_end):
            j0 = jb * Bk
            np.dot(qi, kb[kvmap[p], jb].T, sbuf)
            for r in range(nq):
                sr = sbuf[r]
                pr = pbuf[r]
                _mask_row(sr, i0 + r, j0, S, causal, madd, mflat, moff[p], msl, mss)
                mo = m[r]
                # Lazy rescaling: exponentiate against the running max first; only when a score exceeds it by
                # more than log(big) (the sum then exceeds big, or is NaN) take the row max and rescale.  Saves
                # the separate max pass over every tile after a row's first (~15% of the forward).
                if mo != -np.inf:
                    s = _exp_store_sum(sr, pr, mo)
                    if s < big:
                        ls[r] += s
                        if drop:
                            _apply_keep(pr, sbuf[r], seed, p, i0 + r, j0, thresh, keep_scale)
                        continue
                bm = _rowmax(sr)
                mn = bm if bm > mo else mo
                if mn == -np.inf:  # every key so far masked: this block adds nothing
                    for c in range(Bk):
                        pr[c] = 0
                    continue
                # P into its own buffer: an in-place exp (input aliasing output) does not vectorise, 3.0 vs
                # 0.7 ns per element measured on 128 x 256 tiles
                s = _exp_store_sum(sr, pr, mn)
                if drop:
                    _apply_keep(pr, sbuf[r], seed, p, i0 + r, j0, thresh, keep_scale)
                if mn != mo:
                    alpha = _exp(mo - mn)  # 0 when mo = -inf
                    ls[r] = ls[r] * alpha + s
                    for c in range(Ev):
                        acc[r, c] *= alpha
                else:
                    ls[r] += s
                m[r] = mn
            for r in range(nq, Bq):
                for c in range(Bk):
                    pbuf[r, c] = 0
            np.dot(pbuf, vb[kvmap[p], jb], pv)
            for r in range(nq):
                for c in range(Ev):
                    acc[r, c] += pv[r, c]
        for r in range(nq):
            if m[r] == -np.inf:  # fully masked row: 0 (torch's math backend), zero gradient
                for c in range(Ev):
                    o[p, i0 + r, c] = 0
                lse[p, i0 + r] = -np.inf
            else:
                inv = 1 / ls[r]
                for c in range(Ev):
                    o[p, i0 + r, c] = acc[r, c] * inv
                lse[p, i0 + r] = m[r] + np.log(ls[r])


# ------------------------------------------------------------------------------------------------ backward
@numba.njit(fastmath=_FM, cache=True, nogil=True)
def _bwd_items(qs, kb, vb, dob, qmap, kvmap, lse, dd, L, S, causal, madd, mflat, moff, msl, mss, thresh, seed,
               keep_scale, nsplit, dq, dk, dv, it0, it1):
    nqb, Bq, E = qs.shape[1], qs.shape[2], qs.shape[3]
    nkb, Bk = kb.shape[1], kb.shape[2]
    Ev = vb.shape[3]
    dt = qs.dtype
    sbuf = np.empty((Bq, Bk), dt)
    dpbuf = np.empty((Bq, Bk), dt)
    pdbuf = np.empty((Bq, Bk), dt)
    tkv = np.empty((Bk, Ev), dt)
    tk = np.empty((Bk, E), dt)
    tq = np.empty((Bq, E), dt)
    dka = np.empty((Bk, E), dt)
    dva = np.empty((Bk, Ev), dt)
    drop = thresh > 0
    per = (nkb + nsplit - 1) // nsplit
    for item in range(it0, it1):
        p = item // nsplit
        sp = item % nsplit
        for jb in range(sp * per, min(nkb, (sp + 1) * per)):
            j0 = jb * Bk
            kj = kb[kvmap[p], jb]
            vj = vb[kvmap[p], jb]
            dka[:] = 0
            dva[:] = 0
            ib0 = min(j0 // Bq, nqb) if causal else 0  # causal: only queries i >= j0 see this block
            for ib in range(ib0, nqb):
                i0 = ib * Bq
                nq = min(Bq, L - i0)
                qi = qs[qmap[p], ib]
                doi = dob[p, ib]
                np.dot(qi, kj.T, sbuf)
                np.dot(doi, vj.T, dpbuf)
                for r in range(Bq):
                    sr = sbuf[r]
                    dr = dpbuf[r]
                    li = lse[p, i0 + r]  # padded rows hold -inf (a float64 -inf literal here would send the
                    if li == -np.inf:  # row's exp to scalar float64 libm: 4x slower backward); P = 0 there
                        for c in range(Bk):
                            sr[c] = 0
                            dr[c] = 0
                            pdbuf[r, c] = 0
                        continue
                    _mask_row(sr, i0 + r, j0, S, causal, madd, mflat, moff[p], msl, mss)
                    _exp_minus(sr, li)
                    di = dd[p, i0 + r]
                    if drop:  # P~ = P Z / (1 - p) for dV; dP~ = (dO V^T) Z / (1 - p); D stays rowsum(dO O)
                        zr = pdbuf[r]
                        _keep_row(seed, p, i0 + r, j0, thresh, keep_scale, zr)
                        for c in range(Bk):
                            dr[c] = sr[c] * (dr[c] * zr[c] - di)
                            zr[c] *= sr[c]
                    else:
                        for c in range(Bk):
                            dr[c] = sr[c] * (dr[c] - di)
                np.dot((pdbuf if drop else sbuf).T, doi, tkv)
                np.dot(dpbuf.T, qi, tk)
                np.dot(dpbuf, kj, tq)
                for c in range(Bk):
                    for e in range(Ev):
                        dva[c, e] += tkv[c, e]
                    for e in range(E):
                        dka[c, e] += tk[c, e]
                dqb = dq[sp, p, ib]
                for r in range(nq):
                    for e in range(E):
                        dqb[r, e] += tq[r, e]
            dk[p, jb] = dka
            dv[p, jb] = dva


# ------------------------------------------------------------------------------------------------ threads
_CTL = None


def _blas_one_thread():
    """BLAS limited to one thread for the duration (each kernel thread runs its own GEMMs); a no-op without
    threadpoolctl."""
    global _CTL
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return contextlib.nullcontext()
    if _CTL is None:
        # Numba's np.dot calls SciPy's BLAS (scipy.linalg.cython_blas), a different OpenBLAS from NumPy's.  The
        # controller sees only the libraries loaded when it is built, and the kernels load that one lazily: import
        # it first, or its threads stay unlimited (each tile GEMM then wakes its own BLAS threads: a 2-thread
        # forward of (4, 16, 2048, 64) took 29 s instead of ~2 s).
        try:
            import scipy.linalg.cython_blas  # noqa: F401
        except ImportError:  # pragma: no cover - Numba's np.dot needs SciPy
            pass
        _CTL = ThreadpoolController()
    return _CTL.limit(limits=1, user_api="blas")


def _run(kernel: Callable[..., Any], n_items: int, args: tuple, work: float) -> None:
    """Run ``kernel(*args, it0, it1)`` over the work items: on the calling thread for small calls, else in
    chunks on ``numba.get_num_threads()`` threads.  BLAS is held to one thread whenever the tiles are big
    enough for OpenBLAS to thread them (its threads cost more than they save on 128 x 256 tiles: 1.04 s vs
    0.22 s for a serial forward measured on 4 heads of 2048 tokens)."""
    nt = numba.get_num_threads()
    if work < _PARALLEL_WORK:
        kernel(*args, 0, n_items)
        return
    with _blas_one_thread():
        if nt < 2 or n_items < 2:
            kernel(*args, 0, n_items)
            return
        n_chunks = min(n_items, 4 * nt)
        bounds = np.linspace(0, n_items, n_chunks + 1).astype(np.int64)
        with ThreadPoolExecutor(max_workers=nt) as pool:
            futs = [pool.submit(kernel, *args, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
            for f in futs:
                f.result()


# ------------------------------------------------------------------------------------------------ wrappers
class Layout:
    """Index maps and blocked copies shared by the forward and the backward of one call."""

    def __init__(self, q, k, v, mask, *, full, qmap, kvmap, scale, causal):
        dt = q.dtype
        self.L, self.E = q.shape[-2], q.shape[-1]
        self.S, self.Ev = k.shape[-2], v.shape[-1]
        self.Bq, self.Bk = block_sizes(self.L, self.S)
        self.nqb = -(-self.L // self.Bq)
        self.nkb = -(-self.S // self.Bk)
        self.P = len(qmap)
        self.qmap = np.ascontiguousarray(qmap, dtype=np.int64)
        self.kvmap = np.ascontiguousarray(kvmap, dtype=np.int64)
        self.causal = bool(causal)
        self.qs = _blocks(q.reshape(-1, self.L, self.E) * dt.type(scale), self.Bq)
        self.kb = _blocks(k.reshape(-1, self.S, self.E), self.Bk)
        self.vb = _blocks(v.reshape(-1, self.S, self.Ev), self.Bk)
        if mask is None:
            self.madd, self.mflat, self.moff, self.msl, self.mss = False, np.zeros(1, dt), np.zeros(self.P, np.int64), 0, 0
        else:
            add = np.ascontiguousarray(np.where(mask, dt.type(0), dt.type(-np.inf)) if mask.dtype == np.bool_
                                       else mask.astype(dt, copy=False))
            idx = np.arange(add.size, dtype=np.int64).reshape(add.shape)
            view = np.broadcast_to(idx, tuple(full) + (self.L, self.S))
            st = [s // 8 for s in view.strides]
            self.madd, self.mflat = True, add.reshape(-1)
            self.moff = np.ascontiguousarray(view[..., 0, 0]).reshape(-1)
            self.msl, self.mss = st[-2], st[-1]

    def mask_args(self):
        return (self.madd, self.mflat, self.moff, self.msl, self.mss)


def _blocks(a, b):
    """(n, T, d) -> (n, ceil(T / b), b, d), zero-padded, C-contiguous."""
    n, t, d = a.shape
    nb = -(-t // b)
    if nb * b == t:
        return np.ascontiguousarray(a).reshape(n, nb, b, d)
    out = np.zeros((n, nb * b, d), a.dtype)
    out[:, :t] = a
    return out.reshape(n, nb, b, d)


def sdpa_fwd(lay: Layout, *, dropout_p: float, seed: int):
    """Returns (o (P, L, Ev), lse (P, L)) in the compute dtype."""
    dt = lay.qs.dtype
    o = np.empty((lay.P, lay.L, lay.Ev), dt)
    lse = np.empty((lay.P, lay.L), dt)
    thresh = np.uint64(threshold(dropout_p))
    keep_scale = dt.type(1.0 / (1.0 - dropout_p))
    args = (lay.qs, lay.kb, lay.vb, lay.qmap, lay.kvmap, lay.L, lay.S, lay.causal, *lay.mask_args(), thresh,
            np.uint64(seed), keep_scale, o, lse)
    _run(_fwd_items, lay.P * lay.nqb, args, float(lay.P) * lay.L * lay.S * lay.E)
    return o, lse


def sdpa_bwd(lay: Layout, o, lse, do, dlse, *, dropout_p: float, seed: int, scale: float):
    """Gradients per pair: (dq (P, L, E), dk (P, S, E), dv (P, S, Ev)) in the compute dtype."""
    dt = lay.qs.dtype
    P, L, S, Bq, Bk = lay.P, lay.L, lay.S, lay.Bq, lay.Bk
    dd = np.sum(do * o, axis=-1, dtype=dt)
    if dlse is not None:
        dd = dd - dlse
    pad_l = lay.nqb * Bq
    lse_b = np.full((P, pad_l), -np.inf, dt)
    lse_b[:, :L] = lse
    dd_b = np.zeros((P, pad_l), dt)
    dd_b[:, :L] = dd
    dob = _blocks(do, Bq)
    nt = numba.get_num_threads()
    nsplit = max(1, min(lay.nkb, -(-nt // P))) if P < nt else 1
    dq = np.zeros((nsplit, P, lay.nqb, Bq, lay.E), dt)
    dk = np.empty((P, lay.nkb, Bk, lay.E), dt)
    dv = np.empty((P, lay.nkb, Bk, lay.Ev), dt)
    thresh = np.uint64(threshold(dropout_p))
    keep_scale = dt.type(1.0 / (1.0 - dropout_p))
    args = (lay.qs, lay.kb, lay.vb, dob, lay.qmap, lay.kvmap, lse_b, dd_b, L, S, lay.causal, *lay.mask_args(),
            thresh, np.uint64(seed), keep_scale, nsplit, dq, dk, dv)
    _run(_bwd_items, P * nsplit, args, 2.5 * P * L * S * lay.E)
    dqs = dq.sum(axis=0) if nsplit > 1 else dq[0]
    dqs = dqs.reshape(P, -1, lay.E)[:, :L] * dt.type(scale)
    return dqs, dk.reshape(P, -1, lay.E)[:, :S], dv.reshape(P, -1, lay.Ev)[:, :S]
