"""Closed-form 2-Wasserstein distances of Gaussians: between Gaussians, and between boxes seen as Gaussians.

:func:`gaussian_wasserstein` is the Bures-Wasserstein closed form.  Boxes: a box with centre (cx, cy), width w,
height h and angle θ (radians, counter-clockwise) is modelled as N([cx, cy], R(θ) diag(w²/4, h²/4) R(θ)ᵀ)
(:func:`box_to_gaussian`; Wang et al., "A Normalized Gaussian Wasserstein Distance for Tiny Object Detection",
2021; used as a loss in DEAL-YOLO, 2025).  The 2-Wasserstein distance between two such Gaussians is the same
closed form; for 2×2 covariances it reduces to scalars:

    W₂² = ‖m₁ − m₂‖² + tr C₁ + tr C₂ − 2 √(tr(C₁C₂) + 2 √(det C₁ det C₂))

because tr √M = √(tr M + 2 √det M) for a 2×2 PSD matrix M = C₁^{1/2} C₂ C₁^{1/2}.  With
a = w/2, b = h/2, δ = θ₁ − θ₂:

    tr(C₁C₂) = (a₁²a₂² + b₁²b₂²) cos²δ + (a₁²b₂² + b₁²a₂²) sin²δ,   det C₁ det C₂ = (a₁b₁a₂b₂)².

For axis-aligned boxes (δ = 0) this is W₂² = (cx₁−cx₂)² + (cy₁−cy₂)² + (w₁−w₂)²/4 + (h₁−h₂)²/4.
Both box forms are computed elementwise (no 2×2 matrix square roots), which is what makes the pairwise n × m
case fast (Numba and CUDA kernels); the tests check them against :func:`gaussian_wasserstein` on the
Gaussians of :func:`box_to_gaussian`.

Every distance here is computed on inputs divided by a power of two near their magnitude (exact) and scaled
back, so squares neither overflow nor underflow: magnitudes up to the dtype's range give finite distances.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.typing import Array
from .._lib.api import public, vjp
from .._lib.dispatch import Dispatcher, numpy_float
from .._lib.roles import SPD, Bool, Choice, Float, NonNegative, Out, Positive
from .._lib.vjp import unbroadcast
from . import _common as cm


# ============================================================================================== Gaussians
def _sym(a, xp):
    return 0.5 * (a + xp.matrix_transpose(a))


def _eigh_psd(a, xp):
    """Eigen-decomposition of a symmetric PSD stack; eigenvalues below the round-off level are set to 0.

    The level is ``d * eps * max |eigenvalue|`` (float64: the computation runs in float64): without it, a
    round-off eigenvalue of 1e-16 in a singular direction would add its square root (1e-8) to the trace term.
    """
    w, v = xp.linalg.eigh(a)
    tol = a.shape[-1] * float(xp.finfo(w.dtype).eps) * xp.max(xp.abs(w), axis=-1, keepdims=True)
    return xp.where(w > tol, w, xp.zeros_like(w)), v


def _from_eig(v, f, xp):
    """``v @ diag(f) @ v^T`` for a stack."""
    return (v * f[..., None, :]) @ xp.matrix_transpose(v)


def _floor(w, xp):
    """Positive floor for inverting (square roots of) PSD eigenvalues: eps * max eigenvalue per matrix."""
    eps = float(xp.finfo(w.dtype).eps)
    top = xp.max(w, axis=-1, keepdims=True)
    return xp.maximum(w, eps * top + xp.finfo(w.dtype).smallest_normal)


def _work_dtype(xp):
    """float64 where the library has it: the eigenvalue floor of float32 would remove real eigenvalues of an
    ill-conditioned covariance (~4e-4 relative error of the distance at cond 1e8)."""
    return getattr(xp, "float64", None) or xp.float32


class GaussRes(NamedTuple):
    """Residuals of gaussian_wasserstein (float64, inputs scaled by t)."""
    dm: Any
    V1: Any
    sq1: Any
    S1: Any
    U: Any
    sql: Any
    y: Any              # W2 of the scaled problem
    t: Any
    squared: bool
    shapes: tuple
    dtypes: tuple


def _gauss_forward(m1, C1, m2, C2, squared):
    xp = compat.array_namespace(m1, C1, m2, C2)
    wdt = _work_dtype(xp)
    m1c, C1c, m2c, C2c = (compat.cast(a, wdt, xp) for a in (m1, C1, m2, C2))
    batch = tuple(np.broadcast_shapes(m1.shape[:-1], C1.shape[:-2], m2.shape[:-1], C2.shape[:-2]))
    # scale: means by t, covariances by t^2 (t a power of two per problem): W2 scales by t
    t = cm.pow2_scale(xp, (m1c, 1), (m2c, 1), (xp.sqrt(xp.abs(C1c)), 2), (xp.sqrt(xp.abs(C2c)), 2))
    t = xp.broadcast_to(t, batch)
    m1c, m2c = m1c / t[..., None], m2c / t[..., None]
    tt = t[..., None, None]
    C1c, C2c = _sym(C1c / tt / tt, xp), _sym(C2c / tt / tt, xp)     # two divisions: t * t may overflow
    s1, V1 = _eigh_psd(C1c, xp)                      # C1 = V1 diag(s1) V1^T
    sq1 = xp.sqrt(s1)
    S1 = _from_eig(V1, sq1, xp)                      # C1^{1/2}
    Mid = _sym(S1 @ C2c @ S1, xp)                    # C1^{1/2} C2 C1^{1/2}
    lam, U = _eigh_psd(Mid, xp)
    sql = xp.sqrt(lam)
    dm = m1c - m2c
    mean_term = xp.sum(dm * dm, axis=-1)
    tr1 = xp.sum(xp.linalg.diagonal(C1c), axis=-1)
    tr2 = xp.sum(xp.linalg.diagonal(C2c), axis=-1)
    bw2 = mean_term + tr1 + tr2 - 2.0 * xp.sum(sql, axis=-1)
    bw2 = xp.broadcast_to(xp.clip(bw2, 0.0, None), batch)   # round-off can make a zero distance slightly negative
    ys = xp.sqrt(bw2)
    if squared:
        y = bw2 * t * t
        if compat.is_concrete(y) and not bool(xp.all(xp.isfinite(y))):
            raise ValueError("gaussian_wasserstein: W2^2 of (m1, C1) and (m2, C2) overflows float64 "
                             "(squared=True); use squared=False")
    else:
        y = ys * t
    res = GaussRes(dm, V1, sq1, S1, U, sql, ys, t, squared,
                   (tuple(m1.shape), tuple(C1.shape), tuple(m2.shape), tuple(C2.shape)),
                   (m1.dtype, C1.dtype, m2.dtype, C2.dtype))
    return compat.cast(y, m1.dtype, xp), res


_GAUSS = dict(m1=Float("... d", finite=True), C1=SPD("... d d", psd=True), m2=Float("... d", finite=True),
              C2=SPD("... d d", psd=True), squared=Bool())


@public(**_GAUSS)
def gaussian_wasserstein(m1: Array, C1: Array, m2: Array, C2: Array, *, squared: bool = False) -> Array:
    r"""2-Wasserstein distance between Gaussians :math:`N(m_1, C_1)` and :math:`N(m_2, C_2)`, in closed form.

    .. math::

        W_2^2 = \|m_1 - m_2\|^2 + \operatorname{tr}\big(C_1 + C_2 - 2\,(C_1^{1/2} C_2 C_1^{1/2})^{1/2}\big)

    (Dowson & Landau, "The Fréchet distance between multivariate normal distributions", 1982; Olkin & Pukelsheim,
    1982; the trace term is the squared Bures distance).  The covariances must be symmetric positive
    semi-definite (checked: an indefinite one raises ``ValueError``); singular ones are accepted.  Matrix square
    roots use a symmetric eigendecomposition with round-off eigenvalues set to zero, computed in float64 whatever
    the input dtype (float32 eigenvalues of an ill-conditioned covariance are too inexact for the trace term), on
    the inputs divided by a power of two near their magnitude (so nothing overflows); the result is clamped at 0
    before the root.  Covariances are symmetrised, ``(C + C^T)/2``.

    Parameters
    ----------
    m1, m2 : array, shape (..., d)
        Means.  Leading axes broadcast against each other and against those of ``C1``/``C2``.
    C1, C2 : array, shape (..., d, d)
        Covariances (symmetric positive semi-definite).
    squared : bool, default False
        Return :math:`W_2^2` instead of :math:`W_2`.

    Returns
    -------
    array, shape = broadcast batch shape
        The distance (or its square), in the dtype of ``m1``.

    Notes
    -----
    VJP: :math:`\partial W_2^2/\partial m_1 = 2(m_1 - m_2)`,
    :math:`\partial W_2^2/\partial C_1 = I - T_{12}` with the Monge map
    :math:`T_{12} = C_1^{-1/2}(C_1^{1/2} C_2 C_1^{1/2})^{1/2} C_1^{-1/2}`, and
    :math:`\partial W_2^2/\partial C_2 = I - T_{12}^{-1}`.  For a singular covariance the inverse square roots are
    taken on eigenvalues floored at ``eps * max eigenvalue`` (the distance is not differentiable there).
    At :math:`W_2 = 0` the gradient of the unsquared distance is set to 0.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import gaussian_wasserstein
    >>> m1, m2 = np.zeros(2), np.ones(2)
    >>> C1, C2 = np.eye(2), 4 * np.eye(2)
    >>> float(gaussian_wasserstein(m1, C1, m2, C2, squared=True))   # |m1-m2|^2 + tr(I + 4I - 2*2I)
    4.0
    """
    return _gauss_forward(m1, C1, m2, C2, squared)[0]


def gaussian_wasserstein_fwd(m1, C1, m2, C2, *, squared=False):
    return _gauss_forward(m1, C1, m2, C2, squared)


def gaussian_wasserstein_bwd(res: GaussRes, dy):
    dm, V1, sq1, S1, U, sql, ys, t = res.dm, res.V1, res.sq1, res.S1, res.U, res.sql, res.y, res.t
    xp = compat.array_namespace(dm)
    dy = compat.cast(dy, ys.dtype, xp)
    # y = t^2 W'^2 (squared) or t W' of the scaled problem (m/t, C/t^2):
    #   dy/dm1 = (2 t | 1/W') dm',  dy/dC1 = (1 | 1/(2 t W')) (I - T12)
    if res.squared:
        gm, gC = 2.0 * dy * t, dy
    else:
        pos = ys > 0
        safe = xp.where(pos, ys, xp.ones_like(ys))
        gm = xp.where(pos, dy / safe, xp.zeros_like(ys))
        gC = xp.where(pos, dy / (2.0 * t * safe), xp.zeros_like(ys))
    d = dm.shape[-1]
    eye = xp.eye(d, dtype=dm.dtype, device=compat.device(dm))
    # T12 = S1^{-1} Mid^{1/2} S1^{-1};  T21 = T12^{-1} = S1 Mid^{-1/2} S1
    S1inv = _from_eig(V1, 1.0 / _floor(sq1, xp), xp)
    T12 = _sym(S1inv @ _from_eig(U, sql, xp) @ S1inv, xp)
    T21 = _sym(S1 @ _from_eig(U, 1.0 / _floor(sql, xp), xp) @ S1, xp)
    d_m1 = gm[..., None] * dm
    d_C1 = gC[..., None, None] * (eye - T12)
    d_C2 = gC[..., None, None] * (eye - T21)
    s_m1, s_C1, s_m2, s_C2 = res.shapes
    t_m1, t_C1, t_m2, t_C2 = res.dtypes
    return (compat.cast(unbroadcast(d_m1, s_m1, xp), t_m1, xp), compat.cast(unbroadcast(d_C1, s_C1, xp), t_C1, xp),
            compat.cast(unbroadcast(-d_m1, s_m2, xp), t_m2, xp), compat.cast(unbroadcast(d_C2, s_C2, xp), t_C2, xp))


vjp(gaussian_wasserstein, gaussian_wasserstein_fwd, gaussian_wasserstein_bwd, validate=True)


# ============================================================================================== boxes
FORMATS = {"xyxy": 4, "cxcywh": 4, "cxcywha": 5}


def _box_example(rng, dtype, n=5, m=None):
    """Valid ``xyxy`` boxes (x2 >= x1, y2 >= y1) for the generated suites."""
    def boxes(k):
        c = rng.uniform(0, 50, (k, 2))
        wh = rng.uniform(1, 20, (k, 2))
        return np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(dtype)

    return boxes(n) if m is None else (boxes(n), boxes(m))


def _check_boxes(boxes, name, format, fn):
    k = FORMATS[format]
    if boxes.shape[-1] != k:
        raise ValueError(f"{fn}: {name} must have a last axis of size {k} for format={format!r}, "
                         f"got shape {tuple(boxes.shape)}")


def _params(boxes, format, name, xp, dt):
    """(cx, cy, a, b, theta-or-None) with a = w/2, b = h/2, in the compute dtype; negative sizes refused."""
    bx = compat.cast(boxes, dt, xp)
    c = [bx[..., i] for i in range(bx.shape[-1])]
    if format == "xyxy":
        cx, cy = c[0] / 2 + c[2] / 2, c[1] / 2 + c[3] / 2          # halves first: no overflow near the range
        a, b = c[2] / 2 - c[0] / 2, c[3] / 2 - c[1] / 2
        th = None
    else:
        cx, cy, a, b = c[0], c[1], c[2] / 2, c[3] / 2
        th = c[4] if format == "cxcywha" else None
    if compat.is_concrete(boxes) and compat.size(boxes):
        amin, bmin = float(xp.min(a)), float(xp.min(b))
        if amin < 0 or bmin < 0:
            raise ValueError(f"{name} contains boxes with negative width or height (smallest width "
                             f"{2 * amin:.6g}, smallest height {2 * bmin:.6g}); for format={format!r} the "
                             + ("corners must satisfy x2 >= x1 and y2 >= y1" if format == "xyxy"
                                else "w and h must be >= 0"))
    return cx, cy, a, b, th


def _params_bwd(g, format, xp):
    """Cotangent of the box array from cotangents of (cx, cy, a, b, theta)."""
    gcx, gcy, ga, gb, gth = g
    if format == "xyxy":
        cols = [(gcx - ga) / 2, (gcy - gb) / 2, (gcx + ga) / 2, (gcy + gb) / 2]
    else:
        cols = [gcx, gcy, ga / 2, gb / 2]
        if format == "cxcywha":
            cols.append(gth)
    return xp.stack(cols, axis=-1)


# ---------------------------------------------------------------- box_to_gaussian
class BoxGaussRes(NamedTuple):
    a: Any
    b: Any
    th: Any
    format: str
    dtype: Any


def _box_to_gaussian(boxes, format):
    _check_boxes(boxes, "boxes", format, "box_to_gaussian")
    xp = compat.array_namespace(boxes)
    dt = compat.compute_dtype(boxes, xp)
    cx, cy, a, b, th = _params(boxes, format, "boxes", xp, dt)
    if compat.is_concrete(boxes) and compat.size(boxes):
        top = max(float(xp.max(a)), float(xp.max(b)))
        if top * top > float(xp.finfo(dt).max) / 2:
            raise ValueError(f"box_to_gaussian: boxes has widths or heights up to {2 * top:.3g}, whose covariance "
                             f"(w/2)^2 overflows {np.dtype(cm.np_dtype(a)).name}")
    a2, b2 = a * a, b * b
    if th is None:
        c00, c11, c01 = a2, b2, xp.zeros_like(a)
    else:
        cs, sn = xp.cos(th), xp.sin(th)
        c00 = a2 * cs * cs + b2 * sn * sn
        c11 = a2 * sn * sn + b2 * cs * cs
        c01 = (a2 - b2) * cs * sn
    mean = xp.stack([cx, cy], axis=-1)
    cov = xp.stack([xp.stack([c00, c01], axis=-1), xp.stack([c01, c11], axis=-1)], axis=-2)
    return (compat.cast(mean, boxes.dtype, xp), compat.cast(cov, boxes.dtype, xp)), BoxGaussRes(a, b, th, format,
                                                                                              boxes.dtype)


@public(boxes=Float("... k", finite=True), format=Choice(tuple(FORMATS)),
        example=lambda rng, dtype: ((_box_example(rng, dtype),), {}))
def box_to_gaussian(boxes: Array, *, format: str = "xyxy") -> tuple[Array, Array]:
    r"""Gaussian of a box: mean (cx, cy) and covariance R(θ) diag(w²/4, h²/4) R(θ)ᵀ,

    .. math::

        \mu = (c_x, c_y),\qquad \Sigma = R(\theta)\,\mathrm{diag}(w^2/4,\ h^2/4)\,R(\theta)^T.

    Wang, Xu, Yang, Yu, "A Normalized Gaussian Wasserstein Distance for Tiny Object
    Detection" (2021): a box is modelled by the 2-D Gaussian whose 1-σ ellipse is
    inscribed in it.

    Parameters
    ----------
    boxes : array (..., 4) or (..., 5)
        ``"xyxy"``: (x1, y1, x2, y2); ``"cxcywh"``: (cx, cy, w, h); ``"cxcywha"``: (cx, cy, w, h, θ)
        with θ in radians (rotated boxes).
    format : {"xyxy", "cxcywh", "cxcywha"}

    Returns
    -------
    mean : array (..., 2)
    cov : array (..., 2, 2)

    Examples
    --------
    >>> import numpy as np
    >>> m, C = box_to_gaussian(np.array([0.0, 0.0, 4.0, 2.0]))
    >>> m, np.diag(C)
    (array([2., 1.]), array([4., 1.]))
    """
    return _box_to_gaussian(boxes, format)[0]


def box_to_gaussian_fwd(boxes, *, format="xyxy"):
    return _box_to_gaussian(boxes, format)


def box_to_gaussian_bwd(res: BoxGaussRes, dy):
    a, b, th, format, dtype = res
    dmean, dcov = dy
    xp = compat.array_namespace(a)
    dt = a.dtype
    dmean = xp.zeros(a.shape + (2,), dtype=dt) if dmean is None else compat.cast(dmean, dt, xp)
    dcov = xp.zeros(a.shape + (2, 2), dtype=dt) if dcov is None else compat.cast(dcov, dt, xp)
    g00, g11 = dcov[..., 0, 0], dcov[..., 1, 1]
    gs = dcov[..., 0, 1] + dcov[..., 1, 0]
    if th is None:
        cs, sn = 1.0, 0.0
        gth = None
    else:
        cs, sn = xp.cos(th), xp.sin(th)
        s2, c2 = 2 * sn * cs, cs * cs - sn * sn
        gth = (a * a - b * b) * ((g11 - g00) * s2 + gs * c2)
    ga = 2 * a * (g00 * cs * cs + gs * cs * sn + g11 * sn * sn)
    gb = 2 * b * (g00 * sn * sn - gs * cs * sn + g11 * cs * cs)
    g = _params_bwd((dmean[..., 0], dmean[..., 1], ga, gb, gth), format, xp)
    return (compat.cast(g, dtype, xp),)


vjp(box_to_gaussian, box_to_gaussian_fwd, box_to_gaussian_bwd, validate=True)


# ---------------------------------------------------------------- W2² between boxes, elementwise
def _pair(p1, p2, pairwise):
    """Line up box parameters: broadcast (...) with (...), or outer (n,) x (m,) for pairwise."""
    if not pairwise:
        return p1, p2
    return (tuple(None if v is None else v[:, None] for v in p1),
            tuple(None if v is None else v[None, :] for v in p2))


def _w2sq(p1, p2, xp):
    """Squared 2-Wasserstein distance and what the backward needs (elementwise, broadcasting)."""
    cx1, cy1, a1, b1, t1 = p1
    cx2, cy2, a2, b2, t2 = p2
    dcx, dcy = cx1 - cx2, cy1 - cy2
    if t1 is None:
        da, db = a1 - a2, b1 - b2
        return dcx * dcx + dcy * dcy + da * da + db * db, (dcx, dcy, da, db)
    dl = t1 - t2
    c2, s2 = xp.cos(dl) ** 2, xp.sin(dl) ** 2
    A = a1 * a1 * a2 * a2 + b1 * b1 * b2 * b2
    B = a1 * a1 * b2 * b2 + b1 * b1 * a2 * a2
    P = a1 * b1 * a2 * b2
    S = xp.sqrt(xp.clip(A * c2 + B * s2 + 2 * P, 0.0, None))
    d2 = dcx * dcx + dcy * dcy + a1 * a1 + b1 * b1 + a2 * a2 + b2 * b2 - 2 * S
    return xp.clip(d2, 0.0, None), (dcx, dcy, dl, c2, s2, A, B, S)  # rounding: an exact 0 slightly negative


def _w2sq_bwd(p1, p2, aux, g, xp):
    """Cotangents of both boxes' parameters given the cotangent ``g`` of W2² (broadcast shape)."""
    cx1, cy1, a1, b1, t1 = p1
    cx2, cy2, a2, b2, t2 = p2
    if t1 is None:
        dcx, dcy, da, db = aux
        g1 = (2 * g * dcx, 2 * g * dcy, 2 * g * da, 2 * g * db, None)
        return g1, tuple(None if v is None else -v for v in g1)
    dcx, dcy, dl, c2, s2, A, B, S = aux
    pos = S > 0
    inv = xp.where(pos, 1.0 / xp.where(pos, S, xp.ones_like(S)), xp.zeros_like(S))
    ga1 = 2 * a1 - inv * (2 * a1 * (a2 * a2 * c2 + b2 * b2 * s2) + 2 * b1 * a2 * b2)
    gb1 = 2 * b1 - inv * (2 * b1 * (b2 * b2 * c2 + a2 * a2 * s2) + 2 * a1 * a2 * b2)
    ga2 = 2 * a2 - inv * (2 * a2 * (a1 * a1 * c2 + b1 * b1 * s2) + 2 * a1 * b1 * b2)
    gb2 = 2 * b2 - inv * (2 * b2 * (b1 * b1 * c2 + a1 * a1 * s2) + 2 * a1 * b1 * a2)
    gdl = -inv * (B - A) * xp.sin(2 * dl)
    g1 = (2 * g * dcx, 2 * g * dcy, g * ga1, g * gb1, g * gdl)
    g2 = (-2 * g * dcx, -2 * g * dcy, g * ga2, g * gb2, -g * gdl)
    return g1, g2


