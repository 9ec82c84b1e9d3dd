"""Paper-only rules against independent float64 references written from the papers' equations (NumPy loops/SciPy)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft

import optnorm.optim as oo
from optnorm.testing import assert_close

N = 5


def _conv(xp, t):
    if isinstance(t, dict):
        return {k: xp.asarray(v) for k, v in t.items()}
    if isinstance(t, (list, tuple)):
        return [xp.asarray(v) for v in t]
    return xp.asarray(t)


def _run(xp, rule, p0, grads, **step_kw):
    ps = _conv(xp, p0)
    st = rule.init(ps)
    for g in grads:
        ps, st = rule.step(ps, _conv(xp, g), st, **step_kw)
    return ps, st


def _grads(rng, shape, n=N):
    return [rng.standard_normal(shape) for _ in range(n)]


# ----------------------------------------------------------------------------------------------- AdamP / SGDP
def _adamp_proj(p, g, u, delta, eps, wd_ratio):
    if p.ndim <= 1:
        return u, 1.0
    for rows in (p.shape[0], 1):
        P, G, U = p.reshape(rows, -1), g.reshape(rows, -1), u.reshape(rows, -1).copy()
        cos = [abs(G[r] @ P[r]) / (max(np.linalg.norm(G[r]), eps) * max(np.linalg.norm(P[r]), eps))
               for r in range(rows)]
        if max(cos) < delta / math.sqrt(P.shape[1]):
            for r in range(rows):
                ph = P[r] / (np.linalg.norm(P[r]) + eps)
                U[r] = U[r] - ph * (ph @ U[r])
            return U.reshape(p.shape), wd_ratio
    return u, 1.0


def _scale_invariant_grads(rng, p, n):
    """Gradients orthogonal to every row of p (what a weight followed by a normalisation layer receives)."""
    out = []
    for _ in range(n):
        g = rng.standard_normal(p.shape)
        g -= (g * p).sum(1, keepdims=True) / (p * p).sum(1, keepdims=True) * p
        out.append(g)
    return out


@pytest.mark.parametrize("invariant", [False, True])
@pytest.mark.parametrize("nesterov", [False, True])
def test_adamp_reference(xp, rng, invariant, nesterov):
    p0 = rng.standard_normal((4, 6))
    grads = _scale_invariant_grads(rng, p0, 1) * N if invariant else _grads(rng, p0.shape)
    lr, b1, b2, eps, wd, delta, ratio = 0.01, 0.9, 0.999, 1e-8, 0.1, 0.1, 0.1
    got, _ = _run(xp, oo.adamp(lr=lr, weight_decay=wd, nesterov=nesterov), p0, grads)
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        den = np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
        u = (b1 * m + (1 - b1) * g) / den if nesterov else m / den
        u, mult = _adamp_proj(p, g, u, delta, eps, ratio)
        p = p * (1 - lr * wd * mult) - lr / (1 - b1 ** t) * u
    assert_close(got, p, rtol=1e-9, atol=1e-12, xp=xp)


def test_adamp_projection_fires_only_for_scale_invariant(rng):
    p0 = rng.standard_normal((4, 6))
    g = _scale_invariant_grads(rng, p0, 1)[0]
    from optnorm.optim.transforms import adamp_projection

    u, mult = adamp_projection(p0, g, g.copy(), delta=0.1, eps=1e-8, wd_ratio=0.1, xp=np)
    assert float(mult) == 0.1 and np.abs((u * p0).sum(1)).max() < 1e-10
    u, mult = adamp_projection(p0, p0 + g, g.copy(), delta=0.1, eps=1e-8, wd_ratio=0.1, xp=np)
    assert float(mult) == 1.0 and np.array_equal(u, g)


def test_sgdp_reference(xp, rng):
    p0 = rng.standard_normal((3, 5))
    grads = _scale_invariant_grads(rng, p0, 1) * 2 + _grads(rng, p0.shape, 3)
    lr, mu, wd, eps = 0.05, 0.9, 0.01, 1e-8
    got, _ = _run(xp, oo.sgdp(lr=lr, momentum=mu, weight_decay=wd, nesterov=True), p0, grads)
    p, b = p0.copy(), np.zeros_like(p0)
    for g in grads:
        b = mu * b + g
        u, mult = _adamp_proj(p, g, g + mu * b, 0.1, eps, 0.1)
        p = p * (1 - lr * wd * mult / (1 - mu)) - lr * u
    assert_close(got, p, rtol=1e-9, atol=1e-12, xp=xp)


# ----------------------------------------------------------------------------------------------- FAdam
@pytest.mark.parametrize("adaptive_eps", ["min", "max"])
def test_fadam_reference(xp, rng, adaptive_eps):
    p0 = rng.standard_normal(20)
    grads = [0.5 * rng.standard_normal(20) for _ in range(N)]
    lr, b1, b2, eps, wd, clip = 0.01, 0.9, 0.999, 1e-8, 0.1, 1.0
    got, _ = _run(xp, oo.fadam(lr=lr, adaptive_eps=adaptive_eps), p0, grads)
    p, m, F = p0.copy(), np.zeros(20), np.ones(20)
    rms = lambda a: math.sqrt(float(np.mean(a * a)))
    for t, g in enumerate(grads, 1):
        bh = b2 * (1 - b2 ** (t - 1)) / (1 - b2 ** t)
        F = bh * F + (1 - bh) * g * g
        e = eps * (min(1.0, rms(g)) if adaptive_eps == "min" else max(1.0, rms(g)))
        den = np.sqrt(F) + e
        gb = g / den
        gb = gb * clip / max(1.0, rms(gb))
        m = b1 * m + (1 - b1) * gb
        w = p / den
        w = w * clip / max(1.0, rms(w))
        p = p - lr * (m + wd * w)
    assert_close(got, p, rtol=1e-9, atol=1e-12, xp=xp)


# ----------------------------------------------------------------------------------------------- Muon family
def _ns64(X, steps=5):
    a, b, c = 3.4445, -4.7750, 2.0315
    tr = X.shape[0] > X.shape[1]
    X = X.T if tr else X
    X = X / max(np.linalg.norm(X), 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tr else X


def test_newton_schulz_scalar_map(xp, rng):
    """Singular values with sigma/|G|_F >= 1e-3 map into [0.47, 1.2] after 5 steps (Keller's coefficients)."""
    from optnorm._lib.compat import to_numpy

    U, _ = np.linalg.qr(rng.standard_normal((32, 32)))
    V, _ = np.linalg.qr(rng.standard_normal((48, 48)))
    s = np.geomspace(1e-2, 1.0, 32)
    assert (s / np.linalg.norm(s)).min() >= 1e-3
    G = U @ np.diag(s) @ V[:32]
    O = oo.newton_schulz_orthogonalize(xp.asarray(G))
    sv = np.linalg.svd(to_numpy(O), compute_uv=False)
    assert 0.47 <= sv.min() and sv.max() <= 1.2
    assert_close(O, _ns64(G), rtol=1e-9, atol=1e-10, xp=xp)
    assert_close(oo.newton_schulz_orthogonalize(xp.asarray(G.T)), _ns64(G).T, rtol=1e-9, atol=1e-10, xp=xp)


@pytest.mark.parametrize("scale_mode", ["keep_norm", "rms0.2"])
@pytest.mark.parametrize("shape", [(8, 5), (5, 8)])
def test_normuon_reference(xp, rng, shape, scale_mode):
    p0 = rng.standard_normal(shape)
    grads = _grads(rng, shape)
    lr, mu, b2, wd = 0.02, 0.95, 0.95, 0.01
    got, _ = _run(xp, oo.normuon(lr=lr, weight_decay=wd, scale_mode=scale_mode, ns_dtype="float64"), p0, grads)
    p, B, v = p0.copy(), np.zeros(shape), np.zeros((shape[0], 1))
    m, n = shape
    for g in grads:
        B = mu * B + (1 - mu) * g
        O = _ns64((1 - mu) * g + mu * B)
        v = b2 * v + (1 - b2) * (O ** 2).mean(1, keepdims=True)
        Oh = O / (np.sqrt(v) + 1e-10)
        if scale_mode == "keep_norm":
            Oh = Oh * np.linalg.norm(O) / (np.linalg.norm(Oh) + 1e-10) * math.sqrt(max(1, m / n))
        else:
            Oh = Oh * 0.2 * math.sqrt(m * n) / (np.linalg.norm(Oh) + 1e-10)
        p = p * (1 - lr * wd) - lr * Oh
    assert_close(got, p, rtol=1e-8, atol=1e-11, xp=xp)


@pytest.mark.parametrize("hybrid", [False, True])
@pytest.mark.parametrize("normalize_output", [False, True])
def test_auon_reference(xp, rng, hybrid, normalize_output):
    shape = (6, 4)
    p0 = rng.standard_normal(shape)
    grads = _grads(rng, shape)
    lr, mu, wd, gamma = 0.24, 0.95, 0.01, 1.5
    factory = oo.hybrid_auon if hybrid else oo.auon
    got, _ = _run(xp, factory(lr=lr, weight_decay=wd, normalize_output=normalize_output), p0, grads)
    p, M = p0.copy(), np.zeros(shape)
    for g in grads:
        p = p * (1 - lr * wd)
        M = mu * M + (1 - mu) * g
        U = (1 - mu) * g + mu * M
        if hybrid:
            U = _ns64(U)
        Un = U / (np.linalg.norm(U) + 1e-7)
        r = math.sqrt(float(np.mean(np.cosh(gamma * Un) ** 2)))
        upd = Un / (r + 1e-8) * math.sqrt(max(1, 6 / 4)) if normalize_output else U / (r + 1e-8)
        p = p - lr * upd
    assert_close(got, p, rtol=1e-8, atol=1e-11, xp=xp)


def test_auon_brake_is_about_one(rng):
    """The note's numerical fact: r ~ 1 + gamma^2/(2N) for realistic matrices."""
    U = rng.standard_normal((64, 64))
    Un = U / np.linalg.norm(U)
    r = math.sqrt(float(np.mean(np.cosh(1.5 * Un) ** 2)))
    assert abs(r - (1 + 1.5 ** 2 / (2 * 64 * 64))) < 1e-5


# ----------------------------------------------------------------------------------------------- Conda
@pytest.mark.parametrize("shape", [(7, 4), (4, 7)])
def test_conda_reference(xp, rng, shape):
    p0 = rng.standard_normal(shape)
    grads = _grads(rng, shape)
    lr, b1, b2, eps, wd, T, scale = 0.01, 0.9, 0.99, 1e-8, 0.01, 2, 0.25
    got, _ = _run(xp, oo.conda(lr=lr, betas=(b1, b2), weight_decay=wd, update_proj_gap=T, scale=scale), p0, grads)
    p, m, v, P = p0.copy(), np.zeros(shape), np.zeros(shape), None
    tall = shape[0] >= shape[1]
    for step, g in enumerate(grads):
        m = b1 * m + (1 - b1) * g
        if step % T == 0:
            U, S, Vh = np.linalg.svd(m, full_matrices=False)
            P = Vh if tall else U
        proj = (lambda X: X @ P.T) if tall else (lambda X: P.T @ X)
        gt, mt = proj(g), proj(m)
        v = b2 * v + (1 - b2) * gt * gt
        t = step + 1
        u = mt / (np.sqrt(v) + eps)
        u = (u @ P if tall else P @ u) * scale
        p = p - lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * u
        p = p - lr * wd * p
    # the SVD basis is unique up to signs, and the update is sign-invariant (P appears twice)
    assert_close(got, p, rtol=1e-7, atol=1e-10, xp=xp)


def test_conda_reduces_to_rotated_adam(rng):
    """With a fixed basis and wd=0 Conda is HF-eps Adam on G P^T, mapped back."""
    shape = (6, 3)
    p0 = rng.standard_normal(shape)
    grads = _grads(rng, shape, 3)
    got, st = _run(np, oo.conda(lr=0.01, update_proj_gap=1000), p0, grads)
    P = np.asarray(st.leaves[0].proj)
    inner, _ = _run(np, oo.adam(lr=0.01, eps_mode="hf"), p0 @ P.T, [g @ P.T for g in grads])
    assert_close(got, inner @ P, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------- stateless
@pytest.mark.parametrize("whitening,shape", [("eigh", (5, 8)), ("eigh", (8, 5)), ("newton_schulz", (5, 8))])
def test_swan_reference(xp, rng, shape, whitening):
    p0 = rng.standard_normal(shape)
    grads = _grads(rng, shape, 2)
    got, _ = _run(xp, oo.swan(lr=0.01, eps=1e-12, whitening=whitening, ns_steps=40), p0, grads)
    p = p0.copy()
    for g in grads:
        gn = (g - g.mean(1, keepdims=True)) / g.std(1, keepdims=True)
        U, S, Vh = np.linalg.svd(gn, full_matrices=False)
        k = S > 1e-8 * S[0]                 # centred rows: rank <= n - 1 when m > n (pseudo-polar factor)
        p = p - 0.01 * U[:, k] @ Vh[k]
    tol = 1e-8 if whitening == "eigh" else 1e-6
    assert_close(got, p, rtol=tol, atol=tol, xp=xp)


def test_sinkgd_reference(xp, rng):
    shape = (6, 9)
    p0 = rng.standard_normal(shape)
    grads = [rng.standard_normal(shape) * np.exp(rng.standard_normal((6, 1))) for _ in range(3)]
    got, _ = _run(xp, oo.sinkgd(lr=0.01, n_iter=4), p0, grads)
    p = p0.copy()
    for g in grads:
        X = g.copy()
        for _ in range(4):
            for i in range(6):
                X[i] = X[i] * math.sqrt(9) / max(np.linalg.norm(X[i]), 1e-8)
            for j in range(9):
                X[:, j] = X[:, j] * math.sqrt(6) / max(np.linalg.norm(X[:, j]), 1e-8)
        p = p - 0.01 * X
    assert_close(got, p, rtol=1e-10, atol=1e-12, xp=xp)


def test_sinkhorn_fixed_point(rng):
    G = rng.standard_normal((64, 128)) * np.exp(rng.standard_normal((64, 1))) * np.exp(rng.standard_normal((1, 128)))
    X = oo.sinkhorn_normalize_gradient(G, 10)
    np.testing.assert_allclose(np.linalg.norm(X, axis=0), math.sqrt(64), rtol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), math.sqrt(128), rtol=1e-3)
    assert abs(float(np.sqrt(np.mean(X ** 2))) - 1) < 1e-3


# ----------------------------------------------------------------------------------------------- AdaHessian
def test_adahessian_reference(xp, rng):
    """Diagonal Hessians make z * Hz = diag(H) exactly (z^2 = 1), so the reference needs no probes."""
    h = {"w": rng.uniform(0.5, 3.0, (3, 2, 2, 2)), "b": rng.uniform(-2.0, 2.0, 4)}
    p0 = {"w": rng.standard_normal((3, 2, 2, 2)), "b": rng.standard_normal(4)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in p0.items()} for _ in range(N)]
    lr, b1, b2, eps, wd, k = 0.1, 0.9, 0.999, 1e-4, 0.01, 0.5
    hx = {kk: xp.asarray(v) for kk, v in h.items()}
    got, _ = _run(xp, oo.adahessian(lr=lr, weight_decay=wd, hessian_power=k), p0, grads,
                  hvp=lambda v: {kk: hx[kk] * v[kk] for kk in v})
    D = {"w": np.broadcast_to(np.abs(h["w"]).mean(axis=(2, 3), keepdims=True), h["w"].shape), "b": np.abs(h["b"])}
    ref = {}
    for name in p0:
        p, m, v = p0[name].copy(), 0.0, 0.0
        for t, g in enumerate(grads, 1):
            m = b1 * m + (1 - b1) * g[name]
            v = b2 * v + (1 - b2) * D[name] ** 2
            den = (np.sqrt(v) / math.sqrt(1 - b2 ** t)) ** k + eps
            p = p - lr * (m / (1 - b1 ** t) / den + wd * p)
        ref[name] = p
    for name in p0:
        assert_close(got[name], ref[name], rtol=1e-10, atol=1e-12, xp=xp)


