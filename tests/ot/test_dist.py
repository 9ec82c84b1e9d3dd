"""dist: SciPy cdist and POT ot.dist values, every metric and method, batches, near points, VJPs, bad input."""
from __future__ import annotations

import numpy as np
import pytest

import optnorm
from optnorm.ot import dist
from optnorm.testing import assert_close, check_vjp

METRICS = ["sqeuclidean", "euclidean", "cityblock", "minkowski", "cosine", "correlation"]


def _kw(metric):
    return {"p": 3.0} if metric == "minkowski" else {}


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("method", ["auto", "direct", "expand"])
def test_matches_scipy_cdist(path, rng, metric, method):
    from scipy.spatial.distance import cdist

    X, Y = rng.standard_normal((9, 4)), rng.standard_normal((7, 4))
    assert_close(dist(X, Y, metric=metric, method=method, **_kw(metric)), cdist(X, Y, metric=metric, **_kw(metric)),
                 rtol=1e-12, atol=1e-13)
    if metric not in ("cosine", "correlation"):
        w = rng.random(4)
        assert_close(dist(X, Y, metric=metric, method=method, w=w, **_kw(metric)),
                     cdist(X, Y, metric=metric, w=w, **_kw(metric)), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("metric", METRICS)
def test_matches_pot_on_every_backend(xp, rng, metric):
    ot = pytest.importorskip("ot")
    X, Y = rng.standard_normal((8, 3)), rng.standard_normal((6, 3))
    ref = ot.dist(X, Y, metric=metric, **_kw(metric))
    assert_close(dist(xp.asarray(X), xp.asarray(Y), metric=metric, **_kw(metric)), ref, rtol=1e-11, atol=1e-12,
                 xp=xp)
    # Y omitted: the cloud against itself, exact zeros on the diagonal
    D = dist(xp.asarray(X), metric=metric, **_kw(metric))
    assert_close(D, ot.dist(X, X, metric=metric, **_kw(metric)), rtol=1e-11, atol=1e-12, xp=xp)
    assert np.all(np.diag(np.asarray(optnorm._lib.compat.to_numpy(D))) == 0)


def test_batched_and_broadcast(rng, path):
    X = rng.standard_normal((2, 3, 5, 2))
    Y = rng.standard_normal((3, 4, 2))                 # broadcast over the leading axis of X
    D = dist(X, Y, metric="euclidean")
    assert D.shape == (2, 3, 5, 4)
    for i in range(2):
        for j in range(3):
            assert_close(D[i, j], dist(X[i, j], Y[j], metric="euclidean"), rtol=1e-14)


def test_near_points_are_exact(path):
    # points 1e-7 apart at distance 1e4 from the origin: the expansion loses every digit, differences none
    rng = np.random.default_rng(0)
    base = 1e4 + rng.standard_normal((50, 3))
    Y = base + 1e-7 * rng.standard_normal((50, 3))
    ref = np.sum((base.astype(np.longdouble)[:, None] - Y.astype(np.longdouble)[None]) ** 2, -1).astype(np.float64)
    D = dist(base, Y)
    assert_close(np.diag(D), np.diag(ref), rtol=1e-9)
    # d = 40 takes the expansion under "auto": the NumPy path recomputes the cancelled entries
    base = 1e4 + rng.standard_normal((30, 40))
    Y = base + 1e-7 * rng.standard_normal((30, 40))
    ref = np.sum((base[:, None] - Y[None]) ** 2, -1)
    if path == "numba":
        assert_close(np.diag(dist(base, Y)), np.diag(ref), rtol=1e-8)
    assert_close(np.diag(dist(base, Y, method="direct")), np.diag(ref), rtol=1e-8)


def test_huge_and_tiny_magnitudes(path):
    X = np.array([[1e300, 0.0], [0.0, 1e300]])
    assert_close(dist(X, metric="euclidean"), np.array([[0.0, np.sqrt(2) * 1e300], [np.sqrt(2) * 1e300, 0.0]]),
                 rtol=1e-14)
    with pytest.raises(ValueError, match="overflow"):
        dist(X)                                         # (1e300)^2 is beyond float64
    T = X * 1e-600 if False else np.array([[1e-200, 0.0], [0.0, 1e-200]])
    assert_close(dist(T), np.array([[0.0, 2e-400], [2e-400, 0.0]]), rtol=1e-12)   # subnormal-free: scaled


def test_cosine_zero_row_is_distance_one(path):
    X = np.array([[0.0, 0.0], [1.0, 0.0]])
    Y = np.array([[1.0, 1.0]])
    D = dist(X, Y, metric="cosine")
    assert_close(D[:, 0], np.array([1.0, 1 - 1 / np.sqrt(2)]), rtol=1e-14)


@pytest.mark.parametrize("metric", METRICS)
def test_vjp(metric, rng):
    X, Y = rng.standard_normal((6, 3)), rng.standard_normal((5, 3))
    check_vjp("ot.dist", X, Y, opts=dict(metric=metric, **_kw(metric)))
    check_vjp("ot.dist", X, None, opts=dict(metric=metric, **_kw(metric)))
    if metric not in ("cosine", "correlation"):
        check_vjp("ot.dist", X, Y, opts=dict(metric=metric, w=rng.random(3) + 0.5, **_kw(metric)))
    Xb, Yb = rng.standard_normal((2, 4, 3)) * 1e5, rng.standard_normal((4, 3)) * 1e5   # batched, scaled
    check_vjp("ot.dist", Xb, Yb, opts=dict(metric=metric, **_kw(metric)), h=1e-1 if metric != "sqeuclidean" else 1.0,
              rtol=1e-5)


def test_euclidean_gradient_is_zero_at_coinciding_points():
    import torch

    import optnorm.torch as ont

    X = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    D = ont.dist(X, metric="euclidean")
    D.sum().backward()
    assert torch.all(torch.isfinite(X.grad))
    # d/dx0 of 2|x0 - x1| (both off-diagonal entries) = 2 (x0 - x1)/|x0 - x1|
    assert torch.allclose(X.grad[0], torch.tensor([-2, -2], dtype=torch.float64) / np.sqrt(2))


def test_gradient_matches_pot_torch(rng):
    torch = pytest.importorskip("torch")
    ot = pytest.importorskip("ot")
    import optnorm.torch as ont

    for metric in ("sqeuclidean", "euclidean", "cosine", "cityblock"):
        X = torch.tensor(rng.standard_normal((6, 3)), requires_grad=True)
        Y = torch.tensor(rng.standard_normal((5, 3)), requires_grad=True)
        G = torch.tensor(rng.standard_normal((6, 5)))
        (ot.dist(X, Y, metric=metric) * G).sum().backward()
        ref = X.grad.clone(), Y.grad.clone()
        X.grad = Y.grad = None
        (ont.dist(X, Y, metric=metric) * G).sum().backward()
        assert torch.allclose(X.grad, ref[0], rtol=1e-9, atol=1e-12), metric
        assert torch.allclose(Y.grad, ref[1], rtol=1e-9, atol=1e-12), metric


def test_bad_input():
    X, Y = np.zeros((3, 2)), np.zeros((4, 3))
    with pytest.raises(ValueError, match="Y"):
        dist(X, Y)                                      # clouds of different dimension
    with pytest.raises(ValueError, match="w"):
        dist(X, metric="cosine", w=np.ones(2))
    with pytest.raises(ValueError, match="X"):
        dist(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="metric"):
        dist(X, metric="hamming")
    with pytest.raises(ValueError, match="w"):
        dist(X, w=-np.ones(2))
