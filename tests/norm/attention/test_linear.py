"""Linear-time attention (linear, NaLa, MALA, InLine) against quadratic float64 references."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm._lib import compat
from optnorm.norm import inline_attention, linear_attention, mala_attention, nala_attention
from optnorm.testing import assert_close, check_vjp

from . import check_adapters, qkv

def elu1(x):
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0)))


def ref_linear(a, b, v, causal, eps):
    """a, b: feature-mapped queries/keys."""
    out = np.zeros(a.shape[:-1] + (v.shape[-1],))
    for idx in np.ndindex(a.shape[:-2]):
        K = a[idx] @ b[idx].T
        if causal:
            K = np.tril(K)
        W = K / (K.sum(1, keepdims=True) + eps)
        out[idx] = W @ v[idx]
    return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("fm", ["elu1", "relu"])
def test_linear_attention(xp, rng, causal, fm):
    q, k, v = rng.standard_normal((2, 7, 3)), rng.standard_normal((2, 7, 3)), rng.standard_normal((2, 7, 2))
    phi = elu1 if fm == "elu1" else (lambda x: np.maximum(x, 0))
    ref = ref_linear(phi(q), phi(k), v, causal, 1e-3)
    for ch in (1, 3, 64):
        got = linear_attention(xp.asarray(q), xp.asarray(k), xp.asarray(v), feature_map=fm, causal=causal, eps=1e-3,
                               chunk_size=ch)
        assert_close(got, ref, rtol=1e-11, atol=1e-13, xp=xp)
    got32 = linear_attention(*(xp.asarray(t.astype(np.float32)) for t in (q, k, v)), causal=causal, feature_map=fm,
                             eps=1e-3)
    assert "float32" in str(got32.dtype)
    assert_close(got32, ref.astype(np.float32), rtol=1e-4, atol=1e-5, xp=xp)
    if xp.__name__.endswith("numpy") and "compat" in xp.__name__:
        check_vjp("norm.linear_attention", q, k, v, opts={"causal": causal, "chunk_size": 3, "feature_map": fm,
                                                           "eps": 1e-3})


def nala_feats(q, k, norm_eps=1e-6):
    n = q.shape[-2]
    a = np.zeros(q.shape[:-1] + (2 * q.shape[-1],))
    for idx in np.ndindex(q.shape[:-1]):
        x = q[idx]
        nrm = np.linalg.norm(x)
        p = 3 * (0.5 + np.tanh(nrm))
        u = x / (nrm + norm_eps)
        a[idx] = np.concatenate([np.maximum(u, 0) ** p, np.maximum(-u, 0) ** p])
    k3 = k ** 3
    b = np.concatenate([np.maximum(k3, 0), np.maximum(-k3, 0)], -1) / k.shape[-2]
    return a, b


@pytest.mark.parametrize("causal", [False, True])
def test_nala_attention(xp, rng, causal):
    q, k, v = rng.standard_normal((2, 6, 3)), rng.standard_normal((2, 6, 3)), rng.standard_normal((2, 6, 2))
    a, b = nala_feats(q, k)
    ref = ref_linear(a, b, v, causal, 1e-6)
    got = nala_attention(xp.asarray(q), xp.asarray(k), xp.asarray(v), causal=causal, chunk_size=4)
    assert_close(got, ref, rtol=1e-10, atol=1e-12, xp=xp)
    if not causal:
        # the official code's form: den = phi_q . mean phi_k + 1e-6, num = phi_q . sum phi_k v^T / N
        aq, bk = a[0], b[0] * 6
        num = aq @ (bk.T @ v[0]) / 6
        den = aq @ bk.mean(0) + 1e-6
        assert_close(compat.to_numpy(got)[0], num / den[:, None], rtol=1e-10)
    check_vjp("norm.nala_attention", q, k, v, opts={"causal": causal, "chunk_size": 4})
    q0 = q.copy()
    q0[0, 1] = 0.0    # zero query: finite thanks to norm_eps
    assert np.all(np.isfinite(nala_attention(q0, k, v)))


def test_mala_attention(xp, rng):
    q, k, v = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 7, 4)), rng.standard_normal((2, 7, 3))
    s, N = 0.5, 7
    ref = np.zeros((2, 5, 3))
    for bi in range(2):
        a, b = elu1(q[bi]), elu1(k[bi])
        z = s * a @ b.mean(0)
        W = (1 + 1 / (z[:, None] + 1e-6)) * s * (a @ b.T) / N - z[:, None] / N
        assert_close(W.sum(1), np.ones(5) + s * 0, rtol=1e-5)   # rows sum to 1 (up to eps)
        ref[bi] = W @ v[bi]
    got = mala_attention(xp.asarray(q), xp.asarray(k), xp.asarray(v))
    assert_close(got, ref, rtol=1e-10, atol=1e-12, xp=xp)
    check_vjp("norm.mala_attention", q, k, v)
    check_vjp("norm.mala_attention", q, k[:1], v[:1], opts={"scale": 0.3})


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
                 atol=1e-12, xp=xp)


def test_inline_cross_attention_and_scale(rng):
    q, k, v = rng.standard_normal((3, 4)), rng.standard_normal((7, 4)), rng.standard_normal((7, 2))
    assert_close(inline_attention(q, k, v, scale=0.3), _inline_quadratic(q, k, v, 0.3, False), rtol=1e-10)
    y = inline_attention(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32))
    assert y.dtype == np.float32


def test_inline_vjps(rng):
    q, k, v = qkv(rng, n=5, m=5)
    for causal in (False, True):
        check_vjp("norm.inline_attention", q, k, v, opts={"causal": causal})
    check_vjp("norm.inline_attention", q[0, :2], k[1], v[1], opts={"scale": 0.7})
    check_vjp("norm.inline_attention", q, k[0], v[0])  # broadcast batch


@pytest.mark.parametrize("name,opts", [("linear_attention", {"causal": True, "chunk_size": 3}),
                                       ("linear_attention", {}), ("nala_attention", {"causal": True, "chunk_size": 2}),
                                       ("mala_attention", {}), ("inline_attention", {"causal": True})])
def test_adapters(rng, name, opts):
    check_adapters(name, qkv(rng), opts)


def test_jit(rng):
    jax = pytest.importorskip("jax")
    import optnorm.jax as onj

    J = jax.numpy.asarray
    q, k, v = qkv(rng)
    g = jax.jit(jax.grad(lambda a: onj.linear_attention(a, J(k), J(v), causal=True).sum()))(J(q))
    assert g.shape == q.shape


@pytest.mark.parametrize("scale", [1e-20, 1e-6, 1.0, 1e3, 1e6])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_magnitudes(scale, dtype):
    q, k, v = qkv(np.random.default_rng(4), n=5, m=5, batch=())
    qs, ks = (q * scale).astype(dtype), (k * scale).astype(dtype)
    for f, kw in ((linear_attention, {"causal": True}), (mala_attention, {}), (nala_attention, {}),
                  (inline_attention, {})):
        out = f(qs, ks, v.astype(dtype), **kw)
        assert np.all(np.isfinite(out)), f.__name__
    # linear attention rows stay convex combinations
    la = linear_attention(qs, ks, v.astype(dtype))
    assert np.all(la <= v.max(0) + 1e-3) and np.all(la >= v.min(0) - 1e-3)


@pytest.mark.parametrize("dtype,huge", [(np.float32, 1e30), (np.float64, 1e300)])
def test_nala_keys_near_the_dtype_range(dtype, huge):
    """k^3 overflowed for |k| ~ 1e103 (float64) / 1e13 (float32) and gave NaN; the features are now formed in units
    of the largest |k| (eps rescaled to match), which leaves O unchanged."""
    q, k, v = qkv(np.random.default_rng(5), n=5, m=5, batch=())
    k = k.astype(dtype)
    ref = nala_attention(q.astype(dtype), k, v.astype(dtype), eps=0.0)
    got = nala_attention(q.astype(dtype), (k * dtype(huge)).astype(dtype), v.astype(dtype), eps=0.0)
    assert np.all(np.isfinite(got))
    assert_close(got, ref, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-5)


def test_bad_inputs(rng):
    q, k, v = qkv(rng, batch=())
    with pytest.raises(ValueError, match="v has shape .* but k has m = 4"):
        linear_attention(q, k, v[:3])
    with pytest.raises(ValueError, match="causal=True needs as many queries as keys"):
        linear_attention(q, k[:3], v[:3], causal=True)
    with pytest.raises(ValueError, match="feature_map must be one of"):
        linear_attention(q, k, v, feature_map="softmax")
    with pytest.raises(TypeError, match="k must have a real floating dtype"):
        mala_attention(q, np.ones((4, 3), int), v)
    with pytest.raises(ValueError, match=r"norm_eps must be in \(0, inf\)"):
        nala_attention(q, k, v, norm_eps=0.0)
    with pytest.raises(ValueError, match="k has shape .* but q has d = 3"):
        inline_attention(q, k[:, :2], q)
    with pytest.raises(ValueError, match="causal=True needs as many queries as keys"):
        inline_attention(q[:2], q, q, causal=True)
