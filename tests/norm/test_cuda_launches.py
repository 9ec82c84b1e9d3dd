"""The CUDA launch code of optnorm.norm, checked on the CPU against the kernel signatures in ``_cuda/norm.cu``.

The launch code has never run on a GPU here.  Each CUDA path runs with a NumPy stand-in for CuPy and the
launch helpers replaced by a recorder; every recorded launch must pass the arguments its ``__global__``
kernel declares, in order and of the right kind (buffers of the row shape, ``long long`` sizes as int64,
``int`` flags as int32, ``T`` scalars in the rows' dtype, ``double`` as float64), and the results the path
assembles from the (here unwritten) buffers must have the public function's shapes.
"""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import optnorm._cuda.launch as launch
from optnorm.norm import gates, layer
from optnorm.norm.softmax import _softmax, _softmax_bwd

SRC = (Path(launch.__file__).parent / "norm.cu").read_text()


def _kinds(kernel):
    params = re.search(rf"__global__ void {kernel}\((.*?)\)\s*{{", SRC, re.S).group(1).split(",")
    out = []
    for p in params:
        p = " ".join(p.split())
        out.append("ptr" if "*" in p else "i64" if "long long" in p else "i32" if p.startswith("int ")
                   else "u32" if p.startswith("unsigned int ") else "f64" if p.startswith("double ") else "T")
    return out


@pytest.fixture
def recorded(monkeypatch):
    """CuPy replaced by NumPy, launch.rows/elementwise by a recorder (args as launch would pass them)."""
    fake = types.ModuleType("cupy")
    for name in ("ascontiguousarray", "empty_like", "empty", "zeros", "moveaxis", "asarray", "int64", "float32",
                 "float64", "where", "sum", "add"):
        setattr(fake, name, getattr(np, name))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    calls = []

    def rec(domain, name, dtype, n, args, **kw):
        calls.append((domain, name, np.dtype(dtype), int(n), launch._ints(args)))

    monkeypatch.setattr(launch, "rows", rec)
    monkeypatch.setattr(launch, "elementwise", rec)
    return calls


def _check(call, rows_shape):
    domain, name, dtype, n, args = call
    kinds = _kinds(name)
    assert domain == "norm" and len(args) == len(kinds), (name, len(args), kinds)
    for a, k in zip(args, kinds):
        if k == "ptr":   # the (rows, n) rows, a per-row statistic, a length-n parameter, or a 1-element dummy
            assert isinstance(a, np.ndarray) and a.flags.c_contiguous, name
            assert a.shape == rows_shape or a.shape in ((rows_shape[0],), (rows_shape[1],), (1,)) \
                or (a.ndim == 2 and a.shape[0] == rows_shape[0]), (name, a.shape)
        elif k == "i64":
            assert type(a) is np.int64, (name, type(a))
        elif k == "i32":
            assert type(a) is np.int32, (name, type(a))
        elif k == "u32":
            assert type(a) is np.uint32, (name, type(a))
        elif k == "f64":
            assert type(a) is np.float64, (name, type(a))
        else:
            assert isinstance(a, np.generic) and a.dtype == dtype, (name, type(a))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_launches(recorded, dtype):
    x = np.ones((3, 7, 5), dtype)
    y = _softmax._impls["cuda"][0](x, axis=1, method="safe", masked_row="zero", log=True, out=None, xp=np)
    dx = _softmax_bwd._impls["cuda"][0](x, x, axis=1, log=True, masked_row="zero", xp=np)
    assert y.shape == x.shape and dx.shape == x.shape
    assert [c[1] for c in recorded] == ["softmax_fwd", "softmax_bwd"]
    for c in recorded:
        assert c[3] == 15 and c[4][-3] == 7     # one block per row of 7 along axis 1
        _check(c, (15, 7))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axes", [(1,), (1, 2)])
