"""scaled_dot_product_attention: torch's semantics (masks, causal, GQA, broadcast batch), the flash kernels against
the generic path and a float64 reference, dropout from the counter hash, the LSE output, bad input, memory."""
from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

import optnorm
from optnorm._lib import ops
from optnorm._numba.attention import dropout_keep
from optnorm.norm import scaled_dot_product_attention as sdpa
from optnorm.norm.attention.softmax_attention import (scaled_dot_product_attention_bwd,
                                                      scaled_dot_product_attention_fwd)
from optnorm.testing import assert_close, check_vjp

from .. import F, torch


def _ref(q, k, v, mask=None, causal=False, scale=None, gqa=False):
    """Independent float64 attention (materialised scores) and its row log-sum-exp."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    if gqa:
        g = q.shape[-3] // k.shape[-3]
        k, v = np.repeat(k, g, axis=-3), np.repeat(v, g, axis=-3)
    s = (q @ np.swapaxes(k, -1, -2)) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    L, S = s.shape[-2:]
    if mask is not None:
        s = s + (np.where(mask, 0.0, -np.inf) if mask.dtype == bool else mask)
    if causal:
        s = np.where(np.tril(np.ones((L, S), bool)), s, -np.inf)
    m = s.max(-1, keepdims=True)
    dead = m == -np.inf
    m = np.where(dead, 0, m)
    e = np.exp(s - m)
    lsum = e.sum(-1, keepdims=True)
    p = np.where(dead, 0, e / np.where(dead, 1, lsum))
    lse = np.where(dead, -np.inf, m + np.log(np.where(dead, 1, lsum)))[..., 0]
    return p @ v, lse


def _torch(q, k, v, g, **kw):
    qt, kt, vt = (torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in (q, k, v))
    o = F.scaled_dot_product_attention(qt, kt, vt, **kw)
    o.backward(torch.tensor(g))
    return o.detach().numpy(), qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()


def _ours(q, k, v, g, mask=None, **kw):
    y, res = scaled_dot_product_attention_fwd(q, k, v, mask, **kw)
    dq, dk, dv, _ = scaled_dot_product_attention_bwd(res, g)
    return y, dq, dk, dv


CASES = {
    "plain": dict(q=(2, 3, 7, 4), k=(2, 3, 9, 4), v=(2, 3, 9, 5)),
    "causal L<S": dict(q=(2, 3, 7, 4), k=(2, 3, 9, 4), v=(2, 3, 9, 5), causal=True),
    "causal L>S": dict(q=(2, 2, 11, 4), k=(2, 2, 6, 4), v=(2, 2, 6, 3), causal=True),
    "bool mask": dict(q=(2, 3, 7, 4), k=(2, 3, 9, 4), v=(2, 3, 9, 5), mask="bool"),
    "float mask bcast": dict(q=(2, 3, 7, 4), k=(2, 3, 9, 4), v=(2, 3, 9, 5), mask="float"),
    "gqa": dict(q=(2, 6, 7, 4), k=(2, 2, 9, 4), v=(2, 2, 9, 5), gqa=True),
    "batch bcast": dict(q=(2, 3, 7, 4), k=(1, 3, 9, 4), v=(1, 3, 9, 5)),
    "3-d": dict(q=(3, 7, 4), k=(3, 9, 4), v=(3, 9, 5), scale=0.3),
}


def _case(rng, name):
    c = CASES[name]
    q, k, v = (rng.standard_normal(c[n]) for n in "qkv")
    mask = None
    if c.get("mask") == "bool":
        mask = rng.random((c["q"][-2], c["k"][-2])) < 0.6
        mask[:, 0] = True
    elif c.get("mask") == "float":
        mask = rng.standard_normal((3, 1, c["k"][-2]))
    kw = {"causal": c.get("causal", False), "scale": c.get("scale"), "enable_gqa": c.get("gqa", False)}
    return q, k, v, mask, kw


@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch_and_reference(rng, path, name):
    q, k, v, mask, kw = _case(rng, name)
    out_shape = np.broadcast_shapes(q.shape[:-1], q.shape[:-2] + (1,)) + (v.shape[-1],)
    g = rng.standard_normal(out_shape)
    ref, _ = _ref(q, k, v, mask, kw["causal"], kw["scale"], kw["enable_gqa"])
    tkw = dict(attn_mask=None if mask is None else torch.tensor(mask), is_causal=kw["causal"], scale=kw["scale"],
               enable_gqa=kw["enable_gqa"])
    t_o, t_dq, t_dk, t_dv = _torch(q, k, v, g, **tkw)
    y, dq, dk, dv = _ours(q, k, v, g, mask, **kw)
    assert_close(y, ref, rtol=1e-12, atol=1e-13, err_msg="output vs float64 reference")
    assert_close(y, t_o, rtol=1e-12, atol=1e-13, err_msg="output vs torch")
    for a, b, nm in ((dq, t_dq, "dq"), (dk, t_dk, "dk"), (dv, t_dv, "dv")):
        assert_close(a, b, rtol=1e-11, atol=1e-12, err_msg=f"{nm} vs torch")


@pytest.mark.parametrize("name", ["plain", "causal L>S", "bool mask", "gqa"])
def test_backends(xp, rng, name):
    q, k, v, mask, kw = _case(rng, name)
    ref, _ = _ref(q, k, v, mask, kw["causal"], kw["scale"], kw["enable_gqa"])
    got = sdpa(xp.asarray(q), xp.asarray(k), xp.asarray(v), None if mask is None else xp.asarray(mask), **kw)
    assert_close(got, ref, rtol=1e-12, atol=1e-13, xp=xp)


def test_float32_and_tiles_against_generic(rng):
    """Sizes beyond one 256 x 512 tile (the Numba kernel's loops over blocks, padding, the thread pool), a
    late key with a score far above the running max (the lazy rescaling's exact branch)."""
    q, k, v = (rng.standard_normal((2, 2, 700, 16)) for _ in range(3))
    k[:, :, 650] *= 30
    mask = rng.random((700, 700)) < 0.9
    g = rng.standard_normal((2, 2, 700, 16))
    for causal in (False, True):
        with optnorm.use_backend("generic"):
            want = _ours(q, k, v, g, mask, causal=causal)
        with optnorm.use_backend("numba"):
            got = _ours(q, k, v, g, mask, causal=causal)
            got32 = _ours(*(a.astype(np.float32) for a in (q, k, v, g)), mask, causal=causal)
        for a, b in zip(got, want):
            assert_close(a, b, rtol=1e-10, atol=1e-11, err_msg=f"causal={causal}")
        for a, b in zip(got32, want):
            assert a.dtype == np.float32
            assert_close(a, b, rtol=2e-4, atol=2e-4, check_dtype=False, err_msg=f"float32 causal={causal}")


def test_fully_masked_rows_give_zero_and_zero_gradient(rng, path):
    q, k, v = (rng.standard_normal((2, 5, 3)) for _ in range(3))
    mask = np.ones((5, 5), bool)
    mask[2] = False
    g = rng.standard_normal((2, 5, 3))
    (y, lse), res = scaled_dot_product_attention_fwd(q, k, v, mask, return_lse=True)
    dq, dk, dv, _ = scaled_dot_product_attention_bwd(res, (g, np.zeros_like(lse)))
    assert np.all(y[:, 2] == 0) and np.all(np.isneginf(lse[:, 2])) and np.all(dq[:, 2] == 0)
    assert np.isfinite(dk).all() and np.isfinite(dv).all()
    t_o, t_dq, _, _ = _torch(q, k, v, g, attn_mask=torch.tensor(mask))
    assert_close(y, t_o, rtol=1e-12, atol=1e-13)   # torch's math backend: 0 too
    assert_close(dq, t_dq, rtol=1e-11, atol=1e-12)


def test_lse_output_and_its_gradient(rng, path):
    q, k, v = (rng.standard_normal((2, 6, 3)) for _ in range(3))
    y, lse = sdpa(q, k, v, causal=True, return_lse=True)
    ref, ref_lse = _ref(q, k, v, causal=True)
    assert_close(lse, ref_lse, rtol=1e-12, atol=1e-13)
    check_vjp(ops.get("scaled_dot_product_attention"), q, k, v, None, opts={"causal": True, "return_lse": True})


@pytest.mark.parametrize("p", [0.25, 0.6])
def test_dropout_mask_rate_paths_and_gradient(rng, p):
    q, k, v = (rng.standard_normal((2, 2, 40, 8)) for _ in range(3))
    outs = []
    for path in ("generic", "numba"):
        with optnorm.use_backend(path):
            outs.append(sdpa(q, k, v, dropout_p=p, seed=11))
    assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-13, err_msg="numba and generic share the hash")
    assert not np.allclose(outs[0], sdpa(q, k, v, dropout_p=p, seed=12))
    assert_close(sdpa(q, k, v, dropout_p=p, seed=11), outs[1], rtol=0, atol=0)  # same seed, same mask
    keep = dropout_keep(11, np.arange(4)[:, None, None], np.arange(40)[None, :, None], np.arange(40)[None, None], p)
    assert abs(keep.mean() - (1 - p)) < 0.03
    # the output equals attention with that keep mask applied to P and 1/(1-p) scaling
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(8)
    pr = np.exp(s - s.max(-1, keepdims=True))
    pr /= pr.sum(-1, keepdims=True)
    want = (pr * keep.reshape(2, 2, 40, 40) / (1 - p)) @ v
    assert_close(outs[0], want, rtol=1e-12, atol=1e-12)
    for path in ("generic", "numba"):
        with optnorm.use_backend(path):
            check_vjp(ops.get("scaled_dot_product_attention"), q[:, :, :6], k[:, :, :5], v[:, :, :5], None,
                      opts={"dropout_p": p, "seed": 3})


def test_adapters_gradients(rng):
    from . import check_adapters

    q, k, v = (rng.standard_normal((2, 2, 4, 3)) for _ in range(3))
    check_adapters("scaled_dot_product_attention", (q, k, v), {"causal": True})


def test_bad_input(rng):
    q, k, v = (rng.standard_normal((2, 3, 5, 4)) for _ in range(3))
    with pytest.raises(ValueError, match="k has head dimension"):
        sdpa(q, k[..., :3], v)
    with pytest.raises(ValueError, match="v has shape"):
        sdpa(q, k, v[..., :4, :])
    with pytest.raises(ValueError, match="mask has shape"):
        sdpa(q, k, v, np.ones((5, 3), bool))
    with pytest.raises(TypeError, match="mask must be boolean"):
        sdpa(q, k, v, np.ones((5, 5), np.int64))
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="dropout_p"):
            sdpa(q, k, v, dropout_p=p)
    with pytest.raises(ValueError, match="enable_gqa"):
        sdpa(q, k[:, :2], v[:, :2])
    with pytest.raises(ValueError, match="multiple of the key heads"):
        sdpa(q, k[:, :2], v[:, :2], enable_gqa=True)
    with pytest.raises(TypeError, match="seed"):
        sdpa(q, k, v, dropout_p=0.1, seed="x")


def test_memory_is_linear_in_length(rng):
    """The Numba path never holds an (L, S) array: the Python-side peak (traced by tracemalloc: inputs' blocked
    copies, outputs, LSE) stays a small multiple of the inputs at L = S = 4096 (an (L, S) float32 score matrix
    per head would be 64 MB per head)."""
    L, d = 4096, 16
    q, k, v = (rng.standard_normal((1, 2, L, d)).astype(np.float32) for _ in range(3))
    with optnorm.use_backend("numba"):
        sdpa(q[..., :300, :], k[..., :300, :], v[..., :300, :])  # compile outside the measurement
        tracemalloc.start()
        y, res = scaled_dot_product_attention_fwd(q, k, v, causal=True)
        scaled_dot_product_attention_bwd(res, y)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 40 * q.nbytes, f"peak {peak / 1e6:.1f} MB for inputs of {q.nbytes / 1e6:.2f} MB"
