"""barycenter (fixed support, entropic) and free_support_barycenter: POT values, gradients (finite differences of
POT's log barycenter, and the implicit VJP against FD of our forward), Numba vs generic, backends, bad input."""
from __future__ import annotations

import numpy as np
import pytest

import optnorm
from optnorm.ot import BarycenterResult, FreeSupportResult, barycenter, free_support_barycenter
from optnorm.ot.barycenters import barycenter_bwd, barycenter_fwd
from optnorm.testing import assert_close, check_vjp


def _hists(rng, k=3, n=20):
    x = np.linspace(0, 1, n)
    M = (x[:, None] - x[None]) ** 2
    A = rng.random((k, n)) + 0.05
    return A / A.sum(1, keepdims=True), M, x


def _pot(A, M, reg, w=None):
    ot = pytest.importorskip("ot")
    return ot.bregman.barycenter(A.T, M, reg, weights=w, method="sinkhorn_log", stopThr=1e-15, numItermax=100000)


@pytest.mark.parametrize("reg", [0.05, 5e-3])
def test_matches_pot(xp, rng, reg):
    A, M, _ = _hists(rng)
    w = np.array([0.2, 0.3, 0.5])
    ref = _pot(A, M, reg, w)
    q = barycenter(xp.asarray(A), xp.asarray(M), reg=reg, weights=xp.asarray(w), tol=1e-13, max_iter=50000)
    assert_close(q, ref, rtol=1e-8, atol=1e-12, xp=xp)
    r = barycenter(xp.asarray(A), xp.asarray(M), reg=reg, tol=1e-13, max_iter=50000, return_result=True)
    assert isinstance(r, BarycenterResult) and r.converged
    assert_close(r.barycenter, _pot(A, M, reg), rtol=1e-8, atol=1e-12, xp=xp)
    assert "BarycenterResult" in repr(r) and "n_iter" in r.summary()


def test_rectangular_support_and_zeros(rng):
    """m != n (barycenter on another grid) and zero bins in the inputs, against a float64 reference loop."""
    A, _, x = _hists(rng, k=2, n=15)
    A[0, :3] = 0
    A /= A.sum(1, keepdims=True)
    y = np.linspace(-0.2, 1.2, 11)
    M = (x[:, None] - y[None]) ** 2
    reg = 0.02
    q = barycenter(A, M, reg=reg, tol=1e-14, max_iter=50000)
    # independent reference: plain (kernel-domain) Bregman projections in float64
    K = np.exp(-M / reg)
    v = np.ones((2, 11))
    for _ in range(50000):
        u = A / (v @ K.T)
        Ktu = u @ K
        qq = np.exp(np.mean(np.log(v * Ktu), axis=0))
        v = qq[None] / Ktu
    assert_close(q, qq, rtol=1e-9, atol=1e-14)


def test_numba_matches_generic(rng):
    A, M, _ = _hists(rng, k=4, n=30)
    for reg in (0.05, 1e-3):
        q = barycenter(A, M, reg=reg, tol=1e-12, max_iter=20000)
        with optnorm.use_backend("generic"):
            q2 = barycenter(A, M, reg=reg, tol=1e-12, max_iter=20000)
        assert_close(q, q2, rtol=1e-9, atol=1e-13)
    q32 = barycenter(A.astype(np.float32), M.astype(np.float32), reg=0.05)
    assert q32.dtype == np.float32
    assert_close(q32.astype(np.float64), barycenter(A, M, reg=0.05), rtol=1e-4, atol=1e-6)


def test_identical_inputs_and_symmetry(rng):
    A, M, x = _hists(rng, k=1, n=25)
    q = barycenter(np.concatenate([A, A]), M, reg=1e-3, tol=1e-12, max_iter=20000)
    assert_close(q, barycenter(A, M, reg=1e-3, tol=1e-12, max_iter=20000), rtol=1e-9, atol=1e-14)
    # two Diracs at the ends: the small-reg barycenter sits in the middle
    D = np.zeros((2, 25))
    D[0, 0] = D[1, -1] = 1
    q = barycenter(D, M, reg=1e-3)
    assert abs(float(x @ q) - 0.5) < 1e-6 and abs(q.sum() - 1) < 1e-9


def test_gradients_vs_pot_finite_differences(rng):
    """The implicit VJP against central differences of POT's converged log barycenter (POT's own autodiff
    cannot run through its in-place log iterations)."""
    A, M, _ = _hists(rng, k=3, n=10)
    w = np.array([0.25, 0.25, 0.5])
    reg = 0.05
    dq = rng.standard_normal(10)
    q, res = barycenter_fwd(A, M, w, reg=reg, tol=1e-14, max_iter=50000)
    dA, dM, dw = barycenter_bwd(res, dq)
    h = 1e-6
    E = rng.standard_normal(M.shape)
    fd = (_pot(A, M + h * E, reg, w) - _pot(A, M - h * E, reg, w)) @ dq / (2 * h)
    assert_close(np.sum(dM * E), fd, rtol=1e-6)
    V = rng.standard_normal(A.shape)
    V -= V.mean(1, keepdims=True)                                 # stay on the simplex
    fd = (_pot(A + h * V, M, reg, w) - _pot(A - h * V, M, reg, w)) @ dq / (2 * h)
    assert_close(np.sum(dA * V), fd, rtol=1e-6)
    v = np.array([1.0, -2.0, 1.0])
    fd = (_pot(A, M, reg, w + h * v) - _pot(A, M, reg, w - h * v)) @ dq / (2 * h)
    assert_close(np.sum(dw * v), fd, rtol=1e-6)


