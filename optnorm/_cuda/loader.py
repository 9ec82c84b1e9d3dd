"""Compile and cache the CUDA sources with CuPy ``RawModule`` (NVRTC), once per device and source.

Each ``<domain>.cu`` declares the template instantiations it exports in comment lines::

    // optnorm-kernel: softmax_rows<float>
    // optnorm-kernel: softmax_rows<double>

:func:`kernel` returns the compiled ``RawKernel`` for one of them;
:func:`name_expressions` is also used by the CPU test suite, which compiles
every source with ``nvcc -ptx`` and instantiates each declared expression.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

__all__ = ["sources", "name_expressions", "module", "kernel", "dtype_name"]

_HERE = Path(__file__).parent
_DECL = re.compile(r"^\s*//\s*optnorm-kernel:\s*(\S.*?)\s*$", re.M)
OPTIONS = ("-std=c++17",)


def sources() -> dict[str, Path]:
    """Domain name -> path of its ``.cu`` source."""
    return {p.stem: p for p in sorted(_HERE.glob("*.cu"))}


def name_expressions(domain: str) -> list[str]:
    return _DECL.findall(sources()[domain].read_text())


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
        src = sources()[domain].read_text()
        mod = cupy.RawModule(code=src, options=OPTIONS, name_expressions=name_expressions(domain))
        mod.compile()
        return mod


def module(domain: str):
    """The compiled ``RawModule`` of ``<domain>.cu`` on the current device."""
    import cupy

    return _module(domain, cupy.cuda.Device().id)


def kernel(domain: str, expression: str):
    """A ``RawKernel`` for a declared name expression, e.g. ``kernel("norm", "softmax_rows<float>")``."""
    if expression not in name_expressions(domain):
        raise KeyError(f"{expression!r} is not declared in {domain}.cu (add a '// optnorm-kernel:' line)")
    return module(domain).get_function(expression)
