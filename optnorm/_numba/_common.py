"""Scalar and row-reduction primitives shared by optnorm's Numba kernels (the one shared module of
``optnorm._numba`` besides :mod:`._rows`): a vectorisable float32 ``exp`` (Cephes ``expf`` scheme, 2^k by
exponent-bit insertion), lane-parallel maxima and sums, float64 moments of float32 rows, and the fastmath
flag sets they are compiled with.  The numerical decisions are documented in :mod:`optnorm._numba.norm`.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir as llir
from numba.core import types
from numba.extending import intrinsic, overload

from ._rows import SAFE_FASTMATH

_FM = {"contract", "nsz", "arcp"}  # kernels and elementwise passes: no reassociation
_FM_RED = {"reassoc", "contract", "nsz", "arcp"}  # reduction helpers only: lets LLVM keep lane partials
_LANES = 16
_BLOCK = 1024  # online softmax: statistics per block of this many elements (stays in L1)

_F32 = np.float32
_LOG2E32 = _F32(1.4426950408889634)
_C1 = _F32(0.693359375)
_C2 = _F32(-2.12194440e-4)
_P0, _P1, _P2 = _F32(1.9875691500e-4), _F32(1.3981999507e-3), _F32(8.3334519073e-3)
_P3, _P4, _P5 = _F32(4.1665795894e-2), _F32(1.6666665459e-1), _F32(5.0000001201e-1)
_EXP_LO32 = _F32(-87.33654)  # exp below this -> 0 (2^k must stay a normal float)
_EXP_HI32 = _F32(88.37626)
_ONE32 = _F32(1.0)
_HALF32 = _F32(0.5)




# ------------------------------------------------------------------------------------------ scalar helpers
@intrinsic
def _pow2_32(typingctx, k):
    """2**k as float32 for an integer k in [-127, 127] (k = -127 gives 0.0): exponent-bit insertion."""
    if not isinstance(k, types.Integer):
        return None
    sig = types.float32(k)

    def codegen(context, builder, signature, args):
        i32 = llir.IntType(32)
        v = args[0]
        if v.type.width > 32:
            v = builder.trunc(v, i32)
        elif v.type.width < 32:
            v = builder.sext(v, i32)
        v = builder.shl(builder.add(v, llir.Constant(i32, 127)), llir.Constant(i32, 23))
        return builder.bitcast(v, llir.FloatType())

    return sig, codegen


@intrinsic
def _pow2_64(typingctx, k):
    """2**k as float64 for an integer k in [-1023, 1023] (k = -1023 gives 0.0)."""
    if not isinstance(k, types.Integer):
        return None
    sig = types.float64(k)

    def codegen(context, builder, signature, args):
        i64 = llir.IntType(64)
        v = args[0]
        if v.type.width < 64:
            v = builder.sext(v, i64)
        v = builder.shl(builder.add(v, llir.Constant(i64, 1023)), llir.Constant(i64, 52))
        return builder.bitcast(v, llir.DoubleType())

    return sig, codegen


@numba.njit(fastmath=_FM, cache=True)
def _poly_exp32(r):
    """e^r for |r| <= 0.35 (Cephes expf polynomial)."""
    p = _P0 * r + _P1
    p = p * r + _P2
    p = p * r + _P3
    p = p * r + _P4
    p = p * r + _P5
    return p * r * r + r + _ONE32


@numba.njit(fastmath=_FM, cache=True)
def _exp32(x):
    xc = _EXP_LO32 if x < _EXP_LO32 else (_EXP_HI32 if x > _EXP_HI32 else x)  # NaN passes through
    k = np.floor(xc * _LOG2E32 + _HALF32)
    r = xc - k * _C1 - k * _C2
    y = _poly_exp32(r) * _pow2_32(np.int32(k))
    return _F32(0.0) if x < _EXP_LO32 else y


def _exp(x):
    """exp for kernels: vectorisable polynomial in float32, libm in float64 (plain math.exp without JIT)."""
    return math.exp(x)


@overload(_exp, jit_options={"fastmath": _FM})
def _ol_exp(x):
    if x == types.float32:
        return lambda x: _exp32(x)
    return lambda x: math.exp(x)


def _exp_small(r):
    """e^r for an already reduced |r| <= ln2/2 (polynomial only in float32)."""
    return math.exp(r)


@overload(_exp_small, jit_options={"fastmath": _FM})
def _ol_exp_small(r):
    if r == types.float32:
        return lambda r: _poly_exp32(r)
    return lambda r: math.exp(r)


def _zero(a):
    return a.dtype.type(0)


def _scalar_like(v, like):
    return type(like)(v)


@overload(_scalar_like)
def _ol_scalar_like(v, like):
    """``v`` as a scalar of ``like``'s float type (Python float literals are float64 in Numba)."""
    if like == types.float32:
        return lambda v, like: np.float32(v)
    return lambda v, like: np.float64(v)


