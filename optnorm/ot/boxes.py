"""Bounding boxes as Gaussians: 2-Wasserstein distance between boxes and the Normalized Wasserstein Distance (NWD).

A box with centre (cx, cy), width w, height h and angle θ (radians, counter-clockwise) is
modelled as N([cx, cy], R(θ) diag(w²/4, h²/4) R(θ)ᵀ) (Wang et al., "A Normalized Gaussian
Wasserstein Distance for Tiny Object Detection", 2021; used as a loss in DEAL-YOLO, 2025).
The 2-Wasserstein distance between two such Gaussians is the Bures closed form of
:func:`optnorm.ot.gaussian_wasserstein`; for 2×2 covariances it reduces to scalars:

    W₂² = ‖m₁ − m₂‖² + tr C₁ + tr C₂ − 2 √(tr(C₁C₂) + 2 √(det C₁ det C₂))

because tr √M = √(tr M + 2 √det M) for a 2×2 PSD matrix M = C₁^{1/2} C₂ C₁^{1/2}.  With
a = w/2, b = h/2, δ = θ₁ − θ₂:

    tr(C₁C₂) = (a₁²a₂² + b₁²b₂²) cos²δ + (a₁²b₂² + b₁²a₂²) sin²δ,   det C₁ det C₂ = (a₁b₁a₂b₂)².

For axis-aligned boxes (δ = 0) this is W₂² = (cx₁−cx₂)² + (cy₁−cy₂)² + (w₁−w₂)²/4 + (h₁−h₂)²/4.
Both forms are computed elementwise (no 2×2 matrix square roots), which is what makes the
pairwise n × m case fast; the test suite checks them against ``gaussian_wasserstein`` on the
Gaussians returned by :func:`box_to_gaussian`.
"""
from __future__ import annotations

from .._lib.vjp import unbroadcast
from .._lib import compat, ops, validate
from .._lib.dispatch import Dispatcher, numpy_float

__all__ = ["box_to_gaussian", "box_wasserstein", "normalized_wasserstein_boxes"]

_FORMATS = {"xyxy": 4, "cxcywh": 4, "cxcywha": 5}


# ---------------------------------------------------------------- parameters of a box
def _check_format(format):
    if not isinstance(format, str) or format not in _FORMATS:
        raise ValueError(f"format must be one of {tuple(_FORMATS)}, got {format!r}")
    return format


def _check_boxes(boxes, name, format, xp):
    validate.check_float(boxes, name, xp)
    k = _FORMATS[format]
    if boxes.ndim < 1 or boxes.shape[-1] != k:
        raise ValueError(f"{name} must have a last axis of size {k} for format={format!r}, "
                         f"got shape {tuple(boxes.shape)}")
    return boxes


