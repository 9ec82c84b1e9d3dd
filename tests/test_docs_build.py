"""The Sphinx docs build without warnings (``python -m sphinx -W``), as CI requires."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="sphinx is not installed (pip install optnorm[docs])")
    pytest.importorskip("numpydoc", reason="numpydoc is not installed (pip install optnorm[docs])")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"),
           str(DOCS), str(tmp_path / "html")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"sphinx failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert (tmp_path / "html" / "index.html").exists()
    # math renders offline: pages load MathJax from _static, never from a CDN
    page = (tmp_path / "html" / "generated" / "optnorm.norm.softmax.html").read_text()
    assert "_static/mathjax/tex-chtml.js" in page and "cdn.jsdelivr" not in page
    assert (tmp_path / "html" / "_static" / "mathjax" / "tex-chtml.js").exists()
