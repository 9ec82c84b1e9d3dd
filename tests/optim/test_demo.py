"""The optim showcase runs in quick mode and writes its plot."""
from __future__ import annotations

import pytest


def test_showcase_quick(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is needed for the showcase plot")
    pytest.importorskip("sklearn", reason="scikit-learn provides the digits data")
    from optnorm.optim._demo import showcase

    lines = showcase(tmp_path, quick=True)
    png = tmp_path / "optim_digits_loss.png"
    assert png.exists() and png.stat().st_size > 10_000
    assert any(line.startswith("muon") for line in lines) and len(lines) >= 14


def test_mlp_gradient_is_correct():
    import numpy as np

    from optnorm.optim._demo import _init, loss_grad

    rng = np.random.default_rng(0)
    p = _init(rng, hidden=5)
    X = rng.standard_normal((7, 64))
    y = rng.integers(0, 10, 7)
    _, g = loss_grad(p, X, y)
    h = 1e-6
    for k in p:
        v = rng.standard_normal(p[k].shape)
        fp = loss_grad({**p, k: p[k] + h * v}, X, y)[0]
        fm = loss_grad({**p, k: p[k] - h * v}, X, y)[0]
        assert abs((fp - fm) / (2 * h) - float((g[k] * v).sum())) < 1e-6
