"""optnorm.norm row kernels (Numba path) against NumPy and torch CPU, with the memory-copy floor.

Groups compare like with like: ``prealloc`` cases write into preallocated outputs (optnorm ``out=``,
``torch.ops.aten._softmax.out``, NumPy ufuncs with ``out=``), ``alloc`` cases allocate their result.
Each group also holds the copy of the same bytes (``np.copyto`` single-threaded and a 2-thread Numba copy),
the floor a one-read-one-write kernel can reach.  Shapes: 4096x8192 and 64x262144 float32
(``OPTNORM_BENCH_QUICK=1``: 512x2048 and 16x32768).

Run: ``python -m optnorm bench norm [--quick]`` (``OPTNORM_BENCH_THREADS=1`` pins both libraries to one thread).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from peak_rss import PRELUDE  # noqa: E402  (benchmarks/peak_rss.py: peak memory measured in the child)

import optnorm
from optnorm._lib import ops
from optnorm.norm import layer_norm, log_softmax, rms_norm, softmax

torch = pytest.importorskip("torch")
F = torch.nn.functional

QUICK = os.environ.get("OPTNORM_BENCH_QUICK", "0") == "1"
# OPTNORM_BENCH_THREADS=k pins Numba and torch to k threads (k=1 gives stable ratios on a shared machine,
# where preempted worker threads make every parallel timing, the 2-thread copy floor included, meaningless).
_THREADS = os.environ.get("OPTNORM_BENCH_THREADS")
if _THREADS:
    import numba

    numba.set_num_threads(int(_THREADS))
    torch.set_num_threads(int(_THREADS))
SHAPES = [(512, 2048), (16, 32768)] if QUICK else [(4096, 8192), (64, 262144)]
_cache: dict = {}


def _data(shape):
    if shape not in _cache:
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape, dtype=np.float32)
        g = rng.standard_normal(shape, dtype=np.float32)
        w = (1 + 0.1 * rng.standard_normal(shape[1])).astype(np.float32)
        b = (0.1 * rng.standard_normal(shape[1])).astype(np.float32)
        _cache[shape] = dict(x=x, g=g, w=w, b=b, out=np.empty_like(x), out2=np.empty_like(x))
    return _cache[shape]


def _name(shape):
    return f"{shape[0]}x{shape[1]}"


def _nb_copy():
    from numba import prange

    from optnorm._numba._rows import jit

    @jit()
    def copy_rows(src, dst):
        for r in prange(src.shape[0]):
            s = src[r]
            d = dst[r]
            for j in range(s.shape[0]):
                d[j] = s[j]

    return copy_rows


_copy_rows = None


def _floor(benchmark, shape, which):
    global _copy_rows
    d = _data(shape)
    if which == "np.copyto":
        benchmark(np.copyto, d["out"], d["x"])
    else:
        if _copy_rows is None:
            _copy_rows = _nb_copy()
        _copy_rows(d["x"], d["out"])
        benchmark(_copy_rows, d["x"], d["out"])


def _warm(fn, *a, **k):
    fn(*a, **k)  # compile (numba) and fault the output pages in
    fn(*a, **k)


def _np_softmax(x, out, log):
    m = x.max(axis=1, keepdims=True)
    np.subtract(x, m, out=out)
    if log:
        e = np.exp(out)
        out -= np.log(e.sum(axis=1, keepdims=True))
        return out
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


# ------------------------------------------------------------------------------------------ softmax / log_softmax
FWD_PRE = ["floor np.copyto", "floor numba 2-thread copy", "optnorm safe", "optnorm online", "optnorm two_pass",
           "torch _softmax.out", "numpy"]


@pytest.mark.parametrize("shape", SHAPES, ids=_name)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("impl", FWD_PRE)
def test_softmax_fwd_prealloc(benchmark, shape, log, impl):
    benchmark.group = f"{'log_softmax' if log else 'softmax'} fwd prealloc {_name(shape)}"
    d = _data(shape)
    x, out = d["x"], d["out"]
    if impl.startswith("floor"):
        return _floor(benchmark, shape, impl.split(" ", 1)[1])
    if impl.startswith("optnorm"):
        f = log_softmax if log else softmax
        _warm(f, x, method=impl.split()[1], out=out)
        benchmark(f, x, method=impl.split()[1], out=out)
    elif impl.startswith("torch"):
        xt, ot = torch.from_numpy(x), torch.from_numpy(out)
        op = torch.ops.aten._log_softmax.out if log else torch.ops.aten._softmax.out
        _warm(op, xt, -1, False, out=ot)
        benchmark(op, xt, -1, False, out=ot)
    else:
        benchmark(_np_softmax, x, out, log)


@pytest.mark.parametrize("shape", SHAPES, ids=_name)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("impl", ["optnorm", "torch", "numpy"])
def test_softmax_fwd_alloc(benchmark, shape, log, impl):
    benchmark.group = f"{'log_softmax' if log else 'softmax'} fwd alloc {_name(shape)}"
    x = _data(shape)["x"]
    if impl == "optnorm":
        f = log_softmax if log else softmax
        _warm(f, x)
        benchmark(f, x)
    elif impl == "torch":
        xt = torch.from_numpy(x)
        f = torch.log_softmax if log else torch.softmax
        benchmark(f, xt, -1)
    else:
        benchmark(lambda: _np_softmax(x, np.empty_like(x), log))


@pytest.mark.parametrize("shape", SHAPES, ids=_name)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("impl", ["floor numba 2-thread copy", "optnorm", "torch"])
def test_softmax_bwd(benchmark, shape, log, impl):
    """VJP given the forward output (both allocate dx)."""
    benchmark.group = f"{'log_softmax' if log else 'softmax'} bwd {_name(shape)}"
    d = _data(shape)
    if impl.startswith("floor"):
        return _floor(benchmark, shape, "numba 2-thread copy")
    f = log_softmax if log else softmax
    y = f(d["x"])
    if impl == "optnorm":
        op = ops.get("log_softmax" if log else "softmax")
        res = op.fwd(d["x"])[1]          # the residuals the forward saves (its output and options)
        _warm(op.bwd, res, d["g"])
        benchmark(op.bwd, res, d["g"])
    else:
        yt, gt = torch.from_numpy(y), torch.from_numpy(d["g"])
        fb = torch._log_softmax_backward_data if log else torch._softmax_backward_data
        benchmark(fb, gt, yt, -1, torch.float32)


# ------------------------------------------------------------------------------------------ layer_norm / rms_norm
@pytest.mark.parametrize("shape", SHAPES, ids=_name)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("impl", ["floor np.copyto", "floor numba 2-thread copy", "optnorm prealloc", "optnorm alloc",
                                  "torch alloc", "numpy alloc"])
def test_norm_fwd(benchmark, shape, op, impl):
    """torch has no out= for layer_norm/rms_norm (aten.native_layer_norm.out was slower than the allocating call
    in the reference note), so its allocating call is the peer of both optnorm modes."""
    benchmark.group = f"{op} fwd {_name(shape)}"
    d = _data(shape)
    x, w, b, out = d["x"], d["w"], d["b"], d["out"]
    n = shape[1]
    if impl.startswith("floor"):
        return _floor(benchmark, shape, impl.split(" ", 1)[1])
    if impl.startswith("optnorm"):
        kw = {"out": out} if impl.endswith("prealloc") else {}
        if op == "layer_norm":
            _warm(layer_norm, x, w, b, **kw)
            benchmark(layer_norm, x, w, b, **kw)
        else:
            _warm(rms_norm, x, w, eps=1e-6, **kw)
            benchmark(rms_norm, x, w, eps=1e-6, **kw)
    elif impl.startswith("torch"):
        xt, wt, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
        if op == "layer_norm":
            benchmark(F.layer_norm, xt, (n,), wt, bt, 1e-5)
        else:
            benchmark(F.rms_norm, xt, (n,), wt, 1e-6)
    else:
        if op == "layer_norm":
            def f():
                mu = x.mean(1, keepdims=True)
                var = x.var(1, keepdims=True)
                return (x - mu) / np.sqrt(var + 1e-5) * w + b
        else:
            def f():
                return x / np.sqrt((x * x).mean(1, keepdims=True) + 1e-6) * w
        benchmark(f)


@pytest.mark.parametrize("shape", SHAPES, ids=_name)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm", "softmax"])
@pytest.mark.parametrize("impl", ["optnorm", "torch autograd"])
def test_norm_fwd_bwd(benchmark, shape, op, impl):
    """Forward + VJP (optnorm: registered fwd/bwd pair on NumPy; torch: autograd on a leaf tensor)."""
    benchmark.group = f"{op} fwd+bwd {_name(shape)}"
    d = _data(shape)
    x, g, w, b = d["x"], d["g"], d["w"], d["b"]
    n = shape[1]
    if impl == "optnorm":
        o = ops.get(op)
        args = {"layer_norm": (x, w, b), "rms_norm": (x, w), "softmax": (x,)}[op]
        opts = {"rms_norm": {"eps": 1e-6}}.get(op, {})

        def run():
            _, res = o.fwd(*args, **opts)
            return o.bwd(res, g)
        _warm(run)
        benchmark(run)
    else:
        xt, wt, bt, gt = (torch.from_numpy(a) for a in (x, w, b, g))
        wt.requires_grad_()
        bt.requires_grad_()

        def run():
            xl = xt.clone().requires_grad_()
            if op == "layer_norm":
                y = F.layer_norm(xl, (n,), wt, bt, 1e-5)
            elif op == "rms_norm":
                y = F.rms_norm(xl, (n,), wt, 1e-6)
            else:
                y = torch.softmax(xl, -1)
            y.backward(gt)
            return xl.grad
        benchmark(run)


# ------------------------------------------------------------------------------------------ small calls
SMALL_SHAPES = [(3, 5), (32, 64), (256, 256)]


@pytest.mark.parametrize("shape", SMALL_SHAPES, ids=_name)
@pytest.mark.parametrize("impl", ["optnorm", "optnorm parallel build", "torch", "numpy"])
def test_softmax_small(benchmark, shape, impl):
    """Small rows: optnorm runs the serial build of the row kernel below 65536 elements (the parallel build's
    thread-pool wake-up cost ~1 ms on a 3x5 input); the 'parallel build' case forces it for comparison."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if impl == "optnorm":
        benchmark(softmax, x)
    elif impl == "optnorm parallel build":
        from optnorm._numba import norm as nb

        y = np.empty_like(x)
        nb._softmax_safe_rows.parallel(x, y, False, False)
        benchmark(nb._softmax_safe_rows.parallel, x, y, False, False)
    elif impl == "torch":
        xt = torch.from_numpy(x)
        benchmark(torch.softmax, xt, -1)
    else:
        def run():
            e = np.exp(x - x.max(-1, keepdims=True))
            return e / e.sum(-1, keepdims=True)
        benchmark(run)


