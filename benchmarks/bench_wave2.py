"""Wave-2 benchmarks: the top-k MoE gate against torch, pairwise NWD against NumPy and a copy of the output.

Groups (optnorm and its peers side by side):

- ``topk_softmax k=2`` / ``k=8``: 65536 x 64 float32 logits.  optnorm's fused Numba row kernel (dense
  gate, plus indices) against torch's softmax -> topk -> renormalise (Mixtral's router: k values and
  indices) and the same followed by a scatter into a dense gate (what optnorm returns).
- ``soft_topk k=8``: 65536 x 64 float32, the Numba row bisection against the generic Array-API path
  (64 vectorised passes over the whole array).
- ``pairwise NWD``: 4096 x 4096 float32 boxes (xyxy).  optnorm's fused kernel against the broadcast
  NumPy expression, and ``np.copyto`` of the 64 MiB output as the floor (a memory-bound pass).

``OPTNORM_BENCH_QUICK=1`` shrinks the sizes.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import optnorm.norm as on
import optnorm.ot as oo

QUICK = os.environ.get("OPTNORM_BENCH_QUICK", "0") == "1"
ROWS = 8192 if QUICK else 65536
NBOX = 1024 if QUICK else 4096


@pytest.fixture(scope="module")
def logits():
    return np.random.default_rng(0).standard_normal((ROWS, 64)).astype(np.float32)


@pytest.mark.parametrize("k", [2, 8])
def test_topk_optnorm(benchmark, logits, k):
    benchmark.group = f"topk_softmax k={k}"
    on.topk_softmax(logits[:64], k=k)  # compile / warm up
    benchmark(lambda: on.topk_softmax(logits, k=k, return_indices=True))


@pytest.mark.parametrize("k", [2, 8])
def test_topk_torch(benchmark, logits, k):
    torch = pytest.importorskip("torch")
    benchmark.group = f"topk_softmax k={k}"
    t = torch.from_numpy(logits)

    def run():
        p = torch.softmax(t, dim=-1)
        v, i = torch.topk(p, k, dim=-1)
        return v / v.sum(-1, keepdim=True), i

    benchmark(run)


@pytest.mark.parametrize("k", [2, 8])
def test_topk_torch_dense(benchmark, logits, k):
    torch = pytest.importorskip("torch")
    benchmark.group = f"topk_softmax k={k}"
    t = torch.from_numpy(logits)

    def run():
        p = torch.softmax(t, dim=-1)
        v, i = torch.topk(p, k, dim=-1)
        return torch.zeros_like(p).scatter_(-1, i, v / v.sum(-1, keepdim=True)), i

    benchmark(run)


def test_soft_topk_numba(benchmark, logits):
    benchmark.group = "soft_topk k=8"
    on.soft_topk(logits[:64], k=8)  # compile / warm up
    benchmark(lambda: on.soft_topk(logits, k=8))


def test_soft_topk_generic(benchmark, logits):
    import optnorm

    benchmark.group = "soft_topk k=8"

    def run():
        with optnorm.use_backend("generic"):
            return on.soft_topk(logits, k=8)

    benchmark(run)


def _boxes(n, seed):
    rng = np.random.default_rng(seed)
    c = rng.uniform(0, 1000, (n, 2))
    wh = rng.uniform(2, 40, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)


@pytest.fixture(scope="module")
def boxes():
    return _boxes(NBOX, 1), _boxes(NBOX, 2)


def test_nwd_optnorm(benchmark, boxes):
    benchmark.group = "pairwise NWD"
    b1, b2 = boxes
    oo.normalized_wasserstein_boxes(b1[:8], b2[:8], pairwise=True)  # compile / warm up
    benchmark(lambda: oo.normalized_wasserstein_boxes(b1, b2, pairwise=True))


def test_nwd_optnorm_out(benchmark, boxes):
    benchmark.group = "pairwise NWD"
    b1, b2 = boxes
    out = np.empty((len(b1), len(b2)), np.float32)
    oo.normalized_wasserstein_boxes(b1, b2, pairwise=True, out=out)
    benchmark(lambda: oo.normalized_wasserstein_boxes(b1, b2, pairwise=True, out=out))


def test_nwd_numpy_broadcast(benchmark, boxes):
    benchmark.group = "pairwise NWD"
    b1, b2 = boxes

    def run():
        c1 = np.stack([(b1[:, 0] + b1[:, 2]) / 2, (b1[:, 1] + b1[:, 3]) / 2, (b1[:, 2] - b1[:, 0]) / 2,
                       (b1[:, 3] - b1[:, 1]) / 2], 1)
        c2 = np.stack([(b2[:, 0] + b2[:, 2]) / 2, (b2[:, 1] + b2[:, 3]) / 2, (b2[:, 2] - b2[:, 0]) / 2,
                       (b2[:, 3] - b2[:, 1]) / 2], 1)
        d2 = ((c1[:, None, :] - c2[None, :, :]) ** 2).sum(-1)
        return np.exp(-np.sqrt(d2 + np.float32(1e-7)) / np.float32(12.8))

    benchmark(run)


def test_nwd_copy_floor(benchmark, boxes):
    benchmark.group = "pairwise NWD"
    src = np.random.default_rng(3).random((NBOX, NBOX), dtype=np.float32)
    dst = np.empty_like(src)
    benchmark(lambda: np.copyto(dst, src))
