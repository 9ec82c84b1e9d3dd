"""Batch-statistics normalization: batch_norm (torch semantics, optional per-sample weights), alpha_batch_norm,
batch_channel_norm, power_norm and unified_norm.

All running statistics are explicit: they go in as arrays and the updated values come out as new arrays; nothing
is mutated.  Statistics are computed per channel (``axis``) over every other axis.
"""
from __future__ import annotations

from .._lib import compat, ops, validate
from .._lib.dispatch import Dispatcher

__all__ = ["batch_norm", "alpha_batch_norm", "batch_channel_norm", "power_norm", "unified_norm"]


# ---------------------------------------------------------------------------------------------- helpers
def _bshape(ndim: int, axis: int, c: int) -> tuple:
    s = [1] * ndim
    s[axis] = c
    return tuple(s)


def _red(ndim: int, axis: int) -> tuple:
    return tuple(i for i in range(ndim) if i != axis)


def _as(xp, a, dt):
    return None if a is None else (a if a.dtype == dt else xp.astype(a, dt))


def _vec(xp, a, shape, dt):
    """A per-channel vector (C,) cast to ``dt`` and reshaped to broadcast against x."""
    return None if a is None else xp.reshape(_as(xp, a, dt), shape)


def _check_vec(a, name: str, c: int):
    if a is None:
        return
    validate.check_float(a, name)
    if tuple(a.shape) != (c,):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, expected ({c},) (one entry per channel)")


def _check_common(x, axis, eps, name="x", min_ndim=2):
    validate.check_float(x, name)
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions (batch, channels, ...), "
                         f"got shape {tuple(x.shape)}")
    ax = validate.check_axis(axis, x.ndim, "axis")
    validate.check_positive(eps, "eps")
    return ax


def _sum(xp, a, red, keep=True):
    return xp.sum(a, axis=red, keepdims=keep)


# ---------------------------------------------------------------------------------------------- batch_norm
def _bn_validate(x, running_mean, running_var, weight, bias, sample_weight, training, momentum, eps, axis):
    xp = validate.check_same_namespace(x=x, running_mean=running_mean, running_var=running_var, weight=weight,
                                       bias=bias, sample_weight=sample_weight)
    ax = _check_common(x, axis, eps)
    c = x.shape[ax]
    for a, nm in ((running_mean, "running_mean"), (running_var, "running_var"), (weight, "weight"),
                  (bias, "bias")):
        _check_vec(a, nm, c)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {type(training).__name__}")
    if momentum is None:
        raise ValueError("momentum=None (cumulative average) is not supported: pass momentum=1/num_batches")
    validate.check_probability(momentum, "momentum")
    if not training and running_mean is None:
        raise ValueError("running_mean and running_var are required when training=False")
    if sample_weight is not None:
        validate.check_float(sample_weight, "sample_weight")
        if ax == 0:
            raise ValueError("sample_weight needs a batch axis 0 distinct from the channel axis (axis=0 given)")
        if tuple(sample_weight.shape) != (x.shape[0],):
            raise ValueError(f"sample_weight has shape {tuple(sample_weight.shape)}, expected ({x.shape[0]},) "
                             "(one weight per sample along axis 0)")
        if compat.is_concrete(sample_weight):
            if float(xp.min(sample_weight)) < 0:
                raise ValueError("sample_weight must be non-negative")
            if not float(xp.sum(sample_weight)) > 0:
                raise ValueError("sample_weight must have a positive sum")
    n = compat.size(x) // max(c, 1)
    if training and n <= 1:
        raise ValueError(f"x has {n} value per channel: batch statistics need more than 1 (shape {tuple(x.shape)})")
    validate.check_nonempty(x, "x")
    return xp, ax


