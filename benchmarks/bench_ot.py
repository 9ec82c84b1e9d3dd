"""Optimal-transport benchmarks, optnorm and its peers side by side (pytest-benchmark groups).

- ``SW d=3`` / ``SW d=64``: n = 10000 points per cloud, L = 1000 directions, p = 2, float64.  optnorm's MC and
  lower-CV estimators against POT's ``ot.sliced_wasserstein_distance``.
- ``log-Sinkhorn reg=0.05`` / ``reg=0.01``: n = m = 2000 uniform points in [0,1]^2, squared Euclidean cost,
  stopping at the same criterion as POT (L2 column-marginal error < 1e-9, checked every 10 iterations).  optnorm's
  ``sinkhorn(method="log")`` against POT's ``ot.sinkhorn(..., method="sinkhorn_log")``.
- ``SNS vs Sinkhorn reg=0.01``: iterations and time to an L1 marginal error of 1e-9 (``extra_info`` has n_iter).
- ``Sinkhorn cost per iteration``: n = m = 1000 Gaussian clouds, ``M / M.max()``, a fixed 50 iterations at
  reg = 1e-1 ... 1e-4 (``extra_info`` has ms per iteration).  Flat is the goal: the old kernels slowed ~35x once
  (M - f - g)/reg passed ~700 (subnormal exponentials, issue #13); the summary prints the spread.
- ``SW variance``: variance of the SW_2^2 estimate over 100 seeds at L = 100 on anisotropic Gaussian clouds,
  MC against the control variates (``extra_info`` has the variance ratios).

A summary of the ratios is printed at the end (``test_zz_summary``).  ``OPTNORM_BENCH_QUICK=1`` shrinks sizes.
"""
from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pytest
from peak_rss import PRELUDE  # noqa: E402  (benchmarks/peak_rss.py: peak memory measured in the child)

import optnorm.ot as oo

QUICK = os.environ.get("OPTNORM_BENCH_QUICK", "0") == "1"
N_SW = 2000 if QUICK else 10000
L_SW = 200 if QUICK else 1000
N_SK = 500 if QUICK else 2000
RESULTS: dict = {}


def _timed(benchmark, fn, rounds):
    out = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    return out, benchmark.stats.stats.min if benchmark.stats else None


# ---------------------------------------------------------------------------------------------- sliced
@pytest.fixture(scope="module", params=[3, 64], ids=["d3", "d64"])
def clouds(request):
    d = request.param
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_SW, d))
    Y = rng.standard_normal((N_SW, d)) * 1.5 + 1
    oo.sliced_wasserstein(X[:50], Y[:50], n_projections=4, seed=0)
    return d, X, Y


@pytest.mark.parametrize("estimator", ["mc", "lower_cv"])
def test_sw_optnorm(benchmark, clouds, estimator):
    d, X, Y = clouds
    benchmark.group = f"SW d={d}"
    _, t = _timed(benchmark, lambda: oo.sliced_wasserstein(X, Y, n_projections=L_SW, seed=0, estimator=estimator),
                  rounds=3)
    RESULTS[("sw", d, estimator)] = t


def test_sw_pot(benchmark, clouds):
    ot = pytest.importorskip("ot")
    d, X, Y = clouds
    benchmark.group = f"SW d={d}"
    ot.sliced_wasserstein_distance(X[:50], Y[:50], n_projections=4, seed=0)
    _, t = _timed(benchmark, lambda: ot.sliced_wasserstein_distance(X, Y, n_projections=L_SW, seed=0), rounds=2)
    RESULTS[("sw", d, "pot")] = t


# ---------------------------------------------------------------------------------------------- Sinkhorn
@pytest.fixture(scope="module")
def sk_problem():
    rng = np.random.default_rng(0)
    X, Y = rng.random((N_SK, 2)), rng.random((N_SK, 2))
    M = ((X[:, None] - Y[None]) ** 2).sum(-1)
    a = np.full(N_SK, 1.0 / N_SK)
    oo.sinkhorn(a[:20] * N_SK / 20, a[:20] * N_SK / 20, M[:20, :20], 0.1, max_iter=3)
    return a, M


