"""Attention variants against quadratic float64 references that build the full weight matrix."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from optnorm._lib import compat
from optnorm.norm import (linear_attention, mala_attention, nala_attention, newton_schulz_pinv, sigmoid_attention,
                          soft_attention)
from optnorm.testing import assert_close, check_vjp


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def elu1(x):
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0)))


def ref_sigmoid(q, k, v, mask, bias, scale, causal):
    n, m, d = q.shape[-2], k.shape[-2], q.shape[-1]
    b = -np.log(m) if bias is None else bias
    sc = 1 / np.sqrt(d) if scale is None else scale
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for idx in np.ndindex(q.shape[:-2]):
        W = np.zeros((n, m))
        for i in range(n):
            for j in range(m):
                ok = (mask is None or mask[idx + (i, j)] if mask is not None and mask.ndim == q.ndim else
                      (mask is None or mask[i, j]))
                if causal and j > i:
                    ok = False
                W[i, j] = sig(sc * q[idx][i] @ k[idx][j] + b) if ok else 0.0
        out[idx] = W @ v[idx]
    return out


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


def test_sigmoid_attention(xp, rng):
    q, k, v = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 6, 4)), rng.standard_normal((2, 6, 3))
    X = lambda *a: tuple(xp.asarray(t) for t in a)  # noqa: E731
    assert_close(sigmoid_attention(*X(q, k, v)), ref_sigmoid(q, k, v, None, None, None, False), rtol=1e-12)
    mask = rng.random((5, 6)) > 0.3
    mask[1] = False    # a fully masked row gives zeros
    got = sigmoid_attention(*X(q, k, v), xp.asarray(mask), bias=-1.5, scale=0.7, causal=True)
    ref = ref_sigmoid(q, k, v, mask, -1.5, 0.7, True)
    assert_close(got, ref, rtol=1e-12, atol=1e-15)
    assert np.all(ref[:, 1] == 0)
    check_vjp("norm.sigmoid_attention", q, k, v, None)
    check_vjp("norm.sigmoid_attention", q, k, v, mask, opts={"causal": True, "bias": 0.3})
    # broadcast batch dims
    check_vjp("norm.sigmoid_attention", q, k[:1], v[:1], None)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("fm", ["elu1", "relu"])
def test_linear_attention(xp, rng, causal, fm):
    q, k, v = rng.standard_normal((2, 7, 3)), rng.standard_normal((2, 7, 3)), rng.standard_normal((2, 7, 2))
    phi = elu1 if fm == "elu1" else (lambda x: np.maximum(x, 0))
    ref = ref_linear(phi(q), phi(k), v, causal, 1e-3)
    for ch in (1, 3, 64):
        got = linear_attention(xp.asarray(q), xp.asarray(k), xp.asarray(v), feature_map=fm, causal=causal, eps=1e-3,
                               chunk_size=ch)
        assert_close(got, ref, rtol=1e-11, atol=1e-13)
    got32 = linear_attention(*(xp.asarray(t.astype(np.float32)) for t in (q, k, v)), causal=causal, feature_map=fm,
                             eps=1e-3)
    assert "float32" in str(got32.dtype)
    assert_close(got32, ref, rtol=1e-4, atol=1e-5)
    if xp.__name__.endswith("numpy") and "compat" in xp.__name__:
        check_vjp("norm.linear_attention", q, k, v, opts={"causal": causal, "chunk_size": 3, "feature_map": fm,
                                                           "eps": 1e-3})


def ns_ref(A, iters, reg):
    """SOFT's newton_inv in float64 (symmetric non-negative A)."""
    alpha = 0.9 * 2 / np.max(A.sum(-1), -1) ** 2
    P = A + reg * np.eye(A.shape[-1])
    V = alpha[..., None, None] * P
    for _ in range(iters):
        V = 2 * V - V @ P @ V
    return V


