"""Optimizer update rules with a functional init/step contract (optax-style), torch and optax wrappers."""
from .._lib.api import export_domain

__all__ = export_domain(globals(), __name__)
