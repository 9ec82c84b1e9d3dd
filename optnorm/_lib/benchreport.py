"""Turn one pytest-benchmark JSON run into a markdown table and a ratio plot (``python -m optnorm bench``).

Within each benchmark group, the fastest entry whose name contains ``optnorm`` is the reference: every other
entry (the peers, NumPy, the memory-copy floor) gets the ratio ``its median / optnorm's median``, so a
ratio above 1 means optnorm is faster.  The machine is described at the top, because only ratios from
one run on one machine mean anything.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def _machine(info: dict) -> str:
    cpu = info.get("cpu", {}) or {}
    brand = cpu.get("brand_raw") or platform.processor() or platform.machine()
    return (f"{brand}, {os.cpu_count()} logical CPUs, Python {info.get('python_version', platform.python_version())}, "
            f"{info.get('system', platform.system())}")


def load(path: Path) -> tuple[dict, dict[str, list[dict]]]:
    data = json.loads(Path(path).read_text())
    groups: dict[str, list[dict]] = {}
    for b in data.get("benchmarks", []):
        groups.setdefault(b.get("group") or b["name"], []).append(b)
    return data.get("machine_info", {}), groups


def _short(name: str) -> str:
    return name.split("::")[-1].removeprefix("test_")


def rows(groups: dict[str, list[dict]]) -> list[tuple[str, str, float, float | None]]:
    """(group, entry, median seconds, peer/optnorm ratio or None) for every entry."""
    out = []
    for g, entries in sorted(groups.items()):
        ours = [e for e in entries if "optnorm" in e["name"].lower()]
        ref = min(ours, key=lambda e: e["stats"]["median"]) if ours else None  # optnorm's fastest variant
        for e in sorted(entries, key=lambda e: e["stats"]["median"]):
            med = e["stats"]["median"]
            ratio = None if ref is None or e is ref else med / ref["stats"]["median"]
            out.append((g, _short(e["name"]), med, ratio))
    return out


def markdown(machine: dict, table: list[tuple[str, str, float, float | None]]) -> str:
    lines = [f"Machine: {_machine(machine)}", "",
             "| group | implementation | median | time / optnorm's |", "|---|---|---:|---:|"]
    for g, name, med, ratio in table:
        r = "reference" if ratio is None and "optnorm" in name.lower() else ("" if ratio is None else f"{ratio:.2f}x")
        lines.append(f"| {g} | {name} | {med * 1e3:.3f} ms | {r} |")
    lines += ["", "A ratio above 1 means the other implementation took longer than optnorm in the same run."]
    return "\n".join(lines) + "\n"


def _suite(entry: dict) -> str:
    """The benchmark file an entry comes from (``bench_norm.py`` -> ``norm``), else ``other``."""
    full = entry.get("fullname", "")
    stem = full.split("::", 1)[0].rsplit("/", 1)[-1]
    return stem.removeprefix("bench_").removesuffix(".py") if stem.startswith("bench_") else "other"


def suites(groups: dict[str, list[dict]]) -> dict[str, str]:
    """group -> suite (the benchmark file of its first entry)."""
    return {g: _suite(entries[0]) for g, entries in groups.items()}


def _kind(name: str) -> str:
    low = name.lower()
    if "floor" in low:
        return "floor"
    if "optnorm" in low:
        return "optnorm"
    return "peer"


def _impl(name: str, group: str = "") -> str:
    """An entry's name without what its group already says: ``norm_fwd[torch alloc-layer_norm-4096x8192]`` in
    group ``layer_norm fwd 4096x8192`` -> ``norm_fwd[torch alloc]``."""
    if "[" not in name or not name.endswith("]"):
        return name
    prefix, inner = name[:name.index("[")], name[name.index("[") + 1:-1]
    kept = [t for t in inner.split("-") if t and t not in group]
    return f"{prefix}[{'-'.join(kept)}]" if kept else prefix


def plot(table, path: Path, suite_of: dict[str, str] | None = None) -> None:
    """One panel per suite, in two columns: each bar is a peer's (blue) or a hardware floor's (orange, hatched)
    time over optnorm's fastest entry in the same group, on a log axis with parity (1x) marked.  optnorm's
    own slower variants are left out of the figure (they are in the table)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    suite_of = suite_of or {}
    by_suite: dict[str, list] = {}
    for g, n, _, r in table:
        if r is not None and _kind(n) != "optnorm":
            by_suite.setdefault(suite_of.get(g, "all"), []).append((g, n, r))
    if not by_suite:
        return
    # two columns, suites placed greedily so the columns have similar numbers of bars
    cols: list[list[str]] = [[], []]
    load = [0, 0]
    for s in sorted(by_suite, key=lambda k: -len(by_suite[k])):
        c = 0 if load[0] <= load[1] else 1
        cols[c].append(s)
        load[c] += len(by_suite[s]) + 3
    cols = [c for c in cols if c]
    height = 0.2 * max(load) + 1.5
    fig = plt.figure(figsize=(7.5 * len(cols), height))
    outer = fig.add_gridspec(1, len(cols), wspace=0.75)
    colors = {"peer": "tab:blue", "floor": "tab:orange"}
    for ci, col in enumerate(cols):
        inner = outer[ci].subgridspec(len(col), 1, height_ratios=[len(by_suite[s]) + 2 for s in col], hspace=0.6)
        for ri, s in enumerate(col):
            ax = fig.add_subplot(inner[ri])
            pts = by_suite[s]
            ratios = [r for _, _, r in pts]
            kinds = [_kind(n) for _, n, _ in pts]
            ax.barh(range(len(pts)), ratios, color=[colors[k] for k in kinds],
                    hatch=["//" if k == "floor" else "" for k in kinds], edgecolor="white", linewidth=0.3)
            ax.axvline(1.0, color="k", lw=1.2)
            ax.set_xscale("log")
            ax.set_yticks(range(len(pts)), [_label(g, _impl(n, g)) for g, n, _ in pts], fontsize=7)
            ax.invert_yaxis()
            ax.set_title(f"{s}", fontsize=10, loc="left", fontweight="bold")
            ax.grid(axis="x", which="both", alpha=0.3)
            ax.tick_params(axis="x", labelsize=7)
            ax.set_xlabel("time / optnorm's time (log; > 1: optnorm faster)", fontsize=7)
            for i, r in enumerate(ratios):
                ax.text(r, i, f" {r:.2f}x", va="center", fontsize=6)
    fig.legend(handles=[Patch(color=colors["peer"], label="peer library (torch, POT, pyRiemann, NumPy, SciPy)"),
                        Patch(facecolor=colors["floor"], hatch="//", label="hardware floor (memory copy / GEMM)")],
               loc="upper right", fontsize=8, ncols=2)
    fig.suptitle("optnorm benchmarks: each bar is one implementation's time over optnorm's fastest in its group",
                 x=0.01, ha="left", fontsize=11)
    fig.subplots_adjust(left=3.7 / (7.5 * len(cols)), right=0.97,   # 3.7 in for 52-character labels
                        top=1 - 1.0 / height, bottom=0.5 / height)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _label(group: str, impl: str, width: int = 52) -> str:
    text = f"{group}: {impl}"
    return text if len(text) <= width else text[: width - 1] + "…"


def write_report(json_path: Path, outdir: Path) -> Path:
    machine, groups = load(json_path)
    table = rows(groups)
    outdir.mkdir(parents=True, exist_ok=True)
    md = outdir / "benchmark-report.md"
    md.write_text(markdown(machine, table))
    plot(table, outdir / "benchmark-ratios.png", suites(groups))
    return md