@pytest.mark.parametrize("reg", [0.05, 0.01])
def test_sinkhorn_optnorm(benchmark, sk_problem, reg):
    a, M = sk_problem
    benchmark.group = f"log-Sinkhorn reg={reg}"
    res, t = _timed(benchmark, lambda: oo.sinkhorn(a, a, M, reg, tol=1e-9, error_norm=2, max_iter=5000), rounds=2)
    benchmark.extra_info.update(n_iter=res.n_iter, converged=res.converged)
    RESULTS[("sk", reg, "optnorm")] = (t, res.n_iter)


@pytest.mark.parametrize("reg", [0.05, 0.01])
def test_sinkhorn_pot(benchmark, sk_problem, reg):
    ot = pytest.importorskip("ot")
    a, M = sk_problem
    benchmark.group = f"log-Sinkhorn reg={reg}"
    (P, log), t = _timed(benchmark, lambda: ot.sinkhorn(a, a, M, reg, method="sinkhorn_log", stopThr=1e-9,
                                                        numItermax=5000, log=True), rounds=1)
    benchmark.extra_info.update(n_iter=int(log["niter"]) + 1)
    RESULTS[("sk", reg, "pot")] = (t, int(log["niter"]) + 1)


@pytest.mark.parametrize("solver", ["sinkhorn", "sns"])
def test_sns_vs_sinkhorn(benchmark, sk_problem, solver):
    a, M = sk_problem
    reg = 0.01
    benchmark.group = f"SNS vs Sinkhorn reg={reg}"
    if solver == "sns":
        fn = lambda: oo.sinkhorn_newton_sparse(a, a, M, reg, tol=1e-9)  # noqa: E731
    else:
        fn = lambda: oo.sinkhorn(a, a, M, reg, tol=1e-9, max_iter=20000, check_every=1)  # noqa: E731
    res, t = _timed(benchmark, fn, rounds=1)
    benchmark.extra_info.update(n_iter=res.n_iter, converged=res.converged, error=res.errors[-1])
    RESULTS[("sns", solver)] = (t, res.n_iter, res.converged)


REG_SWEEP = (1e-1, 1e-2, 1e-3, 5e-4, 1e-4)
N_IT = 500 if QUICK else 1000


@pytest.fixture(scope="module")
def it_problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_IT, 2))
    Y = rng.standard_normal((N_IT, 2)) * 1.3 + 0.5
    M = ((X[:, None] - Y[None]) ** 2).sum(-1)
    M /= M.max()
    a = np.full(N_IT, 1.0 / N_IT)
    oo.sinkhorn(a[:20] * N_IT / 20, a[:20] * N_IT / 20, M[:20, :20], 0.1, max_iter=3)
    return a, M


@pytest.mark.parametrize("reg", REG_SWEEP)
def test_sinkhorn_cost_per_iteration(benchmark, it_problem, reg):
    a, M = it_problem
    benchmark.group = "Sinkhorn cost per iteration (n=1000, 50 it)"
    steps = 50

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                # a fixed number of iterations, converged or not
            return oo.sinkhorn(a, a, M, reg, tol=1e-300, max_iter=steps, check_every=steps)

    res, t = _timed(benchmark, run, rounds=3)
    benchmark.extra_info.update(ms_per_iter=1e3 * t / res.n_iter if t else None, n_iter=res.n_iter)
    RESULTS[("it", reg)] = t / res.n_iter if t else None


# ---------------------------------------------------------------------------------------------- CV variance
def test_sw_variance(benchmark):
    benchmark.group = "SW variance (L=100)"
    rng = np.random.default_rng(1)
    d = 10
    X = rng.standard_normal((1000, d)) * np.linspace(0.2, 3, d)
    Y = rng.standard_normal((1000, d)) @ (0.5 * rng.standard_normal((d, d))) + 1.0
    seeds = range(30 if QUICK else 100)

    def run():
        return {e: np.var([float(oo.sliced_wasserstein(X, Y, n_projections=100, estimator=e, seed=s,
                                                       squared=True)) for s in seeds])
                for e in ("mc", "qmc", "lower_cv", "upper_cv")}

    var, _ = _timed(benchmark, run, rounds=1)
    ratios = {e: var["mc"] / v for e, v in var.items()}
    benchmark.extra_info.update({f"var_ratio_{e}": r for e, r in ratios.items()})
    RESULTS["var"] = ratios


