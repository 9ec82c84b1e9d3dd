"""The row kernels (softmax, layer_norm, rms_norm) and their wrapper :mod:`optnorm._numba._rows`.

Property tests: finite inputs of any float32 magnitude (1e-30..1e30) never give NaN/inf, on both NumPy paths;
half-precision inputs are accumulated in float32.  The wrapper: the serial and parallel builds compute the same
thing and are cached apart; ``Rows`` handles any single axis or trailing axes and writes ``out=`` in place."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import optnorm
from optnorm.norm import layer_norm, log_softmax, rms_norm, softmax
from optnorm.testing import assert_close

METHODS = ["safe", "online", "two_pass"]
PATHS = ["generic", "numba"]


def _scaled_rows(max_exp=30):
    """float32 (rows, n) arrays: mantissas in [-1, 1] times per-row powers of ten in [1e-max_exp, 1e+max_exp]."""
    shape = st.tuples(st.integers(1, 4), st.integers(1, 40))
    return shape.flatmap(lambda s: st.tuples(
        hnp.arrays(np.float32, s, elements=st.floats(-1, 1, width=32)),
        hnp.arrays(np.float32, (s[0], 1), elements=st.integers(-max_exp, max_exp).map(lambda e: np.float32(10.0**e))),
    )).map(lambda t: (t[0] * t[1]).astype(np.float32))


def _any_f32(s):
    return hnp.arrays(np.float32, s, elements=st.floats(float(np.float32(-1e30)), float(np.float32(1e30)), width=32))


_mixed = st.tuples(st.integers(1, 4), st.integers(1, 40)).flatmap(_any_f32)


@pytest.mark.parametrize("path", PATHS)
@given(x=st.one_of(_scaled_rows(), _mixed))
def test_softmax_family_finite(path, x):
    with optnorm.use_backend(path):
        for method in METHODS:
            y = softmax(x, method=method)
            assert y.dtype == np.float32
            assert np.all(np.isfinite(y)), (method, x)
            assert np.all((y >= 0) & (y <= 1))
            np.testing.assert_allclose(y.sum(-1), 1.0, rtol=0, atol=1e-5 * x.shape[-1] + 1e-6)
            ly = log_softmax(x, method=method)
            assert np.all(np.isfinite(ly)), (method, x)
            assert np.all(ly <= 1e-6 * np.maximum(1.0, np.abs(x).max()))


@pytest.mark.parametrize("path", PATHS)
@given(x=st.tuples(st.integers(1, 3), st.integers(1, 50)).flatmap(
    lambda s: hnp.arrays(np.float32, s, elements=st.floats(-80, 80, width=32))))
def test_softmax_methods_agree(path, x):
    ref = np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    with optnorm.use_backend(path):
        for method in METHODS:
            assert_close(softmax(x, method=method), ref, rtol=2e-4, atol=1e-6, err_msg=method, check_dtype="float32")
            assert_close(log_softmax(x, method=method), np.log(ref), rtol=1e-4, atol=2e-5, err_msg=method,
                         check_dtype="float32")


@pytest.mark.parametrize("path", PATHS)
@given(x=st.one_of(_scaled_rows(), _mixed))
def test_layer_and_rms_norm_finite(path, x):
    n = x.shape[-1]
    w = np.linspace(0.5, 1.5, n, dtype=np.float32)
    with optnorm.use_backend(path):
        y = layer_norm(x, w, w)
        assert y.dtype == np.float32 and np.all(np.isfinite(y)), x
        assert np.all(np.abs(layer_norm(x)) <= np.sqrt(n) * (1 + 1e-4))
        r = rms_norm(x, w)
        assert np.all(np.isfinite(r)), x
        assert np.all(np.abs(rms_norm(x)) <= np.sqrt(n) * (1 + 1e-4))
        ry = rms_norm(x, eps=1e-6)
        ref = x.astype(np.float64) / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-6)
        assert_close(ry, ref, rtol=1e-4, atol=1e-5, check_dtype="float32")


@given(x=st.tuples(st.integers(1, 3), st.integers(2, 30)).flatmap(
    lambda s: hnp.arrays(np.float16, s, elements=st.floats(-6e4, 6e4, width=16))))
def test_float16_numpy(x):
    x32 = x.astype(np.float32)
    for method in METHODS:
        y = softmax(x, method=method)
        assert y.dtype == np.float16 and np.all(np.isfinite(y))
        assert_close(y, softmax(x32, method="safe"), atol=1e-3, rtol=1e-2, check_dtype="float16")
    y = layer_norm(x)
    assert y.dtype == np.float16 and np.all(np.isfinite(y))
    r = rms_norm(x)
    assert r.dtype == np.float16 and np.all(np.isfinite(r))
    assert_close(r, rms_norm(x32), atol=1e-2, rtol=1e-2, check_dtype="float16")


@given(x=st.tuples(st.integers(1, 3), st.integers(2, 30)).flatmap(
    lambda s: hnp.arrays(np.float32, s, elements=st.floats(float(np.float32(-1e30)), float(np.float32(1e30)), width=32))))
def test_bfloat16_torch(x):
    torch = pytest.importorskip("torch")
    xb = torch.from_numpy(x).to(torch.bfloat16)
    x32 = xb.float()
    for method in METHODS:
        y = softmax(xb, method=method)
        assert y.dtype == torch.bfloat16 and bool(torch.isfinite(y).all())
        assert_close(y, torch.softmax(x32.double(), -1).numpy(), atol=1e-2, rtol=2e-2, check_dtype="bfloat16")
        ly = log_softmax(xb, method=method)
        assert bool(torch.isfinite(ly).all())
    y = layer_norm(xb)
    assert y.dtype == torch.bfloat16 and bool(torch.isfinite(y).all())
    r = rms_norm(xb)
    assert r.dtype == torch.bfloat16 and bool(torch.isfinite(r).all())


# ------------------------------------------------------------------------------------------ the wrapper
def test_serial_and_parallel_builds_agree_and_are_cached_apart():
    from optnorm._numba import norm as nb

    x = np.random.default_rng(0).standard_normal((64, 2048))
    k = nb._softmax_safe_rows
    y1, y2 = np.empty_like(x), np.empty_like(x)
    k.serial(x, y1, False, False)
    k.parallel(x, y2, False, False)
    assert np.array_equal(y1, y2)
    # Numba's disk cache keys code by qualified name and bytecode, not by parallel=: the twin has its own name
    assert k.serial.py_func.__qualname__ != k.parallel.py_func.__qualname__
    assert k.serial.targetoptions.get("parallel") in (False, None) and k.parallel.targetoptions["parallel"]


@pytest.mark.parametrize("shape,axes", [((3, 4, 5), 1), ((3, 4, 5), 0), ((3, 4, 5), 2), ((3, 4, 5), (1, 2)),
                                        ((6,), 0)])
def test_rows_layout_and_out(shape, axes):
    from optnorm._numba._rows import Rows

    x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    rows = Rows(x.shape, axes)
    x2 = rows.view(x)
    assert x2.shape == (rows.count, rows.n) and x2.flags.c_contiguous
    assert np.array_equal(rows.finish(x2.copy()), x)              # view and finish are inverses
    out = np.zeros_like(x)
    buf, o = rows.output(out, x.dtype)
    buf[...] = x2
    assert rows.finish(buf, o) is out and np.array_equal(out, x)
    fo = np.zeros(shape, order="F")                                  # a layout the kernel cannot write directly
    buf, o = rows.output(fo, x.dtype)
    buf[...] = x2
    assert rows.finish(buf, o) is fo and np.array_equal(fo, x)
    with pytest.raises(ValueError, match="trailing axes"):
        Rows((3, 4, 5), (0, 2))
