"""Optimizer steps side by side: optnorm's fused kernels against torch.optim (fused / foreach) and NumPy.

Groups:
- ``adamw-1x<N>`` / ``adamw-100x<N/100>``: one AdamW step on N float32 params (10M; quick: 1M) as one
  tensor or 100 tensors.  optnorm ``step_`` (Numba kernel), optnorm's torch wrapper (same kernel on
  zero-copy views), torch.optim.AdamW ``fused=True`` / ``foreach=True``, and NumPy in-place ufuncs.
- ``muon-<M>``: one Muon step on an M x M float32 matrix (4096; quick: 1024): optnorm on torch tensors
  (bf16 Newton-Schulz through torch's matmul), torch.optim.Muon (bf16), and the 15 bf16 GEMMs of the
  5 Newton-Schulz iterations alone (the cost floor the target "within 1.2x of its GEMMs" refers to).
- ``adamw-floor-1x<N>``: the memory-traffic floor of the AdamW step, a Numba pass reading 4 and writing 3
  float32 arrays with no arithmetic to speak of (28 bytes per parameter), next to the checked and unchecked
  optnorm steps: how close each is to the bandwidth bound.
- ``<rule>-100x<N/100>``: every new rule's fused ``step_`` (RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam,
  Adafactor) against torch.optim's ``foreach=True`` implementation of the same rule, 100 tensors.

Run: ``python -m optnorm bench optim [--quick]``.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import optnorm.optim as oo

torch = pytest.importorskip("torch")

QUICK = os.environ.get("OPTNORM_BENCH_QUICK", "0") == "1"
N = 1_000_000 if QUICK else 10_000_000
M = 1024 if QUICK else 4096
LR, BETAS, EPS, WD = 1e-3, (0.9, 0.999), 1e-8, 1e-2


def _arrays(ntensors):
    rng = np.random.default_rng(0)
    n = N // ntensors
    ps = [rng.standard_normal(n, dtype=np.float32) for _ in range(ntensors)]
    gs = [(1e-3 * rng.standard_normal(n)).astype(np.float32) for _ in range(ntensors)]
    return ps, gs


NT = [1, 100]


def _group(nt):
    return f"adamw-{nt}x{N // nt}"


@pytest.mark.parametrize("nt", NT)
def test_adamw_optnorm_step_(benchmark, nt):
    benchmark.group = _group(nt)
    ps, gs = _arrays(nt)
    rule = oo.adamw(lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    st = rule.init(ps)
    rule.step_(ps, gs, st)                      # compile / warm up
    benchmark(rule.step_, ps, gs, st)


@pytest.mark.parametrize("nt", NT)
def test_adamw_optnorm_step_no_nan_check(benchmark, nt):
    benchmark.group = _group(nt)
    ps, gs = _arrays(nt)
    rule = oo.adamw(lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, nan_policy="ignore")
    st = rule.init(ps)
    rule.step_(ps, gs, st)
    benchmark(rule.step_, ps, gs, st)


@pytest.mark.parametrize("nt", NT)
def test_adamw_optnorm_torch_wrapper(benchmark, nt):
    import optnorm.torch as ont

    benchmark.group = _group(nt)
    ps, gs = _arrays(nt)
    params = [torch.nn.Parameter(torch.from_numpy(p)) for p in ps]
    for p, g in zip(params, gs):
        p.grad = torch.from_numpy(g)
    opt = ont.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    opt.step()
    benchmark(opt.step)


@pytest.mark.parametrize("mode", ["fused", "foreach"])
@pytest.mark.parametrize("nt", NT)
def test_adamw_torch(benchmark, nt, mode):
    benchmark.group = _group(nt)
    ps, gs = _arrays(nt)
    params = [torch.nn.Parameter(torch.from_numpy(p)) for p in ps]
    for p, g in zip(params, gs):
        p.grad = torch.from_numpy(g)
    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, **{mode: True})
    opt.step()
    benchmark(opt.step)


@pytest.mark.parametrize("nt", NT)
def test_adamw_numpy_inplace(benchmark, nt):
    """Best-effort NumPy: in-place ufuncs with ``out=`` and one scratch buffer per tensor."""
    benchmark.group = _group(nt)
    ps, gs = _arrays(nt)
    ms = [np.zeros_like(p) for p in ps]
    vs = [np.zeros_like(p) for p in ps]
    tmp = [np.empty_like(p) for p in ps]
    t = [0]
    b1, b2 = BETAS

    def step():
        t[0] += 1
        bc1, bc2 = 1 - b1 ** t[0], 1 - b2 ** t[0]
        for p, g, m, v, s in zip(ps, gs, ms, vs, tmp):
            p *= np.float32(1 - LR * WD)
            m *= np.float32(b1)
            m += np.float32(1 - b1) * g
            v *= np.float32(b2)
            np.multiply(g, g, out=s)
            s *= np.float32(1 - b2)
            v += s
            np.sqrt(v, out=s)
            s *= np.float32(1 / np.sqrt(bc2))
            s += np.float32(EPS)
            np.divide(m, s, out=s)
            s *= np.float32(LR / bc1)
            p -= s

    step()
    benchmark(step)


# ----------------------------------------------------------------------------------------------- Muon
def _muon_data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(M, M, generator=g), 1e-2 * torch.randn(M, M, generator=g)


def test_muon_optnorm_torch_bf16(benchmark):
    benchmark.group = f"muon-{M}"
    p, g = _muon_data()
    rule = oo.muon(lr=0.02)            # ns_dtype="auto": bf16 matmuls on torch tensors, like torch.optim.Muon
    st = rule.init(p)
    rule.step_(p, g, st)
    benchmark.pedantic(rule.step_, args=(p, g, st), rounds=1 if QUICK else 3, warmup_rounds=0)


def test_muon_torch_optim(benchmark):
    benchmark.group = f"muon-{M}"
    p, g = _muon_data()
    param = torch.nn.Parameter(p)
    param.grad = g
    opt = torch.optim.Muon([param], lr=0.02)
    opt.step()
    benchmark.pedantic(opt.step, rounds=1 if QUICK else 3, warmup_rounds=0)


def test_muon_ns_gemms_only_bf16(benchmark):
    """The 15 bf16 GEMMs (5 iterations x {X X^T, A A, B X}) with nothing else: the floor of a Muon step."""
    benchmark.group = f"muon-{M}"
    X = _muon_data()[1].bfloat16()
    X = X / X.norm()

    def gemms():
        Y = X
        for _ in range(5):
            A = Y @ Y.T
            B = A @ A
            Y = B @ Y
        return Y

    gemms()
    benchmark.pedantic(gemms, rounds=1 if QUICK else 3, warmup_rounds=0)


# ----------------------------------------------------------------------------------------------- memory floor
def test_adamw_memory_floor_numba(benchmark):
    """Read p, g, m, v and write p, m, v with trivial arithmetic: the bandwidth bound of any AdamW step."""
    import numba

    benchmark.group = f"adamw-floor-1x{N}"

    @numba.njit(parallel=True, cache=True)
    def traffic(p, g, m, v):
        for j in numba.prange(p.shape[0]):
            gi = g[j]
            mi = m[j] + gi
            vi = v[j] + gi
            m[j] = mi
            v[j] = vi
            p[j] = p[j] + mi - vi

    ps, gs = _arrays(1)
    m, v = np.zeros_like(ps[0]), np.zeros_like(ps[0])
    traffic(ps[0], gs[0], m, v)
    benchmark(traffic, ps[0], gs[0], m, v)


@pytest.mark.parametrize("nan_policy", ["raise", "ignore"])
def test_adamw_floor_group_optnorm(benchmark, nan_policy):
    benchmark.group = f"adamw-floor-1x{N}"
    ps, gs = _arrays(1)
    rule = oo.adamw(lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, nan_policy=nan_policy)
    st = rule.init(ps)
    rule.step_(ps, gs, st)
    benchmark(rule.step_, ps, gs, st)


def test_adamw_floor_group_torch_fused(benchmark):
    benchmark.group = f"adamw-floor-1x{N}"
    ps, gs = _arrays(1)
    params = [torch.nn.Parameter(torch.from_numpy(p)) for p in ps]
    for p, g in zip(params, gs):
        p.grad = torch.from_numpy(g)
    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, fused=True)
    opt.step()
    benchmark(opt.step)


# ----------------------------------------------------------------------------------------------- new rules vs foreach
RULES = [("rmsprop", "RMSprop", dict(lr=1e-3, momentum=0.9, centered=True)), ("adagrad", "Adagrad", dict(lr=1e-2)),
         ("adadelta", "Adadelta", dict()), ("adamax", "Adamax", dict()), ("nadam", "NAdam", dict()),
         ("radam", "RAdam", dict()), ("adafactor", "Adafactor", dict())]


def _rule_arrays(name):
    rng = np.random.default_rng(0)
    n = N // 100
    shape = (100, n // 100) if name == "adafactor" else (n,)       # Adafactor factors matrices
    ps = [rng.standard_normal(shape, dtype=np.float32) for _ in range(100)]
    gs = [(1e-3 * rng.standard_normal(shape)).astype(np.float32) for _ in range(100)]
    return ps, gs


@pytest.mark.parametrize("name,tname,kw", RULES, ids=[r[0] for r in RULES])
def test_rule_optnorm_step_(benchmark, name, tname, kw):
    benchmark.group = f"{name}-100x{N // 100}"
    ps, gs = _rule_arrays(name)
    rule = getattr(oo, name)(**kw)
    st = rule.init(ps)
    rule.step_(ps, gs, st)
    benchmark(rule.step_, ps, gs, st)


@pytest.mark.parametrize("name,tname,kw", RULES, ids=[r[0] for r in RULES])
def test_rule_torch_foreach(benchmark, name, tname, kw):
    benchmark.group = f"{name}-100x{N // 100}"
    ps, gs = _rule_arrays(name)
    params = [torch.nn.Parameter(torch.from_numpy(p)) for p in ps]
    for p, g in zip(params, gs):
        p.grad = torch.from_numpy(g)
    opt = getattr(torch.optim, tname)(params, foreach=True, **kw)
    opt.step()
    benchmark(opt.step)
