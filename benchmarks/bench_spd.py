"""SPD benchmarks, peers side by side (pytest-benchmark groups).

- ``bw_distance``: 10 000 pairs of 16x16 SPD (quick: 1 000): optnorm (Numba kernel) vs pyRiemann 0.12
  ``distance_wasserstein`` and the NumPy floor (batched Cholesky + eigvalsh); geomstats is skipped (2.8 needs
  numpy<2.4).
- ``sqrtm``: 1 000 SPD 64x64 (quick: 200): every optnorm method vs a ``scipy.linalg.sqrtm`` loop and batched
  NumPy ``eigh``; each optnorm entry records its relative error against SciPy in ``extra_info``.
- ``rbn``: Riemannian batch norm forward + backward on 256 matrices 32x32 (quick: 64).
- ``airm_distance``: 10 000 pairs of 16x16 (quick: 1 000): optnorm (Numba kernel) vs pyRiemann
  ``distance_riemann``.
- ``pairwise_airm``: ``pairwise_distances`` of 500 matrices 16x16 with themselves (quick: 100) vs pyRiemann
  ``pairwise_distance(X, metric="riemann")``.
- ``karcher_mean``: the AIRM mean of 1 000 matrices 32x32 (quick: 200) at pyRiemann's default tolerance
  (``||J||_F <= 1e-8``, which ``mean_riemann`` writes ``10e-9``) vs ``mean_riemann``.
- ``tangent_space``: 2 000 matrices 16x16 at one reference vs pyRiemann ``tangent_space``.

Every pyRiemann case also runs with BLAS limited to one thread (``*_pyriemann_1thread``): NumPy calls LAPACK
once per small matrix, and a multi-threaded OpenBLAS loses badly there (optnorm limits it itself), so the
single-threaded peer is the fair floor.
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


def _one_thread(fn):
    """``fn`` with BLAS limited to one thread (threadpoolctl), or as is when threadpoolctl is missing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return fn

    def run(*a, **k):
        with threadpool_limits(1, user_api="blas"):
            return fn(*a, **k)
    return run


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


def test_bw_distance_pyriemann_1thread(benchmark):
    pyr = pytest.importorskip("pyriemann.geometry.distance", reason="pyRiemann is not installed")
    benchmark.group = "bw_distance"
    benchmark(_one_thread(pyr.distance_wasserstein), A16, B16)


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


# ---------------------------------------------------------------- AIRM distance, pairwise, Karcher mean, tangent space
X500 = _spd(100 if QUICK else 500, 16)
X1000 = _spd(200 if QUICK else 1000, 32)
T2000 = _spd(400 if QUICK else 2000, 16)


def test_airm_distance_optnorm(benchmark):
    benchmark.group = "airm_distance"
    spd.airm_distance(A16[:4], B16[:4])            # compile the Numba kernel
    d = benchmark(spd.airm_distance, A16, B16, check=False)
    assert np.all(np.isfinite(d))


@pytest.mark.parametrize("threads", ["default", "1thread"])
def test_airm_distance_pyriemann(benchmark, threads):
    pyr = pytest.importorskip("pyriemann.geometry.distance", reason="pyRiemann is not installed")
    benchmark.group = "airm_distance"
    fn = pyr.distance_riemann if threads == "default" else _one_thread(pyr.distance_riemann)
    d = benchmark(fn, A16, B16)
    np.testing.assert_allclose(d, spd.airm_distance(A16, B16), rtol=1e-9)


def test_pairwise_airm_optnorm(benchmark):
    benchmark.group = "pairwise_airm"
    spd.pairwise_distances(X500[:3])
    D = benchmark(spd.pairwise_distances, X500, check=False)
    assert D.shape == (len(X500), len(X500))


@pytest.mark.parametrize("threads", ["default", "1thread"])
def test_pairwise_airm_pyriemann(benchmark, threads):
    pyr = pytest.importorskip("pyriemann.geometry.distance", reason="pyRiemann is not installed")
    benchmark.group = "pairwise_airm"
    fn = pyr.pairwise_distance if threads == "default" else _one_thread(pyr.pairwise_distance)
    D = benchmark.pedantic(fn, args=(X500,), kwargs={"metric": "riemann"}, rounds=3, iterations=1)
    np.testing.assert_allclose(D, spd.pairwise_distances(X500), rtol=1e-8, atol=1e-12)


def test_karcher_mean_optnorm(benchmark):
    benchmark.group = "karcher_mean"
    g = spd.airm()
    res = benchmark.pedantic(g.mean, args=(X1000,), kwargs={"tol": 1e-8, "check": False}, rounds=3, iterations=1)
    benchmark.extra_info["n_iter"] = res.n_iter
    assert res.converged


@pytest.mark.parametrize("threads", ["default", "1thread"])
def test_karcher_mean_pyriemann(benchmark, threads):
    mean = pytest.importorskip("pyriemann.geometry.mean", reason="pyRiemann is not installed")
    benchmark.group = "karcher_mean"
    fn = mean.mean_riemann if threads == "default" else _one_thread(mean.mean_riemann)
    M = benchmark.pedantic(fn, args=(X1000,), kwargs={"tol": 1e-8}, rounds=3, iterations=1)
    ref = spd.airm().mean(X1000, tol=1e-12).mean
    np.testing.assert_allclose(M, ref, rtol=1e-5)          # pyRiemann stops at ||J|| <= 1e-8


def test_tangent_space_optnorm(benchmark):
    benchmark.group = "tangent_space"
    C = X500[0]
    T = benchmark(spd.tangent_space, T2000, C, check=False)
    assert T.shape == (len(T2000), 136)


def test_tangent_space_pyriemann(benchmark):
    ts = pytest.importorskip("pyriemann.geometry.tangentspace", reason="pyRiemann is not installed")
    benchmark.group = "tangent_space"
    C = X500[0]
    T = benchmark(ts.tangent_space, T2000, C)
    np.testing.assert_allclose(T, spd.tangent_space(T2000, C), rtol=1e-9, atol=1e-12)
