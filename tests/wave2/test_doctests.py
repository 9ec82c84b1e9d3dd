"""The examples in the wave-2 docstrings run and print what they say."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["optnorm.ot.boxes", "optnorm.ot.assignment", "optnorm.spd.gaussian", "optnorm.norm.gates",
           "optnorm.norm.inline", "optnorm.norm.metric_losses", "optnorm.norm.instance", "optnorm.norm.folding",
           "optnorm.norm.continual", "optnorm.optim.tract"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0, f"{name}: {res.failed} of {res.attempted} doctest examples failed"
    assert res.attempted > 0