def _scale(p1, p2, xp):
    """Both boxes' lengths divided by one power of two ``t`` (angles untouched); returns (p1', p2', t)."""
    t = cm.pow2_scale(xp, *((v, None) for v in p1[:4] + p2[:4]))
    return (tuple(v / t for v in p1[:4]) + p1[4:], tuple(v / t for v in p2[:4]) + p2[4:], t)


# distances from the scaled W2² (d2s) and the scale t: kind 0 = W2², 1 = W2, 2 = NWD with
# sqrt(W2² + eps) = hypot(t sqrt(d2s), sqrt(eps)) (neither t² nor eps / t² can overflow or underflow)
def _finish(d2s, kind, Cn, eps, t, xp):
    if kind == 0:
        return d2s * (t * t)
    if kind == 1:
        return xp.sqrt(d2s) * t
    return xp.exp(-xp.hypot(xp.sqrt(d2s) * t, xp.full_like(d2s, eps ** 0.5)) / Cn)


def _finish_bwd(d2s, y, kind, Cn, eps, t, dy, xp):
    """dy * d(output)/d(d2s)."""
    if kind == 0:
        return dy * (t * t)
    if kind == 1:
        r = xp.sqrt(d2s)
        pos = r > 0
        return xp.where(pos, dy * t / (2 * xp.where(pos, r, xp.ones_like(r))), xp.zeros_like(r))
    r = xp.hypot(xp.sqrt(d2s) * t, xp.full_like(d2s, eps ** 0.5))
    pos = r > 0
    return xp.where(pos, -dy * y * (t / xp.where(pos, r, xp.ones_like(r))) * t / (2 * Cn), xp.zeros_like(r))


