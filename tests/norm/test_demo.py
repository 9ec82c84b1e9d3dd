"""The norm showcase runs in quick mode and writes its plots."""
from __future__ import annotations

import pytest


def test_showcase_quick(tmp_path):
    pytest.importorskip("matplotlib", reason="the showcase draws its plots with matplotlib")
    from optnorm.norm._demo import showcase

    lines = showcase(tmp_path, quick=True)
    for name in ("norm_softmax_accuracy.png", "norm_speed.png"):
        p = tmp_path / name
        assert p.exists() and p.stat().st_size > 1000, name
    text = "\n".join(lines)
    assert "optnorm two_pass" in text and "rms_norm" in text
    # the naive numpy softmax overflows at large scales; optnorm's methods never do
    naive = next(line for line in lines if "naive" in line)
    assert naive.rstrip().endswith("NaN")
    for m in ("safe", "online", "two_pass"):
        row = next(line for line in lines if f"optnorm {m}" in line)
        assert "NaN" not in row