def test_layer_and_rms_norm_launches(recorded, dtype, axes):
    x = np.ones((4, 3, 5), dtype)
    wshape = tuple(x.shape[a] for a in axes)
    w, b = np.ones(wshape, dtype), np.zeros(wshape, dtype)
    rows = (int(np.prod(x.shape)) // int(np.prod(wshape)), int(np.prod(wshape)))
    y, mu, rs = layer._cuda_layer_norm(x, w, b, axes=axes, eps=1e-5, out=None, rms=False)
    assert y.shape == x.shape and mu.shape == rs.shape == tuple(1 if i in axes else s for i, s in enumerate(x.shape))
    dx, dw, db = layer._cuda_layer_norm_bwd(x, w, mu, rs, x, axes=axes, rms=False, has_bias=True)
    assert dx.shape == x.shape and dw.shape == wshape and db.shape == wshape
    y, _, rs = layer._cuda_layer_norm(x, None, None, axes=axes, eps=1e-5, out=np.empty_like(x), rms=True)
    dx, dw, _ = layer._cuda_layer_norm_bwd(x, None, None, rs, x, axes=axes, rms=True, has_bias=False)
    assert dw is None
    assert [c[1] for c in recorded] == ["layer_norm_fwd", "layer_norm_bwd", "rms_norm_fwd", "rms_norm_bwd"]
    for c in recorded:
        assert c[3] == rows[0]
        _check(c, rows)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gate_launches(recorded, dtype):
    z = np.ones((2, 3, 8), dtype)
    p, idx = gates._topk._impls["cuda"][0](z, k=3, inv_t=0.5, xp=np)
    assert p.shape == z.shape and idx.shape == (2, 3, 3)
    s = gates._soft_topk._impls["cuda"][0](z, k=3, alpha=2.0, n_iter=10, xp=np)
    assert s.shape == z.shape
    assert [c[1] for c in recorded] == ["topk_softmax_rows", "soft_topk_rows"]
    for c in recorded:
        assert c[3] == 6
        _check(c, (6, 8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["plain", "gqa mask dropout"])
def test_sdpa_launches(recorded, dtype, case):
    from optnorm.norm.attention import softmax_attention as sa

    gqa = case != "plain"
    q = np.ones((2, 4, 5, 3), dtype)
    k = np.ones((2, 2 if gqa else 4, 7, 3), dtype)
    v = np.ones((2, 2 if gqa else 4, 7, 6), dtype)
    mask = (np.arange(7) < 5) if gqa else None
    geo = sa._geometry(q, k, v, mask, gqa)
    opts = dict(geo=geo, scale=0.5, causal=not gqa, dropout_p=0.25 if gqa else 0.0, seed=3, xp=np)
    o, lse = sa._fwd._impls["cuda"][0](q, k, v, mask, **opts)
    assert o.shape == (2, 4, 5, 6) and lse.shape == (2, 4, 5)
    dq, dk, dv = sa._bwd._impls["cuda"][0](q, k, v, mask, o.astype(dtype), lse.astype(dtype), np.ones_like(o),
                                           None, **opts)
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    assert [c[1] for c in recorded] == ["sdpa_fwd_rows", "sdpa_bwd_dq_rows", "sdpa_bwd_dkv_rows"]
    assert [c[3] for c in recorded] == [8 * 5, 8 * 5, 8 * 7]     # one thread per (pair, row)
    for c in recorded:
        domain, name, dt, n, args = c
        kinds = _kinds(name)
        assert domain == "norm" and len(args) == len(kinds), (name, len(args), kinds)
        for a, kd in zip(args, kinds):
            if kd == "ptr":
                assert isinstance(a, np.ndarray) and a.flags.c_contiguous, name
            elif kd == "i64":
                assert type(a) is np.int64, (name, type(a))
            elif kd == "i32":
                assert type(a) is np.int32, (name, type(a))
            elif kd == "u32":
                assert type(a) is np.uint32, (name, type(a))
            else:
                assert isinstance(a, np.generic) and a.dtype == dt, (name, type(a))
