"""Numba kernels for optnorm.norm's batch-statistics layers (batch_norm fast path).

Plain loops over a (N, C, M) C-contiguous view (batch, channel, everything else), parallel over channels.
Statistics are accumulated in float64 whatever the input dtype, two-pass (mean first, then the centred sum of
squares): the one-pass E[x^2] - E[x]^2 formula loses everything for |mean| >> std in float32 (norm.md 7.4).
"""
from __future__ import annotations

import numba
import numpy as np

from ._rows import jit

__all__ = ["bn_channel_stats", "bn_channel_apply"]


@jit(parallel=True)
def bn_channel_stats(x3, mean, var):
    """Per-channel mean and biased variance of x3 (N, C, M) into float64 mean/var (C,)."""
    N, C, M = x3.shape
    inv = 1.0 / (N * M)
    for c in numba.prange(C):
        s = 0.0
        for n in range(N):
            for m in range(M):
                s += x3[n, c, m]
        mu = s * inv
        q = 0.0
        for n in range(N):
            for m in range(M):
                d = x3[n, c, m] - mu
                q += d * d
        mean[c] = mu
        var[c] = q * inv


@jit(parallel=True)
def bn_channel_apply(x3, mean, scale, shift, out):
    """out[n, c, m] = (x3[n, c, m] - mean[c]) * scale[c] + shift[c] (centred first: no cancellation)."""
    N, C, M = x3.shape
    for c in numba.prange(C):
        mu = mean[c]
        s = scale[c]
        t = shift[c]
        for n in range(N):
            for m in range(M):
                out[n, c, m] = (x3[n, c, m] - mu) * s + t


def batch_norm_forward(x, running_mean, running_var, weight, bias, training, momentum, eps, axis, unbiased=True):
    """NumPy float32/float64 batch_norm forward (no sample weights); returns (y, new_rm, new_rv)."""
    xm = np.moveaxis(x, axis, 1)
    shp = xm.shape
    N, C = shp[0], shp[1]
    x3 = np.ascontiguousarray(xm).reshape(N, C, -1)
    if training:
        mean = np.empty(C, np.float64)
        var = np.empty(C, np.float64)
        bn_channel_stats(x3, mean, var)
    else:
        mean = running_mean.astype(np.float64)
        var = running_var.astype(np.float64)
    scale = 1.0 / np.sqrt(var + eps)
    if weight is not None:
        scale = scale * weight.astype(np.float64)
    shift = np.zeros(C) if bias is None else bias.astype(np.float64)
    out = np.empty(x3.shape, x.dtype)
    bn_channel_apply(x3, mean, scale, shift, out)
    y = np.moveaxis(out.reshape(shp), 1, axis)
    if not training:
        return y, running_mean, running_var
    if running_mean is None:
        return y, None, None
    n = N * x3.shape[2]
    rm = ((1 - momentum) * running_mean.astype(np.float64) + momentum * mean).astype(running_mean.dtype)
    rv = ((1 - momentum) * running_var.astype(np.float64) + momentum * var * (n / (n - 1) if unbiased else 1.0)).astype(running_var.dtype)
    return y, rm, rv
