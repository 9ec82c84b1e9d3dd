"""linear_cross_entropy against the unfused torch composition (x @ W.T + b, cross_entropy, z-loss) and a float64
loop; chunking, the fused gradients, every backend, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest

import optnorm
from optnorm._lib import ops
from optnorm.norm import cross_entropy, linear_cross_entropy
from optnorm.norm.fused_linear import linear_cross_entropy_bwd, linear_cross_entropy_fwd
from optnorm.testing import assert_close, check_vjp

from . import F, torch


def _torch_ref(x, w, t, b, g, *, eps, zc, reduction):
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    z = xt @ wt.T + (0 if bt is None else bt)
    tt = torch.tensor(t)
    loss = F.cross_entropy(z, tt, ignore_index=-100, label_smoothing=eps, reduction=reduction)
    valid = (tt != -100).to(z.dtype)
    zl = zc * torch.logsumexp(z, -1) ** 2 * valid
    loss = loss + (zl.sum() / valid.sum() if reduction == "mean" else zl.sum() if reduction == "sum" else zl)
    loss.backward(torch.tensor(g))
    return loss.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None if bt is None else bt.grad.numpy()


def _loop(x, w, t, b, *, eps, zc, reduction):
    """Independent float64 loop."""
    per, nv = [], 0
    for xi, ti in zip(x, t):
        if ti == -100:
            per.append(0.0)
            continue
        z = w @ xi + (0 if b is None else b)
        m = z.max()
        lse = m + math.log(math.fsum(math.exp(v - m) for v in z))
        per.append((1 - eps) * (lse - z[ti]) + eps * (lse - math.fsum(z) / len(z)) + zc * lse * lse)
        nv += 1
    per = np.array(per)
    return per if reduction == "none" else per.sum() / (nv if reduction == "mean" else 1)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps,zc", [(0.0, 0.0), (0.1, 1e-3)])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_unfused_torch(rng, path, reduction, eps, zc, bias):
    n, h, v = 13, 5, 11
    x, w = rng.standard_normal((n, h)), rng.standard_normal((v, h))
    b = rng.standard_normal(v) if bias else None
    t = rng.integers(0, v, n)
    t[3] = t[7] = -100
    g = rng.standard_normal(() if reduction != "none" else (n,))
    ref, rdx, rdw, rdb = _torch_ref(x, w, t, b, g, eps=eps, zc=zc, reduction=reduction)
    assert_close(_loop(x, w, t, b, eps=eps, zc=zc, reduction=reduction), ref, rtol=1e-12, atol=1e-13)
    for chunk in (None, 1, 4, 100):
        kw = dict(label_smoothing=eps, z_loss=zc, reduction=reduction, chunk_size=chunk)
        assert_close(linear_cross_entropy(x, w, t, b, **kw), ref, rtol=1e-12, atol=1e-13, err_msg=f"chunk {chunk}")
        y, res = linear_cross_entropy_fwd(x, w, t, b, **kw)
        dx, dw, dt, db = linear_cross_entropy_bwd(res, g)
        assert dt is None
        assert_close(y, ref, rtol=1e-12, atol=1e-13)
        for a, r, nm in ((dx, rdx, "dx"), (dw, rdw, "dw"), (db, rdb, "db")):
            assert_close(a, r, rtol=1e-11, atol=1e-12, err_msg=f"{nm} chunk {chunk}")


def test_batched_rows_float32_and_cross_entropy(rng, path):
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    w = rng.standard_normal((20, 8)).astype(np.float32)
    t = rng.integers(0, 20, (2, 3))
    got = linear_cross_entropy(x, w, t)
    assert got.dtype == np.float32
    want = cross_entropy((x.astype(np.float64) @ w.T.astype(np.float64)).reshape(6, 20), t.reshape(-1))
    assert_close(got, want, rtol=2e-6, atol=1e-6, check_dtype=False)
    y, res = linear_cross_entropy_fwd(x, w, t, reduction="none")
    assert y.shape == (2, 3)


def test_backends(xp, rng):
    x, w, b = rng.standard_normal((7, 4)), rng.standard_normal((9, 4)), rng.standard_normal(9)
    t = rng.integers(0, 9, 7)
    t[0] = -100
    want = _loop(x, w, t, b, eps=0.2, zc=1e-2, reduction="mean")
    got = linear_cross_entropy(xp.asarray(x), xp.asarray(w), xp.asarray(t), xp.asarray(b), label_smoothing=0.2,
                               z_loss=1e-2, chunk_size=3)
    assert_close(got, want, rtol=1e-12, atol=1e-13, xp=xp)


def test_vjp_and_adapters(rng):
    x, w, b = rng.standard_normal((5, 3)), rng.standard_normal((6, 3)), rng.standard_normal(6)
    t = rng.integers(0, 6, 5)
    t[1] = -100
    op = ops.get("linear_cross_entropy")
    for red in ("mean", "sum", "none"):
        check_vjp(op, x, w, t, b, opts={"reduction": red, "label_smoothing": 0.1, "z_loss": 0.01, "chunk_size": 2})
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    import optnorm.torch as ont

    assert torch.autograd.gradcheck(lambda a, c, d: ont.linear_cross_entropy(a, c, torch.tensor(t), d,
                                                                               chunk_size=2), (xt, wt, bt))


def test_all_rows_ignored(rng):
    x, w = rng.standard_normal((3, 2)), rng.standard_normal((4, 2))
    t = np.full(3, -100)
    assert np.isnan(linear_cross_entropy(x, w, t))          # torch: 0 / 0 too
    assert linear_cross_entropy(x, w, t, reduction="sum") == 0
    y, res = linear_cross_entropy_fwd(x, w, t)
    dx, dw, _, _ = linear_cross_entropy_bwd(res, np.float64(1.0))
    assert np.all(dx == 0) and np.all(dw == 0)


def test_bad_input(rng):
    x, w = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    with pytest.raises(ValueError, match="target has label 5"):
        linear_cross_entropy(x, w, np.array([0, 1, 5, 2]))
    with pytest.raises(ValueError, match="target has label -1"):
        linear_cross_entropy(x, w, np.array([0, 1, -1, 2]))
    with pytest.raises(ValueError, match="target has shape"):
        linear_cross_entropy(x, w, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="weight"):
        linear_cross_entropy(x, w[:, :2], np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="chunk_size"):
        linear_cross_entropy(x, w, np.array([0, 1, 2, 3]), chunk_size=0)
    assert np.isfinite(linear_cross_entropy(x, w, np.array([0, -100, 2, 3])))