def test_newton_schulz_pinv(xp, rng):
    X = rng.standard_normal((2, 6, 3))
    A = np.exp(-((X[:, :, None] - X[:, None]) ** 2).sum(-1) / 2)     # Gaussian kernel: symmetric, non-negative
    V, res = newton_schulz_pinv(xp.asarray(A), iters=20)
    Vr = ns_ref(A, 20, 0.01)
    assert_close(V, Vr, rtol=1e-9, atol=1e-11)
    P = A + 0.01 * np.eye(6)
    assert_close(res, np.linalg.norm(Vr @ P - np.eye(6), axis=(-2, -1)), rtol=1e-8, atol=1e-14)
    V2, res2 = newton_schulz_pinv(xp.asarray(A), iters=100, reg=0.0)
    if float(np.max(np.asarray(compat.to_numpy(res2)))) < 1e-8:
        assert_close(V2, np.linalg.inv(A), rtol=1e-6, atol=1e-8)
    # a non-symmetric, rank-deficient matrix: converges to the Moore-Penrose pseudo-inverse (residual stays > 0)
    B = rng.standard_normal((5, 2)) @ rng.standard_normal((2, 5))
    Vb, rb = newton_schulz_pinv(xp.asarray(B), iters=20, reg=0.0)
    assert_close(Vb, np.linalg.pinv(B), rtol=1e-8, atol=1e-9)
    # ... but rounding errors in the null space then double every step (documented): 60 steps blow up
    Vc, _ = newton_schulz_pinv(xp.asarray(B), iters=60, reg=0.0)
    assert float(np.max(np.abs(compat.to_numpy(Vc) - np.linalg.pinv(B)))) > 1e-3


def test_newton_schulz_vjp(rng):
    M = rng.standard_normal((4, 4))
    A = M @ M.T + 4 * np.eye(4)
    # converged: the implicit gradient is the gradient of the forward
    check_vjp("norm.newton_schulz_pinv", A, opts={"iters": 60, "reg": 0.0}, rtol=1e-5, atol=1e-6)
    # not converged: only the unrolled VJP is the gradient of what was computed
    check_vjp("norm.newton_schulz_pinv", A, opts={"iters": 3, "grad": "unrolled"})
    check_vjp("norm.newton_schulz_pinv", rng.standard_normal((2, 3, 3)), opts={"iters": 5, "grad": "unrolled"})
    from optnorm.norm.attention import newton_schulz_pinv_bwd, newton_schulz_pinv_fwd
    from optnorm.testing import numerical_vjp
    (V, r), res = newton_schulz_pinv_fwd(A, iters=3)
    G = rng.standard_normal(V.shape)
    imp = newton_schulz_pinv_bwd(res, (G, None))[0]
    num = numerical_vjp(lambda a: newton_schulz_pinv(a, iters=3)[0], [A], G)[0]
    assert np.max(np.abs(imp - num)) > 1e-3 * np.max(np.abs(num))   # the trap: implicit != gradient here


def gauss(x, y, d):
    return np.exp(-((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1) / (2 * np.sqrt(d)))


def test_soft_attention(xp, rng):
    q, v = rng.standard_normal((2, 8, 4)), rng.standard_normal((2, 8, 3))
    L = q.reshape(2, 4, 2, 4).mean(2)
    W = ns_ref(gauss(L, L, 4), 20, 0.01)
    ref = gauss(q, L, 4) @ W @ gauss(L, q, 4) @ v
    got = soft_attention(xp.asarray(q), xp.asarray(v), num_landmarks=4)
    assert_close(got, ref, rtol=1e-9, atol=1e-11)
    lm = rng.standard_normal((3, 4)) * 2
    W = np.linalg.inv(gauss(lm, lm, 4) + 0.01 * np.eye(3))
    ref2 = gauss(q, lm, 4) @ W @ gauss(lm, q, 4) @ v
    got2 = soft_attention(xp.asarray(q), xp.asarray(v), xp.asarray(lm), iters=60)
    assert_close(got2, ref2, rtol=1e-7, atol=1e-9)
    # with all tokens as landmarks and a tiny reg, SOFT reproduces the full (unnormalised) Gaussian attention
    qs = rng.standard_normal((4, 4)) * 2
    full = gauss(qs, qs, 4) @ v[0, :4]
    got3 = soft_attention(xp.asarray(qs), xp.asarray(v[0, :4]), num_landmarks=4, reg=0.0, iters=80)
    assert_close(got3, full, rtol=1e-6, atol=1e-8)


def test_soft_attention_vjp(rng):
    q, v = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    lm = rng.standard_normal((3, 3)) * 2
    check_vjp("norm.soft_attention", q, v, None, opts={"num_landmarks": 3, "iters": 4, "grad": "unrolled"})
    check_vjp("norm.soft_attention", q, v, lm, opts={"iters": 60}, rtol=1e-5, atol=1e-6)
    check_vjp("norm.soft_attention", q, v, lm, opts={"iters": 3, "grad": "unrolled"})


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
    assert_close(got, ref, rtol=1e-10, atol=1e-12)
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
    assert_close(got, ref, rtol=1e-10, atol=1e-12)
    check_vjp("norm.mala_attention", q, k, v)
    check_vjp("norm.mala_attention", q, k[:1], v[:1], opts={"scale": 0.3})


ADAPTER_CASES = [
    ("sigmoid_attention", "qkv", {"causal": True}),
    ("linear_attention", "qkv", {"causal": True, "chunk_size": 3}),
    ("linear_attention", "qkv", {}),
    ("newton_schulz_pinv", "A", {"iters": 4, "grad": "unrolled"}),
    ("soft_attention", "qv", {"num_landmarks": 2, "iters": 3, "grad": "unrolled"}),
    ("nala_attention", "qkv", {"causal": True, "chunk_size": 2}),
    ("mala_attention", "qkv", {}),
]


@pytest.mark.parametrize("name,inputs,opts", ADAPTER_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(ADAPTER_CASES)])
def test_adapters(rng, name, inputs, opts):
    import jax.numpy as jnp
    import torch
    from jax.test_util import check_grads

    import optnorm.jax as onj
    import optnorm.torch as ont

    q, k, v = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4, 2))
    M = rng.standard_normal((3, 3))
    A = M @ M.T + 3 * np.eye(3)
    arrs = {"qkv": (q, k, v), "qv": (q, v), "A": (A,)}[inputs]
    T = lambda x: torch.tensor(x, requires_grad=True)  # noqa: E731
    ft, fj = getattr(ont, name), getattr(onj, name)
    assert torch.autograd.gradcheck(lambda *a: ft(*a, **opts), tuple(map(T, arrs)))
    check_grads(lambda *a: fj(*a, **opts), tuple(map(jnp.asarray, arrs)), order=1, modes=["rev"])


