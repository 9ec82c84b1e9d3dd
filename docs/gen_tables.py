"""Generate the reference pages' function lists and the backend capability table from the code itself.

Run by ``conf.py`` at every build, so the docs list exactly what the package exports: each domain's
public names, which have a registered VJP (torch/JAX adapters), and which have a Numba or CUDA fast path.
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

DOMAINS = {
    "norm": "Normalization math",
    "ot": "Optimal transport",
    "spd": "SPD matrices and Bures-Wasserstein geometry",
    "optim": "Optimizer update rules",
}


def _fast_paths() -> dict[str, set[str]]:
    from optnorm._lib.dispatch import DISPATCHERS

    out: dict[str, set[str]] = {}
    for name, d in DISPATCHERS.items():
        short = name.rsplit(".", 1)[-1]
        out.setdefault(short, set()).update(p for p in d.paths if p != "generic")
    return out


def write_all(outdir: Path) -> list[str]:
    """Write ``_api_<domain>.rst`` and ``_capabilities.rst`` into ``outdir``; return the API files."""
    from optnorm._lib import ops

    registered = {o.short_name for o in ops.all_ops().values()}
    for d in DOMAINS:
        importlib.import_module(f"optnorm.{d}")
    fast = _fast_paths()
    rows = []
    for d, title in DOMAINS.items():
        mod = importlib.import_module(f"optnorm.{d}")
        names = sorted(getattr(mod, "__all__", []))
        # constants (norm.SELU_ALPHA) are documented in their module's docstring, not as API pages
        names = [n for n in names if callable(getattr(mod, n))]
        lines = [".. currentmodule:: optnorm." + d, "", ".. autosummary::", "   :toctree: generated", ""]
        lines += [f"   {n}" for n in names]
        (outdir / f"_api_{d}.rst").write_text("\n".join(lines) + "\n")
        for n in names:
            obj = getattr(mod, n)
            kind = "class" if inspect.isclass(obj) else "function"
            paths = fast.get(n, set())
            rows.append((f"``{d}.{n}``", kind, "yes" if n in registered else "",
                         "yes" if "numba" in paths else "", "yes" if "cuda" in paths else ""))
    head = ("Function", "Kind", "VJP (torch/JAX adapters)", "Numba", "CUDA")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    sep = "  ".join("=" * w for w in widths)
    fmt = lambda r: "  ".join(c.ljust(w) if c else "-".ljust(w) for c, w in zip(r, widths))  # noqa: E731
    table = [sep, fmt(head), sep, *[fmt(r) for r in rows], sep]
    (outdir / "_capabilities.rst").write_text("\n".join(table) + "\n")
    return [f"_api_{d}.rst" for d in DOMAINS]


if __name__ == "__main__":
    write_all(Path(__file__).parent)
