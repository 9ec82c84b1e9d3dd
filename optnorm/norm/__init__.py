"""Normalization math: softmax family, losses, normalization layers, activations, attention."""
from .._lib.exports import export_modules

__all__ = export_modules(globals(), __name__, ("softmax", "losses", "layer", "batch", "weight", "activations", "spatial", "attention", "gates", "inline", "random_features", "metric_losses", "instance", "folding", "continual"))