def _bn_fwd(x, running_mean, running_var, weight, bias, sample_weight, *, training, momentum, eps, axis,
            unbiased=True):
    xp, ax = _bn_validate(x, running_mean, running_var, weight, bias, sample_weight, training, momentum, eps, axis)
    cdt = compat.compute_dtype(x, xp)
    xc = _as(xp, x, cdt)
    nd, c = x.ndim, x.shape[ax]
    bs, red = _bshape(nd, ax, c), _red(nd, ax)
    n = compat.size(x) // c
    g = _vec(xp, weight, bs, cdt)
    b = _vec(xp, bias, bs, cdt)
    res = dict(xp=xp, ax=ax, bs=bs, red=red, n=n, training=training, m=float(momentum), dtype=x.dtype,
               has_w=weight is not None, has_b=bias is not None, has_sw=sample_weight is not None,
               has_rs=running_mean is not None, g=g, unbiased=bool(unbiased),
               wdt=None if weight is None else weight.dtype, bdt=None if bias is None else bias.dtype,
               rmdt=None if running_mean is None else running_mean.dtype,
               rvdt=None if running_var is None else running_var.dtype,
               swdt=None if sample_weight is None else sample_weight.dtype)
    if training:
        if sample_weight is None:
            om = 1.0 / n
            mu = xp.mean(xc, axis=red, keepdims=True)
            d = xc - mu
            var = xp.mean(d * d, axis=red, keepdims=True)
            corr = n / (n - 1) if unbiased else 1.0
            wn = None
        else:
            mper = n // x.shape[0]
            sw = _as(xp, sample_weight, cdt)
            ssum = xp.sum(sw)
            wn = sw / ssum
            om = xp.reshape(wn / mper, (x.shape[0],) + (1,) * (nd - 1))
            mu = _sum(xp, om * xc, red)
            d = xc - mu
            var = _sum(xp, om * d * d, red)
            corr = 1.0 / (1.0 - xp.sum(wn * wn) / mper) if unbiased else 1.0
            res.update(ssum=ssum, mper=mper)
        r = 1.0 / xp.sqrt(var + eps)
        xh = d * r
        res.update(om=om, d=d, var=var, corr=corr, wn=wn, r=r, xh=xh, xc=xc)
        if running_mean is not None:
            m = float(momentum)
            rm = (1 - m) * _as(xp, running_mean, cdt) + m * xp.reshape(mu, (c,))
            rv = (1 - m) * _as(xp, running_var, cdt) + m * corr * xp.reshape(var, (c,))
            rm, rv = _as(xp, rm, running_mean.dtype), _as(xp, rv, running_var.dtype)
        else:
            rm = rv = None
    else:
        rmc = xp.reshape(_as(xp, running_mean, cdt), bs)
        r = 1.0 / xp.sqrt(xp.reshape(_as(xp, running_var, cdt), bs) + eps)
        d = xc - rmc
        xh = d * r
        rm, rv = running_mean, running_var
        res.update(d=d, r=r, xh=xh)
    y = xh if g is None else xh * g
    if b is not None:
        y = y + b
    return (_as(xp, y, x.dtype), rm, rv), res


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, sample_weight=None, *,
               training=True, momentum=0.1, eps=1e-5, axis=1, unbiased=True):
    r"""Batch normalization with torch's exact semantics, explicit running statistics and optional sample weights.

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
    return _bn_dispatch(x, running_mean, running_var, weight, bias, sample_weight, training=training,
                        momentum=momentum, eps=eps, axis=axis, unbiased=unbiased)


_bn_dispatch = Dispatcher("norm.batch_norm")


@_bn_dispatch.generic
def _bn_generic(x, running_mean, running_var, weight, bias, sample_weight, *, training, momentum, eps, axis,
                unbiased):
    return _bn_fwd(x, running_mean, running_var, weight, bias, sample_weight, training=training,
                   momentum=momentum, eps=eps, axis=axis, unbiased=unbiased)[0]


def _bn_numba_ok(x, running_mean, running_var, weight, bias, sample_weight, **kw):
    import numpy as np

    if sample_weight is not None or not compat.is_numpy(x) or x.dtype not in (np.float32, np.float64):
        return False
    return all(a is None or (compat.is_numpy(a) and a.dtype in (np.float32, np.float64))
               for a in (running_mean, running_var, weight, bias))


@_bn_dispatch.numba(when=_bn_numba_ok)
def _bn_numba(x, running_mean, running_var, weight, bias, sample_weight, *, training, momentum, eps, axis,
              unbiased):
    _, ax = _bn_validate(x, running_mean, running_var, weight, bias, sample_weight, training, momentum, eps, axis)
    from .._numba.norm_extra import batch_norm_forward

    return batch_norm_forward(x, running_mean, running_var, weight, bias, training, float(momentum), float(eps), ax,
                              bool(unbiased))


def batch_norm_fwd(x, running_mean=None, running_var=None, weight=None, bias=None, sample_weight=None, *,
                   training=True, momentum=0.1, eps=1e-5, axis=1, unbiased=True):
    return _bn_fwd(x, running_mean, running_var, weight, bias, sample_weight, training=training,
                   momentum=momentum, eps=eps, axis=axis, unbiased=unbiased)


def _bn_bwd_core(res, gy, grm, grv):
    """Cotangents in the compute dtype: (dx, drm, drv, dweight, dbias, dsample_weight)."""
    xp, red, bs = res["xp"], res["red"], res["bs"]
    c = bs[res["ax"]]
    g = res["g"]
    xh = res["xh"]
    gh = gy if g is None else gy * g
    dgam = xp.reshape(_sum(xp, gy * xh, red), (c,)) if res["has_w"] else None
    dbet = xp.reshape(_sum(xp, gy, red), (c,)) if res["has_b"] else None
    r = res["r"]
    drm = drv = dsw = None
    if res["training"]:
        om, m = res["om"], res["m"]
        s1 = _sum(xp, gh, red)
        s2 = _sum(xp, gh * xh, red)
        dx = r * (gh - om * s1 - om * xh * s2)
        amu = -r * s1
        avar = -0.5 * r * r * s2
        if res["has_rs"]:
            grm_b = xp.zeros(bs, dtype=gy.dtype) if grm is None else xp.reshape(_as(xp, grm, gy.dtype), bs)
            grv_b = xp.zeros(bs, dtype=gy.dtype) if grv is None else xp.reshape(_as(xp, grv, gy.dtype), bs)
            dx = dx + om * (m * grm_b) + om * 2.0 * res["d"] * (m * res["corr"] * grv_b)
            amu = amu + m * grm_b
            avar = avar + m * res["corr"] * grv_b
            drm = None if grm is None else (1 - m) * grm
            drv = None if grv is None else (1 - m) * grv
        if res["has_sw"]:
            nb = res["xc"].shape[0]
            other = tuple(i for i in range(1, len(bs)))
            per = amu * res["xc"] + avar * res["d"] * res["d"]
            dwn = xp.reshape(xp.sum(per, axis=other), (nb,)) / res["mper"]
            wn = res["wn"]
            if res["has_rs"] and res["unbiased"]:
                # corr = 1/(1 - sum wn^2/M): d corr/d wn_i = corr^2 * 2 wn_i / M
                scal = xp.sum(m * grv_b * res["var"]) if grv is not None else 0.0
                dwn = dwn + scal * res["corr"] ** 2 * 2.0 * wn / res["mper"]
            dsw = (dwn - xp.sum(wn * dwn)) / res["ssum"]
    else:
        dx = gh * r
        drm = -xp.reshape(_sum(xp, gh * r, red), (c,))
        drv = xp.reshape(_sum(xp, gh * res["d"], red) * (-0.5) * r * r * r, (c,))
        if grm is not None:
            drm = drm + _as(xp, grm, gy.dtype)
        if grv is not None:
            drv = drv + _as(xp, grv, gy.dtype)
    return dx, drm, drv, dgam, dbet, dsw


def batch_norm_bwd(res, dy):
    xp = res["xp"]
    gy, grm, grv = dy
    cdt = res["xc"].dtype if "xc" in res else res["xh"].dtype
    gy = _as(xp, gy, cdt)
    dx, drm, drv, dgam, dbet, dsw = _bn_bwd_core(res, gy, grm, grv)
    return (_as(xp, dx, res["dtype"]), _as(xp, drm, res["rmdt"]), _as(xp, drv, res["rvdt"]),
            _as(xp, dgam, res["wdt"]), _as(xp, dbet, res["bdt"]), _as(xp, dsw, res["swdt"]))


ops.register("norm.batch_norm", batch_norm, batch_norm_fwd, batch_norm_bwd)


# ---------------------------------------------------------------------------------------------- alpha_batch_norm
def _abn_fwd(x, running_mean, running_var, weight=None, bias=None, *, alpha, unbiased=True, eps=1e-5, axis=1):
    xp = validate.check_same_namespace(x=x, running_mean=running_mean, running_var=running_var, weight=weight,
                                       bias=bias)
    ax = _check_common(x, axis, eps)
    c = x.shape[ax]
    if running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var are required (the source statistics)")
    for a, nm in ((running_mean, "running_mean"), (running_var, "running_var"), (weight, "weight"),
                  (bias, "bias")):
        _check_vec(a, nm, c)
    al = validate.check_probability(alpha, "alpha")
    validate.check_nonempty(x, "x")
    n = compat.size(x) // c
    if unbiased and n < 2 and al > 0:
        raise ValueError(f"x has {n} value per channel: the unbiased batch variance needs at least 2")
    k = n / (n - 1) if (unbiased and n > 1) else 1.0
    cdt = compat.compute_dtype(x, xp)
    xc = _as(xp, x, cdt)
    nd = x.ndim
    bs, red = _bshape(nd, ax, c), _red(nd, ax)
    mub = xp.mean(xc, axis=red, keepdims=True)
    db = xc - mub
    varb = xp.mean(db * db, axis=red, keepdims=True)
    rmc = xp.reshape(_as(xp, running_mean, cdt), bs)
    rvc = xp.reshape(_as(xp, running_var, cdt), bs)
    mu = (1 - al) * rmc + al * mub
    var = (1 - al) * rvc + (al * k) * varb
    r = 1.0 / xp.sqrt(var + eps)
    d = xc - mu
    xh = d * r
    g = _vec(xp, weight, bs, cdt)
    y = xh if g is None else xh * g
    if bias is not None:
        y = y + _vec(xp, bias, bs, cdt)
    res = dict(xp=xp, red=red, bs=bs, c=c, al=al, k=k, db=db, d=d, r=r, xh=xh, g=g, n=n,
               dts=(x.dtype, running_mean.dtype, running_var.dtype, None if weight is None else weight.dtype,
                    None if bias is None else bias.dtype))
    return _as(xp, y, x.dtype), res


def alpha_batch_norm(x, running_mean, running_var, weight=None, bias=None, *, alpha, unbiased=True, eps=1e-5,
                     axis=1):
    r"""alpha-BN: test-time batch normalization with statistics mixed between source and test batch.

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
    return _abn_fwd(x, running_mean, running_var, weight, bias, alpha=alpha, unbiased=unbiased, eps=eps,
                    axis=axis)[0]


