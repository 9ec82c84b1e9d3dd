"""Lazy costs between point clouds: soft minima, plan statistics and gradients without the n x m matrix.

A :class:`LazyCost` holds two prepared clouds X (B, n, d), Y (B, m, d) and a cost
``cscale * base(code, p)`` (codes in :mod:`optnorm._numba.lse`); every operation runs block-wise:

- :data:`softmin` (rows of X against Y; the columns are the same call with the clouds swapped):
  ``reg * log sum_j exp((h_j - C_ij) / reg)``;
- :data:`stats`: per-row mass and linear cost of the plan ``exp((f_i + g_j - C_ij) / reg)``;
- :data:`grad`: ``sum_j P_ij d/dx C(x_i, y_j)``.

Numba kernels for NumPy clouds (one row buffer per task), CUDA kernels for CuPy clouds (a block per row),
and a generic Array-API body over row chunks of at most ``_CHUNK`` differences for any other library.
Memory: O((n + m) d) for the kernels, O(chunk m d) for the generic body.
"""
from __future__ import annotations

import math

import numpy as np

from .._lib import compat
from .._lib.dispatch import Dispatcher, numpy_float

SERVES = ("ot.sinkhorn", "ot.sinkhorn_unbalanced", "ot.sinkhorn_divergence")
_CHUNK = 1 << 21


