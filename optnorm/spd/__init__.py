"""SPD matrices: square roots, Lyapunov, Bures-Wasserstein and generalized BW, RBN, projections, covariances."""
from .._lib.exports import export_modules, wrap_blockwise

__all__ = export_modules(globals(), __name__, ("sqrtm", "lyapunov", "bures", "distances", "batchnorm", "losses", "projections", "covariance", "gaussian"))

# Dask scale-out: these batched functions take Dask arrays and run chunk by chunk (NumPy/Numba path inside).
SCALEOUT = {
    "bw_distance": ("(n,n),(n,n)->()", {"array_args": 2}),
    "airm_distance": ("(n,n),(n,n)->()", {"array_args": 2}),
    "lem_distance": ("(n,n),(n,n)->()", {"array_args": 2}),
    "sqrtm": ("(n,n)->(n,n)", {}),
    "invsqrtm": ("(n,n)->(n,n)", {}),
}
wrap_blockwise(globals(), SCALEOUT)
