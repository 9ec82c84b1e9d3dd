"""Numba kernels of Sinkhorn-Newton-Sparse (:mod:`optnorm.ot.sns`): the dual pass, the sparsified Hessian in
CSR form, and the preconditioned conjugate gradient on it.

The plan is never stored: its log entries ``z_ij = (f_i + g_j - M_ij) / reg`` are recomputed from M and the
potentials.  :func:`dual_pass` gives, in one parallel pass over M, the row and column sums of the plan (the
gradient of the dual), its total (the dual value) and a histogram of z on a fixed grid (:data:`ZLO`,
:data:`ZBIN`), from which the caller picks the sparsification threshold (the largest grid edge with at least
the wanted number of entries above it); :func:`collect` then writes the entries above the threshold as CSR
(count, prefix sum, fill); :func:`pcg` solves the Newton system with the Jacobi preconditioner.  The
exponentials use the branch-free Cephes exp of :mod:`optnorm._numba.ot` (the arguments are capped at 700, as a
rejected line-search trial may go far; log entries of -inf, zero weights, give exact zeros).
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ._rows import jit
from ._common import _exp_le0

__all__ = ["ZLO", "ZBIN", "NBINS", "dual_pass", "collect", "pcg", "threshold"]

ZLO = -100.0            # entries with z below this (P < 4e-44) are never kept
ZBIN = 0.25
NBINS = 440             # grid edges ZLO + k * ZBIN, k = 0..NBINS: z up to 10
_ZCAP = 700.0


@jit(parallel=False, inline="always", fastmath={"contract", "nsz", "arcp"})
def _pexp(z):
    """exp(z) for z <= 700 (the caller caps it), exact 0 for z = -inf."""
    if z == -np.inf:
        return 0.0
    return _exp_le0(z) if z <= 0.0 else math.exp(z)


@jit(fastmath=True)
def dual_pass(M, f, g, reg, r, cpart, hpart, spart):
    """Row sums ``r`` (n,), column sums per row chunk ``cpart`` (nch, m), histogram of z per chunk ``hpart``
    (nch, NBINS) and plan total per chunk ``spart`` (nch,), of the plan exp((f_i + g_j - M_ij) / reg)."""
    n, m = M.shape
    nch = cpart.shape[0]
    per = (n + nch - 1) // nch
    inv = 1.0 / reg
    for t in numba.prange(nch):
        i0 = t * per
        i1 = min(n, i0 + per)
        cp = cpart[t]
        hp = hpart[t]
        for j in range(m):
            cp[j] = 0.0
        for k in range(NBINS):
            hp[k] = 0
        tot = 0.0
        for i in range(i0, i1):
            fi = f[i]
            Mi = M[i]
            acc = 0.0
            for j in range(m):
                z = (fi + g[j] - Mi[j]) * inv
                z = z if z < _ZCAP else _ZCAP
                e = _pexp(z)
                acc += e
                cp[j] += e
                if z >= ZLO:
                    b = int((z - ZLO) / ZBIN)
                    hp[b if b < NBINS else NBINS - 1] += 1
            r[i] = acc
            tot += acc
        spart[t] = tot


def threshold(hist, k):
    """The largest grid edge with at least ``k`` entries of z at or above it (ZLO if there are fewer)."""
    above = np.cumsum(hist[::-1])[::-1]                 # entries in bins >= b
    ok = np.flatnonzero(above >= k)
    return ZLO + ZBIN * (int(ok[-1]) if ok.size else 0)


@jit(fastmath=True)
def _count(M, f, g, reg, zcut, counts):
    n, m = M.shape
    inv = 1.0 / reg
    for i in numba.prange(n):
        fi = f[i]
        Mi = M[i]
        c = 0
        for j in range(m):
            if (fi + g[j] - Mi[j]) * inv >= zcut:
                c += 1
        counts[i] = c


@jit(fastmath=True)
def _fill(M, f, g, reg, zcut, indptr, indices, data):
    n, m = M.shape
    inv = 1.0 / reg
    for i in numba.prange(n):
        fi = f[i]
        Mi = M[i]
        k = indptr[i]
        for j in range(m):
            z = (fi + g[j] - Mi[j]) * inv
            if z >= zcut:
                indices[k] = j
                data[k] = _pexp(z if z < _ZCAP else _ZCAP)
                k += 1


def collect(M, f, g, reg, zcut):
    """CSR (indptr, indices, data) of the plan entries with z >= zcut."""
    n = M.shape[0]
    counts = np.empty(n, np.int64)
    _count(M, f, g, reg, zcut, counts)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    nnz = int(indptr[-1])
    indices = np.empty(nnz, np.int64)
    data = np.empty(nnz)
    _fill(M, f, g, reg, zcut, indptr, indices, data)
    return indptr, indices, data


@jit(parallel=False)
def _matvec(indptr, indices, data, r, c, rho, w, out):
    """out = B_s w + rho z z^T w with B_s = [[diag r, S], [S^T, diag c]], z = (1, -1) / sqrt(n + m)."""
    n = r.shape[0]
    m = c.shape[0]
    s = 0.0
    for i in range(n):
        s += w[i]
    for j in range(m):
        s -= w[n + j]
    s *= rho / (n + m)
    for j in range(m):
        out[n + j] = c[j] * w[n + j] - s
    for i in range(n):
        acc = r[i] * w[i]
        wi = w[i]
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            acc += data[k] * w[n + j]
            out[n + j] += data[k] * wi
        out[i] = acc + s


@jit(parallel=False)
def pcg(indptr, indices, data, r, c, rho, rhs, tol, max_iter, x):
    """Jacobi-preconditioned conjugate gradient for (B_s + rho z z^T) x = rhs (the rank-one term fixes the
    gauge direction (1, -1), along which B_s is singular); stops at |residual| <= tol |rhs|.  Returns the
    iterations done."""
    N = rhs.shape[0]
    n = r.shape[0]
    dinv = np.empty(N)
    for i in range(n):
        d = r[i] + rho / N
        dinv[i] = 1.0 / d if d > 0.0 else 1.0
    for j in range(c.shape[0]):
        d = c[j] + rho / N
        dinv[n + j] = 1.0 / d if d > 0.0 else 1.0
    res = rhs.copy()
    for i in range(N):
        x[i] = 0.0
    z = res * dinv
    p = z.copy()
    Ap = np.empty(N)
    rz = 0.0
    bnorm = 0.0
    for i in range(N):
        rz += res[i] * z[i]
        bnorm += rhs[i] * rhs[i]
    bnorm = math.sqrt(bnorm) + 1e-300
    it = 0
    while it < max_iter:
        _matvec(indptr, indices, data, r, c, rho, p, Ap)
        pAp = 0.0
        for i in range(N):
            pAp += p[i] * Ap[i]
        if pAp <= 0.0:
            break
        alpha = rz / pAp
        rr = 0.0
        for i in range(N):
            x[i] += alpha * p[i]
            res[i] -= alpha * Ap[i]
            rr += res[i] * res[i]
        it += 1
        if math.sqrt(rr) <= tol * bnorm:
            break
        rz_new = 0.0
        for i in range(N):
            z[i] = res[i] * dinv[i]
            rz_new += res[i] * z[i]
        beta = rz_new / rz
        rz = rz_new
        for i in range(N):
            p[i] = z[i] + beta * p[i]
    return it
