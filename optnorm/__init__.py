"""optnorm: optimal transport, SPD geometry, normalization math and optimizer update rules on any Array-API array.

Domains load lazily, so ``import optnorm`` stays fast::

    import optnorm
    optnorm.norm.softmax(x)          # imports optnorm.norm on first use
    with optnorm.use_backend("generic"):
        ...                          # force the Array-API path (no Numba/CUDA fast path)
"""
from __future__ import annotations

import importlib

from ._lib.convergence import ConvergenceWarning
from ._lib.dispatch import get_backend, use_backend

__version__ = "0.1.0"
__all__ = ["norm", "ot", "spd", "optim", "testing", "use_backend", "get_backend", "ConvergenceWarning",
           "__version__"]

_LAZY = {"norm", "ot", "spd", "optim", "testing", "torch", "jax"}


def __getattr__(name: str):
    if name in _LAZY:
        mod = importlib.import_module(f"optnorm.{name}")
        globals()[name] = mod
        return mod
    raise AttributeError(f"module 'optnorm' has no attribute {name!r}")


def __dir__():
    return sorted(set(__all__) | _LAZY)