def test_zz_summary(benchmark, capsys):
    benchmark.group = "zz summary"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    lines = ["", "optnorm.ot benchmark ratios (peer time / optnorm time, same run):"]
    for d in (3, 64):
        pot = RESULTS.get(("sw", d, "pot"))
        for est in ("mc", "lower_cv"):
            t = RESULTS.get(("sw", d, est))
            if pot and t:
                lines.append(f"  SW d={d} n={N_SW} L={L_SW} {est:9s}: POT {pot:.3f} s / optnorm {t:.3f} s = "
                             f"{pot / t:.1f}x  (target >= 10x)")
    for reg in (0.05, 0.01):
        o, p = RESULTS.get(("sk", reg, "optnorm")), RESULTS.get(("sk", reg, "pot"))
        if o and p:
            lines.append(f"  log-Sinkhorn n={N_SK} reg={reg}: POT {p[0]:.2f} s ({p[1]} it) / optnorm {o[0]:.2f} s "
                         f"({o[1]} it) = {p[0] / o[0]:.1f}x  (target >= 5x); per iteration "
                         f"{(p[0] / p[1]) / (o[0] / o[1]):.1f}x")
    s, k = RESULTS.get(("sns", "sns")), RESULTS.get(("sns", "sinkhorn"))
    if s and k:
        lines.append(f"  SNS vs log-Sinkhorn reg=0.01: {k[1]} / {s[1]} iterations = {k[1] / s[1]:.1f}x fewer "
                     f"(target >= 10x), time {k[0]:.2f} s / {s[0]:.2f} s = {k[0] / s[0]:.1f}x")
    per_it = {reg: RESULTS.get(("it", reg)) for reg in REG_SWEEP}
    if all(per_it.values()):
        lines.append(f"  Sinkhorn n={N_IT} ms per iteration: " + ", ".join(f"reg {r:g} {1e3 * t:.2f}"
                                                                   for r, t in per_it.items()) +
                     f"; max/min = {max(per_it.values()) / min(per_it.values()):.1f}x  (target ~1x)")
    if "var" in RESULTS:
        r = RESULTS["var"]
        lines.append("  SW variance ratio MC/estimator at L=100: " +
                     ", ".join(f"{e} {v:.1f}x" for e, v in r.items() if e != "mc") + "  (target CV >= 5x)")
    with capsys.disabled():
        print("\n".join(lines))


# ---------------------------------------------------------------------------------------------- issue 14, part B
# - ``emd n=2000``: network-simplex emd (Numba) against POT's C++ network simplex, random weights, uniform points
#   in [0,1]^2, squared Euclidean cost; extra_info has pivots and the relative cost difference (target 1e-10).
# - ``entropic GW n=500``: gromov_wasserstein(reg=5e-3) against POT entropic_gromov_wasserstein at equal outer
#   iterations (20, tol=0) and equal inner tolerance (L2 column marginal 1e-9, 1000 iterations at most), for
#   Euclidean distance matrices (dense) and squared Euclidean ones (rank d + 2: factored products).
# - ``SNS crossover``: sinkhorn_newton_sparse against sinkhorn(method="log") to an L1 marginal error of 1e-8 at
#   n = 2000 over reg = 1e-1 ... 1e-3; the summary prints the ratios and the crossover reg.
N_EMD = 500 if QUICK else 2000
N_GW = 200 if QUICK else 500
N_SNS = 500 if QUICK else 2000
SNS_REGS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)


@pytest.fixture(scope="module")
def emd_problem():
    rng = np.random.default_rng(0)
    X, Y = rng.random((N_EMD, 2)), rng.random((N_EMD, 2))
    M = ((X[:, None] - Y[None]) ** 2).sum(-1)
    a, b = rng.random(N_EMD) + 0.1, rng.random(N_EMD) + 0.1
    oo.emd(a[:5] / a[:5].sum(), b[:5] / b[:5].sum(), M[:5, :5])            # compile
    return a / a.sum(), b / b.sum(), M


def test_emd_optnorm(benchmark, emd_problem):
    a, b, M = emd_problem
    benchmark.group = f"emd n={N_EMD}"
    r, t = _timed(benchmark, lambda: oo.emd(a, b, M), rounds=3)
    benchmark.extra_info.update(n_iter=r.n_iter, method=r.method)
    RESULTS[("emd", "optnorm")] = (t, float(r.cost), r.n_iter)