def test_numba_path_is_used():
    from optnorm.norm.softmax import _softmax

    x = _data(SHAPES[0])["x"]
    assert _softmax.path_for(x, axis=1, method="safe", masked_row="nan", log=False, out=None, xp=np) == "numba"
    assert optnorm._lib.dispatch.get_backend() == "auto"


# ------------------------------------------------------------------------------------------ cross_entropy
CE_SHAPES = [(256, 8000)] if QUICK else [(1024, 32000)]


@pytest.mark.parametrize("shape", CE_SHAPES, ids=_name)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", ["floor np.copyto", "optnorm", "torch"])
def test_cross_entropy(benchmark, shape, mode, impl):
    """Integer targets, label_smoothing=0.1, PaLM z-loss 1e-4 (torch: logsumexp added by hand, autograd)."""
    benchmark.group = f"cross_entropy {mode} {_name(shape)}"
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape, dtype=np.float32)
    t = rng.integers(0, shape[1], shape[0])
    if impl.startswith("floor"):
        out = np.empty_like(x)
        benchmark(np.copyto, out, x)
        return
    if impl == "optnorm":
        op = ops.get("cross_entropy")

        def run():
            y, res = op.fwd(x, t, None, label_smoothing=0.1, z_loss=1e-4)
            return op.bwd(res, np.float32(1.0)) if mode == "fwd+bwd" else y
        _warm(run)
        benchmark(run)
    else:
        xt, tt = torch.from_numpy(x), torch.from_numpy(t)

        def run():
            xl = xt.clone().requires_grad_(mode == "fwd+bwd")
            loss = F.cross_entropy(xl, tt, label_smoothing=0.1) + 1e-4 * (torch.logsumexp(xl, 1) ** 2).mean()
            if mode == "fwd+bwd":
                loss.backward()
            return loss
        benchmark(run)