def _params(boxes, format, name, xp, dt):
    """(cx, cy, a, b, theta-or-None) with a = w/2, b = h/2, in the compute dtype."""
    bx = xp.astype(boxes, dt) if boxes.dtype != dt else boxes
    c = [bx[..., i] for i in range(bx.shape[-1])]
    if format == "xyxy":
        cx, cy = (c[0] + c[2]) / 2, (c[1] + c[3]) / 2
        a, b = (c[2] - c[0]) / 2, (c[3] - c[1]) / 2
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
def box_to_gaussian(boxes, *, format="xyxy"):
    """Gaussian of a box: mean (cx, cy) and covariance R(θ) diag(w²/4, h²/4) R(θ)ᵀ.

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
    return box_to_gaussian_fwd(boxes, format=format)[0]


def box_to_gaussian_fwd(boxes, *, format="xyxy"):
    _check_format(format)
    xp = compat.array_namespace(boxes)
    _check_boxes(boxes, "boxes", format, xp)
    dt = compat.compute_dtype(boxes, xp)
    cx, cy, a, b, th = _params(boxes, format, "boxes", xp, dt)
    a2, b2 = a * a, b * b
    if th is None:
        zero = xp.zeros_like(a)
        c00, c11, c01 = a2, b2, zero
        cs, sn = None, None
    else:
        cs, sn = xp.cos(th), xp.sin(th)
        c00 = a2 * cs * cs + b2 * sn * sn
        c11 = a2 * sn * sn + b2 * cs * cs
        c01 = (a2 - b2) * cs * sn
    mean = xp.stack([cx, cy], axis=-1)
    cov = xp.stack([xp.stack([c00, c01], axis=-1), xp.stack([c01, c11], axis=-1)], axis=-2)
    if mean.dtype != boxes.dtype:
        mean, cov = xp.astype(mean, boxes.dtype), xp.astype(cov, boxes.dtype)
    return (mean, cov), (a, b, th, format, boxes.dtype)


def box_to_gaussian_bwd(res, dy):
    a, b, th, format, dtype = res
    dmean, dcov = dy
    xp = compat.array_namespace(a)
    dt = a.dtype
    dmean = xp.zeros(a.shape + (2,), dtype=dt) if dmean is None else xp.astype(dmean, dt)
    dcov = xp.zeros(a.shape + (2, 2), dtype=dt) if dcov is None else xp.astype(dcov, dt)
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
    return (xp.astype(g, dtype) if g.dtype != dtype else g,)


# ---------------------------------------------------------------- W2² between boxes, elementwise
def _pair(p1, p2, pairwise, xp):
    """Line up box parameters: broadcast (...) with (...), or outer (n,) x (m,) for pairwise."""
    if not pairwise:
        return p1, p2
    q1 = tuple(None if v is None else v[:, None] for v in p1)
    q2 = tuple(None if v is None else v[None, :] for v in p2)
    return q1, q2


def _w2sq(p1, p2, xp):
    """Squared 2-Wasserstein distance and what the backward needs (elementwise, broadcasting)."""
    cx1, cy1, a1, b1, t1 = p1
    cx2, cy2, a2, b2, t2 = p2
    dcx, dcy = cx1 - cx2, cy1 - cy2
    if t1 is None:
        da, db = a1 - a2, b1 - b2
        d2 = dcx * dcx + dcy * dcy + da * da + db * db
        return d2, (dcx, dcy, da, db)
    dl = t1 - t2
    c2, s2 = xp.cos(dl) ** 2, xp.sin(dl) ** 2
    A = a1 * a1 * a2 * a2 + b1 * b1 * b2 * b2
    B = a1 * a1 * b2 * b2 + b1 * b1 * a2 * a2
    P = a1 * b1 * a2 * b2
    S = xp.sqrt(xp.maximum(A * c2 + B * s2 + 2 * P, 0.0))
    d2 = dcx * dcx + dcy * dcy + a1 * a1 + b1 * b1 + a2 * a2 + b2 * b2 - 2 * S
    d2 = xp.maximum(d2, 0.0)  # rounding can make an exact 0 slightly negative
    return d2, (dcx, dcy, dl, c2, s2, A, B, S)


def _w2sq_bwd(p1, p2, aux, g, xp):
    """Cotangents of both boxes' parameters given the cotangent ``g`` of W2² (broadcast shape)."""
    cx1, cy1, a1, b1, t1 = p1
    cx2, cy2, a2, b2, t2 = p2
    if t1 is None:
        dcx, dcy, da, db = aux
        g1 = (2 * g * dcx, 2 * g * dcy, 2 * g * da, 2 * g * db, None)
        g2 = tuple(None if v is None else -v for v in g1)
        return g1, g2
    dcx, dcy, dl, c2, s2, A, B, S = aux
    inv = xp.where(S > 0, 1.0 / xp.where(S > 0, S, 1.0), 0.0)
    ga1 = 2 * a1 - inv * (2 * a1 * (a2 * a2 * c2 + b2 * b2 * s2) + 2 * b1 * a2 * b2)
    gb1 = 2 * b1 - inv * (2 * b1 * (b2 * b2 * c2 + a2 * a2 * s2) + 2 * a1 * a2 * b2)
    ga2 = 2 * a2 - inv * (2 * a2 * (a1 * a1 * c2 + b1 * b1 * s2) + 2 * a1 * b1 * b2)
    gb2 = 2 * b2 - inv * (2 * b2 * (b1 * b1 * c2 + a1 * a1 * s2) + 2 * a1 * b1 * a2)
    gdl = -inv * (B - A) * xp.sin(2 * dl)
    g1 = (2 * g * dcx, 2 * g * dcy, g * ga1, g * gb1, g * gdl)
    g2 = (-2 * g * dcx, -2 * g * dcy, g * ga2, g * gb2, -g * gdl)
    return g1, g2


def _prepare(b1, b2, format, pairwise):
    _check_format(format)
    xp = validate.check_same_namespace(b1=b1, b2=b2)
    _check_boxes(b1, "b1", format, xp)
    _check_boxes(b2, "b2", format, xp)
    if b1.dtype != b2.dtype:
        raise TypeError(f"b1 and b2 must have one dtype, got {b1.dtype} and {b2.dtype}")
    if pairwise:
        if b1.ndim != 2:
            raise ValueError(f"b1 must have shape (n, {_FORMATS[format]}) with pairwise=True, "
                             f"got shape {tuple(b1.shape)}")
        if b2.ndim != 2:
            raise ValueError(f"b2 must have shape (m, {_FORMATS[format]}) with pairwise=True, "
                             f"got shape {tuple(b2.shape)}")
    else:
        validate.check_broadcastable("b1", b1.shape[:-1], "b2", b2.shape[:-1])
    return xp


