"""GPU benchmarks: each CUDA kernel's time and achieved memory bandwidth as a fraction of the device's peak.

Runs where CuPy sees a CUDA device (``python -m optnorm bench gpu``); skipped with that reason elsewhere.
``benchmark.extra_info["bandwidth_fraction"]`` holds bytes moved / time / peak bandwidth.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from optnorm._lib.dispatch import cupy_available

pytestmark = pytest.mark.skipif(not cupy_available(), reason="CuPy with a CUDA device is not available")
QUICK = os.environ.get("OPTNORM_BENCH_QUICK") == "1"
SHAPES = [(1024, 4096)] if QUICK else [(16384, 8192), (256, 262144)]


def _peak_bytes_per_s() -> float:
    import cupy as cp

    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    return 2.0 * props["memoryClockRate"] * 1e3 * props["memoryBusWidth"] / 8


def _timed(benchmark, fn, nbytes):
    import cupy as cp

    def run():
        fn()
        cp.cuda.Stream.null.synchronize()

    run()
    benchmark(run)
    benchmark.extra_info["bandwidth_fraction"] = nbytes / benchmark.stats.stats.median / _peak_bytes_per_s()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "layer_norm", "rms_norm", "copy"])
def test_row_forward(benchmark, name, shape):
    import cupy as cp

    import optnorm

    x = cp.asarray(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
    w = cp.ones(shape[-1], dtype=cp.float32)
    out = cp.empty_like(x)
    benchmark.group = f"gpu {name if name != 'copy' else 'row ops'} {shape}"
    fns = {"softmax": lambda: optnorm.norm.softmax(x, out=out),
           "log_softmax": lambda: optnorm.norm.log_softmax(x, out=out),
           "layer_norm": lambda: optnorm.norm.layer_norm(x, w, out=out),
           "rms_norm": lambda: optnorm.norm.rms_norm(x, w, out=out),
           "copy": lambda: cp.copyto(out, x)}
    _timed(benchmark, fns[name], 2 * x.nbytes)


@pytest.mark.parametrize("n", [2000] if QUICK else [2000, 8000])
def test_sinkhorn_iterations(benchmark, n):
    import cupy as cp

    import optnorm

    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
    M = cp.asarray(((X[:, None] - Y[None]) ** 2).sum(-1))
    a = cp.full(n, 1 / n)
    benchmark.group = f"gpu sinkhorn n={n}"
    _timed(benchmark, lambda: optnorm.ot.sinkhorn(a, a, M, 0.05, max_iter=100, tol=0.0), 100 * 2 * M.nbytes)


def test_adamw_step(benchmark):
    import cupy as cp

    import optnorm

    n = 1_000_000 if QUICK else 10_000_000
    p = [cp.zeros(n, cp.float32)]
    g = [cp.ones(n, cp.float32)]
    opt = optnorm.optim.adamw(lr=1e-3)
    state = opt.init(p)
    benchmark.group = "gpu adamw step"
    _timed(benchmark, lambda: opt.step_(p, g, state), 7 * 4 * n)  # read p, g, m, v; write p, m, v