def alpha_batch_norm_fwd(x, running_mean, running_var, weight=None, bias=None, *, alpha, unbiased=True, eps=1e-5,
                         axis=1):
    return _abn_fwd(x, running_mean, running_var, weight, bias, alpha=alpha, unbiased=unbiased, eps=eps, axis=axis)


def alpha_batch_norm_bwd(res, dy):
    xp, red, c, al, n, k = res["xp"], res["red"], res["c"], res["al"], res["n"], res["k"]
    r, xh, d, db, g = res["r"], res["xh"], res["d"], res["db"], res["g"]
    gy = _as(xp, dy, r.dtype)
    gh = gy if g is None else gy * g
    s1 = _sum(xp, gh, red)                     # dL/dmu = -r s1
    s2 = _sum(xp, gh * d, red)                 # dL/dvar = -r^3/2 s2
    dmu = -r * s1
    dvar = -0.5 * r * r * r * s2
    dx = gh * r + al * dmu / n + (al * k) * dvar * 2.0 * db / n
    drm = xp.reshape((1 - al) * dmu, (c,))
    drv = xp.reshape((1 - al) * dvar, (c,))
    dgam = None if g is None else xp.reshape(_sum(xp, gy * xh, red), (c,))
    dbet = None if res["dts"][4] is None else xp.reshape(_sum(xp, gy, red), (c,))
    dts = res["dts"]
    return (_as(xp, dx, dts[0]), _as(xp, drm, dts[1]), _as(xp, drv, dts[2]), _as(xp, dgam, dts[3]),
            _as(xp, dbet, dts[4]))


