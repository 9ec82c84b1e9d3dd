"""Compile and cache the CUDA sources with CuPy ``RawModule`` (NVRTC), once per device and source.

Each ``<domain>.cu`` declares the template instantiations it exports in comment lines::

    // optnorm-kernel: softmax_fwd<float>
    // optnorm-kernel: softmax_fwd<double>

and may ``#include "common.cuh"`` (shared reductions and the online (max, sum) merge): the loader
inlines the header, so NVRTC needs no include path.  :func:`kernel` returns the compiled
``RawKernel`` of one expression; sources, expressions, modules and kernels are cached (per device
for the compiled ones), so a launch costs a dictionary lookup.  The CPU test suite compiles every
expanded source with ``nvcc -ptx`` and instantiates each declared expression.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

__all__ = ["sources", "source_text", "name_expressions", "module", "kernel", "dtype_name", "OPTIONS"]

_HERE = Path(__file__).parent
_DECL = re.compile(r"^\s*//\s*optnorm-kernel:\s*(\S.*?)\s*$", re.M)
_INCLUDE = re.compile(r'^\s*#include\s+"([\w.]+\.cuh)"\s*$', re.M)
OPTIONS = ("-std=c++17",)


@functools.lru_cache(maxsize=None)
def sources() -> dict[str, Path]:
    """Domain name -> path of its ``.cu`` source."""
    return {p.stem: p for p in sorted(_HERE.glob("*.cu"))}


@functools.lru_cache(maxsize=None)
def source_text(domain: str) -> str:
    """The source of ``<domain>.cu`` with its ``#include "x.cuh"`` lines replaced by the headers' text."""
    seen: set[str] = set()

    def expand(text: str) -> str:
        def sub(m):
            name = m.group(1)
            if name in seen:
                return ""
            seen.add(name)
            return expand((_HERE / name).read_text().replace("#pragma once", ""))

        return _INCLUDE.sub(sub, text)

    return expand(sources()[domain].read_text())


@functools.lru_cache(maxsize=None)
def name_expressions(domain: str) -> tuple[str, ...]:
    return tuple(_DECL.findall(sources()[domain].read_text()))


def dtype_name(dtype) -> str:
    """C type for a NumPy/CuPy dtype: float, double or __half."""
    import numpy as np

    dt = np.dtype(dtype)
    names = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.float16): "__half"}
    try:
        return names[dt]
    except KeyError:
        raise TypeError(f"no CUDA kernel for dtype {dt}") from None


@functools.lru_cache(maxsize=None)
def _module(domain: str, device_id: int):
    import cupy

    with cupy.cuda.Device(device_id):
        mod = cupy.RawModule(code=source_text(domain), options=OPTIONS, name_expressions=list(name_expressions(domain)))
        mod.compile()
        return mod


def module(domain: str):
    """The compiled ``RawModule`` of ``<domain>.cu`` on the current device."""
    import cupy

    return _module(domain, cupy.cuda.Device().id)


@functools.lru_cache(maxsize=None)
def _kernel(domain: str, expression: str, device_id: int):
    if expression not in name_expressions(domain):
        raise KeyError(f"{expression!r} is not declared in {domain}.cu (add a '// optnorm-kernel:' line)")
    return _module(domain, device_id).get_function(expression)


def kernel(domain: str, name: str, dtype=None):
    """The ``RawKernel`` of a declared expression on the current device.

    ``kernel("norm", "softmax_fwd", x.dtype)`` is ``kernel("norm", "softmax_fwd<float>")`` for float32.
    """
    import cupy

    expr = name if dtype is None else f"{name}<{dtype_name(dtype)}>"
    return _kernel(domain, expr, cupy.cuda.Device().id)
