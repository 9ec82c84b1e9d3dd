"""SPD benchmarks, peers side by side (pytest-benchmark groups).

- ``bw_distance``: 10 000 pairs of 16x16 SPD (quick: 1 000): optnorm (Numba kernel) vs pyRiemann 0.12
  ``distance_wasserstein`` and the NumPy floor (batched Cholesky + eigvalsh); geomstats is skipped (2.8 needs
  numpy<2.4).
- ``sqrtm``: 1 000 SPD 64x64 (quick: 200): every optnorm method vs a ``scipy.linalg.sqrtm`` loop and batched
  NumPy ``eigh``; each optnorm entry records its relative error against SciPy in ``extra_info``.
- ``rbn``: Riemannian batch norm forward + backward on 256 matrices 32x32 (quick: 64).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import optnorm.spd as spd
from optnorm.spd.batchnorm import rbn_normalize_bwd, rbn_normalize_fwd

QUICK = os.environ.get("OPTNORM_BENCH_QUICK", "0") == "1"
rng = np.random.default_rng(0)


def _spd(m, n, shift=0.1):
    G = rng.standard_normal((m, n, 2 * n))
    return G @ np.swapaxes(G, -1, -2) / (2 * n) + shift * np.eye(n)


N_PAIRS = 1000 if QUICK else 10000
A16, B16 = _spd(N_PAIRS, 16), _spd(N_PAIRS, 16)
C64 = _spd(200 if QUICK else 1000, 64)
X32 = _spd(64 if QUICK else 256, 32)


# ---------------------------------------------------------------- BW distance
def test_bw_distance_optnorm(benchmark):
    benchmark.group = "bw_distance"
    spd.bw_distance(A16[:4], B16[:4])            # compile the Numba kernel
    d = benchmark(spd.bw_distance, A16, B16, check=False)
    assert np.all(np.isfinite(d))


def test_bw_distance_optnorm_checked(benchmark):
    benchmark.group = "bw_distance"
    benchmark(spd.bw_distance, A16, B16)


def test_bw_distance_pyriemann(benchmark):
    pyr = pytest.importorskip("pyriemann.geometry.distance", reason="pyRiemann is not installed")
    benchmark.group = "bw_distance"
    d = benchmark(pyr.distance_wasserstein, A16, B16)
    np.testing.assert_allclose(d, spd.bw_distance(A16, B16), rtol=1e-8, atol=1e-10)


def test_bw_distance_numpy_floor(benchmark):
    benchmark.group = "bw_distance"

    def floor(A, B):
        L = np.linalg.cholesky(A)
        mu = np.linalg.eigvalsh(np.swapaxes(L, -1, -2) @ B @ L)
        return np.sqrt(np.maximum(np.trace(A, axis1=-2, axis2=-1) + np.trace(B, axis1=-2, axis2=-1)
                                  - 2 * np.sqrt(np.maximum(mu, 0)).sum(-1), 0))

    benchmark(floor, A16, B16)


def test_bw_distance_geomstats(benchmark):
    pytest.importorskip("geomstats", reason="geomstats 2.8 needs numpy<2.4 and is not installed")


# ---------------------------------------------------------------- sqrtm
_REF64 = None


def _ref64():
    global _REF64
    if _REF64 is None:
        w, U = np.linalg.eigh(C64)
        _REF64 = (U * np.sqrt(w)[..., None, :]) @ np.swapaxes(U, -1, -2)
    return _REF64


@pytest.mark.parametrize("method,opts", [("eigh", {}), ("newton_schulz", {"n_iter": 12}),
                                         ("newton_schulz", {"n_iter": 20}), ("mtp", {}), ("mpa", {}),
                                         ("mpa", {"degree": 8})])
def test_sqrtm_optnorm(benchmark, method, opts):
    benchmark.group = "sqrtm"
    Y = benchmark(spd.sqrtm, C64, method=method, check=False, **opts)
    ref = _ref64()
    err = float(np.max(np.linalg.norm(Y - ref, axis=(-2, -1)) / np.linalg.norm(ref, axis=(-2, -1))))
    benchmark.extra_info["rel_err"] = err
    print(f"\nsqrtm {method} {opts}: max relative Frobenius error {err:.2e}")


def test_sqrtm_scipy_loop(benchmark):
    import scipy.linalg as sl

    benchmark.group = "sqrtm"
    benchmark(lambda: [sl.sqrtm(c) for c in C64])


def test_sqrtm_numpy_eigh(benchmark):
    benchmark.group = "sqrtm"

    def f(C):
        w, U = np.linalg.eigh(C)
        return (U * np.sqrt(w)[..., None, :]) @ np.swapaxes(U, -1, -2)

    benchmark(f, C64)


# ---------------------------------------------------------------- RBN
@pytest.mark.parametrize("metric", ["bw", "airm", "lem"])
def test_rbn_forward_backward(benchmark, metric):
    benchmark.group = "rbn"
    n = X32.shape[-1]
    bias = _spd(1, n, shift=0.5)[0]
    w = np.array(0.9)
    dY = rng.standard_normal(X32.shape)

    def step():
        G, v = spd.rbn_statistics(X32, metric=metric, check=False)
        Y, res = rbn_normalize_fwd(X32, G, v, bias, w, None, metric=metric, check=False)
        return rbn_normalize_bwd(res, dY)

    grads = benchmark(step)
    assert np.all(np.isfinite(grads[0]))
