"""SPD matrices: square roots, Lyapunov, Bures-Wasserstein and generalized BW, RBN, projections, covariances."""
from .._lib.exports import export_modules

__all__ = export_modules(globals(), __name__, ("sqrtm", "lyapunov", "bures", "distances", "batchnorm", "losses", "projections", "covariance", "gaussian"))
