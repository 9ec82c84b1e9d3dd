"""Riemannian batch norm: prescribed output mean/variance under each metric, running statistics, eval mode,
VJPs (X, bias, weight, M) against finite differences, backends, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sl

import optnorm.spd as spd
from optnorm.testing import assert_close, check_vjp

from .helpers import random_spd, ref_funm, to

CASES = [("bw", {}, False), ("bw", {"power": 0.5}, False), ("gbw", {}, True), ("gbw", {"power": 0.7}, True),
         ("airm", {}, False), ("lem", {}, False)]


@pytest.mark.parametrize("metric,kw,use_m", CASES)
def test_output_has_prescribed_mean_and_variance(rng, metric, kw, use_m):
    n = 3
    X, B, M = random_spd(rng, (16,), n), random_spd(rng, (), n), random_spd(rng, (), n)
    w = np.array(0.7)
    MM = M if use_m else None
    Y, _ = spd.riemannian_batch_norm(X, bias=B, weight=w, M=MM, metric=metric, mean_iter=60, eps=1e-12, **kw)
    G, v = spd.rbn_statistics(Y, metric=metric, M=MM, mean_iter=60, **kw)
    if metric in ("bw", "gbw"):   # statistics live in the whitened space M^{-1/2} X^p M^{-1/2}
        p = kw.get("power", 1.0)
        Mh = np.eye(n) if MM is None else ref_funm(M, lambda x: x ** -0.5)
        target = Mh @ ref_funm(B, lambda x: x ** p) @ Mh
    else:
        target = B
    assert_close(G, target, rtol=1e-9, atol=1e-10)
    assert_close(v, w ** 2, rtol=1e-8)
    # independent check of the variance with the metric object / distance functions
    if metric == "bw" and not kw:
        d2 = spd.bw_distance(Y, B, squared=True)
        assert_close(np.mean(d2), w ** 2, rtol=1e-8)
        assert_close(spd.bures_wasserstein().mean(Y, tol=1e-13).mean, B, rtol=1e-8)
    if metric == "gbw" and not kw:
        g = spd.bures_wasserstein(M)
        assert_close(np.mean(g.distance(Y, B, squared=True)), w ** 2, rtol=1e-8)
    if metric == "airm":
        assert_close(np.mean(spd.airm_distance(Y, B, squared=True)), w ** 2, rtol=1e-8)
    if metric == "lem":
        assert_close(np.mean(spd.lem_distance(Y, B, squared=True)), w ** 2, rtol=1e-8)


@pytest.mark.parametrize("metric,kw,use_m", CASES)
def test_rbn_vjp(rng, metric, kw, use_m):
    n = 3
    X, B, M = random_spd(rng, (2, 2), n, shift=0.3), random_spd(rng, (), n), random_spd(rng, (), n)
    MM = M if use_m else None
    G, v = spd.rbn_statistics(X, metric=metric, M=MM, mean_iter=2, **kw)
    for bias in (None, B, np.eye(n)):          # the identity bias has repeated eigenvalues
        check_vjp("rbn_normalize", X, G, v, bias, np.array(1.3), MM, opts=dict(metric=metric, check=False, **kw),
                  atol=1e-6)


def test_running_statistics_and_eval(rng):
    n = 3
    X = random_spd(rng, (8,), n)
    Y, st = spd.riemannian_batch_norm(X, metric="bw", momentum=0.25)
    G, v = spd.rbn_statistics(X, metric="bw")
    bw = spd.bures_wasserstein()
    assert_close(st.mean, bw.geodesic(np.eye(n), G, 0.25), rtol=1e-10)
    assert_close(st.var, 0.75 + 0.25 * v, rtol=1e-12)
    # eval mode uses the running statistics and leaves the state alone
    Ye, st2 = spd.riemannian_batch_norm(X, st, metric="bw", training=False)
    assert st2 is st
    assert_close(Ye, spd.rbn_normalize(X, st.mean, st.var, metric="bw"), rtol=1e-12)
    # AIRM running mean follows the AIRM geodesic, LEM the log-domain average
    _, sa = spd.riemannian_batch_norm(X, metric="airm", momentum=0.5)
    Ga, _ = spd.rbn_statistics(X, metric="airm")
    assert_close(sa.mean, ref_funm(Ga, np.sqrt), rtol=1e-10)
    _, sl_ = spd.riemannian_batch_norm(X, metric="lem", momentum=0.5)
    Gl, _ = spd.rbn_statistics(X, metric="lem")
    assert_close(sl_.mean, ref_funm(Gl, np.sqrt), rtol=1e-10)


def test_one_step_mean_matches_reference_recipe(rng):
    """Default mean_iter=1: one BW fixed-point step from the arithmetic mean (GBWBN's BaryGeom)."""
    X = random_spd(rng, (6,), 3)
    P = X.mean(0)
    H = np.real(sl.sqrtm(P))
    S = np.mean([np.real(sl.sqrtm(H @ x @ H)) for x in X], axis=0)
    Hi = np.linalg.inv(H)
    G, _ = spd.rbn_statistics(X, metric="bw")
    assert_close(G, Hi @ S @ S @ Hi, rtol=1e-10)


@pytest.mark.parametrize("metric", ["bw", "airm", "lem"])
def test_backends(xp, rng, metric):
    X = random_spd(rng, (5,), 3)
    B = random_spd(rng, (), 3)
    Y, st = spd.riemannian_batch_norm(to(xp, X), bias=to(xp, B), weight=to(xp, np.array(0.5)), metric=metric)
    Yr, str_ = spd.riemannian_batch_norm(X, bias=B, weight=np.array(0.5), metric=metric)
    assert_close(Y, Yr, rtol=1e-9, atol=1e-11)
    assert_close(st.mean, str_.mean, rtol=1e-9)
    Y32, _ = spd.riemannian_batch_norm(to(xp, X.astype(np.float32)), metric=metric)
    assert Y32.dtype == xp.float32


def test_bad_input(rng):
    X = random_spd(rng, (4,), 3)
    with pytest.raises(ValueError, match="M is required for metric='gbw'"):
        spd.riemannian_batch_norm(X, metric="gbw")
    with pytest.raises(ValueError, match="M is only used by metric='gbw'"):
        spd.riemannian_batch_norm(X, metric="bw", M=np.eye(3))
    with pytest.raises(ValueError, match="M must be positive definite"):
        spd.riemannian_batch_norm(X, metric="gbw", M=np.diag([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="power must be a finite non-zero"):
        spd.riemannian_batch_norm(X, power=0.0)
    with pytest.raises(ValueError, match="metric must be one of"):
        spd.riemannian_batch_norm(X, metric="euclid")
    with pytest.raises(ValueError, match="X must be a batch"):
        spd.riemannian_batch_norm(X[0])
    with pytest.raises(ValueError, match="X must be positive definite"):
        spd.riemannian_batch_norm(-X)
    with pytest.raises(ValueError, match="bias has shape"):
        spd.riemannian_batch_norm(X, bias=np.eye(4))
    with pytest.raises(ValueError, match="momentum must be in"):
        spd.riemannian_batch_norm(X, momentum=2.0)
    with pytest.raises(ValueError, match="eps must be > 0"):
        spd.riemannian_batch_norm(X, eps=0.0)
    with pytest.raises(ValueError, match="state.mean has shape"):
        spd.riemannian_batch_norm(X, spd.RBNState(np.eye(2), np.array(1.0)))
