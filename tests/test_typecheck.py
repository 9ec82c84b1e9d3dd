"""Types: the package type-checks with mypy at the level set in pyproject.toml ([tool.mypy]: mypy's default
checks, third-party modules without stubs as Any), ships ``py.typed`` and generated domain stubs, and every
public function is annotated (arrays as :data:`optnorm._lib.typing.Array`)."""
from __future__ import annotations

import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from optnorm._lib import api, stubs

ROOT = Path(__file__).resolve().parent.parent


def test_py_typed_and_stubs_are_current():
    assert (ROOT / "optnorm" / "py.typed").exists()
    stale = [d for d in api.DOMAINS if not stubs.path(d).exists() or stubs.path(d).read_text() != stubs.render(d)]
    assert not stale, f"domain stubs out of date for {stale}: run `python -m optnorm._lib.stubs`"


@pytest.mark.parametrize("domain", api.DOMAINS)
def test_public_functions_are_annotated(domain):
    bare = {}
    for f in api.functions(domain):
        sig = inspect.signature(f.body)
        missing = [p for p, par in sig.parameters.items() if par.annotation is par.empty]
        if sig.return_annotation is sig.empty:
            missing.append("return")
        if missing:
            bare[f.short_name] = missing
    assert not bare, f"{len(bare)} public functions of optnorm.{domain} lack annotations: {bare}"


@pytest.mark.skipif(shutil.which("mypy") is None and not any(
    (Path(p) / "mypy").exists() for p in sys.path), reason="mypy is not installed (pip install optnorm[test])")
def test_mypy_passes():
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    errors = [ln for ln in proc.stdout.splitlines() if ": error:" in ln]
    assert proc.returncode == 0 and not errors, "mypy found errors:\n" + "\n".join(errors[:60]) + proc.stderr[-2000:]