def test_emd_pot(benchmark, emd_problem):
    ot = pytest.importorskip("ot")
    a, b, M = emd_problem
    benchmark.group = f"emd n={N_EMD}"
    (G, log), t = _timed(benchmark, lambda: ot.emd(a, b, M, numItermax=10 ** 8, log=True), rounds=3)
    RESULTS[("emd", "pot")] = (t, float(log["cost"]))


@pytest.fixture(scope="module", params=["euclidean", "sqeuclidean"])
def gw_problem(request):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N_GW, 2))
    y = rng.standard_normal((N_GW, 3)) * np.array([1.0, 2.0, 0.5])

    def dist(z):
        d = ((z[:, None] - z[None]) ** 2).sum(-1)
        d = d if request.param == "sqeuclidean" else np.sqrt(d)
        return d / d.max()

    C1, C2 = dist(x), dist(y)
    oo.gromov_wasserstein(C1[:20, :20], C2[:20, :20], reg=0.1, max_iter=2)
    return request.param, C1, C2


GW_EPS, GW_ITERS = 5e-3, 20


def test_entropic_gw_optnorm(benchmark, gw_problem):
    kind, C1, C2 = gw_problem
    benchmark.group = f"entropic GW n={N_GW} ({kind})"

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return oo.gromov_wasserstein(C1, C2, reg=GW_EPS, max_iter=GW_ITERS, tol=0)

    r, t = _timed(benchmark, run, rounds=2)
    RESULTS[("gw", kind, "optnorm")] = (t, np.asarray(r.plan))


def test_entropic_gw_pot(benchmark, gw_problem):
    ot = pytest.importorskip("ot")
    kind, C1, C2 = gw_problem
    benchmark.group = f"entropic GW n={N_GW} ({kind})"
    p = np.full(N_GW, 1.0 / N_GW)

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ot.gromov.entropic_gromov_wasserstein(C1, C2, p, p, epsilon=GW_EPS, max_iter=GW_ITERS, tol=0)

    T, t = _timed(benchmark, run, rounds=2)
    mine = RESULTS.get(("gw", kind, "optnorm"))
    if mine is not None:
        benchmark.extra_info.update(max_plan_diff=float(np.abs(mine[1] - T).max()))
    RESULTS[("gw", kind, "pot")] = t


@pytest.fixture(scope="module")
def sns_problem():
    rng = np.random.default_rng(0)
    X, Y = rng.random((N_SNS, 2)), rng.random((N_SNS, 2))
    M = ((X[:, None] - Y[None]) ** 2).sum(-1)
    a = np.full(N_SNS, 1.0 / N_SNS)
    oo.sinkhorn_newton_sparse(a[:30] * N_SNS / 30, a[:30] * N_SNS / 30, M[:30, :30], 0.01)
    return a, M


@pytest.mark.parametrize("reg", SNS_REGS)
@pytest.mark.parametrize("solver", ["sinkhorn", "sns"])
def test_sns_crossover(benchmark, sns_problem, solver, reg):
    a, M = sns_problem
    benchmark.group = f"SNS crossover n={N_SNS} reg={reg:g}"
    if solver == "sns":
        fn = lambda: oo.sinkhorn_newton_sparse(a, a, M, reg, tol=1e-8, max_iter=1000)  # noqa: E731
    else:
        fn = lambda: oo.sinkhorn(a, a, M, reg, tol=1e-8, max_iter=200000, check_every=10)  # noqa: E731
    res, t = _timed(benchmark, fn, rounds=1)
    benchmark.extra_info.update(n_iter=res.n_iter, converged=res.converged)
    RESULTS[("sns_x", solver, reg)] = (t, res.n_iter, res.converged)


