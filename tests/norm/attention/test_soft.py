"""newton_schulz_pinv and soft_attention against float64 references."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm._lib import compat, ops
from optnorm.norm import newton_schulz_pinv, soft_attention
from optnorm.testing import assert_close, check_vjp

from . import check_adapters, qkv

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
    assert_close(V, Vr, rtol=1e-9, atol=1e-11, xp=xp)
    P = A + 0.01 * np.eye(6)
    assert_close(res, np.linalg.norm(Vr @ P - np.eye(6), axis=(-2, -1)), rtol=1e-8, atol=1e-14, xp=xp)
    V2, res2 = newton_schulz_pinv(xp.asarray(A), iters=100, reg=0.0)
    if float(np.max(np.asarray(compat.to_numpy(res2)))) < 1e-8:
        assert_close(V2, np.linalg.inv(A), rtol=1e-6, atol=1e-8, xp=xp)
    # a non-symmetric, rank-deficient matrix: converges to the Moore-Penrose pseudo-inverse (residual stays > 0)
    B = rng.standard_normal((5, 2)) @ rng.standard_normal((2, 5))
    Vb, rb = newton_schulz_pinv(xp.asarray(B), iters=20, reg=0.0)
    assert_close(Vb, np.linalg.pinv(B), rtol=1e-8, atol=1e-9, xp=xp)
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
    nsp = ops.get("newton_schulz_pinv")
    newton_schulz_pinv_fwd, newton_schulz_pinv_bwd = nsp.fwd, nsp.bwd
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
    assert_close(got, ref, rtol=1e-9, atol=1e-11, xp=xp)
    lm = rng.standard_normal((3, 4)) * 2
    W = np.linalg.inv(gauss(lm, lm, 4) + 0.01 * np.eye(3))
    ref2 = gauss(q, lm, 4) @ W @ gauss(lm, q, 4) @ v
    got2 = soft_attention(xp.asarray(q), xp.asarray(v), xp.asarray(lm), iters=60)
    assert_close(got2, ref2, rtol=1e-7, atol=1e-9, xp=xp)
    # with all tokens as landmarks and a tiny reg, SOFT reproduces the full (unnormalised) Gaussian attention
    qs = rng.standard_normal((4, 4)) * 2
    full = gauss(qs, qs, 4) @ v[0, :4]
    got3 = soft_attention(xp.asarray(qs), xp.asarray(v[0, :4]), num_landmarks=4, reg=0.0, iters=80)
    assert_close(got3, full, rtol=1e-6, atol=1e-8, xp=xp)


def test_soft_attention_vjp(rng):
    q, v = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    lm = rng.standard_normal((3, 3)) * 2
    check_vjp("norm.soft_attention", q, v, None, opts={"num_landmarks": 3, "iters": 4, "grad": "unrolled"})
    check_vjp("norm.soft_attention", q, v, lm, opts={"iters": 60}, rtol=1e-5, atol=1e-6)
    check_vjp("norm.soft_attention", q, v, lm, opts={"iters": 3, "grad": "unrolled"})


@pytest.mark.parametrize("name,arrs,opts", [
    ("newton_schulz_pinv", "A", {"iters": 4, "grad": "unrolled"}),
    ("newton_schulz_pinv", "A", {"iters": 30}),
    ("soft_attention", "qv", {"num_landmarks": 2, "iters": 3, "grad": "unrolled"}),
])
def test_adapters(rng, name, arrs, opts):
    q, _, v = qkv(rng)
    M = rng.standard_normal((3, 3))
    check_adapters(name, {"A": (M @ M.T + 3 * np.eye(3),), "qv": (q, v)}[arrs], opts)


def test_jit(rng):
    jax = pytest.importorskip("jax")
    import optnorm.jax as onj

    J = jax.numpy.asarray
    q, _, v = qkv(rng)
    g = jax.jit(jax.grad(lambda a: onj.soft_attention(a, J(v), num_landmarks=2).sum()))(J(q))
    assert g.shape == q.shape


@pytest.mark.parametrize("dtype,scale", [(np.float32, s) for s in (1e-30, 1.0, 1e30)]
                         + [(np.float64, s) for s in (1e-300, 1e-30, 1.0, 1e30, 1e300)])
def test_newton_schulz_pinv_at_any_magnitude(dtype, scale):
    """newton_schulz_pinv(1e-30 I) diverged to NaN: the step size came from A, not from A + reg I.  It now iterates
    on P / max|P| (Newton-Schulz is scale-equivariant), so P of any magnitude the dtype holds is inverted."""
    A = np.eye(3) * scale + np.diag([0.0, 0.0, 0.0])
    for reg in (0.01, 0.0):
        V, res = newton_schulz_pinv(A.astype(dtype), reg=reg, iters=60)
        V, res = np.asarray(V), float(res)
        assert np.all(np.isfinite(V)) and np.isfinite(res)
        want = np.eye(3) / (scale + reg)
        assert_close(V, want.astype(dtype), rtol=1e-5 if dtype == np.float32 else 1e-12)
        assert res < (1e-5 if dtype == np.float32 else 1e-12)
    rng = np.random.default_rng(0)
    M = rng.standard_normal((4, 4))
    P = (M @ M.T + 4 * np.eye(4)) * scale
    V, res = newton_schulz_pinv(P.astype(dtype), reg=0.0, iters=60)
    assert_close(np.asarray(V, np.float64) * scale, np.linalg.inv(P / scale),
                 rtol=1e-4 if dtype == np.float32 else 1e-10, check_dtype=False)


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_soft_attention_at_extreme_magnitudes(rng, scale):
    """The Gaussian kernel's squared distances overflowed to inf - inf = NaN for |q| ~ 1e154."""
    q, _, v = qkv(rng, n=6, m=6, batch=())
    y = soft_attention(q * scale, v, num_landmarks=3)
    assert np.all(np.isfinite(y))


def test_bad_inputs(rng):
    q, _, v = qkv(rng, batch=())
    with pytest.raises(ValueError, match=r"A has shape \(2, 3\)"):
        newton_schulz_pinv(np.ones((2, 3)))
    with pytest.raises(ValueError, match="grad must be one of"):
        newton_schulz_pinv(np.eye(2), grad="autograd")
    with pytest.raises(ValueError, match="num_landmarks=3 must divide"):
        soft_attention(q, v, num_landmarks=3)
    with pytest.raises(ValueError, match="num_landmarks is required"):
        soft_attention(q, v)
    with pytest.raises(ValueError, match="landmarks has shape .* but q has d = 3"):
        soft_attention(q, v, np.ones((2, 2)))
