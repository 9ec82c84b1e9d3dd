"""The examples in every public docstring run and print what they say (every module of every domain)."""
from __future__ import annotations

import doctest
import importlib

import pytest

import optnorm
from optnorm._lib import api


def _modules():
    return [m for d in api.DOMAINS for m in api.public_modules(f"optnorm.{d}")]


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert res.failed == 0, f"{name}: {res.failed} of {res.attempted} doctest examples failed"
