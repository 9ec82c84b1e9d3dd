"""The command line: info, demo (quick) and bench argument handling."""
from __future__ import annotations

import subprocess
import sys

import pytest

from optnorm.__main__ import DOMAINS, main


def test_info_runs(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "GPU (CuPy)" in out and "numba threads" in out


def test_demo_rejects_unknown_domain():
    with pytest.raises(SystemExit):
        main(["demo", "nonsense"])


def test_bench_unknown_suite_fails_cleanly(capsys):
    assert main(["bench", "no_such_suite"]) == 2


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "optnorm", "info"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "optnorm" in proc.stdout


@pytest.mark.parametrize("domain", DOMAINS)
def test_demo_quick_writes_plots(domain, tmp_path, capsys):
    """``python -m optnorm demo --quick DOMAIN`` prints its table and writes at least one PNG."""
    from pathlib import Path

    import optnorm

    pkg = Path(optnorm.__file__).parent / domain
    if not list(pkg.glob("_demo*.py")):
        pytest.fail(f"optnorm.{domain} has no showcase (_demo.py)")
    assert main(["demo", "--quick", "--out", str(tmp_path), domain]) == 0
    assert list(tmp_path.glob("*.png")), f"the {domain} showcase wrote no plot"
