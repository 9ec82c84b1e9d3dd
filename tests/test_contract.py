"""The generated contract suite: every declared public function against bad, extreme and aliased input.

Cases come from the declarations (:mod:`optnorm._lib.contract`); a new public function is covered
by being declared.  ``-m slow`` adds the float32 magnitude cases.
"""
from __future__ import annotations

import pytest

from optnorm._lib import contract

_ALL = contract.cases()
_FAST = [c for c in _ALL if c.dtype == "float64"]
_SLOW = [c for c in _ALL if c.dtype != "float64"]


@pytest.mark.parametrize("case", _FAST, ids=[c.id for c in _FAST])
def test_contract(case):
    contract.run_case(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", _SLOW, ids=[c.id for c in _SLOW])
def test_contract_float32(case):
    contract.run_case(case)


def test_cases_cover_every_declared_function():
    from optnorm._lib import api

    covered = {c.fn for c in _ALL}
    skipped = {f.name for f in api.functions() if "skip" in f.contract}
    missing = {f.name for f in api.functions()} - covered - skipped
    assert not missing, f"declared functions without contract cases: {sorted(missing)}"
