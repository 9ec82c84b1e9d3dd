"""Numba row kernels of :func:`optnorm.norm.sparsemax` and :func:`optnorm.norm.entmax15` (forward and VJP).

The threshold tau is found without sorting the row: the support lies among the entries within 1 of the row max
for sparsemax (tau >= max - 1 since the largest output, max - tau, is at most 1) and within 2 for entmax-1.5
(on z = x / 2: (z_max - tau)^2 <= 1).  One pass collects those candidates (typically a few dozen of 32,000 for
Gaussian logits), they are sorted, and the exact support scan of Martins & Astudillo (sparsemax) or Peters et
al. (entmax-1.5) runs on them in float64; a last pass writes the output.  So a row costs three passes (max,
candidates, output) like a softmax, whatever its length.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from ._rows import row_kernel
from ._common import _FM, _FM_RED, _rowmax, _scalar_like

__all__ = ["sparsemax_rows", "entmax15_rows", "sparsemax_bwd_rows", "entmax15_bwd_rows"]


@numba.njit(cache=True)
def _below(v, like):
    """``v`` (float64) in ``like``'s dtype, rounded down: every entry above the float64 bound passes ``>= lo``
    (a superset of the candidates is harmless; at |max| ~ 1e30 in float32, max - 1 rounds to max itself)."""
    r = _scalar_like(v, like)
    if float(r) > v:
        r = np.nextafter(r, _scalar_like(-np.inf, like))
    return r


@numba.njit(cache=True)
def _has_nan(a):
    for v in a:
        if v != v:
            return True
    return False


@numba.njit(fastmath=_FM_RED, cache=True)
def _count_above(xr, lo):
    c = 0
    for j in range(xr.shape[0]):
        c += 0 if xr[j] < lo else 1  # NaN counts (the row max skips NaN; the candidates catch it)
    return c


@row_kernel(fastmath=_FM)
def sparsemax_rows(x, y, tau_out):
    rows, n = x.shape
    for r in prange(rows):
        xr = x[r]
        yr = y[r]
        m = _rowmax(xr)
        if not (m == m) or m == np.inf or m == -np.inf:  # NaN, +inf or an all -inf row: NaN
            for j in range(n):
                yr[j] = np.nan
            tau_out[r] = np.nan
            continue
        mf = float(m)
        lo = _below(mf - 1.0, m)
        cnt = _count_above(xr, lo)
        cand = np.empty(cnt, np.float64)
        c = 0
        for j in range(n):
            if not xr[j] < lo:  # NaN passes too, and is caught below
                cand[c] = float(xr[j]) - mf
                c += 1
        if c != cnt or _has_nan(cand):  # a NaN among the entries
            for j in range(n):
                yr[j] = np.nan
            tau_out[r] = np.nan
            continue
        cand = -np.sort(-cand)
        cs = 0.0
        tau = 0.0
        for k in range(cnt):
            cs += cand[k]
            if (k + 1) * cand[k] > cs - 1.0:
                tau = (cs - 1.0) / (k + 1)
            else:
                break
        tau_out[r] = tau + mf
        # the output pass in the row's dtype (a float64 pass is half as wide), as (x - m) - tau: m + tau would
        # lose tau entirely for |m| >> 1 (1e30 - 1 is 1e30 in float32)
        tr = _scalar_like(tau, m)
        zero = _scalar_like(0.0, m)
        for j in range(n):
            v = (xr[j] - m) - tr
            yr[j] = v if v > zero else zero


@row_kernel(fastmath=_FM)
def entmax15_rows(x, y, tau_out):
    rows, n = x.shape
    for r in prange(rows):
        xr = x[r]
        yr = y[r]
        m = _rowmax(xr)
        if not (m == m) or m == np.inf or m == -np.inf:
            for j in range(n):
                yr[j] = np.nan
            tau_out[r] = np.nan
            continue
        mf = float(m)
        lo = _below(mf - 2.0, m)
        cnt = _count_above(xr, lo)
        cand = np.empty(cnt, np.float64)
        c = 0
        for j in range(n):
            if not xr[j] < lo:  # NaN passes too, and is caught below
                cand[c] = (float(xr[j]) - mf) * 0.5
                c += 1
        if c != cnt or _has_nan(cand):
            for j in range(n):
                yr[j] = np.nan
            tau_out[r] = np.nan
            continue
        cand = -np.sort(-cand)
        s1 = 0.0
        s2 = 0.0
        tau = 0.0
        for k in range(cnt):
            z = cand[k]
            s1 += z
            s2 += z * z
            kk = k + 1.0
            mu = s1 / kk
            ss = kk * (s2 / kk - mu * mu)
            delta = (1.0 - ss) / kk
            tk = mu - math.sqrt(delta if delta > 0 else 0.0)
            if tk <= z:
                tau = tk
            else:
                break
        tau_out[r] = tau
        half = _scalar_like(0.5, m)
        tr = _scalar_like(tau, m)
        zero = _scalar_like(0.0, m)
        for j in range(n):
            v = (xr[j] - m) * half - tr
            yr[j] = v * v if v > zero else zero


@row_kernel(fastmath=_FM)
def sparsemax_bwd_rows(y, g, dx):
    rows, n = y.shape
    for r in prange(rows):
        yr = y[r]
        gr = g[r]
        dr = dx[r]
        s = 0.0
        cnt = 0
        for j in range(n):
            if yr[j] > 0:
                s += float(gr[j])
                cnt += 1
        mean = s / cnt if cnt else 0.0
        for j in range(n):
            dr[j] = gr[j] - mean if yr[j] > 0 else 0.0


@row_kernel(fastmath=_FM)
def entmax15_bwd_rows(y, g, dx):
    rows, n = y.shape
    for r in prange(rows):
        yr = y[r]
        gr = g[r]
        dr = dx[r]
        sg = 0.0
        sgd = 0.0
        for j in range(n):
            if yr[j] > 0:
                gj = math.sqrt(float(yr[j]))
                sg += gj
                sgd += gj * float(gr[j])
        q = sgd / sg if sg > 0 else 0.0
        for j in range(n):
            if yr[j] > 0:
                gj = math.sqrt(float(yr[j]))
                dr[j] = gj * (gr[j] - q)
            else:
                dr[j] = 0.0
