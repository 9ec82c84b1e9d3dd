"""The examples in every public docstring run and print what they say (every module of every domain)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import optnorm
from optnorm._lib import api


def _modules():
    names = []
    for d in api.DOMAINS:
        pkg = importlib.import_module(f"optnorm.{d}")
        names += [f"optnorm.{d}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert res.failed == 0, f"{name}: {res.failed} of {res.attempted} doctest examples failed"