ops.register("norm.alpha_batch_norm", alpha_batch_norm, alpha_batch_norm_fwd, alpha_batch_norm_bwd)


# ---------------------------------------------------------------------------------------------- batch_channel_norm
def _bcn_fwd(x, running_mean=None, running_var=None, weight=None, bias=None, group_weight=None, group_bias=None,
             *, groups=32, training=True, momentum=0.1, eps=1e-5):
    validate.check_same_namespace(x=x, group_weight=group_weight, group_bias=group_bias)
    (z, rm, rv), bres = _bn_fwd(x, running_mean, running_var, weight, bias, None, training=training,
                                momentum=momentum, eps=eps, axis=1)
    xp = bres["xp"]
    G = validate.check_int(groups, "groups", low=1)
    C = x.shape[1]
    if C % G:
        raise ValueError(f"groups={G} must divide the number of channels {C} (x.shape[1])")
    for a, nm in ((group_weight, "group_weight"), (group_bias, "group_bias")):
        _check_vec(a, nm, G)
    cdt = compat.compute_dtype(x, xp)
    zc = _as(xp, z, cdt)
    N = x.shape[0]
    z3 = xp.reshape(zc, (N, G, -1))
    mu = xp.mean(z3, axis=-1, keepdims=True)
    dd = z3 - mu
    var = xp.mean(dd * dd, axis=-1, keepdims=True)
    r = 1.0 / xp.sqrt(var + eps)
    zh = dd * r
    gw = None if group_weight is None else xp.reshape(_as(xp, group_weight, cdt), (1, G, 1))
    y3 = zh if gw is None else zh * gw
    if group_bias is not None:
        y3 = y3 + xp.reshape(_as(xp, group_bias, cdt), (1, G, 1))
    y = _as(xp, xp.reshape(y3, tuple(x.shape)), x.dtype)
    res = dict(bres=bres, r=r, zh=zh, gw=gw, G=G, shape=tuple(x.shape),
               gdts=(None if group_weight is None else group_weight.dtype,
                     None if group_bias is None else group_bias.dtype))
    return (y, rm, rv), res


