"""Weight standardization (Qiao et al.) and scaled weight standardization (NF-Nets, Brock et al.; FedWon)."""
from __future__ import annotations

from typing import Any, NamedTuple

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.roles import Axis, Bool, Float, Int, Positive, Scalar
from .._lib.typing import Array


def _rowmax(xp, d, red):
    m = xp.max(xp.abs(d), axis=red, keepdims=True)
    return xp.where(m > 0, m, xp.ones_like(m))


def _fan(w, axis):
    """(the fan-in axes, the fan-in size) of a weight whose output axis is ``axis``."""
    return tuple(i for i in range(w.ndim) if i != axis), compat.size(w) // w.shape[axis]


class WeightStdRes(NamedTuple):
    red: tuple
    wh: Any
    r: Any
    den: int
    dtype: Any


def weight_standardization_fwd(w, *, eps=1e-5, axis=0, unbiased=True):
    xp = compat.array_namespace(w)
    red, n = _fan(w, axis)
    if unbiased and n < 2:
        raise ValueError(f"w has fan-in {n}: the unbiased variance needs at least 2 entries per output")
    wc = compat.cast(w, compat.compute_dtype(w, xp), xp)
    d = wc - xp.mean(wc, axis=red, keepdims=True)
    den = (n - 1) if unbiased else n
    # scale by the row's max |d| so (W - mean)^2 cannot overflow or underflow (|W| up to the dtype's max)
    m = _rowmax(xp, d, red)
    ds = d / m
    vs = xp.sum(ds * ds, axis=red, keepdims=True) / den
    q = xp.sqrt(vs + (eps / m) / m)
    wh = ds / q
    r = 1.0 / (q * m)
    return compat.cast(wh, w.dtype, xp), WeightStdRes(red, wh, r, den, w.dtype)


@public(w=Float(min_ndim=2), eps=Positive(), axis=Axis("w"), unbiased=Bool())
def weight_standardization(w: Array, *, eps: float = 1e-5, axis: int = 0, unbiased: bool = True) -> Array:
    r"""Weight Standardization: each output filter standardized over its fan-in.

    .. math::

        \hat W_o = \frac{W_o - \operatorname{mean}(W_o)}{\sqrt{\operatorname{var}(W_o) + \epsilon}},

    statistics over every axis except ``axis``,
    with torch's default **unbiased** variance and eps inside the square root, exactly as the official code
    (``joe-siyuan-qiao/Batch-Channel-Normalization``, ``imagenet/models/layers.py``, class ``Conv2d``).
    Qiao, Wang, Liu, Shen & Yuille (2019), "Micro-Batch Training with Batch-Channel Normalization and Weight
    Standardization".

    Parameters
    ----------
    w : array (out, in, kh, kw) or any (out, ...) layout
    eps : float > 0
        Default 1e-5.
    axis : int
        Output-channel axis (0 for torch conv weights, -1 for JAX/Haiku HWIO).
    unbiased : bool
        Unbiased (default, as the code) or biased variance.

    Returns
    -------
    array like w

    Examples
    --------
    >>> import numpy as np
    >>> w = np.random.default_rng(0).standard_normal((4, 3, 3, 3))
    >>> v = weight_standardization(w)
    >>> np.allclose(v.reshape(4, -1).mean(1), 0), np.allclose(v.reshape(4, -1).std(1, ddof=1), 1, atol=1e-4)
    (True, True)
    """
    return weight_standardization_fwd(w, eps=eps, axis=axis, unbiased=unbiased)[0]


def weight_standardization_bwd(res: WeightStdRes, dy):
    wh, r, red = res.wh, res.r, res.red
    xp = compat.array_namespace(wh)
    g = compat.cast(dy, wh.dtype, xp)
    dw = r * (g - xp.mean(g, axis=red, keepdims=True) - wh * xp.sum(g * wh, axis=red, keepdims=True) / res.den)
    return (compat.cast(dw, res.dtype, xp),)


vjp(weight_standardization, weight_standardization_fwd, weight_standardization_bwd, validate=True)


class ScaledWeightStdRes(NamedTuple):
    red: tuple
    wh: Any
    r: Any
    active: Any
    gc: Any
    gm: float
    N: int
    n: int
    dtype: Any
    gdtype: Any
    gshape: Any