@overload(_zero)
def _ol_zero(a):
    if a.dtype == types.float32:
        return lambda a: np.float32(0.0)
    return lambda a: np.float64(0.0)


@numba.njit(fastmath=_FM_RED, cache=True)
def _rowmax(xr):
    """Row max in 16 independent lanes (a single running max does not vectorise; with ``reassoc`` the lane loop
    runs 4x faster than without, measured 1.45 vs 5.85 ms on 8M floats).  NaN is skipped here; callers let it
    propagate through the following sum."""
    n = xr.shape[0]
    acc = np.full(_LANES, -np.inf, xr.dtype)
    nb = n - n % _LANES
    for j in range(0, nb, _LANES):
        for lane in range(_LANES):
            v = xr[j + lane]
            acc[lane] = v if v > acc[lane] else acc[lane]
    m = acc[0]
    for lane in range(1, _LANES):
        m = acc[lane] if acc[lane] > m else m
    for j in range(nb, n):
        v = xr[j]
        m = v if v > m else m
    return m


@numba.njit(fastmath=_FM_RED, cache=True)
def _sum_exp(xr, m):
    s = _zero(xr)
    for j in range(xr.shape[0]):
        s += _exp(xr[j] - m)
    return s


@numba.njit(fastmath=_FM_RED, cache=True)
def _exp_store_sum(xr, yr, m):
    s = _zero(xr)
    for j in range(xr.shape[0]):
        e = _exp(xr[j] - m)
        yr[j] = e
        s += e
    return s


@numba.njit(fastmath=_FM_RED, cache=True)
def _sum(a):
    s = _zero(a)
    for j in range(a.shape[0]):
        s += a[j]
    return s


@numba.njit(fastmath=_FM_RED, cache=True)
def _dot(a, b):
    s = _zero(a)
    for j in range(a.shape[0]):
        s += a[j] * b[j]
    return s


@numba.njit(fastmath=_FM_RED, cache=True)
def _sum64(a):
    s = 0.0
    for j in range(a.shape[0]):
        s += float(a[j])  # explicit: without JIT, NumPy 2 would keep 0.0 + float32 in float32
    return s


@numba.njit(fastmath=_FM_RED, cache=True)
def _sqdev64(a, mu):
    q = 0.0
    for j in range(a.shape[0]):
        d = float(a[j]) - mu
        q += d * d
    return q


@numba.njit(fastmath=_FM_RED, cache=True)
def _absdevmax64(a, mu):
    m = 0.0
    for j in range(a.shape[0]):
        d = abs(float(a[j]) - mu)
        m = d if d > m else m
    return m


@numba.njit(fastmath=_FM_RED, cache=True)
def _sqdev64_scaled(a, mu, inv):
    q = 0.0
    for j in range(a.shape[0]):
        d = (float(a[j]) - mu) * inv
        q += d * d
    return q


