"""The NumPy fast path of :func:`optnorm.ot.barycenter`: k log-domain Sinkhorn problems sharing one cost matrix,
whose half-steps become two matrix-matrix (BLAS) products per iteration with an absorbed kernel.

With an absorption point g0 (m,), c_i = max_j (g0_j - M_ij) and K_ij = exp((g0_j - M_ij - c_i) / reg) (row maxima
1), for potentials G (k, m) and F (k, n), exactly:

    softmin_rows(G)_{ki} = c_i + reg (V_k + log sum_j K_ij e^{v_kj - V_k}),      v = (G - g0) / reg,
    softmin_cols(F)_{kj} = reg (W_k + log sum_i K_ij e^{w_ki - W_k}) - g0_j,     w = (F + c) / reg,

(V, W the per-problem maxima): the sums are E @ K^T and E @ K, one GEMM each for all k problems (POT's log
barycenter runs 2k dense log-sum-exps).  Exponents are floored at -500 (no subnormal), so wherever a sum is
>= 1e-180 the result equals the two-pass soft minimum to round-off; a problem whose sums fall below that (its
potentials moved far from g0) re-absorbs the kernel at the current potentials, and what still fails runs the
exact two-pass kernels of :mod:`optnorm._numba.ot` for that problem.
"""
from __future__ import annotations

import numpy as np

from .ot import softmin_cols, softmin_rows

__all__ = ["iterations"]

LIMIT = 1e-180
FLOOR = -500.0


class _Shared:
    def __init__(self, M, g0, reg):
        self.reg, self.g0 = reg, g0
        z = g0[None, :] - M
        self.c = z.max(axis=1)
        z -= self.c[:, None]
        z /= reg
        np.maximum(z, FLOOR, out=z)
        np.exp(z, out=z)
        self.K = z

    def rows(self, G):
        v = (G - self.g0) / self.reg
        V = v.max(axis=1, keepdims=True)
        S = np.exp(np.maximum(v - V, FLOOR)) @ self.K.T
        ok = np.all(S >= LIMIT, axis=1)
        return self.c[None, :] + self.reg * (V + np.log(np.where(S > 0, S, 1.0))), ok

    def cols(self, F):
        fin = F > -np.inf
        w = np.where(fin, (F + self.c[None, :]) / self.reg, -np.inf)
        W = w.max(axis=1, keepdims=True)
        T = (np.exp(np.maximum(w - W, FLOOR)) * fin) @ self.K
        ok = np.all(T >= LIMIT, axis=1)
        return self.reg * (W + np.log(np.where(T > 0, T, 1.0))) - self.g0[None, :], ok


def iterations(M, ra, w, g, reg, n_steps, cache):
    """``n_steps`` barycenter iterations (see :func:`optnorm.ot.barycenter`) on M (n, m) float64 from the column
    potentials g (k, m); returns (f, g, lc, logq, g_prev) with g_prev the potentials the last column pass
    followed (the stopping test reads exp((g_prev + lc) / reg)).  ``cache`` keeps the absorbed kernel."""
    M = np.ascontiguousarray(M, dtype=np.float64)
    reg = float(reg)
    if cache.get("reg") != reg or "k" not in cache:
        cache.update(k=_Shared(M, g.mean(axis=0), reg), reg=reg)
    M1 = M[None]

    def half(kind, H, g_now):
        out, ok = getattr(cache["k"], kind)(H)
        if not ok.all():
            cache["k"] = _Shared(M, g_now.mean(axis=0), reg)
            out2, ok2 = getattr(cache["k"], kind)(H)
            out = np.where(ok2[:, None], out2, out)
            for i in np.nonzero(~ok2)[0]:          # exact two-pass kernels for what still fails
                buf = np.empty((1, out.shape[1]))
                (softmin_rows if kind == "rows" else softmin_cols)(M1, np.ascontiguousarray(H[i:i + 1]), reg, buf)
                out[i] = buf[0]
        return out

    g_prev, lc, logq, f = g, None, None, None
    for _ in range(n_steps):
        f = ra - half("rows", g, g)
        lc = half("cols", f, g)
        logq = (w @ lc) / reg
        g_prev = g
        g = reg * logq[None, :] - lc
    return f, g, lc, logq, g_prev
