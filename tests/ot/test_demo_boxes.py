"""The wave-2 showcase runs and writes its plot."""
from __future__ import annotations


def test_boxes_showcase(tmp_path):
    from optnorm.ot._demo_boxes import showcase

    lines = showcase(tmp_path, quick=True)
    assert (tmp_path / "ot_boxes_nwd_vs_iou.png").stat().st_size > 10_000
    assert any("IoU" in line for line in lines)
