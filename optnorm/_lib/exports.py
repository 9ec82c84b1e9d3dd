"""Re-export the public names of a domain's modules from the domain package.

Each domain ``__init__`` lists its modules; every module that exists is imported
and its ``__all__`` copied up, so modules can be added without editing a shared list
of names (and without two contributors editing one import block).
"""
from __future__ import annotations

import importlib
import importlib.util
import types


def export_modules(namespace: dict, package: str, modules: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for m in modules:
        full = f"{package}.{m}"
        if importlib.util.find_spec(full) is None:
            continue
        mod = importlib.import_module(full)
        for n in getattr(mod, "__all__", ()):
            prev = namespace.get(n)
            if isinstance(prev, types.ModuleType) and prev.__name__ == f"{package}.{n}":
                prev = None  # the submodule named like its function (norm.softmax): the function replaces it
            if prev is not None and prev is not getattr(mod, n):
                raise ImportError(f"{package}: {n!r} is exported by two modules ({m} and another)")
            namespace[n] = getattr(mod, n)
            names.append(n)
    return names


def wrap_blockwise(namespace: dict, table: dict[str, tuple[str, dict]]) -> None:
    """Give the listed public functions a Dask path (see :func:`optnorm._lib.dispatch.blockwise`).

    ``table`` maps a public name to ``(gufunc signature, options)``; names the domain does not
    export are ignored, so a domain's scale-out table stays one readable list.
    """
    from .dispatch import blockwise

    for name, (signature, opts) in table.items():
        if name in namespace:
            namespace[name] = blockwise(signature, **opts)(namespace[name])
