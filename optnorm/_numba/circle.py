"""Numba kernel for optimal transport on the circle R/Z: the optimal shift of the target's quantile function.

For sorted coordinates in [0, 1) with cumulative weights, the cost of the shift theta,
c(theta) = int_0^1 |F^{-1}(t) - G~^{-1}(t + theta)|^p dt (G~ the periodic extension), is convex (Delon,
Salomon, Sobolevski 2010); :func:`circle_shift` bisects on the sign of its derivative over [-1, 1], one direction
per parallel task, each evaluation a linear walk over the merged breakpoints (the generic path of
:mod:`optnorm.ot.sliced` sorts them instead: the same sums, in another order).
"""
from __future__ import annotations

import numba
import numpy as np

from ._rows import jit

__all__ = ["circle_shift"]


@jit(parallel=False, inline="always")
def _cost(d, p):
    d = abs(d)
    if p == 1.0:
        return d
    if p == 2.0:
        return d * d
    return d ** p


@jit(parallel=False)
def _slope(us, A, vs, B, theta, p):
    """The right derivative dc/dtheta: the sum over the target's breakpoints inside (0, 1] of -(cost before -
    cost after), ties ordered target first (a larger shift moves the target's breakpoints left)."""
    n = us.shape[0]
    m = vs.shape[0]
    i = 0
    j = 0                        # index into the three copies: atom j % m, copy j // m - 1
    d = 0.0
    while i < n and j < 3 * m:
        jj = j % m
        k = j // m - 1
        b = B[jj] + k - theta
        bc = 0.0 if b < 0.0 else (1.0 if b > 1.0 else b)
        if A[i] < bc:
            i += 1
            continue
        if 0.0 < b <= 1.0 and j + 1 < 3 * m:
            jn = (j + 1) % m
            kn = (j + 1) // m - 1
            u = us[i]
            d -= _cost(u - (vs[jj] + k), p) - _cost(u - (vs[jn] + kn), p)
        j += 1
    return d


@jit(fastmath=False)
def circle_shift(us, A, vs, B, p, n_bisect, out):
    """out[l] = the minimiser in [-1, 1] of the circle cost of direction l (rows of us, A, vs, B; last A and B
    entries 1), to 2^(1 - n_bisect)."""
    L = us.shape[0]
    for r in numba.prange(L):
        lo = -1.0
        hi = 1.0
        for _ in range(n_bisect):
            mid = 0.5 * (lo + hi)
            if _slope(us[r], A[r], vs[r], B[r], mid, p) > 0.0:
                hi = mid
            else:
                lo = mid
        out[r] = 0.5 * (lo + hi)
