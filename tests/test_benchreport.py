"""The benchmark report turns one pytest-benchmark JSON run into ratios against optnorm's fastest entry."""
from __future__ import annotations

import json

from optnorm._lib import benchreport


def test_report_ratios_and_files(tmp_path):
    def entry(name, group, med):
        return {"name": name, "group": group, "stats": {"median": med}}

    data = {"machine_info": {"cpu": {"brand_raw": "TestCPU"}, "python_version": "3.11"},
            "benchmarks": [entry("test_x[optnorm alloc]", "softmax", 0.004), entry("test_x[optnorm prealloc]", "softmax", 0.002),
                           entry("test_x[torch]", "softmax", 0.006), entry("test_floor", "copy", 0.001)]}
    js = tmp_path / "b.json"
    js.write_text(json.dumps(data))
    md = benchreport.write_report(js, tmp_path / "out")
    text = md.read_text()
    assert "TestCPU" in text
    assert "| softmax | x[torch] | 6.000 ms | 3.00x |" in text  # 6 ms / optnorm's fastest 2 ms
    assert "| softmax | x[optnorm alloc] | 4.000 ms | 2.00x |" in text
    assert (tmp_path / "out" / "benchmark-ratios.png").exists()
