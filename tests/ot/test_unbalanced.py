"""sinkhorn_unbalanced / sinkhorn_unbalanced2: POT values and gradients, closed form, limits, lazy clouds, VJPs."""
from __future__ import annotations

import math

import numpy as np
import pytest

import optnorm
from optnorm.ot import PointCloud, sinkhorn, sinkhorn_unbalanced, sinkhorn_unbalanced2
from optnorm.testing import assert_close, check_vjp


def _problem(rng, n=25, m=18):
    x, y = rng.random((n, 2)), rng.random((m, 2))
    M = ((x[:, None] - y[None]) ** 2).sum(-1)
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return a / a.sum(), b / b.sum() * 1.6, M, x, y


def _pot_total_true(log, P, a, b, reg, rm):
    """POT's total_cost plus the mass terms its kl_div omits: the objective with the generalised KL."""
    r1, r2 = rm
    return log["total_cost"] + reg * (a.sum() * b.sum() - P.sum()) + r1 * (a.sum() - P.sum()) + r2 * (b.sum() - P.sum())


@pytest.mark.parametrize("reg_m", [1.0, (0.3, 5.0), (math.inf, 0.5)])
def test_matches_pot(xp, rng, reg_m):
    ot = pytest.importorskip("ot")
    a, b, M, _, _ = _problem(rng)
    reg = 0.05
    P, log = ot.unbalanced.sinkhorn_unbalanced(a, b, M, reg, reg_m, method="sinkhorn", stopThr=1e-15,
                                               numItermax=200000, log=True)
    res = sinkhorn_unbalanced(xp.asarray(a), xp.asarray(b), xp.asarray(M), reg, reg_m, tol=1e-13, max_iter=100000)
    assert res.converged
    assert_close(res.plan(), P, rtol=1e-8, atol=1e-13, xp=xp)
    assert_close(res.cost, log["cost"], rtol=1e-9, xp=xp)
    rm = reg_m if isinstance(reg_m, tuple) else (reg_m, reg_m)
    rm_pot = tuple(0.0 if r == math.inf else r for r in rm)     # POT drops the infinite terms
    assert_close(res.objective, _pot_total_true(log, P, a, b, reg, rm_pot), rtol=1e-9, xp=xp)
    # POT's log u / log v are the potentials of the reference a (x) b
    assert_close(res.f, reg * log["logu"] + reg * np.log(a), rtol=1e-7, atol=1e-10, xp=xp)
    y = sinkhorn_unbalanced2(xp.asarray(a), xp.asarray(b), xp.asarray(M), reg=reg, reg_m=reg_m, tol=1e-13,
                             max_iter=100000)
    assert_close(y, log["cost"], rtol=1e-9, xp=xp)


def test_one_point_closed_form():
    # 1 x 1, equal rho, reference a b: pi = exp((-M + (eps + rho)(log a + log b)) / (eps + 2 rho))
    a, b, M, eps, rho = np.array([0.7]), np.array([1.9]), np.array([[0.4]]), 0.3, 0.8
    res = sinkhorn_unbalanced(a, b, M, eps, rho, tol=1e-15, max_iter=10000)
    pi = math.exp((-0.4 + (eps + rho) * (math.log(0.7) + math.log(1.9))) / (eps + 2 * rho))
    assert_close(res.plan()[0, 0], pi, rtol=1e-13)


def test_infinite_reg_m_is_balanced_sinkhorn(rng):
    a, b, M, _, _ = _problem(rng)
    b = b / b.sum()
    u = sinkhorn_unbalanced(a, b, M, 0.05, math.inf, tol=1e-12)
    s = sinkhorn(a, b, M, 0.05, tol=1e-12)
    assert u.reg_m is None and s.reg_m is None
    assert_close(u.plan(), s.plan(), rtol=1e-8, atol=1e-14)
    assert_close(u.cost, s.cost, rtol=1e-10)
    # the plan approaches the balanced one as rho grows (slowly converging: the mass mode contracts by ~reg/rho)
    gaps = [np.abs(sinkhorn_unbalanced(a, b, M, 0.05, rho, tol=1e-10, max_iter=50000).plan() - s.plan()).sum()
            for rho in (1.0, 10.0, 100.0)]
    assert gaps[0] > 5 * gaps[1] > 25 * gaps[2]


def test_point_cloud_equals_dense(path, rng):
    a, b, M, x, y = _problem(rng, 40, 30)
    d = sinkhorn_unbalanced(a, b, M, 0.02, (0.5, 1.0), tol=1e-12, max_iter=5000)
    lz = sinkhorn_unbalanced(a, b, PointCloud(x, y), 0.02, (0.5, 1.0), tol=1e-12, max_iter=5000)
    assert lz.n_iter == d.n_iter
    assert_close(lz.f, d.f, rtol=1e-9, atol=1e-11)
    assert_close(lz.cost, d.cost, rtol=1e-9)
    assert_close(lz.objective, d.objective, rtol=1e-9)
    assert_close(lz.plan(), d.plan(), rtol=1e-8, atol=1e-14)


