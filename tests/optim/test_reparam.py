"""weight_conditioning (row/column equilibration, op with VJP through torch and JAX)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import optnorm.optim as oo
from optnorm._lib.compat import to_numpy
from optnorm.testing import assert_close, check_vjp


def _ref(W, mode="row", axis=0, eps=1e-12):
    """Row equilibration D W (or column equilibration W D) written with explicit loops in float64."""
    W = np.moveaxis(np.asarray(W, dtype=np.float64), axis, 0)
    M = W.reshape(W.shape[0], -1)
    out = np.empty_like(M)
    if mode == "row":
        for i in range(M.shape[0]):
            out[i] = M[i] / max(math.sqrt(sum(float(v) ** 2 for v in M[i])), eps)
    else:
        for j in range(M.shape[1]):
            out[:, j] = M[:, j] / max(math.sqrt(sum(float(v) ** 2 for v in M[:, j])), eps)
    return np.moveaxis(out.reshape(W.shape), 0, axis)


CASES = [((5, 3), "row", 0), ((5, 3), "column", 0), ((3, 7), "row", 0), ((4, 3, 2, 2), "row", 0),
         ((4, 3, 2, 2), "column", 0), ((2, 2, 3, 4), "row", -1), ((2, 3, 4), "column", 1)]


@pytest.mark.parametrize("shape,mode,axis", CASES)
def test_matches_reference(xp, rng, shape, mode, axis):
    W = rng.standard_normal(shape)
    y = oo.weight_conditioning(xp.asarray(W), mode=mode, axis=axis)
    assert y.shape == W.shape and y.dtype == xp.float64
    assert_close(y, _ref(W, mode, axis), rtol=1e-12, atol=1e-15, xp=xp)
    y32 = oo.weight_conditioning(xp.asarray(W.astype(np.float32)), mode=mode, axis=axis)
    assert y32.dtype == xp.float32
    assert_close(y32, _ref(W, mode, axis), rtol=1e-5, atol=1e-6, check_dtype=False, xp=xp)  # float64 reference


def test_floored_rows_and_input_untouched(xp, rng):
    W = rng.standard_normal((4, 3))
    W[1] = 0.0
    W[2] *= 1e-3
    Wx = xp.asarray(W)
    y = oo.weight_conditioning(Wx, eps=1e-2)
    assert_close(y, _ref(W, eps=1e-2), rtol=1e-12, xp=xp)
    assert_close(y[1, ...], np.zeros(3), xp=xp)
    assert_close(Wx, W, xp=xp)  # input not mutated


def test_half_precision(rng):
    torch = pytest.importorskip("torch")
    W = rng.standard_normal((6, 5))
    for dt in (torch.float16, torch.bfloat16):
        y = oo.weight_conditioning(torch.tensor(W, dtype=dt))
        assert y.dtype == dt
        assert_close(y.float(), _ref(W), rtol=1e-2, atol=1e-2, check_dtype=False)


# ------------------------------------------------------------------------------------------ properties from the paper
def test_rows_unit_and_invariant_to_row_scaling(rng):
    W = rng.standard_normal((6, 4))
    y = oo.weight_conditioning(W)
    assert_close(np.linalg.norm(y, axis=1), np.ones(6), rtol=1e-12)
    D = np.diag(rng.uniform(1e-3, 1e3, 6))      # D W has the same equilibrated form: only the direction counts
    assert_close(oo.weight_conditioning(D @ W), y, rtol=1e-10)
    yc = oo.weight_conditioning(W, mode="column")
    assert_close(np.linalg.norm(yc, axis=0), np.ones(4), rtol=1e-12)
    assert_close(oo.weight_conditioning(W @ np.diag(rng.uniform(1e-3, 1e3, 4)), mode="column"), yc, rtol=1e-10)


@pytest.mark.parametrize("m,n,mode", [(8, 8, "row"), (6, 16, "row"), (8, 8, "column"), (16, 6, "column")])
def test_narrows_the_singular_value_spread(rng, m, n, mode):
    """A badly scaled matrix W = D0 A (rows) or A D0 (columns): equilibration brings kappa(W) back to within
    sqrt(k) of kappa(A), k the number of scaled rows/columns (van der Sluis, 1969: kappa(D_eq W) <= sqrt(k) min_D
    kappa(D W) for a full-row-rank W, likewise for columns of a full-column-rank W; D = D0^{-1} is one candidate)."""
    A = np.linalg.qr(rng.standard_normal((max(m, n), max(m, n))))[0][:m, :n] + 0.1 * rng.standard_normal((m, n))
    k = m if mode == "row" else n
    D0 = np.diag(np.logspace(-4, 4, k))
    W = D0 @ A if mode == "row" else A @ D0
    kw, ka = np.linalg.cond(W), np.linalg.cond(A)
    E = oo.weight_conditioning(W, mode=mode)
    ke = np.linalg.cond(E)
    assert kw > 1e3 * ka
    assert ke <= math.sqrt(k) * ka * (1 + 1e-9)
    assert ke < kw / 100


@given(scale=st.floats(min_value=-100, max_value=100), seed=st.integers(0, 2 ** 16))
def test_extreme_magnitudes(scale, seed):
    W = np.random.default_rng(seed).standard_normal((5, 4)) * 10.0 ** scale
    y = oo.weight_conditioning(W, eps=1e-300)
    assert np.all(np.isfinite(y))
    assert_close(np.linalg.norm(y, axis=1), np.ones(5), rtol=1e-12)


# ------------------------------------------------------------------------------------------ VJP and adapters
@pytest.mark.parametrize("shape,mode,axis", CASES)
def test_vjp(rng, shape, mode, axis):
    check_vjp("optim.weight_conditioning", rng.standard_normal(shape), opts={"mode": mode, "axis": axis})


def test_vjp_floored_branch(rng):
    W = rng.standard_normal((4, 3))
    W[2] *= 0.05                                  # norm < eps: divided by eps, linear there
    check_vjp("optim.weight_conditioning", W, opts={"eps": 0.5})


def test_vjp_on_every_backend(xp, rng):
    import optnorm._lib.ops as ops
    W = rng.standard_normal((5, 3))
    dy = rng.standard_normal((5, 3))
    op = ops.get("optim.weight_conditioning")
    _, res = op.fwd(xp.asarray(W), mode="row")
    (g,) = op.bwd(res, xp.asarray(dy))
    _, res0 = op.fwd(W, mode="row")
    assert_close(g, op.bwd(res0, dy)[0], rtol=1e-12, xp=xp)
    # independent: y = W/n, dW = (dy - y <y, dy>) / n per row
    y = _ref(W)
    n = np.linalg.norm(W, axis=1, keepdims=True)
    assert_close(g, (dy - y * np.sum(y * dy, axis=1, keepdims=True)) / n, rtol=1e-12, xp=xp)


def test_torch_gradcheck(rng):
    torch = pytest.importorskip("torch")
    import optnorm.torch as ont
    for shape, mode, axis in [((4, 3), "row", 0), ((3, 2, 2), "column", 0), ((2, 3, 4), "row", -1)]:
        Wt = torch.tensor(rng.standard_normal(shape), dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda w: ont.weight_conditioning(w, mode=mode, axis=axis), (Wt,))


def test_jax_check_grads_and_jit(rng):
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optnorm.jax as onj
    W = rng.standard_normal((4, 3))
    Wj = jnp.asarray(W)
    check_grads(lambda w: onj.weight_conditioning(w), (Wj,), order=1, modes=["rev"])
    check_grads(lambda w: onj.weight_conditioning(w, mode="column"), (Wj,), order=1, modes=["rev"])
    f = jax.jit(lambda w: onj.weight_conditioning(w, mode="row"))
    assert_close(f(Wj), _ref(W), rtol=1e-12)
    dy = rng.standard_normal((4, 3))
    g = jax.jit(jax.grad(lambda w: jnp.sum(onj.weight_conditioning(w) * dy)))(Wj)
    y = _ref(W)
    assert_close(g, (dy - y * np.sum(y * dy, axis=1, keepdims=True)) / np.linalg.norm(W, axis=1, keepdims=True),
                 rtol=1e-10)


def test_torch_training_step_uses_conditioned_weight(rng):
    """A layer y = x @ C(W).T trained through the adapter: W's gradient is the analytic one."""
    torch = pytest.importorskip("torch")
    import optnorm.torch as ont
    W = torch.tensor(rng.standard_normal((3, 5)), requires_grad=True)
    x = torch.tensor(rng.standard_normal((7, 5)))
    (x @ ont.weight_conditioning(W).T).pow(2).sum().backward()
    Wr = W.detach().clone().requires_grad_(True)
    (x @ (Wr / Wr.norm(dim=1, keepdim=True)).T).pow(2).sum().backward()
    assert_close(W.grad, Wr.grad, rtol=1e-10)