# ------------------------------------------------------------------------------------------ scaled dot-product attention
SDPA_SHAPES = [(1, 4, 512, 64)] if QUICK else [(4, 16, 2048, 64)]


def _sdpa_name(shape):
    return "x".join(map(str, shape))


@pytest.mark.parametrize("shape", SDPA_SHAPES, ids=_sdpa_name)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", ["optnorm", "torch"])
def test_sdpa(benchmark, shape, causal, mode, impl):
    """float32 q, k, v of shape (batch, heads, L, d), L = S; torch's CPU flash-attention kernel side by side."""
    benchmark.group = f"sdpa {mode} {'causal' if causal else 'full'} {_sdpa_name(shape)}"
    rng = np.random.default_rng(3)
    q, k, v, g = (rng.standard_normal(shape, dtype=np.float32) for _ in range(4))
    if impl == "optnorm":
        op = ops.get("scaled_dot_product_attention")

        def run():
            y, res = op.fwd(q, k, v, causal=causal)
            return op.bwd(res, g) if mode == "fwd+bwd" else y
    else:
        qt, kt, vt, gt = (torch.from_numpy(a) for a in (q, k, v, g))

        def run():
            if mode == "fwd":
                with torch.no_grad():
                    return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
            a, b, c = (t.detach().requires_grad_() for t in (qt, kt, vt))
            F.scaled_dot_product_attention(a, b, c, is_causal=causal).backward(gt)
            return a.grad, b.grad, c.grad
    _warm(run)
    benchmark.pedantic(run, rounds=3 if not QUICK else 10, iterations=1)


