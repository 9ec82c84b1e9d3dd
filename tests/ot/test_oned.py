"""wasserstein_1d: scipy.stats, POT, a brute-force LP reference, both dispatch paths, VJPs, adapters, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

from optnorm.ot import wasserstein_1d
from optnorm.testing import assert_close, check_vjp


def _brute(u, v, a, b, p):
    """W_p^p by the exact LP on the full n x m cost (independent of the quantile formula)."""
    from scipy.optimize import linprog

    n, m = len(u), len(v)
    C = np.abs(u[:, None] - v[None, :]) ** p
    A = np.vstack([np.kron(np.eye(n), np.ones(m)), np.kron(np.ones(n), np.eye(m))])
    r = linprog(C.ravel(), A_eq=A, b_eq=np.concatenate([a, b]), bounds=(0, None), method="highs")
    return r.fun


def _w(rng, k, batch=()):
    w = rng.random((*batch, k)) + 0.05
    return w / w.sum(-1, keepdims=True)


def test_matches_scipy_p1(xp, rng):
    u, v = rng.standard_normal(17), 2 * rng.standard_normal(11) + 0.5
    a, b = _w(rng, 17), _w(rng, 11)
    y = wasserstein_1d(xp.asarray(u), xp.asarray(v), xp.asarray(a), xp.asarray(b))
    assert_close(y, scipy.stats.wasserstein_distance(u, v, a, b), rtol=1e-12, xp=xp)
    y0 = wasserstein_1d(xp.asarray(u), xp.asarray(v))
    assert_close(y0, scipy.stats.wasserstein_distance(u, v), rtol=1e-12, xp=xp)


@pytest.mark.parametrize("p", [1, 2, 3, 1.5])
def test_brute_force_and_pot_batched(xp, rng, p):
    ot = pytest.importorskip("ot")
    B, n, m = 3, 9, 6
    u, v = rng.standard_normal((B, n)), rng.standard_normal((B, m))
    a, b = _w(rng, n, (B,)), _w(rng, m, (B,))
    y = wasserstein_1d(xp.asarray(u), xp.asarray(v), xp.asarray(a), xp.asarray(b), p=p, squared=True)
    ref = np.array([_brute(u[i], v[i], a[i], b[i], p) for i in range(B)])
    assert_close(y, ref, rtol=1e-9, atol=1e-12, xp=xp)
    pot = np.array([ot.wasserstein_1d(u[i], v[i], a[i], b[i], p=p) for i in range(B)])
    assert_close(y, pot, rtol=1e-9, atol=1e-12, xp=xp)
    yr = wasserstein_1d(xp.asarray(u), xp.asarray(v), xp.asarray(a), xp.asarray(b), p=p)
    assert_close(yr, ref ** (1 / p), rtol=1e-9, xp=xp)


def test_paths_agree(path, rng):
    u, v = rng.standard_normal((4, 30)), rng.standard_normal((1, 20))
    a, b = _w(rng, 30, (4,)), _w(rng, 20)
    for args in ((u, v, None, None), (u, v, a, b), (u, v, None, b)):
        y = wasserstein_1d(*args, p=2)
        ref = [np.sqrt(_brute(u[i], v[0], np.full(30, 1 / 30) if args[2] is None else a[i],
                              np.full(20, 1 / 20) if args[3] is None else b, 2)) for i in range(4)]
        assert_close(y, np.array(ref), rtol=1e-9)


def test_float32_and_broadcast(xp, rng):
    u = rng.standard_normal((2, 1, 50)).astype(np.float32)
    v = rng.standard_normal((3, 40)).astype(np.float32)
    y = wasserstein_1d(xp.asarray(u), xp.asarray(v), p=2)
    assert tuple(y.shape) == (2, 3) and y.dtype == xp.float32
    ref = np.array([[scipy.stats.wasserstein_distance(u[i, 0], v[j]) for j in range(3)] for i in range(2)])
    y1 = wasserstein_1d(xp.asarray(u), xp.asarray(v))
    assert_close(y1, ref, rtol=1e-5, check_dtype="float32", xp=xp)


def test_atoms_on_axis_0_are_refused(rng):
    """Issue #13: (n, 1) columns with n == m were read as n one-atom measures and returned shape (n,) silently."""
    u, v = rng.standard_normal((7, 1)), rng.standard_normal((7, 1))
    with pytest.raises(ValueError, match=r"u_values has shape \(7, 1\).*last axis"):
        wasserstein_1d(u, v)
    with pytest.raises(ValueError, match="v_values has shape"):
        wasserstein_1d(u[:, 0], v)
    assert_close(wasserstein_1d(u[:, 0], v[:, 0]), scipy.stats.wasserstein_distance(u[:, 0], v[:, 0]), rtol=1e-12)
    assert wasserstein_1d(u.T, v.T).shape == (1,)                     # atoms on the last axis: one measure


