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


def plot(table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(f"{g}: {n}", r) for g, n, _, r in table if r is not None]
    if not pts:
        return
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(pts) + 1.2))
    labels, ratios = zip(*pts)
    colors = ["tab:green" if r >= 1 else "tab:red" for r in ratios]
    ax.barh(range(len(pts)), ratios, color=colors)
    ax.axvline(1.0, color="k", lw=1)
    ax.set_xscale("log")
    ax.set_yticks(range(len(pts)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time of the other implementation / time of optnorm (log scale; > 1: optnorm faster)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(json_path: Path, outdir: Path) -> Path:
    machine, groups = load(json_path)
    table = rows(groups)
    outdir.mkdir(parents=True, exist_ok=True)
    md = outdir / "benchmark-report.md"
    md.write_text(markdown(machine, table))
    plot(table, outdir / "benchmark-ratios.png")
    return md
