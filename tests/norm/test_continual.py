"""AdaB2N: task_balanced_weights and adab2n_momentum, composed with batch_norm(sample_weight=) vs the official rule."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm.norm import adab2n_momentum, batch_norm, task_balanced_weights
from optnorm.testing import assert_close, check_vjp


def _official_eta(step, m, kappa):
    """The official get_eta recursion, re-typed (state carried across calls)."""
    if kappa == 0.0:
        return 1.0 / step
    if kappa == 1.0:
        return m
    eta = m ** kappa
    for _ in range(step - 1):
        eta = eta / (eta + (1 - m) ** kappa)
    return eta


@pytest.mark.parametrize("kappa", [0.0, 0.3, 0.7, 1.0])
def test_adab2n_momentum_matches_recursion(kappa):
    for t in (1, 2, 3, 10, 200):
        assert adab2n_momentum(t, 0.1, kappa) == pytest.approx(_official_eta(t, 0.1, kappa), rel=1e-12)


def test_task_balanced_weights(xp, rng):
    ids = np.array([0, 0, 0, 1, 2, 2])
    theta = rng.standard_normal(3)
    n = np.array([5.0, 3.0, 0.0])
    conc = np.exp(theta) + n
    pi = conc / conc.sum()
    counts = np.bincount(ids)
    ref = pi[ids] / counts[ids]
    w = task_balanced_weights(xp.asarray(ids), xp.asarray(theta), xp.asarray(n))
    assert_close(w, ref, rtol=1e-12, xp=xp)
    w0 = task_balanced_weights(xp.asarray(ids))
    assert_close(w0, (np.full(3, 1 / 3))[ids] / counts[ids], rtol=1e-12, xp=xp)


def test_composition_with_batch_norm_matches_official_forward(rng):
    """batch_norm(sample_weight=task_balanced_weights, momentum=adab2n_momentum) vs AdaB2N.training_forward."""
    N, C = 6, 3
    x = rng.standard_normal((N, C, 4, 4))
    ids = np.array([0, 0, 0, 0, 1, 2])
    theta, n = rng.standard_normal(3), np.array([2.0, 1.0, 1.0])
    rm, rv = rng.standard_normal(C), rng.random(C) + 0.5
    eta = adab2n_momentum(3, 0.1, 0.5)
    # official forward, re-typed with NumPy
    conc = np.exp(theta) + n
    sw = (conc / conc.sum())[ids] / np.bincount(ids)[ids]
    mean = x.mean((2, 3)).T @ sw
    var = ((x - mean[None, :, None, None]) ** 2).mean((2, 3)).T @ sw
    y_ref = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    rm_ref = rm + eta * (mean - rm)
    w = task_balanced_weights(ids, theta, n)
    y, nrm, nrv = batch_norm(x, rm, rv, sample_weight=w, momentum=eta)
    assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    assert_close(nrm, rm_ref, rtol=1e-12)
    # running variance: batch_norm applies its reliability-weight unbiasing factor k >= 1
    k = 1.0 / (1.0 - np.sum((w / w.sum()) ** 2) / 16)
    assert_close(nrv, (1 - eta) * rv + eta * k * var, rtol=1e-10)


def test_vjp_and_adapters(rng):
    ids = np.array([0, 1, 1, 2, 2, 2])
    theta, n = rng.standard_normal(3), rng.random(3) * 4
    check_vjp("norm.task_balanced_weights", ids, theta, n)
    torch = pytest.importorskip("torch")
    import optnorm.torch as ont

    t = torch.tensor(theta, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: ont.task_balanced_weights(torch.tensor(ids), a, torch.tensor(n)), (t,))
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    import optnorm.jax as onj

    J = jax.numpy.asarray
    check_grads(lambda a: onj.task_balanced_weights(J(ids), J(a), J(n)), (J(theta),), order=1, modes=["rev"])


def test_bad_input():
    with pytest.raises(TypeError, match="task_ids must have an integer dtype"):
        task_balanced_weights(np.zeros(3))
    with pytest.raises(ValueError, match="task_ids must be in \\[0, 2\\)"):
        task_balanced_weights(np.array([0, 2]), np.zeros(2))
    with pytest.raises(ValueError, match="task_counts has shape .3,.*task_logits has t = 2"):
        task_balanced_weights(np.array([0, 1]), np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match=r"step must be in \[1, inf\)"):
        adab2n_momentum(0, 0.1, 0.5)
    with pytest.raises(ValueError, match="kappa must be in"):
        adab2n_momentum(1, 0.1, 1.5)
    with pytest.raises(ValueError, match=r"momentum must be in \(0, 1\]"):
        adab2n_momentum(1, 0.0, 0.5)
