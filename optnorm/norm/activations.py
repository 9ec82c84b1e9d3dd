"""Self-normalizing activations (SELU, alpha dropout) and normalized similarities (cosine, SNR distance)."""
from __future__ import annotations

import numpy as np

from .._lib.vjp import unbroadcast
from .._lib import compat, ops, validate

__all__ = ["selu", "alpha_dropout", "cosine_similarity", "snr_distance", "SELU_ALPHA", "SELU_SCALE"]

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _as(xp, a, dt):
    return None if a is None else (a if a.dtype == dt else xp.astype(a, dt))


# ---------------------------------------------------------------------------------------------- selu
def _selu_fwd(x):
    validate.check_float(x, "x")
    xp = compat.array_namespace(x)
    xc = _as(xp, x, compat.compute_dtype(x, xp))
    neg = SELU_SCALE * SELU_ALPHA * xp.expm1(xp.minimum(xc, 0.0))
    y = xp.where(xc > 0, SELU_SCALE * xc, neg)
    return _as(xp, y, x.dtype), (xp, xc, x.dtype)


def selu(x):
    r"""Scaled exponential linear unit: ``scale * x`` for x > 0, ``scale * alpha * (exp(x) - 1)`` otherwise.

    alpha = 1.6732632423543772848170429916717, scale = 1.0507009873554804934193349852946 (the fixed point that
    keeps zero mean and unit variance).  Klambauer, Unterthiner, Mayr & Hochreiter (2017), "Self-Normalizing
    Neural Networks".  Same values as ``torch.nn.functional.selu``.

    Parameters
    ----------
    x : array

    Returns
    -------
    array like x

    Examples
    --------
    >>> import numpy as np
    >>> selu(np.array([-1.0, 0.0, 1.0])).round(4)
    array([-1.1113,  0.    ,  1.0507])
    """
    return _selu_fwd(x)[0]


def selu_fwd(x):
    return _selu_fwd(x)


def selu_bwd(res, dy):
    xp, xc, dt = res
    d = xp.where(xc > 0, SELU_SCALE, SELU_SCALE * SELU_ALPHA * xp.exp(xp.minimum(xc, 0.0)))
    return (_as(xp, _as(xp, dy, xc.dtype) * d, dt),)


ops.register("norm.selu", selu, selu_fwd, selu_bwd)


# ---------------------------------------------------------------------------------------------- alpha_dropout
def _ad_fwd(x, *, p=0.5, training=True, seed=None):
    validate.check_float(x, "x")
    xp = compat.array_namespace(x)
    p = validate.check_probability(p, "p")
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {type(training).__name__}")
    if seed is not None and not isinstance(seed, (int, np.integer, np.random.Generator)):
        raise TypeError(f"seed must be None, an int or a numpy.random.Generator, got {type(seed).__name__}")
    if not training or p == 0.0:
        return x, (xp, None, 1.0, x.dtype)
    if p == 1.0:
        return x * 0, (xp, None, 0.0, x.dtype)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    keep_np = rng.random(tuple(x.shape)) >= p
    cdt = compat.compute_dtype(x, xp)
    keep = _as(xp, compat.from_numpy_like(keep_np.astype(np.float32), x), cdt)
    ap = -SELU_SCALE * SELU_ALPHA
    a = ((1 - p) * (1 + p * ap * ap)) ** -0.5
    b = -a * ap * p
    xc = _as(xp, x, cdt)
    y = a * (xc * keep + ap * (1 - keep)) + b
    return _as(xp, y, x.dtype), (xp, keep, a, x.dtype)


