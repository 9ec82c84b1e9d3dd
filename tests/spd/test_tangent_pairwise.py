"""tangent_space / untangent_space against pyRiemann (ordering and weights), pairwise_distances (Numba kernels and
the generic path against pyRiemann and each other), nearest_mean against pyRiemann's MDM, covariance layouts."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import optnorm
import optnorm.spd as spd
from optnorm.testing import assert_close

from .helpers import random_spd, to

PYR = {"airm": "riemann", "lem": "logeuclid", "log_cholesky": "logchol", "bw": "wasserstein"}


@pytest.mark.parametrize("name", list(PYR))
def test_tangent_space_matches_pyriemann(rng, name):
    ts = pytest.importorskip("pyriemann.geometry.tangentspace", reason="pyRiemann is not installed")
    X = random_spd(rng, (9,), 5)
    C = random_spd(rng, (), 5)
    T = spd.tangent_space(X, C, metric=name)
    assert T.shape == (9, 15)
    assert_close(T, ts.tangent_space(X, C, metric=PYR[name]), rtol=1e-12, atol=1e-13)
    assert_close(spd.tangent_space(X, C, metric=PYR[name]), T, rtol=0)          # pyRiemann's names as aliases
    assert_close(spd.untangent_space(T, C, metric=name), ts.untangent_space(T, C, metric=PYR[name]), rtol=1e-11)
    assert_close(spd.untangent_space(T, C, metric=name), X, rtol=1e-10)


def test_tangent_space_estimator_matches(rng):
    """pyRiemann's TangentSpace estimator (fit: the AIRM mean as reference; transform) end to end."""
    tsm = pytest.importorskip("pyriemann.tangentspace", reason="pyRiemann is not installed")
    X = random_spd(rng, (20,), 4)
    est = tsm.TangentSpace(metric="riemann").fit(X)
    C = spd.airm().mean(X, tol=1e-12).mean
    assert_close(C, est.reference_, rtol=1e-7)          # pyRiemann's mean stops at its tol 1e-8
    assert_close(spd.tangent_space(X, est.reference_), est.transform(X), rtol=1e-12, atol=1e-13)


def test_tangent_vector_norm_is_the_airm_distance(xp, rng):
    X = random_spd(rng, (4,), 5)
    C = random_spd(rng, (), 5)
    T = spd.tangent_space(to(xp, X), to(xp, C))
    n = optnorm._lib.compat.to_numpy(T)
    assert_close(np.linalg.norm(n, axis=-1), spd.airm_distance(X, C), rtol=1e-10)
    assert_close(spd.untangent_space(T, to(xp, C)), X, rtol=1e-9, xp=xp)


def test_upper_order_and_weights():
    S = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 5.0], [3.0, 5.0, 6.0]])
    T = spd.tangent_space(spd.expm(S), np.eye(3))
    r2 = np.sqrt(2)
    assert_close(T, [1.0, 2 * r2, 3 * r2, 4.0, 5 * r2, 6.0], rtol=1e-10)


@pytest.mark.parametrize("name", list(PYR))
def test_pairwise_matches_pyriemann(rng, path, name):
    dist = pytest.importorskip("pyriemann.geometry.distance", reason="pyRiemann is not installed")
    X = random_spd(rng, (12,), 5)
    Y = random_spd(rng, (7,), 5)
    D = spd.pairwise_distances(X, Y, metric=name)
    assert D.shape == (12, 7)
    assert_close(D, dist.pairwise_distance(X, Y, metric=PYR[name]), rtol=1e-11)
    S = spd.pairwise_distances(X, metric=name)
    assert_close(S, dist.pairwise_distance(X, metric=PYR[name]), rtol=1e-11, atol=1e-13)
    assert np.all(np.diag(S) == 0) and np.array_equal(S, S.T)
    assert_close(spd.pairwise_distances(X, Y, metric=name, squared=True), D ** 2, rtol=1e-12)


@pytest.mark.parametrize("name", list(PYR))
def test_pairwise_on_every_backend(xp, rng, name):
    X = random_spd(rng, (5,), 3)
    Y = random_spd(rng, (4,), 3)
    D = spd.pairwise_distances(to(xp, X), to(xp, Y), metric=name)
    ref = {"airm": spd.airm_distance, "lem": spd.lem_distance, "bw": spd.bw_distance,
           "log_cholesky": spd.log_cholesky().distance}[name](X[:, None], Y[None])
    assert_close(D, ref, rtol=1e-10, xp=xp)


