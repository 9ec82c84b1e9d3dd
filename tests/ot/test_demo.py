"""The ot showcase runs in quick mode and writes its plots."""
from __future__ import annotations

from optnorm.ot._demo import showcase


def test_showcase_quick(tmp_path):
    lines = showcase(tmp_path, quick=True)
    for name in ("ot_sw_flow.png", "ot_sw_variance.png", "ot_sinkhorn_vs_sns.png", "ot_boxes_nwd_vs_iou.png",
                 "ot_divergence_flow.png", "ot_barycenter.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
    assert any("Sinkhorn vs SNS" in line for line in lines)
    assert any("SW flow" in line for line in lines)
    assert any("IoU" in line for line in lines)                   # the boxes part (NWD against IoU)
    assert any("Sinkhorn-divergence flow" in line for line in lines)
    assert any("barycenter of 3 histograms" in line for line in lines)
