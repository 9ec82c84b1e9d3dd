"""Normalization math: softmax family, losses, normalization layers, activations, attention."""
from .._lib.api import export_domain
from .._lib.exports import wrap_blockwise

__all__ = export_domain(globals(), __name__)

# Dask scale-out: these batched functions take Dask arrays and run chunk by chunk (NumPy/Numba path inside).
SCALEOUT = {
    "rms_norm": ("(n)->(n)", {"axis_arg": "axis"}),
    "layer_norm": ("(n)->(n)", {"axis_arg": "axis"}),
}
wrap_blockwise(globals(), SCALEOUT)
