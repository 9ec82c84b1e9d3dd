"""linear_assignment against scipy.optimize.linear_sum_assignment; sinkhorn_normalize against a loop reference."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from optnorm._lib import compat
from optnorm.ot import linear_assignment, sinkhorn_normalize
from optnorm.testing import assert_close, check_vjp


@pytest.mark.parametrize("maximize", [False, True])
def test_linear_assignment_matches_scipy(xp, rng, maximize):
    C = rng.standard_normal((2, 3, 5, 7))
    perm, total = linear_assignment(xp.asarray(C), maximize=maximize)
    assert tuple(perm.shape) == (2, 3, 5) and tuple(total.shape) == (2, 3)
    p = compat.to_numpy(perm)
    for a in range(2):
        for b in range(3):
            r, c = linear_sum_assignment(C[a, b], maximize=maximize)
            assert np.array_equal(p[a, b][r], c)
            assert_close(total[a, b], C[a, b][r, c].sum(), rtol=1e-12, xp=xp)


def test_linear_assignment_square_is_permutation_and_float32(rng):
    C = rng.random((6, 6)).astype(np.float32)
    perm, total = linear_assignment(C)
    assert sorted(perm.tolist()) == list(range(6))
    assert total.dtype == np.float32
    # brute force over all permutations
    import itertools

    best = min(sum(C[i, s[i]] for i in range(6)) for s in itertools.permutations(range(6)))
    assert float(total) == pytest.approx(best, rel=1e-6)


def test_linear_assignment_more_rows(rng):
    C = rng.random((5, 3))
    with pytest.raises(ValueError, match="cost has more rows than columns"):
        linear_assignment(C)
    perm, total = linear_assignment(C, allow_more_rows=True)
    r, c = linear_sum_assignment(C)
    assert (perm == -1).sum() == 2
    assert np.array_equal(perm[r], c)
    assert float(total) == pytest.approx(C[r, c].sum())


def test_linear_assignment_bad_input():
    with pytest.raises(TypeError, match="cost must have a real floating dtype"):
        linear_assignment(np.ones((3, 3), int))
    with pytest.raises(ValueError, match="cost must have shape"):
        linear_assignment(np.ones(3))
    with pytest.raises(ValueError, match="cost contains NaN"):
        linear_assignment(np.array([[1.0, np.nan], [0.0, 1.0]]))


def _ref_sinkhorn(la, n_iter, tau):
    x = np.array(la, np.float64) / tau
    for _ in range(n_iter):
        for i in range(x.shape[-2]):
            x[..., i, :] -= np.log(np.exp(x[..., i, :]).sum(-1))[..., None] if x.ndim > 2 else np.log(
                np.exp(x[i, :]).sum())
        for j in range(x.shape[-1]):
            x[..., :, j] -= np.log(np.exp(x[..., :, j]).sum(-1))[..., None] if x.ndim > 2 else np.log(
                np.exp(x[:, j]).sum())
    return np.exp(x)


def test_sinkhorn_normalize_matches_reference(xp, rng):
    la = rng.standard_normal((2, 4, 4))
    P = sinkhorn_normalize(xp.asarray(la), n_iter=7, tau=0.5)
    assert_close(P, _ref_sinkhorn(la, 7, 0.5), rtol=1e-10, xp=xp)
    Pn = sinkhorn_normalize(xp.asarray(la), n_iter=200, tau=0.5)
    assert_close(xp.sum(Pn, axis=-1), np.ones((2, 4)), rtol=1e-6, xp=xp)
    assert_close(xp.sum(Pn, axis=-2), np.ones((2, 4)), rtol=1e-12, xp=xp)


def test_sinkhorn_small_tau_approaches_assignment(rng):
    la = rng.standard_normal((6, 6))
    P = sinkhorn_normalize(la, n_iter=500, tau=0.02)
    perm, _ = linear_assignment(la, maximize=True)
    assert np.array_equal(P.argmax(-1), perm)


def test_gumbel_seeded(rng):
    la = rng.standard_normal((5, 5))
    a = sinkhorn_normalize(la, gumbel_noise=True, seed=3)
    b = sinkhorn_normalize(la, gumbel_noise=True, seed=3)
    c = sinkhorn_normalize(la, gumbel_noise=True, seed=4)
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_sinkhorn_vjp_and_adapters(rng):
    la = rng.standard_normal((2, 4, 4))
    check_vjp("ot.sinkhorn_normalize", la, opts={"n_iter": 5, "tau": 0.7})
    check_vjp("ot.sinkhorn_normalize", la[0], opts={"n_iter": 3, "gumbel_noise": True, "seed": 1})
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    import optnorm.jax as onj
    import optnorm.torch as ont

    t = torch.tensor(la[0], requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: ont.sinkhorn_normalize(a, n_iter=4, tau=0.8), (t,))
    check_grads(lambda a: onj.sinkhorn_normalize(a, n_iter=4, tau=0.8), (jax.numpy.asarray(la[0]),), order=1,
                modes=["rev"])
    y = jax.jit(lambda a: onj.sinkhorn_normalize(a, n_iter=4))(jax.numpy.asarray(la))
    assert y.shape == la.shape


def test_sinkhorn_bad_input():
    with pytest.raises(ValueError, match="log_alpha has shape"):
        sinkhorn_normalize(np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"tau must be in \(0, inf\)"):
        sinkhorn_normalize(np.ones((3, 3)), tau=0.0)
    with pytest.raises(ValueError, match=r"n_iter must be in \[1, inf\)"):
        sinkhorn_normalize(np.ones((3, 3)), n_iter=0)


def test_sinkhorn_normalize_rejects_nan_and_stays_finite_at_extremes(rng):
    """Issue #13: NaN in sinkhorn_normalize was not rejected."""
    la = rng.standard_normal((4, 4))
    bad = la.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="log_alpha contains NaN"):
        sinkhorn_normalize(bad)
    for s in (1e300, 1e-300):
        P = sinkhorn_normalize(la * s, n_iter=5)
        assert np.all(np.isfinite(P))
        assert_close(P.sum(axis=0), np.ones(4), rtol=1e-12)
    with pytest.raises(ValueError, match="tau must be finite"):
        sinkhorn_normalize(la, tau=float("inf"))
    with pytest.raises(TypeError, match="seed"):
        sinkhorn_normalize(la, gumbel_noise=True, seed="abc")


def test_linear_assignment_extreme_costs(rng):
    C = rng.standard_normal((6, 6))
    perm, total = linear_assignment(C)
    for s in (1e300, 1e-300):
        p2, t2 = linear_assignment(C * s)
        assert np.array_equal(p2, perm) and np.isfinite(t2)
