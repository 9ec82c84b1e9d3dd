"""covariance (vs scikit-learn), augmented_covariance (vs a loop), partial_correlation (vs inverse, Erb 2020)."""
from __future__ import annotations

import numpy as np
import pytest

import optnorm.spd as spd
from optnorm.testing import assert_close

from .helpers import to


def _sklearn():
    return pytest.importorskip("sklearn.covariance", reason="scikit-learn is not installed")


@pytest.mark.parametrize("n,p", [(40, 6), (8, 12), (300, 3)])
@pytest.mark.parametrize("assume_centered", [False, True])
def test_shrinkage_matches_sklearn(xp, rng, n, p, assume_centered):
    skc = _sklearn()
    X = rng.standard_normal((n, p)) @ rng.standard_normal((p, p)) + 0.5
    for est, cls in (("ledoit_wolf", skc.LedoitWolf), ("oas", skc.OAS), ("scm", skc.EmpiricalCovariance)):
        C, rho = spd.covariance(to(xp, X), estimator=est, assume_centered=assume_centered, return_shrinkage=True)
        ref = cls(assume_centered=assume_centered).fit(X)
        assert_close(C, ref.covariance_, rtol=1e-10, atol=1e-12, xp=xp)
        assert_close(rho, getattr(ref, "shrinkage_", 0.0), rtol=1e-10, atol=1e-14, xp=xp)


def test_batched_axis_and_fixed_shrinkage(rng):
    X = rng.standard_normal((3, 5, 50))        # (epochs, channels, times)
    C = spd.covariance(X, axis=-1, shrinkage=0.2)
    for i in range(3):
        S = np.cov(X[i], bias=True)
        ref = 0.8 * S + 0.2 * np.trace(S) / 5 * np.eye(5)
        assert_close(C[i], ref, rtol=1e-12)
    C32 = spd.covariance(X.astype(np.float32), axis=-1, estimator="oas")
    assert C32.dtype == np.float32
    assert_close(C32, spd.covariance(X, axis=-1, estimator="oas"), rtol=1e-4, check_dtype=False)


def test_augmented_covariance(xp, rng):
    X = rng.standard_normal((2, 3, 60))
    order, lag = 4, 3
    A = spd.augmented_covariance(to(xp, X), order=order, lag=lag)
    L = 60 - order * lag
    ref = []
    for x in X:
        E = np.concatenate([x[:, k * lag: k * lag + L] for k in range(order)], axis=0)
        ref.append(np.cov(E, bias=True))
    assert_close(A, np.stack(ref), rtol=1e-12, atol=1e-14, xp=xp)
    assert tuple(A.shape) == (2, 12, 12)
    # order 1 is the plain covariance of the trimmed signal
    assert_close(spd.augmented_covariance(X, order=1, lag=2), spd.covariance(X[..., :58], axis=-1), rtol=1e-12)


def test_partial_correlation(xp, rng):
    G = rng.standard_normal((3, 5, 9))
    C = G @ np.swapaxes(G, -1, -2) / 9
    R = spd.partial_correlation(to(xp, C))
    P = np.linalg.inv(C)
    d = 1 / np.sqrt(np.diagonal(P, axis1=-2, axis2=-1))
    ref = -d[..., :, None] * P * d[..., None, :]
    ref[..., np.arange(5), np.arange(5)] = 1.0
    assert_close(R, ref, rtol=1e-10, atol=1e-12, xp=xp)


def test_compositional_partial_correlation_is_reference_independent(rng):
    """clr partial correlations equal the alr ones (any reference part) for the other parts (Erb 2020)."""
    D = 5
    x = np.exp(rng.standard_normal((400, D)) @ rng.standard_normal((D, D)) * 0.3)
    x /= x.sum(1, keepdims=True)
    lx = np.log(x)
    R = spd.partial_correlation(np.cov(lx.T), compositional=True)
    for ref_part in (D - 1, 0):
        keep = [i for i in range(D) if i != ref_part]
        alr = lx[:, keep] - lx[:, [ref_part]]
        Ra = spd.partial_correlation(np.cov(alr.T))
        assert_close(R[np.ix_(keep, keep)], Ra, rtol=1e-8, atol=1e-10)
    # invariant to the closure constant and to the log base shift (the clr projection removes it)
    assert_close(spd.partial_correlation(np.cov((lx + 3.0).T), compositional=True), R, rtol=1e-10)


def test_bad_input(rng):
    with pytest.raises(ValueError, match="estimator must be one of"):
        spd.covariance(np.ones((3, 2)), estimator="mcd")
    with pytest.raises(ValueError, match="shrinkage=0.5 is only for estimator='scm'"):
        spd.covariance(np.ones((3, 2)), estimator="oas", shrinkage=0.5)
    with pytest.raises(ValueError, match="shrinkage must be in"):
        spd.covariance(np.ones((3, 2)), shrinkage=1.5)
    with pytest.raises(TypeError, match="X must have a real floating dtype"):
        spd.covariance(np.ones((3, 2), dtype=np.int32))
    with pytest.raises(ValueError, match="order \\* lag = 20 leaves 0 samples"):
        spd.augmented_covariance(np.ones((2, 20)), order=4, lag=5)
    with pytest.raises(ValueError, match="lag must be in \\[1, inf\\)"):
        spd.augmented_covariance(np.ones((2, 20)), order=2, lag=0)
    with pytest.raises(ValueError, match="C must be positive semi-definite"):
        spd.partial_correlation(np.diag([1.0, -1.0]))
    with pytest.raises(ValueError, match="axis must be one of the last two"):
        spd.covariance(np.ones((2, 3, 4)), axis=0)


# ---------------------------------------------------------------- hardening (issue 13)
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("estimator", ["scm", "ledoit_wolf", "oas"])
def test_covariance_scales_before_squaring(rng, estimator):
    X = rng.standard_normal((40, 3))
    C, rho = spd.covariance(X, estimator=estimator, return_shrinkage=True)
    C_big, rho_big = spd.covariance(X * 1e150, estimator=estimator, return_shrinkage=True)
    assert_close(C_big / 1e300, C, rtol=1e-12)          # the squares of 1e150 overflowed (||x||^4 in Ledoit-Wolf)
    assert_close(rho_big, rho, rtol=1e-12)
    with pytest.raises(ValueError, match="covariance: the covariance of X overflows float64"):
        spd.covariance(X * 1e300, estimator=estimator)  # the answer itself (1e600) is beyond float64
    with pytest.raises(ValueError, match="the covariance of X overflows float32"):
        spd.covariance((X * 1e30).astype(np.float32), estimator=estimator)


def test_partial_correlation_is_scale_invariant(rng):
    C = np.cov(rng.standard_normal((3, 50)))
    assert_close(spd.partial_correlation(C * 1e300), spd.partial_correlation(C), rtol=1e-12)
    assert_close(spd.partial_correlation(C * 1e-300), spd.partial_correlation(C), rtol=1e-12)
