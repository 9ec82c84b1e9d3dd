"""Optimizer update rules with a functional init/step contract (optax-style), torch and optax wrappers."""
from .._lib.exports import export_modules

__all__ = export_modules(globals(), __name__, ("base", "transforms", "sgd", "adam", "sign", "muon", "matrix", "stateless", "second_order", "hutchinson", "lowrank", "scaling", "reparam", "tract"))