def test_zz_summary_part_b(benchmark, capsys):
    benchmark.group = "zz summary"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    lines = ["", "optnorm.ot benchmark ratios, issue 14 part B (peer time / optnorm time, same run):"]
    o, p = RESULTS.get(("emd", "optnorm")), RESULTS.get(("emd", "pot"))
    if o and p and o[0] and p[0]:
        lines.append(f"  emd n={N_EMD}: POT {p[0]:.3f} s / optnorm {o[0]:.3f} s = {p[0] / o[0]:.2f}x "
                     f"(target >= 0.67x); {o[2]} pivots; relative cost difference {abs(o[1] - p[1]) / p[1]:.1e} "
                     f"(target 1e-10)")
    for kind in ("euclidean", "sqeuclidean"):
        o, p = RESULTS.get(("gw", kind, "optnorm")), RESULTS.get(("gw", kind, "pot"))
        if o and p and o[0]:
            lines.append(f"  entropic GW n={N_GW} {kind} eps={GW_EPS:g} {GW_ITERS} it: POT {p:.3f} s / optnorm "
                         f"{o[0]:.3f} s = {p / o[0]:.2f}x (target >= 3x)")
    cross = None                 # the largest reg below which SNS wins at every measured reg
    for reg in sorted(SNS_REGS):
        k, s = RESULTS.get(("sns_x", "sinkhorn", reg)), RESULTS.get(("sns_x", "sns", reg))
        if k and s and k[0] and s[0]:
            lines.append(f"  SNS vs log-Sinkhorn n={N_SNS} reg={reg:g}: {k[0]:.2f} s ({k[1]} it) / {s[0]:.2f} s "
                         f"({s[1]} it) = {k[0] / s[0]:.1f}x")
            if k[0] > s[0] and (cross is None or cross[1]):
                cross = (reg, True)
            elif cross is None or cross[1]:
                cross = (cross[0] if cross else None, False)
    if cross is not None and cross[0] is not None:
        lines.append(f"  SNS is faster than log-Sinkhorn at every reg <= {cross[0]:g} measured (target: at reg <= 1e-3)")
    with capsys.disabled():
        print("\n".join(lines))


# ---------------------------------------------------------------------------------------------- issue 14, part A
# - ``lazy Sinkhorn n=5000``: sinkhorn on a PointCloud (block-wise online LSE, Numba) against POT's
#   ``empirical_sinkhorn(isLazy=True, batchSize=500)``, d = 3, reg = 0.1, float64, equal iterations (50, no test).
# - ``lazy Sinkhorn memory n=20000``: peak RSS above the imported baseline of 10 iterations on a float32
#   PointCloud with n = m = 20000, d = 3, in a fresh subprocess (target < 1 GB; the dense float32 cost is 1.6 GB).
# - ``unbalanced n=2000``: sinkhorn_unbalanced (KL, reg = 0.05, reg_m = 1) against POT's sinkhorn_unbalanced
#   (method="sinkhorn_stabilized"), both at tolerance 1e-9 (POT: relative change of the scalings; optnorm: L1
#   residual of the column condition); extra_info has iterations and the largest plan difference.
# - ``barycenter 10x2000``: barycenter of 10 histograms on a 2000-bin grid, reg = 1e-2, against POT's
#   bregman.barycenter(method="sinkhorn_log") at equal iterations (30, no test).
N_LAZY = 1000 if QUICK else 5000
N_MEM = 4000 if QUICK else 20000
N_UB = 500 if QUICK else 2000
N_BARY = 500 if QUICK else 2000
LAZY_ITERS, BARY_ITERS = 50, 30


@pytest.fixture(scope="module")
def lazy_problem():
    rng = np.random.default_rng(0)
    X, Y = rng.random((N_LAZY, 3)), rng.random((N_LAZY, 3)) + 0.2
    oo.sinkhorn(None, None, oo.PointCloud(X[:50], Y[:50]), 0.1, max_iter=2)            # compile
    return X, Y


