"""Numerical edge cases (hypothesis): extreme magnitudes, ties, huge coordinates, half precision."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import optnorm
from optnorm.norm import moe_gate, soft_topk, topk_softmax
from optnorm.ot import box_wasserstein, normalized_wasserstein_boxes
from optnorm.spd import mahalanobis

finite = st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False, width=64)


@given(arrays(np.float64, (4, 7), elements=finite), st.integers(1, 7),
       st.sampled_from([1e-3, 1.0, 1e3]))
def test_topk_softmax_extremes(x, k, t):
    for backend in ("generic", "numba"):
        with optnorm.use_backend(backend):
            y = topk_softmax(x, k=k, temperature=t)
        assert np.all(np.isfinite(y)) and np.all(y >= 0)
        np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-12)
        assert np.all((y > 0).sum(-1) <= k)


@given(arrays(np.float32, (3, 9), elements=st.floats(-1e4, 1e4, width=32)), st.integers(1, 8))
def test_soft_topk_extremes_float32(x, k):
    p = soft_topk(x, k=k, alpha=1.0)
    assert p.dtype == np.float32 and np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(-1), k, rtol=1e-4, atol=1e-3)


@given(arrays(np.float64, (5,), elements=st.floats(-50, 50)), st.sampled_from([None, "tanh", "sigmoid"]))
def test_moe_gate_sums_to_one(x, act):
    g = moe_gate(x, activation=act, temperature=0.05)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g.sum(), 1.0, rtol=1e-12)


@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.floats(0.0, 1e3), st.floats(0.0, 1e3),
       st.floats(-1e3, 1e3), st.floats(0.0, 1e3), st.floats(0.0, 1e3))
def test_box_distance_huge_coordinates(cx, cy, w1, h1, shift, w2, h2):
    b1 = np.array([[cx, cy, w1, h1]])
    b2 = np.array([[cx + shift, cy, w2, h2]])
    d2 = float(box_wasserstein(b1, b2, format="cxcywh", squared=True)[0])
    ref = shift ** 2 + (w1 - w2) ** 2 / 4 + (h1 - h2) ** 2 / 4
    assert d2 == pytest.approx(ref, rel=1e-6, abs=1e-6 * max(1.0, abs(cx), abs(cy)))
    nwd = normalized_wasserstein_boxes(b1.astype(np.float32), b2.astype(np.float32), format="cxcywh", pairwise=True)
    assert 0.0 <= float(nwd[0, 0]) <= 1.0


def test_float16_and_bfloat16_torch():
    torch = pytest.importorskip("torch")
    for dt in (torch.float16, torch.bfloat16):
        b = torch.tensor([[0.0, 0.0, 4.0, 2.0], [1.0, 1.0, 3.0, 5.0]], dtype=dt)
        y = normalized_wasserstein_boxes(b, b.flip(0))
        assert y.dtype == dt and torch.all(torch.isfinite(y))
        x = torch.randn(3, 4, dtype=dt)
        assert topk_softmax(x, k=2).dtype == dt
        assert soft_topk(x, k=2).dtype == dt


@given(st.floats(1e-8, 1e8))
def test_mahalanobis_ill_conditioned_scale(s):
    cov = np.diag([s, 1.0, 1.0 / s if s > 1 else s])
    x = np.array([1.0, 2.0, 3.0])
    ref = np.sqrt(np.sum(x ** 2 / np.diag(cov)))
    assert float(mahalanobis(x, np.zeros(3), cov)) == pytest.approx(ref, rel=1e-8)
