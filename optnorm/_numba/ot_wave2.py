"""Numba kernels for wave-2 OT functions: pairwise box Wasserstein / NWD (n x m, fused, one pass)."""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._rows import jit

__all__ = ["box_half_params", "pairwise_box_w2"]


def box_half_params(boxes: np.ndarray, format: str) -> np.ndarray:
    """(n, 4) array of (cx, cy, w/2, h/2) for axis-aligned boxes (tiny: O(n) NumPy)."""
    b = boxes
    if format == "xyxy":
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2,
                         (b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2], axis=1).astype(b.dtype, copy=False)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] / 2, b[:, 3] / 2], axis=1).astype(b.dtype, copy=False)


@jit(parallel=True, fastmath=True)
def pairwise_box_w2(p1, p2, out, kind, C, eps):
    """out[i, j] = W2^2 (kind 0), W2 (kind 1) or exp(-sqrt(W2^2 + eps)/C) (kind 2) of boxes i and j.

    Accumulates in the input dtype: the four squared differences are of O(box size) numbers,
    so float32 loses nothing that the float32 inputs carried.  fastmath lets LLVM vectorise
    exp/sqrt over j (measured ~3x on the 4096 x 4096 float32 case).
    """
    n = p1.shape[0]
    m = p2.shape[0]
    inv_c = 1.0 / C
    for i in prange(n):
        x0 = p1[i, 0]
        x1 = p1[i, 1]
        x2 = p1[i, 2]
        x3 = p1[i, 3]
        for j in range(m):
            d0 = x0 - p2[j, 0]
            d1 = x1 - p2[j, 1]
            d2 = x2 - p2[j, 2]
            d3 = x3 - p2[j, 3]
            s = d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3
            if kind == 0:
                out[i, j] = s
            elif kind == 1:
                out[i, j] = math.sqrt(s)
            else:
                out[i, j] = math.exp(-math.sqrt(s + eps) * inv_c)

