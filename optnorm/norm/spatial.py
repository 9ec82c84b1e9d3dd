"""Normalization over spatial feature maps: EvoNorm-B0/S0 and Region Normalization (RN-B).

Layout (N, C, *spatial) with channels on axis 1 (any number of spatial axes >= 1).  Variances are formed in
units of the largest deviation (no overflow for entries up to the dtype's largest value).
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.roles import Array as ArrayRole, Bool, Float, Int, Positive, Probability
from .._lib.typing import Array
from ._common import rstd_of, sigmoid, var_scaled


def _check_vecs(c, **vecs):
    for nm, a in vecs.items():
        if a is not None and tuple(a.shape) != (c,):
            raise ValueError(f"{nm} has shape {tuple(a.shape)}, expected ({c},) (one entry per channel, x.shape[1])")


def _bvec(xp, a, nd, dt, fill=None):
    if a is None:
        return fill
    return xp.reshape(compat.cast(a, dt, xp), (1, a.shape[0]) + (1,) * (nd - 2))


def _std(d, red, eps, xp):
    """sqrt(mean(d^2) + eps) over ``red`` (keepdims) without overflow of the squares."""
    v, sc = var_scaled(d, red, xp)
    return sc * xp.sqrt(v + eps / sc / sc), v * sc * sc


_CH = dict(optional=True)


# ---------------------------------------------------------------------------------------------- EvoNorm-B0
class EvoNormB0Res(NamedTuple):
    C: int
    nd: int
    training: bool
    m: float
    redB: tuple
    redI: tuple
    nB: int
    nI: int
    vb: Any
    g: Any
    dts: tuple
    xc: Any
    L: Any
    sI: Any
    dI: Any
    useL: Any
    D: Any
    z: Any
    dB: Any = None
    corr: float = 1.0


def _b0_example(rng, dtype):
    return (rng.standard_normal((4, 3, 2, 2)).astype(dtype), (0.5 + rng.random(3)).astype(dtype)), {}


@public(x=Float(min_ndim=3), running_var=Float("c", sign="nonnegative", **_CH), weight=Float("c", **_CH),
        bias=Float("c", **_CH), v=Float("c", **_CH), training=Bool(), momentum=Probability(), eps=Positive(),
        sizes={"c": 3}, example=_b0_example)
def evonorm_b0(x: Array, running_var: Array | None = None, weight: Array | None = None, bias: Array | None = None,
               v: Array | None = None, *, training: bool = True, momentum: float = 0.1,
               eps: float = 1e-3) -> tuple[Array, Array | None]:
    r"""EvoNorm-B0: batch-instance normalization-activation layer found by architecture search.

    .. math::

        y = \gamma \frac{x}{\max\bigl(\sqrt{\sigma^2_B + \epsilon},\ v x + \sqrt{\sigma^2_I(x) + \epsilon}\bigr)}
            + \beta

    ``var_B`` is the per-channel biased variance over (N, spatial) in training (the running variance in eval),
    ``var_I`` the per-(sample, channel) biased variance over the spatial axes, the max elementwise (ties go to the
    batch branch).  In training the running variance is updated with torch's momentum convention and the unbiased
    ``n/(n-1)`` correction.  Conventions of timm's port (``timm/layers/evo_norm.py``, ``EvoNorm2dB0``; the paper's
    code is TensorFlow): ``eps = 1e-3``, ``v`` init ones.  Liu, Brock, Simonyan & Le (2020), "Evolving
    Normalization-Activation Layers".

    Parameters
    ----------
    x : array ``(N, C, *spatial)``
    running_var : array (C,), optional
        Required for ``training=False``; None in training returns None.
    weight, bias, v : array (C,), optional
        Affine and the learned ``v`` (None means ones).
    training : bool
    momentum : float in [0, 1]
    eps : float > 0

    Returns
    -------
    y, new_running_var

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 4, 4))
    >>> y, rv = evonorm_b0(x, np.ones(3))
    >>> y.shape, rv.shape
    ((2, 3, 4, 4), (3,))
    """
    return evonorm_b0_fwd(x, running_var, weight, bias, v, training=training, momentum=momentum, eps=eps)[0]


def evonorm_b0_fwd(x, running_var=None, weight=None, bias=None, v=None, *, training=True, momentum=0.1, eps=1e-3):
    xp = compat.array_namespace(x, running_var, weight, bias, v)
    C, nd = x.shape[1], x.ndim
    _check_vecs(C, running_var=running_var, weight=weight, bias=bias, v=v)
    if not training and running_var is None:
        raise ValueError("running_var is required when training=False")
    m, eps = float(momentum), float(eps)
    cdt = compat.compute_dtype(x, xp)
    xc = compat.cast(x, cdt, xp)
    redB = (0,) + tuple(range(2, nd))
    redI = tuple(range(2, nd))
    nB = compat.size(x) // C
    nI = compat.size(x) // (C * x.shape[0])
    if training and nB <= 1:
        raise ValueError(f"x has {nB} value per channel: batch statistics need more than 1")
    vb = _bvec(xp, v, nd, cdt, fill=1.0)
    f = dict(C=C, nd=nd, training=training, m=m, redB=redB, redI=redI, nB=nB, nI=nI, vb=vb,
             g=_bvec(xp, weight, nd, cdt),
             dts=(x.dtype, None if running_var is None else running_var.dtype,
                  None if weight is None else weight.dtype, None if bias is None else bias.dtype,
                  None if v is None else v.dtype))
    if training:
        muB = xp.mean(xc, axis=redB, keepdims=True)
        dB = xc - muB
        L, varB = _std(dB, redB, eps, xp)
        corr = nB / (nB - 1)
        new_rv = None if running_var is None else compat.cast(
            (1 - m) * compat.cast(running_var, cdt, xp) + m * corr * xp.reshape(varB, (C,)), running_var.dtype, xp)
        f.update(dB=dB, corr=corr)
    else:
        L = xp.sqrt(_bvec(xp, running_var, nd, cdt) + eps)
        new_rv = running_var
    muI = xp.mean(xc, axis=redI, keepdims=True)
    dI = xc - muI
    sI, _ = _std(dI, redI, eps, xp)
    R = vb * xc + sI
    useL = L >= R                        # ties go to the batch branch
    D = xp.where(useL, L, R)
    z = xc / D
    y = z if f["g"] is None else z * f["g"]
    if bias is not None:
        y = y + _bvec(xp, bias, nd, cdt)
    if training and new_rv is not None and compat.is_concrete(new_rv):
        a = compat.to_numpy(new_rv)
        if not (abs(a) < float("inf")).all() and bool(compat.to_numpy(xp.all(xp.isfinite(xc)))) and \
                bool((abs(compat.to_numpy(running_var)) < float("inf")).all()):
            raise ValueError(f"the batch variance of x overflows {str(x.dtype).rsplit('.', 1)[-1]}, so running_var "
                             "has no finite update: rescale x")
    f.update(xc=xc, L=L, sI=sI, dI=dI, useL=useL, D=D, z=z)
    return (compat.cast(y, x.dtype, xp), new_rv), EvoNormB0Res(**f)


def evonorm_b0_bwd(res: EvoNormB0Res, dy):
    C, dts = res.C, res.dts
    gy, grv = dy
    xc, L, sI, dI, useL, D, z, vb, g = res.xc, res.L, res.sI, res.dI, res.useL, res.D, res.z, res.vb, res.g
    xp = compat.array_namespace(xc)
    gy = compat.cast(gy, xc.dtype, xp)
    redB, redI = res.redB, res.redI
    gh = gy if g is None else gy * g
    dx = gh / D
    h = -gh * xc / (D * D)                       # cotangent of D
    zero = xp.zeros_like(h)
    hL = xp.where(useL, h, zero)
    hR = xp.where(useL, zero, h)
    # R = v x + sqrt(var_I + eps)
    dx = dx + hR * vb
    dsI = xp.sum(hR, axis=redI, keepdims=True)
    dx = dx + (dsI / (2.0 * sI)) * 2.0 * dI / res.nI
    dv = None if dts[4] is None else xp.reshape(xp.sum(hR * xc, axis=redB, keepdims=True), (C,))
    dLsum = xp.sum(hL, axis=redB, keepdims=True) / (2.0 * L)     # dL/dvar_B
    drv = None
    if res.training:
        m = res.m
        dvar = dLsum
        if grv is not None:
            dvar = dvar + m * res.corr * xp.reshape(compat.cast(grv, xc.dtype, xp), dLsum.shape)
            drv = (1 - m) * grv
        dx = dx + dvar * 2.0 * res.dB / res.nB
    else:
        drv = xp.reshape(dLsum, (C,))
        if grv is not None:
            drv = drv + compat.cast(grv, xc.dtype, xp)
    dw = None if dts[2] is None else xp.reshape(xp.sum(gy * z, axis=redB, keepdims=True), (C,))
    db = None if dts[3] is None else xp.reshape(xp.sum(gy, axis=redB, keepdims=True), (C,))
    return tuple(compat.cast(a, t, xp) for a, t in zip((dx, drv, dw, db, dv), dts))


vjp(evonorm_b0, evonorm_b0_fwd, evonorm_b0_bwd, validate=True)


# ---------------------------------------------------------------------------------------------- EvoNorm-S0
class EvoNormS0Res(NamedTuple):
    C: int
    nd: int
    N: int
    G: int
    xc: Any
    vb: Any
    sg: Any
    u: Any
    d3: Any
    r: Any
    rfull: Any
    z: Any
    g: Any
    dts: tuple


@public(x=Float(min_ndim=3), weight=Float("c", **_CH), bias=Float("c", **_CH), v=Float("c", **_CH), groups=Int(1),
        eps=Positive(), sizes={"c": 4},
        example=lambda rng, dtype: ((rng.standard_normal((2, 4, 3)).astype(dtype),
                                     (1 + 0.1 * rng.standard_normal(4)).astype(dtype)), {"groups": 2}))
def evonorm_s0(x: Array, weight: Array | None = None, bias: Array | None = None, v: Array | None = None, *,
               groups: int = 32, eps: float = 1e-5) -> Array:
    r"""EvoNorm-S0: sample-based normalization-activation layer (no batch statistics).

    .. math::

        y = \gamma \frac{x\, \sigma(v x)}{\sqrt{\sigma^2_G(x) + \epsilon}} + \beta, \qquad
        \sigma(u) = \frac{1}{1 + e^{-u}}

    ``var_G`` is the biased variance per (sample, group) over (C/groups, spatial), a group norm without centring
    of the numerator; the SiLU-like numerator ``x sigmoid(v x)`` is the activation.  Conventions of timm's port
    (``EvoNorm2dS0``): ``groups = 32``, ``eps = 1e-5``, ``v`` init ones, statistics in float32 for half inputs.
    Liu, Brock, Simonyan & Le (2020), "Evolving Normalization-Activation Layers".

    Parameters
    ----------
    x : array ``(N, C, *spatial)``
    weight, bias, v : array (C,), optional
    groups : int
        Divides C.
    eps : float > 0

    Returns
    -------
    array like x

    Examples
    --------
    >>> import numpy as np
    >>> evonorm_s0(np.random.default_rng(0).standard_normal((2, 8, 3, 3)), groups=4).shape
    (2, 8, 3, 3)
    """
    return evonorm_s0_fwd(x, weight, bias, v, groups=groups, eps=eps)[0]


def evonorm_s0_fwd(x, weight=None, bias=None, v=None, *, groups=32, eps=1e-5):
    xp = compat.array_namespace(x, weight, bias, v)
    C, nd, N = x.shape[1], x.ndim, x.shape[0]
    _check_vecs(C, weight=weight, bias=bias, v=v)
    G = groups
    if C % G:
        raise ValueError(f"groups={G} must divide the number of channels {C} (x.shape[1])")
    cdt = compat.compute_dtype(x, xp)
    xc = compat.cast(x, cdt, xp)
    vb = _bvec(xp, v, nd, cdt, fill=1.0)
    sg = sigmoid(vb * xc, xp)
    u = xc * sg
    x3 = xp.reshape(xc, (N, G, -1))
    mu = xp.mean(x3, axis=-1, keepdims=True)
    d3 = x3 - mu
    vv, sc = var_scaled(d3, (2,), xp)
    r = rstd_of(vv, sc, float(eps), xp)                                       # (N, G, 1)
    rfull = xp.reshape(xp.broadcast_to(r, tuple(x3.shape)), tuple(x.shape))
    z = u * rfull
    g = _bvec(xp, weight, nd, cdt)
    y = z if g is None else z * g
    if bias is not None:
        y = y + _bvec(xp, bias, nd, cdt)
    dts = (x.dtype, None if weight is None else weight.dtype, None if bias is None else bias.dtype,
           None if v is None else v.dtype)
    return compat.cast(y, x.dtype, xp), EvoNormS0Res(C, nd, N, G, xc, vb, sg, u, d3, r, rfull, z, g, dts)


def evonorm_s0_bwd(res: EvoNormS0Res, dy):
    C, N, G, dts = res.C, res.N, res.G, res.dts
    xc, vb, sg, u, d3, r, rfull, z, g = res.xc, res.vb, res.sg, res.u, res.d3, res.r, res.rfull, res.z, res.g
    xp = compat.array_namespace(xc)
    gy = compat.cast(dy, xc.dtype, xp)
    redB = (0,) + tuple(range(2, res.nd))
    gh = gy if g is None else gy * g
    ds = sg * (1.0 - sg)
    dx = gh * rfull * (sg + xc * vb * ds)
    # through r = 1/sqrt(var_G + eps)
    dr = xp.sum(xp.reshape(gh * u, (N, G, -1)), axis=-1, keepdims=True)
    n3 = d3.shape[-1]
    dvar = -0.5 * r * r * r * dr
    dx = dx + xp.reshape(dvar * 2.0 * d3 / n3, tuple(xc.shape))
    dv = None if dts[3] is None else xp.reshape(xp.sum(gh * rfull * xc * xc * ds, axis=redB, keepdims=True), (C,))
    dw = None if dts[1] is None else xp.reshape(xp.sum(gy * z, axis=redB, keepdims=True), (C,))
    db = None if dts[2] is None else xp.reshape(xp.sum(gy, axis=redB, keepdims=True), (C,))
    return tuple(compat.cast(a, t, xp) for a, t in zip((dx, dw, db, dv), dts))


vjp(evonorm_s0, evonorm_s0_fwd, evonorm_s0_bwd, validate=True)


# ---------------------------------------------------------------------------------------------- Region Norm
class RegionPart(NamedTuple):
    m: Any
    cs: Any
    xh: Any
    r: Any


class RegionNormRes(NamedTuple):
    C: int
    red: tuple
    parts: tuple
    gf: Any
    gb: Any
    dts: tuple


def _rn_example(rng, dtype):
    x = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    mask = (rng.random((2, 1, 4, 4)) > 0.5).astype(dtype)
    return (x, mask), {}


@public(x=Float(min_ndim=3), mask=ArrayRole(dtype="any", min_ndim=3), weight_fg=Float("c", **_CH),
        bias_fg=Float("c", **_CH), weight_bg=Float("c", **_CH), bias_bg=Float("c", **_CH), eps=Positive(),
        sizes={"c": 3}, example=_rn_example)
def region_norm(x: Array, mask: Array, weight_fg: Array | None = None, bias_fg: Array | None = None,
                weight_bg: Array | None = None, bias_bg: Array | None = None, *, eps: float = 1e-5) -> Array:
    r"""Region Normalization, basic form (RN-B) for image inpainting.

    The mask splits the pixels into two regions (``mask = 1``: foreground/hole, 0: background).  Each region is
    batch-normalized on its own: per channel, mean and biased variance over that region's pixels across the
    batch, then

    .. math::

        \mathrm{RN}(x) = \frac{x - \mu_R}{\sqrt{\sigma^2_R + \epsilon\, N H W / |R|}}
        \quad \text{on the pixels of region } R,

        y = \mathrm{RN}(x)\, M\, (1 + \gamma_{\mathrm{fg}}) + \beta_{\mathrm{fg}}
          + \mathrm{RN}(x)\, (1 - M)\, (1 + \gamma_{\mathrm{bg}}) + \beta_{\mathrm{bg}}

    (:math:`M` the mask), exactly as the official code (``geekyutao/RN``, ``RN_B``): its implementation (fill the
    outside with the region mean, plain BN, rescale by ``sqrt(|R| / NHW)``) inflates eps for small regions as
    written above, uses no running statistics (train = eval), initialises the weights at 0 (``1 + weight`` is the
    scale) and adds both biases everywhere. An empty region contributes nothing. The mask is not resized here (the
    code resizes it to x's size with nearest interpolation first). Yu, Guo, Jin, Wu, Chen, Li, Zhang & Liu (2020),
    "Region Normalization for Image Inpainting".

    Parameters
    ----------
    x : array ``(N, C, *spatial)``
    mask : array ``(N, 1, *spatial)`` (or broadcastable without growing x), binary
    weight_fg, bias_fg, weight_bg, bias_bg : array (C,), optional
        None means 0 (the initial values).
    eps : float > 0

    Returns
    -------
    array like x

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(0)
    >>> x, m = r.standard_normal((2, 3, 4, 4)), (r.random((2, 1, 4, 4)) > 0.5).astype(float)
    >>> region_norm(x, m).shape
    (2, 3, 4, 4)
    """
    return region_norm_fwd(x, mask, weight_fg, bias_fg, weight_bg, bias_bg, eps=eps)[0]


def region_norm_fwd(x, mask, weight_fg=None, bias_fg=None, weight_bg=None, bias_bg=None, *, eps=1e-5):
    xp = compat.array_namespace(x, mask, weight_fg, bias_fg, weight_bg, bias_bg)
    C, nd = x.shape[1], x.ndim
    _check_vecs(C, weight_fg=weight_fg, bias_fg=bias_fg, weight_bg=weight_bg, bias_bg=bias_bg)
    if mask.ndim != nd or any(ms not in (1, xs) for ms, xs in zip(mask.shape, x.shape)):
        raise ValueError(f"mask (shape {tuple(mask.shape)}) must broadcast to x (shape {tuple(x.shape)}) without "
                         "growing x, e.g. (N, 1, *spatial)")
    cdt = compat.compute_dtype(x, xp)
    mk = xp.astype(mask, cdt)
    if compat.is_concrete(mask):
        a = compat.to_numpy(mk)
        if not ((a == 0) | (a == 1)).all():
            raise ValueError("mask must be binary (0/1 or bool); resize masks with nearest interpolation")
    xc = compat.cast(x, cdt, xp)
    mk = xp.broadcast_to(mk, tuple(x.shape))
    red = (0,) + tuple(range(2, nd))
    total = compat.size(x) // C
    eps = float(eps)
    parts = []
    for m in (mk, 1.0 - mk):
        cnt = xp.sum(m, axis=red, keepdims=True)
        cs = xp.maximum(cnt, xp.ones_like(cnt))
        mu = xp.sum(m * xc, axis=red, keepdims=True) / cs
        d = xc - mu
        v, sc = var_scaled(d, red, xp, weights=m / cs)
        r = rstd_of(v, sc, eps * total / cs, xp)
        parts.append(RegionPart(m, cs, m * d * r, r))
    gf = _bvec(xp, weight_fg, nd, cdt, fill=0.0)
    gb = _bvec(xp, weight_bg, nd, cdt, fill=0.0)
    y = parts[0].xh * (1.0 + gf) + parts[1].xh * (1.0 + gb)
    for bb in (bias_fg, bias_bg):
        if bb is not None:
            y = y + _bvec(xp, bb, nd, cdt)
    dts = (x.dtype, mask.dtype) + tuple(None if a is None else a.dtype
                                        for a in (weight_fg, bias_fg, weight_bg, bias_bg))
    return compat.cast(y, x.dtype, xp), RegionNormRes(C, red, tuple(parts), gf, gb, dts)


def region_norm_bwd(res: RegionNormRes, dy):
    C, red, parts, dts = res.C, res.red, res.parts, res.dts
    xp = compat.array_namespace(parts[0].xh)
    gy = compat.cast(dy, parts[0].xh.dtype, xp)
    dx = None
    dws = []
    for p, gamma in zip(parts, (res.gf, res.gb)):
        m, cs, xh, r = p.m, p.cs, p.xh, p.r
        gh = gy * (1.0 + gamma) * m
        t = r * (gh - m * xp.sum(gh, axis=red, keepdims=True) / cs
                 - xh * xp.sum(gh * xh, axis=red, keepdims=True) / cs)
        dx = t if dx is None else dx + t
        dws.append(xp.reshape(xp.sum(gy * xh, axis=red, keepdims=True), (C,)))
    dbias = xp.reshape(xp.sum(gy, axis=red, keepdims=True), (C,))
    return (compat.cast(dx, dts[0], xp), None, compat.cast(dws[0], dts[2], xp) if dts[2] is not None else None,
            compat.cast(dbias, dts[3], xp) if dts[3] is not None else None,
            compat.cast(dws[1], dts[4], xp) if dts[4] is not None else None,
            compat.cast(dbias, dts[5], xp) if dts[5] is not None else None)


vjp(region_norm, region_norm_fwd, region_norm_bwd, nondiff_argnums=(1,), validate=True)
