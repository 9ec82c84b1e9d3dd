"""weight_standardization and scaled_weight_standardization against float64 loop references."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from optnorm.norm import scaled_weight_standardization, weight_standardization
from optnorm.testing import assert_close, check_vjp


def ref_ws(w, eps, axis, ddof):
    w = np.moveaxis(np.asarray(w, np.float64), axis, 0)
    out = np.empty_like(w)
    for o in range(w.shape[0]):
        f = w[o]
        out[o] = (f - f.mean()) / np.sqrt(f.var(ddof=ddof) + eps)
    return np.moveaxis(out, 0, axis)


def ref_sws(w, gain, eps, gamma, fan_in=None):
    out = np.empty_like(w)
    for o in range(w.shape[0]):
        f = w[o]
        N = f.size if fan_in is None else fan_in
        out[o] = gamma * (1 if gain is None else gain[o]) * (f - f.mean()) / np.sqrt(max(N * f.var(), eps))
    return out


def test_weight_standardization(xp, rng):
    w = rng.standard_normal((4, 3, 2, 2)) * 0.1 + 0.3
    assert_close(weight_standardization(xp.asarray(w)), ref_ws(w, 1e-5, 0, 1), rtol=1e-12, atol=1e-14, xp=xp)
    assert_close(weight_standardization(xp.asarray(w), axis=-1, unbiased=False, eps=1e-3),
                 ref_ws(w, 1e-3, -1, 0), rtol=1e-12, atol=1e-14, xp=xp)
    y32 = weight_standardization(xp.asarray(w.astype(np.float32)))
    assert "float32" in str(y32.dtype)
    assert_close(y32, ref_ws(w, 1e-5, 0, 1).astype(np.float32), rtol=1e-4, atol=1e-5, xp=xp)
    # the official code's formula, in torch
    import torch
    t = torch.tensor(w)
    t = t - t.mean(dim=(1, 2, 3), keepdim=True)
    t = t / torch.pow(t.view(4, -1).var(dim=1) + 1e-5, 0.5).view(-1, 1, 1, 1)
    assert_close(weight_standardization(xp.asarray(w)), t.numpy(), rtol=1e-12, atol=1e-14, xp=xp)
    check_vjp("norm.weight_standardization", w)
    check_vjp("norm.weight_standardization", w, opts={"axis": 1, "unbiased": False})


def test_scaled_weight_standardization(xp, rng):
    w = rng.standard_normal((5, 6)) + 1
    g = rng.standard_normal(5)
    got = scaled_weight_standardization(xp.asarray(w), xp.asarray(g), gamma=1.7)
    assert_close(got, ref_sws(w, g, 1e-4, 1.7), rtol=1e-12, atol=1e-14, xp=xp)
    assert_close(scaled_weight_standardization(xp.asarray(w), fan_in=24), ref_sws(w, None, 1e-4, 1.0, 24),
                 rtol=1e-12, xp=xp)
    # clamped branch: a nearly constant filter
    w2 = w.copy()
    w2[1] = 0.5 + 1e-4 * rng.standard_normal(6)
    assert_close(scaled_weight_standardization(xp.asarray(w2)), ref_sws(w2, None, 1e-4, 1.0), rtol=1e-9, atol=1e-12,
                 xp=xp)
    check_vjp("norm.scaled_weight_standardization", w2, g, opts={"gamma": 1.3})
    check_vjp("norm.scaled_weight_standardization", w, g, opts={"fan_in": 20, "axis": 0})
    wt = np.moveaxis(w, 0, -1)
    assert_close(scaled_weight_standardization(xp.asarray(wt), xp.asarray(g), axis=-1),
                 np.moveaxis(ref_sws(w, g, 1e-4, 1.0), 0, -1), rtol=1e-12, xp=xp)


def test_adapters(rng):
    import jax
    import jax.numpy as jnp
    import torch
    from jax.test_util import check_grads

    import optnorm.jax as onj
    import optnorm.torch as ont

    w, g = rng.standard_normal((3, 2, 2)), rng.standard_normal(3)
    T = lambda v: torch.tensor(v, requires_grad=True)  # noqa: E731
    assert torch.autograd.gradcheck(ont.weight_standardization, (T(w),))
    assert torch.autograd.gradcheck(lambda a, b: ont.scaled_weight_standardization(a, b, gamma=2.0), (T(w), T(g)))
    check_grads(onj.weight_standardization, (jnp.asarray(w),), order=1, modes=["rev"])
    check_grads(onj.scaled_weight_standardization, (jnp.asarray(w), jnp.asarray(g)), order=1, modes=["rev"])
    out = jax.jit(jax.grad(lambda a: onj.scaled_weight_standardization(a)[0, 0, 0]))(jnp.asarray(w))
    assert out.shape == w.shape


@given(scale=st.sampled_from([1e-30, 1e-10, 1.0, 1e10, 1e30]), dtype=st.sampled_from([np.float32, np.float64]))
def test_extreme_magnitudes(scale, dtype):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 8))
    eps = 1e-300 if dtype == np.float64 else 1e-45
    got = weight_standardization((w * scale).astype(dtype), eps=eps)
    if scale * scale > 1e6 * eps:
        np.testing.assert_allclose(got, ref_ws(w, 0.0, 0, 1), rtol=1e-4, atol=1e-5)
    s = scaled_weight_standardization((w * scale).astype(dtype))
    assert np.all(np.isfinite(s))
    if scale >= 1:
        np.testing.assert_allclose(s, ref_sws(w, None, 1e-300, 1.0), rtol=1e-5, atol=1e-6)
    d = weight_standardization((w * scale).astype(dtype))   # default eps: tiny filters are shrunk, not blown up
    assert np.all(np.isfinite(d)) and np.max(np.abs(d)) <= 3


def test_bad_inputs():
    with pytest.raises(TypeError, match="w must have a real floating dtype"):
        weight_standardization(np.ones((2, 3), int))
    with pytest.raises(ValueError, match="w must have shape >= 2 dimensions"):
        weight_standardization(np.ones(3))
    with pytest.raises(ValueError, match=r"eps must be in \(0, inf\)"):
        weight_standardization(np.ones((2, 3)), eps=-1)
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        scaled_weight_standardization(np.ones((2, 3)), axis=2)
    with pytest.raises(ValueError, match="gain has shape"):
        scaled_weight_standardization(np.ones((2, 3)), np.ones(3))
    with pytest.raises(ValueError, match=r"fan_in must be in \[1, inf\)"):
        scaled_weight_standardization(np.ones((2, 3)), fan_in=0)
    with pytest.raises(ValueError, match="fan-in 1"):
        weight_standardization(np.ones((2, 1)))
