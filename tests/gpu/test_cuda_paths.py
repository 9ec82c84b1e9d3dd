"""GPU suite: every CUDA kernel against the generic CuPy path and a NumPy float64 reference.

Runs only where CuPy sees a CUDA device (``pytest tests/gpu``); skipped with that reason elsewhere.
The same test bodies of each domain also run on the ``cupy`` backend of the ``xp`` fixture.
"""
from __future__ import annotations

import numpy as np
import pytest

import optnorm
from optnorm._lib import ops
from optnorm._lib.dispatch import cupy_available
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


def _cuda_functions():
    """Every declared public function a CUDA path serves (derived from the dispatchers' ``serves``)."""
    from optnorm._lib import api
    from optnorm._lib.dispatch import fast_paths

    fast = fast_paths()
    return [f for f in api.functions() if "cuda" in fast.get(f.name, ())]


_CUDA_FUNCS = _cuda_functions()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("entry", _CUDA_FUNCS, ids=[f.name for f in _CUDA_FUNCS])
def test_every_cuda_function_matches_the_generic_path(entry, dtype):
    """The declared example call on CuPy arrays, CUDA path against generic path (values and, for ops, VJPs)."""
    import cupy as cp

    from optnorm._lib import compat, contract

    rng = np.random.default_rng(0)
    args, kwargs = contract.example_call(entry, rng, dtype)
    on_gpu = lambda v: cp.asarray(v) if isinstance(v, np.ndarray) else v  # noqa: E731
    gargs = tuple(on_gpu(a) for a in args)
    gkw = {k: on_gpu(v) for k, v in kwargs.items()}
    fast, slow = _both_paths(entry.obj, *gargs, **gkw)
    tol = {k: 10 * v for k, v in TOL[dtype].items()}
    for f, s in zip(contract.outputs(fast), contract.outputs(slow)):
        assert_close(f, compat.to_numpy(s), **tol, err_msg=entry.name)
    if entry.op is not None:
        arrays, opts = entry.op.split(gargs, gkw)

        def vjp(*a):
            y, res = entry.op.fwd(*a, **opts)
            dy = tuple(None if o is None or not compat.is_floating(o) else cp.ones_like(o)
                       for o in (y if isinstance(y, tuple) else (y,)))
            return entry.op.bwd(res, dy if isinstance(y, tuple) else dy[0])

        gfast, gslow = _both_paths(vjp, *arrays)
        for f, s in zip(gfast, gslow):
            if f is not None and s is not None:
                assert_close(f, compat.to_numpy(s), **tol, err_msg=f"{entry.name} VJP")


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