def alpha_dropout(x, *, p=0.5, training=True, seed=None):
    r"""Alpha dropout: dropout for SELU networks that keeps zero mean and unit variance.

    Each unit is dropped with probability ``p`` and set to ``alpha' = -scale * alpha`` (SELU's negative
    saturation), then every unit gets the affine correction ``a * (.) + b`` with
    ``a = ((1 - p)(1 + p alpha'^2))^{-1/2}``, ``b = -a alpha' p``, so a standard-normal input keeps mean 0 and
    variance 1.  ``training=False`` or ``p=0`` return x; ``p=1`` returns zeros (as torch).  Klambauer et al.
    (2017), "Self-Normalizing Neural Networks"; the same rule as ``torch.nn.functional.alpha_dropout``
    (statistically: the random stream differs).

    The mask is drawn on the host with NumPy (reproducible by ``seed``) and moved to x's library and device.

    Parameters
    ----------
    x : array
    p : float in [0, 1]
        Drop probability.
    training : bool
    seed : int or numpy.random.Generator, optional

    Returns
    -------
    array like x

    Examples
    --------
    >>> import numpy as np
    >>> y = alpha_dropout(np.random.default_rng(0).standard_normal(100000), p=0.2, seed=1)
    >>> bool(abs(y.mean()) < 0.02 and abs(y.var() - 1) < 0.02)
    True
    """
    return _ad_fwd(x, p=p, training=training, seed=seed)[0]


def alpha_dropout_fwd(x, *, p=0.5, training=True, seed=None):
    return _ad_fwd(x, p=p, training=training, seed=seed)


def alpha_dropout_bwd(res, dy):
    xp, keep, a, dt = res
    if keep is None:
        return (dy * a,)
    return (_as(xp, a * keep * _as(xp, dy, keep.dtype), dt),)


ops.register("norm.alpha_dropout", alpha_dropout, alpha_dropout_fwd, alpha_dropout_bwd)


# ---------------------------------------------------------------------------------------------- cosine_similarity
def _safe_norm(xp, a, ax):
    """Euclidean norm along ``ax`` (keepdims) scaled by the max entry, so |x| up to the dtype's max is fine."""
    m = xp.max(xp.abs(a), axis=ax, keepdims=True)
    ms = xp.where(m > 0, m, xp.ones_like(m))
    u = a / ms
    return ms * xp.sqrt(xp.sum(u * u, axis=ax, keepdims=True))


def _row_scale(xp, *arrs, axis=None):
    """Largest |entry| (per row along ``axis`` with keepdims, or global) with zeros replaced by one."""
    ms = [xp.max(xp.abs(a), axis=axis, keepdims=axis is not None) for a in arrs]
    m = ms[0]
    for o in ms[1:]:
        m = xp.maximum(m, o)
    return xp.where(m > 0, m, xp.ones_like(m))


def _cos_fwd(x1, x2, *, axis=-1, eps=1e-8):
    xp = validate.check_same_namespace(x1=x1, x2=x2)
    validate.check_float(x1, "x1")
    validate.check_float(x2, "x2")
    shp = validate.check_broadcastable("x1", x1.shape, "x2", x2.shape)
    ax = validate.check_axis(axis, len(shp), "axis")
    validate.check_positive(eps, "eps")
    dt = xp.result_type(x1.dtype, x2.dtype)
    cdt = xp.float64 if dt == xp.float64 else xp.float32
    a = xp.broadcast_to(_as(xp, x1, cdt), shp)
    b = xp.broadcast_to(_as(xp, x2, cdt), shp)
    n1 = _safe_norm(xp, a, ax)
    n2 = _safe_norm(xp, b, ax)
    c1 = xp.maximum(n1, eps)
    c2 = xp.maximum(n2, eps)
    u1, u2 = a / c1, b / c2
    cos = xp.sum(u1 * u2, axis=ax, keepdims=True)
    res = (xp, ax, a, b, n1, n2, c1, c2, u1, u2, cos, float(eps), tuple(x1.shape), tuple(x2.shape),
           x1.dtype, x2.dtype)
    return _as(xp, xp.squeeze(cos, axis=ax), dt), res


