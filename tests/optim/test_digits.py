"""Every rule reduces a real objective: multinomial logistic regression on scikit-learn's bundled digits (no download).

Full batch, W of shape (10, 64) (matrix rules) and bias (10,) (their ``fallback``).
The initial loss is log(10) = 2.30; each rule must get below the stated threshold
in 100 steps (AdaHessian: 60 steps, Hessian-vector products by central
differences of the analytic gradient).
"""
from __future__ import annotations

import numpy as np
import pytest

import scipy.optimize as scipy_optimize

import optnorm.optim as oo

sklearn_datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn is needed for the digits data")


@pytest.fixture(scope="module")
def digits():
    X, y = sklearn_datasets.load_digits(return_X_y=True)
    return X[:600] / 16.0, y[:600]          # 600 of the 1797 images keep the suite fast on 2 cores


def loss_grad(p, X, y):
    Z = X @ p["w"].T + p["b"]
    Z = Z - Z.max(1, keepdims=True)
    P = np.exp(Z)
    P /= P.sum(1, keepdims=True)
    loss = -np.mean(np.log(P[np.arange(len(y)), y]))
    D = P.copy()
    D[np.arange(len(y)), y] -= 1.0
    D /= len(y)
    return loss, {"w": D.T @ X, "b": D.sum(0)}


def _fb():
    return oo.adamw(lr=0.05, weight_decay=0.0)


RULES = {
    "sgd": (lambda: oo.sgd(lr=0.5, momentum=0.9), 0.2),
    "adam": (lambda: oo.adam(lr=0.05), 0.2),
    "adamw": (lambda: oo.adamw(lr=0.05), 0.2),
    "lion": (lambda: oo.lion(lr=0.02), 0.3),
    "adamp": (lambda: oo.adamp(lr=0.05, weight_decay=1e-3), 0.2),
    "sgdp": (lambda: oo.sgdp(lr=0.5, momentum=0.9), 0.2),
    "fadam": (lambda: oo.fadam(lr=0.05, weight_decay=0.0), 0.2),
    "muon": (lambda: oo.muon(lr=0.1, weight_decay=0.0, fallback=_fb()), 0.2),
    "normuon": (lambda: oo.normuon(lr=0.1, fallback=_fb()), 0.2),
    "auon": (lambda: oo.auon(lr=1.0, fallback=_fb()), 0.3),
    "hybrid_auon": (lambda: oo.hybrid_auon(lr=0.1, fallback=_fb()), 0.2),
    "conda": (lambda: oo.conda(lr=0.05, update_proj_gap=10, fallback=_fb()), 0.2),
    "swan": (lambda: oo.swan(lr=0.05, fallback=_fb()), 0.3),
    "sinkgd": (lambda: oo.sinkgd(lr=0.02, fallback=_fb()), 0.2),
    "dct_lowrank": (lambda: oo.dct_lowrank(oo.adam(lr=0.05), rank=8), 0.3),
    "nap": (lambda: oo.nap(oo.adam(lr=0.05)), 0.3),
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_rule_trains_logistic_regression(digits, name):
    X, y = digits
    make, threshold = RULES[name]
    rule = make()
    rng = np.random.default_rng(0)
    scale = 1.0 if name == "nap" else 0.01      # NaP keeps |W| at its initial value: start at a useful norm
    p = {"w": scale * rng.standard_normal((10, 64)), "b": np.zeros(10)}
    st = rule.init(p)
    first, _ = loss_grad(p, X, y)
    for _ in range(100):
        _, g = loss_grad(p, X, y)
        p, st = rule.step(p, g, st)
    last, _ = loss_grad(p, X, y)
    assert last < threshold < first, f"{name}: loss {first:.3f} -> {last:.3f} (threshold {threshold})"


def test_adahessian_trains_logistic_regression(digits):
    X, y = digits
    rng = np.random.default_rng(0)
    p = {"w": 0.01 * rng.standard_normal((10, 64)), "b": np.zeros(10)}
    opt = oo.adahessian(lr=0.3)
    st = opt.init(p)

    def hvp_at(p):
        def hvp(v):
            h = 1e-4
            gp = loss_grad({k: p[k] + h * v[k] for k in p}, X, y)[1]
            gm = loss_grad({k: p[k] - h * v[k] for k in p}, X, y)[1]
            return {k: (gp[k] - gm[k]) / (2 * h) for k in p}
        return hvp

    for _ in range(60):
        _, g = loss_grad(p, X, y)
        p, st = opt.step(p, g, st, hvp=hvp_at(p))
    assert loss_grad(p, X, y)[0] < 0.2


def test_gradnorm_newton_on_digits_logistic_regression(digits):
    """The regularised Newton method with the exact Hessian of a small binary logistic regression (0 vs 1)."""
    X, y = digits
    sel = y < 2
    A, t = X[sel][:, ::4], (y[sel] == 1).astype(float)     # 16 features
    lam = 1e-2

    def f(w):
        z = A @ w
        return float(np.mean(np.logaddexp(0, z) - t * z) + 0.5 * lam * w @ w)

    def g(w):
        s = 1 / (1 + np.exp(-(A @ w)))
        return A.T @ (s - t) / len(t) + lam * w

    def H(w):
        s = 1 / (1 + np.exp(-(A @ w)))
        return (A.T * (s * (1 - s))) @ A / len(t) + lam * np.eye(A.shape[1])

    r = oo.gradnorm_newton(f, g, H, np.zeros(A.shape[1]), tol=1e-9, max_iter=50)
    assert r.converged and r.n_iter < 30
    assert np.linalg.norm(g(r.x)) < 1e-9
    ref = scipy_optimize.minimize(f, np.zeros(A.shape[1]), jac=g, method="BFGS", options={"gtol": 1e-10})
    assert f(r.x) < 0.2 < np.log(2) and abs(f(r.x) - ref.fun) < 1e-10
