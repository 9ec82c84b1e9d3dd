"""Numerical edge cases (hypothesis) of ot and spd functions that were collected with the norm tests: box
distances at huge coordinates and in half precision, Mahalanobis distance at extreme conditioning.  They belong
in tests/ot and tests/spd (left here for the owners of those folders to move)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optnorm.ot import box_wasserstein, normalized_wasserstein_boxes
from optnorm.spd import mahalanobis


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


@given(st.floats(1e-8, 1e8))
def test_mahalanobis_ill_conditioned_scale(s):
    cov = np.diag([s, 1.0, 1.0 / s if s > 1 else s])
    x = np.array([1.0, 2.0, 3.0])
    ref = np.sqrt(np.sum(x ** 2 / np.diag(cov)))
    assert float(mahalanobis(x, np.zeros(3), cov)) == pytest.approx(ref, rel=1e-8)