# ------------------------------------------------------------------------------------------ bad input
def test_errors():
    W = np.ones((3, 2))
    with pytest.raises(TypeError, match="weight"):
        oo.weight_conditioning(np.ones((3, 2), dtype=np.int64))
    assert_close(oo.weight_conditioning([[3.0, 4.0]]), np.array([[0.6, 0.8]]))   # lists are read as NumPy
    with pytest.raises(TypeError, match="weight"):
        oo.weight_conditioning("W")
    with pytest.raises(ValueError, match="weight"):
        oo.weight_conditioning(np.ones(3))
    with pytest.raises(ValueError, match="weight"):
        oo.weight_conditioning(np.ones((0, 3)))
    with pytest.raises(ValueError, match="mode"):
        oo.weight_conditioning(W, mode="both")
    with pytest.raises(ValueError, match="axis"):
        oo.weight_conditioning(W, axis=2)
    with pytest.raises(TypeError, match="axis"):
        oo.weight_conditioning(W, axis=0.5)
    with pytest.raises(ValueError, match="eps"):
        oo.weight_conditioning(W, eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        oo.weight_conditioning(W, eps=-1.0)


def test_exported():
    from optnorm._lib import api

    assert "weight_conditioning" in oo.__all__
    assert api.lookup("optim.weight_conditioning").op is not None       # declared with its VJP
    assert to_numpy(oo.weight_conditioning(np.eye(2))).tolist() == [[1.0, 0.0], [0.0, 1.0]]