def cosine_similarity(x1, x2, *, axis=-1, eps=1e-8):
    r"""Cosine similarity with torch's semantics: each norm clamped separately at ``eps``.

    ``cos = < x1 / max(||x1||, eps), x2 / max(||x2||, eps) >`` along ``axis`` of the broadcast shape.  Below
    ``eps`` it is not scale invariant (a tiny vector gives a small value, not +-1), as in
    ``torch.nn.functional.cosine_similarity`` (whose default axis is 1; optnorm's is -1).

    Parameters
    ----------
    x1, x2 : arrays, broadcastable
    axis : int
        Axis of the broadcast shape to reduce.
    eps : float > 0

    Returns
    -------
    array with ``axis`` removed

    Examples
    --------
    >>> import numpy as np
    >>> float(cosine_similarity(np.array([1.0, 0.0]), np.array([1.0, 1.0])))  # doctest: +ELLIPSIS
    0.7071...
    """
    return _cos_fwd(x1, x2, axis=axis, eps=eps)[0]


def cosine_similarity_fwd(x1, x2, *, axis=-1, eps=1e-8):
    return _cos_fwd(x1, x2, axis=axis, eps=eps)


def cosine_similarity_bwd(res, dy):
    xp, ax, a, b, n1, n2, c1, c2, u1, u2, cos, eps, s1, s2, d1, d2 = res
    g = xp.expand_dims(_as(xp, dy, a.dtype), axis=ax)

    def one(x, n, c, c_other_u, dt, shape):
        safe = xp.where(n > 0, n, 1.0)
        corr = xp.where(n > eps, cos * x / (c * safe), 0.0)
        return _as(xp, unbroadcast(g * (c_other_u / c - corr), shape, xp), dt)

    return one(a, n1, c1, u2, d1, s1), one(b, n2, c2, u1, d2, s2)


ops.register("norm.cosine_similarity", cosine_similarity, cosine_similarity_fwd, cosine_similarity_bwd)


# ---------------------------------------------------------------------------------------------- snr_distance
def _snr_fwd(anchor, other, *, axis=-1, pairwise=False):
    xp = validate.check_same_namespace(anchor=anchor, other=other)
    validate.check_float(anchor, "anchor")
    validate.check_float(other, "other")
    dt = xp.result_type(anchor.dtype, other.dtype)
    cdt = xp.float64 if dt == xp.float64 else xp.float32
    a = _as(xp, anchor, cdt)
    b = _as(xp, other, cdt)
    if pairwise:
        if axis not in (-1, anchor.ndim - 1):
            raise ValueError("axis must be -1 with pairwise=True (inputs (..., n, d) and (..., m, d))")
        validate.check_matrix(anchor, "anchor")
        validate.check_matrix(other, "other")
        if anchor.shape[-1] != other.shape[-1]:
            raise ValueError(f"anchor (shape {tuple(anchor.shape)}) and other (shape {tuple(other.shape)}) must "
                             "have the same last dimension")
        validate.check_broadcastable("anchor", anchor.shape[:-2], "other", other.shape[:-2])
        D = anchor.shape[-1]
        if D < 2:
            raise ValueError("anchor must have at least 2 features along the last axis")
        sc = _row_scale(xp, a, b)          # the ratio is invariant to a common scale: avoid overflow/underflow
        a, b = a / sc, b / sc
        ac = a - xp.mean(a, axis=-1, keepdims=True)
        bc = b - xp.mean(b, axis=-1, keepdims=True)
        va = xp.sum(ac * ac, axis=-1) / D
        vb = xp.sum(bc * bc, axis=-1) / D
        cov = xp.matmul(ac, xp.matrix_transpose(bc)) / D
        vd = xp.maximum(va[..., :, None] + vb[..., None, :] - 2 * cov, 0.0)
        dist = vd / va[..., :, None]
        res = (xp, True, ac, bc, va, dist, D, tuple(anchor.shape), tuple(other.shape), anchor.dtype, other.dtype,
               sc)
        return _as(xp, dist, dt), res
    shp = validate.check_broadcastable("anchor", anchor.shape, "other", other.shape)
    ax = validate.check_axis(axis, len(shp), "axis")
    D = shp[ax]
    if D < 2:
        raise ValueError(f"anchor needs at least 2 features along axis {axis}")
    a = xp.broadcast_to(a, shp)
    b = xp.broadcast_to(b, shp)
    sc = _row_scale(xp, a, b, axis=ax)     # the ratio is invariant to a common scale: avoid overflow/underflow
    a, b = a / sc, b / sc
    ac = a - xp.mean(a, axis=ax, keepdims=True)
    d = b - a
    dc = d - xp.mean(d, axis=ax, keepdims=True)
    va = xp.mean(ac * ac, axis=ax, keepdims=True)
    vd = xp.mean(dc * dc, axis=ax, keepdims=True)
    dist = vd / va
    res = (xp, False, ac, dc, va, dist, D, tuple(anchor.shape), tuple(other.shape), anchor.dtype, other.dtype, ax,
           sc)
    return _as(xp, xp.squeeze(dist, axis=ax), dt), res


