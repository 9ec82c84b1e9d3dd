"""Optimal transport: exact, 1-D, Gaussian, sliced (MC/QMC/CV, Max-SW, vMF), Sinkhorn, SNS, meshes."""
from .._lib.exports import export_modules

__all__ = export_modules(globals(), __name__, ("exact", "oned", "gaussian", "sliced", "sinkhorn", "sns", "mesh", "boxes", "assignment"))
