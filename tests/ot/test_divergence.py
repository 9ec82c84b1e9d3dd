"""sinkhorn_divergence: closed forms (Dirac, translation), positivity, the W_2^2/2 limit against emd, GeomLoss,
every backend, batches, unbalanced, VJPs against finite differences, bad input."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import optnorm
from optnorm.ot import emd2, dist, sinkhorn_divergence
from optnorm.testing import assert_close, check_vjp


def _clouds(rng, n=40, m=30, d=2):
    X = rng.standard_normal((n, d))
    Y = 0.7 * rng.standard_normal((m, d)) + 1.0
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return X, Y, a / a.sum(), b / b.sum()


@pytest.mark.parametrize("reg", [2.0, 0.3, 0.05])
def test_dirac_closed_form(reg):
    # only the product plan exists between two Diracs: S = C(x, y) = |x - y|^2 / 2 for every reg
    x, y = np.array([[0.0, 0.5]]), np.array([[1.0, 2.5]])
    assert_close(sinkhorn_divergence(x, y, reg=reg), 2.5, rtol=1e-12)
    assert_close(sinkhorn_divergence(x, y, reg=reg, p=1.0), np.sqrt(5.0), rtol=1e-12)


def test_translation_is_half_squared_shift(xp, rng):
    # OT(a, a + t) = OT(a, a) + |t|^2 / 2 exactly for the cost |x - y|^2 / 2, so S = |t|^2 / 2 whatever reg
    X, _, a, _ = _clouds(rng)
    t = np.array([0.7, -0.4])
    for reg in (2.0, 0.5):
        s = sinkhorn_divergence(xp.asarray(X), xp.asarray(X + t), xp.asarray(a), xp.asarray(a), reg=reg, tol=1e-12,
                                max_iter=5000)
        assert_close(s, 0.5 * float(t @ t), rtol=1e-8, xp=xp)


def test_zero_iff_equal_and_positive(rng):
    X, Y, a, b = _clouds(rng)
    for reg_m in (None, 0.5):
        assert abs(float(sinkhorn_divergence(X, X, a, a, reg=0.5, reg_m=reg_m, tol=1e-12))) < 1e-10
        for _ in range(5):
            Z = X + 0.2 * rng.standard_normal(X.shape)
            w = rng.random(len(X)) + 0.1
            assert float(sinkhorn_divergence(X, Z, a, w / w.sum(), reg=0.5, reg_m=reg_m, tol=1e-11)) > 0


def test_limit_is_half_w2_squared(rng):
    X, Y, a, b = _clouds(rng, 30, 25)
    w2 = float(emd2(a, b, dist(X, Y)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optnorm.ConvergenceWarning)
        vals = [float(sinkhorn_divergence(X, Y, a, b, reg=r, max_iter=20000, tol=1e-10)) for r in (0.1, 0.01, 0.001)]
    gaps = [abs(v - w2 / 2) for v in vals]
    assert gaps[2] < 2e-3 * w2 and gaps[0] > gaps[1] > gaps[2]


def test_matches_geomloss(rng):
    geomloss = pytest.importorskip("geomloss")
    torch = pytest.importorskip("torch")
    import optnorm.torch as ont

    X, Y, a, b = (torch.tensor(z, requires_grad=True) for z in _clouds(rng))
    blur = 0.5
    loss = geomloss.SamplesLoss("sinkhorn", p=2, blur=blur, scaling=0.999, backend="tensorized")
    v = loss(a, X, b, Y)
    gX = torch.autograd.grad(v, [X])[0]
    w = ont.sinkhorn_divergence(X, Y, a, b, reg=blur ** 2, tol=1e-13, max_iter=20000)
    hX = torch.autograd.grad(w, [X])[0]
    assert abs(float(v) - float(w)) < 1e-6
    assert torch.allclose(gX, hX, atol=1e-4)


def test_lazy_equals_dense_reference(path, rng):
    # the lazy potentials against a dense float64 reference of the three problems (plain NumPy Sinkhorn)
    X, Y, a, b = _clouds(rng, 20, 15)
    reg = 0.2

    def ot_eps(P, Q, w, v):
        C = 0.5 * ((P[:, None] - Q[None]) ** 2).sum(-1)
        f, g = np.zeros(len(P)), np.zeros(len(Q))
        for _ in range(5000):
            g = -reg * np.log(np.exp((f[:, None] - C) / reg).T @ w)
            f = -reg * np.log(np.exp((g[None, :] - C) / reg) @ v)
        return w @ f + v @ g

    ref = ot_eps(X, Y, a, b) - 0.5 * ot_eps(X, X, a, a) - 0.5 * ot_eps(Y, Y, b, b)
    assert_close(sinkhorn_divergence(X, Y, a, b, reg=reg, tol=1e-13, max_iter=5000), ref, rtol=1e-10)


def test_batched_and_float32(rng):
    X, Y, a, b = _clouds(rng, 12, 10)
    Xb = np.stack([X, X + 1.0])
    s = sinkhorn_divergence(Xb, Y, reg=0.2)
    assert s.shape == (2,)
    assert_close(s[1], sinkhorn_divergence(X + 1.0, Y, reg=0.2), rtol=1e-9)
    s32 = sinkhorn_divergence(X.astype(np.float32), Y.astype(np.float32), reg=0.2)
    assert s32.dtype == np.float32
    assert_close(s32, sinkhorn_divergence(X, Y, reg=0.2), rtol=1e-4, check_dtype=False)


def test_debias_false_is_the_entropic_cost(rng):
    X, Y, a, b = _clouds(rng, 15, 12)
    ot = sinkhorn_divergence(X, Y, a, b, reg=0.3, debias=False, tol=1e-12)
    aa = sinkhorn_divergence(X, X, a, a, reg=0.3, debias=False, tol=1e-12)
    bb = sinkhorn_divergence(Y, Y, b, b, reg=0.3, debias=False, tol=1e-12)
    assert_close(sinkhorn_divergence(X, Y, a, b, reg=0.3, tol=1e-12), ot - 0.5 * aa - 0.5 * bb, rtol=1e-9)
    # unbalanced: the debiased value adds eps/2 (m_a - m_b)^2 to the combination of the three costs
    b2 = 1.7 * b
    ot = sinkhorn_divergence(X, Y, a, b2, reg=0.3, reg_m=1.0, debias=False, tol=1e-12)
    aa = sinkhorn_divergence(X, X, a, a, reg=0.3, reg_m=1.0, debias=False, tol=1e-12)
    bb = sinkhorn_divergence(Y, Y, b2, b2, reg=0.3, reg_m=1.0, debias=False, tol=1e-12)
    full = sinkhorn_divergence(X, Y, a, b2, reg=0.3, reg_m=1.0, tol=1e-12)
    assert_close(full, ot - 0.5 * aa - 0.5 * bb + 0.15 * (1 - 1.7) ** 2, rtol=1e-9)


@pytest.mark.parametrize("reg_m", [None, 0.8])
@pytest.mark.parametrize("debias", [True, False])
@pytest.mark.parametrize("p", [2.0, 1.0, 1.5])
def test_vjp(rng, reg_m, debias, p):
    X, Y, a, b = _clouds(rng, 6, 5)
    if reg_m is not None:
        b = 1.3 * b
    check_vjp("ot.sinkhorn_divergence", X, Y, a, b, opts=dict(reg=0.3, p=p, reg_m=reg_m, debias=debias, tol=1e-14,
                                                              max_iter=20000))
    check_vjp("ot.sinkhorn_divergence", X, Y, None, None, opts=dict(reg=0.3, p=p, reg_m=reg_m, debias=debias,
                                                                    tol=1e-14, max_iter=20000))


def test_torch_and_jax_gradients_agree(rng):
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    import optnorm.jax as onj
    import optnorm.torch as ont

    X, Y, a, b = _clouds(rng, 10, 8)
    tX = torch.tensor(X, requires_grad=True)
    ont.sinkhorn_divergence(tX, torch.tensor(Y), reg=0.2).backward()
    gj = jax.grad(lambda x: onj.sinkhorn_divergence(x, jax.numpy.asarray(Y), reg=0.2))(jax.numpy.asarray(X))
    assert_close(tX.grad.numpy(), np.asarray(gj), rtol=1e-8, atol=1e-12)


def test_gradient_flow_keeps_the_shape(rng):
    # a flow of X towards Y by the debiased divergence ends near Y; the biased OT_eps shrinks it into a blob
    Y = np.stack([np.cos(np.linspace(0, 2 * np.pi, 60, endpoint=False)),
                  np.sin(np.linspace(0, 2 * np.pi, 60, endpoint=False))], 1)
    X0 = 0.1 * rng.standard_normal((60, 2))
    from optnorm._lib import ops

    op = ops.get("ot.sinkhorn_divergence")
    spreads = {}
    for debias in (True, False):
        X = X0.copy()
        for _ in range(60):
            _, res = op.fwd(X, Y, reg=0.3, debias=debias, max_iter=200)
            g = op.bwd(res, np.array(1.0))[0]
            X = X - 60 * g
        spreads[debias] = np.linalg.norm(X, axis=1).mean()
    assert abs(spreads[True] - 1.0) < 0.05 and spreads[False] < spreads[True] - 0.05


def test_bad_input(rng):
    X, Y, a, b = _clouds(rng, 5, 4)
    with pytest.raises(ValueError, match="Y"):
        sinkhorn_divergence(X, np.zeros((4, 3)), reg=0.1)               # clouds of different dimension
    with pytest.raises(ValueError, match="reg must be"):
        sinkhorn_divergence(X, Y, reg=-1.0)
    with pytest.raises(ValueError, match="reg_m must be"):
        sinkhorn_divergence(X, Y, reg=0.1, reg_m=0.0)
    with pytest.raises(ValueError, match="X contains NaN"):
        sinkhorn_divergence(X * np.nan, Y, reg=0.1)
    with pytest.raises(ValueError, match="p must be"):
        sinkhorn_divergence(X, Y, reg=0.1, p=0.5)
    with pytest.raises(ValueError, match="overflow"):
        sinkhorn_divergence(X * 1e300, Y, reg=0.1)
    with pytest.raises(ValueError, match="a has shape"):
        sinkhorn_divergence(X[:4], Y, a, b, reg=0.1)
