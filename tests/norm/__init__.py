"""Tests of :mod:`optnorm.norm`, one test module per module of the package."""
from __future__ import annotations

import pytest


class LazyModule:
    """A module imported on first attribute access: a test that uses it is skipped when the module is missing,
    and only that test (a module-level ``importorskip`` would skip every test of the file)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(pytest.importorskip(self._name, reason=f"{self._name} is not installed"), attr)


torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")
jax = LazyModule("jax")
