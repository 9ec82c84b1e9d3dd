"""Numba kernels, one file per domain (norm.py, ot.py, spd.py, optim.py).

Kernels are plain loops over NumPy arrays, free of Python objects, compiled lazily
on first call and cached on disk (``cache=True``).  Nothing here imports at
``import optnorm`` time: the dispatchers import these modules inside their numba
branches.  :mod:`._rows` turns a row kernel ``kernel(x2d, out2d, ...)`` into a
function of any array and axis, so no kernel handles shapes.
"""