def _lazy_optnorm(X, Y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return oo.sinkhorn(None, None, oo.PointCloud(X, Y), 0.1, tol=0, max_iter=LAZY_ITERS, check_every=LAZY_ITERS)


def _lazy_pot(X, Y):
    import ot

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ot.bregman.empirical_sinkhorn(X, Y, 0.1, numIterMax=LAZY_ITERS, stopThr=0, isLazy=True, batchSize=500)


def test_lazy_sinkhorn_optnorm(benchmark, lazy_problem):
    benchmark.group = f"lazy Sinkhorn n={N_LAZY}"
    _, t = _timed(benchmark, lambda: _lazy_optnorm(*lazy_problem), rounds=3)
    RESULTS[("lazy", "optnorm")] = t


def test_lazy_sinkhorn_pot(benchmark, lazy_problem):
    pytest.importorskip("ot")
    benchmark.group = f"lazy Sinkhorn n={N_LAZY}"
    _, t = _timed(benchmark, lambda: _lazy_pot(*lazy_problem), rounds=3)
    RESULTS[("lazy", "pot")] = t


MEM_SCRIPT = """
import resource, sys, warnings
import numpy as np
import optnorm.ot as oo
n = int(sys.argv[1])
rng = np.random.default_rng(0)
X = rng.random((n, 3)).astype(np.float32); Y = rng.random((n, 3)).astype(np.float32)
oo.sinkhorn(None, None, oo.PointCloud(X[:50], Y[:50]), 0.1, max_iter=2)
base = rss_mark()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    r = oo.sinkhorn(None, None, oo.PointCloud(X, Y), 0.1, tol=0, max_iter=10, check_every=10)
peak = rss_peak()
print(base * 1024, peak * 1024, r.f.dtype)
"""


def lazy_memory(n):
    """(baseline RSS, peak RSS) in bytes of a 10-iteration float32 lazy Sinkhorn in a fresh process."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", PRELUDE + MEM_SCRIPT, str(n)], capture_output=True, text=True, check=True,
                         timeout=1800).stdout.split()
    return int(out[0]), int(out[1])


def test_lazy_sinkhorn_memory(benchmark):
    benchmark.group = f"lazy Sinkhorn memory n={N_MEM}"
    (base, peak), _ = _timed(benchmark, lambda: lazy_memory(N_MEM), rounds=1)
    benchmark.extra_info.update(base_mb=base / 2 ** 20, peak_mb=peak / 2 ** 20, added_mb=(peak - base) / 2 ** 20)
    RESULTS[("lazy_mem",)] = (base, peak)


@pytest.fixture(scope="module")
def ub_problem():
    rng = np.random.default_rng(0)
    X, Y = rng.random((N_UB, 2)), rng.random((N_UB, 2)) + 0.1
    M = ((X[:, None] - Y[None]) ** 2).sum(-1)
    a, b = np.full(N_UB, 1.0 / N_UB), np.full(N_UB, 1.5 / N_UB)
    oo.sinkhorn_unbalanced(a[:20], b[:20], M[:20, :20], 0.05, 1.0)
    return a, b, M


def _ub_optnorm(a, b, M):
    return oo.sinkhorn_unbalanced(a, b, M, 0.05, 1.0, tol=1e-9, max_iter=100000)


def _ub_pot(a, b, M):
    import ot

    return ot.unbalanced.sinkhorn_unbalanced(a, b, M, 0.05, 1.0, method="sinkhorn_stabilized", stopThr=1e-9,
                                             numItermax=100000, log=True)


def test_unbalanced_optnorm(benchmark, ub_problem):
    benchmark.group = f"unbalanced n={N_UB}"
    r, t = _timed(benchmark, lambda: _ub_optnorm(*ub_problem), rounds=3)
    benchmark.extra_info.update(n_iter=r.n_iter)
    RESULTS[("ub", "optnorm")] = (t, r.plan(), r.n_iter)


def test_unbalanced_pot(benchmark, ub_problem):
    pytest.importorskip("ot")
    benchmark.group = f"unbalanced n={N_UB}"
    (P, log), t = _timed(benchmark, lambda: _ub_pot(*ub_problem), rounds=3)
    mine = RESULTS.get(("ub", "optnorm"))
    if mine is not None:
        benchmark.extra_info.update(max_plan_diff=float(np.abs(mine[1] - P).max()))
    RESULTS[("ub", "pot")] = t


@pytest.fixture(scope="module")
def bary_problem():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, N_BARY)
    mus = rng.random(10) * 0.8 + 0.1
    A = np.exp(-(x[None] - mus[:, None]) ** 2 / (2 * 0.03 ** 2)) + 1e-6
    A /= A.sum(1, keepdims=True)
    M = (x[:, None] - x[None]) ** 2
    oo.barycenter(A[:, :20] / A[:, :20].sum(1, keepdims=True), M[:20, :20], reg=1e-2, max_iter=5)
    return A, M


def _bary_optnorm(A, M):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return oo.barycenter(A, M, reg=1e-2, tol=0, max_iter=BARY_ITERS, check_every=BARY_ITERS)


def _bary_pot(A, M):
    import ot

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ot.bregman.barycenter(A.T, M, 1e-2, method="sinkhorn_log", numItermax=BARY_ITERS, stopThr=0)


def test_barycenter_optnorm(benchmark, bary_problem):
    benchmark.group = f"barycenter 10x{N_BARY}"
    q, t = _timed(benchmark, lambda: _bary_optnorm(*bary_problem), rounds=3)
    RESULTS[("bary", "optnorm")] = (t, q)


def test_barycenter_pot(benchmark, bary_problem):
    pytest.importorskip("ot")
    benchmark.group = f"barycenter 10x{N_BARY}"
    q, t = _timed(benchmark, lambda: _bary_pot(*bary_problem), rounds=3)
    mine = RESULTS.get(("bary", "optnorm"))
    if mine is not None:
        benchmark.extra_info.update(max_diff=float(np.abs(mine[1] - q).max()))
    RESULTS[("bary", "pot")] = t


def test_zz_summary_part_a(benchmark, capsys):
    benchmark.group = "zz summary"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    lines = ["", "optnorm.ot benchmark ratios, issue 14 part A (peer time / optnorm time, same run):"]
    for key, label, target in (("lazy", f"lazy Sinkhorn n={N_LAZY} d=3, {LAZY_ITERS} it", 3),
                               ("bary", f"barycenter 10x{N_BARY}, {BARY_ITERS} it", 3)):
        o, p = RESULTS.get((key, "optnorm")), RESULTS.get((key, "pot"))
        o = o[0] if isinstance(o, tuple) else o
        if o and p:
            lines.append(f"  {label}: POT {p:.3f} s / optnorm {o:.3f} s = {p / o:.2f}x (target >= {target}x)")
    o, p = RESULTS.get(("ub", "optnorm")), RESULTS.get(("ub", "pot"))
    if o and p and o[0]:
        lines.append(f"  sinkhorn_unbalanced n={N_UB} tol 1e-9: POT {p:.3f} s / optnorm {o[0]:.3f} s = "
                     f"{p / o[0]:.2f}x (target >= 5x)")
    m = RESULTS.get(("lazy_mem",))
    if m:
        lines.append(f"  lazy Sinkhorn n={N_MEM} d=3 float32: peak RSS {m[1] / 2 ** 20:.0f} MB, "
                     f"{(m[1] - m[0]) / 2 ** 20:.0f} MB above the imported baseline (target < 1 GB)")
    with capsys.disabled():
        print("\n".join(lines))


# ---------------------------------------------------------------------------- pairwise NWD between boxes
# 4096 x 4096 float32 boxes (xyxy): optnorm's fused kernel (allocating and into out=) against the broadcast NumPy
# expression, and np.copyto of the 64 MiB output as the floor (a memory-bound pass).
NBOX = 1024 if QUICK else 4096


def _boxes(n, seed):
    rng = np.random.default_rng(seed)
    c = rng.uniform(0, 1000, (n, 2))
    wh = rng.uniform(2, 40, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)


def _nwd_numpy(b1, b2):
    def centres(b):
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, (b[:, 2] - b[:, 0]) / 2,
                         (b[:, 3] - b[:, 1]) / 2], 1)

    d2 = ((centres(b1)[:, None, :] - centres(b2)[None, :, :]) ** 2).sum(-1)
    return np.exp(-np.sqrt(d2 + np.float32(1e-7)) / np.float32(12.8))


@pytest.mark.parametrize("impl", ["optnorm", "optnorm out=", "numpy broadcast", "floor np.copyto"])
def test_pairwise_nwd(benchmark, impl):
    benchmark.group = "pairwise NWD"
    b1, b2 = _boxes(NBOX, 1), _boxes(NBOX, 2)
    out = np.empty((NBOX, NBOX), np.float32)
    if impl == "optnorm":
        oo.normalized_wasserstein_boxes(b1[:8], b2[:8], pairwise=True)  # compile / warm up
        benchmark(lambda: oo.normalized_wasserstein_boxes(b1, b2, pairwise=True))
    elif impl == "optnorm out=":
        oo.normalized_wasserstein_boxes(b1, b2, pairwise=True, out=out)
        benchmark(lambda: oo.normalized_wasserstein_boxes(b1, b2, pairwise=True, out=out))
    elif impl == "numpy broadcast":
        benchmark(lambda: _nwd_numpy(b1, b2))
    else:
        src = np.random.default_rng(3).random((NBOX, NBOX), dtype=np.float32)
        benchmark(lambda: np.copyto(out, src))
