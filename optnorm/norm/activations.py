"""Self-normalizing activations (SELU, alpha dropout) and normalized similarities (cosine, SNR distance)."""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.api import constant, public, vjp
from .._lib.roles import Bool, Float, Int, Positive, Probability, Seed
from .._lib.vjp import unbroadcast
from .._lib.typing import Array, Seed as SeedT
from ._common import safe_norm

SELU_ALPHA = constant(__name__, "SELU_ALPHA", 1.6732632423543772848170429916717)
SELU_SCALE = constant(__name__, "SELU_SCALE", 1.0507009873554804934193349852946)


def _axis_of(axis, ndim):
    """``axis`` of a broadcast shape of ``ndim`` dimensions, non-negative (the role checked it is an int)."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of range for the broadcast shape of the inputs ({ndim} dimensions)")
    return axis % ndim


# ---------------------------------------------------------------------------------------------- selu
class SeluRes(NamedTuple):
    xc: Any        # input in the compute dtype
    dtype: Any


@public(x=Float())
def selu(x: Array) -> Array:
    r"""Scaled exponential linear unit: ``scale * x`` for x > 0, ``scale * alpha * (exp(x) - 1)`` otherwise.

    .. math::

        \mathrm{selu}(x) = \lambda \begin{cases} x & x > 0 \\ \alpha (e^{x} - 1) & x \le 0 \end{cases}

    with :math:`\alpha` = 1.6732632423543772848170429916717, :math:`\lambda` = 1.0507009873554804934193349852946
    (the fixed point that keeps zero mean and unit variance).  Klambauer, Unterthiner, Mayr & Hochreiter (2017),
    "Self-Normalizing Neural Networks".  Same values as ``torch.nn.functional.selu``.

    Parameters
    ----------
    x : array
        Input (any shape).

    Returns
    -------
    array like x

    Examples
    --------
    >>> import numpy as np
    >>> selu(np.array([-1.0, 0.0, 1.0])).round(4)
    array([-1.1113,  0.    ,  1.0507])
    """
    return selu_fwd(x)[0]


def selu_fwd(x):
    xp = compat.array_namespace(x)
    xc = compat.cast(x, compat.compute_dtype(x, xp), xp)
    neg = SELU_SCALE * SELU_ALPHA * xp.expm1(xp.minimum(xc, 0.0))
    y = xp.where(xc > 0, SELU_SCALE * xc, neg)
    return compat.cast(y, x.dtype, xp), SeluRes(xc, x.dtype)


def selu_bwd(res: SeluRes, dy):
    xp = compat.array_namespace(res.xc)
    xc = res.xc
    d = xp.where(xc > 0, SELU_SCALE, SELU_SCALE * SELU_ALPHA * xp.exp(xp.minimum(xc, 0.0)))
    return (compat.cast(compat.cast(dy, xc.dtype, xp) * d, res.dtype, xp),)


vjp(selu, selu_fwd, selu_bwd, validate=True)


# ---------------------------------------------------------------------------------------------- alpha_dropout
class AlphaDropoutRes(NamedTuple):
    keep: Any      # the kept-units mask in the compute dtype (None: identity or all dropped)
    a: float
    dtype: Any


@public(x=Float(), p=Probability(), training=Bool(), seed=Seed(),
        example=lambda rng, dtype: ((rng.standard_normal((3, 5)).astype(dtype),), {"seed": 0}))
def alpha_dropout(x: Array, *, p: float = 0.5, training: bool = True, seed: SeedT = None) -> Array:
    r"""Alpha dropout: dropout for SELU networks that keeps zero mean and unit variance.

    Each unit is dropped with probability ``p`` and set to :math:`\alpha' = -\lambda\alpha` (SELU's negative
    saturation), then every unit gets an affine correction:

    .. math::

        y = a \bigl(m \odot x + (1 - m)\,\alpha'\bigr) + b, \qquad m_i \sim \mathrm{Bernoulli}(1 - p),

        a = \bigl((1 - p)(1 + p\,\alpha'^2)\bigr)^{-1/2}, \qquad b = -a\,\alpha' p,

    so a standard-normal input keeps mean 0 and variance 1.  ``training=False`` or ``p=0`` return x; ``p=1`` returns zeros (as torch).  Klambauer et al.
    (2017), "Self-Normalizing Neural Networks"; the same rule as ``torch.nn.functional.alpha_dropout``
    (statistically: the random stream differs).

    The mask is drawn on the host with NumPy (reproducible by ``seed``) and moved to x's library and device.

    Parameters
    ----------
    x : array
        Input (any shape).
    p : float in [0, 1]
        Drop probability.
    training : bool
        False returns ``x`` unchanged (inference).
    seed : int or numpy.random.Generator, optional
        Seed of the host-side mask.

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
    return alpha_dropout_fwd(x, p=p, training=training, seed=seed)[0]


def alpha_dropout_fwd(x, *, p=0.5, training=True, seed=None):
    xp = compat.array_namespace(x)
    if not training or p == 0.0:
        return x, AlphaDropoutRes(None, 1.0, x.dtype)
    if p == 1.0:
        return xp.zeros_like(x), AlphaDropoutRes(None, 0.0, x.dtype)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    keep_np = rng.random(tuple(x.shape)) >= p
    cdt = compat.compute_dtype(x, xp)
    keep = compat.cast(compat.from_numpy_like(keep_np.astype(np.float32), x), cdt, xp)
    ap = -SELU_SCALE * SELU_ALPHA
    a = ((1 - p) * (1 + p * ap * ap)) ** -0.5
    b = -a * ap * p
    xc = compat.cast(x, cdt, xp)
    y = a * (xc * keep + ap * (1 - keep)) + b
    return compat.cast(y, x.dtype, xp), AlphaDropoutRes(keep, a, x.dtype)


def alpha_dropout_bwd(res: AlphaDropoutRes, dy):
    if res.keep is None:
        return (dy * res.a,)
    xp = compat.array_namespace(res.keep)
    return (compat.cast(res.a * res.keep * compat.cast(dy, res.keep.dtype, xp), res.dtype, xp),)


vjp(alpha_dropout, alpha_dropout_fwd, alpha_dropout_bwd, validate=True)


# ---------------------------------------------------------------------------------------------- cosine_similarity
def _row_scale(xp, *arrs, axis=None):
    """Largest |entry| (per row along ``axis`` with keepdims, or global) with zeros replaced by one."""
    ms = [xp.max(xp.abs(a), axis=axis, keepdims=axis is not None) for a in arrs]
    m = ms[0]
    for o in ms[1:]:
        m = xp.maximum(m, o)
    return xp.where(m > 0, m, xp.ones_like(m))


class CosineRes(NamedTuple):
    axis: int
    a: Any
    b: Any
    n1: Any
    n2: Any
    c1: Any
    c2: Any
    u1: Any
    u2: Any
    cos: Any
    eps: float
    shapes: tuple
    dtypes: tuple


@public(x1=Float("..."), x2=Float("..."), axis=Int(), eps=Positive())
def cosine_similarity(x1: Array, x2: Array, *, axis: int = -1, eps: float = 1e-8) -> Array:
    r"""Cosine similarity with torch's semantics: each norm clamped separately at ``eps``.

    .. math::

        \cos(x_1, x_2) = \Bigl\langle \frac{x_1}{\max(\lVert x_1 \rVert_2, \epsilon)},
        \frac{x_2}{\max(\lVert x_2 \rVert_2, \epsilon)} \Bigr\rangle

    along ``axis`` of the broadcast shape.  Below
    ``eps`` it is not scale invariant (a tiny vector gives a small value, not +-1), as in
    ``torch.nn.functional.cosine_similarity`` (whose default axis is 1; optnorm's is -1).

    Parameters
    ----------
    x1, x2 : arrays, broadcastable
        The vectors to compare.
    axis : int
        Axis of the broadcast shape to reduce.
    eps : float > 0
        Lower clamp of each norm (1e-8, as torch).

    Returns
    -------
    array with ``axis`` removed

    Examples
    --------
    >>> import numpy as np
    >>> float(cosine_similarity(np.array([1.0, 0.0]), np.array([1.0, 1.0])))  # doctest: +ELLIPSIS
    0.7071...
    """
    return cosine_similarity_fwd(x1, x2, axis=axis, eps=eps)[0]


def cosine_similarity_fwd(x1, x2, *, axis=-1, eps=1e-8):
    xp = compat.array_namespace(x1, x2)
    shp = np.broadcast_shapes(tuple(x1.shape), tuple(x2.shape))
    if not shp:
        raise ValueError("x1 and x2 are 0-d: cosine_similarity needs an axis to reduce")
    ax = _axis_of(axis, len(shp))
    dt = xp.result_type(x1.dtype, x2.dtype)
    cdt = xp.float64 if dt == xp.float64 else xp.float32
    a = xp.broadcast_to(compat.cast(x1, cdt, xp), shp)
    b = xp.broadcast_to(compat.cast(x2, cdt, xp), shp)
    n1 = safe_norm(a, ax, xp)
    n2 = safe_norm(b, ax, xp)
    c1 = xp.maximum(n1, eps)
    c2 = xp.maximum(n2, eps)
    u1, u2 = a / c1, b / c2
    cos = xp.sum(u1 * u2, axis=ax, keepdims=True)
    res = CosineRes(ax, a, b, n1, n2, c1, c2, u1, u2, cos, float(eps), (tuple(x1.shape), tuple(x2.shape)),
                    (x1.dtype, x2.dtype))
    return compat.cast(xp.squeeze(cos, axis=ax), dt, xp), res


def cosine_similarity_bwd(res: CosineRes, dy):
    xp = compat.array_namespace(res.a)
    ax, eps, cos = res.axis, res.eps, res.cos
    g = xp.expand_dims(compat.cast(dy, res.a.dtype, xp), axis=ax)

    def one(x, n, c, c_other_u, dt, shape):
        safe = xp.where(n > 0, n, 1.0)
        corr = xp.where(n > eps, cos * x / (c * safe), 0.0)
        return compat.cast(unbroadcast(g * (c_other_u / c - corr), shape, xp), dt, xp)

    return (one(res.a, res.n1, res.c1, res.u2, res.dtypes[0], res.shapes[0]),
            one(res.b, res.n2, res.c2, res.u1, res.dtypes[1], res.shapes[1]))


vjp(cosine_similarity, cosine_similarity_fwd, cosine_similarity_bwd, validate=True)


# ---------------------------------------------------------------------------------------------- snr_distance
class SnrRes(NamedTuple):
    pairwise: bool
    ac: Any        # centred anchor in units of its own scale sa
    oc: Any        # centred difference (non-pairwise) or centred other (pairwise), in units of sc
    va: Any        # Var(anchor) in units of sa^2
    sa: Any        # anchor scale (per row)
    r: Any         # sc / sa
    dist: Any
    D: int
    axis: int
    sc: Any
    shapes: tuple
    dtypes: tuple


def _zero_anchor(xp, va, ratio):
    """A constant anchor has Var(a) = 0 and no distance; a ratio that overflows has none in this dtype."""
    if not compat.is_concrete(va):
        return
    if bool(xp.any(va == 0)):
        raise ValueError("anchor has zero variance along the feature axis (a constant row): the SNR distance "
                         "Var(other - anchor) / Var(anchor) is undefined")
    if bool(xp.any(xp.isinf(ratio))):
        raise ValueError("anchor's variance is too small relative to other's: the SNR distance overflows this dtype")


@public(anchor=Float(), other=Float(), axis=Int(), pairwise=Bool())
def snr_distance(anchor: Array, other: Array, *, axis: int = -1, pairwise: bool = False) -> Array:
    r"""Signal-to-noise-ratio distance ``d(a, b) = Var(b - a) / Var(a)`` (a = anchor), over the feature axis.

    .. math::

        d_{\mathrm{SNR}}(a, b) = \frac{\mathrm{Var}(b - a)}{\mathrm{Var}(a)}

    The ratio of the noise variance (the difference) to the signal variance (the anchor), from Yuan, Chen, Wang &
    Yang (2019), "Signal-to-Noise Ratio: A Robust Distance Metric for Deep Metric Learning".  Asymmetric.  Biased
    and unbiased variances give the same ratio.  ``pairwise=True`` takes anchors (..., n, d) and others (..., m, d)
    and returns the (..., n, m) matrix ``D[i, j] = Var(b_j - a_i) / Var(a_i)``, computed with one matmul through
    ``Var(b - a) = Var(a) + Var(b) - 2 Cov(a, b)`` (clamped at 0; this loses relative accuracy when b is very
    close to a).  A constant anchor (zero variance) has no distance: it raises ``ValueError`` (the paper's
    formula divides by zero).  Variances are formed in units of each row's largest entry, so inputs up to the
    dtype's largest value are fine.

    Parameters
    ----------
    anchor, other : arrays
        Anchors :math:`a` (signal) and the compared features :math:`b`; broadcastable (or (..., n, d) and
        (..., m, d) with ``pairwise=True``).
    axis : int
        Feature axis (must be -1 with ``pairwise=True``).
    pairwise : bool
        Return the (..., n, m) matrix of every anchor against every other row.


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
    return snr_distance_fwd(anchor, other, axis=axis, pairwise=pairwise)[0]


def snr_distance_fwd(anchor, other, *, axis=-1, pairwise=False):
    xp = compat.array_namespace(anchor, other)
    dt = xp.result_type(anchor.dtype, other.dtype)
    cdt = xp.float64 if dt == xp.float64 else xp.float32
    a = compat.cast(anchor, cdt, xp)
    b = compat.cast(other, cdt, xp)
    shapes, dtypes = (tuple(anchor.shape), tuple(other.shape)), (anchor.dtype, other.dtype)
    if pairwise:
        if axis not in (-1, anchor.ndim - 1):
            raise ValueError("axis must be -1 with pairwise=True (inputs (..., n, d) and (..., m, d))")
        for nm, v in (("anchor", anchor), ("other", other)):
            if v.ndim < 2:
                raise ValueError(f"{nm} must have shape (..., n, d) with pairwise=True, got shape {tuple(v.shape)}")
        if anchor.shape[-1] != other.shape[-1]:
            raise ValueError(f"anchor (shape {tuple(anchor.shape)}) and other (shape {tuple(other.shape)}) must "
                             "have the same last dimension")
        try:
            np.broadcast_shapes(shapes[0][:-2], shapes[1][:-2])
        except ValueError:
            raise ValueError(f"the batch dimensions of anchor {shapes[0][:-2]} and other {shapes[1][:-2]} do not "
                             "broadcast") from None
        D = anchor.shape[-1]
        if D < 2:
            raise ValueError("anchor must have at least 2 features along the last axis")
        sc = _row_scale(xp, a, b)          # the ratio is invariant to a common scale: avoid overflow/underflow
        sa = _row_scale(xp, a, axis=-1)    # (..., n, 1): each anchor in its own units for its variance
        an = a / sa
        ac = an - xp.mean(an, axis=-1, keepdims=True)
        va = xp.sum(ac * ac, axis=-1) / D                     # in units of sa^2
        r = (sc / sa)[..., 0]                                 # (..., n)
        a2, b2 = a / sc, b / sc
        a2c = a2 - xp.mean(a2, axis=-1, keepdims=True)
        bc = b2 - xp.mean(b2, axis=-1, keepdims=True)
        vb = xp.sum(bc * bc, axis=-1) / D
        va_sc = xp.sum(a2c * a2c, axis=-1) / D
        cov = xp.matmul(a2c, xp.matrix_transpose(bc)) / D
        vd = xp.maximum(va_sc[..., :, None] + vb[..., None, :] - 2 * cov, 0.0)
        with np.errstate(over="ignore"):
            dist = vd / va[..., :, None] * (r * r)[..., :, None]
        _zero_anchor(xp, va, dist)
        res = SnrRes(True, a2c, bc, va, sa, r, dist, D, -1, sc, shapes, dtypes)
        return compat.cast(dist, dt, xp), res
    try:
        shp = np.broadcast_shapes(shapes[0], shapes[1])
    except ValueError:
        raise ValueError(f"anchor (shape {shapes[0]}) and other (shape {shapes[1]}) do not broadcast") from None
    if not shp:
        raise ValueError("anchor and other are 0-d: snr_distance needs a feature axis")
    ax = _axis_of(axis, len(shp))
    D = shp[ax]
    if D < 2:
        raise ValueError(f"anchor needs at least 2 features along axis {axis}, got {D}")
    a = xp.broadcast_to(a, shp)
    b = xp.broadcast_to(b, shp)
    sc = _row_scale(xp, a, b, axis=ax)     # the ratio is invariant to a common scale: avoid overflow/underflow
    sa = _row_scale(xp, a, axis=ax)
    an = a / sa
    ac = an - xp.mean(an, axis=ax, keepdims=True)
    d = b / sc - a / sc
    dc = d - xp.mean(d, axis=ax, keepdims=True)
    va = xp.mean(ac * ac, axis=ax, keepdims=True)
    vd = xp.mean(dc * dc, axis=ax, keepdims=True)
    r = sc / sa
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        dist = vd / va * (r * r)
    _zero_anchor(xp, va, dist)
    res = SnrRes(False, ac, dc, va, sa, r, dist, D, ax, sc, shapes, dtypes)
    return compat.cast(xp.squeeze(dist, axis=ax), dt, xp), res


def snr_distance_bwd(res: SnrRes, dy):
    xp = compat.array_namespace(res.ac)
    D, dist, va, sa, r = res.D, res.dist, res.va, res.sa, res.r
    if res.pairwise:
        ac, bc, sc = res.ac, res.oc, res.sc
        g = compat.cast(dy, ac.dtype, xp) / sc
        inv_va = (r * r / va)[..., :, None]                   # 1 / Var(a) in units of sc^2
        alpha = xp.sum(g * (1 - dist) * inv_va, axis=-1)       # dL/dva
        beta = xp.sum(g * inv_va, axis=-2)                     # dL/dvb
        gc = -2.0 * g * inv_va                                  # dL/dcov
        dac = xp.matmul(gc, bc) / D
        dbc = xp.matmul(xp.matrix_transpose(gc), ac) / D
        dac = dac - xp.mean(dac, axis=-1, keepdims=True)
        dbc = dbc - xp.mean(dbc, axis=-1, keepdims=True)
        dA = dac + alpha[..., :, None] * 2.0 * ac / D
        dB = dbc + beta[..., :, None] * 2.0 * bc / D
        return (compat.cast(unbroadcast(dA, res.shapes[0], xp), res.dtypes[0], xp),
                compat.cast(unbroadcast(dB, res.shapes[1], xp), res.dtypes[1], xp))
    ac, dc, ax = res.ac, res.oc, res.axis
    g = xp.expand_dims(compat.cast(dy, ac.dtype, xp), axis=ax)
    # d = Var(dc) / Var(ac) (sc/sa)^2 with dc = (b - a)/sc centred, ac = a/sa centred
    gb = g * 2.0 * dc * (r / sa) / (D * va)
    ga = -gb - g * dist * 2.0 * ac / (D * va * sa)
    return (compat.cast(unbroadcast(ga, res.shapes[0], xp), res.dtypes[0], xp),
            compat.cast(unbroadcast(gb, res.shapes[1], xp), res.dtypes[1], xp))


vjp(snr_distance, snr_distance_fwd, snr_distance_bwd, validate=True)