def test_check_vjp(rng):
    A, M, _ = _hists(rng, k=3, n=8)
    check_vjp("ot.barycenter", A, M, None, opts={"reg": 0.1, "tol": 1e-14, "max_iter": 20000}, rtol=1e-6)
    check_vjp("ot.barycenter", A, M, np.array([0.5, 0.3, 0.2]),
              opts={"reg": 0.1, "tol": 1e-14, "max_iter": 20000}, rtol=1e-6)


def test_torch_adapter_gradient(rng):
    torch = pytest.importorskip("torch")
    from optnorm.torch import barycenter as tb

    A, M, _ = _hists(rng, k=2, n=8)
    Mt = torch.tensor(M, requires_grad=True)
    q = tb(torch.tensor(A), Mt, reg=0.1, tol=1e-14, max_iter=20000)
    dq = torch.tensor(rng.standard_normal(8))
    (q * dq).sum().backward()
    _, res = barycenter_fwd(A, M, reg=0.1, tol=1e-14, max_iter=20000)
    assert_close(Mt.grad.numpy(), barycenter_bwd(res, dq.numpy())[1], rtol=1e-10, atol=1e-14)


def test_callback_and_warning(rng):
    A, M, _ = _hists(rng)
    seen = []
    q = barycenter(A, M, reg=0.01, callback=lambda s: seen.append((s.n_iter, s.error)) or len(seen) >= 2,
                   callback_every=5, return_result=True)
    assert [n for n, _ in seen] == [5, 10] and q.n_iter == 10
    with pytest.warns(optnorm.ConvergenceWarning):
        barycenter(A, M, reg=1e-3, max_iter=20)


def test_bad_input(rng):
    A, M, _ = _hists(rng)
    with pytest.raises(ValueError, match="reg"):
        barycenter(A, M, reg=-1.0)
    with pytest.raises(ValueError, match="A"):
        barycenter(A * 2, M, reg=0.1)
    with pytest.raises(ValueError, match="M"):
        barycenter(A, M[:5], reg=0.1)
    B = A.copy()
    B[0, 0] = np.nan
    with pytest.raises(ValueError, match="A"):
        barycenter(B, M, reg=0.1)
    with pytest.raises(ValueError, match="weights"):
        barycenter(A, M, reg=0.1, weights=np.array([0.5, 0.5]))


# ---------------------------------------------------------------------------------------------- free support
def _clouds(rng, K=3, d=2):
    Ys = [rng.standard_normal((8 + 3 * i, d)) + 2 * i for i in range(K)]
    bs = [rng.random(len(Y)) + 0.1 for Y in Ys]
    return Ys, [b / b.sum() for b in bs]


def test_free_support_matches_pot(rng):
    ot = pytest.importorskip("ot")
    Ys, bs = _clouds(rng)
    X0 = rng.standard_normal((6, 2))
    w = np.array([0.5, 0.2, 0.3])
    ref = ot.lp.free_support_barycenter(Ys, bs, X0, weights=w, numItermax=100, stopThr=1e-10)
    X = free_support_barycenter(Ys, bs, X_init=X0, weights=w, max_iter=100, tol=1e-10)
    assert_close(X, ref, rtol=1e-9, atol=1e-10)
    r = free_support_barycenter(Ys, bs, X_init=X0, weights=w, max_iter=100, tol=1e-10, return_result=True)
    assert isinstance(r, FreeSupportResult) and r.converged and r.cost > 0


def test_free_support_sinkhorn_matches_pot(rng):
    ot = pytest.importorskip("ot")
    Ys, bs = _clouds(rng)
    X0 = rng.standard_normal((5, 2))
    ref = ot.bregman.free_support_sinkhorn_barycenter(Ys, bs, X0, 1.0, numItermax=50, numInnerItermax=5000,
                                                      stopThr=1e-12)
    X = free_support_barycenter(Ys, bs, X_init=X0, reg=1.0, max_iter=50, inner_max_iter=5000, tol=1e-12)
    assert_close(X, ref, rtol=1e-5, atol=1e-6)


def test_free_support_one_dimensional_closed_form(xp):
    """1-D, equal sizes, uniform: the barycenter is the weighted average of the sorted samples."""
    Y1 = np.array([[0.0], [1.0], [4.0]])
    Y2 = np.array([[10.0], [13.0], [11.0]])
    X = free_support_barycenter([xp.asarray(Y1), xp.asarray(Y2)], X_init=xp.asarray(np.array([[0.0], [3.0], [4.0]])),
                                weights=xp.asarray(np.array([0.25, 0.75])))
    ref = 0.25 * np.sort(Y1[:, 0]) + 0.75 * np.sort(Y2[:, 0])
    assert_close(np.sort(np.asarray(optnorm._lib.compat.to_numpy(X))[:, 0]), ref, rtol=1e-12)


def test_free_support_bad_input(rng):
    Ys, bs = _clouds(rng)
    with pytest.raises(ValueError, match="measures_locations"):
        free_support_barycenter(Ys, X_init=rng.standard_normal((4, 3)))
    with pytest.raises(ValueError, match="measures_weights"):
        free_support_barycenter(Ys, bs[:2], X_init=rng.standard_normal((4, 2)))
    with pytest.raises(ValueError, match="reg"):
        free_support_barycenter(Ys, X_init=rng.standard_normal((4, 2)), reg=-1.0)