def _rows_per_chunk(B, m, d):
    return max(1, _CHUNK // max(1, B * m * max(d, 1)))


def cost_block(Xc, Y, code, p, xp):
    """Base cost (without cscale) of row chunk Xc (B, c, d) against Y (B, m, d) -> (B, c, m)."""
    if code == 5:
        return 1.0 - Xc @ xp.matrix_transpose(Y)
    diff = Xc[:, :, None, :] - Y[:, None, :, :]
    if code == 2:
        return xp.sum(xp.abs(diff), axis=-1)
    if code == 3:
        return xp.sum(xp.abs(diff) ** p, axis=-1) ** (1.0 / p)
    s = xp.sum(diff * diff, axis=-1)
    if code == 0:
        return s
    if code == 1:
        return xp.sqrt(s)
    return s ** (0.5 * p)


def _grad_block(Xc, Y, C, E, code, p, xp):
    """sum_j E_ij d/dx C(x_i, y_j) for a row chunk (E: plan weights (B, c, m), C: base cost)."""
    if code == 5:
        return -(E @ Y)
    diff = Xc[:, :, None, :] - Y[:, None, :, :]
    pos = C > 0
    safe = xp.where(pos, C, xp.ones_like(C))
    zero = xp.zeros_like(C)
    if code == 0:
        return 2.0 * xp.sum(E[..., None] * diff, axis=2)
    if code == 1:
        r = xp.where(pos, E / safe, zero)
        return xp.sum(r[..., None] * diff, axis=2)
    if code == 4:
        r = xp.where(pos, p * E * safe ** ((p - 2.0) / p), zero)
        return xp.sum(r[..., None] * diff, axis=2)
    if code == 2:
        return xp.sum(E[..., None] * xp.sign(diff), axis=2)
    r = xp.where(pos, E / safe ** (p - 1.0), zero)
    return xp.sum(r[..., None] * xp.sign(diff) * xp.abs(diff) ** (p - 1.0), axis=2)


# ---------------------------------------------------------------------------------------------- soft minimum
softmin = Dispatcher("ot.cloud_softmin", serves=SERVES)


@softmin.generic
def _softmin_generic(X, Y, h, *, reg, code, p, cscale, xp):
    B, n, d = X.shape
    rows = _rows_per_chunk(B, Y.shape[1], d)
    out = []
    for i0 in range(0, n, rows):
        z = h[:, None, :] - cscale * cost_block(X[:, i0:min(n, i0 + rows), :], Y, code, p, xp)
        mx = xp.max(z, axis=2, keepdims=True)
        mx = xp.where(mx > -math.inf, mx, xp.zeros_like(mx))
        s = xp.sum(xp.exp((z - mx) / reg), axis=2)
        out.append(xp.squeeze(mx, axis=2) + reg * xp.log(s))
    return out[0] if len(out) == 1 else xp.concat(out, axis=1)


@softmin.numba(when=lambda X, Y, h, **kw: numpy_float(X, Y, h))
def _softmin_numba(X, Y, h, *, reg, code, p, cscale, xp):
    from .._numba import lse

    out = np.empty(X.shape[:2], dtype=np.float64)
    lse.softmin_cloud(np.ascontiguousarray(X), np.ascontiguousarray(np.swapaxes(Y, 1, 2)),
                      np.ascontiguousarray(h, dtype=X.dtype), float(reg), int(code), float(p), float(cscale), out)
    return out.astype(X.dtype)


def _cuda_ok(X, Y, h, **kw):
    return str(X.dtype) in ("float32", "float64") and X.dtype == Y.dtype == h.dtype


@softmin.cuda(when=_cuda_ok)
def _softmin_cuda(X, Y, h, *, reg, code, p, cscale, xp):
    import cupy

    from .._cuda import launch

    B, n, d = X.shape
    m = Y.shape[1]
    dt = np.dtype(str(X.dtype)).type
    out = cupy.empty((B, n), dtype=X.dtype)
    Yt = cupy.ascontiguousarray(cupy.swapaxes(Y, 1, 2))
    launch.rows("ot", "softmin_cloud", X.dtype, B * n,
                (cupy.ascontiguousarray(X), Yt, cupy.ascontiguousarray(h), out, B, n, m, d, dt(reg), np.int32(code),
                 dt(p), dt(cscale)))
    return out


# ---------------------------------------------------------------------------------------------- plan statistics
stats = Dispatcher("ot.cloud_stats", serves=SERVES)


def _row_weights(Xc, Y, f_c, g, reg, code, p, cscale, xp):
    """(base cost C (B, c, m), plan P (B, c, m)) of a row chunk, each row relative to its largest exponent."""
    C = cost_block(Xc, Y, code, p, xp)
    z = g[:, None, :] - cscale * C
    mx = xp.max(z, axis=2, keepdims=True)
    fin = (mx > -math.inf) & (f_c[:, :, None] > -math.inf)
    mx = xp.where(fin, mx, xp.zeros_like(mx))
    scale = xp.exp(xp.clip((f_c[:, :, None] + mx) / reg, None, 700.0))
    P = xp.where(fin, scale * xp.exp((z - mx) / reg), xp.zeros_like(z))
    return C, P


@stats.generic
def _stats_generic(X, Y, f, g, *, reg, code, p, cscale, xp):
    B, n, d = X.shape
    rows = _rows_per_chunk(B, Y.shape[1], d)
    mass, lin = [], []
    for i0 in range(0, n, rows):
        C, P = _row_weights(X[:, i0:min(n, i0 + rows), :], Y, f[:, i0:min(n, i0 + rows)], g, reg, code, p, cscale, xp)
        mass.append(xp.sum(P, axis=2))
        lin.append(cscale * xp.sum(P * C, axis=2))
    cat = (lambda v: v[0]) if len(mass) == 1 else (lambda v: xp.concat(v, axis=1))
    return cat(mass), cat(lin)


@stats.numba(when=lambda X, Y, f, g, **kw: numpy_float(X, Y, f, g))
def _stats_numba(X, Y, f, g, *, reg, code, p, cscale, xp):
    from .._numba import lse

    mass = np.empty(X.shape[:2], dtype=np.float64)
    lin = np.empty(X.shape[:2], dtype=np.float64)
    lse.row_stats(np.ascontiguousarray(X), np.ascontiguousarray(np.swapaxes(Y, 1, 2)), np.ascontiguousarray(f),
                  np.ascontiguousarray(g, dtype=X.dtype), float(reg), int(code), float(p), float(cscale), mass, lin)
    return mass.astype(X.dtype), lin.astype(X.dtype)


# ---------------------------------------------------------------------------------------------- gradients
grad = Dispatcher("ot.cloud_grad", serves=("ot.sinkhorn_divergence",))


@grad.generic
def _grad_generic(X, Y, f, g, *, reg, code, p, cscale, xp):
    B, n, d = X.shape
    rows = _rows_per_chunk(B, Y.shape[1], d)
    out = []
    for i0 in range(0, n, rows):
        Xc = X[:, i0:min(n, i0 + rows), :]
        C, P = _row_weights(Xc, Y, f[:, i0:min(n, i0 + rows)], g, reg, code, p, cscale, xp)
        out.append(cscale * _grad_block(Xc, Y, C, P, code, p, xp))
    return out[0] if len(out) == 1 else xp.concat(out, axis=1)


@grad.numba(when=lambda X, Y, f, g, **kw: numpy_float(X, Y, f, g))
def _grad_numba(X, Y, f, g, *, reg, code, p, cscale, xp):
    from .._numba import lse

    out = np.empty(X.shape, dtype=np.float64)
    lse.row_grad(np.ascontiguousarray(X), np.ascontiguousarray(np.swapaxes(Y, 1, 2)), np.ascontiguousarray(f),
                 np.ascontiguousarray(g, dtype=X.dtype), float(reg), int(code), float(p), float(cscale), out)
    return out.astype(X.dtype)


# ---------------------------------------------------------------------------------------------- the cost object
class LazyCost:
    """The cost ``cscale * base(code, p)`` between prepared clouds X (B, n, d) and Y (B, m, d)."""

    def __init__(self, X, Y, code, p, cscale, xp):
        self.X, self.Y = X, Y
        self.code, self.p, self.cscale = int(code), float(p), float(cscale)
        self.xp = xp
        self.dtype = X.dtype
        self.shape = (X.shape[0], X.shape[1], Y.shape[1])

    def _kw(self, reg):
        return dict(reg=float(reg), code=self.code, p=self.p, cscale=self.cscale, xp=self.xp)

    def rows(self, h, reg):
        """reg * log sum_j exp((h_j - C_ij)/reg), (B, n)."""
        return softmin(self.X, self.Y, h, **self._kw(reg))

    def cols(self, h, reg):
        """reg * log sum_i exp((h_i - C_ij)/reg), (B, m)."""
        return softmin(self.Y, self.X, h, **self._kw(reg))

    def iterations(self, f, g, *, loga, logb, reg, n_steps, phi=(1.0, 1.0), hook=None, xp=None):
        """``n_steps`` Sinkhorn iterations then the column pass (the contract of ``_common.iterations``)."""
        ra, rb = reg * loga, reg * logb
        p1, p2 = phi
        for _ in range(n_steps):
            g = rb - p2 * self.cols(f, reg)
            if hook is not None:
                g = hook("cols", g, f)
            f = ra - p1 * self.rows(g, reg)
            if hook is not None:
                f = hook("rows", f, g)
        return f, g, self.cols(f, reg)

    def stats(self, f, g, reg):
        """(row masses (B, n), column masses (B, m), linear cost <P, C> (B,)) of exp((f + g - C)/reg)."""
        xp = self.xp
        rmass, rlin = stats(self.X, self.Y, f, g, **self._kw(reg))
        cmass, _ = stats(self.Y, self.X, g, f, **self._kw(reg))
        return rmass, cmass, xp.sum(rlin, axis=1)

    def grads(self, f, g, reg):
        """(sum_j P_ij d/dx C, sum_i P_ij d/dy C) in the prepared coordinates."""
        return grad(self.X, self.Y, f, g, **self._kw(reg)), grad(self.Y, self.X, g, f, **self._kw(reg))

    def dense(self):
        """The (B, n, m) cost matrix (materialised: for plan() and tests)."""
        return self.cscale * cost_block(self.X, self.Y, self.code, self.p, self.xp)


def code_of(metric, p):
    """(kernel code, kernel p, power k of the scale) of a metric name."""
    if metric == "minkowski":
        if p == 1.0:
            return 2, 1.0, 1
        if p == 2.0:
            return 1, 2.0, 1
        return 3, float(p), 1
    return {"sqeuclidean": (0, 2.0, 2), "euclidean": (1, 2.0, 1), "cityblock": (2, 1.0, 1), "cosine": (5, 2.0, 0),
            "correlation": (5, 2.0, 0)}[metric]


def prepare(X, Y, metric, p, w, dtype, xp, pow2_scale, extra_scale=1.0):
    """Prepared (B, n, d), (B, m, d) clouds and the LazyCost of ``metric`` (batch axes flattened).

    Feature weights are folded into the coordinates, cosine/correlation rows normalised (zero rows stay zero:
    distance 1), translation-invariant metrics centred at the joint mean, and the clouds divided by a power of
    two near their magnitude (the cost's scale is multiplied back), so float32 clouds far from the origin and
    magnitudes near the dtype's range keep their accuracy."""
    X = compat.cast(X, dtype, xp)
    Y = compat.cast(Y, dtype, xp)
    batch = tuple(np.broadcast_shapes(tuple(X.shape[:-2]), tuple(Y.shape[:-2])))
    n, m, d = X.shape[-2], Y.shape[-2], X.shape[-1]
    X = xp.reshape(xp.broadcast_to(X, batch + (n, d)), (-1, n, d))
    Y = xp.reshape(xp.broadcast_to(Y, batch + (m, d)), (-1, m, d))
    code, kp, k = code_of(metric, float(p))
    if metric in ("cosine", "correlation"):
        if metric == "correlation":
            X = X - xp.mean(X, axis=-1, keepdims=True)
            Y = Y - xp.mean(Y, axis=-1, keepdims=True)
        X, Y = unit_rows(X, xp), unit_rows(Y, xp)
        return X, Y, LazyCost(X, Y, code, kp, extra_scale, xp), batch
    if w is not None:
        wc = compat.cast(w, dtype, xp)
        s = xp.sqrt(wc) if code in (0, 1) else (wc if code == 2 else wc ** (1.0 / kp))
        X, Y = X * s, Y * s
    mu = (xp.sum(X, axis=(0, 1)) + xp.sum(Y, axis=(0, 1))) / (X.shape[0] * (n + m))
    X, Y = X - mu, Y - mu
    tf = 1.0
    if compat.is_concrete(X) and compat.is_concrete(Y):
        t = pow2_scale(xp, (X, None), (Y, None))
        tf = float(t)
        X, Y = X / tf, Y / tf
    return X, Y, LazyCost(X, Y, code, kp, extra_scale * tf ** k, xp), batch


def unit_rows(Z, xp):
    """Rows divided by their norms (zero rows stay zero)."""
    nrm = xp.sqrt(xp.sum(Z * Z, axis=-1, keepdims=True))
    return Z / xp.where(nrm > 0, nrm, xp.ones_like(nrm))
