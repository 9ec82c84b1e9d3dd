"""Cost matrices between point clouds (POT's ``ot.dist``), batched, with a VJP.

Two ways to compute a pairwise distance:

- *differences*: :math:`\\sum_k w_k\\,\\phi(x_{ik} - y_{jk})` from explicit coordinate differences (exact for near
  points; O(n m d) memory traffic);
- *expansion* (squared Euclidean family): :math:`|x_i|_w^2 + |y_j|_w^2 - 2\\langle x_i, y_j\\rangle_w`, one
  matrix product (fast for large d), whose relative error for near points grows like
  :math:`\\epsilon\\,|x|^2 / D_{ij}` (cancellation; both clouds are centred first, so an offset shared by the
  clouds costs nothing).

``method="auto"`` takes differences for small ``d`` (where they cost about what the product costs) and the
expansion above; the NumPy path then recomputes from differences every entry that cancelled.
Inputs are divided by a power of two near their largest magnitude first (exact), so no square overflows or
underflows, and the answer is scaled back.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.dispatch import Dispatcher, numpy_float
from .._lib.roles import Choice, Float, Positive
from .._lib.typing import Array
from .._lib.vjp import unbroadcast
from . import _common as cm

METRICS = ("sqeuclidean", "euclidean", "cityblock", "minkowski", "cosine", "correlation")
METHODS = ("auto", "direct", "expand")
DIRECT_MAX_D = 8          # generic path: differences up to this d under method="auto"
DIRECT_MAX_D_NUMBA = 32   # Numba path: the fused difference kernel is as fast as BLAS up to about here
REFINE_TAU = 2.0 ** -10   # NumPy expansion path: entries below this fraction of |x|^2 + |y|^2 are recomputed
_CHUNK = 1 << 22          # elements of a (rows, m, d) difference block in the generic path


# ---------------------------------------------------------------------------------------------- pieces
def _metric_power(metric, p):
    """The exponent k with D(t x, t y) = t^k D(x, y) (cosine/correlation are scale invariant: 0)."""
    if metric == "sqeuclidean":
        return 2
    if metric in ("cosine", "correlation"):
        return 0
    return 1


def _effective(metric, p):
    """Minkowski with p = 1 or 2 is cityblock / euclidean (same values, cheaper, exact gradients)."""
    if metric == "minkowski" and p == 1.0:
        return "cityblock"
    if metric == "minkowski" and p == 2.0:
        return "euclidean"
    return metric


def _unit_rows(X, xp):
    """Rows divided by their norm; zero rows stay zero (and are flagged)."""
    nrm = xp.sqrt(xp.sum(X * X, axis=-1, keepdims=True))
    zero = nrm == 0
    return X / xp.where(zero, xp.ones_like(nrm), nrm), nrm, zero


def _center_features(X, xp):
    return X - xp.mean(X, axis=-1, keepdims=True)


def _chunks(n, m, d, batch):
    rows = max(1, _CHUNK // max(1, m * d * batch))
    return [(i, min(n, i + rows)) for i in range(0, n, rows)]


def _batch_size(X, Y):
    return math.prod(np.broadcast_shapes(tuple(X.shape[:-2]), tuple(Y.shape[:-2])))


def _reduce_diff(diff, metric, p, w, xp):
    """The metric of difference blocks (..., c, m, d) -> (..., c, m)."""
    if metric in ("sqeuclidean", "euclidean"):
        s = diff * diff if w is None else w * diff * diff
        s = xp.sum(s, axis=-1)
        return s if metric == "sqeuclidean" else xp.sqrt(s)
    ad = xp.abs(diff)
    if metric == "cityblock":
        return xp.sum(ad if w is None else w * ad, axis=-1)
    # minkowski: max |d| * (sum w (|d| / max)^p)^(1/p): no p-th power under/overflows
    mx = xp.max(ad, axis=-1, keepdims=True)
    pos = mx > 0
    r = ad / xp.where(pos, mx, xp.ones_like(mx))
    s = xp.sum(r ** p if w is None else w * r ** p, axis=-1)
    return xp.where(pos[..., 0], mx[..., 0] * s ** (1.0 / p), xp.zeros_like(s))


def _direct_generic(X, Y, metric, p, w, xp):
    n, m, d = X.shape[-2], Y.shape[-2], X.shape[-1]
    parts = [_reduce_diff(X[..., i0:i1, None, :] - Y[..., None, :, :], metric, p, w, xp)
             for i0, i1 in _chunks(n, m, d, _batch_size(X, Y))]
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=-2)


def _sq_expand(X, Y, w, same, xp):
    """Weighted squared distances by the expansion, on clouds centred at their joint mean; clamped at 0."""
    n, m = X.shape[-2], Y.shape[-2]
    mu = (xp.sum(X, axis=-2, keepdims=True) + xp.sum(Y, axis=-2, keepdims=True)) / (n + m)
    Xc, Yc = X - mu, Y - mu
    Xw = Xc if w is None else Xc * w
    nx = xp.sum(Xw * Xc, axis=-1)
    ny = xp.sum((Yc if w is None else Yc * w) * Yc, axis=-1)
    D = nx[..., :, None] + ny[..., None, :] - 2.0 * (Xw @ xp.matrix_transpose(Yc))
    D = xp.maximum(D, xp.zeros_like(D))
    if same:
        eye = compat.eye(n, like=D, dtype=D.dtype, xp=xp)
        D = D * (1.0 - eye)
    return D, Xc, Yc, nx, ny


# ---------------------------------------------------------------------------------------------- dispatch
_pairwise = Dispatcher("ot.dist", serves="ot.dist")


@_pairwise.generic
def _pairwise_generic(X, Y, w, *, metric, p, same, direct, xp):
    """Distances of scaled inputs (max |.| ~ 1).  ``direct``: True/False/None (auto)."""
    d = X.shape[-1]
    if metric in ("cosine", "correlation"):
        if metric == "correlation":
            X, Y = _center_features(X, xp), _center_features(Y, xp)
        Xh, _, zx = _unit_rows(X, xp)
        Yh, _, zy = _unit_rows(Y, xp)
        if direct or (direct is None and d <= DIRECT_MAX_D):
            D = 0.5 * _direct_generic(Xh, Yh, "sqeuclidean", 2.0, None, xp)
        else:
            D = 1.0 - Xh @ xp.matrix_transpose(Yh)
            D = xp.clip(D, 0.0, 2.0)
        zero = zx[..., :, 0][..., :, None] | zy[..., :, 0][..., None, :]
        return xp.where(zero, xp.ones_like(D), D)
    if metric in ("sqeuclidean", "euclidean") and (direct is False or (direct is None and d > DIRECT_MAX_D)):
        D = _sq_expand(X, Y, w, same, xp)[0]
        return D if metric == "sqeuclidean" else xp.sqrt(D)
    return _direct_generic(X, Y, metric, p, w, xp)


_CODES = {"sqeuclidean": 0, "euclidean": 1, "cityblock": 2, "minkowski": 3}


@_pairwise.numba(when=lambda X, Y, w, **kw: numpy_float(X, Y, w))
def _pairwise_numba(X, Y, w, *, metric, p, same, direct, xp):
    from .._numba import pairwise as nb

    d = X.shape[-1]
    batch = tuple(np.broadcast_shapes(X.shape[:-2], Y.shape[:-2]))
    n, m = X.shape[-2], Y.shape[-2]
    Xb = np.ascontiguousarray(np.broadcast_to(X, batch + X.shape[-2:])).reshape(-1, n, d)
    Yb = np.ascontiguousarray(np.broadcast_to(Y, batch + Y.shape[-2:])).reshape(-1, m, d)
    wv = np.ones(d, X.dtype) if w is None else np.ascontiguousarray(w, dtype=X.dtype)
    zero = None
    if metric in ("cosine", "correlation"):
        if metric == "correlation":
            Xb, Yb = Xb - Xb.mean(-1, keepdims=True), Yb - Yb.mean(-1, keepdims=True)
        Xb, _, zx = _unit_rows(Xb, np)
        Yb, _, zy = _unit_rows(Yb, np)
        zero = zx[..., 0][:, :, None] | zy[..., 0][:, None, :]
        code, scale = 0, 0.5
    else:
        code, scale = _CODES[metric], 1.0
    expand = code in (0, 1) and (direct is False or (direct is None and d > DIRECT_MAX_D_NUMBA))
    if expand:
        D, Xc, Yc, nx, ny = _sq_expand(Xb, Yb, None if w is None else wv, same, np)
        if direct is None:  # auto: recompute the entries that cancelled, from differences
            nb.refine_sq(np.ascontiguousarray(Xc), np.ascontiguousarray(Yc), wv, D, nx, ny, REFINE_TAU)
        if code == 1:
            np.sqrt(D, out=D)
    else:
        D = np.empty((Xb.shape[0], n, m), dtype=X.dtype)
        nb.pairwise(np.ascontiguousarray(Xb), np.ascontiguousarray(np.swapaxes(Yb, 1, 2)), wv, D, code, float(p))
    if scale != 1.0:
        D *= scale
    if zero is not None:
        D[zero] = 1.0
    return D.reshape(batch + (n, m))


# ---------------------------------------------------------------------------------------------- public
class DistRes(NamedTuple):
    """Residuals of dist (scaled inputs)."""
    X: Any
    Y: Any
    D: Any
    w: Any
    t: Any
    metric: str
    p: float
    same: bool
    shapes: tuple
    dtypes: tuple


def _forward(X, Y, metric, p, w, method):
    xp = compat.array_namespace(X, Y) if Y is not None else compat.array_namespace(X)
    same = Y is None
    if same:
        Y = X
    metric = _effective(metric, float(p))
    if w is not None and metric in ("cosine", "correlation"):
        raise ValueError(f"dist: w (feature weights) applies to the sqeuclidean, euclidean, cityblock and minkowski "
                         f"metrics, not {metric!r}")
    cdt = X.dtype
    w_ = None if w is None else compat.cast(w, cdt, xp)
    t = cm.pow2_scale(xp, (X, 2), (Y, 2))          # per problem of the batch
    tt = t[..., None, None]
    Xs, Ys = X / tt, Y / tt
    direct = {"auto": None, "direct": True, "expand": False}[method]
    D = _pairwise(Xs, Ys, w_, metric=metric, p=float(p), same=same, direct=direct, xp=xp)
    k = _metric_power(metric, p)
    if k and compat.is_concrete(D):
        bound = float(xp.finfo(D.dtype).max) / xp.maximum(tt, xp.ones_like(tt))   # tt < 1 cannot overflow
        if k == 2:
            bound = bound / xp.maximum(tt, xp.ones_like(tt))
        overflow = bool(xp.any(D > bound))
    else:
        overflow = False
    out = D if k == 0 or overflow else (D * tt if k == 1 else (D * tt) * tt)
    if overflow or compat.is_concrete(out) and not bool(xp.all(xp.isfinite(out))):
        raise ValueError(f"dist: the {metric} distances of X and Y overflow {compat.dtype_name(cdt)} (X, Y up to "
                         f"{float(xp.max(t)):.3g}{'' if w is None else ' with weights w'}): use a wider dtype or "
                         f"a metric without squares")
    res = DistRes(Xs, Ys, D, w_, t, metric, float(p), same, (tuple(X.shape), None if same else tuple(Y.shape)),
                  (X.dtype, None if same else Y.dtype))
    return out, res


def _example(rng, dtype):
    """Both clouds given (the contract suite then mixes libraries between them)."""
    return (rng.standard_normal((5, 3)).astype(dtype), rng.standard_normal((4, 3)).astype(dtype)), {}


@public(X=Float("... n d", finite=True), Y=Float("... m d", finite=True, optional=True), metric=Choice(METRICS),
        p=Positive(), w=Float("d", finite=True, optional=True, sign="nonnegative"), method=Choice(METHODS), example=_example)
def dist(X: Array, Y: Array | None = None, *, metric: str = "sqeuclidean", p: float = 2.0, w: Array | None = None,
         method: str = "auto") -> Array:
    r"""Pairwise cost matrix between two point clouds (POT's ``ot.dist``), batched over leading axes.

    .. math::

        \text{sqeuclidean: } D_{ij} = \sum_k w_k (x_{ik} - y_{jk})^2,\quad
        \text{euclidean: } \sqrt{\cdot},\quad
        \text{cityblock: } \sum_k w_k |x_{ik} - y_{jk}|,\quad
        \text{minkowski: } \Big(\sum_k w_k |x_{ik} - y_{jk}|^p\Big)^{1/p},

    cosine :math:`1 - \langle x_i, y_j\rangle / (|x_i|\,|y_j|)` and correlation (cosine after subtracting each
    row's mean over the features).  The default is the *squared* Euclidean distance, as in POT.  Feature weights
    ``w`` multiply :math:`|\cdot|^p` (SciPy's ``cdist`` convention).  A zero row has no direction: its cosine
    distance to anything is 1 (scikit-learn's convention; POT gives NaN).

    Parameters
    ----------
    X : array, shape (..., n, d)
    Y : array, shape (..., m, d), optional
        Default ``X`` (then the diagonal is exactly 0).  Leading axes broadcast against those of ``X``.
    metric : {"sqeuclidean", "euclidean", "cityblock", "minkowski", "cosine", "correlation"}
    p : float, default 2
        Exponent of the Minkowski metric (``p=1``: cityblock, ``p=2``: euclidean).
    w : array, shape (d,), optional
        Non-negative feature weights (not for cosine/correlation).  Not differentiated.
    method : {"auto", "direct", "expand"}
        ``"direct"``: from coordinate differences (exact for near points); ``"expand"``:
        :math:`|x|^2 + |y|^2 - 2\langle x, y\rangle` with one matrix product (squared Euclidean family and
        cosine; relative error :math:`\sim\epsilon |x|^2 / D_{ij}` for near points); ``"auto"``: differences
        for small ``d`` (8 generic, 32 with the Numba kernel), the expansion above, where the NumPy path then
        recomputes every entry below :math:`2^{-10}(|x_i|^2 + |y_j|^2)` from differences.

    Returns
    -------
    array, shape (..., n, m)

    Notes
    -----
    VJP, with :math:`\bar D` the cotangent: squared Euclidean
    :math:`\bar x_i = 2 w\odot\sum_j \bar D_{ij}(x_i - y_j)`; Euclidean the same with
    :math:`\bar D_{ij}/(2 D_{ij})`, set to 0 where :math:`D_{ij} = 0` (the distance has no gradient there; POT
    gives NaN); cityblock uses :math:`\operatorname{sign}(0) = 0`; cosine
    :math:`\bar x_i = -\big(\sum_j \bar D_{ij}\hat y_j - (\sum_j \bar D_{ij} S_{ij})\hat x_i\big)/|x_i|` with
    :math:`S = 1 - D` (0 for zero rows).  ``Y=None`` sums both cotangents into ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import dist
    >>> X = np.array([[0.0, 0.0], [1.0, 0.0]])
    >>> dist(X, np.array([[0.0, 1.0]]))
    array([[1.],
           [2.]])
    >>> dist(X, metric="euclidean")
    array([[0., 1.],
           [1., 0.]])
    """
    return _forward(X, Y, metric, p, w, method)[0]


def dist_fwd(X, Y=None, *, metric="sqeuclidean", p=2.0, w=None, method="auto"):
    return _forward(X, Y, metric, p, w, method)


def _grad_sq(G, X, Y, w, xp):
    """Cotangents of sum_k w_k (x_ik - y_jk)^2 for a cotangent G (..., n, m) (differences, centred)."""
    n, m = X.shape[-2], Y.shape[-2]
    mu = (xp.sum(X, axis=-2, keepdims=True) + xp.sum(Y, axis=-2, keepdims=True)) / (n + m)
    Xc, Yc = X - mu, Y - mu
    gx = 2.0 * (xp.sum(G, axis=-1)[..., None] * Xc - G @ Yc)
    gy = 2.0 * (xp.sum(G, axis=-2)[..., None] * Yc - xp.matrix_transpose(G) @ Xc)
    if w is not None:
        gx, gy = gx * w, gy * w
    return gx, gy


def _grad_diff(G, X, Y, D, metric, p, w, xp):
    """Cotangents of the cityblock / Minkowski metrics, in chunks of difference blocks."""
    n, m, d = X.shape[-2], Y.shape[-2], X.shape[-1]
    gxs, gy = [], None
    for i0, i1 in _chunks(n, m, d, _batch_size(X, Y)):
        diff = X[..., i0:i1, None, :] - Y[..., None, :, :]
        Gc = G[..., i0:i1, :, None]
        if metric == "cityblock":
            J = xp.sign(diff)
        else:
            Dc = D[..., i0:i1, :, None]
            pos = Dc > 0
            r = xp.abs(diff) / xp.where(pos, Dc, xp.ones_like(Dc))
            J = xp.where(pos, xp.sign(diff) * r ** (p - 1.0), xp.zeros_like(diff))
        if w is not None:
            J = J * w
        GJ = Gc * J
        gxs.append(xp.sum(GJ, axis=-2))
        part = -xp.sum(GJ, axis=-3)
        gy = part if gy is None else gy + part
    gx = gxs[0] if len(gxs) == 1 else xp.concat(gxs, axis=-2)
    return gx, gy


def _grad_cos(G, X, Y, D, metric, xp):
    if metric == "correlation":
        X, Y = _center_features(X, xp), _center_features(Y, xp)
    Xh, nx, zx = _unit_rows(X, xp)
    Yh, ny, zy = _unit_rows(Y, xp)
    S = 1.0 - D
    zero = zx[..., :, 0][..., :, None] | zy[..., :, 0][..., None, :]
    S = xp.where(zero, xp.zeros_like(S), S)
    GS = xp.sum(G * S, axis=-1)[..., None]
    gx = -(G @ Yh - GS * Xh) / xp.where(zx, xp.ones_like(nx), nx)
    GSt = xp.sum(G * S, axis=-2)[..., None]
    gy = -(xp.matrix_transpose(G) @ Xh - GSt * Yh) / xp.where(zy, xp.ones_like(ny), ny)
    gx = xp.where(zx, xp.zeros_like(gx), gx)
    gy = xp.where(zy, xp.zeros_like(gy), gy)
    if metric == "correlation":
        gx, gy = _center_features(gx, xp), _center_features(gy, xp)
    return gx, gy


def dist_bwd(res: DistRes, dy):
    X, Y, D, w, t = res.X, res.Y, res.D, res.w, res.t
    xp = compat.array_namespace(X)
    G = compat.cast(dy, X.dtype, xp)
    tt = t[..., None, None]
    k = _metric_power(res.metric, res.p)
    # out = t^k D(X / t): d out / dX = t^(k - 1) dD
    if res.metric == "sqeuclidean":
        gx, gy = _grad_sq(G, X, Y, w, xp)
    elif res.metric == "euclidean":
        pos = D > 0
        Gs = xp.where(pos, G / (2.0 * xp.where(pos, D, xp.ones_like(D))), xp.zeros_like(G))
        gx, gy = _grad_sq(Gs, X, Y, w, xp)
    elif res.metric in ("cityblock", "minkowski"):
        gx, gy = _grad_diff(G, X, Y, D, res.metric, res.p, w, xp)
    else:
        gx, gy = _grad_cos(G, X, Y, D, res.metric, xp)
    if k == 2:
        gx, gy = gx * tt, gy * tt
    elif k == 0:
        gx, gy = gx / tt, gy / tt
    sx, sy = res.shapes
    tx, ty = res.dtypes
    if res.same:
        return compat.cast(unbroadcast(gx + gy, sx, xp), tx, xp), None
    return compat.cast(unbroadcast(gx, sx, xp), tx, xp), compat.cast(unbroadcast(gy, sy, xp), ty, xp)


vjp(dist, dist_fwd, dist_bwd, validate=True)