def _check_squared(y, xp):
    if compat.is_concrete(y) and not bool(xp.all(xp.isfinite(y))):
        raise ValueError("box_wasserstein: W2^2 of b1 and b2 overflows their dtype (squared=True); use "
                         "squared=False")


def _prepare(b1, b2, format, pairwise, fn):
    _check_boxes(b1, "b1", format, fn)
    _check_boxes(b2, "b2", format, fn)
    if pairwise:
        for nm, bx in (("b1", b1), ("b2", b2)):
            if bx.ndim != 2:
                raise ValueError(f"{fn}: {nm} must have shape ({'n' if nm == 'b1' else 'm'}, {FORMATS[format]}) "
                                 f"with pairwise=True, got shape {tuple(bx.shape)}")
    else:
        try:
            np.broadcast_shapes(tuple(b1.shape[:-1]), tuple(b2.shape[:-1]))
        except ValueError:
            raise ValueError(f"{fn}: the batch dimensions of b1 {tuple(b1.shape[:-1])} and b2 "
                             f"{tuple(b2.shape[:-1])} do not broadcast (pairwise=True compares every pair)") from None
    if b1.dtype != b2.dtype:
        raise TypeError(f"{fn}: b1 and b2 must have one dtype, got {b1.dtype} and {b2.dtype}")


