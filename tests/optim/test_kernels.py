"""The fused multi-tensor kernels of step_ (optnorm/optim/_kernels.py, optnorm/_numba/optim.py): the Numba path
against the generic one (the rule's own leaf update), the fused finiteness check, the chunk layout."""
from __future__ import annotations

import numpy as np
import pytest

import optnorm.optim as oo
from optnorm.testing import assert_close

from ._problems import Quadratic

SHAPES = [(7, 5), (11,), (3, 2, 4)]


def _run_pure(rule, prob, n):
    ps = list(prob.p0)
    st = rule.init(ps)
    for k in range(n):
        ps, st = rule.step(ps, prob.grads(ps, k, np.asarray), st)
    return ps


def test_fused_kernel_is_taken(monkeypatch):
    """On float32 NumPy buffers step_ runs the Numba kernel (not the per-leaf update)."""
    rule = oo.adamw(lr=1e-2)
    ps = [np.ones(10, np.float32)]
    st = rule.init(ps)

    def boom(*a, **k):
        raise AssertionError("generic leaf update used")

    monkeypatch.setattr(rule, "update_leaf", boom)
    rule.step_(ps, [np.ones(10, np.float32)], st)
    assert ps[0][0] < 1


def test_lion_fused_matches_generic(path):
    prob = Quadratic(SHAPES, seed=4)
    rule = oo.lion(lr=1e-2, weight_decay=0.1)
    ref = _run_pure(rule, prob, 30)
    ps = [p.copy() for p in prob.p0]
    st = rule.init(ps)
    for k in range(30):
        rule.step_(ps, prob.grads(ps, k, np.asarray), st)
    for g, r in zip(ps, ref):
        assert_close(g, r, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["adamw", "sgd", "lion"])
def test_fused_nan_check_writes_nothing(path, name):
    """A NaN in the last chunk of a multi-chunk tensor: the fused kernel rejects the step before writing."""
    rule = {"adamw": oo.adamw(lr=0.1), "sgd": oo.sgd(lr=0.1, momentum=0.9), "lion": oo.lion(lr=0.1)}[name]
    rng = np.random.default_rng(0)
    ps = [rng.standard_normal(70_000).astype(np.float32), rng.standard_normal((3, 5)).astype(np.float32)]
    st = rule.init(ps)
    gs = [np.ones_like(p) for p in ps]
    rule.step_(ps, gs, st)
    before = [p.copy() for p in ps], [np.array(a, copy=True) for leaf in st.leaves for a in leaf if a is not None]
    gs[0][-1] = np.inf
    with pytest.raises(ValueError, match=r"grads\[0\] contains NaN or inf"):
        rule.step_(ps, gs, st)
    after = [a for leaf in st.leaves for a in leaf if a is not None]
    assert all(np.array_equal(a, b) for a, b in zip(before[0], ps))
    assert all(np.array_equal(a, b) for a, b in zip(before[1], after)) and int(st.count) == 1
    skip = rule.factory(**{**rule.hyper, "nan_policy": "skip"})
    st2 = skip.init(ps)
    skip.step_(ps, gs, st2)
    assert int(st2.count) == 0 and all(np.array_equal(a, b) for a, b in zip(before[0], ps))


def test_chunk_layout_covers_every_element():
    from optnorm._numba.optim import chunks

    sizes = (1, 5, 0, 70_000, 32_768)
    ti, start, length = chunks(sizes, chunk=32_768)
    for i, n in enumerate(sizes):
        sel = ti == i
        assert int(length[sel].sum()) == n and start[sel][0] == 0
        assert np.all(start[sel][1:] == np.cumsum(length[sel])[:-1])
        assert np.all(length[sel] <= 32_768)


@pytest.mark.parametrize("name,kw", [("adamw", dict(lr=1e-2, amsgrad=True)), ("adam", dict(lr=1e-2)),
                                     ("sgd", dict(lr=0.1, momentum=0.9)), ("sgd", dict(lr=0.1)), ("lion", dict(lr=0.1)),
                                     ("rmsprop", dict(momentum=0.9, centered=True)), ("rmsprop", dict()),
                                     ("adagrad", dict()), ("adadelta", dict()), ("adamax", dict()), ("nadam", dict()),
                                     ("radam", dict(decoupled_weight_decay=True, weight_decay=0.1)),
                                     ("schedule_free_adamw", dict()), ("schedule_free_sgd", dict())])
def test_cuda_adapter_matches_the_kernel_signatures(monkeypatch, name, kw):
    """The CUDA launch code has no GPU here: check on the CPU that each launch passes the arguments the
    kernel in optim.cu declares, in order (buffers, n, scalars in the buffers' dtype, the flag bits)."""
    import re
    from pathlib import Path

    import array_api_compat.numpy as xnp

    import optnorm._cuda.launch as launch
    from optnorm.optim import _kernels
    from optnorm.optim.base import Ctx, InPlace

    src = (Path(_kernels.__file__).parent.parent / "_cuda" / "optim.cu").read_text()
    calls = []
    monkeypatch.setattr(launch, "elementwise", lambda *a, **k: calls.append(a))
    rule = getattr(oo, name)(**kw)
    ps = [np.ones((3, 4), np.float32), np.ones(5, np.float32)]
    gs = [np.full_like(p, 0.5) for p in ps]
    leaves = [rule.init_leaf(p, name="p", xp=xnp) for p in ps]
    job = InPlace(ps, gs, leaves, Ctx(xnp, 1, lrs={}), ["p", "p"], ["g", "g"], xnp, None, ps, True)
    spec = rule.kernel.dispatcher._impls["cuda"][0].args[0]
    assert _kernels._cuda_step(spec, ps[0], rule, job, rule.kernel.config) is True
    params = re.search(rf"__global__ void {spec.cuda_name}\((.*?)\)", src, re.S).group(1).split(",")
    kinds = ["ptr" if "*" in p else ("n" if "long long" in p else ("flags" if "int flags" in p else "T"))
             for p in params]
    assert [c[1] for c in calls] == [spec.cuda_name] * 2 and [c[3] for c in calls] == [p.size for p in ps]
    for (domain, kname, dtype, n, args), p, g in zip(calls, ps, gs):
        assert domain == "optim" and dtype == np.float32 and len(args) == len(kinds)
        assert args[0] is p and args[1] is g
        for a, k in zip(args, kinds):
            if k == "ptr":
                assert isinstance(a, np.ndarray) and a.shape == p.shape
            elif k == "n":
                assert a == p.size
            elif k == "T":
                assert type(a) is np.float32
            else:
                assert type(a) is np.int32
