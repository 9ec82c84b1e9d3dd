"""Hutchinson diagonal and trace estimators: exactness on diagonal Hessians, unbiasedness, seeding, HAWQ-V2 traces."""
from __future__ import annotations

import numpy as np
import pytest

import optnorm.optim as oo
from optnorm._lib.compat import to_numpy
from optnorm.testing import assert_close


def _sym(rng, n):
    A = rng.standard_normal((n, n))
    return A + A.T


def test_diag_exact_for_diagonal_hessian(xp, rng):
    d = rng.standard_normal(6)
    H = xp.asarray(np.diag(d))
    est = oo.hutchinson_diag(lambda v: H @ v, xp.asarray(np.zeros(6)), n_samples=1, seed=3)
    assert_close(est, d, rtol=1e-12, atol=1e-12, xp=xp)


def test_diag_is_unbiased_and_seeded(rng):
    A = _sym(rng, 8)
    f = lambda v: A @ v
    est = oo.hutchinson_diag(f, np.zeros(8), n_samples=4000, seed=0)
    off = A - np.diag(np.diag(A))
    # variance of one probe per entry is sum of squared off-diagonal entries of its row
    tol = 5 * np.sqrt((off ** 2).sum(1) / 4000)
    assert np.all(np.abs(est - np.diag(A)) < tol)
    assert np.array_equal(oo.hutchinson_diag(f, np.zeros(8), n_samples=3, seed=7),
                          oo.hutchinson_diag(f, np.zeros(8), n_samples=3, seed=7))
    assert not np.array_equal(oo.hutchinson_diag(f, np.zeros(8), seed=7, step=0),
                              oo.hutchinson_diag(f, np.zeros(8), seed=7, step=1))


def test_probes_are_rademacher_and_match_structure(xp):
    p = {"a": xp.asarray(np.zeros((3, 4))), "b": [xp.asarray(np.zeros(5, np.float32))]}
    z = oo.rademacher_like(p, seed=1)
    za = to_numpy(z["a"])
    assert set(np.unique(za).tolist()) <= {-1.0, 1.0} and za.shape == (3, 4)
    assert str(z["b"][0].dtype).endswith("float32")


def test_trace_tree_and_per_leaf(rng):
    A, B = _sym(rng, 5), _sym(rng, 3)
    params = {"a": np.zeros(5), "b": np.zeros(3)}
    hvp = lambda v: {"a": A @ v["a"], "b": B @ v["b"]}
    r = oo.hutchinson_trace(hvp, params, n_samples=3000, tol=0.0, seed=0)
    assert r.n_iter == 3000 and not r.converged
    sd = np.sqrt(2 * ((A - np.diag(np.diag(A))) ** 2).sum() / 3000)
    assert abs(r.per_leaf[0] - np.trace(A)) < 5 * sd
    assert abs(r.trace - sum(r.per_leaf)) < 1e-9
    quick = oo.hutchinson_trace(hvp, params, n_samples=500, tol=1e-2, seed=0)
    assert quick.converged and quick.n_iter < 500 and quick.errors[-1] < 1e-2


def test_trace_on_jax_with_autodiff_hvp():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    A = jnp.asarray(np.diag([1.0, 2.0, 5.0]))
    f = lambda x: 0.5 * x @ A @ x
    x = jnp.ones(3)
    hvp = lambda v: jax.jvp(jax.grad(f), (x,), (v,))[1]
    assert oo.hutchinson_trace(hvp, x, n_samples=4).trace == pytest.approx(8.0)
    d = jax.jit(lambda x, s: oo.hutchinson_diag(hvp, x, step=s))(x, 3)
    assert_close(d, [1.0, 2.0, 5.0], rtol=1e-12)


def test_hutchinson_errors():
    with pytest.raises(TypeError, match="hvp"):
        oo.hutchinson_diag(None, np.zeros(2))
    with pytest.raises(ValueError, match="n_samples"):
        oo.hutchinson_diag(lambda v: v, np.zeros(2), n_samples=0)
    with pytest.raises(ValueError, match="structure"):
        oo.hutchinson_diag(lambda v: [v], np.zeros(2))
    with pytest.raises(ValueError, match="seed"):
        oo.hutchinson_trace(lambda v: v, np.zeros(2), seed=-1)


def test_seeds_go_through_the_seed_role():
    f = lambda v: v  # noqa: E731
    for fn in (oo.hutchinson_diag, oo.hutchinson_trace):
        with pytest.raises(TypeError, match="seed"):
            fn(f, np.zeros(2), seed="abc")
        with pytest.raises(ValueError, match="seed"):
            fn(f, np.zeros(2), seed=-1)
        with pytest.raises(TypeError, match="seed"):
            fn(f, np.zeros(2), seed=1.5)
    with pytest.raises(TypeError, match="seed"):
        oo.rademacher_like(np.zeros(2), seed="abc")
    gen = np.random.default_rng(3)
    z = oo.rademacher_like([np.zeros(3), np.zeros((2, 2))], seed=gen)
    assert set(np.concatenate([z[0], z[1].ravel()]).tolist()) <= {-1.0, 1.0}
    assert oo.rademacher_like(np.zeros(()), seed=0).shape == ()          # 0-d: an array, not a NumPy scalar


def test_params_role_names_the_argument():
    with pytest.raises(TypeError, match=r"params\[0\] must have a floating dtype"):
        oo.hutchinson_diag(lambda v: v, [np.ones(2, np.int64)])
    with pytest.raises(ValueError, match="params is empty"):
        oo.rademacher_like([])


def test_trace_warns_when_probes_run_out():
    import optnorm

    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 6))
    A = A + A.T
    with pytest.warns(optnorm.ConvergenceWarning, match="hutchinson_trace"):
        r = oo.hutchinson_trace(lambda v: A @ v, np.zeros(6), n_samples=4, tol=1e-12)
    assert not r.converged and r.n_iter == 4