class BoxRes(NamedTuple):
    q1: tuple
    q2: tuple
    aux: tuple
    d2s: Any
    y: Any
    t: Any
    kind: int
    Cn: float
    eps: float
    format: str
    pairwise: bool
    shapes: tuple
    dtype: Any


def _boxes_fwd(b1, b2, format, pairwise, kind, Cn, eps):
    xp = compat.array_namespace(b1, b2)
    dt = compat.compute_dtype(b1, xp)
    p1, p2, t = _scale(_params(b1, format, "b1", xp, dt), _params(b2, format, "b2", xp, dt), xp)
    q1, q2 = _pair(p1, p2, pairwise)
    d2s, aux = _w2sq(q1, q2, xp)
    y = _finish(d2s, kind, Cn, eps, t, xp)
    if kind == 0:
        _check_squared(y, xp)
    res = BoxRes(q1, q2, aux, d2s, y, t, kind, Cn, eps, format, pairwise, (tuple(b1.shape), tuple(b2.shape)),
                 b1.dtype)
    return compat.cast(y, b1.dtype, xp), res


def _boxes_bwd(res: BoxRes, dy):
    xp = compat.array_namespace(res.d2s)
    dy = compat.cast(dy, res.d2s.dtype, xp)
    g = _finish_bwd(res.d2s, res.y, res.kind, res.Cn, res.eps, res.t, dy, xp)
    g1, g2 = _w2sq_bwd(res.q1, res.q2, res.aux, g, xp)
    # lengths were divided by t (angles were not)
    g1 = tuple(None if v is None else (v / res.t if k < 4 else v) for k, v in enumerate(g1))
    g2 = tuple(None if v is None else (v / res.t if k < 4 else v) for k, v in enumerate(g2))
    s1, s2 = res.shapes
    if res.pairwise:
        g1 = tuple(None if v is None else xp.sum(v, axis=1) for v in g1)
        g2 = tuple(None if v is None else xp.sum(v, axis=0) for v in g2)
    else:
        g1 = tuple(None if v is None else unbroadcast(xp.broadcast_to(v, g.shape), s1[:-1], xp) for v in g1)
        g2 = tuple(None if v is None else unbroadcast(xp.broadcast_to(v, g.shape), s2[:-1], xp) for v in g2)
    d1 = _params_bwd(g1, res.format, xp)
    d2 = _params_bwd(g2, res.format, xp)
    if tuple(d1.shape) != s1:
        d1 = xp.broadcast_to(d1, s1)
    if tuple(d2.shape) != s2:
        d2 = xp.broadcast_to(d2, s2)
    return compat.cast(d1, res.dtype, xp), compat.cast(d2, res.dtype, xp)