# ------------------------------------------------------------------------------------------ fused linear cross-entropy
LCE_SHAPE = (1024, 512, 8000) if QUICK else (8192, 2048, 32000)   # rows N, hidden H, vocabulary V

_LCE_SCRIPT = r"""
import resource, sys, time
import numpy as np
impl, n, h, v = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
import torch
import torch.nn.functional as F
from optnorm._lib import ops
rng = np.random.default_rng(4)
x = rng.standard_normal((n, h), dtype=np.float32)
w = (rng.standard_normal((v, h), dtype=np.float32) / np.float32(h ** 0.5))
t = rng.integers(0, v, n)
if impl == "optnorm":
    op = ops.get("linear_cross_entropy")
    # warm the Numba kernels on a small problem, so compilation is not counted
    op.bwd(op.fwd(x[:64], w[:256], t[:64] % 256)[1], np.float32(1.0))
else:
    xt, wt, tt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(t)
    a, b = xt[:64].clone().requires_grad_(), wt[:256].clone().requires_grad_()
    F.cross_entropy(a @ b.T, tt[:64] % 256).backward()
base = rss_mark()
t0 = time.perf_counter()
if impl == "optnorm":
    loss, res = op.fwd(x, w, t)
    dx, dw = op.bwd(res, np.float32(1.0))[:2]
else:
    a, b = xt.clone().requires_grad_(), wt.clone().requires_grad_()
    base = rss_mark()   # the clones are inputs, not extra memory
    t0 = time.perf_counter()
    loss = F.cross_entropy(a @ b.T, tt)
    loss.backward()
    dx, dw = a.grad, b.grad
dt = time.perf_counter() - t0
peak = rss_peak()
print(f"{(peak - base) / 1024:.1f} {dt:.3f} {float(loss):.6f}")
"""