@pytest.mark.parametrize("t", [1e300, 1e-300, 2.0 ** 1000])
@pytest.mark.parametrize("p", [1, 2, 3.5])
def test_extreme_magnitudes(path, rng, t, p):
    """W_p(t u, t v) = t W_p(u, v): the p-th powers run on inputs scaled by a power of two."""
    u, v = rng.standard_normal(30), rng.standard_normal(20)
    a = rng.random(30)
    a /= a.sum()
    base = float(wasserstein_1d(u, v, a, None, p=p))
    y = wasserstein_1d(t * u, t * v, a, None, p=p)
    assert np.isfinite(y)
    assert float(y) == pytest.approx(t * base, rel=1e-12)
    if p > 1:                                                           # W_p^p beyond the float64 range
        with pytest.raises(ValueError, match="overflows"):
            wasserstein_1d(1e300 * u, 1e300 * v, p=p, squared=True)


def test_zero_weights_are_ignored(rng):
    u, v = rng.standard_normal(6), rng.standard_normal(5)
    a = np.array([0.5, 0, 0.5, 0, 0, 0])
    y = wasserstein_1d(u, v, a, None, p=2)
    ref = wasserstein_1d(u[[0, 2]], v, None, None, p=2)
    assert_close(y, ref, rtol=1e-12)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_vjp(rng, p):
    u, v = rng.standard_normal((2, 7)), rng.standard_normal(5)
    a, b = _w(rng, 7, (2,)), _w(rng, 5)
    check_vjp("ot.wasserstein_1d", u, v, a, b, opts={"p": p}, h=1e-8)
    check_vjp("ot.wasserstein_1d", u, v, None, None, opts={"p": p})
    check_vjp("ot.wasserstein_1d", u, v, None, b, opts={"p": p, "squared": True}, h=1e-8)


def test_torch_gradcheck(rng):
    torch = pytest.importorskip("torch")
    import optnorm.torch as ont

    args = [torch.tensor(z, requires_grad=True) for z in (rng.standard_normal(6), rng.standard_normal(5),
                                                          _w(rng, 6), _w(rng, 5))]
    # weights must stay normalised under gradcheck's perturbation (eps 1e-6 < the check tolerance)
    assert torch.autograd.gradcheck(lambda *z: ont.wasserstein_1d(*z, p=2), args, eps=1e-7, atol=1e-5)


def test_jax_check_grads(rng):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    from jax.test_util import check_grads

    import optnorm.jax as onj

    u, v = jnp.asarray(rng.standard_normal(6)), jnp.asarray(rng.standard_normal(5))
    check_grads(lambda x, y: onj.wasserstein_1d(x, y, p=2), (u, v), order=1, modes=["rev"])
    g = jax.jit(jax.grad(lambda x: onj.wasserstein_1d(x, v, p=2)))(u)
    assert np.all(np.isfinite(np.asarray(g)))


@given(scale=st.floats(1e-6, 1e6), shift=st.floats(-1e6, 1e6))
def test_scale_shift_equivariance(scale, shift):
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(20), rng.standard_normal(15)
    base = float(wasserstein_1d(u, v, p=2))
    y = float(wasserstein_1d(u * scale + shift, v * scale + shift, p=2))
    assert abs(y - scale * base) <= 1e-7 * scale * base + 1e-9 * (abs(shift) + scale)


