"""Optimal transport: exact (network simplex), 1-D, Gaussian and boxes, sliced (MC/QMC/CV, Max-SW, vMF, sphere),
Sinkhorn (dense or lazy point clouds), unbalanced, the debiased Sinkhorn divergence, barycenters, Gromov-Wasserstein,
partial, SNS, meshes, assignment."""
from .._lib.api import export_domain

__all__ = export_domain(globals(), __name__)