def test_batched_zero_weights_and_callback(rng):
    a, b, M, _, _ = _problem(rng, 12, 9)
    A = np.stack([a, a[::-1]])
    A[1, 3] = 0.0
    res = sinkhorn_unbalanced(A, b, np.stack([M, M]), 0.1, 1.0, tol=1e-12)
    assert res.f.shape == (2, 12) and np.isneginf(res.f[1, 3]) and np.all(res.plan()[1, 3] == 0)
    one = sinkhorn_unbalanced(A[1], b, M, 0.1, 1.0, tol=1e-12)
    assert_close(res.cost[1], one.cost, rtol=1e-10)
    seen = []
    sinkhorn_unbalanced(a, b, M, 0.01, 1.0, callback=lambda s: seen.append((s.n_iter, s.error)) or s.n_iter >= 20,
                        callback_every=5)
    assert [k for k, _ in seen] == [5, 10, 15, 20]
    with pytest.warns(optnorm.ConvergenceWarning):
        r = sinkhorn_unbalanced(a, b, M, 0.001, 10.0, max_iter=20)
    assert not r.converged


@pytest.mark.parametrize("value", ["transport", "objective"])
@pytest.mark.parametrize("reg_m", [0.7, (0.4, math.inf)])
def test_gradients_match_pot_autodiff(rng, value, reg_m):
    torch = pytest.importorskip("torch")
    ot = pytest.importorskip("ot")
    import optnorm.torch as ont

    a, b, M, _, _ = _problem(rng, 8, 6)
    reg = 0.1
    rm = reg_m if isinstance(reg_m, tuple) else (reg_m, reg_m)
    ta, tb, tM = (torch.tensor(z, requires_grad=True) for z in (a, b, M))
    P, log = ot.unbalanced.sinkhorn_unbalanced(ta, tb, tM, reg, reg_m, method="sinkhorn", stopThr=1e-14,
                                               numItermax=20000, log=True)
    if value == "transport":
        L = log["cost"]
    else:
        rm_pot = tuple(0.0 if r == math.inf else r for r in rm)
        L = _pot_total_true(log, P, ta, tb, reg, rm_pot)
    L.backward()
    ref = [z.grad.clone() for z in (ta, tb, tM)]
    for z in (ta, tb, tM):
        z.grad = None
    y = ont.sinkhorn_unbalanced2(ta, tb, tM, reg=reg, reg_m=reg_m, value=value, tol=1e-13, max_iter=20000)
    assert abs(float(y) - float(L)) < 1e-10
    y.backward()
    for got, want, name in zip((ta.grad, tb.grad, tM.grad), ref, "abM"):
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-9), (name, got, want)


@pytest.mark.parametrize("value", ["transport", "objective"])
def test_vjp_finite_differences(rng, value):
    a, b, M, _, _ = _problem(rng, 6, 5)
    for rm in (0.8, (0.3, 2.0), (math.inf, 0.6), math.inf):
        bb = b / b.sum() if rm == math.inf else b
        check_vjp("ot.sinkhorn_unbalanced2", a, bb, M, opts=dict(reg=0.2, reg_m=rm, value=value, tol=1e-14,
                                                                 max_iter=50000))
    check_vjp("ot.sinkhorn_unbalanced2", None, b, M, opts=dict(reg=0.2, reg_m=1.0, value=value, tol=1e-14))


def test_progress_and_repr(rng, capsys):
    a, b, M, _, _ = _problem(rng)
    res = sinkhorn_unbalanced(a, b, M, 0.05, 1.0, progress=True)
    assert "sinkhorn_unbalanced" in capsys.readouterr().err
    text = repr(res)
    assert len(text) < 400 and "reg_m=(1, 1)" in text
    assert "converged" in res.summary()


def test_bad_input(rng):
    a, b, M, x, y = _problem(rng, 5, 4)
    with pytest.raises(ValueError, match="reg_m must be in"):
        sinkhorn_unbalanced(a, b, M, 0.1, -1.0)
    with pytest.raises(ValueError, match=r"reg_m\[1\] must be in"):
        sinkhorn_unbalanced(a, b, M, 0.1, (1.0, float("nan")))
    with pytest.raises(ValueError, match="reg must be in"):
        sinkhorn_unbalanced(a, b, M, -0.1, 1.0)
    with pytest.raises(ValueError, match="reg must be"):
        sinkhorn_unbalanced(a, b, M, float("inf"), 1.0)
    with pytest.raises(ValueError, match="b has m = 3"):
        sinkhorn_unbalanced(a, b[:3], M, 0.1, 1.0)
    with pytest.raises(ValueError, match="M"):
        sinkhorn_unbalanced(a, b, PointCloud(x[:3], y), 0.1, 1.0)      # the cloud's n disagrees with a
    with pytest.raises(ValueError, match="Y"):
        PointCloud(x, np.zeros((4, 3)))                                 # clouds of different dimension
    with pytest.raises(ValueError, match="a must be non-negative"):
        sinkhorn_unbalanced(-a, b, M, 0.1, 1.0)
    with pytest.raises(ValueError, match="divergence"):
        sinkhorn_unbalanced(a, b, M, 0.1, 1.0, divergence="tv")