# the distances themselves: the generic body computes both layouts; pairwise axis-aligned NumPy / CuPy boxes take
# the fused kernels
_box_distances = Dispatcher("ot.box_distances", serves=("ot.box_wasserstein", "ot.normalized_wasserstein_boxes"))


@_box_distances.generic
def _box_distances_generic(b1, b2, *, format, pairwise, kind, Cn, eps, out, xp):
    return compat.write_out(out, _boxes_fwd(b1, b2, format, pairwise, kind, Cn, eps)[0])


def _kernel_ok(b1, b2, *, format, pairwise, **kw):
    return pairwise and format != "cxcywha"


def _kernel_params(b1, b2, kind, xp, half):
    """(n, 4) and (4, m) half-parameters divided by the power of two ``t`` (a float; >= 1 for the NWD, whose
    small distances vanish next to eps anyway)."""
    p1, p2 = half(b1), half(b2)
    top = max(float(xp.max(xp.abs(p1))), float(xp.max(xp.abs(p2))))
    t = 1.0 if not 0 < top < float("inf") else float(2.0 ** np.floor(np.log2(top)))
    if kind == 2:
        t = max(t, 1.0)
    return p1 / t, (p2 / t).T, t


def _kernel_consts(kind, Cn, eps, t, dtype):
    """[1/C, eps] of the scaled problem (NWD: exp(-t sqrt(d2' + eps/t^2)/C), t >= 1)."""
    return np.array([t / Cn, eps / (t * t)] if kind == 2 else [1.0 / Cn, eps], dtype=dtype)


