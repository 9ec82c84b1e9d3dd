"""Numba kernels for lazy (point-cloud) Sinkhorn: block-wise online log-sum-exp over a cost computed on the fly.

The cost C(x_i, y_j) between point clouds X (B, n, d) and Y (B, m, d) is never stored: each task takes a block of
rows, and for each row computes the m costs into a per-task buffer (the inner loops run along j over Yt (B, d, m),
contiguous, so they vectorise), then the soft minimum of that row.  Memory is O((n + m) d) plus one buffer of m
entries per task; the GeomLoss "online" backend without KeOps.

Costs (``code``), on coordinates the caller has prepared (feature weights folded in, clouds scaled near 1):

    0  sum_k d_k^2            1  sqrt(sum_k d_k^2)        2  sum_k |d_k|
    3  (sum_k |d_k|^p)^(1/p)  4  (sum_k d_k^2)^(p/2)      5  1 - <x, y>  (unit vectors: cosine)

each multiplied by ``cscale``.  Exponentials: the vectorisable float32 exp of ``_numba.norm`` for float32 buffers,
the branch-free Cephes exp of ``_numba.ot`` (argument clamped at -500, no subnormal) for float64; the sums are
accumulated in float64 (lane partials: these reduction helpers are not parallel and may reassociate).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba.core import types
from numba.extending import overload

from ._rows import jit
from ._common import _exp32, _exp_le0, _rowmax

__all__ = ["softmin_cloud", "row_stats", "row_grad", "iterations", "ROWS"]

ROWS = 16                                            # rows per task (one cost buffer per task)
_FM = {"contract", "nsz", "arcp"}
_FM_RED = {"reassoc", "contract", "nsz", "arcp"}


def _expneg(x):
    """exp(x) for x <= 0 (no subnormal results)."""
    return math.exp(x)


@overload(_expneg, jit_options={"fastmath": _FM})
def _ol_expneg(x):
    if x == types.float32:
        return lambda x: _exp32(x)
    return lambda x: _exp_le0(x)


# ---------------------------------------------------------------------------------------------- one row
@numba.njit(fastmath=_FM, cache=True)
def _cost_row(x, yt, code, p, buf):
    """buf[j] = C(x, y_j) (without cscale) for the cost ``code``; yt is (d, m)."""
    d = yt.shape[0]
    m = yt.shape[1]
    zero = buf.dtype.type(0.0)
    for j in range(m):
        buf[j] = zero
    if code == 5:
        for k in range(d):
            xk = x[k]
            yk = yt[k]
            for j in range(m):
                buf[j] += xk * yk[j]
        one = buf.dtype.type(1.0)
        for j in range(m):
            buf[j] = one - buf[j]
        return
    for k in range(d):
        xk = x[k]
        yk = yt[k]
        if code == 2:
            for j in range(m):
                buf[j] += abs(xk - yk[j])
        elif code == 3:
            for j in range(m):
                buf[j] += abs(xk - yk[j]) ** p
        else:
            for j in range(m):
                dk = xk - yk[j]
                buf[j] += dk * dk
    if code == 1:
        for j in range(m):
            buf[j] = math.sqrt(buf[j])
    elif code == 3:
        ip = 1.0 / p
        for j in range(m):
            buf[j] = buf[j] ** ip
    elif code == 4:
        hp = 0.5 * p
        for j in range(m):
            buf[j] = buf[j] ** hp


@numba.njit(fastmath=_FM, cache=True)
def _shift(buf, h, cscale):
    """buf[j] = h[j] - cscale * buf[j] (in place)."""
    c = buf.dtype.type(cscale)
    for j in range(buf.shape[0]):
        buf[j] = h[j] - c * buf[j]


@numba.njit(fastmath=_FM_RED, cache=True)
def _expsum(buf, mx, inv):
    """sum_j exp((buf[j] - mx) * inv) in float64 (buf[j] <= mx)."""
    iv = buf.dtype.type(inv)
    s = 0.0
    for j in range(buf.shape[0]):
        s += np.float64(_expneg((buf[j] - mx) * iv))
    return s


@numba.njit(fastmath=_FM, cache=True)
def _expstore(buf, mx, inv, out):
    """out[j] = exp((buf[j] - mx) * inv) (in the buffer's dtype)."""
    iv = buf.dtype.type(inv)
    for j in range(buf.shape[0]):
        out[j] = _expneg((buf[j] - mx) * iv)


@numba.njit(fastmath=_FM_RED, cache=True)
def _sum64(a):
    s = 0.0
    for j in range(a.shape[0]):
        s += np.float64(a[j])
    return s


@numba.njit(fastmath=_FM_RED, cache=True)
def _dot64(a, b):
    s = 0.0
    for j in range(a.shape[0]):
        s += np.float64(a[j]) * np.float64(b[j])
    return s


# ---------------------------------------------------------------------------------------------- kernels
@jit()
def softmin_cloud(X, Yt, h, eps, code, p, cscale, out):
    """out[b, i] = eps * log sum_j exp((h[b, j] - cscale C(X[b, i], Y[b, j])) / eps): two passes over a row
    buffer (max, then the sum of exps); -inf entries of h add nothing, a row of -inf gives -inf."""
    Bn, n, d = X.shape
    m = Yt.shape[2]
    nblk = (n + ROWS - 1) // ROWS
    inv = 1.0 / eps
    for t in numba.prange(Bn * nblk):
        b = t // nblk
        i0 = (t - b * nblk) * ROWS
        i1 = min(n, i0 + ROWS)
        buf = np.empty(m, dtype=X.dtype)
        hb = h[b]
        yb = Yt[b]
        for i in range(i0, i1):
            _cost_row(X[b, i], yb, code, p, buf)
            _shift(buf, hb, cscale)
            mx = _rowmax(buf)
            if mx == -np.inf:
                out[b, i] = -np.inf
                continue
            s = _expsum(buf, mx, inv)
            out[b, i] = np.float64(mx) + eps * math.log(s)


@jit()
def row_stats(X, Yt, f, g, eps, code, p, cscale, mass, lin):
    """mass[b, i] = sum_j P_ij and lin[b, i] = sum_j P_ij cscale C_ij, P_ij = exp((f_i + g_j - cscale C_ij)/eps),
    each row computed relative to its largest exponent (no overflow before convergence)."""
    Bn, n, d = X.shape
    m = Yt.shape[2]
    nblk = (n + ROWS - 1) // ROWS
    inv = 1.0 / eps
    for t in numba.prange(Bn * nblk):
        b = t // nblk
        i0 = (t - b * nblk) * ROWS
        i1 = min(n, i0 + ROWS)
        cst = np.empty(m, dtype=X.dtype)
        z = np.empty(m, dtype=X.dtype)
        e = np.empty(m, dtype=X.dtype)
        gb = g[b]
        yb = Yt[b]
        for i in range(i0, i1):
            fi = np.float64(f[b, i])
            _cost_row(X[b, i], yb, code, p, cst)
            for j in range(m):
                z[j] = cst[j]
            _shift(z, gb, cscale)
            mx = _rowmax(z)
            if mx == -np.inf or fi == -np.inf:
                mass[b, i] = 0.0
                lin[b, i] = 0.0
                continue
            _expstore(z, mx, inv, e)
            scale = math.exp(min((fi + np.float64(mx)) * inv, 700.0))
            mass[b, i] = scale * _sum64(e)
            lin[b, i] = scale * cscale * _dot64(e, cst)


@jit()
def row_grad(X, Yt, f, g, eps, code, p, cscale, out):
    """out[b, i, :] = sum_j P_ij d/dx C(x_i, y_j) (times cscale), P as in :func:`row_stats`; for the cosine code
    the gradient with respect to the (unit) x: -sum_j P_ij y_j."""
    Bn, n, d = X.shape
    m = Yt.shape[2]
    nblk = (n + ROWS - 1) // ROWS
    inv = 1.0 / eps
    for t in numba.prange(Bn * nblk):
        b = t // nblk
        i0 = (t - b * nblk) * ROWS
        i1 = min(n, i0 + ROWS)
        cst = np.empty(m, dtype=X.dtype)
        z = np.empty(m, dtype=X.dtype)
        e = np.empty(m, dtype=X.dtype)
        gb = g[b]
        yb = Yt[b]
        for i in range(i0, i1):
            xi = X[b, i]
            fi = np.float64(f[b, i])
            _cost_row(xi, yb, code, p, cst)
            for j in range(m):
                z[j] = cst[j]
            _shift(z, gb, cscale)
            mx = _rowmax(z)
            if mx == -np.inf or fi == -np.inf:
                for k in range(d):
                    out[b, i, k] = 0.0
                continue
            _expstore(z, mx, inv, e)
            scale = math.exp(min((fi + np.float64(mx)) * inv, 700.0)) * cscale
            # e_j <- P_ij / scale times the radial factor of the gradient (codes 0, 1, 4)
            if code == 0:
                for j in range(m):
                    e[j] = 2.0 * e[j]
            elif code == 1:
                for j in range(m):
                    e[j] = e[j] / cst[j] if cst[j] > 0 else 0.0
            elif code == 4:
                for j in range(m):
                    e[j] = p * e[j] * cst[j] ** ((p - 2.0) / p) if cst[j] > 0 else 0.0
            elif code == 3:
                for j in range(m):
                    e[j] = e[j] / cst[j] ** (p - 1.0) if cst[j] > 0 else 0.0
            se = _sum64(e)
            for k in range(d):
                yk = yb[k]
                xk = np.float64(xi[k])
                if code == 5:
                    out[b, i, k] = -scale * _dot64(e, yk)
                elif code == 2:
                    acc = 0.0
                    for j in range(m):
                        dk = xi[k] - yk[j]
                        acc += np.float64(e[j]) * (1.0 if dk > 0 else (-1.0 if dk < 0 else 0.0))
                    out[b, i, k] = scale * acc
                elif code == 3:
                    acc = 0.0
                    for j in range(m):
                        dk = np.float64(xi[k] - yk[j])
                        acc += np.float64(e[j]) * math.copysign(abs(dk) ** (p - 1.0), dk)
                    out[b, i, k] = scale * acc
                else:
                    out[b, i, k] = scale * (se * xk - _dot64(e, yk))


# ---------------------------------------------------------------------------------------------- driver
def iterations(X, Yt, Y, Xt, f, g, loga, logb, reg, n_steps, code, p, cscale, phi):
    """``n_steps`` lazy log-domain Sinkhorn iterations in cost units (see ``optnorm.ot._common``), then the column
    pass: g = reg log b - phi2 softmin_cols(f), f = reg log a - phi1 softmin_rows(g); returns (f, g, lc)."""
    dt = X.dtype
    Bn, n, _ = X.shape
    m = Y.shape[1]
    lr = np.empty((Bn, n), dtype=np.float64)
    lc = np.empty((Bn, m), dtype=np.float64)
    ra, rb = reg * np.asarray(loga, np.float64), reg * np.asarray(logb, np.float64)
    p1, p2 = phi
    f = np.ascontiguousarray(f, dtype=dt)
    g = np.ascontiguousarray(g, dtype=dt)
    for _ in range(n_steps):
        softmin_cloud(Y, Xt, f, reg, code, p, cscale, lc)
        g = (rb - p2 * lc).astype(dt)
        softmin_cloud(X, Yt, g, reg, code, p, cscale, lr)
        f = (ra - p1 * lr).astype(dt)
    softmin_cloud(Y, Xt, f, reg, code, p, cscale, lc)
    return f, g, lc.astype(dt)
