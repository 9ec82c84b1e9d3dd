"""Property tests: finite inputs of any float32 magnitude (1e-30..1e30) never give NaN/inf, on both NumPy paths;
half-precision inputs are accumulated in float32."""
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
            assert_close(softmax(x, method=method), ref, rtol=2e-4, atol=1e-6, err_msg=method)
            assert_close(log_softmax(x, method=method), np.log(ref), rtol=1e-4, atol=2e-5, err_msg=method)


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
        assert_close(ry, ref, rtol=1e-4, atol=1e-5)


@given(x=st.tuples(st.integers(1, 3), st.integers(2, 30)).flatmap(
    lambda s: hnp.arrays(np.float16, s, elements=st.floats(-6e4, 6e4, width=16))))
def test_float16_numpy(x):
    x32 = x.astype(np.float32)
    for method in METHODS:
        y = softmax(x, method=method)
        assert y.dtype == np.float16 and np.all(np.isfinite(y))
        assert_close(y, softmax(x32, method="safe"), atol=1e-3, rtol=1e-2)
    y = layer_norm(x)
    assert y.dtype == np.float16 and np.all(np.isfinite(y))
    r = rms_norm(x)
    assert r.dtype == np.float16 and np.all(np.isfinite(r))
    assert_close(r, rms_norm(x32), atol=1e-2, rtol=1e-2)


@given(x=st.tuples(st.integers(1, 3), st.integers(2, 30)).flatmap(
    lambda s: hnp.arrays(np.float32, s, elements=st.floats(float(np.float32(-1e30)), float(np.float32(1e30)), width=32))))
def test_bfloat16_torch(x):
    torch = pytest.importorskip("torch")
    xb = torch.from_numpy(x).to(torch.bfloat16)
    x32 = xb.float()
    for method in METHODS:
        y = softmax(xb, method=method)
        assert y.dtype == torch.bfloat16 and bool(torch.isfinite(y).all())
        assert_close(y, torch.softmax(x32.double(), -1).numpy(), atol=1e-2, rtol=2e-2)
        ly = log_softmax(xb, method=method)
        assert bool(torch.isfinite(ly).all())
    y = layer_norm(xb)
    assert y.dtype == torch.bfloat16 and bool(torch.isfinite(y).all())
    r = rms_norm(xb)
    assert r.dtype == torch.bfloat16 and bool(torch.isfinite(r).all())