def batch_channel_norm(x, running_mean=None, running_var=None, weight=None, bias=None, group_weight=None,
                       group_bias=None, *, groups=32, training=True, momentum=0.1, eps=1e-5):
    r"""Batch-Channel Normalization: batch_norm (per-channel affine, running statistics) followed by group
    normalization over (C/G, spatial) per sample with a per-group affine.

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
    return _bcn_fwd(x, running_mean, running_var, weight, bias, group_weight, group_bias, groups=groups,
                    training=training, momentum=momentum, eps=eps)[0]


def batch_channel_norm_fwd(x, running_mean=None, running_var=None, weight=None, bias=None, group_weight=None,
                           group_bias=None, *, groups=32, training=True, momentum=0.1, eps=1e-5):
    return _bcn_fwd(x, running_mean, running_var, weight, bias, group_weight, group_bias, groups=groups,
                    training=training, momentum=momentum, eps=eps)


def batch_channel_norm_bwd(res, dy):
    bres = res["bres"]
    xp = bres["xp"]
    gy, grm, grv = dy
    r, zh, gw, G = res["r"], res["zh"], res["gw"], res["G"]
    cdt = r.dtype
    N = res["shape"][0]
    g3 = xp.reshape(_as(xp, gy, cdt), (N, G, -1))
    dgw = None if res["gdts"][0] is None else _as(xp, xp.sum(g3 * zh, axis=(0, 2)), res["gdts"][0])
    dgb = None if res["gdts"][1] is None else _as(xp, xp.sum(g3, axis=(0, 2)), res["gdts"][1])
    gh = g3 if gw is None else g3 * gw
    dz = r * (gh - xp.mean(gh, axis=-1, keepdims=True) - zh * xp.mean(gh * zh, axis=-1, keepdims=True))
    dz = xp.reshape(dz, res["shape"])
    dx, drm, drv, dgam, dbet, _ = _bn_bwd_core(bres, dz, grm, grv)
    return (_as(xp, dx, bres["dtype"]), _as(xp, drm, bres["rmdt"]), _as(xp, drv, bres["rvdt"]),
            _as(xp, dgam, bres["wdt"]), _as(xp, dbet, bres["bdt"]), dgw, dgb)


ops.register("norm.batch_channel_norm", batch_channel_norm, batch_channel_norm_fwd, batch_channel_norm_bwd)


# ---------------------------------------------------------------------------------------------- power_norm
def _pn_fwd(x, running_phi, grad_ema=None, weight=None, bias=None, *, step, training=True, warmup_iters=10000,
            alpha_fwd=0.9, alpha_bkw=0.9, eps=1e-5, axis=-1, backward="paper"):
    xp = validate.check_same_namespace(x=x, running_phi=running_phi, grad_ema=grad_ema, weight=weight, bias=bias)
    ax = _check_common(x, axis, eps, min_ndim=1)
    c = x.shape[ax]
    if running_phi is None:
        raise ValueError("running_phi is required (init: ones(C))")
    for a, nm in ((running_phi, "running_phi"), (grad_ema, "grad_ema"), (weight, "weight"), (bias, "bias")):
        _check_vec(a, nm, c)
    st = validate.check_int(step, "step", low=1)
    wu = validate.check_int(warmup_iters, "warmup_iters", low=0)
    af = validate.check_unit_interval(alpha_fwd, "alpha_fwd", closed_right=True)
    ab = validate.check_unit_interval(alpha_bkw, "alpha_bkw", closed_right=True)
    validate.check_in(backward, ("paper", "exact"), "backward")
    if backward == "paper" and training and grad_ema is None:
        raise ValueError("grad_ema is required for backward='paper' in training (init: zeros(C))")
    validate.check_nonempty(x, "x")
    cdt = compat.compute_dtype(x, xp)
    xc = _as(xp, x, cdt)
    nd = x.ndim
    bs, red = _bshape(nd, ax, c), _red(nd, ax)
    n = compat.size(x) // c
    phi = _as(xp, running_phi, cdt)
    g = _vec(xp, weight, bs, cdt)
    res = dict(xp=xp, bs=bs, red=red, c=c, n=n, training=training, backward=backward, g=g, ab=ab, af=af, st=st,
               wu=wu, dts=(x.dtype, running_phi.dtype, None if grad_ema is None else grad_ema.dtype,
                           None if weight is None else weight.dtype, None if bias is None else bias.dtype),
               grad_ema=None if grad_ema is None else _as(xp, grad_ema, cdt))
    if training:
        psi = xp.mean(xc * xc, axis=red, keepdims=True)
        rb = 1.0 / xp.sqrt(psi + eps)
        use_batch = st <= wu
        r = rb if use_batch else 1.0 / xp.sqrt(xp.reshape(phi, bs) + eps)
        z = xc * r
        psi_v = xp.reshape(psi, (c,))
        new = phi
        if st < wu:
            new = new * ((st - 1) / st) + psi_v / st
        new = af * new + (1 - af) * psi_v
        dphi = af / st * (1.0 if st < wu else 0.0) + (1 - af)   # d new_phi / d psi
        res.update(xc=xc, rb=rb, r=r, z=z, use_batch=use_batch, dphi=dphi)
    else:
        r = 1.0 / xp.sqrt(xp.reshape(phi, bs) + eps)
        z = xc * r
        new = phi
        res.update(r=r, z=z, use_batch=False)
    y = z if g is None else z * g
    if bias is not None:
        y = y + _vec(xp, bias, bs, cdt)
    return (_as(xp, y, x.dtype), _as(xp, new, running_phi.dtype)), res


def power_norm(x, running_phi, grad_ema=None, weight=None, bias=None, *, step, training=True, warmup_iters=10000,
               alpha_fwd=0.9, alpha_bkw=0.9, eps=1e-5, axis=-1, backward="paper"):
    r"""PowerNorm: batch normalization by the quadratic mean with running statistics in forward and backward.

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
    use the output once: a slot reached by two paths of the graph is summed.  ``backward="exact"`` gives the true VJP of the forward instead (statistics differentiated
    during warm-up, the running statistic a constant afterwards), and a zero grad_ema slot.

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
    return _pn_fwd(x, running_phi, grad_ema, weight, bias, step=step, training=training,
                   warmup_iters=warmup_iters, alpha_fwd=alpha_fwd, alpha_bkw=alpha_bkw, eps=eps, axis=axis,
                   backward=backward)[0]