def _rescale_out(buf, kind, t, xp):
    if t != 1.0 and kind == 0:
        buf *= t * t
    elif t != 1.0 and kind == 1:
        buf *= t
    if kind == 0:
        _check_squared(buf, xp)
    return buf


@_box_distances.numba(when=lambda b1, b2, **kw: _kernel_ok(b1, b2, **kw) and numpy_float(b1, b2))
def _box_distances_numba(b1, b2, *, format, pairwise, kind, Cn, eps, out, xp):
    from .._numba import ot as nb

    _params(b1, format, "b1", xp, b1.dtype)            # validation only (negative sizes)
    _params(b2, format, "b2", xp, b2.dtype)
    p1, p2t, t = _kernel_params(b1, b2, kind, xp, lambda b: nb.box_half_params(b, format))
    p1, p2t = np.ascontiguousarray(p1), np.ascontiguousarray(p2t)
    shape = (b1.shape[0], b2.shape[0])
    direct = out is not None and out.dtype == b1.dtype and out.shape == shape and out.flags.c_contiguous
    buf = out if direct else np.empty(shape, dtype=b1.dtype)
    consts = _kernel_consts(kind, Cn, eps, t, b1.dtype)
    if kind == 2 and b1.dtype == np.float32:
        nb.pairwise_nwd_f32(p1, p2t, buf, consts)
    else:
        nb.pairwise_box_w2(p1, p2t, buf, kind, consts)
    buf = _rescale_out(buf, kind, t, xp)
    return buf if direct or out is None else compat.write_out(out, buf)