def lce_peak_extra_mb(impl, shape=LCE_SHAPE):
    """(peak extra resident MB, seconds, loss) of one forward+backward in a fresh process (ru_maxrss after the
    inputs are built and the kernels are warm, subtracted from ru_maxrss at the end; gradients included)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", PRELUDE + _LCE_SCRIPT, impl, *map(str, shape)], capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[0]), float(out[1]), float(out[2])


@pytest.mark.parametrize("impl", ["optnorm", "torch unfused"])
def test_linear_cross_entropy(benchmark, impl):
    """Forward+backward (gradients of x and weight) of cross_entropy(x @ W.T, t), float32, N x H times V x H."""
    n, h, v = LCE_SHAPE
    benchmark.group = f"linear_cross_entropy fwd+bwd {n}x{h}x{v}"
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, h), dtype=np.float32)
    w = rng.standard_normal((v, h), dtype=np.float32) / np.float32(h ** 0.5)
    t = rng.integers(0, v, n)
    if impl == "optnorm":
        op = ops.get("linear_cross_entropy")

        def run():
            return op.bwd(op.fwd(x, w, t)[1], np.float32(1.0))
    else:
        xt, wt, tt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(t)

        def run():
            a, b = xt.detach().requires_grad_(), wt.detach().requires_grad_()
            F.cross_entropy(a @ b.T, tt).backward()
            return a.grad, b.grad
    run()
    benchmark.pedantic(run, rounds=2 if not QUICK else 5, iterations=1)


@pytest.mark.parametrize("impl", ["optnorm", "torch unfused"])
def test_linear_cross_entropy_peak_memory(benchmark, impl):
    """Peak extra resident memory (MB, in benchmark.extra_info) of one forward+backward in a subprocess."""
    n, h, v = LCE_SHAPE
    benchmark.group = f"linear_cross_entropy peak memory {n}x{h}x{v}"
    res = {}

    def run():
        res["mb"], res["s"], res["loss"] = lce_peak_extra_mb("optnorm" if impl == "optnorm" else "torch")
    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["peak_extra_MB"] = res["mb"]


# ------------------------------------------------------------------------------------------ sparsemax / entmax15
SPARSE_SHAPE = (512, 8000) if QUICK else (4096, 32000)


@pytest.mark.parametrize("impl", ["optnorm softmax", "optnorm sparsemax", "optnorm entmax15", "torch softmax"])
def test_sparse_maps(benchmark, impl):
    """Allocating forward over rows of 32,000 float32 logits: sparsemax/entmax15 against softmax on the same rows."""
    from optnorm.norm import entmax15, sparsemax

    benchmark.group = f"sparse maps fwd {_name(SPARSE_SHAPE)}"
    x = np.random.default_rng(5).standard_normal(SPARSE_SHAPE, dtype=np.float32) * np.float32(3.0)
    if impl == "torch softmax":
        xt = torch.from_numpy(x)
        fn = lambda: torch.softmax(xt, -1)  # noqa: E731
    else:
        f = {"softmax": softmax, "sparsemax": sparsemax, "entmax15": entmax15}[impl.split()[1]]
        fn = lambda: f(x)  # noqa: E731
    _warm(fn)
    benchmark(fn)


_SDPA_MEM_SCRIPT = r"""
import resource, sys
import numpy as np
from optnorm._lib import ops
L = int(sys.argv[1])
rng = np.random.default_rng(0)
q, k, v, g = (rng.standard_normal((1, 2, L, 64), dtype=np.float32) for _ in range(4))
op = ops.get("scaled_dot_product_attention")
s = q[:, :, :256]
op.bwd(op.fwd(s, s, s, causal=True)[1], s)   # compile outside the measurement
base = rss_mark()
op.bwd(op.fwd(q, k, v, causal=True)[1], g)
print((rss_peak() - base) / 1024)
"""


@pytest.mark.parametrize("L", [1024, 4096] if QUICK else [4096, 16384])
def test_sdpa_long_memory(benchmark, L):
    """Peak extra resident MB (benchmark.extra_info) of a causal fwd+bwd over 2 heads of L tokens, d = 64: linear
    in L (one head's score matrix alone would be 4 L^2 bytes: 1 GB at L = 16,384)."""
    import subprocess
    import sys

    benchmark.group = "sdpa long-sequence peak memory"
    res = {}

    def run():
        res["mb"] = float(subprocess.run([sys.executable, "-c", PRELUDE + _SDPA_MEM_SCRIPT, str(L)], capture_output=True,
                                         text=True, check=True).stdout.split()[-1])
    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["peak_extra_MB"] = res["mb"]


# ---------------------------------------------------------------------------- MoE gates: top-k softmax, soft top-k
# 65536 x 64 float32 logits.  topk_softmax: optnorm's fused Numba row kernel (dense gate plus indices) against
# torch's softmax -> topk -> renormalise (Mixtral's router: k values and indices) and the same followed by a
# scatter into a dense gate (what optnorm returns).  soft_topk: the Numba row bisection against the generic
# Array-API path (64 vectorised passes over the whole array).
GATE_ROWS = 8192 if QUICK else 65536


@pytest.fixture(scope="module")
def gate_logits():
    return np.random.default_rng(0).standard_normal((GATE_ROWS, 64)).astype(np.float32)


@pytest.mark.parametrize("k", [2, 8])
@pytest.mark.parametrize("impl", ["optnorm", "torch", "torch dense"])
def test_topk_softmax(benchmark, gate_logits, k, impl):
    from optnorm.norm import topk_softmax

    benchmark.group = f"topk_softmax k={k}"
    t = torch.from_numpy(gate_logits)

    def run_torch():
        v, i = torch.topk(torch.softmax(t, dim=-1), k, dim=-1)
        v = v / v.sum(-1, keepdim=True)
        return (torch.zeros_like(t).scatter_(-1, i, v) if impl == "torch dense" else v), i

    if impl == "optnorm":
        topk_softmax(gate_logits[:64], k=k)  # compile / warm up
        benchmark(lambda: topk_softmax(gate_logits, k=k, return_indices=True))
    else:
        benchmark(run_torch)


@pytest.mark.parametrize("impl", ["optnorm", "optnorm generic"])
def test_soft_topk(benchmark, gate_logits, impl):
    from optnorm.norm import soft_topk

    benchmark.group = "soft_topk k=8"
    soft_topk(gate_logits[:64], k=8)  # compile / warm up

    def run():
        with optnorm.use_backend("generic" if impl == "optnorm generic" else "auto"):
            return soft_topk(gate_logits, k=8)

    benchmark(run)