@numba.njit(fastmath=_FM, cache=True)
def _rstd64(a, mu, n, eps):
    """1/sqrt(mean((a - mu)^2) + eps) in float64; rows whose squares overflow float64 (|a| ~ 1e154 and up,
    float64 input only) are summed again in units of their largest deviation."""
    q = _sqdev64(a, mu)
    if q < np.inf:
        return 1.0 / math.sqrt(q / n + eps)
    if q != q:  # NaN/inf in the row propagate
        return q
    m = _absdevmax64(a, mu)
    qs = _sqdev64_scaled(a, mu, 1.0 / m)
    return 1.0 / (m * math.sqrt(qs / n + eps / m / m))


@numba.njit(fastmath=_FM_RED, cache=True)
def _ln_bwd_sums(xr, gr, w, mu, rs, dwp, dbp, has_w):
    """(sum g^, sum g^ x^) of a row, and the row's contribution to dweight/dbias."""
    c1 = _zero(xr)
    c2 = _zero(xr)
    if has_w:
        for j in range(xr.shape[0]):
            gj = gr[j]
            gh = gj * w[j]
            xh = (xr[j] - mu) * rs
            c1 += gh
            c2 += gh * xh
            dwp[j] += gj * xh
            dbp[j] += gj
    else:
        for j in range(xr.shape[0]):
            gj = gr[j]
            xh = (xr[j] - mu) * rs
            c1 += gj
            c2 += gj * xh
            dwp[j] += gj * xh
            dbp[j] += gj
    return c1, c2


@numba.njit(fastmath=_FM_RED, cache=True)
def _rms_bwd_sums(xr, gr, w, rs, dwp, has_w):
    c2 = _zero(xr)
    if has_w:
        for j in range(xr.shape[0]):
            gj = gr[j]
            xh = xr[j] * rs
            c2 += gj * w[j] * xh
            dwp[j] += gj * xh
    else:
        for j in range(xr.shape[0]):
            c2 += gr[j] * xr[j] * rs
    return c2


@numba.njit(fastmath=_FM, cache=True)
def _fill_masked(yr, log, masked_zero):
    if masked_zero:
        val = -np.inf if log else 0.0
    else:
        val = np.nan
    for j in range(yr.shape[0]):
        yr[j] = val


# The terms of a log-sum-exp are exp(x) with x <= 0 and one x = 0.  libm's exp costs more the smaller x gets
# (below -708 its result is subnormal, 10-35x slower with every later add; from |x| >= 512 glibc leaves its fast
# path), and a branch that skips small terms mispredicts at intermediate reg.  The kernels use _exp_le0 instead:
# Cephes' exp (Pade form, relative error ~2e-16) with its argument clamped at -500, branch-free, so every term
# costs the same whatever reg is; a clamped term adds at most e^-500 = 7e-218 to a sum >= 1 (invisible).
_FLUSH = -500.0
_LOG2E_64 = 1.4426950408889634
_C1_64 = 6.93145751953125e-1
_C2_64 = 1.42860682030941723212e-6
_P0_64, _P1_64, _P2_64 = 1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1
_Q0_64, _Q1_64 = 3.00198505138664455042e-6, 2.52448340349684104192e-3
_Q2_64, _Q3_64 = 2.27265548208155028766e-1, 2.00000000000000000009e0


@numba.njit(fastmath=set(SAFE_FASTMATH), cache=True, inline="always")
def _exp_le0(x):
    """exp(max(x, -500)) for x <= 0 (NaN propagates): reduction x = k ln2 + r, Pade exp(r), 2^k by exponent bits."""
    x = _FLUSH if x < _FLUSH else x                   # NaN passes through
    k = np.floor(x * _LOG2E_64 + 0.5)
    r = x - k * _C1_64 - k * _C2_64
    rr = r * r
    p = r * ((_P0_64 * rr + _P1_64) * rr + _P2_64)
    q = ((_Q0_64 * rr + _Q1_64) * rr + _Q2_64) * rr + _Q3_64
    return (1.0 + 2.0 * p / (q - p)) * _pow2_64(np.int64(k))
