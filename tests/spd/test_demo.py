"""The spd showcase runs (quick) and writes its plots."""
from __future__ import annotations

import pytest


def test_showcase_quick(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    from optnorm.spd._demo import showcase

    lines = showcase(tmp_path, quick=True)
    assert (tmp_path / "spd_bw_geodesic.png").stat().st_size > 10_000
    assert (tmp_path / "spd_rbn_sessions.png").stat().st_size > 10_000
    assert (tmp_path / "spd_mdm.png").stat().st_size > 10_000
    acc = [line for line in lines if "accuracy:" in line][0]
    assert "optnorm MDM" in acc
    assert any("constant speed" in line for line in lines)
    speed = [line for line in lines if "constant speed" in line][0]
    ratios = [float(x) for x in speed.split(":")[-1].split("(")[0].split(",")]
    assert ratios == pytest.approx([0.25, 0.5, 0.75], abs=1e-6)
