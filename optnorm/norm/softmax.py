"""Softmax family: softmax / log_softmax (three algorithms, masked-row policy), stablemax / log_stablemax.

Public functions validate their arguments and go through a :class:`~optnorm._lib.dispatch.Dispatcher`:
the generic Array-API body below runs on every library; NumPy float32/float64 inputs take the Numba row
kernels of :mod:`optnorm._numba.norm`, CuPy inputs the CUDA kernels of ``optnorm/_cuda/norm.cu``.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.dispatch import Dispatcher, numpy_float
from .._lib.roles import Axis, Bool, Choice, Float, Option, Out, Positive, Seed
from .._lib.typing import Array
from .._lib.typing import Seed as SeedT

METHODS = ("safe", "online", "two_pass")
MASKED = ("nan", "zero")
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
# Cody-Waite split of ln 2: n * hi is exact while |n| < 2**14 (hi has <= 9 significant bits in f32,
# <= 32 in f64), so x - n*hi - n*lo is the accurate reduction for moderate x.
_LN2_HI = {4: 0.693359375, 8: 6.93147180369123816490e-01}
_LN2_LO = {4: -2.12194440e-4, 8: 1.90821492927058770002e-10}
# Largest |x| for which u = x*log2(e) stays finite: beyond it inputs are clamped (two_pass only).
_BIG = {4: 2.0e38, 8: 1.0e308}
_ONLINE_LANES = 16
_CUDA_BLOCK = 256


# ------------------------------------------------------------------------------------------ helpers
def _itemsize(xp, dt) -> int:
    return 8 if dt == xp.float64 else 4


_FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")


def _check_dtype(value, name):
    """``dtype=``: None or a real floating dtype of any library (or its name); normalised to the name."""
    if value is None:
        return None
    try:
        nm = value if isinstance(value, str) else (np.dtype(value).name if isinstance(value, type)
                                                   else compat.dtype_name(value))
    except TypeError:
        nm = None
    if nm not in _FLOAT_NAMES:
        raise TypeError(f"{name} must be None or a real floating dtype (float16, bfloat16, float32, float64), "
                        f"got {value!r}")
    return nm


def _in_dtype(x, dtype, xp):
    """``x`` cast to ``dtype=`` (torch's semantics: the input is cast before the operation)."""
    return x if dtype is None else compat.cast(x, compat.dtype_by_name(dtype, x, xp), xp)


# roles shared by the whole family: a non-empty float array of >= 1 dims, an axis of it, an out= like it
_ROW = dict(x=Float("... n"), axis=Axis("x"), out=Out("x"))
_ALGO = dict(method=Choice(METHODS), masked_row=Choice(MASKED))
_DTYPE = dict(dtype=Option(check=_check_dtype))
_ROWS_GUFUNC = ("(n)->(n)", {"axis_arg": "axis"})


def _log_terms(xc, axis, method, xp):
    """Per-element log-terms z and the row sum s of exp(z): softmax = exp(z)/s, log_softmax = z - log s.

    For a fully masked row (all -inf) every z is -inf and s = 0.  NaN or +inf in a row make it NaN.
    """
    dt = xc.dtype
    if method == "two_pass":
        return _two_pass_terms(xc, axis, xp)
    if method == "safe":
        m = xp.max(xc, axis=axis, keepdims=True)
    else:  # online: (max, sum) pairs per lane, merged with the associative (+) of Milakov & Gimelshein
        m, s = _online_stats(xc, axis, xp)
    m = xp.where(m == -math.inf, xp.zeros_like(m), m)
    z = xc - m
    if method == "safe":
        s = xp.sum(xp.exp(z), axis=axis, keepdims=True)
    return z, compat.cast(s, dt, xp)


def _online_stats(xc, axis, xp):
    """Row (max, sum of exp(x - max)) from 16 lane partials merged with the online (+) rule."""
    xm = xp.moveaxis(xc, axis, -1)
    n = xm.shape[-1]
    lanes = _ONLINE_LANES
    pad = (-n) % lanes
    if pad:
        fill = xp.full(tuple(xm.shape[:-1]) + (pad,), -math.inf, dtype=xm.dtype, device=compat.device(xm))
        xm = xp.concat([xm, fill], axis=-1)
    blocks = xp.reshape(xm, tuple(xm.shape[:-1]) + ((n + pad) // lanes, lanes))  # lane l holds x[j*16 + l]
    m_l = xp.max(blocks, axis=-2)  # (..., lanes)
    m_l0 = xp.where(m_l == -math.inf, xp.zeros_like(m_l), m_l)  # first-step guard: exp(-inf - -inf) -> 0
    d_l = xp.sum(xp.exp(blocks - m_l0[..., None, :]), axis=-2)
    big_m = xp.max(m_l, axis=-1, keepdims=True)
    big_m0 = xp.where(big_m == -math.inf, xp.zeros_like(big_m), big_m)
    m_l1 = xp.where(m_l == -math.inf, big_m0, m_l)  # empty lanes: exp(0), then zeroed (no overflow warning)
    scale = xp.where(m_l == -math.inf, xp.zeros_like(m_l), xp.exp(m_l1 - big_m0))
    d = xp.sum(d_l * scale, axis=-1, keepdims=True)
    return xp.moveaxis(big_m, -1, axis), xp.moveaxis(d, -1, axis)


def _two_pass_terms(xc, axis, xp):
    """Dukhan & Ablavatski: e^x = m * 2^n with a float exponent n, so no max pass and no overflow.

    The reduction is Cody-Waite (x - n*ln2_hi - n*ln2_lo) while |n| < 2**14 and base 2 beyond
    (f = x*log2e - n, exact in floating point): the Cody-Waite step alone breaks at |x| ~ 1e30 in f32,
    where n*ln2_hi is rounded by ~1e23.
    """
    isz = _itemsize(xp, xc.dtype)
    ninf = xc == -math.inf
    bad = xp.any(xp.isnan(xc) | (xc == math.inf), axis=axis, keepdims=True)
    xs = xp.where(ninf, xp.zeros_like(xc), xp.clip(xc, -_BIG[isz], _BIG[isz]))
    u = xs * _LOG2E
    n = xp.round(u)
    r_cw = (xs - n * _LN2_HI[isz]) - n * _LN2_LO[isz]
    r_b2 = (u - n) * _LN2
    r = xp.where(xp.abs(n) < 16384.0, r_cw, r_b2)
    n_max = xp.max(xp.where(ninf, xp.full_like(n, -math.inf), n), axis=axis, keepdims=True)
    n_max = xp.where(n_max == -math.inf, xp.zeros_like(n_max), n_max)
    dn = n - n_max  # <= 0; exact when both are within a factor 2, else rounded like x - max
    terms = xp.where(ninf, xp.zeros_like(xc), xp.exp(r) * 2.0 ** dn)
    z = xp.where(ninf, xp.full_like(xc, -math.inf), dn * _LN2 + r)
    s = xp.sum(terms, axis=axis, keepdims=True)
    s = xp.where(bad, xp.full_like(s, math.nan), s)
    return z, s


def _softmax_generic(x, *, axis, method, masked_row, log, out, xp):
    ct = compat.compute_dtype(x, xp)
    xc = compat.cast(x, ct, xp)
    z, s = _log_terms(xc, axis, method, xp)
    masked = s == 0
    s1 = xp.where(masked, xp.ones_like(s), s)
    if log:
        y = z - xp.log(s1)  # masked rows: z = -inf everywhere
    else:
        y = xp.exp(z) / s1  # masked rows: 0
    if masked_row == "nan":
        y = xp.where(masked, xp.full_like(y, math.nan), y)
    return compat.write_out(out, compat.cast(y, x.dtype, xp))


def _softmax_bwd_generic(y, dy, *, axis, log, masked_row, xp):
    ct = compat.compute_dtype(y, xp)
    yc, gc = compat.cast(y, ct, xp), compat.cast(dy, ct, xp)
    if log:
        p = xp.exp(yc)
        dx = gc - p * xp.sum(gc, axis=axis, keepdims=True)
        if masked_row == "zero":
            masked = xp.max(yc, axis=axis, keepdims=True) == -math.inf
            dx = xp.where(masked, xp.zeros_like(dx), dx)
    else:
        dx = yc * (gc - xp.sum(gc * yc, axis=axis, keepdims=True))
    return compat.cast(dx, y.dtype, xp)


_softmax = Dispatcher("norm.softmax", serves=("norm.softmax", "norm.log_softmax"))
_softmax.generic(_softmax_generic)
_softmax_bwd = Dispatcher("norm.softmax_bwd", serves=("norm.softmax", "norm.log_softmax"))
_softmax_bwd.generic(_softmax_bwd_generic)


@_softmax.numba(when=lambda x, **kw: numpy_float(x, kw.get("out")))
def _softmax_numba(x, *, axis, method, masked_row, log, out, xp):
    from .._numba import norm as nb

    return nb.softmax(x, axis=axis, method=method, masked_row=masked_row, log=log, out=out)


@_softmax_bwd.numba(when=lambda y, dy, **kw: numpy_float(y, dy))
def _softmax_bwd_numba(y, dy, *, axis, log, masked_row, xp):
    from .._numba import norm as nb

    return nb.softmax_bwd(y, dy, axis=axis, log=log, masked_row=masked_row)


@_softmax.cuda(when=lambda x, **kw: str(x.dtype) in ("float32", "float64") and kw.get("method") != "two_pass")
def _softmax_cuda(x, *, axis, method, masked_row, log, out, xp):
    """CUDA path (safe and online share one kernel: the online (max, sum) merge across threads and warps)."""
    import cupy
    import numpy as np

    from .._cuda import launch

    rows = launch.as_rows(x, axis)
    y = cupy.empty_like(rows)
    launch.rows("norm", "softmax_fwd", x.dtype, rows.shape[0],
                (rows, y, rows.shape[1], np.int32(log), np.int32(masked_row == "zero")), block=_CUDA_BLOCK)
    return launch.from_rows(y, tuple(x.shape), axis, out)


@_softmax_bwd.cuda(when=lambda y, dy, **kw: str(y.dtype) in ("float32", "float64") and y.dtype == dy.dtype)
def _softmax_bwd_cuda(y, dy, *, axis, log, masked_row, xp):
    import cupy
    import numpy as np

    from .._cuda import launch

    ym = launch.as_rows(y, axis)
    gm = launch.as_rows(dy, axis)
    dx = cupy.empty_like(ym)
    launch.rows("norm", "softmax_bwd", y.dtype, ym.shape[0],
                (ym, gm, dx, ym.shape[1], np.int32(log), np.int32(masked_row == "zero")), block=_CUDA_BLOCK)
    return launch.from_rows(dx, tuple(y.shape), axis)


# ------------------------------------------------------------------------------------------ softmax
@public(**_ROW, **_ALGO, **_DTYPE, gufunc=_ROWS_GUFUNC)
def softmax(x: Array, *, axis: int = -1, method: str = "safe", masked_row: str = "nan", dtype: Any = None,
            out: Array | None = None) -> Array:
    r"""Softmax along ``axis``: :math:`y_i = e^{x_i} / \sum_j e^{x_j}`, computed without overflow.

    Three algorithms compute the same function (they agree to a few ulp and none overflows in float32
    for inputs up to :math:`\pm 10^{30}`); ``"safe"`` is the default and the fastest on CPU:

    - ``"safe"``: subtract the row max, exponentiate, divide (3 passes over the row).
    - ``"online"``: running (max, sum) pairs, rescaled when the max moves, merged associatively across
      lanes/threads: Milakov & Gimelshein, "Online normalizer calculation for softmax" (2018).
      The generic body forms 16 lane partials and merges them; the Numba kernel streams the row once
      for the statistics, in L1-sized blocks merged with the online rule (the output pass recomputes the
      exponentials, so in cache it is slower than ``"safe"``: the saved read is worth less than the extra exp).
    - ``"two_pass"``: Dukhan & Ablavatski, "The Two-Pass Softmax Algorithm" (2020): each
      :math:`e^{x_i} = m_i 2^{n_i}` with a float exponent :math:`n_i`, accumulated as (mantissa,
      exponent) so no max pass is needed.  The range reduction switches to base 2 for
      :math:`|x| \ge 2^{14}\ln 2`, which keeps :math:`|x|` up to ~1e38 finite in float32 (inputs beyond
      ``2e38`` are clamped there).  Beyond :math:`|x| \approx 11356` the result is the exact softmax of
      :math:`x(1+\delta)`, :math:`|\delta| \le 2^{-24}` in float32: on rows offset by a large constant
      (x = 1e5 + N(0, 1)) that is visibly less accurate than ``"safe"`` (``python -m optnorm demo norm``).
      The Numba kernel accumulates (M, N) per L1-sized block (block exponent from the block max, which is
      exact because n is monotone in x) so that it vectorises; it is the slowest of the three in cache.

    Parameters
    ----------
    x : array
        Logits, any floating dtype; float16/bfloat16 are computed in float32 and cast back.
    axis : int
        Axis to normalise over.
    method : {"safe", "online", "two_pass"}
        Algorithm (same result).
    masked_row : {"nan", "zero"}
        Result for a row that is entirely ``-inf`` (fully masked): ``"nan"`` (default, like
        ``torch.softmax`` and ``jax.nn.softmax``) or ``"zero"`` (like
        ``torch.nn.functional.scaled_dot_product_attention``); with ``"zero"`` the VJP of such a row is 0.
        A row containing NaN or ``+inf`` gives NaN (as in torch and JAX).
    dtype : dtype or str, optional
        Compute (and return) in this floating dtype, as torch's ``dtype=``: ``x`` is cast first, and the VJP
        returns the gradient in ``x``'s dtype (``softmax(x16, dtype="float32")`` for float16 logits).
    out : array, optional
        Preallocated output of ``x``'s shape and dtype (not for JAX; not with a different ``dtype``).

    Returns
    -------
    array
        Same shape as ``x``, in ``dtype`` (default ``x``'s); each row sums to 1.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import softmax
    >>> softmax(np.array([1e30, 0.0, 1e30], np.float32), method="two_pass")
    array([0.5, 0. , 0.5], dtype=float32)
    """
    xp = compat.array_namespace(x)
    return _softmax(_in_dtype(x, dtype, xp), axis=axis, method=method, masked_row=masked_row, log=False, out=out,
                    xp=xp)


class SoftmaxRes(NamedTuple):
    """Residuals of softmax/log_softmax: the output and the options the VJP needs."""
    y: Any
    axis: int
    masked_row: str
    in_dtype: Any = None    # x's dtype when dtype= changed it (the gradient is returned in it)


def _back(dx, res: SoftmaxRes, xp):
    return dx if res.in_dtype is None else compat.cast(dx, res.in_dtype, xp)


def softmax_fwd(x, *, axis=-1, method="safe", masked_row="nan", dtype=None, out=None):
    y = softmax(x, axis=axis, method=method, masked_row=masked_row, dtype=dtype, out=out)
    return y, SoftmaxRes(y, axis % y.ndim, masked_row, None if y.dtype == x.dtype else x.dtype)


def softmax_bwd(res: SoftmaxRes, dy):
    xp = compat.array_namespace(res.y)
    return (_back(_softmax_bwd(res.y, compat.cast(dy, res.y.dtype, xp), axis=res.axis, log=False,
                               masked_row=res.masked_row, xp=xp), res, xp),)


@public(**_ROW, **_ALGO, **_DTYPE, gufunc=_ROWS_GUFUNC)
def log_softmax(x: Array, *, axis: int = -1, method: str = "safe", masked_row: str = "nan", dtype: Any = None,
                out: Array | None = None) -> Array:
    r"""Log-softmax along ``axis``: :math:`y_i = x_i - \log\sum_j e^{x_j}`, without overflow.

    Same algorithms and options as :func:`softmax` (``method="safe"|"online"|"two_pass"``); the
    log-sum-exp is formed from the same (max, sum) or (mantissa, exponent) statistics, never as
    ``log(softmax(x))``.

    ``masked_row`` for a fully masked (all ``-inf``) row: ``"nan"`` (default, like torch) gives NaN;
    ``"zero"`` has no literal meaning for log-probabilities (log 0): it returns ``-inf`` in every
    entry (the log of the all-zero row ``softmax(..., masked_row="zero")`` gives) and a **zero** VJP for
    that row, so masked rows contribute nothing to gradients.

    Parameters
    ----------
    x : array
        Logits (float16/bfloat16 computed in float32).
    axis : int
        Axis to normalise over.
    method : {"safe", "online", "two_pass"}
        Algorithm; see :func:`softmax`.
    masked_row : {"nan", "zero"}
        Policy for all ``-inf`` rows (see above).
    dtype : dtype or str, optional
        Compute and return in this floating dtype (torch's ``dtype=``; the gradient comes back in ``x``'s dtype).
    out : array, optional
        Preallocated output.

    Returns
    -------
    array
        Log-probabilities, the shape of ``x``, in ``dtype`` (default ``x``'s).

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import log_softmax
    >>> log_softmax(np.array([0.0, 0.0]))
    array([-0.69314718, -0.69314718])
    """
    xp = compat.array_namespace(x)
    return _softmax(_in_dtype(x, dtype, xp), axis=axis, method=method, masked_row=masked_row, log=True, out=out,
                    xp=xp)


def log_softmax_fwd(x, *, axis=-1, method="safe", masked_row="nan", dtype=None, out=None):
    y = log_softmax(x, axis=axis, method=method, masked_row=masked_row, dtype=dtype, out=out)
    return y, SoftmaxRes(y, axis % y.ndim, masked_row, None if y.dtype == x.dtype else x.dtype)


def log_softmax_bwd(res: SoftmaxRes, dy):
    xp = compat.array_namespace(res.y)
    return (_back(_softmax_bwd(res.y, compat.cast(dy, res.y.dtype, xp), axis=res.axis, log=True,
                               masked_row=res.masked_row, xp=xp), res, xp),)


vjp(softmax, softmax_fwd, softmax_bwd)
vjp(log_softmax, log_softmax_fwd, log_softmax_bwd)


# ------------------------------------------------------------------------------------------ softmin
@public(**_ROW, **_DTYPE, gufunc=_ROWS_GUFUNC)
def softmin(x: Array, *, axis: int = -1, dtype: Any = None, out: Array | None = None) -> Array:
    r"""Softmin along ``axis``: :math:`y_i = e^{-x_i} / \sum_j e^{-x_j}`, i.e. ``softmax(-x)``.

    As ``torch.nn.functional.softmin`` (Bridle, "Probabilistic Interpretation of Feedforward Classification
    Network Outputs", 1990, for the softmax it negates): small entries get large weights.  Computed by the
    softmax kernels on :math:`-x` (so without overflow), with the softmax VJP negated.

    Parameters
    ----------
    x : array
        Scores (costs, distances).
    axis : int
        Axis to normalise over.
    dtype : dtype or str, optional
        Compute and return in this floating dtype (torch's ``dtype=``).
    out : array, optional
        Preallocated output of ``x``'s shape and dtype.

    Returns
    -------
    array
        Non-negative, rows sum to 1; the shape of ``x``, in ``dtype`` (default ``x``'s).

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import softmin
    >>> softmin(np.array([0.0, np.log(3.0)]))
    array([0.75, 0.25])
    """
    xp = compat.array_namespace(x)
    return _softmax(-_in_dtype(x, dtype, xp), axis=axis, method="safe", masked_row="nan", log=False, out=out, xp=xp)


def softmin_fwd(x, *, axis=-1, dtype=None, out=None):
    y = softmin(x, axis=axis, dtype=dtype, out=out)
    return y, SoftmaxRes(y, axis % y.ndim, "nan", None if y.dtype == x.dtype else x.dtype)


def softmin_bwd(res: SoftmaxRes, dy):
    (dx,) = softmax_bwd(res, dy)
    return (-dx,)


vjp(softmin, softmin_fwd, softmin_bwd)


# ------------------------------------------------------------------------------------------ Gumbel-softmax
class GumbelSoftmaxRes(NamedTuple):
    """Residuals: the relaxed sample (its softmax VJP is the gradient, also for ``hard``) and 1/tau."""
    y_soft: Any
    inv_tau: float
    axis: int
    dtype: Any


def _gumbel_noise(shape, seed, like, ct, xp):
    """Standard Gumbel noise -log(E), E ~ Exp(1), drawn on the host from ``seed`` (a constant under jax.jit)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    e = np.maximum(rng.standard_exponential(shape), np.finfo(np.float64).tiny)
    g = -np.log(e)
    host = g.astype(np.float64 if compat.dtype_name(ct) == "float64" else np.float32)
    return compat.from_numpy_like(host, like)


@public(logits=Float("... n"), tau=Positive(), hard=Bool(), seed=Seed(), axis=Axis("logits"),
        gufunc=("(n)->(n)", {"axis_arg": "axis"}),
        example=lambda rng, dtype: ((rng.standard_normal((3, 5)).astype(dtype),), {"seed": 0}))
def gumbel_softmax(logits: Array, *, tau: float = 1.0, hard: bool = False, seed: SeedT = None,
                   axis: int = -1) -> Array:
    r"""A Gumbel-softmax (Concrete) sample: a differentiable relaxation of sampling from ``softmax(logits)``.

    .. math::
        y = \mathrm{softmax}\big((\ell + g)/\tau\big), \qquad g_i = -\log E_i,\; E_i \sim \mathrm{Exp}(1),

    Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax"; Maddison, Mnih & Teh, "The Concrete
    Distribution" (both ICLR 2017).  :math:`\arg\max_i (\ell_i + g_i)` is an exact sample of the categorical
    distribution (Gumbel-max); as :math:`\tau \to 0` the relaxed sample approaches that one-hot vector.  With
    ``hard=True`` the forward returns the one-hot :math:`\arg\max` and the gradient is that of the relaxed
    sample (the straight-through estimator, torch's ``y_hard - y_soft.detach() + y_soft``).  As
    ``torch.nn.functional.gumbel_softmax`` except that the noise comes from ``seed`` (a NumPy generator on the
    host, the same for every library), not from the framework's global RNG; its deprecated ``eps`` is omitted.

    Parameters
    ----------
    logits : array
        Unnormalised log-probabilities.
    tau : float > 0
        Temperature.
    hard : bool
        Return one-hot samples (straight-through gradient).
    seed : int or numpy.random.Generator, optional
        Source of the Gumbel noise (fresh noise per call when None).
    axis : int
        The category axis.

    Returns
    -------
    array
        The sample, the shape and dtype of ``logits``: relaxed probabilities, or one-hot with ``hard``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import gumbel_softmax
    >>> y = gumbel_softmax(np.zeros((2, 4)), hard=True, seed=0)
    >>> y.sum(axis=-1)
    array([1., 1.])
    """
    return gumbel_softmax_fwd(logits, tau=tau, hard=hard, seed=seed, axis=axis)[0]


def gumbel_softmax_fwd(logits, *, tau=1.0, hard=False, seed=None, axis=-1):
    xp = compat.array_namespace(logits)
    ct = compat.compute_dtype(logits, xp)
    g = _gumbel_noise(tuple(logits.shape), seed, logits, ct, xp)
    z = (compat.cast(logits, ct, xp) + g) / float(tau)
    ys = _softmax(z, axis=axis, method="safe", masked_row="nan", log=False, out=None, xp=xp)
    y = ys
    if hard:
        n = logits.shape[axis]
        idx = xp.argmax(ys, axis=axis, keepdims=True)
        shape = [1] * logits.ndim
        shape[axis] = n
        classes = xp.reshape(compat.arange(n, like=ys, dtype=idx.dtype), tuple(shape))
        y = compat.cast(classes == idx, ct, xp)
    return compat.cast(y, logits.dtype, xp), GumbelSoftmaxRes(ys, 1.0 / float(tau), axis % logits.ndim,
                                                                logits.dtype)


def gumbel_softmax_bwd(res: GumbelSoftmaxRes, dy):
    xp = compat.array_namespace(res.y_soft)
    dz = _softmax_bwd(res.y_soft, compat.cast(dy, res.y_soft.dtype, xp), axis=res.axis, log=False,
                      masked_row="nan", xp=xp)
    return (compat.cast(dz * res.inv_tau, res.dtype, xp),)


vjp(gumbel_softmax, gumbel_softmax_fwd, gumbel_softmax_bwd)


# ------------------------------------------------------------------------------------------ stablemax
def _s(xc, xp):
    """s(x) = x + 1 for x >= 0, 1/(1 - x) for x < 0 (both branches evaluated on clipped inputs: no 1/0)."""
    pos = xp.clip(xc, 0.0, None) + 1.0
    neg = 1.0 / (1.0 - xp.clip(xc, None, 0.0))
    return xp.where(xc >= 0, pos, neg)


def _s_rows(xc, ax, xp):
    """(s(x) / M, M) with M the row max of s: the row sum of s overflows for logits near the dtype's
    largest value (3e38 in float32), the sum of s / M (at most the row length) never does."""
    s = _s(xc, xp)
    m = xp.max(s, axis=ax, keepdims=True)
    m = xp.where(m > 0, m, xp.ones_like(m))  # all-(-inf) rows: s = 0 (the result is NaN, as 0/0)
    return s / m, m


def _ds(xc, xp):
    neg = 1.0 / (1.0 - xp.clip(xc, None, 0.0))
    return xp.where(xc >= 0, xp.ones_like(xc), neg * neg)


@public(**_ROW)
def stablemax(x: Array, *, axis: int = -1, out: Array | None = None) -> Array:
    r"""StableMax: :math:`y_i = s(x_i) / \sum_j s(x_j)`, :math:`s(x) = x + 1` (x >= 0), :math:`1/(1-x)` (x < 0).

    From Prieto, Barsbey, Mediano, Birdal, "Grokking at the Edge of Numerical Stability" (ICLR 2025):
    a softmax substitute that grows linearly instead of exponentially, which delays the float
    absorption ("Softmax Collapse") that stalls grokking.  ``s`` is C1 at 0.  No exponential, so no
    overflow (the row is divided by its largest s before summing, so logits up to the dtype's largest value
    are fine); not shift-invariant (the max is never subtracted).  The official code's ``+1e-30`` in the
    negative branch has no effect in float32/64 and is omitted.

    Parameters
    ----------
    x : array
        Logits (float16/bfloat16 computed in float32).
    axis : int
        Axis to normalise over.
    out : array, optional
        Preallocated output.

    Returns
    -------
    array
        Non-negative, rows sum to 1.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import stablemax
    >>> stablemax(np.array([0.0, 1.0, -1.0]))
    array([0.28571429, 0.57142857, 0.14285714])
    """
    xp = compat.array_namespace(x)
    sr, _ = _s_rows(compat.cast(x, compat.compute_dtype(x, xp), xp), axis, xp)
    y = sr / xp.sum(sr, axis=axis, keepdims=True)
    return compat.write_out(out, compat.cast(y, x.dtype, xp))


class StablemaxRes(NamedTuple):
    x: Any
    y: Any      # None for log_stablemax
    axis: int


def stablemax_fwd(x, *, axis=-1, out=None):
    y = stablemax(x, axis=axis, out=out)
    return y, StablemaxRes(x, y, axis % x.ndim)


def stablemax_bwd(res: StablemaxRes, dy):
    x, y, ax = res
    xp = compat.array_namespace(x)
    ct = compat.compute_dtype(x, xp)
    xc, yc, gc = compat.cast(x, ct, xp), compat.cast(y, ct, xp), compat.cast(dy, ct, xp)
    sr, m = _s_rows(xc, ax, xp)
    dx = (_ds(xc, xp) / m) / xp.sum(sr, axis=ax, keepdims=True) * (gc - xp.sum(gc * yc, axis=ax, keepdims=True))
    return (compat.cast(dx, x.dtype, xp),)


@public(**_ROW)
def log_stablemax(x: Array, *, axis: int = -1, out: Array | None = None) -> Array:
    r"""Log-StableMax: :math:`y_i = \log s(x_i) - \log \sum_j s(x_j)` (see :func:`stablemax`).

    Prieto et al., "Grokking at the Edge of Numerical Stability" (ICLR 2025); the paper's
    StableMax cross-entropy is ``-log_stablemax(x)[target]`` (the official code evaluates it in
    float64; here float16/bfloat16 are computed in float32, float32 stays float32).

    Parameters
    ----------
    x : array
        Logits.
    axis : int
        Axis to normalise over.
    out : array, optional
        Preallocated output.

    Returns
    -------
    array
        Same shape and dtype as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import log_stablemax
    >>> float(log_stablemax(np.array([0.0, 0.0]))[0])
    -0.6931471805599453
    """
    xp = compat.array_namespace(x)
    xc = compat.cast(x, compat.compute_dtype(x, xp), xp)
    sr, m = _s_rows(xc, axis, xp)
    # log(s / M), or log s - log M where s / M underflows (entries far below the row max)
    tiny = float(xp.finfo(xc.dtype).smallest_normal)
    log_s = xp.where(xc >= 0, xp.log1p(xp.clip(xc, 0.0, None)), -xp.log1p(-xp.clip(xc, None, 0.0)))
    log_sr = xp.where(sr >= tiny, xp.log(xp.where(sr >= tiny, sr, xp.ones_like(sr))), log_s - xp.log(m))
    y = log_sr - xp.log(xp.sum(sr, axis=axis, keepdims=True))
    return compat.write_out(out, compat.cast(y, x.dtype, xp))


def log_stablemax_fwd(x, *, axis=-1, out=None):
    y = log_stablemax(x, axis=axis, out=out)
    return y, StablemaxRes(x, None, axis % x.ndim)


def log_stablemax_bwd(res: StablemaxRes, dy):
    x, _, ax = res
    xp = compat.array_namespace(x)
    ct = compat.compute_dtype(x, xp)
    xc, gc = compat.cast(x, ct, xp), compat.cast(dy, ct, xp)
    sr, m = _s_rows(xc, ax, xp)
    ds = _ds(xc, xp)
    dlog = xp.where(xc >= 0, 1.0 / _s(xc, xp), _s(xc, xp))  # s'/s without forming s' / s for large |x|
    dx = dlog * gc - (ds / m) * (xp.sum(gc, axis=ax, keepdims=True) / xp.sum(sr, axis=ax, keepdims=True))
    return (compat.cast(dx, x.dtype, xp),)


vjp(stablemax, stablemax_fwd, stablemax_bwd)
vjp(log_stablemax, log_stablemax_fwd, log_stablemax_bwd)
