"""Numba kernels for :func:`optnorm.ot.dist`: pairwise distances by explicit coordinate differences.

``pairwise`` writes out[b, i, j] for X (B, n, d) and Yt (B, d, m) (Y transposed, so the inner loop runs along
j over contiguous memory and vectorises), one row of the output per task.  ``refine_sq`` recomputes, from the
differences, the entries of a squared-distance matrix that the expansion |x|^2 + |y|^2 - 2 x.y computed with
cancellation.  Arithmetic is in the inputs' dtype (the caller scales them near 1, so squares cannot overflow).
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ._rows import jit

__all__ = ["pairwise", "refine_sq", "SQEUCLIDEAN", "EUCLIDEAN", "CITYBLOCK", "MINKOWSKI"]

SQEUCLIDEAN, EUCLIDEAN, CITYBLOCK, MINKOWSKI = 0, 1, 2, 3


@jit(fastmath=True)
def pairwise(X, Yt, w, out, code, p):
    """out[b, i, j] = the metric ``code`` between X[b, i] and Yt[b, :, j], with feature weights w (d,).

    0: sum_k w_k d_k^2; 1: its square root; 2: sum_k w_k |d_k|; 3: (sum_k w_k |d_k|^p)^(1/p), computed as
    max_k |d_k| * (sum_k w_k (|d_k| / max)^p)^(1/p) so that no p-th power underflows or overflows.
    """
    Bn, n, d = X.shape
    m = Yt.shape[2]
    zero = out.dtype.type(0.0)
    inv_p = 1.0 / p
    for t in numba.prange(Bn * n):
        b = t // n
        i = t - b * n
        row = out[b, i]
        xb = X[b, i]
        yb = Yt[b]
        for j in range(m):
            row[j] = zero
        if code == 3:
            mx = np.zeros(m, dtype=out.dtype)
            for k in range(d):
                xk = xb[k]
                yk = yb[k]
                for j in range(m):
                    a = abs(xk - yk[j])
                    mx[j] = a if a > mx[j] else mx[j]
            for k in range(d):
                xk = xb[k]
                wk = w[k]
                yk = yb[k]
                for j in range(m):
                    if mx[j] > 0:
                        row[j] += wk * (abs(xk - yk[j]) / mx[j]) ** p
            for j in range(m):
                row[j] = mx[j] * row[j] ** inv_p if mx[j] > 0 else zero
            continue
        for k in range(d):
            xk = xb[k]
            wk = w[k]
            yk = yb[k]
            if code == 2:
                for j in range(m):
                    row[j] += wk * abs(xk - yk[j])
            else:
                for j in range(m):
                    dk = xk - yk[j]
                    row[j] += wk * dk * dk
        if code == 1:
            for j in range(m):
                row[j] = math.sqrt(row[j])


@jit(fastmath=True)
def refine_sq(X, Y, w, D, nx, ny, tau):
    """Recompute D[b, i, j] = sum_k w_k (X[b,i,k] - Y[b,j,k])^2 exactly where the expansion cancelled:
    where D < tau * (nx[b, i] + ny[b, j]) (nx, ny the weighted squared norms the expansion used)."""
    Bn, n, d = X.shape
    m = Y.shape[1]
    for t in numba.prange(Bn * n):
        b = t // n
        i = t - b * n
        row = D[b, i]
        xi = X[b, i]
        ni = nx[b, i]
        for j in range(m):
            if row[j] < tau * (ni + ny[b, j]):
                yj = Y[b, j]
                acc = row.dtype.type(0.0)
                for k in range(d):
                    dk = xi[k] - yj[k]
                    acc += w[k] * dk * dk
                row[j] = acc
