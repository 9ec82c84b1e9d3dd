"""Every example the docs include runs (docs/examples/*.py)."""
from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "docs" / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path, capsys):
    if "dask" in path.stem:
        pytest.importorskip("dask.array", reason="dask is not installed")
    if "jax" in path.stem:
        pytest.importorskip("optax", reason="optax is not installed")
    if "torch" in path.stem:
        pytest.importorskip("torch", reason="torch is not installed")
    runpy.run_path(str(path), run_name="__main__")
    assert capsys.readouterr().out.strip(), f"{path.name} printed nothing"
