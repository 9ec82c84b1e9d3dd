"""SPD matrices: square roots, Lyapunov, Bures-Wasserstein and generalized BW, RBN, projections, covariances."""
from .._lib.api import export_domain

__all__ = export_domain(globals(), __name__)
