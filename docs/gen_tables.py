"""Generate the reference pages' function lists and the backend capability table from the code itself.

Run by ``conf.py`` at every build, so the docs list exactly what the package exports: each domain's
public names, which have a registered VJP (torch/JAX adapters), and which have a Numba or CUDA fast path.
"""
from __future__ import annotations

from pathlib import Path

DOMAINS = {
    "norm": "Normalization math",
    "ot": "Optimal transport",
    "spd": "SPD matrices and Bures-Wasserstein geometry",
    "optim": "Optimizer update rules",
}


def write_all(outdir: Path) -> list[str]:
    """Write ``_api_<domain>.rst`` and ``_capabilities.rst`` into ``outdir``; return the API files.

    Every row comes from the registry (:mod:`optnorm._lib.api`): the declared public names, whether
    each has a VJP, which fast paths serve it (dispatchers name the functions they serve), and its
    Dask gufunc signature.
    """
    from optnorm._lib import api
    from optnorm._lib.dispatch import fast_paths

    fast = fast_paths()
    rows = []
    for d, title in DOMAINS.items():
        entries = [f for f in api.functions(d, kind=None) if f.kind != "constant"]
        names = sorted(f.short_name for f in entries)
        lines = [".. currentmodule:: optnorm." + d, "", ".. autosummary::", "   :toctree: generated", ""]
        lines += [f"   {n}" for n in names]
        (outdir / f"_api_{d}.rst").write_text("\n".join(lines) + "\n")
        for f in sorted(entries, key=lambda e: e.short_name):
            paths = fast.get(f.name, set())
            dask = f.gufunc[0] if isinstance(f.gufunc, tuple) else (f.gufunc or "")
            rows.append((f"``{f.name}``", f.kind, "yes" if f.op is not None else "",
                         "yes" if "numba" in paths else "", "yes" if "cuda" in paths else "",
                         f"``{dask}``" if dask else ""))
    head = ("Function", "Kind", "VJP", "Numba", "CUDA", "Dask")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    sep = "  ".join("=" * w for w in widths)
    fmt = lambda r: "  ".join(c.ljust(w) if c else "-".ljust(w) for c, w in zip(r, widths))  # noqa: E731
    table = [sep, fmt(head), sep, *[fmt(r) for r in rows], sep]
    (outdir / "_capabilities.rst").write_text("\n".join(table) + "\n")
    write_adapters(outdir)
    return [f"_api_{d}.rst" for d in DOMAINS] + ["_api_adapters.rst"]


def write_adapters(outdir: Path) -> None:
    """``_api_adapters.rst``: the torch and JAX adapters' functions and optimizer wrappers, from the registry
    (every op with a VJP; every rule factory of optnorm.optim, under its torch class / optax name)."""
    from optnorm._lib import api
    from optnorm.optim.base import rule_factories

    ops = sorted(f.short_name for f in api.functions() if f.op is not None)
    rules = rule_factories()
    classes = sorted(getattr(f.body, "__optnorm_rule__") for f in rules)
    funcs = sorted(f.short_name for f in rules)

    def block(module, names, helpers=()):
        out = [f".. currentmodule:: {module}", "", ".. autosummary::", "   :toctree: generated", ""]
        return out + [f"   {n}" for n in (*helpers, *names)] + [""]

    lines = ["optnorm.torch", "-------------", "",
             "Every differentiable function as a ``torch.autograd.Function`` running optnorm's forward and VJP.", ""]
    lines += block("optnorm.torch", ops, ("apply", "op"))
    lines += ["optnorm.torch.optim", "-------------------", "",
              "Every optimizer rule as a ``torch.optim.Optimizer``.", ""]
    lines += block("optnorm.torch.optim", classes)
    lines += ["optnorm.jax", "-----------", "", "Every differentiable function with its VJP as a ``jax.custom_vjp``.", ""]
    lines += block("optnorm.jax", ops, ("apply", "op"))
    lines += ["optnorm.jax.optax", "-----------------", "", "Every optimizer rule as an optax ``GradientTransformation``.", ""]
    lines += block("optnorm.jax.optax", funcs)
    (outdir / "_api_adapters.rst").write_text("\n".join(lines))


if __name__ == "__main__":
    write_all(Path(__file__).parent)