@_box_distances.cuda(when=lambda b1, b2, **kw: _kernel_ok(b1, b2, **kw) and str(b1.dtype) in ("float32", "float64"))
def _box_distances_cuda(b1, b2, *, format, pairwise, kind, Cn, eps, out, xp):
    """One thread per entry along j (coalesced), grid y over i; kernel ``pairwise_box_w2<T>`` in _cuda/ot.cu."""
    import cupy

    from .._cuda import launch

    def half(bx):
        cx, cy, a, b, _ = _params(bx, format, "b", xp, bx.dtype)
        return cupy.stack([cx, cy, a, b], axis=1)

    p1, p2t, t = _kernel_params(b1, b2, kind, xp, half)
    p1, p2t = cupy.ascontiguousarray(p1), cupy.ascontiguousarray(p2t)
    n, m = p1.shape[0], p2t.shape[1]
    buf = cupy.empty((n, m), dtype=b1.dtype)
    c = _kernel_consts(kind, Cn, eps, t, np.dtype(str(b1.dtype)))
    launch.grid2d("ot", "pairwise_box_w2", b1.dtype, n, m, (p1, p2t, buf, n, m, np.int32(kind), c[0], c[1]),
                  block=(256, 1))
    return compat.write_out(out, _rescale_out(buf, kind, t, xp))


# leading axes broadcast, or (pairwise=True) are (n,) and (m,): the body checks the layout the option asks for
_BOXES = dict(b1=Float(min_ndim=1, finite=True), b2=Float(min_ndim=1, finite=True))


def _two_boxes(rng, dtype):
    return _box_example(rng, dtype, 5, 5), {}


# ---------------------------------------------------------------- box_wasserstein
@public(**_BOXES, format=Choice(tuple(FORMATS)), pairwise=Bool(), squared=Bool(), out=Out(),
        example=_two_boxes)