def test_pairwise_float32_and_accuracy_of_close_pairs(rng, path):
    X = random_spd(rng, (6,), 8, cond=1e8)
    for name in PYR:
        S = spd.pairwise_distances(X, metric=name)
        assert np.all(np.diag(S) == 0)
        D = spd.pairwise_distances(X, X.copy(), metric=name)        # Y given: the diagonal is computed
        assert float(np.max(np.diag(D))) <= 1e-12 * float(np.linalg.norm(X, axis=(-2, -1)).max())
    D32 = spd.pairwise_distances(X[:3].astype(np.float32) + np.eye(8, dtype=np.float32), metric="airm")
    assert D32.dtype == np.float32


def test_nearest_mean_matches_pyriemann_mdm(rng):
    cl = pytest.importorskip("pyriemann.classification", reason="pyRiemann is not installed")
    X0 = random_spd(rng, (30,), 4, shift=0.1)
    X1 = random_spd(rng, (30,), 4, shift=0.5)
    X = np.concatenate([X0, X1])
    y = np.r_[np.zeros(30, int), np.ones(30, int)]
    mdm = cl.MDM(metric="riemann").fit(X, y)
    g = spd.airm()
    means = np.stack([g.mean(X[y == c], tol=1e-12).mean for c in (0, 1)])
    assert_close(means, np.stack(mdm.covmeans_), rtol=1e-7)
    pred, D = spd.nearest_mean(X, means, return_distances=True)
    assert np.array_equal(pred, mdm.predict(X))
    assert_close(D, mdm.transform(X), rtol=1e-6)
    assert spd.nearest_mean(X.reshape(6, 10, 4, 4), means).shape == (6, 10)


def test_nearest_mean_ties_go_to_the_first_class():
    M = np.stack([np.eye(2), np.eye(2)])
    assert spd.nearest_mean(2 * np.eye(2), M).tolist() == 0


def test_covariance_layouts(rng):
    epochs = rng.standard_normal((5, 4, 300))          # (trials, channels, times)
    C = spd.covariance(epochs, layout="channels_times")
    assert C.shape == (5, 4, 4)
    assert_close(C, spd.covariance(np.swapaxes(epochs, -1, -2)), rtol=1e-12)
    assert_close(C, spd.covariance(epochs, axis=-1), rtol=0)
    assert_close(spd.covariance(np.swapaxes(epochs, -1, -2), layout="samples_features"), C, rtol=1e-12)
    cov = pytest.importorskip("pyriemann.geometry.covariance", reason="pyRiemann is not installed")
    for ours, theirs in (("scm", "scm"), ("ledoit_wolf", "lwf"), ("oas", "oas")):   # pyRiemann's covariances(X)
        assert_close(spd.covariance(epochs, layout="channels_times", estimator=ours),
                     cov.covariances(epochs, estimator=theirs), rtol=1e-12)
    with pytest.warns(UserWarning, match="layout='channels_times'"):
        spd.covariance(epochs)                         # the default layout reads 300 features of 4 samples
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spd.covariance(epochs, estimator="ledoit_wolf")    # shrinkage makes n < p legitimate: no warning
    with pytest.raises(ValueError, match="axis=-2 and layout='channels_times' disagree"):
        spd.covariance(epochs, axis=-2, layout="channels_times")
    with pytest.raises(ValueError, match="layout must be one of"):
        spd.covariance(epochs, layout="times_channels")


def test_bad_input(rng):
    X = random_spd(rng, (4,), 3)
    with pytest.raises(ValueError, match="pairwise_distances: Y has shape"):
        spd.pairwise_distances(X, random_spd(rng, (2,), 4))
    with pytest.raises(ValueError, match="pairwise_distances: X must be positive definite"):
        spd.pairwise_distances(X - 5 * np.eye(3))
    with pytest.raises(ValueError, match="metric must be one of"):
        spd.pairwise_distances(X, metric="euclid")
    with pytest.raises(ValueError, match="untangent_space: T has 5 entries"):
        spd.untangent_space(np.ones((2, 5)), np.eye(3))
    with pytest.raises(ValueError, match="tangent_space: reference must be positive definite"):
        spd.tangent_space(X, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="nearest_mean: means has shape|nearest_mean: .*n"):
        spd.nearest_mean(X, random_spd(rng, (2,), 4))
    with pytest.raises(ValueError, match="untangent_space: the result overflows"):
        spd.untangent_space(np.full((1, 6), 1e3), np.eye(3))
