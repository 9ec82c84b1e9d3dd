"""Normalization math: softmax family, losses, normalization layers, activations, attention."""
from .._lib.exports import export_modules, wrap_blockwise

__all__ = export_modules(globals(), __name__, ("softmax", "losses", "layer", "batch", "weight", "activations", "spatial", "attention", "gates", "inline", "random_features", "metric_losses", "instance", "folding", "continual"))

# Dask scale-out: these batched functions take Dask arrays and run chunk by chunk (NumPy/Numba path inside).
SCALEOUT = {
    "softmax": ("(n)->(n)", {"axis_arg": "axis"}),
    "log_softmax": ("(n)->(n)", {"axis_arg": "axis"}),
    "rms_norm": ("(n)->(n)", {"axis_arg": "axis"}),
    "layer_norm": ("(n)->(n)", {"axis_arg": "axis"}),
}
wrap_blockwise(globals(), SCALEOUT)
