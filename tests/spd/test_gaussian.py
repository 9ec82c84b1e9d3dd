"""mahalanobis against scipy.spatial.distance.mahalanobis; gaussian_fit against scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis as sp_mahalanobis

from optnorm.spd import gaussian_fit, mahalanobis
from optnorm.testing import assert_close, check_vjp


def _spd(rng, d, batch=()):
    a = rng.standard_normal(batch + (d, d + 2))
    return a @ np.swapaxes(a, -1, -2) / d + 0.3 * np.eye(d)


def test_mahalanobis_matches_scipy(xp, rng):
    d = 4
    x = rng.standard_normal((3, 5, d))
    mu = rng.standard_normal(d)
    S = _spd(rng, d)
    VI = np.linalg.inv(S)
    ref = np.array([[sp_mahalanobis(x[i, j], mu, VI) for j in range(5)] for i in range(3)])
    assert_close(mahalanobis(xp.asarray(x), xp.asarray(mu), xp.asarray(S)), ref, rtol=1e-10, xp=xp)
    assert_close(mahalanobis(xp.asarray(x), xp.asarray(mu), precision=xp.asarray(VI)), ref, rtol=1e-10, xp=xp)
    assert_close(mahalanobis(xp.asarray(x), xp.asarray(mu), xp.asarray(S), squared=True), ref ** 2, rtol=1e-10, xp=xp)


def test_mahalanobis_batched_cov(xp, rng):
    d = 3
    covs = _spd(rng, d, (4,))
    x = rng.standard_normal((2, 4, d))
    mu = rng.standard_normal((4, d))
    ref = np.array([[sp_mahalanobis(x[i, k], mu[k], np.linalg.inv(covs[k])) for k in range(4)] for i in range(2)])
    assert_close(mahalanobis(xp.asarray(x), xp.asarray(mu), xp.asarray(covs)), ref, rtol=1e-10, xp=xp)
    assert_close(mahalanobis(xp.asarray(x), xp.asarray(mu), precision=xp.asarray(np.linalg.inv(covs))), ref,
                 rtol=1e-9, xp=xp)


def test_mahalanobis_float32(rng):
    S = _spd(rng, 5).astype(np.float32)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    y = mahalanobis(x, np.zeros(5, np.float32), S)
    assert y.dtype == np.float32
    ref = [sp_mahalanobis(v, np.zeros(5), np.linalg.inv(S.astype(np.float64))) for v in x]
    assert_close(y, ref, rtol=1e-4)


def test_mahalanobis_not_spd_reports_eigenvalue(xp):
    bad = xp.asarray(np.diag([1.0, -2.0, 3.0]))
    with pytest.raises(ValueError, match="cov must be positive definite; its smallest eigenvalue is -2"):
        mahalanobis(xp.asarray(np.ones(3)), xp.asarray(np.zeros(3)), bad)


def test_mahalanobis_bad_input():
    with pytest.raises(ValueError, match="exactly one of cov and precision"):
        mahalanobis(np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="cov has shape"):
        mahalanobis(np.ones(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="mean has shape"):
        mahalanobis(np.ones(3), np.zeros(2), np.eye(3))
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        mahalanobis(np.ones(3, int), np.zeros(3), np.eye(3))


def test_mahalanobis_vjp_and_adapters(rng):
    d = 3
    x = rng.standard_normal((4, d))
    mu = rng.standard_normal(d)
    S = _spd(rng, d)
    for sq in (False, True):
        check_vjp("spd.mahalanobis", x, mu, S, None, opts={"squared": sq})
        check_vjp("spd.mahalanobis", x, mu, None, np.linalg.inv(S), opts={"squared": sq})
    covs = _spd(rng, d, (4,))
    check_vjp("spd.mahalanobis", x, mu[None], covs, None)
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    import optnorm.jax as onj
    import optnorm.torch as ont

    args = [torch.tensor(a, requires_grad=True) for a in (x, mu, S)]
    # the covariance is validated symmetric: gradcheck's one-entry perturbations go through its symmetric part
    assert torch.autograd.gradcheck(lambda a, b, c: ont.mahalanobis(a, b, (c + c.T) / 2), args)
    ja = [jax.numpy.asarray(a) for a in (x, mu, S)]
    check_grads(lambda a, b, c: onj.mahalanobis(a, b, (c + c.T) / 2), ja, order=1, modes=["rev"])
    y = jax.jit(lambda a, b, c: onj.mahalanobis(a, b, c))(*ja)
    assert y.shape == (4,)


def test_gaussian_fit_tied_matches_lda(xp, rng):
    sk = pytest.importorskip("sklearn.covariance")
    x = np.concatenate([rng.standard_normal((40, 3)) + 3 * c for c in range(3)])
    lab = np.repeat(np.arange(3), 40)
    fit = gaussian_fit(xp.asarray(x), xp.asarray(lab))
    means = np.stack([x[lab == c].mean(0) for c in range(3)])
    xc = x - means[lab]
    assert_close(fit.means, means, rtol=1e-12, xp=xp)
    assert_close(fit.covariance, xc.T @ xc / len(x), rtol=1e-10, xp=xp)
    assert_close(fit.precision, np.linalg.inv(xc.T @ xc / len(x)), rtol=1e-8, xp=xp)
    assert_close(fit.cholesky, np.linalg.cholesky(xc.T @ xc / len(x)), rtol=1e-10, xp=xp)
    emp = sk.EmpiricalCovariance(assume_centered=True).fit(xc)
    assert_close(fit.covariance, emp.covariance_, rtol=1e-10, xp=xp)
    # scores: sklearn's mahalanobis is squared
    q = rng.standard_normal((5, 3))
    d2 = fit.mahalanobis(xp.asarray(q), squared=True)
    ref = np.stack([sk.EmpiricalCovariance(assume_centered=True).fit(xc).mahalanobis(q - means[c])
                    for c in range(3)], -1)
    assert_close(d2, ref, rtol=1e-8, xp=xp)
    assert_close(fit.score(xp.asarray(q)), (-ref).max(-1), rtol=1e-8, xp=xp)


@pytest.mark.parametrize("method", ["ledoit_wolf", "oas"])
def test_gaussian_fit_shrinkage_matches_sklearn(rng, method):
    sk = pytest.importorskip("sklearn.covariance")
    x = rng.standard_normal((30, 8)) @ rng.standard_normal((8, 8))
    fit = gaussian_fit(x, shrinkage=method)
    est = (sk.LedoitWolf if method == "ledoit_wolf" else sk.OAS)(assume_centered=True).fit(x - x.mean(0))
    assert fit.shrinkage == pytest.approx(est.shrinkage_, rel=1e-8)
    assert_close(fit.covariance, est.covariance_, rtol=1e-8)


def test_gaussian_fit_per_class_and_float_shrinkage(rng):
    x = rng.standard_normal((50, 3))
    lab = np.r_[np.zeros(20, int), np.full(30, 7)]
    fit = gaussian_fit(x, lab, tied=False, shrinkage=0.25)
    assert list(fit.classes) == [0, 7] and list(fit.counts) == [20, 30]
    for k, c in enumerate((0, 7)):
        xc = x[lab == c] - x[lab == c].mean(0)
        S = xc.T @ xc / len(xc)
        ref = 0.75 * S + 0.25 * np.trace(S) / 3 * np.eye(3)
        assert_close(fit.covariance[k], ref, rtol=1e-12)
    assert fit.mahalanobis(x[:4]).shape == (4, 2)


def test_gaussian_fit_bad_input(rng):
    with pytest.raises(ValueError, match="x must have shape"):
        gaussian_fit(np.ones(3))
    with pytest.raises(ValueError, match="labels has shape"):
        gaussian_fit(np.ones((4, 2)), np.zeros(3, int))
    with pytest.raises(TypeError, match="labels must have an integer dtype"):
        gaussian_fit(np.ones((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="shrinkage must be None, a number in \\[0, 1\\]"):
        gaussian_fit(np.ones((4, 2)), shrinkage="lw")
    with pytest.raises(ValueError, match="positive definite"):
        gaussian_fit(np.ones((4, 2)) + np.arange(4.0)[:, None])


# ---------------------------------------------------------------- hardening (issue 13)
def test_mahalanobis_validates_its_spd_matrices(rng):
    with pytest.raises(ValueError, match="mahalanobis: precision must be positive definite"):
        mahalanobis(np.ones(3), np.zeros(3), precision=np.diag([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="mahalanobis: cov is not symmetric"):
        mahalanobis(np.ones(3), np.zeros(3), np.triu(np.ones((3, 3))))
    with pytest.raises(ValueError, match="pass precision or cov, not both"):
        mahalanobis(np.ones(3), np.zeros(3), np.eye(3), np.eye(3))


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_mahalanobis_far_points_are_finite(rng):
    S = _spd(rng, 4)
    x = rng.standard_normal((5, 4))
    d = mahalanobis(x, np.zeros(4), S)
    assert_close(mahalanobis(x * 1e300, np.zeros(4), S) / 1e300, d, rtol=1e-12)    # (x - mu)^2 overflowed
    assert_close(mahalanobis(x * 1e300, np.zeros(4), precision=np.linalg.inv(S)) / 1e300, d, rtol=1e-10)
    with pytest.raises(ValueError, match="the squared distance overflows"):
        mahalanobis(x * 1e300, np.zeros(4), S, squared=True)
    from optnorm.spd.gaussian import mahalanobis_bwd, mahalanobis_fwd

    for squared, c in ((False, 1e300), (True, 1e100)):   # d(cx) = c d(x): grad_x scales by c^(k-1), grad_S by c^k
        k = 2 if squared else 1
        g = mahalanobis_bwd(mahalanobis_fwd(x, np.zeros(4), S, squared=squared)[1], np.ones(5))
        gc = mahalanobis_bwd(mahalanobis_fwd(x * c, np.zeros(4), S, squared=squared)[1], np.ones(5))
        assert_close(gc[0] / c ** (k - 1), g[0], rtol=1e-10)
        assert_close(gc[2] / c ** k, g[2], rtol=1e-10)


def test_gaussian_fit_refuses_mixed_libraries(rng):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    with pytest.raises(TypeError, match="x is numpy, labels is torch"):
        gaussian_fit(rng.standard_normal((10, 2)), torch.zeros(10, dtype=torch.int64))


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_gaussian_fit_near_the_dtype_range(rng):
    x = rng.standard_normal((30, 3))
    fit = gaussian_fit(x * 1e100)
    assert_close(fit.covariance / 1e200, gaussian_fit(x).covariance, rtol=1e-12)
    with pytest.raises(ValueError, match="gaussian_fit: the covariance of x overflows"):
        gaussian_fit(x * 1e300)
    with pytest.raises(ValueError, match="gaussian_fit: the covariance fitted to x is not positive definite"):
        gaussian_fit(x * 1e-300)                         # underflows to zero: refused, not a NaN precision
