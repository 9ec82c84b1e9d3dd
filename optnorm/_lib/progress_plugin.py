"""A pytest plugin that ``python -m optnorm bench`` loads: one line per finished benchmark with the elapsed
time and an estimate of what is left (pytest-benchmark otherwise shows only dots for minutes)."""
from __future__ import annotations

import sys
import time

_state = {"total": 0, "done": 0, "t0": 0.0}


def pytest_collection_finish(session):
    _state["total"] = len(session.items)
    _state["t0"] = time.perf_counter()
    print(f"\n{_state['total']} benchmark cases", file=sys.stderr, flush=True)


def pytest_runtest_logreport(report):
    if report.when != "call" and not (report.when == "setup" and report.skipped):
        return
    _state["done"] += 1
    done, total = _state["done"], _state["total"]
    elapsed = time.perf_counter() - _state["t0"]
    eta = elapsed / done * (total - done) if done else 0.0
    status = "skipped" if report.skipped else ("FAILED" if report.failed else "ok")
    name = report.nodeid.split("::", 1)[-1]
    print(f"[{done}/{total}] {name} {status} | elapsed {elapsed:.0f} s, about {eta:.0f} s left",
          file=sys.stderr, flush=True)