def box_wasserstein(b1: Array, b2: Array, *, format: str = "xyxy", pairwise: bool = False, squared: bool = False,
                    out: Array | None = None) -> Array:
    r"""2-Wasserstein distance between the Gaussians of two sets of boxes.

    .. math::

        W_2^2 = \|m_1 - m_2\|^2 + \operatorname{tr} C_1 + \operatorname{tr} C_2
        - 2\operatorname{tr}\big(C_1^{1/2} C_2 C_1^{1/2}\big)^{1/2},

    the Bures closed form of
    :func:`optnorm.ot.gaussian_wasserstein` on the boxes' Gaussians (:func:`box_to_gaussian`),
    evaluated elementwise: for axis-aligned boxes W₂² = Δcx² + Δcy² + Δw²/4 + Δh²/4; for rotated
    boxes see the module docstring.  Wang et al., "A Normalized Gaussian Wasserstein Distance for
    Tiny Object Detection" (2021).

    Parameters
    ----------
    b1, b2 : arrays (..., 4) or (..., 5)
        Boxes in ``format``; their leading axes broadcast, or with ``pairwise=True`` they have
        shapes (n, k) and (m, k) and the result is (n, m).
    format : {"xyxy", "cxcywh", "cxcywha"}
        Rotated boxes (``"cxcywha"``) carry the angle in radians.
    pairwise : bool
        All pairs instead of broadcasting.
    squared : bool
        Return W₂² instead of W₂.
    out : array, optional
        Preallocated result (NumPy/CuPy/torch; not JAX).

    Returns
    -------
    array (...) or (n, m), the dtype of the boxes.

    Examples
    --------
    >>> import numpy as np
    >>> float(box_wasserstein(np.array([0., 0, 2, 2]), np.array([3., 4, 5, 6])))
    5.0
    """
    _prepare(b1, b2, format, pairwise, "box_wasserstein")
    xp = compat.array_namespace(b1, b2)
    return _box_distances(b1, b2, format=format, pairwise=pairwise, kind=0 if squared else 1, Cn=1.0, eps=0.0,
                          out=out, xp=xp)


def box_wasserstein_fwd(b1, b2, *, format="xyxy", pairwise=False, squared=False, out=None):
    _prepare(b1, b2, format, pairwise, "box_wasserstein")
    y, res = _boxes_fwd(b1, b2, format, pairwise, 0 if squared else 1, 1.0, 0.0)
    return compat.write_out(out, y), res


vjp(box_wasserstein, box_wasserstein_fwd, _boxes_bwd, validate=True)


# ---------------------------------------------------------------- NWD
@public(**_BOXES, C=Positive(), format=Choice(tuple(FORMATS)), pairwise=Bool(), eps=NonNegative(), out=Out(),
        example=_two_boxes)
def normalized_wasserstein_boxes(b1: Array, b2: Array, *, C: float = 12.8, format: str = "xyxy", pairwise: bool = False,
                                 eps: float = 1e-7, out: Array | None = None) -> Array:
    r"""Normalized Wasserstein Distance (NWD) between boxes: exp(−√(W₂² + eps) / C),

    .. math::

        \mathrm{NWD}(b_1, b_2) = \exp\big(-\sqrt{W_2^2(b_1, b_2) + \epsilon}\,/\,C\big).

    W₂ is :func:`box_wasserstein` (the Bures distance between the boxes' Gaussians).  The
    similarity is 1 for identical boxes and decays smoothly with distance, also for boxes that
    do not overlap (where IoU is 0), which makes it suited to tiny objects; ``1 − NWD`` is the
    NWD loss.  ``eps`` inside the root follows the detection code (YOLO forks'
    ``wasserstein_loss(pred, target, eps=1e-7, constant=12.8)``) and keeps the gradient finite
    for identical boxes.

    Wang, Xu, Yang, Yu, "A Normalized Gaussian Wasserstein Distance for Tiny Object Detection"
    (2021); used in DEAL-YOLO (Naidu et al., 2025).

    Parameters
    ----------
    b1, b2 : arrays (..., 4) or (..., 5)
        Boxes (see :func:`box_wasserstein`).
    C : float > 0
        Dataset-dependent normalising constant (12.8 on AI-TOD, in pixels).
    format : {"xyxy", "cxcywh", "cxcywha"}
    pairwise : bool
        (n, k) x (m, k) -> (n, m) similarity matrix (label assignment, NMS).  On NumPy float
        input this runs a fused Numba kernel (float32: a vectorised exp, 2.5 ulp).
    eps : float >= 0
    out : array, optional
        Preallocated result (NumPy/CuPy/torch; not JAX); saves the page faults of a fresh
        n × m allocation, which cost about as much as the kernel for 4096 × 4096.

    Returns
    -------
    array in (0, 1], the dtype of the boxes.

    Examples
    --------
    >>> import numpy as np
    >>> b = np.array([[0., 0, 10, 10], [20., 0, 30, 10]])
    >>> normalized_wasserstein_boxes(b, b, pairwise=True).round(3)
    array([[1.  , 0.21],
           [0.21, 1.  ]])
    """
    _prepare(b1, b2, format, pairwise, "normalized_wasserstein_boxes")
    xp = compat.array_namespace(b1, b2)
    return _box_distances(b1, b2, format=format, pairwise=pairwise, kind=2, Cn=float(C), eps=float(eps), out=out,
                          xp=xp)


def normalized_wasserstein_boxes_fwd(b1, b2, *, C=12.8, format="xyxy", pairwise=False, eps=1e-7, out=None):
    _prepare(b1, b2, format, pairwise, "normalized_wasserstein_boxes")
    y, res = _boxes_fwd(b1, b2, format, pairwise, 2, float(C), float(eps))
    return compat.write_out(out, y), res


vjp(normalized_wasserstein_boxes, normalized_wasserstein_boxes_fwd, _boxes_bwd, validate=True)
