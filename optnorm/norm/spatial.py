"""Normalization over spatial feature maps: EvoNorm-B0/S0 and Region Normalization (RN-B).

Layout (N, C, *spatial) with channels on axis 1 (any number of spatial axes >= 1).
"""
from __future__ import annotations

from .._lib import compat, ops, validate

__all__ = ["evonorm_b0", "evonorm_s0", "region_norm"]


def _as(xp, a, dt):
    return None if a is None else (a if a.dtype == dt else xp.astype(a, dt))


def _check_x(x):
    validate.check_float(x, "x")
    if x.ndim < 3:
        raise ValueError(f"x must have shape (N, C, *spatial) with at least one spatial axis, got {tuple(x.shape)}")
    validate.check_nonempty(x, "x")


def _check_vec(a, name, c):
    if a is None:
        return
    validate.check_float(a, name)
    if tuple(a.shape) != (c,):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, expected ({c},) (one entry per channel)")


def _bvec(xp, a, nd, dt, fill=None):
    if a is None:
        return fill
    return xp.reshape(_as(xp, a, dt), (1, a.shape[0]) + (1,) * (nd - 2))


def _sigmoid(xp, s):
    e = xp.exp(-xp.abs(s))
    return xp.where(s >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# ---------------------------------------------------------------------------------------------- EvoNorm-B0
def _b0_fwd(x, running_var=None, weight=None, bias=None, v=None, *, training=True, momentum=0.1, eps=1e-3):
    xp = validate.check_same_namespace(x=x, running_var=running_var, weight=weight, bias=bias, v=v)
    _check_x(x)
    C, nd = x.shape[1], x.ndim
    for a, nm in ((running_var, "running_var"), (weight, "weight"), (bias, "bias"), (v, "v")):
        _check_vec(a, nm, C)
    validate.check_positive(eps, "eps")
    m = validate.check_probability(momentum, "momentum")
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {type(training).__name__}")
    if not training and running_var is None:
        raise ValueError("running_var is required when training=False")
    cdt = compat.compute_dtype(x, xp)
    xc = _as(xp, x, cdt)
    redB = (0,) + tuple(range(2, nd))
    redI = tuple(range(2, nd))
    nB = compat.size(x) // C
    nI = compat.size(x) // (C * x.shape[0])
    if training and nB <= 1:
        raise ValueError(f"x has {nB} value per channel: batch statistics need more than 1")
    vb = _bvec(xp, v, nd, cdt, fill=1.0)
    res = dict(xp=xp, C=C, nd=nd, training=training, m=m, redB=redB, redI=redI, nB=nB, nI=nI, vb=vb,
               g=_bvec(xp, weight, nd, cdt),
               dts=(x.dtype, None if running_var is None else running_var.dtype,
                    None if weight is None else weight.dtype, None if bias is None else bias.dtype,
                    None if v is None else v.dtype))
    if training:
        muB = xp.mean(xc, axis=redB, keepdims=True)
        dB = xc - muB
        varB = xp.mean(dB * dB, axis=redB, keepdims=True)
        corr = nB / (nB - 1)
        new_rv = None if running_var is None else _as(
            xp, (1 - m) * _as(xp, running_var, cdt) + m * corr * xp.reshape(varB, (C,)), running_var.dtype)
        res.update(dB=dB, corr=corr)
    else:
        varB = _bvec(xp, running_var, nd, cdt)
        new_rv = running_var
    L = xp.sqrt(varB + eps)
    muI = xp.mean(xc, axis=redI, keepdims=True)
    dI = xc - muI
    sI = xp.sqrt(xp.mean(dI * dI, axis=redI, keepdims=True) + eps)
    R = vb * xc + sI
    useL = L >= R                        # ties go to the batch branch
    D = xp.where(useL, L, R)
    z = xc / D
    y = z if res["g"] is None else z * res["g"]
    if bias is not None:
        y = y + _bvec(xp, bias, nd, cdt)
    res.update(xc=xc, L=L, sI=sI, dI=dI, useL=useL, D=D, z=z)
    return (_as(xp, y, x.dtype), new_rv), res


def evonorm_b0(x, running_var=None, weight=None, bias=None, v=None, *, training=True, momentum=0.1, eps=1e-3):
    r"""EvoNorm-B0: batch-instance normalization-activation layer found by architecture search.

    ::

        y = weight * x / max( sqrt(var_B + eps), v * x + sqrt(var_I(x) + eps) ) + bias

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
    return _b0_fwd(x, running_var, weight, bias, v, training=training, momentum=momentum, eps=eps)[0]


def evonorm_b0_fwd(x, running_var=None, weight=None, bias=None, v=None, *, training=True, momentum=0.1, eps=1e-3):
    return _b0_fwd(x, running_var, weight, bias, v, training=training, momentum=momentum, eps=eps)


def evonorm_b0_bwd(res, dy):
    xp, C, dts = res["xp"], res["C"], res["dts"]
    gy, grv = dy
    xc, L, sI, dI, useL, D, z, vb, g = (res[k] for k in ("xc", "L", "sI", "dI", "useL", "D", "z", "vb", "g"))
    gy = _as(xp, gy, xc.dtype)
    redB, redI = res["redB"], res["redI"]
    gh = gy if g is None else gy * g
    dx = gh / D
    h = -gh * xc / (D * D)                       # cotangent of D
    zero = xp.zeros_like(h)
    hL = xp.where(useL, h, zero)
    hR = xp.where(useL, zero, h)
    # R = v x + sqrt(var_I + eps)
    dx = dx + hR * vb
    dsI = xp.sum(hR, axis=redI, keepdims=True)
    dx = dx + (dsI / (2.0 * sI)) * 2.0 * dI / res["nI"]
    dv = None if dts[4] is None else xp.reshape(xp.sum(hR * xc, axis=redB, keepdims=True), (C,))
    dLsum = xp.sum(hL, axis=redB, keepdims=True) / (2.0 * L)     # dL/dvar_B
    drv = None
    if res["training"]:
        m = res["m"]
        dvar = dLsum
        if grv is not None:
            dvar = dvar + m * res["corr"] * xp.reshape(_as(xp, grv, xc.dtype), dLsum.shape)
            drv = (1 - m) * grv
        dx = dx + dvar * 2.0 * res["dB"] / res["nB"]
    else:
        drv = xp.reshape(dLsum, (C,))
        if grv is not None:
            drv = drv + _as(xp, grv, xc.dtype)
    dw = None if dts[2] is None else xp.reshape(xp.sum(gy * z, axis=redB, keepdims=True), (C,))
    db = None if dts[3] is None else xp.reshape(xp.sum(gy, axis=redB, keepdims=True), (C,))
    return (_as(xp, dx, dts[0]), _as(xp, drv, dts[1]), _as(xp, dw, dts[2]), _as(xp, db, dts[3]),
            _as(xp, dv, dts[4]))


ops.register("norm.evonorm_b0", evonorm_b0, evonorm_b0_fwd, evonorm_b0_bwd)


# ---------------------------------------------------------------------------------------------- EvoNorm-S0
def _s0_fwd(x, weight=None, bias=None, v=None, *, groups=32, eps=1e-5):
    xp = validate.check_same_namespace(x=x, weight=weight, bias=bias, v=v)
    _check_x(x)
    C, nd, N = x.shape[1], x.ndim, x.shape[0]
    for a, nm in ((weight, "weight"), (bias, "bias"), (v, "v")):
        _check_vec(a, nm, C)
    G = validate.check_int(groups, "groups", low=1)
    if C % G:
        raise ValueError(f"groups={G} must divide the number of channels {C} (x.shape[1])")
    validate.check_positive(eps, "eps")
    cdt = compat.compute_dtype(x, xp)
    xc = _as(xp, x, cdt)
    vb = _bvec(xp, v, nd, cdt, fill=1.0)
    sg = _sigmoid(xp, vb * xc)
    u = xc * sg
    x3 = xp.reshape(xc, (N, G, -1))
    mu = xp.mean(x3, axis=-1, keepdims=True)
    d3 = x3 - mu
    r = 1.0 / xp.sqrt(xp.mean(d3 * d3, axis=-1, keepdims=True) + eps)        # (N, G, 1)
    rfull = xp.reshape(xp.broadcast_to(r, tuple(x3.shape)), tuple(x.shape))
    z = u * rfull
    g = _bvec(xp, weight, nd, cdt)
    y = z if g is None else z * g
    if bias is not None:
        y = y + _bvec(xp, bias, nd, cdt)
    res = dict(xp=xp, C=C, nd=nd, N=N, G=G, xc=xc, vb=vb, sg=sg, u=u, d3=d3, r=r, rfull=rfull, z=z, g=g,
               dts=(x.dtype, None if weight is None else weight.dtype, None if bias is None else bias.dtype,
                    None if v is None else v.dtype))
    return _as(xp, y, x.dtype), res


def evonorm_s0(x, weight=None, bias=None, v=None, *, groups=32, eps=1e-5):
    r"""EvoNorm-S0: sample-based normalization-activation layer (no batch statistics).

    ::

        y = weight * x * sigmoid(v * x) / sqrt(var_G(x) + eps) + bias

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
    return _s0_fwd(x, weight, bias, v, groups=groups, eps=eps)[0]


def evonorm_s0_fwd(x, weight=None, bias=None, v=None, *, groups=32, eps=1e-5):
    return _s0_fwd(x, weight, bias, v, groups=groups, eps=eps)


def evonorm_s0_bwd(res, dy):
    xp, C, N, G, dts = res["xp"], res["C"], res["N"], res["G"], res["dts"]
    xc, vb, sg, u, d3, r, rfull, z, g = (res[k] for k in ("xc", "vb", "sg", "u", "d3", "r", "rfull", "z", "g"))
    gy = _as(xp, dy, xc.dtype)
    redB = (0,) + tuple(range(2, res["nd"]))
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
    return _as(xp, dx, dts[0]), _as(xp, dw, dts[1]), _as(xp, db, dts[2]), _as(xp, dv, dts[3])


ops.register("norm.evonorm_s0", evonorm_s0, evonorm_s0_fwd, evonorm_s0_bwd)


# ---------------------------------------------------------------------------------------------- Region Norm
def _rn_fwd(x, mask, weight_fg=None, bias_fg=None, weight_bg=None, bias_bg=None, *, eps=1e-5):
    xp = validate.check_same_namespace(x=x, mask=mask, weight_fg=weight_fg, bias_fg=bias_fg, weight_bg=weight_bg,
                                       bias_bg=bias_bg)
    _check_x(x)
    C, nd = x.shape[1], x.ndim
    for a, nm in ((weight_fg, "weight_fg"), (bias_fg, "bias_fg"), (weight_bg, "weight_bg"), (bias_bg, "bias_bg")):
        _check_vec(a, nm, C)
    validate.check_positive(eps, "eps")
    if mask is None:
        raise ValueError("mask is required (1 = foreground/hole region, 0 = background)")
    if mask.ndim != nd:
        raise ValueError(f"mask must have shape (N, 1, *spatial) like x {tuple(x.shape)}, got {tuple(mask.shape)}")
    validate.check_broadcastable("mask", mask.shape, "x", x.shape)
    if any(ms not in (1, xs) for ms, xs in zip(mask.shape, x.shape)):
        raise ValueError(f"mask (shape {tuple(mask.shape)}) must broadcast to x (shape {tuple(x.shape)}) "
                         "without growing x")
    cdt = compat.compute_dtype(x, xp)
    mk = _as(xp, mask, cdt)
    if compat.is_concrete(mask):
        if not bool(xp.all((mk == 0) | (mk == 1))):
            raise ValueError("mask must be binary (0/1 or bool); resize masks with nearest interpolation")
    xc = _as(xp, x, cdt)
    mk = xp.broadcast_to(mk, tuple(x.shape))
    red = (0,) + tuple(range(2, nd))
    total = compat.size(x) // C
    parts = []
    for m in (mk, 1.0 - mk):
        cnt = xp.sum(m, axis=red, keepdims=True)
        cs = xp.maximum(cnt, xp.ones_like(cnt))
        mu = xp.sum(m * xc, axis=red, keepdims=True) / cs
        d = xc - mu
        var = xp.sum(m * d * d, axis=red, keepdims=True) / cs
        r = 1.0 / xp.sqrt(var + eps * total / cs)
        parts.append(dict(m=m, cs=cs, xh=m * d * r, r=r))
    gf = _bvec(xp, weight_fg, nd, cdt, fill=0.0)
    gb = _bvec(xp, weight_bg, nd, cdt, fill=0.0)
    y = parts[0]["xh"] * (1.0 + gf) + parts[1]["xh"] * (1.0 + gb)
    for bb in (bias_fg, bias_bg):
        if bb is not None:
            y = y + _bvec(xp, bb, nd, cdt)
    res = dict(xp=xp, C=C, red=red, parts=parts, gf=gf, gb=gb,
               dts=(x.dtype, mask.dtype) + tuple(None if a is None else a.dtype
                                                 for a in (weight_fg, bias_fg, weight_bg, bias_bg)))
    return _as(xp, y, x.dtype), res


def region_norm(x, mask, weight_fg=None, bias_fg=None, weight_bg=None, bias_bg=None, *, eps=1e-5):
    r"""Region Normalization, basic form (RN-B) for image inpainting.

    The mask splits the pixels into two regions (``mask = 1``: foreground/hole, 0: background).  Each region is
    batch-normalized on its own: per channel, mean and biased variance over that region's pixels across the
    batch, then::

        RN(x)  = (x - mu_R) / sqrt(var_R + eps * N*H*W / |R|)       on the pixels of region R
        y      = RN(x) * mask * (1 + weight_fg) + bias_fg + RN(x) * (1 - mask) * (1 + weight_bg) + bias_bg

    exactly as the official code (``geekyutao/RN``, ``RN_B``): its implementation (fill the outside with the
    region mean, plain BN, rescale by ``sqrt(|R| / NHW)``) inflates eps for small regions as written above, uses
    no running statistics (train = eval), initialises the weights at 0 (``1 + weight`` is the scale) and adds
    both biases everywhere.  An empty region contributes nothing.  The mask is not resized here (the code
    resizes it to x's size with nearest interpolation first).  Yu, Guo, Jin, Wu, Chen, Li, Zhang & Liu (2020),
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
    return _rn_fwd(x, mask, weight_fg, bias_fg, weight_bg, bias_bg, eps=eps)[0]


def region_norm_fwd(x, mask, weight_fg=None, bias_fg=None, weight_bg=None, bias_bg=None, *, eps=1e-5):
    return _rn_fwd(x, mask, weight_fg, bias_fg, weight_bg, bias_bg, eps=eps)


def region_norm_bwd(res, dy):
    xp, C, red, parts, dts = res["xp"], res["C"], res["red"], res["parts"], res["dts"]
    gy = _as(xp, dy, parts[0]["xh"].dtype)
    dx = None
    dws = []
    for p, gamma in zip(parts, (res["gf"], res["gb"])):
        m, cs, xh, r = p["m"], p["cs"], p["xh"], p["r"]
        gh = gy * (1.0 + gamma) * m
        t = r * (gh - m * xp.sum(gh, axis=red, keepdims=True) / cs
                 - xh * xp.sum(gh * xh, axis=red, keepdims=True) / cs)
        dx = t if dx is None else dx + t
        dws.append(xp.reshape(xp.sum(gy * xh, axis=red, keepdims=True), (C,)))
    dbias = xp.reshape(xp.sum(gy, axis=red, keepdims=True), (C,))
    return (_as(xp, dx, dts[0]), None, _as(xp, dws[0], dts[2]) if dts[2] is not None else None,
            _as(xp, dbias, dts[3]) if dts[3] is not None else None,
            _as(xp, dws[1], dts[4]) if dts[4] is not None else None,
            _as(xp, dbias, dts[5]) if dts[5] is not None else None)


ops.register("norm.region_norm", region_norm, region_norm_fwd, region_norm_bwd, nondiff_argnums=(1,))
