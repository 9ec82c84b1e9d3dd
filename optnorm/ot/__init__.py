"""Optimal transport: exact, 1-D, Gaussian and boxes, sliced (MC/QMC/CV, Max-SW, vMF), Sinkhorn, SNS, meshes,
assignment."""
from .._lib.api import export_domain

__all__ = export_domain(globals(), __name__)
