"""inline_attention (linear vs quadratic form), selective_attention, log_position_temperature."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm.norm import inline_attention, log_position_temperature, selective_attention
from optnorm.testing import assert_close, check_vjp


def _inline_quadratic(q, k, v, s, causal):
    """O(N²) reference: explicit weight matrix W, checked to have rows summing to one."""
    nq, n = q.shape[-2], k.shape[-2]
    W = np.zeros(q.shape[:-2] + (nq, n))
    for i in range(nq):
        m = i + 1 if causal else n
        kbar = k[..., :m, :].mean(-2)
        for j in range(m):
            W[..., i, j] = (s * (q[..., i, :] * k[..., j, :]).sum(-1) - s * (q[..., i, :] * kbar).sum(-1) + 1) / m
    assert np.allclose(W.sum(-1), 1.0)
    return W @ v


@pytest.mark.parametrize("causal", [False, True])
def test_inline_linear_equals_quadratic(xp, rng, causal):
    q, k = rng.standard_normal((2, 6, 4)), rng.standard_normal((2, 6, 4))
    v = rng.standard_normal((2, 6, 3))
    ref = _inline_quadratic(q, k, v, 0.5, causal)
    assert_close(inline_attention(xp.asarray(q), xp.asarray(k), xp.asarray(v), causal=causal), ref, rtol=1e-10,
                 atol=1e-12)


def test_inline_cross_attention_and_scale(rng):
    q, k, v = rng.standard_normal((3, 4)), rng.standard_normal((7, 4)), rng.standard_normal((7, 2))
    assert_close(inline_attention(q, k, v, scale=0.3), _inline_quadratic(q, k, v, 0.3, False), rtol=1e-10)
    y = inline_attention(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32))
    assert y.dtype == np.float32


def _softmax_attn(q, k, v, tq, tv, causal, s):
    qt = q * (1 if tq is None else tq)
    vt = v * (1 if tv is None else tv)
    z = s * qt @ np.swapaxes(k, -1, -2)
    if causal:
        z = np.where(np.tril(np.ones(z.shape[-2:], bool)), z, -np.inf)
    a = np.exp(z - z.max(-1, keepdims=True))
    return (a / a.sum(-1, keepdims=True)) @ vt


@pytest.mark.parametrize("causal", [False, True])
def test_selective_attention(xp, rng, causal):
    q, k, v = (rng.standard_normal((2, 5, 4)) for _ in range(3))
    tq, tv = rng.random((2, 5, 1)) + 0.5, rng.random((5, 1)) + 0.5
    y = selective_attention(xp.asarray(q), xp.asarray(k), xp.asarray(v), xp.asarray(tq), xp.asarray(tv),
                            causal=causal)
    assert_close(y, _softmax_attn(q, k, v, tq, tv, causal, 0.5), rtol=1e-10)
    y0 = selective_attention(xp.asarray(q), xp.asarray(k), xp.asarray(v), causal=causal)
    assert_close(y0, _softmax_attn(q, k, v, None, None, causal, 0.5), rtol=1e-10)


def test_log_position_temperature(xp):
    t = log_position_temperature(4, 0.3)
    ref = 1 + np.log(np.arange(1, 5))[:, None] / (1 + np.exp(-0.3))
    assert_close(t, ref, rtol=1e-12)
    a = xp.asarray(np.array([0.0, 2.0]))
    t2 = log_position_temperature(3, a, offset=0.5)
    assert tuple(t2.shape) == (2, 3, 1)
    assert_close(t2[1, ...], 0.5 + np.log(np.arange(1, 4))[:, None] / (1 + np.exp(-2.0)), rtol=1e-12)


def test_vjps(rng):
    q, k, v = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 2))
    for causal in (False, True):
        check_vjp("norm.inline_attention", q, k, v, opts={"causal": causal})
    check_vjp("norm.inline_attention", q[0, :2], k[1], v[1], opts={"scale": 0.7})
    check_vjp("norm.inline_attention", q, k[0], v[0])  # broadcast batch
    tq, tv = rng.random((2, 5, 1)) + 0.5, rng.random((5, 1)) + 0.5
    for causal in (False, True):
        check_vjp("norm.selective_attention", q, k, v, tq, tv, opts={"causal": causal})
    check_vjp("norm.selective_attention", q, k, v, None, None)


def test_adapters(rng):
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    import optnorm.jax as onj
    import optnorm.torch as ont

    arrs = [rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.standard_normal((4, 2)),
            rng.random((4, 1)) + 0.5, rng.random((4, 1)) + 0.5]
    ts = [torch.tensor(a, requires_grad=True) for a in arrs]
    assert torch.autograd.gradcheck(lambda a, b, c: ont.inline_attention(a, b, c, causal=True), ts[:3])
    assert torch.autograd.gradcheck(lambda *a: ont.selective_attention(*a), ts)
    js = [jax.numpy.asarray(a) for a in arrs]
    check_grads(lambda a, b, c: onj.inline_attention(a, b, c, causal=True), js[:3], order=1, modes=["rev"])
    check_grads(lambda *a: onj.selective_attention(*a), js, order=1, modes=["rev"])
    y = jax.jit(lambda *a: onj.selective_attention(*a))(*js)
    assert y.shape == (4, 2)


def test_bad_input(rng):
    q = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match="q and k must have the same feature size"):
        inline_attention(q, rng.standard_normal((4, 2)), q)
    with pytest.raises(ValueError, match="k and v must have the same number of tokens"):
        inline_attention(q, q, rng.standard_normal((5, 3)))
    with pytest.raises(ValueError, match="causal=True needs as many queries as keys"):
        inline_attention(q[:2], q, q, causal=True)
    with pytest.raises(ValueError, match="q_temperature must broadcast"):
        selective_attention(q, q, q, np.ones((4, 3)))
    with pytest.raises(ValueError, match="scale must be > 0"):
        selective_attention(q, q, q, scale=-1.0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        log_position_temperature(0, 1.0)