def snr_distance(anchor, other, *, axis=-1, pairwise=False):
    r"""Signal-to-noise-ratio distance ``d(a, b) = Var(b - a) / Var(a)`` (a = anchor), over the feature axis.

    The ratio of the noise variance (the difference) to the signal variance (the anchor), from Yuan, Chen, Wang &
    Yang (2019), "Signal-to-Noise Ratio: A Robust Distance Metric for Deep Metric Learning".  Asymmetric.  Biased
    and unbiased variances give the same ratio.  ``pairwise=True`` takes anchors (..., n, d) and others (..., m, d)
    and returns the (..., n, m) matrix ``D[i, j] = Var(b_j - a_i) / Var(a_i)``, computed with one matmul through
    ``Var(b - a) = Var(a) + Var(b) - 2 Cov(a, b)`` (clamped at 0; this loses relative accuracy when b is very
    close to a).  A constant anchor gives a division by zero (inf or NaN), as in the paper's formula.

    Parameters
    ----------
    anchor, other : arrays
    axis : int
        Feature axis (must be -1 with ``pairwise=True``).
    pairwise : bool

    Returns
    -------
    array

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([1.0, 2.0, 3.0]); b = np.array([1.0, 2.0, 4.0])
    >>> round(float(snr_distance(a, b)), 4)
    0.3333
    """
    return _snr_fwd(anchor, other, axis=axis, pairwise=pairwise)[0]


def snr_distance_fwd(anchor, other, *, axis=-1, pairwise=False):
    return _snr_fwd(anchor, other, axis=axis, pairwise=pairwise)


def snr_distance_bwd(res, dy):
    xp, pw = res[0], res[1]
    if pw:
        _, _, ac, bc, va, dist, D, sa, sb, da, db, sc = res
        g = _as(xp, dy, ac.dtype) / sc
        vai = va[..., :, None]
        alpha = xp.sum(g * (1 - dist) / vai, axis=-1)          # dL/dva
        beta = xp.sum(g / vai, axis=-2)                          # dL/dvb
        gc = -2.0 * g / vai                                      # dL/dcov
        dac = xp.matmul(gc, bc) / D
        dbc = xp.matmul(xp.matrix_transpose(gc), ac) / D
        dac = dac - xp.mean(dac, axis=-1, keepdims=True)
        dbc = dbc - xp.mean(dbc, axis=-1, keepdims=True)
        dA = dac + alpha[..., :, None] * 2.0 * ac / D
        dB = dbc + beta[..., :, None] * 2.0 * bc / D
        return _as(xp, unbroadcast(dA, sa, xp), da), _as(xp, unbroadcast(dB, sb, xp), db)
    _, _, ac, dc, va, dist, D, sa, sb, da, db, ax, sc = res
    g = xp.expand_dims(_as(xp, dy, ac.dtype), axis=ax) / sc
    gb = g * 2.0 * dc / (D * va)
    ga = -gb - g * dist / va * 2.0 * ac / D
    return _as(xp, unbroadcast(ga, sa, xp), da), _as(xp, unbroadcast(gb, sb, xp), db)


ops.register("norm.snr_distance", snr_distance, snr_distance_fwd, snr_distance_bwd)
