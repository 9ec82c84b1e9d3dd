"""Optimal transport: exact, 1-D, Gaussian, sliced (MC/QMC/CV, Max-SW, vMF), Sinkhorn, SNS, meshes."""
from .._lib.exports import export_modules, wrap_blockwise

__all__ = export_modules(globals(), __name__, ("exact", "oned", "gaussian", "sliced", "sinkhorn", "sns", "mesh", "boxes", "assignment"))

# Dask scale-out: these batched functions take Dask arrays and run chunk by chunk (NumPy/Numba path inside).
SCALEOUT = {
    "sliced_wasserstein": ("(n,d),(m,d)->()", {"array_args": 2, "vectorize": True}),
    "wasserstein_1d": ("(n),(m)->()", {"array_args": 2}),
}
wrap_blockwise(globals(), SCALEOUT)
