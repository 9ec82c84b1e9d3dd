"""Kernels loaded from the on-disk Numba cache compute bit for bit what freshly compiled ones do, in every
domain (the parallel fastmath policy of optnorm/_numba/_rows.py).  ot has its own case in tests/ot; the
optimizer rules are factories whose generated example calls do not reach the multi-tensor kernels, which
tests/optim/test_standard_rules.py checks fresh against cached."""
from __future__ import annotations

import importlib.util

import pytest

from optnorm._lib import api
from optnorm.testing import check_numba_cache

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba is not installed")


@pytest.mark.slow
@pytest.mark.parametrize("domain", [d for d in api.DOMAINS if d not in ("ot", "optim")])
def test_kernels_fresh_equal_cached(domain, tmp_path):
    check_numba_cache(domain, tmp_path)