# distances from W2²: kind 0 = W2², 1 = W2, 2 = NWD
def _finish(d2, kind, C, eps, xp):
    if kind == 0:
        return d2
    if kind == 1:
        return xp.sqrt(d2)
    return xp.exp(-xp.sqrt(d2 + eps) / C)


def _finish_bwd(d2, y, kind, C, eps, dy, xp):
    if kind == 0:
        return dy
    if kind == 1:
        return xp.where(y > 0, dy / (2 * xp.where(y > 0, y, 1.0)), 0.0)
    r = xp.sqrt(d2 + eps)
    return xp.where(r > 0, -dy * y / (2 * C * xp.where(r > 0, r, 1.0)), 0.0)


_pairwise_fast = Dispatcher("ot.boxes_pairwise")


@_pairwise_fast.generic
def _(b1, b2, *, format, kind, C, eps, xp, out=None):
    dt = compat.compute_dtype(b1, xp)
    p1 = _params(b1, format, "b1", xp, dt)
    p2 = _params(b2, format, "b2", xp, dt)
    q1, q2 = _pair(p1, p2, True, xp)
    d2, _ = _w2sq(q1, q2, xp)
    y = _finish(d2, kind, C, eps, xp)
    return compat.write_out(out, xp.astype(y, b1.dtype) if y.dtype != b1.dtype else y)


@_pairwise_fast.numba(when=lambda b1, b2, *, format, **kw: format != "cxcywha" and numpy_float(b1, b2))
def _(b1, b2, *, format, kind, C, eps, xp, out=None):
    import numpy as np

    from .._numba import ot_wave2

    _params(b1, format, "b1", xp, b1.dtype)  # validation only (negative sizes)
    _params(b2, format, "b2", xp, b2.dtype)
    p1 = np.ascontiguousarray(ot_wave2.box_half_params(b1, format))
    p2 = np.ascontiguousarray(ot_wave2.box_half_params(b2, format).T)  # (4, m): contiguous per parameter
    shape = (b1.shape[0], b2.shape[0])
    direct = out is not None and out.dtype == b1.dtype and out.shape == shape and out.flags.c_contiguous
    buf = out if direct else np.empty(shape, dtype=b1.dtype)
    consts = np.array([1.0 / C, eps], dtype=b1.dtype)
    if kind == 2 and b1.dtype == np.float32:
        ot_wave2.pairwise_nwd_f32(p1, p2, buf, consts)
    else:
        ot_wave2.pairwise_box_w2(p1, p2, buf, kind, consts)
    return buf if direct or out is None else compat.write_out(out, buf)


@_pairwise_fast.cuda(when=lambda b1, b2, *, format, **kw: format != "cxcywha"
                     and str(b1.dtype) in ("float32", "float64") and b1.dtype == b2.dtype)
def _(b1, b2, *, format, kind, C, eps, xp, out=None):
    """One thread per entry along j (coalesced), grid y over i; kernel ``pairwise_box_w2<T>`` in _cuda/wave2.cu."""
    import cupy
    import numpy as np

    from .._cuda import loader

    dt = compat.compute_dtype(b1, xp)
    p1 = _params(b1, format, "b1", xp, dt)
    p2 = _params(b2, format, "b2", xp, dt)
    P1 = cupy.ascontiguousarray(cupy.stack(p1[:4], axis=1))  # (n, 4)
    P2 = cupy.ascontiguousarray(cupy.stack(p2[:4], axis=0))  # (4, m)
    n, m = P1.shape[0], P2.shape[1]
    buf = cupy.empty((n, m), dtype=b1.dtype)
    if n and m:
        ker = loader.kernel("ot", "pairwise_box_w2", b1.dtype)
        scal = np.dtype(b1.dtype).type
        ker(((m + 255) // 256, min(n, 65535)), (256,), (P1, P2, buf, np.int64(n), np.int64(m), np.int32(kind),
                                                         scal(1.0 / C), scal(eps)))
    return compat.write_out(out, buf)


def _boxes_fwd(b1, b2, format, pairwise, kind, C, eps):
    xp = _prepare(b1, b2, format, pairwise)
    dt = compat.compute_dtype(b1, xp)
    p1 = _params(b1, format, "b1", xp, dt)
    p2 = _params(b2, format, "b2", xp, dt)
    q1, q2 = _pair(p1, p2, pairwise, xp)
    d2, aux = _w2sq(q1, q2, xp)
    y = _finish(d2, kind, C, eps, xp)
    res = (q1, q2, aux, d2, y, kind, C, eps, format, pairwise, tuple(b1.shape), tuple(b2.shape), b1.dtype)
    return (xp.astype(y, b1.dtype) if y.dtype != b1.dtype else y), res


