"""topk_softmax, moe_gate, soft_topk, soft_topk_loss."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import optnorm
from optnorm._lib import ops
from optnorm.norm import moe_gate, soft_topk, soft_topk_loss, topk_softmax
from optnorm.testing import assert_close, check_vjp


def _ref_topk(x, k, t=1.0):
    """Softmax of the gathered top-k logits, scattered back (stable order: lowest index wins ties)."""
    x = np.asarray(x, np.float64)
    out = np.zeros_like(x)
    flat, of = x.reshape(-1, x.shape[-1]), out.reshape(-1, x.shape[-1])
    idxs = []
    for r in range(flat.shape[0]):
        idx = sorted(range(flat.shape[1]), key=lambda j: (-flat[r, j], j))[:k]
        z = flat[r, idx] / t
        e = np.exp(z - z.max())
        of[r, idx] = e / e.sum()
        idxs.append(idx)
    return out, np.array(idxs).reshape(x.shape[:-1] + (k,))


@pytest.mark.parametrize("k", [1, 3, 8])
def test_topk_softmax_matches_reference(xp, rng, k):
    x = rng.standard_normal((4, 5, 8))
    y, idx = topk_softmax(xp.asarray(x), k=k, temperature=0.7, return_indices=True)
    ref, ridx = _ref_topk(x, k, 0.7)
    assert_close(y, ref, rtol=1e-12, atol=1e-15, xp=xp)
    assert np.array_equal(optnorm._lib.compat.to_numpy(idx), ridx)


def test_topk_softmax_axis_and_torch_peer(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((6, 10, 3))
    y = topk_softmax(x, k=4, axis=1)
    t = torch.tensor(np.moveaxis(x, 1, -1))
    p = torch.softmax(t, -1)
    v, i = torch.topk(p, 4, dim=-1)
    dense = torch.zeros_like(p).scatter(-1, i, v / v.sum(-1, keepdim=True))
    assert_close(y, np.moveaxis(dense.numpy(), -1, 1), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_topk_softmax_paths_and_ties(path, rng, dtype):
    x = rng.integers(-3, 3, size=(50, 16)).astype(dtype)  # many ties
    y, idx = topk_softmax(x, k=5, return_indices=True)
    ref, ridx = _ref_topk(x, 5)
    assert y.dtype == dtype
    assert np.array_equal(idx, ridx)
    assert_close(y, ref.astype(dtype), rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-7)
    assert_close(y.sum(-1), np.ones(50, dtype), rtol=1e-6)


def test_topk_softmax_numba_path_taken():
    from optnorm.norm import gates

    with optnorm.use_backend("auto"):
        assert gates._topk.path_for(np.ones((2, 3)), k=1, inv_t=1.0, xp=None) == "numba"


def test_topk_softmax_float16_torch():
    torch = pytest.importorskip("torch")
    x = torch.randn(5, 9, dtype=torch.float16)
    y = topk_softmax(x, k=3)
    assert y.dtype == torch.float16
    ref, _ = _ref_topk(x.float().numpy(), 3)
    assert_close(y, ref, rtol=2e-3, atol=1e-3, check_dtype="float16")


def test_moe_gate(xp, rng):
    x = rng.standard_normal((5, 6))
    dense = moe_gate(xp.asarray(x), temperature=0.5)
    e = np.exp(x / 0.5 - (x / 0.5).max(-1, keepdims=True))
    assert_close(dense, e / e.sum(-1, keepdims=True), rtol=1e-12, xp=xp)
    act = moe_gate(xp.asarray(x), temperature=0.3, activation="tanh")
    e = np.exp(np.tanh(x) / 0.3)
    assert_close(act, e / e.sum(-1, keepdims=True), rtol=1e-12, xp=xp)
    sp = moe_gate(xp.asarray(x), k=2, activation="sigmoid", temperature=2.0)
    assert_close(sp, _ref_topk(1 / (1 + np.exp(-x)), 2, 2.0)[0], rtol=1e-12, atol=1e-15, xp=xp)


def test_soft_topk_sums_to_k_and_limits(xp, rng):
    x = rng.standard_normal((3, 4, 20)) * 5
    for k in (1, 5, 19, 20):
        p = soft_topk(xp.asarray(x), k=k, alpha=2.0)
        assert_close(optnorm._lib.compat.to_numpy(p).sum(-1), np.full((3, 4), float(k)), rtol=1e-10)
    # sharp alpha approaches the hard top-k indicator
    x = rng.permutation(np.arange(12.0)).reshape(1, 12)
    p = np.asarray(soft_topk(x, k=4, alpha=50.0))
    assert np.array_equal(p[0] > 0.5, x[0] >= 8)
    # float32
    p32 = soft_topk(x.astype(np.float32), k=3)
    assert p32.dtype == np.float32 and abs(float(p32.sum()) - 3) < 1e-4


def test_soft_topk_loss_reference(xp, rng):
    x = rng.standard_normal((4, 7))
    tg = (rng.random((4, 7)) < 0.3).astype(np.float64)
    tg[0] = 0
    tg[1, 2] = 1
    p = np.asarray(soft_topk(x, k=3, alpha=1.5))
    npos = tg.sum(-1)
    ref = np.array([-(tg[i] * np.log(p[i])).sum() / npos[i] if npos[i] else 0.0 for i in range(4)])
    y = soft_topk_loss(xp.asarray(x), xp.asarray(tg), k=3, alpha=1.5, reduction="none")
    assert_close(y, ref, rtol=1e-10, xp=xp)
    assert_close(soft_topk_loss(xp.asarray(x), xp.asarray(tg), k=3, alpha=1.5), ref.mean(), rtol=1e-10, xp=xp)


def test_vjps(rng):
    x = rng.standard_normal((3, 6))
    check_vjp("norm.topk_softmax", x, opts={"k": 3, "temperature": 0.8})
    check_vjp("norm.topk_softmax", rng.standard_normal((4, 3, 2)), opts={"k": 2, "axis": 1})
    for act in (None, "tanh", "sigmoid"):
        check_vjp("norm.moe_gate", x, opts={"activation": act, "temperature": 0.7})
        check_vjp("norm.moe_gate", x, opts={"activation": act, "k": 2})
    check_vjp("norm.soft_topk", x, opts={"k": 2, "alpha": 1.3})
    check_vjp("norm.soft_topk", rng.standard_normal((5, 2)), opts={"k": 2, "axis": 0})
    tg = (rng.random((3, 6)) < 0.4).astype(np.float64)
    for red in ("mean", "sum", "none"):
        check_vjp("norm.soft_topk_loss", x, tg, opts={"k": 3, "alpha": 0.9, "reduction": red})


def test_soft_topk_vjp_matches_finite_differences_full(rng):
    """Full Jacobian of soft_topk against central differences (not only random directions)."""
    soft_topk_fwd, soft_topk_bwd = ops.get("soft_topk").fwd, ops.get("soft_topk").bwd
    from optnorm.testing import numerical_vjp

    x = rng.standard_normal(7)
    for i in range(7):
        e = np.zeros(7)
        e[i] = 1.0
        _, res = soft_topk_fwd(x, k=3, alpha=2.0)
        ana = soft_topk_bwd(res, e)[0]
        num = numerical_vjp(lambda a: soft_topk(a, k=3, alpha=2.0), [x], e)[0]
        assert_close(ana, num, rtol=1e-6, atol=1e-8)


def test_adapters(rng):
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    import optnorm.jax as onj
    import optnorm.torch as ont

    x = rng.standard_normal((3, 6))
    tg = (rng.random((3, 6)) < 0.4).astype(np.float64)
    t = torch.tensor(x, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: ont.topk_softmax(a, k=3), (t,))
    assert torch.autograd.gradcheck(lambda a: ont.moe_gate(a, k=2, activation="tanh"), (t,))
    assert torch.autograd.gradcheck(lambda a: ont.soft_topk(a, k=2), (t,))
    assert torch.autograd.gradcheck(lambda a: ont.soft_topk_loss(a, torch.tensor(tg), k=2), (t,))
    j = jax.numpy.asarray(x)
    check_grads(lambda a: onj.topk_softmax(a, k=3), (j,), order=1, modes=["rev"])
    check_grads(lambda a: onj.moe_gate(a, activation="sigmoid"), (j,), order=1, modes=["rev"])
    check_grads(lambda a: onj.soft_topk(a, k=2), (j,), order=1, modes=["rev"])
    check_grads(lambda a: onj.soft_topk_loss(jax.numpy.asarray(a), jax.numpy.asarray(tg), k=2), (j,), order=1,
                modes=["rev"])
    g = jax.jit(jax.grad(lambda a: onj.topk_softmax(a, k=2)[:, 0].sum()))(j)
    assert g.shape == x.shape
    # with the integer indices as a second output: no gradient flows into them
    y, idx = ont.topk_softmax(t, k=2, return_indices=True)
    assert idx.dtype == torch.int64 and not idx.requires_grad
    (y * torch.tensor(x)).sum().backward()
    assert t.grad.shape == x.shape
    gi = jax.grad(lambda a: onj.topk_softmax(a, k=2, return_indices=True)[0][:, 0].sum())(j)
    assert_close(gi, np.asarray(g), rtol=1e-12)


def test_bad_input():
    x = np.ones((2, 4))
    with pytest.raises(ValueError, match="k=5 is larger than the size 4"):
        topk_softmax(x, k=5)
    with pytest.raises(ValueError, match=r"k must be in \[1, inf\)"):
        topk_softmax(x, k=0)
    with pytest.raises(ValueError, match=r"temperature must be in \(0, inf\)"):
        topk_softmax(x, k=1, temperature=0.0)
    with pytest.raises(ValueError, match=r"temperature must be in \(0, inf\)"):
        moe_gate(x, temperature=-1.0)
    with pytest.raises(ValueError, match="activation must be one of"):
        moe_gate(x, activation="relu")
    with pytest.raises(TypeError, match="logits must have a real floating dtype"):
        topk_softmax(np.ones((2, 4), int), k=1)
    with pytest.raises(ValueError, match="k=9 is larger"):
        soft_topk(x, k=9)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, inf\)"):
        soft_topk(x, k=1, alpha=0)
    with pytest.raises(ValueError, match="targets has shape"):
        soft_topk_loss(x, np.ones((2, 3)), k=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_soft_topk_paths(path, rng, dtype):
    x = (rng.standard_normal((30, 17)) * 4).astype(dtype)
    with optnorm.use_backend("generic"):
        ref = soft_topk(x.astype(np.float64), k=5, alpha=1.7)
    p = soft_topk(x, k=5, alpha=1.7)
    assert p.dtype == dtype
    assert_close(p, ref.astype(dtype), rtol=1e-5 if dtype == np.float32 else 1e-10,
                 atol=1e-6 if dtype == np.float32 else 1e-12)
    assert_close(p.sum(-1), np.full(30, 5.0, dtype), rtol=1e-5 if dtype == np.float32 else 1e-10)
    from optnorm.norm import gates

    with optnorm.use_backend("auto"):
        assert gates._soft_topk.path_for(x, k=5, alpha=1.0, n_iter=3, xp=None) == "numba"


# ------------------------------------------------------------------------------------------ extremes (hypothesis)
finite = st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False, width=64)


@given(arrays(np.float64, (4, 7), elements=finite), st.integers(1, 7),
       st.sampled_from([1e-3, 1.0, 1e3]))
def test_topk_softmax_extremes(x, k, t):
    for backend in ("generic", "numba"):
        with optnorm.use_backend(backend):
            y = topk_softmax(x, k=k, temperature=t)
        assert np.all(np.isfinite(y)) and np.all(y >= 0)
        np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-12)
        assert np.all((y > 0).sum(-1) <= k)


@given(arrays(np.float32, (3, 9), elements=st.floats(-1e4, 1e4, width=32)), st.integers(1, 8))
def test_soft_topk_extremes_float32(x, k):
    p = soft_topk(x, k=k, alpha=1.0)
    assert p.dtype == np.float32 and np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(-1), k, rtol=1e-4, atol=1e-3)


@given(arrays(np.float64, (5,), elements=st.floats(-50, 50)), st.sampled_from([None, "tanh", "sigmoid"]))
def test_moe_gate_sums_to_one(x, act):
    g = moe_gate(x, activation=act, temperature=0.05)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g.sum(), 1.0, rtol=1e-12)


def test_half_precision_torch():
    torch = pytest.importorskip("torch")
    for dt in (torch.float16, torch.bfloat16):
        x = torch.randn(3, 4, dtype=dt)
        assert topk_softmax(x, k=2).dtype == dt
        assert soft_topk(x, k=2).dtype == dt