def test_adahessian_needs_hvp():
    opt = oo.adahessian()
    with pytest.raises(ValueError, match="hvp"):
        opt.step(np.ones(3), np.ones(3), opt.init(np.ones(3)))


# ----------------------------------------------------------------------------------------------- DCT low rank
@pytest.mark.parametrize("shape", [(9, 6), (6, 9)])
def test_dct_lowrank_reference(xp, rng, shape):
    p0 = rng.standard_normal(shape)
    grads = _grads(rng, shape)
    r, T, lr, b1, b2, eps, wd = 2, 2, 0.01, 0.9, 0.999, 1e-8, 0.01
    got, _ = _run(xp, oo.dct_lowrank(oo.adam(lr=lr), rank=r, update_proj_gap=T, weight_decay=wd), p0, grads)
    tall = shape[0] >= shape[1]
    s = min(shape)
    Q = scipy.fft.dct(np.eye(s), norm="ortho", axis=0).T          # columns: orthonormal DCT-II basis vectors
    p, m, v, idx = p0.copy(), None, None, None
    for step, g in enumerate(grads):
        S = g @ Q if tall else Q.T @ g
        if step % T == 0:
            score = np.abs(S).sum(0 if tall else 1)
            idx = np.argsort(-score, kind="stable")[:r]
        Qr = Q[:, idx]
        a = g @ Qr if tall else Qr.T @ g
        if m is None:
            m, v = np.zeros_like(a), np.zeros_like(a)
        t = step + 1
        m = b1 * m + (1 - b1) * a
        v = b2 * v + (1 - b2) * a * a
        u = -lr / (1 - b1 ** t) * m / (np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps)
        p = p * (1 - lr * wd) + (u @ Qr.T if tall else Qr @ u)
    assert_close(got, p, rtol=1e-9, atol=1e-12, xp=xp)


