"""Numba kernels of the fused losses of :mod:`optnorm.norm`: the per-chunk softmax and logit gradient of
:func:`optnorm.norm.linear_cross_entropy`.

The GEMMs around a chunk (logits = x W^T + b, dx = dz W, dW += dz^T x) run in BLAS from the Python driver
(:func:`linear_cross_entropy_chunks`); the kernel here does the row work in between, in place on the chunk of
logits: the row max and log-sum-exp, the target logit and the logit sum (label smoothing), and, when the
gradient is wanted, overwrites the logits with

    dz_j = g (1 + 2 c LSE) p_j - g eps / V - g (1 - eps) [j = t],   p = softmax(z)

(g the row's share of the loss: 1 / #valid for "mean", 1 for "sum", 0 for ignored rows).  The gradient
pass recomputes exp(z - m) in place rather than keeping the first pass's exponentials: no scratch of the chunk's
size, and the extra exp (~0.1 s over 8192 x 32000 logits) is small next to the three GEMMs.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._rows import row_kernel
from ._common import _FM, _exp, _rowmax, _sum, _sum_exp

__all__ = ["lce_rows", "linear_cross_entropy_chunks", "default_rows"]


@row_kernel(fastmath=_FM)
def lce_rows(z, t, g, eps, zc, grad, need_sum, lse, zt, zsum):
    """Row statistics (lse, target logit, logit sum) of a chunk of logits; with ``grad`` the logits are
    replaced by the gradient dz of the row losses (weighted by ``g``)."""
    rows, V = z.shape
    for r in prange(rows):
        zr = z[r]
        m = _rowmax(zr)
        s = _sum_exp(zr, m)
        lr = m + np.log(s)
        lse[r] = lr
        ti = t[r]
        zt[r] = zr[ti] if ti >= 0 else zr[0] * 0
        if need_sum:
            zsum[r] = _sum(zr)
        if not grad:
            continue
        gr = g[r]
        if gr == 0:
            for j in range(V):
                zr[j] = 0
            continue
        a = gr * (1 + 2 * zc * lr)
        b = gr * eps / V
        for j in range(V):
            zr[j] = a * _exp(zr[j] - lr) - b
        if ti >= 0:
            zr[ti] -= gr * (1 - eps)


def _acc_gemm(dw, xc, dz):
    """dw += dz^T xc in place (BLAS gemm with beta = 1 on dw's memory: no (V, H) temporary)."""
    from scipy.linalg import blas

    gemm = blas.sgemm if dw.dtype == np.float32 else blas.dgemm
    # Fortran view: dw^T (H, V) += xc^T (H, R) @ dz (R, V)
    res = gemm(1.0, xc.T, dz.T, beta=1.0, c=dw.T, trans_b=1, overwrite_c=1)
    if not np.shares_memory(res, dw):  # BLAS wrapper had to copy: write back
        dw[...] = res.T


def linear_cross_entropy_chunks(x2, w, b, t0, g, *, eps, zc, rows, grad, need_sum):
    """Chunked logits, row statistics and (``grad``) gradients of x, W, b.

    ``x2 (N, H)``, ``w (V, H)``, ``b (V,)`` or None, ``t0`` targets with -1 for ignored rows, ``g`` per-row
    loss weights.  Returns ``(lse, zt, zsum, dx, dw, db)`` (gradients None without ``grad``)."""
    N, H = x2.shape
    V = w.shape[0]
    dt = x2.dtype
    lse = np.empty(N, dt)
    zt = np.empty(N, dt)
    zsum = np.zeros(N if need_sum else 1, dt)
    buf = np.empty((min(rows, N), V), dt)
    dx = np.empty_like(x2) if grad else None
    dw = np.zeros_like(w) if grad else None
    db = np.zeros(V, np.float64) if grad and b is not None else None
    wt = w.T
    for r0 in range(0, N, rows):
        r1 = min(N, r0 + rows)
        n = r1 - r0
        zc_ = buf[:n]
        xc = x2[r0:r1]
        np.matmul(xc, wt, out=zc_)
        if b is not None:
            zc_ += b
        lce_rows(zc_, t0[r0:r1], g[r0:r1], dt.type(eps), dt.type(zc), grad, need_sum, lse[r0:r1], zt[r0:r1],
                 zsum[r0:r1] if need_sum else zsum)
        if grad:
            np.matmul(zc_, w, out=dx[r0:r1])
            _acc_gemm(dw, xc, zc_)
            if b is not None:
                db += zc_.sum(axis=0, dtype=np.float64)
    return lse, zt, (zsum if need_sum else None), dx, dw, (None if db is None else db.astype(dt))


def default_rows(n: int, h: int, v: int) -> int:
    """Rows per chunk: Liger-Kernel's rule, a power of two near N / ceil(V / H), so a chunk of logits is about
    the size of x."""
    r = max(1, -(-n // max(1, -(-v // max(h, 1)))))
    return min(n, 1 << (r - 1).bit_length()) if n else 1

