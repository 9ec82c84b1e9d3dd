"""Batch-statistics normalization: batch_norm (torch semantics, optional per-sample weights), alpha_batch_norm,
batch_channel_norm, power_norm and unified_norm.

All running statistics are explicit: they go in as arrays and the updated values come out as new arrays; nothing
is mutated.  Statistics are computed per channel (``axis``) over every other axis, with the squares formed in
units of each channel's largest deviation (no overflow of the normalisation for entries up to the dtype's
largest value; a running statistic whose update itself overflows raises ``ValueError``).
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.dispatch import Dispatcher, numpy_float
from .._lib.roles import Axis, Bool, Choice, Float, Int, Positive, Probability
from .._lib.typing import Array
from ._common import check_running_stat, rstd_of, var_scaled


# ---------------------------------------------------------------------------------------------- helpers
def _bshape(ndim: int, axis: int, c: int) -> tuple:
    s = [1] * ndim
    s[axis] = c
    return tuple(s)


def _red(ndim: int, axis: int) -> tuple:
    return tuple(i for i in range(ndim) if i != axis)


def _vec(xp, a, shape, dt):
    """A per-channel vector (C,) cast to ``dt`` and reshaped to broadcast against x."""
    return None if a is None else xp.reshape(compat.cast(a, dt, xp), shape)


def _check_vecs(c, **vecs):
    """Per-channel arrays have shape (C,) with C = x.shape[axis] (their roles check they agree with each other)."""
    for nm, a in vecs.items():
        if a is not None and tuple(a.shape) != (c,):
            raise ValueError(f"{nm} has shape {tuple(a.shape)}, expected ({c},) (one entry per channel of x)")


def _sum(xp, a, red, keep=True):
    return xp.sum(a, axis=red, keepdims=keep)


def _dtype(a):
    return None if a is None else a.dtype


# shapes for the generated examples: x (N=4, C=3, 2); per-channel vectors named "c", per-sample ones "b"
_SIZES = {"b": 4, "c": 3}
_CH = dict(optional=True)


def _x_example(shape=(4, 3, 2), **kw):
    """x and running statistics (running_mean, running_var) for C = shape[1]."""

    def example(rng, dtype):
        c = shape[1]
        return (rng.standard_normal(shape).astype(dtype), (0.1 * rng.standard_normal(c)).astype(dtype),
                (0.5 + rng.random(c)).astype(dtype)), dict(kw)

    return example


# ---------------------------------------------------------------------------------------------- batch_norm
class BatchNormRes(NamedTuple):
    ax: int
    bs: tuple
    red: tuple
    n: int
    training: bool
    m: float
    dtype: Any
    has_w: bool
    has_b: bool
    has_sw: bool
    has_rs: bool
    g: Any
    unbiased: bool
    wdt: Any
    bdt: Any
    rmdt: Any
    rvdt: Any
    swdt: Any
    d: Any
    r: Any
    xh: Any
    xc: Any = None
    om: Any = None
    var: Any = None
    corr: Any = None
    wn: Any = None
    ssum: Any = None
    mper: int = 0


def _bn_checks(x, running_mean, running_var, weight, bias, sample_weight, training, momentum, axis):
    c = x.shape[axis]
    _check_vecs(c, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    if momentum is None:
        raise ValueError("momentum=None (cumulative average) is not supported: pass momentum=1/num_batches")
    if not training and running_mean is None:
        raise ValueError("running_mean and running_var are required when training=False")
    if sample_weight is not None:
        if axis == 0:
            raise ValueError("sample_weight needs a batch axis 0 distinct from the channel axis (axis=0 given)")
        if tuple(sample_weight.shape) != (x.shape[0],):
            raise ValueError(f"sample_weight has shape {tuple(sample_weight.shape)}, expected ({x.shape[0]},) "
                             "(one weight per sample along axis 0)")
        if compat.is_concrete(sample_weight) and not float(compat.to_numpy(sample_weight).sum()) > 0:
            raise ValueError("sample_weight must have a positive sum")
    n = compat.size(x) // max(c, 1)
    if training and n <= 1:
        raise ValueError(f"x has {n} value per channel: batch statistics need more than 1 (shape {tuple(x.shape)})")


def _bn_fwd(x, running_mean, running_var, weight, bias, sample_weight, *, training, momentum, eps, axis, unbiased):
    xp = compat.array_namespace(x, running_mean, running_var, weight, bias, sample_weight)
    cdt = compat.compute_dtype(x, xp)
    xc = compat.cast(x, cdt, xp)
    nd, c = x.ndim, x.shape[axis]
    bs, red = _bshape(nd, axis, c), _red(nd, axis)
    n = compat.size(x) // c
    g = _vec(xp, weight, bs, cdt)
    b = _vec(xp, bias, bs, cdt)
    m = float(momentum)
    f = dict(ax=axis, bs=bs, red=red, n=n, training=training, m=m, dtype=x.dtype, has_w=weight is not None,
             has_b=bias is not None, has_sw=sample_weight is not None, has_rs=running_mean is not None, g=g,
             unbiased=bool(unbiased), wdt=_dtype(weight), bdt=_dtype(bias), rmdt=_dtype(running_mean),
             rvdt=_dtype(running_var), swdt=_dtype(sample_weight))
    if training:
        if sample_weight is None:
            om = 1.0 / n
            mu = xp.mean(xc, axis=red, keepdims=True)
            d = xc - mu
            v, sc = var_scaled(d, red, xp)
            corr = n / (n - 1) if unbiased else 1.0
            wn = None
        else:
            mper = n // x.shape[0]
            sw = compat.cast(sample_weight, cdt, xp)
            ssum = xp.sum(sw)
            wn = sw / ssum
            om = xp.reshape(wn / mper, (x.shape[0],) + (1,) * (nd - 1))
            mu = _sum(xp, om * xc, red)
            d = xc - mu
            v, sc = var_scaled(d, red, xp, weights=om)
            corr = 1.0 / (1.0 - xp.sum(wn * wn) / mper) if unbiased else 1.0
            f.update(ssum=ssum, mper=mper)
        r = rstd_of(v, sc, eps, xp)
        # the batch variance (for the running update and its VJP); overflows only when the variance itself does
        var = v * sc * sc if running_mean is not None else None
        xh = d * r
        f.update(om=om, d=d, var=var, corr=corr, wn=wn, r=r, xh=xh, xc=xc)
        if running_mean is not None:
            rm = (1 - m) * compat.cast(running_mean, cdt, xp) + m * xp.reshape(mu, (c,))
            rv = (1 - m) * compat.cast(running_var, cdt, xp) + m * corr * xp.reshape(var, (c,))
            rm, rv = compat.cast(rm, running_mean.dtype, xp), compat.cast(rv, running_var.dtype, xp)
        else:
            rm = rv = None
    else:
        rmc = xp.reshape(compat.cast(running_mean, cdt, xp), bs)
        r = 1.0 / xp.sqrt(xp.reshape(compat.cast(running_var, cdt, xp), bs) + eps)
        d = xc - rmc
        xh = d * r
        rm, rv = running_mean, running_var
        f.update(d=d, r=r, xh=xh)
    y = xh if g is None else xh * g
    if b is not None:
        y = y + b
    return (compat.cast(y, x.dtype, xp), rm, rv), BatchNormRes(**f)


_bn = Dispatcher("norm.batch_norm")


@_bn.generic
def _bn_generic(x, running_mean, running_var, weight, bias, sample_weight, *, training, momentum, eps, axis,
                unbiased, xp):
    return _bn_fwd(x, running_mean, running_var, weight, bias, sample_weight, training=training,
                   momentum=momentum, eps=eps, axis=axis, unbiased=unbiased)[0]


@_bn.numba(when=lambda x, running_mean, running_var, weight, bias, sample_weight, **kw: sample_weight is None
           and numpy_float(x) and all(a is None or numpy_float(a) for a in (running_mean, running_var, weight, bias)))
def _bn_numba(x, running_mean, running_var, weight, bias, sample_weight, *, training, momentum, eps, axis,
              unbiased, xp):
    from .._numba import norm as nb

    return nb.batch_norm_forward(x, running_mean, running_var, weight, bias, training, float(momentum), float(eps),
                                 axis, bool(unbiased))


_BN_ROLES = dict(x=Float(min_ndim=2), running_mean=Float("c", **_CH),
                 running_var=Float("c", sign="nonnegative", **_CH), weight=Float("c", **_CH), bias=Float("c", **_CH))


@public(**_BN_ROLES, sample_weight=Float("b", sign="nonnegative", finite=True, **_CH), training=Bool(),
        momentum=Probability(optional=True), eps=Positive(), axis=Axis("x"), unbiased=Bool(), sizes=_SIZES,
        example=_x_example())
def batch_norm(x: Array, running_mean: Array | None = None, running_var: Array | None = None,
               weight: Array | None = None, bias: Array | None = None, sample_weight: Array | None = None, *,
               training: bool = True, momentum: float | None = 0.1, eps: float = 1e-5, axis: int = 1,
               unbiased: bool = True) -> tuple[Array, Array | None, Array | None]:
    r"""Batch normalization with torch's exact semantics, explicit running statistics and optional sample weights.

    .. math::

        \mu_c = \sum_i w_i \operatorname{mean}_s x_{ics}, \qquad
        \sigma_c^2 = \sum_i w_i \operatorname{mean}_s (x_{ics} - \mu_c)^2, \qquad
        y_{ics} = \gamma_c \frac{x_{ics} - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c

    Training (``training=True``)::

        mu_c  = sum_i w_i mean_s x[i, c, s]             var_c = sum_i w_i mean_s (x[i, c, s] - mu_c)^2
        y     = weight_c (x - mu_c) / sqrt(var_c + eps) + bias_c
        new_running_mean = (1 - momentum) running_mean + momentum mu_c
        new_running_var  = (1 - momentum) running_var  + momentum k var_c

    with normalised sample weights ``w = sample_weight / sum(sample_weight)`` (uniform ``1/N`` when None, which is
    exactly ``torch.nn.functional.batch_norm``: biased variance for normalising, unbiased ``n/(n-1)`` in the running
    update).  ``k`` is the reliability-weights unbiasing factor ``1 / (1 - sum_i w_i^2 / M)`` (``M`` = values per
    sample and channel), which is ``n/(n-1)`` for uniform weights; ``unbiased=False`` sets ``k = 1`` (the biased
    variance in the running update, as AdaB2N's code does).  ``momentum`` is torch's convention: the weight
    of the *new* batch statistic.  Evaluation (``training=False``) normalises with the running statistics and
    returns them unchanged.  Per-sample weights implement the task-balanced statistics of AdaB2N (Lyu et al. 2024,
    "Overcoming Recency Bias of Normalization Statistics in Continual Learning"); optnorm's own unbiasing choice.

    Ioffe & Szegedy (2015), "Batch Normalization: Accelerating Deep Network Training by Reducing Internal
    Covariate Shift".

    Parameters
    ----------
    x : array (N, C, ...)
        Input; the batch axis is 0, the channel axis ``axis``.
    running_mean, running_var : array (C,), optional
        Running statistics (both or neither).  With None in training mode, the returned ones are None too.
        Required when ``training=False``.
    weight, bias : array (C,), optional
        Affine parameters.
    sample_weight : array (N,), optional
        Non-negative per-sample weights along axis 0 (training mode only; ignored in eval).
    training : bool
        Batch statistics (True) or running statistics (False).
    momentum : float in [0, 1]
        torch's momentum.  ``None`` (cumulative average) is not supported: pass ``1/num_batches_tracked``.
    eps : float > 0
    axis : int
        Channel axis.
    unbiased : bool
        Unbiased (torch, default) or biased batch variance in the running-variance update.

    Returns
    -------
    y, new_running_mean, new_running_var
        ``y`` has x's dtype; the running statistics keep their dtypes (None when not given).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((8, 3, 5))
    >>> y, rm, rv = batch_norm(x, np.zeros(3), np.ones(3))
    >>> np.allclose(y.mean(axis=(0, 2)), 0)
    True
    """
    _bn_checks(x, running_mean, running_var, weight, bias, sample_weight, training, momentum, axis)
    xp = compat.array_namespace(x)
    y, rm, rv = _bn(x, running_mean, running_var, weight, bias, sample_weight, training=training, momentum=momentum,
                    eps=float(eps), axis=axis, unbiased=unbiased, xp=xp)
    if training:
        check_running_stat(rv, "running_var", x, "batch variance", running_mean, running_var)
    return y, rm, rv


def batch_norm_fwd(x, running_mean=None, running_var=None, weight=None, bias=None, sample_weight=None, *,
                   training=True, momentum=0.1, eps=1e-5, axis=1, unbiased=True):
    _bn_checks(x, running_mean, running_var, weight, bias, sample_weight, training, momentum, axis)
    out, res = _bn_fwd(x, running_mean, running_var, weight, bias, sample_weight, training=training,
                       momentum=momentum, eps=float(eps), axis=axis, unbiased=unbiased)
    if training:
        check_running_stat(out[2], "running_var", x, "batch variance", running_mean, running_var)
    return out, res


def _bn_bwd_core(res: BatchNormRes, gy, grm, grv, xp):
    """Cotangents in the compute dtype: (dx, drm, drv, dweight, dbias, dsample_weight)."""
    red, bs = res.red, res.bs
    c = bs[res.ax]
    g, xh, r = res.g, res.xh, res.r
    gh = gy if g is None else gy * g
    dgam = xp.reshape(_sum(xp, gy * xh, red), (c,)) if res.has_w else None
    dbet = xp.reshape(_sum(xp, gy, red), (c,)) if res.has_b else None
    drm = drv = dsw = None
    if res.training:
        om, m = res.om, res.m
        s1 = _sum(xp, gh, red)
        s2 = _sum(xp, gh * xh, red)
        dx = r * (gh - om * s1 - om * xh * s2)
        amu = -r * s1
        avar = -0.5 * r * r * s2
        if res.has_rs:
            grm_b = xp.zeros(bs, dtype=gy.dtype) if grm is None else xp.reshape(compat.cast(grm, gy.dtype, xp), bs)
            grv_b = xp.zeros(bs, dtype=gy.dtype) if grv is None else xp.reshape(compat.cast(grv, gy.dtype, xp), bs)
            dx = dx + om * (m * grm_b) + om * 2.0 * res.d * (m * res.corr * grv_b)
            amu = amu + m * grm_b
            avar = avar + m * res.corr * grv_b
            drm = None if grm is None else (1 - m) * grm
            drv = None if grv is None else (1 - m) * grv
        if res.has_sw:
            nb = res.xc.shape[0]
            other = tuple(i for i in range(1, len(bs)))
            per = amu * res.xc + avar * res.d * res.d
            dwn = xp.reshape(xp.sum(per, axis=other), (nb,)) / res.mper
            wn = res.wn
            if res.has_rs and res.unbiased:
                # corr = 1/(1 - sum wn^2/M): d corr/d wn_i = corr^2 * 2 wn_i / M
                scal = xp.sum(m * grv_b * res.var) if grv is not None else 0.0
                dwn = dwn + scal * res.corr ** 2 * 2.0 * wn / res.mper
            dsw = (dwn - xp.sum(wn * dwn)) / res.ssum
    else:
        dx = gh * r
        drm = -xp.reshape(_sum(xp, gh * r, red), (c,))
        drv = xp.reshape(_sum(xp, gh * res.d, red) * (-0.5) * r * r * r, (c,))
        if grm is not None:
            drm = drm + compat.cast(grm, gy.dtype, xp)
        if grv is not None:
            drv = drv + compat.cast(grv, gy.dtype, xp)
    return dx, drm, drv, dgam, dbet, dsw


def batch_norm_bwd(res: BatchNormRes, dy):
    xp = compat.array_namespace(res.xh)
    gy, grm, grv = dy
    gy = compat.cast(gy, res.xh.dtype, xp)
    dx, drm, drv, dgam, dbet, dsw = _bn_bwd_core(res, gy, grm, grv, xp)
    return (compat.cast(dx, res.dtype, xp), compat.cast(drm, res.rmdt, xp), compat.cast(drv, res.rvdt, xp),
            compat.cast(dgam, res.wdt, xp), compat.cast(dbet, res.bdt, xp), compat.cast(dsw, res.swdt, xp))


vjp(batch_norm, batch_norm_fwd, batch_norm_bwd, validate=True)


# ---------------------------------------------------------------------------------------------- alpha_batch_norm
class AlphaBatchNormRes(NamedTuple):
    red: tuple
    c: int
    al: float
    k: float
    db: Any
    d: Any
    r: Any
    xh: Any
    g: Any
    n: int
    dtypes: tuple


def _stats_example(rng, dtype, shape=(4, 3, 2), c=3, **kw):
    x = rng.standard_normal(shape).astype(dtype)
    rm = (0.1 * rng.standard_normal(c)).astype(dtype)
    rv = (0.5 + rng.random(c)).astype(dtype)
    return (x, rm, rv), kw


@public(x=Float(min_ndim=2), running_mean=Float("c"), running_var=Float("c", sign="nonnegative"),
        weight=Float("c", **_CH), bias=Float("c", **_CH), alpha=Probability(), unbiased=Bool(), eps=Positive(),
        axis=Axis("x"), sizes=_SIZES, example=lambda rng, dtype: _stats_example(rng, dtype, alpha=0.3))
def alpha_batch_norm(x: Array, running_mean: Array, running_var: Array, weight: Array | None = None,
                     bias: Array | None = None, *, alpha: float, unbiased: bool = True, eps: float = 1e-5,
                     axis: int = 1) -> Array:
    r"""alpha-BN: test-time batch normalization with statistics mixed between source and test batch.

    .. math::

        \mu = (1 - \alpha)\, \mu_{\mathrm{run}} + \alpha\, \mu_B(x), \qquad
        \sigma^2 = (1 - \alpha)\, \sigma^2_{\mathrm{run}} + \alpha\, \sigma^2_B(x), \qquad
        y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta

    ::

        mu    = (1 - alpha) * running_mean + alpha * mean_B(x)
        var   = (1 - alpha) * running_var  + alpha * var_B(x)       (unbiased batch variance by default)
        y     = weight (x - mu) / sqrt(var + eps) + bias

    You, Li & Zhao (2021), "Test-time Batch Statistics Calibration for Covariate Shift": mix the source (running)
    statistics with the current test-batch statistics with one scalar, in every BN layer, without training.
    ``alpha`` is the weight of the **test batch**, as in the widely used ``AlphaBatchNorm`` of test-time-adaptation
    code (bethgelab/robustness, reused by mariodoebler/test-time-adaptation), whose batch statistics come from a
    momentum-1 BatchNorm, i.e. the **unbiased** batch variance (``unbiased=False`` for the biased one).
    ``alpha = 0`` is eval-mode BN, ``alpha = 1`` (biased) training-mode BN without the running update.  The paper's
    own code was not read and there is no default: pass ``alpha``.  No state is updated.  Unlike that code (which
    runs without gradients), the VJP differentiates through the batch statistics.

    Parameters
    ----------
    x : array (N, C, ...)
    running_mean, running_var : array (C,)
        Source statistics.
    weight, bias : array (C,), optional
    alpha : float in [0, 1]
        Weight of the test-batch statistics.
    unbiased : bool
        Unbiased (default) or biased batch variance.
    eps : float > 0
    axis : int
        Channel axis.

    Returns
    -------
    y : array like x

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((4, 2, 3))
    >>> alpha_batch_norm(x, np.zeros(2), np.ones(2), alpha=0.1).shape
    (4, 2, 3)
    """
    return alpha_batch_norm_fwd(x, running_mean, running_var, weight, bias, alpha=alpha, unbiased=unbiased, eps=eps,
                                axis=axis)[0]


def alpha_batch_norm_fwd(x, running_mean, running_var, weight=None, bias=None, *, alpha, unbiased=True, eps=1e-5,
                         axis=1):
    xp = compat.array_namespace(x, running_mean, running_var, weight, bias)
    c = x.shape[axis]
    _check_vecs(c, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    al = float(alpha)
    n = compat.size(x) // c
    if unbiased and n < 2 and al > 0:
        raise ValueError(f"x has {n} value per channel: the unbiased batch variance needs at least 2")
    k = n / (n - 1) if (unbiased and n > 1) else 1.0
    cdt = compat.compute_dtype(x, xp)
    xc = compat.cast(x, cdt, xp)
    nd = x.ndim
    bs, red = _bshape(nd, axis, c), _red(nd, axis)
    mub = xp.mean(xc, axis=red, keepdims=True)
    db = xc - mub
    vb, sb = var_scaled(db, red, xp)
    rmc = xp.reshape(compat.cast(running_mean, cdt, xp), bs)
    rvc = xp.reshape(compat.cast(running_var, cdt, xp), bs)
    mu = (1 - al) * rmc + al * mub
    # var = (1 - al) rv + al k var_B, formed in units of the batch's scale (var_B may overflow on its own)
    r = 1.0 / (sb * xp.sqrt(((1 - al) * rvc / sb) / sb + (al * k) * vb + (eps / sb) / sb))
    d = xc - mu
    xh = d * r
    g = _vec(xp, weight, bs, cdt)
    y = xh if g is None else xh * g
    if bias is not None:
        y = y + _vec(xp, bias, bs, cdt)
    dts = (x.dtype, running_mean.dtype, running_var.dtype, _dtype(weight), _dtype(bias))
    return compat.cast(y, x.dtype, xp), AlphaBatchNormRes(red, c, al, k, db, d, r, xh, g, n, dts)


def alpha_batch_norm_bwd(res: AlphaBatchNormRes, dy):
    r, xh, d, db, g = res.r, res.xh, res.d, res.db, res.g
    xp = compat.array_namespace(r)
    red, c, al, n, k = res.red, res.c, res.al, res.n, res.k
    gy = compat.cast(dy, r.dtype, xp)
    gh = gy if g is None else gy * g
    s1 = _sum(xp, gh, red)                     # dL/dmu = -r s1
    s2 = _sum(xp, gh * d, red)                 # dL/dvar = -r^3/2 s2
    dmu = -r * s1
    dvar = -0.5 * r * r * r * s2
    dx = gh * r + al * dmu / n + (al * k) * dvar * 2.0 * db / n
    drm = xp.reshape((1 - al) * dmu, (c,))
    drv = xp.reshape((1 - al) * dvar, (c,))
    dgam = None if g is None else xp.reshape(_sum(xp, gy * xh, red), (c,))
    dts = res.dtypes
    dbet = None if dts[4] is None else xp.reshape(_sum(xp, gy, red), (c,))
    return tuple(compat.cast(a, t, xp) for a, t in zip((dx, drm, drv, dgam, dbet), dts))


vjp(alpha_batch_norm, alpha_batch_norm_fwd, alpha_batch_norm_bwd, validate=True)


# ---------------------------------------------------------------------------------------------- batch_channel_norm
class BatchChannelNormRes(NamedTuple):
    bres: BatchNormRes
    r: Any
    zh: Any
    gw: Any
    G: int
    shape: tuple
    gdts: tuple


@public(**_BN_ROLES, group_weight=Float("g", **_CH), group_bias=Float("g", **_CH), groups=Int(1), training=Bool(),
        momentum=Probability(optional=True), eps=Positive(), sizes={"b": 4, "c": 4, "g": 2},
        example=_x_example((4, 4, 3), groups=2))
def batch_channel_norm(x: Array, running_mean: Array | None = None, running_var: Array | None = None,
                       weight: Array | None = None, bias: Array | None = None, group_weight: Array | None = None,
                       group_bias: Array | None = None, *, groups: int = 32, training: bool = True,
                       momentum: float | None = 0.1, eps: float = 1e-5) -> tuple[Array, Array | None, Array | None]:
    r"""Batch-Channel Normalization: batch_norm (per-channel affine, running statistics) followed by group
    normalization over (C/G, spatial) per sample with a per-group affine.

    .. math::

        z = \mathrm{BN}(x), \qquad
        y_{n,g} = \gamma_g \frac{z_{n,g} - \mu_{n,g}(z)}{\sqrt{\sigma^2_{n,g}(z) + \epsilon}} + \beta_g,

    with :math:`\mu_{n,g}`, :math:`\sigma^2_{n,g}` (biased) over the channels of group g and the spatial
    positions of sample n.

    ::

        z = batch_norm(x, running_mean, running_var, weight, bias)          (torch semantics, channel axis 1)
        y[n, g] = group_weight_g (z[n, g] - mean(z[n, g])) / sqrt(var(z[n, g]) + eps) + group_bias_g

    Qiao, Wang, Liu, Shen & Yuille (2019/2020), "Micro-Batch Training with Batch-Channel Normalization and Weight
    Standardization"; as in the official code (``joe-siyuan-qiao/Batch-Channel-Normalization``, class ``GN`` in
    ``imagenet/models/layers.py``).  The paper's micro-batch variant with estimated statistics is not implemented
    (run with ``training=False`` to normalise the BN part with the running statistics).

    Parameters
    ----------
    x : array (N, C, ...)
        Channel axis 1.
    running_mean, running_var, weight, bias : array (C,), optional
        The batch_norm part (see :func:`batch_norm`).
    group_weight, group_bias : array (groups,), optional
        Per-group affine of the group-norm part.
    groups : int
        Number of groups (divides C).
    training, momentum, eps
        As in :func:`batch_norm` (``eps`` is used by both parts).

    Returns
    -------
    y, new_running_mean, new_running_var

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((4, 8, 3, 3))
    >>> y, rm, rv = batch_channel_norm(x, np.zeros(8), np.ones(8), groups=2)
    >>> y.shape, rm.shape
    ((4, 8, 3, 3), (8,))
    """
    return batch_channel_norm_fwd(x, running_mean, running_var, weight, bias, group_weight, group_bias, groups=groups,
                                  training=training, momentum=momentum, eps=eps)[0]


def batch_channel_norm_fwd(x, running_mean=None, running_var=None, weight=None, bias=None, group_weight=None,
                           group_bias=None, *, groups=32, training=True, momentum=0.1, eps=1e-5):
    G = groups
    C = x.shape[1]
    if C % G:
        raise ValueError(f"groups={G} must divide the number of channels {C} (x.shape[1])")
    _check_vecs(G, group_weight=group_weight, group_bias=group_bias)
    (z, rm, rv), bres = batch_norm_fwd(x, running_mean, running_var, weight, bias, None, training=training,
                                       momentum=momentum, eps=eps, axis=1)
    xp = compat.array_namespace(x)
    cdt = compat.compute_dtype(x, xp)
    zc = compat.cast(z, cdt, xp)
    N = x.shape[0]
    z3 = xp.reshape(zc, (N, G, -1))
    mu = xp.mean(z3, axis=-1, keepdims=True)
    dd = z3 - mu
    v, sc = var_scaled(dd, (2,), xp)
    r = rstd_of(v, sc, float(eps), xp)
    zh = dd * r
    gw = None if group_weight is None else xp.reshape(compat.cast(group_weight, cdt, xp), (1, G, 1))
    y3 = zh if gw is None else zh * gw
    if group_bias is not None:
        y3 = y3 + xp.reshape(compat.cast(group_bias, cdt, xp), (1, G, 1))
    y = compat.cast(xp.reshape(y3, tuple(x.shape)), x.dtype, xp)
    res = BatchChannelNormRes(bres, r, zh, gw, G, tuple(x.shape), (_dtype(group_weight), _dtype(group_bias)))
    return (y, rm, rv), res


def batch_channel_norm_bwd(res: BatchChannelNormRes, dy):
    bres = res.bres
    xp = compat.array_namespace(res.r)
    gy, grm, grv = dy
    r, zh, gw, G = res.r, res.zh, res.gw, res.G
    cdt = r.dtype
    N = res.shape[0]
    g3 = xp.reshape(compat.cast(gy, cdt, xp), (N, G, -1))
    dgw = None if res.gdts[0] is None else compat.cast(xp.sum(g3 * zh, axis=(0, 2)), res.gdts[0], xp)
    dgb = None if res.gdts[1] is None else compat.cast(xp.sum(g3, axis=(0, 2)), res.gdts[1], xp)
    gh = g3 if gw is None else g3 * gw
    dz = r * (gh - xp.mean(gh, axis=-1, keepdims=True) - zh * xp.mean(gh * zh, axis=-1, keepdims=True))
    dz = xp.reshape(dz, res.shape)
    dx, drm, drv, dgam, dbet, _ = _bn_bwd_core(bres, dz, grm, grv, xp)
    return (compat.cast(dx, bres.dtype, xp), compat.cast(drm, bres.rmdt, xp), compat.cast(drv, bres.rvdt, xp),
            compat.cast(dgam, bres.wdt, xp), compat.cast(dbet, bres.bdt, xp), dgw, dgb)


vjp(batch_channel_norm, batch_channel_norm_fwd, batch_channel_norm_bwd, validate=True)


# ---------------------------------------------------------------------------------------------- power_norm
class PowerNormRes(NamedTuple):
    bs: tuple
    red: tuple
    c: int
    n: int
    training: bool
    backward: str
    g: Any
    ab: float
    af: float
    st: int
    wu: int
    dts: tuple
    grad_ema: Any
    r: Any
    z: Any
    use_batch: bool
    xc: Any = None
    rb: Any = None
    dphi: float = 0.0


def _pn_example(rng, dtype):
    x = rng.standard_normal((4, 2, 3)).astype(dtype)
    return (x, (0.5 + rng.random(3)).astype(dtype), (0.1 * rng.standard_normal(3)).astype(dtype)), {"step": 2}


@public(x=Float(min_ndim=1), running_phi=Float("c", sign="nonnegative"), grad_ema=Float("c", **_CH),
        weight=Float("c", **_CH), bias=Float("c", **_CH), step=Int(1), training=Bool(), warmup_iters=Int(0),
        alpha_fwd=Probability(), alpha_bkw=Probability(), eps=Positive(), axis=Axis("x"),
        backward=Choice(("paper", "exact")), sizes=_SIZES, example=_pn_example)
def power_norm(x: Array, running_phi: Array, grad_ema: Array | None = None, weight: Array | None = None,
               bias: Array | None = None, *, step: int, training: bool = True, warmup_iters: int = 10000,
               alpha_fwd: float = 0.9, alpha_bkw: float = 0.9, eps: float = 1e-5, axis: int = -1,
               backward: str = "paper") -> tuple[Array, Array]:
    r"""PowerNorm: batch normalization by the quadratic mean with running statistics in forward and backward.

    .. math::

        \psi_c^2 = \operatorname{mean}(x_c^2), \qquad
        y = \gamma \frac{x}{\sqrt{\psi^2 + \epsilon}} + \beta \ \ (\text{warm-up}), \qquad
        y = \gamma \frac{x}{\sqrt{\phi_{\mathrm{run}} + \epsilon}} + \beta \ \ (\text{afterwards})

    Training step ``step`` (1-based), per channel ``c`` over every other axis::

        psi2_c = mean(x_c^2)
        z = x / sqrt(psi2 + eps)          if step <= warmup_iters
            x / sqrt(running_phi + eps)   otherwise
        y = weight z + bias
        phi' = running_phi (step-1)/step + psi2/step     (only while step < warmup_iters)
        new_running_phi = alpha_fwd phi' + (1 - alpha_fwd) psi2

    Backward (``backward="paper"``, the official code's "approximate backprop")::

        g_hat = g weight - (1 - alpha_bkw) grad_ema z
        dx = g_hat / sqrt(psi2 + eps)
        new_grad_ema = grad_ema + mean(g_hat z)

    This is not the gradient of the forward but a state-carrying rule: the updated ``grad_ema`` is returned in
    the **cotangent slot of grad_ema** (read ``grad_ema.grad`` in torch, the grad of that argument in JAX), not
    as a gradient.  In torch pass a fresh leaf with ``requires_grad=True`` each step (``.grad`` accumulates), and
    use the output once: a slot reached by two paths of the graph is summed.  ``backward="exact"`` gives the true
    VJP of the forward instead (statistics differentiated during warm-up, the running statistic a constant
    afterwards), and a zero grad_ema slot.

    Shen, Yao, Gholami, Mahoney & Keutzer (2020), "PowerNorm: Rethinking Batch Normalization in Transformers";
    official code ``sIncerass/powernorm`` (``MaskPowerNorm``).  The per-token ``GroupScaling1D`` that the official
    layer applies first is not part of this function (compose it with an RMS normalization), and padding masks
    are not supported (select the non-padded tokens first).

    Parameters
    ----------
    x : array (..., C, ...)
        Channel axis ``axis`` (default last, the (T, B, C) layout of the code).
    running_phi : array (C,)
        Running quadratic mean (init ones).
    grad_ema : array (C,), optional
        The backward's running statistic Gamma (init zeros); required for ``backward="paper"`` in training.
    weight, bias : array (C,), optional
    step : int >= 1
        The current iteration (the code's ``iters`` after its increment).
    training : bool
        False: ``y = weight x / sqrt(running_phi + eps) + bias``, running_phi unchanged.
    warmup_iters : int
        Default 10000 (the class default).
    alpha_fwd, alpha_bkw : float
        Default 0.9.
    eps : float
    axis : int
    backward : {"paper", "exact"}

    Returns
    -------
    y, new_running_phi

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((5, 2, 4))
    >>> y, phi = power_norm(x, np.ones(4), np.zeros(4), step=1)
    >>> y.shape, phi.shape
    ((5, 2, 4), (4,))
    """
    return power_norm_fwd(x, running_phi, grad_ema, weight, bias, step=step, training=training,
                          warmup_iters=warmup_iters, alpha_fwd=alpha_fwd, alpha_bkw=alpha_bkw, eps=eps, axis=axis,
                          backward=backward)[0]


def power_norm_fwd(x, running_phi, grad_ema=None, weight=None, bias=None, *, step, training=True,
                   warmup_iters=10000, alpha_fwd=0.9, alpha_bkw=0.9, eps=1e-5, axis=-1, backward="paper"):
    xp = compat.array_namespace(x, running_phi, grad_ema, weight, bias)
    c = x.shape[axis]
    _check_vecs(c, running_phi=running_phi, grad_ema=grad_ema, weight=weight, bias=bias)
    if backward == "paper" and training and grad_ema is None:
        raise ValueError("grad_ema is required for backward='paper' in training (init: zeros(C))")
    st, wu, af, ab, eps = step, warmup_iters, float(alpha_fwd), float(alpha_bkw), float(eps)
    cdt = compat.compute_dtype(x, xp)
    xc = compat.cast(x, cdt, xp)
    nd = x.ndim
    bs, red = _bshape(nd, axis, c), _red(nd, axis)
    n = compat.size(x) // c
    phi = compat.cast(running_phi, cdt, xp)
    g = _vec(xp, weight, bs, cdt)
    f = dict(bs=bs, red=red, c=c, n=n, training=training, backward=backward, g=g, ab=ab, af=af, st=st, wu=wu,
             dts=(x.dtype, running_phi.dtype, _dtype(grad_ema), _dtype(weight), _dtype(bias)),
             grad_ema=compat.cast(grad_ema, cdt, xp))
    if training:
        ps, sc = var_scaled(xc, red, xp)       # psi2 = mean(x^2) = ps sc^2
        rb = rstd_of(ps, sc, eps, xp)
        use_batch = st <= wu
        r = rb if use_batch else 1.0 / xp.sqrt(xp.reshape(phi, bs) + eps)
        z = xc * r
        psi_v = xp.reshape(ps * sc * sc, (c,))
        new = phi
        if st < wu:
            new = new * ((st - 1) / st) + psi_v / st
        new = af * new + (1 - af) * psi_v
        dphi = af / st * (1.0 if st < wu else 0.0) + (1 - af)   # d new_phi / d psi
        f.update(xc=xc, rb=rb, r=r, z=z, use_batch=use_batch, dphi=dphi)
    else:
        r = 1.0 / xp.sqrt(xp.reshape(phi, bs) + eps)
        z = xc * r
        new = phi
        f.update(r=r, z=z, use_batch=False)
    y = z if g is None else z * g
    if bias is not None:
        y = y + _vec(xp, bias, bs, cdt)
    new = compat.cast(new, running_phi.dtype, xp)
    if training:
        check_running_stat(new, "running_phi", x, "quadratic mean", running_phi)
    return (compat.cast(y, x.dtype, xp), new), PowerNormRes(**f)


def power_norm_bwd(res: PowerNormRes, dy):
    red, bs, c, n = res.red, res.bs, res.c, res.n
    gy, gphi = dy
    z, r, g = res.z, res.r, res.g
    xp = compat.array_namespace(z)
    gy = compat.cast(gy, z.dtype, xp)
    dts = res.dts
    gh = gy if g is None else gy * g
    dgam = None if dts[3] is None else xp.reshape(_sum(xp, gy * z, red), (c,))
    dbet = None if dts[4] is None else xp.reshape(_sum(xp, gy, red), (c,))
    dge = None
    if not res.training:
        dx = gh * r
        dphi = xp.reshape(_sum(xp, gh * z, red) * (-0.5) * r * r, (c,))
        if gphi is not None:
            dphi = dphi + compat.cast(gphi, z.dtype, xp)
        dge = None if dts[2] is None else xp.zeros_like(res.grad_ema)
        return tuple(compat.cast(a, t, xp) for a, t in zip((dx, dphi, dge, dgam, dbet), dts))
    gp = None if gphi is None else xp.reshape(compat.cast(gphi, z.dtype, xp), bs)
    if res.backward == "paper":
        ge = xp.reshape(res.grad_ema, bs)
        ag = gh - (1 - res.ab) * ge * z
        dge = xp.reshape(ge + xp.mean(ag * z, axis=red, keepdims=True), (c,))
        dx = ag * res.rb
    else:
        if res.use_batch:
            dx = r * (gh - z * xp.mean(gh * z, axis=red, keepdims=True))
        else:
            dx = gh * r
        if gp is not None:
            dx = dx + gp * res.dphi * 2.0 * res.xc / n
        if dts[2] is not None:
            dge = xp.zeros_like(res.grad_ema)
    # running_phi: used by the forward after warm-up, and linearly by the update
    st, wu, af = res.st, res.wu, res.af
    dphi = xp.zeros((c,), dtype=z.dtype)
    if not res.use_batch:
        dphi = dphi + xp.reshape(_sum(xp, gh * z, red) * (-0.5) * r * r, (c,))
    if gp is not None:
        dphi = dphi + af * ((st - 1) / st if st < wu else 1.0) * xp.reshape(gp, (c,))
    return tuple(compat.cast(a, t, xp) for a, t in zip((dx, dphi, dge, dgam, dbet), dts))


vjp(power_norm, power_norm_fwd, power_norm_bwd, skip_check_argnums=(0, 2), validate=True)


# ---------------------------------------------------------------------------------------------- unified_norm
class UnifiedNormRes(NamedTuple):
    bs: tuple
    red: tuple
    c: int
    n: int
    training: bool
    backward: str
    g: Any
    m: float
    st: int
    wu: int
    eps: float
    dts: tuple
    bx_shape: Any
    bg_shape: Any
    z: Any
    rs: Any
    xc: Any = None
    var: Any = None
    x2: Any = None
    gm: Any = None
    use_x2: Any = None
    skipf: Any = None
    oh: Any = None
    buf_new: Any = None
    W: int = 0
    rr: Any = None
    early: bool = False
    ema: Any = None
    bgz: Any = None


def _onehot_row(xp, W, k, dtype, like):
    """(W, 1) column with a one at the slot ``k % W`` of a window of W past batches."""
    return xp.reshape(compat.cast(compat.arange(W, like=like) == (k % W), dtype, xp), (W, 1))


def unified_norm_fwd(x, running_var, ema_gz=None, buffer_x2=None, buffer_gz=None, weight=None, bias=None, *, step,
                     training=True, warmup_iters=4000, outlier_filtration=False, eps=1e-5, momentum=0.9, axis=-1,
                     backward="paper"):
    xp = compat.array_namespace(x, running_var, ema_gz, buffer_x2, buffer_gz, weight, bias)
    ax = axis
    c = x.shape[ax]
    _check_vecs(c, running_var=running_var, ema_gz=ema_gz, weight=weight, bias=bias)
    for a, nm in ((buffer_x2, "buffer_x2"), (buffer_gz, "buffer_gz")):
        if a is not None and a.shape[1] != c:
            raise ValueError(f"{nm} has shape {tuple(a.shape)}, expected (window, {c}) (C = x.shape[axis])")
    st, wu, m, eps = step, warmup_iters, float(momentum), float(eps)
    if training and buffer_x2 is None:
        raise ValueError("buffer_x2 is required in training (init: zeros((window, C)), window 4)")
    if training and backward == "paper" and (ema_gz is None or buffer_gz is None):
        raise ValueError("ema_gz and buffer_gz are required for backward='paper' in training (init zeros)")
    cdt = compat.compute_dtype(x, xp)
    xc = compat.cast(x, cdt, xp)
    nd = x.ndim
    bs, red = _bshape(nd, ax, c), _red(nd, ax)
    n = compat.size(x) // c
    rv = compat.cast(running_var, cdt, xp)
    g = _vec(xp, weight, bs, cdt)
    dts = (x.dtype, running_var.dtype, None if ema_gz is None else ema_gz.dtype,
           None if buffer_x2 is None else buffer_x2.dtype, None if buffer_gz is None else buffer_gz.dtype,
           None if weight is None else weight.dtype, None if bias is None else bias.dtype)
    f = dict(bs=bs, red=red, c=c, n=n, training=training, backward=backward, g=g, m=m, st=st, wu=wu,
             eps=eps, dts=dts, bx_shape=None if buffer_x2 is None else tuple(buffer_x2.shape),
             bg_shape=None if buffer_gz is None else tuple(buffer_gz.shape))
    if not training:
        r0 = 1.0 / xp.sqrt(xp.reshape(rv, bs) + eps)
        z = xc * r0
        y = z if g is None else z * g
        if bias is not None:
            y = y + _vec(xp, bias, bs, cdt)
        f.update(z=z, rs=r0)
        return (compat.cast(y, x.dtype, xp), running_var, buffer_x2), UnifiedNormRes(**f)
    buf = compat.cast(buffer_x2, cdt, xp)
    W = buf.shape[0]
    x2 = xp.mean(xc * xc, axis=red)                                  # (C,)
    oh = _onehot_row(xp, W, st, cdt, buf)
    # outlier filtration: variance (unbiased, over all entries) of sqrt(buffer) recorded before the insertion
    sq = xp.sqrt(buf)
    nb = compat.size(buf)
    rec = xp.sum((sq - xp.mean(sq)) ** 2) / max(nb - 1, 1)
    buf_x = buf * (1 - oh) + oh * x2[None, :]
    static_skip = W <= 1
    if st >= wu and outlier_filtration and not static_skip:
        am = xp.mean(buf_x, axis=0)
        xpos = buf_x > 0
        gm_ = xp.where(xp.all(xpos, axis=0),
                       xp.exp(xp.mean(xp.log(xp.where(xpos, buf_x, xp.ones_like(buf_x))), axis=0)), 0.0)
        skip = xp.any((am - gm_) > rec * W)
    else:
        skip = compat.full((), static_skip, like=buf, dtype=xp.bool)
    skipf = compat.cast(skip, cdt, xp)
    buf_new = buf_x * (1 - skipf) + skipf * (buf * (1 - oh) + oh * rv[None, :])
    early = st <= W or st < wu
    bpos = buf_new > 0          # a zero entry (the zero-initialised window) makes the geometric mean 0
    gm = xp.where(xp.all(bpos, axis=0),
                  xp.exp(xp.mean(xp.log(xp.where(bpos, buf_new, xp.ones_like(buf_new))), axis=0)), 0.0)
    use_x2 = skipf if not early else xp.ones_like(skipf)
    var = use_x2 * x2 + (1 - use_x2) * gm
    ratio = xp.sqrt(var + eps) / xp.sqrt(rv + eps)
    if st <= max(1000, wu):
        rr = xp.ones_like(ratio)
    else:
        rr = skipf + (1 - skipf) * xp.clip(ratio, 0.2, 5.0)
    rs = 1.0 / xp.sqrt(var + eps)
    z = xc * xp.reshape(rs, bs)
    new_rv = m * rv + (1 - m) * var
    y = z if g is None else z * g
    if bias is not None:
        y = y + _vec(xp, bias, bs, cdt)
    f.update(xc=xc, z=z, rs=rs, var=var, x2=x2, gm=gm, use_x2=use_x2, skipf=skipf, oh=oh, buf_new=buf_new, W=W,
             rr=rr, early=early, ema=compat.cast(ema_gz, cdt, xp), bgz=compat.cast(buffer_gz, cdt, xp))
    new_rv = compat.cast(new_rv, running_var.dtype, xp)
    buf_new = compat.cast(buf_new, buffer_x2.dtype, xp)
    check_running_stat(buf_new, "buffer_x2", x, "second moment", running_var, buffer_x2)
    return (compat.cast(y, x.dtype, xp), new_rv, buf_new), UnifiedNormRes(**f)


def _un_example(rng, dtype):
    x = rng.standard_normal((4, 2, 3)).astype(dtype)
    rv = (0.5 + rng.random(3)).astype(dtype)
    ema = (0.1 * rng.standard_normal(3)).astype(dtype)
    bx = (0.5 + rng.random((4, 3))).astype(dtype)
    bg = (0.1 * rng.standard_normal((4, 3))).astype(dtype)
    return (x, rv, ema, bx, bg), {"step": 2}


@public(x=Float(min_ndim=1), running_var=Float("c", sign="nonnegative"), ema_gz=Float("c", **_CH),
        buffer_x2=Float("w c", sign="nonnegative", **_CH), buffer_gz=Float("v c", **_CH), weight=Float("c", **_CH),
        bias=Float("c", **_CH), step=Int(1), training=Bool(), warmup_iters=Int(0), outlier_filtration=Bool(),
        eps=Positive(), momentum=Probability(), axis=Axis("x"), backward=Choice(("paper", "exact")),
        sizes={"c": 3, "w": 4, "v": 4}, example=_un_example)
def unified_norm(x: Array, running_var: Array, ema_gz: Array | None = None, buffer_x2: Array | None = None,
                 buffer_gz: Array | None = None, weight: Array | None = None, bias: Array | None = None, *, step: int,
                 training: bool = True, warmup_iters: int = 4000, outlier_filtration: bool = False, eps: float = 1e-5,
                 momentum: float = 0.9, axis: int = -1, backward: str = "paper") -> tuple[Array, Array, Array]:
    r"""Unified Normalization (UN): batch normalization by the uncentred second moment, smoothed over a window of
    past batches by a geometric mean, with a matching smoothed backward; foldable into linear layers at inference.

    .. math::

        y = \gamma \frac{x}{\sqrt{v + \epsilon}} + \beta, \qquad
        v = \Bigl(\prod_{w=1}^{W} \operatorname{mean}(x_{(w)}^2)\Bigr)^{1/W}
          = \exp\Bigl(\frac1W \sum_{w=1}^{W} \log \operatorname{mean}(x_{(w)}^2)\Bigr),

    the geometric mean of the uncentred second moments of the last W batches (the current batch's
    :math:`\operatorname{mean}(x^2)` alone early in training or when a batch is skipped).

    Training step ``step`` (1-based), per channel over every axis but ``axis`` (window ``W = len(buffer_x2)``)::

        x2 = mean(x^2);  buffer_x2[step % W] = x2
        skip = W <= 1, or (outlier_filtration and step >= warmup_iters and any channel has
               AM(buffer) - GM(buffer) > W * var(sqrt(old buffer)))   -> then buffer slot = running_var
        var  = x2                          if step <= W or step < warmup_iters or skip
               GM(buffer_x2)  = exp(mean_w log buffer_x2)     otherwise
        y = weight * x / sqrt(var + eps) + bias
        new_running_var = momentum * running_var + (1 - momentum) * var

    Backward (``backward="paper"``, the official code's gradient compensation), with
    ``r = clip(sqrt(var + eps) / sqrt(running_var + eps), 1/5, 5)`` (1 while ``step <= max(1000, warmup)`` or
    skipped)::

        g' = g * weight * r;  gz = mean(g' z);  buffer_gz[step % Wb] = gz   (ema_gz when skipped)
        mean_gz = gz  (early / skipped)  or  mean_w buffer_gz
        new_ema_gz = momentum * ema_gz + (1 - momentum) * mean_gz
        dx = (g' - c z) / sqrt(var + eps),  c = mean_gz if skipped else new_ema_gz;   dweight = sum(g r z)

    This rule is not the gradient of the forward: the updated ``ema_gz`` and ``buffer_gz`` are returned in
    **their own cotangent slots** (as :func:`power_norm` does with grad_ema; same caveats: fresh leaves with
    ``requires_grad=True`` in torch, one use of the output), not as gradients.
    ``backward="exact"`` gives the true VJP of the forward (through x2 and the geometric mean) and zero slots.
    Running_var and buffer_x2 get their exact cotangents in both modes.

    Yang, Sun, Huang, Zhu, Ouyang & Shen (2022), "Unified Normalization for Accelerating and Stabilizing
    Transformers"; official code ``hikvision-research/Unified-Normalization`` (``UN1d``, ``UN2dFunction``),
    whose defaults are used: window 4, warmup 4000, momentum 0.9, eps 1e-5, outlier filtration off.  The
    outlier decision is made with array operations, so the function also runs under ``jax.jit``.  Padding masks
    are not supported (select the real tokens first).  Eval: ``y = weight x / sqrt(running_var + eps) + bias``.

    Parameters
    ----------
    x : array (..., C, ...)
        Channel axis ``axis`` (default last: the (B, N, C) layout of UN1d).
    running_var : array (C,)
        Init ones.
    ema_gz : array (C,), optional
        Init zeros; needed by ``backward="paper"``.
    buffer_x2 : array (W, C)
        Forward window (init zeros); required in training.
    buffer_gz : array (Wb, C), optional
        Backward window (init zeros).
    weight, bias : array (C,), optional
    step : int >= 1
    training, warmup_iters, outlier_filtration, eps, momentum, axis, backward
        See above.

    Returns
    -------
    y, new_running_var, new_buffer_x2

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((2, 5, 3))
    >>> y, rv, buf = unified_norm(x, np.ones(3), np.zeros(3), np.zeros((4, 3)), np.zeros((4, 3)), step=1)
    >>> buf.shape
    (4, 3)
    """
    return unified_norm_fwd(x, running_var, ema_gz, buffer_x2, buffer_gz, weight, bias, step=step,
                            training=training, warmup_iters=warmup_iters, outlier_filtration=outlier_filtration,
                            eps=eps, momentum=momentum, axis=axis, backward=backward)[0]


def unified_norm_bwd(res: UnifiedNormRes, dy):
    red, bs, c, n, dts = res.red, res.bs, res.c, res.n, res.dts
    gy, grv, gbuf = dy
    z, rs, g = res.z, res.rs, res.g
    xp = compat.array_namespace(z)
    cdt = z.dtype
    gy = compat.cast(gy, cdt, xp)
    gh = gy if g is None else gy * g
    db = None if dts[6] is None else xp.reshape(_sum(xp, gy, red), (c,))
    if not res.training:
        dx = gh * xp.reshape(rs, bs)
        drv = xp.reshape(_sum(xp, gh * z, red), (c,)) * (-0.5) * rs * rs
        if grv is not None:
            drv = drv + compat.cast(grv, cdt, xp)
        dw = None if dts[5] is None else xp.reshape(_sum(xp, gy * z, red), (c,))
        dge = None if dts[2] is None else xp.zeros((c,), dtype=cdt)
        dbx = None
        if dts[3] is not None:
            dbx = xp.zeros(res.bx_shape, dtype=cdt) if gbuf is None else gbuf
        dbg = None if dts[4] is None else xp.zeros(res.bg_shape, dtype=cdt)
        return tuple(compat.cast(a, t, xp) for a, t in zip((dx, drv, dge, dbx, dbg, dw, db), dts))
    m, W, oh, skipf, use_x2 = res.m, res.W, res.oh, res.skipf, res.use_x2
    var, x2, gm, buf_new, xc = res.var, res.x2, res.gm, res.buf_new, res.xc
    # ---- exact cotangents (always used for running_var / buffer_x2, and for x / weight in "exact")
    dvar = xp.reshape(_sum(xp, gh * z, red), (c,)) * (-0.5) * rs * rs
    if grv is not None:
        dvar = dvar + (1 - m) * compat.cast(grv, cdt, xp)
    # var = use_x2 * x2 + (1 - use_x2) * GM(buf_new);  d GM / d buf_new[w] = GM / (W buf_new[w])
    pos = buf_new > 0
    safe = xp.where(pos, buf_new, xp.ones_like(buf_new))
    dbn = xp.where(pos, (1 - use_x2)[None] * dvar[None, :] * gm[None, :] / (W * safe), xp.zeros_like(buf_new))
    if gbuf is not None:
        dbn = dbn + compat.cast(gbuf, cdt, xp)
    # buf_new = (1 - oh) buf + oh * (skip ? running_var : x2)
    slot = xp.sum(dbn * oh, axis=0)                        # cotangent of the inserted row
    dx2 = use_x2 * dvar + (1 - skipf) * slot
    drv = skipf * slot + (m * compat.cast(grv, cdt, xp) if grv is not None else 0.0)
    dbuf = dbn * (1 - oh)
    dge = dbg = None
    if res.backward == "exact":
        dx = gh * xp.reshape(rs, bs) + xp.reshape(dx2, bs) * 2.0 * xc / n
        dw = None if dts[5] is None else xp.reshape(_sum(xp, gy * z, red), (c,))
        if dts[2] is not None:
            dge = xp.zeros((c,), dtype=cdt)
        if dts[4] is not None:
            dbg = xp.zeros_like(res.bgz)
    else:
        rr = res.rr
        rrb = xp.reshape(rr, bs)
        gp = gh * rrb
        gz = xp.reshape(_sum(xp, gp * z, red), (c,)) / n
        ema, bgz = res.ema, res.bgz
        Wb = bgz.shape[0]
        ohb = _onehot_row(xp, Wb, res.st, cdt, bgz)
        ins = skipf * ema + (1 - skipf) * gz
        dbg = bgz * (1 - ohb) + ohb * ins[None, :]
        early_b = res.st <= Wb or res.st < res.wu
        mean_gz = gz if early_b else skipf * gz + (1 - skipf) * xp.mean(dbg, axis=0)
        dge = ema * m + (1 - m) * mean_gz
        coef = skipf * mean_gz + (1 - skipf) * dge
        dx = (gp - xp.reshape(coef, bs) * z) * xp.reshape(rs, bs)
        dw = None if dts[5] is None else xp.reshape(_sum(xp, gy * rrb * z, red), (c,))
    return tuple(compat.cast(a, t, xp) for a, t in zip((dx, drv, dge, dbuf, dbg, dw, db), dts))


vjp(unified_norm, unified_norm_fwd, unified_norm_bwd, skip_check_argnums=(0, 2, 4, 5), validate=True)
