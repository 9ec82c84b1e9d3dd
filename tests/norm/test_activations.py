"""selu, alpha_dropout, cosine_similarity, snr_distance against float64 references and torch."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from optnorm.norm import alpha_dropout, cosine_similarity, selu, snr_distance
from optnorm.testing import assert_close, check_vjp

from . import torch
import torch.nn.functional as F  # noqa: E402

LAM, ALP = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717


def test_selu(xp, rng):
    x = rng.standard_normal((4, 5)) * 3
    ref = np.array([LAM * v if v > 0 else LAM * ALP * np.expm1(v) for v in x.ravel()]).reshape(x.shape)
    assert_close(selu(xp.asarray(x)), ref, rtol=1e-14, atol=1e-15, xp=xp)
    assert_close(selu(xp.asarray(x)), F.selu(torch.tensor(x)).numpy(), rtol=1e-14, atol=1e-15, xp=xp)
    y32 = selu(xp.asarray(x.astype(np.float32)))
    assert "float32" in str(y32.dtype)
    assert_close(y32, ref.astype(np.float32), rtol=1e-6, atol=1e-6, xp=xp)
    check_vjp("norm.selu", x)


def test_alpha_dropout_statistics_and_formula(xp, rng):
    x = rng.standard_normal(200000)
    p = 0.2
    y = alpha_dropout(xp.asarray(x), p=p, seed=3)
    y_np = np.asarray(__import__("optnorm")._lib.compat.to_numpy(y))
    ap = -LAM * ALP
    a = ((1 - p) * (1 + p * ap * ap)) ** -0.5
    b = -a * ap * p
    dropped = np.isclose(y_np, a * ap + b, rtol=0, atol=1e-12)
    assert abs(dropped.mean() - p) < 0.01
    assert_close(y_np[~dropped], a * x[~dropped] + b, rtol=1e-12)
    assert abs(y_np.mean()) < 0.01 and abs(y_np.var() - 1) < 0.02
    t = F.alpha_dropout(torch.tensor(x), p=p, training=True).numpy()
    assert abs(t.mean() - y_np.mean()) < 0.02 and abs(t.var() - y_np.var()) < 0.03
    assert set(np.round(t[np.isclose(t, a * ap + b)], 10)) == {round(a * ap + b, 10)}
    # reproducible by seed, identity in eval, zeros at p = 1
    assert_close(alpha_dropout(xp.asarray(x), p=p, seed=3), y_np, rtol=0, xp=xp)
    assert_close(alpha_dropout(xp.asarray(x), p=p, training=False), x, rtol=0, xp=xp)
    assert_close(alpha_dropout(xp.asarray(x[:5]), p=1.0), np.zeros(5), rtol=0, xp=xp)
    check_vjp("norm.alpha_dropout", rng.standard_normal((3, 4)), opts={"p": 0.3, "seed": 5})


def ref_cos(a, b, axis, eps):
    a, b = np.broadcast_arrays(a, b)
    a, b = np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1)
    out = np.empty(a.shape[:-1])
    for idx in np.ndindex(out.shape):
        u, v = a[idx], b[idx]
        out[idx] = np.dot(u / max(np.linalg.norm(u), eps), v / max(np.linalg.norm(v), eps))
    return out


def test_cosine_similarity(xp, rng):
    a, b = rng.standard_normal((4, 1, 6)), rng.standard_normal((3, 6))
    a[0, 0] *= 1e-10   # below eps: clamped branch
    for axis in (-1, 0):
        aa, bb = (a, b) if axis == -1 else (np.moveaxis(np.broadcast_to(a, (4, 3, 6)), -1, 0), np.moveaxis(b, -1, 0)[:, None])
        got = cosine_similarity(xp.asarray(aa), xp.asarray(bb), axis=axis, eps=1e-8)
        assert_close(got, ref_cos(aa, bb, axis, 1e-8), rtol=1e-12, atol=1e-14, xp=xp)
        assert_close(got, F.cosine_similarity(torch.tensor(aa), torch.tensor(bb), dim=axis).numpy(), rtol=1e-10,
                     atol=1e-14, xp=xp)
    a[0, 0] *= 1e10
    check_vjp("norm.cosine_similarity", a, b, opts={"eps": 1e-8})
    check_vjp("norm.cosine_similarity", rng.standard_normal((3, 4)) * 1e-3, rng.standard_normal((3, 4)),
              opts={"eps": 0.01})


def test_snr_distance(xp, rng):
    a, b = rng.standard_normal((5, 8)), rng.standard_normal((5, 8))
    ref = np.array([np.var(b[i] - a[i]) / np.var(a[i]) for i in range(5)])
    assert_close(snr_distance(xp.asarray(a), xp.asarray(b)), ref, rtol=1e-12, xp=xp)
    c = rng.standard_normal((3, 8))
    refp = np.array([[np.var(c[j] - a[i], ddof=1) / np.var(a[i], ddof=1) for j in range(3)] for i in range(5)])
    assert_close(snr_distance(xp.asarray(a), xp.asarray(c), pairwise=True), refp, rtol=1e-10, xp=xp)
    # pytorch-metric-learning's SNRDistance: var(ref - query)/var(query), query = anchor
    ta, tc = torch.tensor(a), torch.tensor(c)
    pml = torch.var(tc[None] - ta[:, None], dim=-1) / torch.var(ta, dim=-1)[:, None]
    assert_close(snr_distance(xp.asarray(a), xp.asarray(c), pairwise=True), pml.numpy(), rtol=1e-10, xp=xp)
    check_vjp("norm.snr_distance", a, b)
    check_vjp("norm.snr_distance", a, c, opts={"pairwise": True})
    check_vjp("norm.snr_distance", a[:, None, :], c[None], opts={"axis": -1})


def test_adapters(rng):
    import jax
    import jax.numpy as jnp
    from jax.test_util import check_grads

    import optnorm.jax as onj
    import optnorm.torch as ont

    T = lambda v: torch.tensor(v, requires_grad=True)  # noqa: E731
    x, a, b, c = rng.standard_normal((3, 4)), rng.standard_normal((3, 5)), rng.standard_normal((3, 5)), \
        rng.standard_normal((2, 5))
    assert torch.autograd.gradcheck(ont.selu, (T(x),))
    assert torch.autograd.gradcheck(lambda v: ont.alpha_dropout(v, p=0.3, seed=1), (T(x),))
    assert torch.autograd.gradcheck(ont.cosine_similarity, (T(a), T(b)))
    assert torch.autograd.gradcheck(ont.snr_distance, (T(a), T(b)))
    assert torch.autograd.gradcheck(lambda u, v: ont.snr_distance(u, v, pairwise=True), (T(a), T(c)))
    J = jnp.asarray
    check_grads(onj.selu, (J(x),), order=1, modes=["rev"])
    check_grads(lambda v: onj.alpha_dropout(v, p=0.3, seed=1), (J(x),), order=1, modes=["rev"])
    check_grads(onj.cosine_similarity, (J(a), J(b)), order=1, modes=["rev"])
    check_grads(onj.snr_distance, (J(a), J(b)), order=1, modes=["rev"])
    check_grads(lambda u, v: onj.snr_distance(u, v, pairwise=True), (J(a), J(c)), order=1, modes=["rev"])
    g = jax.jit(jax.grad(lambda u: onj.cosine_similarity(u, J(b)).sum() + onj.selu(u).sum()))(J(a))
    assert g.shape == a.shape


@given(scale=st.sampled_from([1e-30, 1e-12, 1.0, 1e12, 1e30]), dtype=st.sampled_from([np.float32, np.float64]))
def test_extreme_magnitudes(scale, dtype):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    got = cosine_similarity((a * scale).astype(dtype), (b * scale).astype(dtype), eps=1e-300 if dtype == np.float64
                            else 1e-38)
    np.testing.assert_allclose(got, ref_cos(a, b, -1, 1e-300), rtol=1e-5 if dtype == np.float32 else 1e-12)
    s = snr_distance((a * scale).astype(dtype), (b * scale).astype(dtype))
    np.testing.assert_allclose(s, [np.var(b[i] - a[i]) / np.var(a[i]) for i in range(4)], rtol=1e-4)
    sp = snr_distance((a * scale).astype(dtype), (b[:3] * scale).astype(dtype), pairwise=True)
    np.testing.assert_allclose(sp, [[np.var(b[j] - a[i]) / np.var(a[i]) for j in range(3)] for i in range(4)],
                               rtol=1e-4)
    y = selu(np.array([-scale, scale], dtype))
    assert np.all(np.isfinite(y)) and y[0] >= -LAM * ALP - 1e-6


def test_bad_inputs():
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        selu(np.arange(3))
    with pytest.raises(ValueError, match="p must be in"):
        alpha_dropout(np.ones(3), p=1.5)
    with pytest.raises(TypeError, match="seed"):
        alpha_dropout(np.ones(3), p=0.5, seed="a")
    with pytest.raises(ValueError, match="x2 .* and of x1 .* do not broadcast"):
        cosine_similarity(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"eps must be in \(0, inf\)"):
        cosine_similarity(np.ones(3), np.ones(3), eps=0)
    with pytest.raises(TypeError, match="x2 must have a real floating dtype"):
        cosine_similarity(np.ones(3), np.ones(3, int))
    with pytest.raises(ValueError, match="same last dimension"):
        snr_distance(np.ones((2, 3)), np.ones((2, 4)), pairwise=True)
    with pytest.raises(TypeError, match="anchor is numpy, other is torch"):
        snr_distance(np.ones(3), torch.ones(3))


# ------------------------------------------------------------------------------------------ #13 regressions
def test_snr_distance_of_a_constant_anchor_raises():
    """A zero (or constant) anchor has Var = 0: no distance; it returned inf/NaN silently."""
    b = np.array([1.0, 2.0, 4.0])
    for anchor in (np.zeros(3), np.full(3, 2.5)):
        with pytest.raises(ValueError, match="anchor has zero variance"):
            snr_distance(anchor, b)
        with pytest.raises(ValueError, match="anchor has zero variance"):
            snr_distance(np.stack([anchor, b]), np.stack([b, b]), pairwise=True)


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_snr_distance_at_extreme_magnitudes(scale, rng):
    """Variances in units of the rows' largest entries: a common scale changes nothing (no under/overflow)."""
    a, b = rng.standard_normal((3, 6)), rng.standard_normal((3, 6))
    assert_close(snr_distance(a * scale, b * scale), snr_distance(a, b), rtol=1e-12)
    assert_close(snr_distance(a * scale, b * scale, pairwise=True), snr_distance(a, b, pairwise=True), rtol=1e-10)
    # a tiny anchor against O(1) others: the ratio (~1e600) overflows float64 -> a clear error
    with pytest.raises(ValueError, match="overflows"):
        snr_distance(a * 1e-300, b)


@pytest.mark.parametrize("seed", ["abc", -1, 1.5, True])
def test_alpha_dropout_rejects_bad_seeds(seed):
    with pytest.raises((TypeError, ValueError), match="seed"):
        alpha_dropout(np.ones(4), seed=seed)
    y = alpha_dropout(np.ones(4), seed=np.random.default_rng(0))
    assert_close(y, alpha_dropout(np.ones(4), seed=0), rtol=0)