def power_norm_fwd(x, running_phi, grad_ema=None, weight=None, bias=None, *, step, training=True,
                   warmup_iters=10000, alpha_fwd=0.9, alpha_bkw=0.9, eps=1e-5, axis=-1, backward="paper"):
    return _pn_fwd(x, running_phi, grad_ema, weight, bias, step=step, training=training,
                   warmup_iters=warmup_iters, alpha_fwd=alpha_fwd, alpha_bkw=alpha_bkw, eps=eps, axis=axis,
                   backward=backward)


def power_norm_bwd(res, dy):
    xp, red, bs, c, n = res["xp"], res["red"], res["bs"], res["c"], res["n"]
    gy, gphi = dy
    z, r, g = res["z"], res["r"], res["g"]
    gy = _as(xp, gy, z.dtype)
    dts = res["dts"]
    gh = gy if g is None else gy * g
    dgam = None if dts[3] is None else xp.reshape(_sum(xp, gy * z, red), (c,))
    dbet = None if dts[4] is None else xp.reshape(_sum(xp, gy, red), (c,))
    dge = None
    if not res["training"]:
        dx = gh * r
        dphi = xp.reshape(_sum(xp, gh * z, red) * (-0.5) * r * r, (c,))
        if gphi is not None:
            dphi = dphi + _as(xp, gphi, z.dtype)
        dge = None if dts[2] is None else xp.zeros_like(res["grad_ema"])
        return (_as(xp, dx, dts[0]), _as(xp, dphi, dts[1]), _as(xp, dge, dts[2]), _as(xp, dgam, dts[3]),
                _as(xp, dbet, dts[4]))
    gp = None if gphi is None else xp.reshape(_as(xp, gphi, z.dtype), bs)
    if res["backward"] == "paper":
        ge = xp.reshape(res["grad_ema"], bs)
        ag = gh - (1 - res["ab"]) * ge * z
        dge = xp.reshape(ge + xp.mean(ag * z, axis=red, keepdims=True), (c,))
        dx = ag * res["rb"]
    else:
        if res["use_batch"]:
            dx = r * (gh - z * xp.mean(gh * z, axis=red, keepdims=True))
        else:
            dx = gh * r
        if gp is not None:
            dx = dx + gp * res["dphi"] * 2.0 * res["xc"] / n
        if dts[2] is not None:
            dge = xp.zeros_like(res["grad_ema"])
    # running_phi: used by the forward after warm-up, and linearly by the update
    st, wu, af = res["st"], res["wu"], res["af"]
    dphi = xp.zeros((c,), dtype=z.dtype)
    if not res["use_batch"]:
        dphi = dphi + xp.reshape(_sum(xp, gh * z, red) * (-0.5) * r * r, (c,))
    if gp is not None:
        dphi = dphi + af * ((st - 1) / st if st < wu else 1.0) * xp.reshape(gp, (c,))
    return (_as(xp, dx, dts[0]), _as(xp, dphi, dts[1]), _as(xp, dge, dts[2]), _as(xp, dgam, dts[3]),
            _as(xp, dbet, dts[4]))


ops.register("norm.power_norm", power_norm, power_norm_fwd, power_norm_bwd, skip_check_argnums=(0, 2))


# ---------------------------------------------------------------------------------------------- unified_norm
def _onehot_row(xp, W, k, dtype):
    return xp.reshape(_as(xp, xp.arange(W) == (k % W), dtype), (W, 1))


