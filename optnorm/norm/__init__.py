"""Normalization math: softmax family, losses, normalization layers, activations, attention."""
from .._lib.api import export_domain

__all__ = export_domain(globals(), __name__)
