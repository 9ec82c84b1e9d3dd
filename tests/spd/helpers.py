"""Shared data generators and float64 references for the SPD tests."""
from __future__ import annotations

import numpy as np
import scipy.linalg as sl


def random_spd(rng, shape, n, *, cond=None, shift=0.1):
    """SPD matrices (*shape, n, n): G G^T / (2n) + shift I, or with a log-spaced spectrum of condition ``cond``."""
    shape = tuple(shape)
    if cond is None:
        G = rng.standard_normal(shape + (n, 2 * n))
        return G @ np.swapaxes(G, -1, -2) / (2 * n) + shift * np.eye(n)
    Q, _ = np.linalg.qr(rng.standard_normal(shape + (n, n)))
    w = np.logspace(0, -np.log10(cond), n)
    return (Q * w) @ np.swapaxes(Q, -1, -2)


def ref_sqrtm(A):
    A = np.asarray(A, np.float64)
    flat = A.reshape(-1, *A.shape[-2:])
    return np.stack([np.real(sl.sqrtm(a)) for a in flat]).reshape(A.shape)


def ref_funm(A, f):
    w, U = np.linalg.eigh(np.asarray(A, np.float64))
    return (U * f(w)[..., None, :]) @ np.swapaxes(U, -1, -2)


def ref_bw2(A, B):
    out = []
    for a, b in zip(A.reshape(-1, *A.shape[-2:]), B.reshape(-1, *B.shape[-2:])):
        h = np.real(sl.sqrtm(a))
        out.append(np.trace(a) + np.trace(b) - 2 * np.trace(np.real(sl.sqrtm(h @ b @ h))))
    return np.array(out).reshape(A.shape[:-2])


def to(xp, a):
    return xp.asarray(np.asarray(a))