def _un_fwd(x, running_var, ema_gz=None, buffer_x2=None, buffer_gz=None, weight=None, bias=None, *, step,
            training=True, warmup_iters=4000, outlier_filtration=False, eps=1e-5, momentum=0.9, axis=-1,
            backward="paper"):
    xp = validate.check_same_namespace(x=x, running_var=running_var, ema_gz=ema_gz, buffer_x2=buffer_x2,
                                       buffer_gz=buffer_gz, weight=weight, bias=bias)
    ax = _check_common(x, axis, eps, min_ndim=1)
    c = x.shape[ax]
    if running_var is None:
        raise ValueError("running_var is required (init: ones(C))")
    for a, nm in ((running_var, "running_var"), (ema_gz, "ema_gz"), (weight, "weight"), (bias, "bias")):
        _check_vec(a, nm, c)
    for a, nm in ((buffer_x2, "buffer_x2"), (buffer_gz, "buffer_gz")):
        if a is not None:
            validate.check_float(a, nm)
            if a.ndim != 2 or a.shape[1] != c or a.shape[0] < 1:
                raise ValueError(f"{nm} has shape {tuple(a.shape)}, expected (window, {c})")
    st = validate.check_int(step, "step", low=1)
    wu = validate.check_int(warmup_iters, "warmup_iters", low=0)
    m = validate.check_unit_interval(momentum, "momentum", closed_right=True)
    validate.check_in(backward, ("paper", "exact"), "backward")
    if not isinstance(outlier_filtration, bool):
        raise TypeError("outlier_filtration must be a bool")
    if training and buffer_x2 is None:
        raise ValueError("buffer_x2 is required in training (init: zeros((window, C)), window 4)")
    if training and backward == "paper" and (ema_gz is None or buffer_gz is None):
        raise ValueError("ema_gz and buffer_gz are required for backward='paper' in training (init zeros)")
    validate.check_nonempty(x, "x")
    cdt = compat.compute_dtype(x, xp)
    xc = _as(xp, x, cdt)
    nd = x.ndim
    bs, red = _bshape(nd, ax, c), _red(nd, ax)
    n = compat.size(x) // c
    rv = _as(xp, running_var, cdt)
    g = _vec(xp, weight, bs, cdt)
    dts = (x.dtype, running_var.dtype, None if ema_gz is None else ema_gz.dtype,
           None if buffer_x2 is None else buffer_x2.dtype, None if buffer_gz is None else buffer_gz.dtype,
           None if weight is None else weight.dtype, None if bias is None else bias.dtype)
    res = dict(xp=xp, bs=bs, red=red, c=c, n=n, training=training, backward=backward, g=g, m=m, st=st, wu=wu,
               eps=eps, dts=dts, bx_shape=None if buffer_x2 is None else tuple(buffer_x2.shape),
               bg_shape=None if buffer_gz is None else tuple(buffer_gz.shape))
    if not training:
        r0 = 1.0 / xp.sqrt(xp.reshape(rv, bs) + eps)
        z = xc * r0
        y = z if g is None else z * g
        if bias is not None:
            y = y + _vec(xp, bias, bs, cdt)
        res.update(z=z, rs=r0)
        return (_as(xp, y, x.dtype), running_var, buffer_x2), res
    buf = _as(xp, buffer_x2, cdt)
    W = buf.shape[0]
    x2 = xp.mean(xc * xc, axis=red)                                  # (C,)
    oh = _onehot_row(xp, W, st, cdt)
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
        skip = xp.asarray(static_skip)
    skipf = _as(xp, skip, cdt)
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
    res.update(xc=xc, z=z, rs=rs, var=var, x2=x2, gm=gm, use_x2=use_x2, skipf=skipf, oh=oh, buf_new=buf_new, W=W,
               rr=rr, early=early,
               ema=None if ema_gz is None else _as(xp, ema_gz, cdt),
               bgz=None if buffer_gz is None else _as(xp, buffer_gz, cdt))
    return (_as(xp, y, x.dtype), _as(xp, new_rv, running_var.dtype), _as(xp, buf_new, buffer_x2.dtype)), res