def scaled_weight_standardization_fwd(w, gain=None, *, eps=1e-4, axis=0, gamma=1.0, fan_in=None):
    xp = compat.array_namespace(w, gain)
    red, n = _fan(w, axis)
    gm = float(gamma)
    N = n if fan_in is None else fan_in
    cdt = compat.compute_dtype(w, xp)
    bs = [1] * w.ndim
    bs[axis] = w.shape[axis]
    if gain is not None:
        if tuple(gain.shape) not in ((w.shape[axis],), tuple(bs)):
            raise ValueError(f"gain has shape {tuple(gain.shape)}, expected ({w.shape[axis]},) (one per output)")
        gc = xp.reshape(compat.cast(gain, cdt, xp), tuple(bs))
    else:
        gc = None
    wc = compat.cast(w, cdt, xp)
    d = wc - xp.mean(wc, axis=red, keepdims=True)
    m = _rowmax(xp, d, red)           # overflow-safe: everything in units of the row's max |W - mean|
    ds = d / m
    nv = N * xp.mean(ds * ds, axis=red, keepdims=True)
    em = (eps / m) / m
    active = nv > em
    q = xp.sqrt(xp.maximum(nv, em))
    wh = ds / q
    r = 1.0 / (q * m)
    y = gm * wh if gc is None else (gm * gc) * wh
    res = ScaledWeightStdRes(red, wh, r, active, gc, gm, N, n, w.dtype, None if gain is None else gain.dtype,
                             None if gain is None else tuple(gain.shape))
    return compat.cast(y, w.dtype, xp), res


def _gain_example(rng, dtype):
    return (rng.standard_normal((4, 6)).astype(dtype), (1.0 + 0.1 * rng.standard_normal(4)).astype(dtype)), {}


@public(w=Float(min_ndim=2), gain=Float(optional=True, min_ndim=1), eps=Positive(), axis=Axis("w"), gamma=Scalar(),
        fan_in=Int(1, optional=True), example=_gain_example)
def scaled_weight_standardization(w: Array, gain: Array | None = None, *, eps: float = 1e-4, axis: int = 0,
                                  gamma: float = 1.0, fan_in: int | None = None) -> Array:
    r"""Scaled Weight Standardization (NF-Nets), also the convolution of FedWon.

    .. math::

        \hat W_o = \gamma\, g_o \frac{W_o - \operatorname{mean}(W_o)}{\sqrt{\max\bigl(N \operatorname{var}(W_o),
        \epsilon\bigr)}}

    with the **biased**

    variance over the fan-in axes and ``N`` the fan-in (the number of entries per output unless ``fan_in`` is
    given), i.e. ``(W - mean) / (std * sqrt(N))``: the weight of a unit-variance-preserving layer.  ``gamma`` is
    the activation's gain constant (e.g. ``sqrt(2 / (1 - 1/pi))`` for ReLU), 1 by default.  ``eps = 1e-4``
    inside a max, as the NF-Nets reference (``deepmind-research/nfnets``, ``WSConv2D``; read through ports).
    timm's ``ScaledStdConv2d`` instead adds ``eps = 1e-6`` to the variance: the two differ only for nearly constant
    filters.  Brock, De, Smith & Simonyan (2021), "Characterizing signal propagation to close the performance
    gap in unnormalized ResNets" / "High-Performance Large-Scale Image Recognition Without Normalization";
    Zhuang & Lyu (2024), "FedWon: Triumphing Multi-domain Federated Learning Without Normalization".

    Parameters
    ----------
    w : array (out, ...)
    gain : array (out,), optional
        Learnable per-output gain (init ones).
    eps : float > 0
    axis : int
        Output axis.
    gamma : float
        Activation gain constant.
    fan_in : int, optional
        Override the fan-in used in the scale.

    Returns
    -------
    array like w

    Examples
    --------
    >>> import numpy as np
    >>> w = np.random.default_rng(0).standard_normal((8, 16))
    >>> v = scaled_weight_standardization(w)
    >>> np.allclose((v ** 2).sum(1), 1)
    True
    """
    return scaled_weight_standardization_fwd(w, gain, eps=eps, axis=axis, gamma=gamma, fan_in=fan_in)[0]


def scaled_weight_standardization_bwd(res: ScaledWeightStdRes, dy):
    red, wh, r, active, gc, gm, N, n, dt, gdt, gshape = res
    xp = compat.array_namespace(wh)
    g = compat.cast(dy, wh.dtype, xp)
    gh = gm * g if gc is None else (gm * gc) * g
    # d/dw of (w - mu) / sqrt(max(N var_b, eps)): the var term only where the max is N var_b
    s = xp.sum(gh * wh, axis=red, keepdims=True)
    corr = xp.where(active, wh * (s * (N / n)), xp.zeros_like(wh))
    dw = r * (gh - xp.mean(gh, axis=red, keepdims=True) - corr)
    dg = None
    if gc is not None:
        dg = xp.reshape(gm * xp.sum(g * wh, axis=red, keepdims=True), gshape)
    return compat.cast(dw, dt, xp), compat.cast(dg, gdt, xp)


vjp(scaled_weight_standardization, scaled_weight_standardization_fwd, scaled_weight_standardization_bwd,
    validate=True)
