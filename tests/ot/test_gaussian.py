"""gaussian_wasserstein: closed form, POT, broadcasting, VJP, adapters, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from optnorm.ot import gaussian_wasserstein
from optnorm.testing import assert_close, check_vjp


def _spd(rng, d, *batch, cond=10.0):
    a = rng.standard_normal((*batch, d, d))
    return a @ np.swapaxes(a, -1, -2) / d + np.eye(d) / cond


def _ref(m1, C1, m2, C2):
    """float64 reference with scipy.linalg.sqrtm (independent of the eigh path)."""
    s1 = np.real(scipy.linalg.sqrtm(C1))
    mid = np.real(scipy.linalg.sqrtm(s1 @ C2 @ s1))
    return max(float(np.sum((m1 - m2) ** 2) + np.trace(C1 + C2 - 2 * mid)), 0.0)


def test_matches_reference_and_pot(xp, rng):
    ot = pytest.importorskip("ot")
    d, B = 4, 3
    m1, m2 = rng.standard_normal((B, d)), rng.standard_normal((B, d))
    C1, C2 = _spd(rng, d, B), _spd(rng, d, B)
    y = gaussian_wasserstein(xp.asarray(m1), xp.asarray(C1), xp.asarray(m2), xp.asarray(C2))
    ref = np.array([np.sqrt(_ref(m1[i], C1[i], m2[i], C2[i])) for i in range(B)])
    assert_close(y, ref, rtol=1e-10)
    pot = ot.gaussian.bures_wasserstein_distance(m1, m2, C1, C2, paired=True)
    assert_close(y, np.asarray(pot), rtol=1e-8)
    y2 = gaussian_wasserstein(xp.asarray(m1), xp.asarray(C1), xp.asarray(m2), xp.asarray(C2), squared=True)
    assert_close(y2, ref ** 2, rtol=1e-10)


def test_float32_keeps_dtype(xp, rng):
    d = 3
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
    C1, C2 = _spd(rng, d), _spd(rng, d)
    args = [xp.asarray(a.astype(np.float32)) for a in (m1, C1, m2, C2)]
    y = gaussian_wasserstein(*args)
    assert y.dtype == xp.float32
    assert_close(y, np.sqrt(_ref(m1, C1, m2, C2)), rtol=2e-4)


def test_broadcasting_one_against_many(xp, rng):
    d = 3
    m1, C1 = rng.standard_normal(d), _spd(rng, d)
    m2, C2 = rng.standard_normal((2, 5, d)), _spd(rng, d, 2, 5)
    y = gaussian_wasserstein(xp.asarray(m1), xp.asarray(C1), xp.asarray(m2), xp.asarray(C2))
    assert tuple(y.shape) == (2, 5)
    ref = np.array([[np.sqrt(_ref(m1, C1, m2[i, j], C2[i, j])) for j in range(5)] for i in range(2)])
    assert_close(y, ref, rtol=1e-10)


def test_one_dimensional_case_and_identity(rng):
    # d = 1: W2^2 = (m1 - m2)^2 + (s1 - s2)^2
    y = gaussian_wasserstein(np.array([1.0]), np.array([[4.0]]), np.array([-1.0]), np.array([[9.0]]), squared=True)
    assert_close(y, 4.0 + 1.0, rtol=1e-12)
    C = _spd(rng, 5)
    m = rng.standard_normal(5)
    assert float(gaussian_wasserstein(m, C, m, C)) < 1e-6
    # singular (PSD) covariance: no NaN
    v = rng.standard_normal((3, 1))
    Cs = v @ v.T
    y = gaussian_wasserstein(np.zeros(3), Cs, np.zeros(3), np.eye(3))
    nv = np.linalg.norm(v)  # C1^{1/2} = v v^T / |v|, so W2^2 = |v|^2 + 3 - 2 |v|
    assert np.isfinite(y) and abs(float(y) ** 2 - (nv ** 2 + 3 - 2 * nv)) < 1e-10


@pytest.mark.parametrize("squared", [False, True])
def test_vjp_finite_differences(rng, squared):
    d = 3
    m1, m2 = rng.standard_normal((2, d)), rng.standard_normal((2, d))
    C1, C2 = _spd(rng, d, 2), _spd(rng, d, 2)
    check_vjp("ot.gaussian_wasserstein", m1, C1, m2, C2, opts={"squared": squared}, rtol=1e-6)


def test_vjp_broadcast(rng):
    d = 3
    m1, C1 = rng.standard_normal(d), _spd(rng, d)
    m2, C2 = rng.standard_normal((4, d)), _spd(rng, d, 4)
    check_vjp("ot.gaussian_wasserstein", m1, C1, m2, C2, rtol=1e-6)


def test_torch_gradcheck(rng):
    torch = pytest.importorskip("torch")
    import optnorm.torch as ont

    d = 3
    arrs = [rng.standard_normal((2, d)), _spd(rng, d, 2), rng.standard_normal((2, d)), _spd(rng, d, 2)]
    ts = [torch.tensor(a, requires_grad=True) for a in arrs]
    # symmetric perturbations only matter: wrap the covariances in a symmetrisation
    f = lambda m1, C1, m2, C2: ont.gaussian_wasserstein(m1, C1, m2, C2)
    assert torch.autograd.gradcheck(f, ts)


def test_jax_check_grads(rng):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.test_util import check_grads

    import optnorm.jax as onj

    d = 3
    arrs = [jnp.asarray(a) for a in (rng.standard_normal((2, d)), _spd(rng, d, 2), rng.standard_normal((2, d)),
                                     _spd(rng, d, 2))]
    check_grads(lambda *a: onj.gaussian_wasserstein(*a, squared=True), arrs, order=1, modes=["rev"])
    g = jax.jit(jax.grad(lambda m1, C1, m2, C2: onj.gaussian_wasserstein(m1, C1, m2, C2).sum()))(*arrs)
    assert np.all(np.isfinite(np.asarray(g)))


def test_bad_input(rng):
    C = np.eye(3)
    m = np.zeros(3)
    with pytest.raises(ValueError, match="m2"):
        gaussian_wasserstein(m, C, np.zeros(4), C)
    with pytest.raises(ValueError, match="C1"):
        gaussian_wasserstein(m, np.ones((3, 2)), m, C)
    with pytest.raises(TypeError, match="m1"):
        gaussian_wasserstein(np.zeros(3, int), C, m, C)
    with pytest.raises(ValueError, match="C2 contains NaN"):
        gaussian_wasserstein(m, C, m, np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="broadcast"):
        gaussian_wasserstein(np.zeros((2, 3)), C, np.zeros((5, 3)), C)
