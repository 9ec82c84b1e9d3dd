"""Attention variants: sigmoid attention, linear-time attention (linear, NaLa, MALA, InLine), SOFT with the
Newton-Schulz pseudo-inverse, selective attention, and random-feature (FAVOR+) attention.

The modules declare their public functions; :func:`optnorm._lib.api.export_domain` finds them and exports
them from :mod:`optnorm.norm` (``optnorm.norm.sigmoid_attention``, ...).
"""
