"""Type aliases shared by the public API's annotations.

optnorm takes arrays of several libraries (NumPy, CuPy, torch, JAX, any Array-API array), which share
no common static type; :data:`Array` documents "an array of any supported library" in signatures and
type-checks as :class:`typing.Any`.  Shapes and dtypes are documented per argument in the docstrings
and enforced at run time by the roles (:mod:`optnorm._lib.roles`).
"""
from __future__ import annotations

from typing import Any, Callable, Union

import numpy as np

from typing import TypeAlias

__all__ = ["Array", "ArrayLike", "Seed", "Schedule", "Scalar"]

#: An array of any supported library (NumPy, CuPy, torch, JAX, array-api-strict).
Array: TypeAlias = Any
#: An array or something NumPy reads as one (nested Python lists of numbers, scalars).
ArrayLike: TypeAlias = Any
#: A random seed: None, a non-negative int, or a NumPy Generator.
Seed: TypeAlias = Union[None, int, np.random.Generator]
#: A learning-rate schedule: a function of the step count.
Schedule: TypeAlias = Callable[[int], float]
#: A number, or a 0-d array (traced learning rates under optax.inject_hyperparams).
Scalar: TypeAlias = Union[float, Any]