def _boxes_bwd(res, dy):
    q1, q2, aux, d2, y, kind, C, eps, format, pairwise, s1, s2, dtype = res
    xp = compat.array_namespace(d2)
    dy = xp.astype(dy, d2.dtype) if dy.dtype != d2.dtype else dy
    g = _finish_bwd(d2, y, kind, C, eps, dy, xp)
    g1, g2 = _w2sq_bwd(q1, q2, aux, g, xp)
    if pairwise:
        g1 = tuple(None if v is None else xp.sum(v, axis=1) for v in g1)
        g2 = tuple(None if v is None else xp.sum(v, axis=0) for v in g2)
    else:
        g1 = tuple(None if v is None else unbroadcast(xp.broadcast_to(v, g.shape), s1[:-1], xp) for v in g1)
        g2 = tuple(None if v is None else unbroadcast(xp.broadcast_to(v, g.shape), s2[:-1], xp) for v in g2)
    d1 = _params_bwd(g1, format, xp)
    d2_ = _params_bwd(g2, format, xp)
    if d1.shape != s1:
        d1 = xp.broadcast_to(d1, s1)
    if d2_.shape != s2:
        d2_ = xp.broadcast_to(d2_, s2)
    return (xp.astype(d1, dtype), xp.astype(d2_, dtype))


def _check_common(C=None, eps=None):
    if C is not None:
        validate.check_positive(C, "C")
    if eps is not None:
        validate.check_nonnegative(eps, "eps")


# ---------------------------------------------------------------- box_wasserstein
def box_wasserstein(b1, b2, *, format="xyxy", pairwise=False, squared=False, out=None):
    """2-Wasserstein distance between the Gaussians of two sets of boxes.

    W₂² = ‖m₁ − m₂‖² + tr C₁ + tr C₂ − 2 tr (C₁^{1/2} C₂ C₁^{1/2})^{1/2}, the Bures closed form of
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
    if pairwise and not _needs_generic(b1, b2, format):
        return _fast_pairwise(b1, b2, format=format, kind=0 if squared else 1, C=1.0, eps=0.0, out=out)
    return compat.write_out(out, box_wasserstein_fwd(b1, b2, format=format, pairwise=pairwise,
                                                     squared=squared)[0])


def _needs_generic(b1, b2, format):
    """Pairwise NumPy/CuPy input goes through the dispatcher (Numba/CUDA kernels); other libraries use the op."""
    return not ((compat.is_numpy(b1) and compat.is_numpy(b2)) or (compat.is_cupy(b1) and compat.is_cupy(b2)))


def _fast_pairwise(b1, b2, *, format, kind, C, eps, out=None):
    xp = _prepare(b1, b2, format, True)
    return _pairwise_fast(b1, b2, format=format, kind=kind, C=C, eps=eps, xp=xp, out=out)


def box_wasserstein_fwd(b1, b2, *, format="xyxy", pairwise=False, squared=False, out=None):
    return _boxes_fwd(b1, b2, format, pairwise, 0 if squared else 1, 1.0, 0.0)


box_wasserstein_bwd = _boxes_bwd


# ---------------------------------------------------------------- NWD
def normalized_wasserstein_boxes(b1, b2, *, C=12.8, format="xyxy", pairwise=False, eps=1e-7, out=None):
    """Normalized Wasserstein Distance (NWD) between boxes: exp(−√(W₂² + eps) / C).

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
    _check_common(C, eps)
    if pairwise and not _needs_generic(b1, b2, format):
        return _fast_pairwise(b1, b2, format=format, kind=2, C=float(C), eps=float(eps), out=out)
    return compat.write_out(out, normalized_wasserstein_boxes_fwd(b1, b2, C=C, format=format, pairwise=pairwise,
                                                                  eps=eps)[0])


def normalized_wasserstein_boxes_fwd(b1, b2, *, C=12.8, format="xyxy", pairwise=False, eps=1e-7, out=None):
    _check_common(C, eps)
    return _boxes_fwd(b1, b2, format, pairwise, 2, float(C), float(eps))


normalized_wasserstein_boxes_bwd = _boxes_bwd

ops.register("ot.box_to_gaussian", box_to_gaussian, box_to_gaussian_fwd, box_to_gaussian_bwd)
ops.register("ot.box_wasserstein", box_wasserstein, box_wasserstein_fwd, box_wasserstein_bwd)
ops.register("ot.normalized_wasserstein_boxes", normalized_wasserstein_boxes, normalized_wasserstein_boxes_fwd,
             normalized_wasserstein_boxes_bwd)