def unified_norm(x, running_var, ema_gz=None, buffer_x2=None, buffer_gz=None, weight=None, bias=None, *, step,
                 training=True, warmup_iters=4000, outlier_filtration=False, eps=1e-5, momentum=0.9, axis=-1,
                 backward="paper"):
    r"""Unified Normalization (UN): batch normalization by the uncentred second moment, smoothed over a window of
    past batches by a geometric mean, with a matching smoothed backward; foldable into linear layers at inference.

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
    return _un_fwd(x, running_var, ema_gz, buffer_x2, buffer_gz, weight, bias, step=step, training=training,
                   warmup_iters=warmup_iters, outlier_filtration=outlier_filtration, eps=eps, momentum=momentum,
                   axis=axis, backward=backward)[0]


def unified_norm_fwd(x, running_var, ema_gz=None, buffer_x2=None, buffer_gz=None, weight=None, bias=None, *, step,
                     training=True, warmup_iters=4000, outlier_filtration=False, eps=1e-5, momentum=0.9, axis=-1,
                     backward="paper"):
    return _un_fwd(x, running_var, ema_gz, buffer_x2, buffer_gz, weight, bias, step=step, training=training,
                   warmup_iters=warmup_iters, outlier_filtration=outlier_filtration, eps=eps, momentum=momentum,
                   axis=axis, backward=backward)


def unified_norm_bwd(res, dy):
    xp, red, bs, c, n, dts = res["xp"], res["red"], res["bs"], res["c"], res["n"], res["dts"]
    gy, grv, gbuf = dy
    z, rs, g = res["z"], res["rs"], res["g"]
    cdt = z.dtype
    gy = _as(xp, gy, cdt)
    gh = gy if g is None else gy * g
    db = None if dts[6] is None else xp.reshape(_sum(xp, gy, red), (c,))
    if not res["training"]:
        dx = gh * xp.reshape(rs, bs)
        drv = xp.reshape(_sum(xp, gh * z, red), (c,)) * (-0.5) * rs * rs
        if grv is not None:
            drv = drv + _as(xp, grv, cdt)
        dw = None if dts[5] is None else xp.reshape(_sum(xp, gy * z, red), (c,))
        dge = None if dts[2] is None else xp.zeros((c,), dtype=cdt)
        dbx = None
        if dts[3] is not None:
            dbx = xp.zeros(res["bx_shape"], dtype=cdt) if gbuf is None else gbuf
        dbg = None if dts[4] is None else xp.zeros(res["bg_shape"], dtype=cdt)
        return (_as(xp, dx, dts[0]), _as(xp, drv, dts[1]), _as(xp, dge, dts[2]), _as(xp, dbx, dts[3]),
                _as(xp, dbg, dts[4]), _as(xp, dw, dts[5]), _as(xp, db, dts[6]))
    m, W, oh, skipf, use_x2 = res["m"], res["W"], res["oh"], res["skipf"], res["use_x2"]
    var, x2, gm, buf_new, xc = res["var"], res["x2"], res["gm"], res["buf_new"], res["xc"]
    # ---- exact cotangents (always used for running_var / buffer_x2, and for x / weight in "exact")
    dvar = xp.reshape(_sum(xp, gh * z, red), (c,)) * (-0.5) * rs * rs
    if grv is not None:
        dvar = dvar + (1 - m) * _as(xp, grv, cdt)
    # var = use_x2 * x2 + (1 - use_x2) * GM(buf_new);  d GM / d buf_new[w] = GM / (W buf_new[w])
    pos = buf_new > 0
    safe = xp.where(pos, buf_new, xp.ones_like(buf_new))
    dbn = xp.where(pos, (1 - use_x2)[None] * dvar[None, :] * gm[None, :] / (W * safe), xp.zeros_like(buf_new))
    if gbuf is not None:
        dbn = dbn + _as(xp, gbuf, cdt)
    # buf_new = (1 - oh) buf + oh * (skip ? running_var : x2)
    slot = xp.sum(dbn * oh, axis=0)                        # cotangent of the inserted row
    dx2 = use_x2 * dvar + (1 - skipf) * slot
    drv = skipf * slot + (m * _as(xp, grv, cdt) if grv is not None else 0.0)
    dbuf = dbn * (1 - oh)
    dge = dbg = None
    if res["backward"] == "exact":
        dx = gh * xp.reshape(rs, bs) + xp.reshape(dx2, bs) * 2.0 * xc / n
        dw = None if dts[5] is None else xp.reshape(_sum(xp, gy * z, red), (c,))
        if dts[2] is not None:
            dge = xp.zeros((c,), dtype=cdt)
        if dts[4] is not None:
            dbg = xp.zeros_like(res["bgz"])
    else:
        rr = res["rr"]
        rrb = xp.reshape(rr, bs)
        gp = gh * rrb
        gz = xp.reshape(_sum(xp, gp * z, red), (c,)) / n
        ema, bgz = res["ema"], res["bgz"]
        Wb = bgz.shape[0]
        ohb = _onehot_row(xp, Wb, res["st"], cdt)
        ins = skipf * ema + (1 - skipf) * gz
        dbg = bgz * (1 - ohb) + ohb * ins[None, :]
        early_b = res["st"] <= Wb or res["st"] < res["wu"]
        mean_gz = gz if early_b else skipf * gz + (1 - skipf) * xp.mean(dbg, axis=0)
        dge = ema * m + (1 - m) * mean_gz
        coef = skipf * mean_gz + (1 - skipf) * dge
        dx = (gp - xp.reshape(coef, bs) * z) * xp.reshape(rs, bs)
        dw = None if dts[5] is None else xp.reshape(_sum(xp, gy * rrb * z, red), (c,))
    return (_as(xp, dx, dts[0]), _as(xp, drv, dts[1]), _as(xp, dge, dts[2]), _as(xp, dbuf, dts[3]),
            _as(xp, dbg, dts[4]), _as(xp, dw, dts[5]), _as(xp, db, dts[6]))


ops.register("norm.unified_norm", unified_norm, unified_norm_fwd, unified_norm_bwd, skip_check_argnums=(0, 2, 4, 5))
