"""Command line: ``python -m optnorm info | demo | bench``.

- ``info``: versions, array libraries found, Numba threads and SVML, GPU or not.
- ``demo [--out DIR] [--quick] [DOMAIN ...]``: runs each domain's showcase (``optnorm/<domain>/_demo.py``,
  a ``showcase(outdir, quick) -> list[str]`` function), prints its table and writes PNG plots to DIR.
- ``bench [DOMAIN ...] [--quick]``: runs ``benchmarks/bench_<domain>.py`` with pytest-benchmark
  (peers side by side) and prints the comparison; needs a source checkout.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DOMAINS = ("norm", "ot", "spd", "optim")


def _version(mod: str) -> str:
    try:
        m = importlib.import_module(mod)
    except Exception as exc:  # any import failure is reported, not raised
        return f"not available ({type(exc).__name__})"
    return getattr(m, "__version__", "?")


def info() -> int:
    import optnorm
    from optnorm._lib.dispatch import cupy_available, get_backend

    print(f"optnorm {optnorm.__version__} on Python {platform.python_version()} ({platform.machine()}, "
          f"{os.cpu_count()} CPUs)")
    for mod in ("numpy", "scipy", "numba", "array_api_compat", "array_api_strict", "torch", "jax", "cupy",
                "dask", "ot", "pyriemann", "optax", "matplotlib"):
        label = "POT" if mod == "ot" else mod
        print(f"  {label:18s} {_version(mod)}")
    try:
        import numba

        cfg: Any = numba.config  # attributes set at import time, unknown to type checkers
        print(f"  numba threads      {cfg.NUMBA_NUM_THREADS} (SVML {'on' if cfg.USING_SVML else 'off'})")
    except ImportError:
        pass
    print(f"  GPU (CuPy)         {'yes' if cupy_available() else 'no'}")
    print(f"  forced backend     {get_backend()}")
    print(f"  domains            {', '.join(d for d in DOMAINS if importlib.util.find_spec(f'optnorm.{d}'))}")
    from optnorm._lib import api
    from optnorm._lib.dispatch import fast_paths

    fast = fast_paths()
    print("  public API (from the registry: functions / with VJP / Numba path / CUDA path / Dask)")
    for d in DOMAINS:
        fns = api.functions(d)
        print(f"    {d:6s} {len(fns):4d} / {sum(f.op is not None for f in fns):3d} / "
              f"{sum('numba' in fast.get(f.name, ()) for f in fns):3d} / "
              f"{sum('cuda' in fast.get(f.name, ()) for f in fns):3d} / {sum(f.gufunc is not None for f in fns):3d}")
    return 0


def demo(out: Path, quick: bool, domains: list[str]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "Agg")
    sections = [(d, stem) for d in domains or DOMAINS
                for stem in sorted(p.stem for p in (Path(__file__).parent / d).glob("_demo*.py"))]
    ran = 0
    start = time.perf_counter()
    for i, (d, stem) in enumerate(sections, 1):
        t0 = time.perf_counter()
        elapsed = t0 - start
        eta = f", about {elapsed / (i - 1) * (len(sections) - i + 1):.0f} s left" if i > 1 else ""
        print(f"\n=== [{i}/{len(sections)}] {d}{stem[5:].replace('_', ' ')} (elapsed {elapsed:.0f} s{eta}) ===",
              flush=True)
        lines = importlib.import_module(f"optnorm.{d}.{stem}").showcase(out, quick=quick)
        for line in lines:
            print(line)
        print(f"[{d}] done in {time.perf_counter() - t0:.1f} s", flush=True)
        ran += 1
    pngs = sorted(p.name for p in out.glob("*.png"))
    print(f"\nplots written to {out.resolve()}: {', '.join(pngs) if pngs else 'none'}")
    return 0 if ran else 1


def bench(domains: list[str], quick: bool, extra: list[str], out: Path | None = None) -> int:
    root = Path(__file__).resolve().parent.parent / "benchmarks"
    if not root.is_dir():
        print("benchmarks/ not found: `python -m optnorm bench` needs a source checkout of optnorm", file=sys.stderr)
        return 2
    names = domains or sorted(p.stem[6:] for p in root.glob("bench_*.py"))
    files = [str(root / f"bench_{d}.py") for d in names if (root / f"bench_{d}.py").exists()]
    if not files:
        print(f"no benchmark files for {domains}", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "pytest", *files, "-p", "no:cacheprovider", "-p", "optnorm._lib.progress_plugin",
           "-o", "addopts=",
           "--benchmark-only", "--benchmark-group-by=group", "--benchmark-columns=min,median,mean,rounds",
           "--benchmark-sort=name", "-q"]
    if quick:
        cmd += ["--benchmark-min-rounds=1", "--benchmark-max-time=0.2", "-m", "not slow"]
    out = out or Path("optnorm-bench")
    out.mkdir(parents=True, exist_ok=True)
    js = out / "benchmark.json"
    cmd += [f"--benchmark-json={js}"]
    env = dict(os.environ, OPTNORM_BENCH_QUICK="1" if quick else "0")
    rc = subprocess.call(cmd + extra, env=env)
    if js.exists():
        from optnorm._lib.benchreport import write_report

        md = write_report(js, out)
        print(md.read_text())
        print(f"report: {md.resolve()} and {(out / 'benchmark-ratios.png').resolve()}")
    return rc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m optnorm", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="versions, backends, threads, GPU")
    pd = sub.add_parser("demo", help="run each domain's showcase and write plots")
    pd.add_argument("domains", nargs="*", default=[], metavar="DOMAIN", help=f"any of {DOMAINS}")
    pd.add_argument("--out", type=Path, default=Path("optnorm-demo"), help="folder for the PNG plots")
    pd.add_argument("--quick", action="store_true", help="small sizes (seconds, for CI)")
    pb = sub.add_parser("bench", help="run the pytest-benchmark suites side by side with the peers")
    pb.add_argument("domains", nargs="*", default=[], metavar="DOMAIN")
    pb.add_argument("--quick", action="store_true", help="small sizes, one round per case")
    pb.add_argument("--out", type=Path, default=Path("optnorm-bench"),
                    help="folder for benchmark.json, benchmark-report.md and benchmark-ratios.png")
    args, extra = p.parse_known_args(argv)
    bad = [d for d in getattr(args, "domains", []) if d not in DOMAINS and args.cmd == "demo"]
    if bad:
        p.error(f"unknown domain(s) {bad}: choose from {DOMAINS}")
    if extra and args.cmd != "bench":
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.cmd == "info":
        return info()
    if args.cmd == "demo":
        return demo(args.out, args.quick, args.domains)
    return bench(args.domains, args.quick, extra, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