def test_dct_matrix_is_scipy_dct():
    Q = oo.dct_matrix(7)
    x = np.random.default_rng(0).standard_normal(7)
    assert_close(x @ Q, scipy.fft.dct(x, norm="ortho"), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------- NaP
@pytest.mark.parametrize("axis", [None, -1])
def test_nap_keeps_initial_norms(xp, rng, axis):
    p0 = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(4)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in p0.items()} for _ in range(3)]
    got, _ = _run(xp, oo.nap(oo.adam(lr=0.1), axis=axis), p0, grads)
    inner, _ = _run(np, oo.adam(lr=0.1), p0, grads[:1])
    w = np.asarray(got["w"].tolist() if hasattr(got["w"], "tolist") else got["w"])
    if axis is None:
        assert abs(np.linalg.norm(w) - np.linalg.norm(p0["w"])) < 1e-10
    else:
        np.testing.assert_allclose(np.linalg.norm(w, axis=1), np.linalg.norm(p0["w"], axis=1), rtol=1e-10)
    # the bias (1-D) is left free: it follows plain Adam
    ref_b, _ = _run(np, oo.adam(lr=0.1), p0["b"], [g["b"] for g in grads])
    assert_close(got["b"], ref_b, rtol=1e-12, atol=1e-12, xp=xp)
