"""Kernels loaded from the on-disk Numba cache compute exactly what freshly compiled ones do (issue #13:
sinkhorn2 at costs ~1e300 was finite fresh and NaN cached, because the prange body ran with reassociation
allowed; see optnorm/_numba/_rows.py)."""
from __future__ import annotations

import importlib.util

import pytest

from optnorm.testing import check_numba_cache

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba is not installed")


@pytest.mark.slow
def test_ot_kernels_fresh_equal_cached(tmp_path):
    out = check_numba_cache("ot", tmp_path)
    assert any(k.startswith("ot.sinkhorn2[M:huge") for k in out)      # the case of the issue is among them
