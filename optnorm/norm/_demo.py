"""Showcase for optnorm.norm: softmax accuracy across input magnitudes, and speed of the row kernels.

``python -m optnorm demo norm`` calls :func:`showcase`.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _ref_softmax(x64):
    e = np.exp(x64 - x64.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _max_err(y, ref):
    y = np.asarray(y, dtype=np.float64)
    if not np.all(np.isfinite(y)):
        return np.nan
    return float(np.max(np.abs(y - ref)))


def _accuracy(quick: bool, offset: bool = False):
    """Max error vs float64 for x = s * N(0, 1) (scaled rows) or x = s + N(0, 1) (offset rows: the
    softmax stays non-trivial, and algorithms that perturb x relatively show their error growing with s)."""
    from . import softmax

    rng = np.random.default_rng(0)
    rows, n = (8, 512) if quick else (64, 4096)
    mags = np.logspace(-3, 30, 12 if quick else 34) if not offset else np.logspace(0, 7, 8 if quick else 22)
    z = rng.standard_normal((rows, n))
    names = ["optnorm safe", "optnorm online", "optnorm two_pass", "numpy (max-subtract)", "numpy naive exp/sum"]
    try:
        import torch

        names.append("torch.softmax")
    except ImportError:  # torch is optional for the demo
        torch = None  # type: ignore[assignment]
    errs: dict[str, list[float]] = {k: [] for k in names}
    for s in mags:
        x = (z + s if offset else z * s).astype(np.float32)
        ref = _ref_softmax(x.astype(np.float64))
        for m in ("safe", "online", "two_pass"):
            errs[f"optnorm {m}"].append(_max_err(softmax(x, method=m), ref))
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        errs["numpy (max-subtract)"].append(_max_err(e / e.sum(axis=-1, keepdims=True), ref))
        with np.errstate(over="ignore", invalid="ignore"):
            e2 = np.exp(x)
            errs["numpy naive exp/sum"].append(_max_err(e2 / e2.sum(axis=-1, keepdims=True), ref))
        if torch is not None:
            errs["torch.softmax"].append(_max_err(torch.softmax(torch.from_numpy(x), -1).numpy(), ref))
    return mags, errs


def _timeit(fn, reps):
    fn()
    best = np.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def _speed(quick: bool):
    from . import layer_norm, rms_norm, softmax

    rows, n = (256, 2048) if quick else (2048, 8192)
    reps = 3 if quick else 7
    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, n), dtype=np.float32)
    w = np.ones(n, np.float32)
    b = np.zeros(n, np.float32)
    out = np.empty_like(x)
    table = {}

    def np_softmax():
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def np_ln():
        return (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5) * w + b

    def np_rms():
        return x / np.sqrt((x * x).mean(1, keepdims=True) + 1e-6) * w

    table["copy (np.copyto, floor)"] = {"softmax": _timeit(lambda: np.copyto(out, x), reps)}
    table["copy (np.copyto, floor)"].update(layer_norm=table["copy (np.copyto, floor)"]["softmax"],
                                            rms_norm=table["copy (np.copyto, floor)"]["softmax"])
    table["optnorm (out=)"] = {
        "softmax": _timeit(lambda: softmax(x, out=out), reps),
        "layer_norm": _timeit(lambda: layer_norm(x, w, b, out=out), reps),
        "rms_norm": _timeit(lambda: rms_norm(x, w, eps=1e-6, out=out), reps),
    }
    table["optnorm (allocating)"] = {
        "softmax": _timeit(lambda: softmax(x), reps),
        "layer_norm": _timeit(lambda: layer_norm(x, w, b), reps),
        "rms_norm": _timeit(lambda: rms_norm(x, w, eps=1e-6), reps),
    }
    table["numpy"] = {"softmax": _timeit(np_softmax, reps), "layer_norm": _timeit(np_ln, reps),
                      "rms_norm": _timeit(np_rms, reps)}
    try:
        import torch
        import torch.nn.functional as F

        xt, wt, bt, ot = (torch.from_numpy(a) for a in (x, w, b, out))
        table["torch (allocating)"] = {
            "softmax": _timeit(lambda: torch.softmax(xt, -1), reps),
            "layer_norm": _timeit(lambda: F.layer_norm(xt, (n,), wt, bt, 1e-5), reps),
            "rms_norm": _timeit(lambda: F.rms_norm(xt, (n,), wt, 1e-6), reps),
        }
        table["torch (_softmax.out)"] = {"softmax": _timeit(lambda: torch.ops.aten._softmax.out(xt, -1, False, out=ot),
                                                            reps)}
    except ImportError:  # torch is optional for the demo
        pass
    return (rows, n), table


def showcase(outdir: Path, quick: bool) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    lines = []

    mags, errs = _accuracy(quick)
    omags, oerrs = _accuracy(quick, offset=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    top = 2.0
    for ax, (mm, ee, xl) in zip(axes, ((mags, errs, "x = s * N(0,1)"), (omags, oerrs, "x = s + N(0,1)"))):
        for name, e in ee.items():
            e = np.array(e, dtype=float)
            ok = np.isfinite(e)
            style = "--" if name.startswith(("numpy", "torch")) else "-"
            line, = ax.loglog(mm[ok], np.maximum(e[ok], 1e-12), style, marker="o", ms=3, label=name)
            if (~ok).any():
                ax.loglog(mm[~ok], np.full((~ok).sum(), top), "x", color=line.get_color(), ms=7)
        ax.axhline(top, color="grey", lw=0.5)
        ax.text(mm[0], top * 1.15, "x = NaN/inf (overflow)", fontsize=8, color="grey")
        ax.set_xlabel(f"input scale s ({xl}, float32)")
        ax.set_ylabel("max |p - p_float64|")
        ax.set_ylim(1e-12, 10)
    axes[0].set_title("softmax accuracy, scaled rows (float32 vs float64)")
    axes[1].set_title("offset rows: two_pass perturbs x by ~|x| 2^-24")
    axes[0].legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(outdir / "norm_softmax_accuracy.png", dpi=120)
    plt.close(fig)
    lines.append("softmax float32 max abs error vs float64 (scale: 1e-3 / 1e3 / 1e30):")
    pick = [0, int(np.argmin(np.abs(mags - 1e3))), len(mags) - 1]
    for name, e in errs.items():
        vals = " / ".join("NaN" if not np.isfinite(e[i]) else f"{e[i]:.1e}" for i in pick)
        lines.append(f"  {name:24s} {vals}")

    shape, table = _speed(quick)
    ops_ = ["softmax", "layer_norm", "rms_norm"]
    try:
        import numba

        threads = f"{numba.get_num_threads()} Numba threads"
    except ImportError:
        threads = "no Numba"
    lines.append(f"speed, float32 {shape[0]}x{shape[1]}, ms (best of runs, {threads}; on a busy machine the parallel"
                 " rows are noisy):")
    lines.append("  " + f"{'':26s}" + "".join(f"{o:>12s}" for o in ops_))
    for impl, row in table.items():
        lines.append("  " + f"{impl:26s}" + "".join(f"{row[o]:12.2f}" if o in row else f"{'-':>12s}" for o in ops_))
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, ax = plt.subplots(figsize=(9, 4.2))
    impls = list(table)
    width = 0.8 / len(impls)
    for i, impl in enumerate(impls):
        bar_vals = [table[impl].get(o, np.nan) for o in ops_]
        ax.bar(np.arange(len(ops_)) + i * width, bar_vals, width, label=impl)
    ax.set_xticks(np.arange(len(ops_)) + 0.4 - width / 2)
    ax.set_xticklabels(ops_)
    ax.set_xlabel("operation (bars absent where that implementation has no such op)")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))   # 0.2, 0.5, 1, not 2x10^-1
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("time per call, ms (log; lower is better)")
    ax.set_title(f"row kernels, float32 {shape[0]}x{shape[1]}, {threads}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="implementation")   # beside the bars
    fig.tight_layout()
    fig.savefig(outdir / "norm_speed.png", dpi=120)
    plt.close(fig)
    return lines
