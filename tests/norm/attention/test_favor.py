"""random_features (couplings, unbiasedness, variance ordering) and favor_attention."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm.norm import favor_attention, random_features, random_projection
from optnorm.testing import assert_close, check_vjp


def test_projection_couplings():
    d = 6
    W = random_projection(d, 2 * d, coupling="simplex", seed=0)
    for b in range(2):
        U = W[b * d:(b + 1) * d]
        U = U / np.linalg.norm(U, axis=1, keepdims=True)
        G = U @ U.T
        assert_close(np.diag(G), np.ones(d), rtol=1e-12)
        assert_close(G[~np.eye(d, dtype=bool)], np.full(d * d - d, -1 / (d - 1)), rtol=1e-10)
    O = random_projection(d, d, coupling="orthogonal", seed=0)
    U = O / np.linalg.norm(O, axis=1, keepdims=True)
    assert_close(U @ U.T, np.eye(d), atol=1e-12)
    assert np.array_equal(random_projection(d, 5, coupling="iid", seed=3), random_projection(d, 5, coupling="iid",
                                                                                             seed=3))
    # norms follow chi_d: mean of |w|^2 is d
    big = random_projection(d, 6000, coupling="simplex", seed=1)
    assert abs(np.mean(np.sum(big ** 2, 1)) - d) < 0.3


def test_random_features_unbiased(xp, rng):
    x = rng.standard_normal((3, 5)) * 0.3
    phi = random_features(xp.asarray(x), num_features=20000, seed=0)
    from optnorm._lib import compat

    P = compat.to_numpy(phi)
    assert P.shape == (3, 20000) and np.all(P > 0)
    assert_close(P @ P.T, np.exp(x @ x.T), rtol=0.03)
    T = compat.to_numpy(random_features(xp.asarray(x), num_features=20000, kind="trig", seed=0))
    assert T.shape == (3, 40000)
    assert_close(T @ T.T, np.exp(x @ x.T), rtol=0.05)


def test_simplex_has_lower_kernel_error_than_iid(rng):
    """Measured: relative MSE of exp(x.y) over 1000 seeds, d = m = 16, |x| = 0.5 (iid ~0.19, simplex ~0.07)."""
    d = m = 16
    X = rng.standard_normal((20, d))
    X = X / np.linalg.norm(X, axis=1, keepdims=True) * 0.5
    Y = X + 0.15 * rng.standard_normal((20, d))
    true = np.exp((X * Y).sum(1))
    mse = {}
    for c in ("iid", "orthogonal", "simplex"):
        errs = []
        for s in range(1000):
            fx = random_features(X, num_features=m, coupling=c, seed=s)
            fy = random_features(Y, num_features=m, coupling=c, seed=s)
            errs.append((((fx * fy).sum(1) - true) / true) ** 2)
        mse[c] = float(np.mean(errs))
    assert mse["simplex"] < 0.7 * mse["iid"], mse
    assert mse["simplex"] < mse["orthogonal"], mse


def _favor_ref(q, k, v, m, coupling, seed, causal):
    d = q.shape[-1]
    A = random_features(q, num_features=m, coupling=coupling, seed=seed, scale=d ** -0.25)
    B = random_features(k, num_features=m, coupling=coupling, seed=seed, scale=d ** -0.25)
    K = A @ np.swapaxes(B, -1, -2)
    if causal:
        K = np.tril(K)
    return (K @ v) / K.sum(-1, keepdims=True)


@pytest.mark.parametrize("causal", [False, True])
def test_favor_matches_quadratic_form(xp, rng, causal):
    q, k, v = (rng.standard_normal((2, 7, 4)) * 0.7 for _ in range(3))
    ref = _favor_ref(q, k, v, 12, "simplex", 5, causal)
    y = favor_attention(xp.asarray(q), xp.asarray(k), xp.asarray(v), num_features=12, seed=5, causal=causal)
    assert_close(y, ref, rtol=1e-9, atol=1e-10, xp=xp)


def test_favor_approximates_softmax_attention(rng):
    q, k, v = (rng.standard_normal((16, 8)) * 0.5 for _ in range(3))
    z = q @ k.T / np.sqrt(8)
    a = np.exp(z - z.max(1, keepdims=True))
    ref = (a / a.sum(1, keepdims=True)) @ v
    y = favor_attention(q, k, v, num_features=4096, seed=0)
    assert np.max(np.abs(y - ref)) < 0.05


def test_vjp_and_adapters(rng):
    q, k, v = rng.standard_normal((5, 3)) * 0.5, rng.standard_normal((5, 3)) * 0.5, rng.standard_normal((5, 2))
    for causal in (False, True):
        check_vjp("norm.favor_attention", q, k, v, opts={"num_features": 6, "seed": 1, "causal": causal})
    check_vjp("norm.favor_attention", q[None].repeat(2, 0), k, v, opts={"num_features": 4, "seed": 2,
                                                                         "coupling": "orthogonal"})
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    import optnorm.jax as onj
    import optnorm.torch as ont

    ts = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    assert torch.autograd.gradcheck(lambda a, b, c: ont.favor_attention(a, b, c, num_features=6, seed=1,
                                                                        causal=True), ts)
    js = [jax.numpy.asarray(a) for a in (q, k, v)]
    check_grads(lambda a, b, c: onj.favor_attention(a, b, c, num_features=6, seed=1), js, order=1, modes=["rev"])


def test_bad_input(rng):
    x = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match="coupling must be one of"):
        random_features(x, num_features=4, coupling="qmc")
    with pytest.raises(ValueError, match=r"num_features must be in \[1, inf\)"):
        random_features(x, num_features=0)
    with pytest.raises(ValueError, match="kind must be one of"):
        random_features(x, num_features=4, kind="relu")
    with pytest.raises(ValueError, match="needs a feature dimension d >= 2"):
        random_features(x[:, :1], num_features=4)
    with pytest.raises(TypeError, match="seed must be an int or None"):
        favor_attention(x, x, x, num_features=4, seed=np.random.default_rng(0))
    with pytest.raises(TypeError, match="seed must be None, a non-negative int"):
        random_projection(4, 8, seed="abc")
    with pytest.raises(ValueError, match="seed must be non-negative"):
        random_features(x, num_features=4, seed=-1)


@pytest.mark.parametrize("dtype,huge", [(np.float32, 1e30), (np.float64, 1e300)])
def test_favor_attention_near_the_dtype_range(dtype, huge):
    """|k|^2 overflowed and the global stabiliser gave 0/0 rows (NaN); exponents are now formed in units of the
    largest |k| and stabilised per batch element."""
    rng = np.random.default_rng(3)
    q, k, v = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 2))
    for args in ((q * huge, k, v), (q, k * huge, v), (q, k, v * huge / 10)):
        y = favor_attention(*(a.astype(dtype) for a in args), num_features=8, seed=0)
        assert np.all(np.isfinite(y))
    k2 = k.copy()
    k2[1] *= 1e3  # one batch element far larger than the other: each keeps its own stabiliser
    y = favor_attention(q, k2, v, num_features=8, seed=0)
    assert_close(y[0], favor_attention(q[:1], k2[:1], v[:1], num_features=8, seed=0)[0], rtol=1e-12)


def test_trig_features_that_overflow_raise():
    x = np.full((2, 4), 30.0)  # exp(|x|^2 / 2) = exp(1800) overflows float64
    with pytest.raises(ValueError, match="x is too large for trig random features"):
        random_features(x, num_features=4, kind="trig", seed=0)
    assert np.all(np.isfinite(random_features(x, num_features=4, kind="positive", seed=0)))