def test_jit(rng):
    import jax
    import jax.numpy as jnp

    import optnorm.jax as onj
    J = jnp.asarray
    q, k, v = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4, 2))
    g = jax.jit(jax.grad(lambda a: onj.linear_attention(a, J(k), J(v), causal=True).sum()
                         + onj.soft_attention(a, J(v), num_landmarks=2).sum()))(J(q))
    assert g.shape == q.shape


@given(scale=st.sampled_from([1e-20, 1e-6, 1.0, 1e3, 1e6]), dtype=st.sampled_from([np.float32, np.float64]))
def test_extreme_magnitudes(scale, dtype):
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal((5, 3)), rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    qs, ks = (q * scale).astype(dtype), (k * scale).astype(dtype)
    for f, kw in ((sigmoid_attention, {"causal": True}), (linear_attention, {"causal": True}),
                  (mala_attention, {}), (nala_attention, {})):
        out = f(qs, ks, v.astype(dtype), **kw)
        assert np.all(np.isfinite(out)), f.__name__
    # sigmoid attention saturates to 0 / 1 weights without NaN; linear attention rows stay convex combinations
    la = linear_attention(qs, ks, v.astype(dtype))
    assert np.all(la <= v.max(0) + 1e-3) and np.all(la >= v.min(0) - 1e-3)


def test_bad_inputs(rng):
    q, k, v = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    with pytest.raises(ValueError, match="q .* and k .* must have the same feature size"):
        sigmoid_attention(q, k[:, :2], v)
    with pytest.raises(ValueError, match="k .* and v .* must have the same sequence length"):
        linear_attention(q, k, v[:3])
    with pytest.raises(ValueError, match="causal attention needs q and k of the same length"):
        linear_attention(q, k[:3], v[:3], causal=True)
    with pytest.raises(TypeError, match="mask must be a boolean"):
        sigmoid_attention(q, k, v, np.ones((4, 4)))
    with pytest.raises(ValueError, match="feature_map must be one of"):
        linear_attention(q, k, v, feature_map="softmax")
    with pytest.raises(ValueError, match="A must be a square matrix"):
        newton_schulz_pinv(np.ones((2, 3)))
    with pytest.raises(ValueError, match="grad must be one of"):
        newton_schulz_pinv(np.eye(2), grad="autograd")
    with pytest.raises(ValueError, match="num_landmarks=3 must divide"):
        soft_attention(q, v, num_landmarks=3)
    with pytest.raises(ValueError, match="num_landmarks is required"):
        soft_attention(q, v)
    with pytest.raises(ValueError, match="landmarks must have shape"):
        soft_attention(q, v, np.ones((2, 2)))
    with pytest.raises(TypeError, match="k must have a floating dtype"):
        mala_attention(q, np.ones((4, 3), int), v)
    with pytest.raises(ValueError, match="norm_eps must be > 0"):
        nala_attention(q, k, v, norm_eps=0.0)
