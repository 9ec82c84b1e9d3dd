"""GPU suite: every CUDA kernel against the generic CuPy path and a NumPy float64 reference.

Runs only where CuPy sees a CUDA device (``pytest tests/gpu``); skipped with that reason elsewhere.
The same test bodies of each domain also run on the ``cupy`` backend of the ``xp`` fixture.
"""
from __future__ import annotations

import numpy as np
import pytest

import optnorm
from optnorm._lib import ops
from optnorm._lib.dispatch import DISPATCHERS, cupy_available
from optnorm.testing import assert_close

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not cupy_available(), reason="CuPy with a CUDA device is not available")]

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}


def _both_paths(fn, *args, **kwargs):
    with optnorm.use_backend("cuda"):
        fast = fn(*args, **kwargs)
    with optnorm.use_backend("generic"):
        slow = fn(*args, **kwargs)
    return fast, slow


def test_every_cuda_dispatcher_is_covered():
    covered = {"norm.softmax", "norm.softmax_bwd", "norm.layer_norm", "norm.layer_norm_bwd", "norm.rms_norm",
               "norm.rms_norm_bwd", "ot.sinkhorn.lse", "optim.adam_step", "optim.sgd_step", "optim.lion_step"}
    with_cuda = {n for n, d in DISPATCHERS.items() if "cuda" in d.paths}
    assert with_cuda <= covered, f"CUDA paths without a GPU test: {sorted(with_cuda - covered)}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 5), (64, 4099), (3, 70000)])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "layer_norm", "rms_norm"])
def test_row_op_forward_and_vjp(name, shape, dtype):
    import cupy as cp

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype) * 3
    w = rng.standard_normal(shape[-1]).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    op = ops.get(name)
    args = (x,) if name in ("softmax", "log_softmax") else ((x, w) if name == "rms_norm" else (x, w, None))
    gargs = tuple(None if a is None else cp.asarray(a) for a in args)
    fast, slow = _both_paths(op.fn, *gargs)
    ref = op.fn(*[None if a is None else a.astype(np.float64) for a in args])
    assert_close(fast, cp.asnumpy(slow), **TOL[dtype])
    assert_close(fast, ref, **{k: 10 * v for k, v in TOL[dtype].items()})

    def vjp(*a):
        y, res = op.fwd(*a)
        return op.bwd(res, cp.asarray(dy))

    gfast, gslow = _both_paths(vjp, *gargs)
    for f, s in zip(gfast, gslow):
        if f is not None:
            assert_close(f, cp.asnumpy(s), **{k: 10 * v for k, v in TOL[dtype].items()})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sinkhorn_cuda(dtype):
    import cupy as cp

    rng = np.random.default_rng(1)
    n, m = 300, 200
    X, Y = rng.standard_normal((n, 2)), rng.standard_normal((m, 2))
    M = ((X[:, None] - Y[None]) ** 2).sum(-1).astype(dtype)
    a, b = np.full(n, 1 / n, dtype), np.full(m, 1 / m, dtype)
    fast, slow = _both_paths(optnorm.ot.sinkhorn, cp.asarray(a), cp.asarray(b), cp.asarray(M), 0.05)
    ref = optnorm.ot.sinkhorn(a.astype(np.float64), b.astype(np.float64), M.astype(np.float64), 0.05)
    assert_close(fast.cost, float(slow.cost), rtol=1e-4 if dtype == np.float32 else 1e-10)
    assert_close(fast.cost, float(ref.cost), rtol=1e-4 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("rule", ["adamw", "sgd", "lion"])
def test_optimizer_step_cuda(rule):
    import cupy as cp

    rng = np.random.default_rng(2)
    kw = {"sgd": dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), "adamw": dict(lr=1e-2),
          "lion": dict(lr=1e-3)}[rule]
    opt = getattr(optnorm.optim, rule)(**kw)
    p = [rng.standard_normal((1000, 33)).astype(np.float32), rng.standard_normal(77).astype(np.float32)]
    results = {}
    for path in ("cuda", "generic"):
        with optnorm.use_backend(path):
            params = [cp.asarray(a) for a in p]
            state = opt.init(params)
            for k in range(5):
                grads = [cp.asarray(np.sin(a * (k + 1))) for a in p]
                opt.step_(params, grads, state)
            results[path] = [cp.asnumpy(a) for a in params]
    for f, s in zip(results["cuda"], results["generic"]):
        assert_close(f, s, rtol=1e-5, atol=1e-6)
