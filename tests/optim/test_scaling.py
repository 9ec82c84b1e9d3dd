"""spectral_scale / spectral_init / spectral_normalize, nap, norm_loss (op with VJP through torch and JAX)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import optnorm.optim as oo
from optnorm._lib.compat import to_numpy
from optnorm.testing import assert_close, check_vjp


def test_spectral_scale_layouts():
    assert oo.spectral_scale((256, 64)) == 2.0
    assert oo.spectral_scale((64, 256), layout="flax") == 2.0
    assert oo.spectral_scale((8, 4, 3, 3)) == math.sqrt(8 / 36)
    assert oo.spectral_scale(np.ones((9, 4))) == 1.5
    with pytest.raises(ValueError, match="shape"):
        oo.spectral_scale((5,))
    with pytest.raises(ValueError, match="layout"):
        oo.spectral_scale((5, 4), layout="keras")


@pytest.mark.parametrize("shape", [(512, 128), (128, 512), (256, 256)])
def test_spectral_init_has_the_spectral_norm(shape):
    W = oo.spectral_init(shape, seed=0)
    target = math.sqrt(shape[0] / shape[1])
    s = np.linalg.norm(W, 2)
    assert 0.5 * target < s < 3.0 * target


def test_spectral_normalize(xp, rng):
    G = rng.standard_normal((24, 6))
    out = oo.spectral_normalize(xp.asarray(G), n_iter=50)
    assert abs(np.linalg.norm(to_numpy(out), 2) - 2.0) < 1e-6
    exact = oo.spectral_normalize(xp.asarray(G), exact=True)
    assert_close(exact, 2.0 * G / np.linalg.norm(G, 2), rtol=1e-10, xp=xp)


def test_project_to_norm(rng):
    W = rng.standard_normal((3, 4))
    assert abs(np.linalg.norm(oo.project_to_norm(W, 2.0)) - 2.0) < 1e-12
    rows = oo.project_to_norm(W, np.array([[1.0], [2.0], [3.0]]), axis=-1)
    assert_close(np.linalg.norm(rows, axis=1), [1.0, 2.0, 3.0], rtol=1e-12)


def _norm_loss_ref(W, factor):
    units = W.reshape(1, -1) if W.ndim <= 1 else W.reshape(W.shape[0], -1)
    return factor * sum((np.linalg.norm(u) - 1.0) ** 2 for u in units)


@pytest.mark.parametrize("shape", [(5,), (4, 3), (3, 2, 2, 2)])
def test_norm_loss_value_and_grad(xp, rng, shape):
    W = rng.standard_normal(shape)
    assert_close(oo.norm_loss(xp.asarray(W), factor=0.3), _norm_loss_ref(W, 0.3), rtol=1e-12, xp=xp)
    h = 1e-6
    num = np.zeros_like(W)
    for i in np.ndindex(W.shape):
        e = np.zeros_like(W)
        e[i] = h
        num[i] = (_norm_loss_ref(W + e, 0.3) - _norm_loss_ref(W - e, 0.3)) / (2 * h)
    assert_close(oo.norm_loss_grad(xp.asarray(W), factor=0.3), num, rtol=1e-6, atol=1e-8, xp=xp)


def test_norm_loss_vjp_and_adapters(rng):
    W = rng.standard_normal((4, 3))
    check_vjp("optim.norm_loss", W, opts={"factor": 0.5})
    torch = pytest.importorskip("torch")
    import optnorm.torch as ont

    Wt = torch.tensor(W, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: ont.norm_loss(w, factor=0.5), (Wt,))
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    import optnorm.jax as onj

    Wj = jax.numpy.asarray(W)
    check_grads(lambda w: onj.norm_loss(w, factor=0.5), (Wj,), order=1, modes=["rev"])
    g = jax.jit(jax.grad(lambda w: onj.norm_loss(w, factor=0.5)))(Wj)
    assert_close(g, oo.norm_loss_grad(W, factor=0.5), rtol=1e-10)


def test_norm_loss_errors():
    with pytest.raises(TypeError, match="W"):
        oo.norm_loss(np.ones((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="factor"):
        oo.norm_loss(np.ones((2, 2)), factor=-1.0)


def test_nap_errors():
    with pytest.raises(TypeError, match="inner"):
        oo.nap("adam")
    with pytest.raises(TypeError, match="inner"):
        oo.dct_lowrank(None, rank=2)
    with pytest.raises(ValueError, match="rank"):
        oo.dct_lowrank(oo.adam(), rank=0)


# ----------------------------------------------------------------------------------------------- magnitudes (#13)
@pytest.mark.parametrize("scale,dtype", [(1e300, np.float64), (1e30, np.float32), (1e-300, np.float64)])
def test_norms_do_not_overflow(rng, scale, dtype):
    """Unit norms used to be formed by squaring: entries near the dtype's range gave inf and NaN results."""
    W = rng.standard_normal((4, 6))
    Ws = (W * scale).astype(dtype)
    tol = dict(rtol=1e-10) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    if scale > 1:                                           # (below eps = 1e-12 the norms are floored)
        assert_close(oo.weight_conditioning(Ws), oo.weight_conditioning(W).astype(dtype), **tol)
        assert_close(oo.project_to_norm(Ws, 2.0), oo.project_to_norm(W, 2.0).astype(dtype), **tol)
    assert_close(oo.spectral_normalize(Ws, exact=True), oo.spectral_normalize(W, exact=True).astype(dtype), **tol)
    assert_close(oo.sinkhorn_normalize_gradient(Ws), oo.sinkhorn_normalize_gradient(W).astype(dtype), **tol)
    grad = oo.norm_loss_grad(Ws, factor=0.5)
    assert np.all(np.isfinite(grad))
    if scale > 1:
        ref = Ws.astype(np.float64) * (1 - 1 / (np.linalg.norm(W, axis=1, keepdims=True) * scale))
        assert_close(grad, ref.astype(dtype), rtol=1e-6)
        with pytest.raises(ValueError, match="W"):          # the loss itself is beyond the dtype's range
            oo.norm_loss(Ws, factor=0.5)
    else:
        assert_close(oo.norm_loss(Ws, factor=0.5), np.asarray(0.5 * 4), rtol=1e-12)


def test_project_to_norm_refuses_negative_rho():
    with pytest.raises(ValueError, match="rho"):
        oo.project_to_norm(np.ones((2, 2)), -1.0)
    with pytest.raises(ValueError, match="rho"):
        oo.project_to_norm(np.ones((2, 2)), np.nan)
