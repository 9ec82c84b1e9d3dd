"""Shared fixtures: ``xp`` runs a test body on every array library; ``path`` on every dispatch path.

Backends: numpy, array_api_strict, torch, jax (x64 enabled), cupy (skipped with a
reason when CuPy or a CUDA device is missing).  Tests build inputs in NumPy and
move them with ``xp.asarray``; results come back with ``optnorm.testing.assert_close``.
"""
from __future__ import annotations

import importlib
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import optnorm
from optnorm._lib.dispatch import cupy_available

settings.register_profile("ci", max_examples=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors])
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _namespace(name: str):
    if name == "numpy":
        return importlib.import_module("array_api_compat.numpy")
    if name == "array_api_strict":
        return pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    if name == "torch":
        pytest.importorskip("torch", reason="torch is not installed (pip install optnorm[torch])")
        return importlib.import_module("array_api_compat.torch")
    if name == "jax":
        jax = pytest.importorskip("jax", reason="jax is not installed (pip install optnorm[jax])")
        jax.config.update("jax_enable_x64", True)
        return importlib.import_module("jax.numpy")
    if name == "cupy":
        if not cupy_available():
            pytest.skip("CuPy with a CUDA device is not available on this machine")
        return importlib.import_module("array_api_compat.cupy")
    raise ValueError(name)


BACKENDS = ["numpy", "array_api_strict", "torch", "jax",
            pytest.param("cupy", marks=pytest.mark.gpu)]


@pytest.fixture(params=BACKENDS)
def xp(request):
    """Array-API namespace of one library; every test using it runs once per library."""
    return _namespace(request.param)


@pytest.fixture(params=["generic", "numba"])
def path(request):
    """Force one dispatch path for NumPy inputs (the numba path must match the generic one)."""
    with optnorm.use_backend(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def pytest_configure(config):
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
    except ImportError:
        pass