def test_bad_input():
    u = np.ones(3)
    with pytest.raises(ValueError, match=r"p must be in \[1, inf\)"):
        wasserstein_1d(u, u, p=0.5)
    with pytest.raises(ValueError, match="u_weights must be non-negative"):
        wasserstein_1d(u, u, np.array([1.5, -0.5, 0.0]))
    with pytest.raises(ValueError, match="v_weights must sum to 1 along its last axis; it is off by up to 0.5"):
        wasserstein_1d(u, u, None, np.array([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="u_weights has shape"):
        wasserstein_1d(u, u, np.ones(2) / 2)
    with pytest.raises(ValueError, match="v_values is empty"):
        wasserstein_1d(u, np.ones(0))
    with pytest.raises(ValueError, match="u_values contains NaN"):
        wasserstein_1d(np.array([1.0, np.nan]), u)
    with pytest.raises(TypeError, match="u_values must have a real floating dtype"):
        wasserstein_1d(np.arange(3), u)


# ---------------------------------------------------------------------------------------------- emd_1d
@pytest.mark.parametrize("metric,p", [("sqeuclidean", 2.0), ("minkowski", 1.5), ("cityblock", 1.0),
                                      ("euclidean", 1.0), ("minkowski", 3.0)])
def test_emd_1d_plan_cost_and_potentials_against_pot(xp, rng, metric, p):
    """The plan equals POT's ot.emd_1d; the cost equals the network simplex on the full cost matrix; the
    potentials are dual feasible and attain the cost (ties and repeated atoms included)."""
    ot = pytest.importorskip("ot")
    from optnorm.ot import emd_1d

    q = {"sqeuclidean": 2.0, "minkowski": p}.get(metric, 1.0)
    for trial in range(8):
        n, m = (int(k) for k in rng.integers(1, 14, 2))
        if trial % 3 == 0:                                   # ties inside and across the supports
            x, y = rng.integers(0, 4, n).astype(float), rng.integers(0, 4, m).astype(float)
        else:
            x, y = rng.standard_normal(n), rng.standard_normal(m) + 0.3
        a, b = (None, None) if trial % 4 == 1 else (_w(rng, n), _w(rng, m))
        if trial % 4 == 2 and n > 2:
            a[1] = 0.0                                       # a zero weight
            a = a / a.sum()
        r = emd_1d(xp.asarray(x), xp.asarray(y), None if a is None else xp.asarray(a),
                   None if b is None else xp.asarray(b), metric=metric, p=p)
        aa = np.full(n, 1.0 / n) if a is None else a
        bb = np.full(m, 1.0 / m) if b is None else b
        C = np.abs(x[:, None] - y[None]) ** q
        ref = ot.emd2(aa, bb, C)
        assert_close(r.cost, ref, rtol=1e-12, atol=1e-15, xp=xp)
        P = np.asarray(r.plan)
        assert_close(P.sum(1), aa, atol=1e-14)
        assert_close(P.sum(0), bb, atol=1e-14)
        assert_close(np.sum(P * C), ref, rtol=1e-12, atol=1e-15)
        if trial % 3:                                        # no ties: the optimal plan is unique
            assert_close(P, ot.emd_1d(x, y, aa, bb, metric=metric, p=p), atol=1e-14)
        f, g = np.asarray(r.f), np.asarray(r.g)
        assert np.max(f[:, None] + g[None] - C) <= 1e-12 * max(1.0, C.max())
        assert_close(aa @ f + bb @ g, ref, rtol=1e-12, atol=1e-14)
        assert_close(aa @ f, bb @ g, rtol=1e-10, atol=1e-14)
        S = np.zeros((n, m))
        np.add.at(S, (np.asarray(r.rows), np.asarray(r.cols)), np.asarray(r.values))
        assert_close(S, P, atol=1e-15)


def test_emd_1d_sparse_extreme_magnitudes_and_bad_input(rng):
    from optnorm.ot import emd_1d

    x, y = rng.standard_normal(6), rng.standard_normal(5)
    r = emd_1d(x, y, dense=False)
    assert r.plan is None and r.rows.shape == (10,) and float(r.values.sum()) == pytest.approx(1.0)
    big = emd_1d(x * 1e150, y * 1e150)                       # squares of 1e150 overflow without the scaling
    assert_close(big.cost, float(emd_1d(x, y).cost) * 1e300, rtol=1e-12)
    assert np.all(np.isfinite(big.f)) and np.all(np.isfinite(big.g))
    with pytest.raises(ValueError, match="metric must be one of"):
        emd_1d(x, y, metric="cosine")
    with pytest.raises(ValueError, match="x_a contains NaN"):
        emd_1d(np.r_[x[:-1], np.nan], y)
    with pytest.raises(ValueError, match="b must sum to 1"):
        emd_1d(x, y, None, np.full(5, 0.5))
