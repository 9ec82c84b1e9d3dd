"""EvoNorm-B0/S0 and Region Normalization (RN-B) against float64 references."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from optnorm.norm import evonorm_b0, evonorm_s0, region_norm
from optnorm.testing import assert_close, check_vjp


def ref_b0(x, rv, w, b, v, training, momentum, eps):
    N, C = x.shape[:2]
    y = np.empty_like(x)
    nrv = None if rv is None else rv.astype(np.float64).copy()
    for c in range(C):
        xc = x[:, c]
        if training:
            var = xc.var()
            if rv is not None:
                n = xc.size
                nrv[c] = (1 - momentum) * rv[c] + momentum * var * n / (n - 1)
        else:
            var = rv[c]
        left = np.sqrt(var + eps)
        for i in range(N):
            inst = np.sqrt(xc[i].var() + eps)
            right = (1 if v is None else v[c]) * xc[i] + inst
            y[i, c] = xc[i] / np.maximum(left, right) * (1 if w is None else w[c]) + (0 if b is None else b[c])
    return y, nrv


def ref_s0(x, w, b, v, G, eps):
    N, C = x.shape[:2]
    y = np.empty_like(x)
    for i in range(N):
        for g in range(G):
            cs = slice(g * C // G, (g + 1) * C // G)
            std = np.sqrt(x[i, cs].var() + eps)
            for c in range(cs.start, cs.stop):
                vv = 1 if v is None else v[c]
                y[i, c] = x[i, c] / (1 + np.exp(-vv * x[i, c])) / std * (1 if w is None else w[c]) + \
                    (0 if b is None else b[c])
    return y


def ref_rn(x, mask, wf, bf, wb, bb, eps):
    """Loop reference of RN-B: each region batch-normalized on its own pixels (eps inflated as the code)."""
    N, C = x.shape[:2]
    M = np.broadcast_to(mask, x.shape).astype(bool)
    total = x.size // C
    y = np.zeros_like(x)
    for c in range(C):
        for reg, wgt in ((M[:, c], wf), (~M[:, c], wb)):
            vals = x[:, c][reg]
            if vals.size == 0:
                continue
            mu, var = vals.mean(), vals.var()
            out = (x[:, c] - mu) / np.sqrt(var + eps * total / vals.size)
            y[:, c] += np.where(reg, out, 0.0) * (1 + (0 if wgt is None else wgt[c]))
        y[:, c] += (0 if bf is None else bf[c]) + (0 if bb is None else bb[c])
    return y


def rn_torch_code(x, mask, eps):
    """The official code's construction (fill with the region mean, affine-free BN, rescale), in torch."""
    import torch
    import torch.nn.functional as F
    x, mask = torch.tensor(x), torch.tensor(mask)
    out = 0
    for m in (mask, 1 - mask):
        region = x * m
        Sr = m.sum(dim=[0, 2, 3])
        Sr[Sr == 0] = 1
        mu = region.sum(dim=[0, 2, 3]) / Sr
        bn = F.batch_norm(region + (1 - m) * mu[None, :, None, None], None, None, training=True, eps=eps)
        out = out + bn * torch.sqrt(Sr / (x.shape[0] * x.shape[2] * x.shape[3]))[None, :, None, None]
    return out.numpy()


def test_evonorm_b0(xp, rng):
    x = rng.standard_normal((3, 4, 3, 2)) * 1.5
    rv, w, b, v = rng.random(4) + 0.5, rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(4)
    for training in (True, False):
        got = evonorm_b0(*(xp.asarray(a) for a in (x, rv, w, b, v)), training=training, momentum=0.2)
        ref = ref_b0(x, rv, w, b, v, training, 0.2, 1e-3)
        assert_close(got, ref, rtol=1e-11, atol=1e-13, xp=xp)
    y, r = evonorm_b0(xp.asarray(x))
    assert r is None
    assert_close(y, ref_b0(x, None, None, None, None, True, 0.1, 1e-3)[0], rtol=1e-11, xp=xp)
    y16 = evonorm_b0(xp.asarray(x.astype(np.float32)), xp.asarray(rv.astype(np.float32)))[0]
    assert "float32" in str(y16.dtype)
    check_vjp("norm.evonorm_b0", x, rv, w, b, v, opts={"momentum": 0.2})
    check_vjp("norm.evonorm_b0", x, rv, w, b, v, opts={"training": False})


def test_evonorm_s0(xp, rng):
    x = rng.standard_normal((2, 6, 3, 3))
    w, b, v = rng.standard_normal(6), rng.standard_normal(6), rng.standard_normal(6)
    got = evonorm_s0(*(xp.asarray(a) for a in (x, w, b, v)), groups=3)
    assert_close(got, ref_s0(x, w, b, v, 3, 1e-5), rtol=1e-11, atol=1e-13, xp=xp)
    assert_close(evonorm_s0(xp.asarray(x), groups=2, eps=1e-2), ref_s0(x, None, None, None, 2, 1e-2), rtol=1e-11, xp=xp)
    check_vjp("norm.evonorm_s0", x, w, b, v, opts={"groups": 3})
    check_vjp("norm.evonorm_s0", x[..., 0], w, None, v, opts={"groups": 6})


def test_region_norm(xp, rng):
    x = rng.standard_normal((2, 3, 4, 4)) * 2 + 1
    mask = (rng.random((2, 1, 4, 4)) > 0.6).astype(np.float64)
    wf, bf, wb, bb = (rng.standard_normal(3) for _ in range(4))
    got = region_norm(*(xp.asarray(a) for a in (x, mask, wf, bf, wb, bb)))
    assert_close(got, ref_rn(x, mask, wf, bf, wb, bb, 1e-5), rtol=1e-11, atol=1e-13, xp=xp)
    plain = region_norm(xp.asarray(x), xp.asarray(mask), eps=1e-3)
    assert_close(plain, rn_torch_code(x, mask, 1e-3), rtol=1e-10, atol=1e-12, xp=xp)
    # an empty foreground region
    assert_close(region_norm(xp.asarray(x), xp.asarray(np.zeros_like(mask))), rn_torch_code(x, 0 * mask, 1e-5),
                 rtol=1e-10, atol=1e-12, xp=xp)
    # a boolean mask
    assert_close(region_norm(xp.asarray(x), xp.asarray(mask > 0)), ref_rn(x, mask, None, None, None, None, 1e-5),
                 rtol=1e-11, atol=1e-13, xp=xp)
    check_vjp("norm.region_norm", x, mask, wf, bf, wb, bb)


def test_adapters(rng):
    import jax
    import jax.numpy as jnp
    import torch
    from jax.test_util import check_grads

    import optnorm.jax as onj
    import optnorm.torch as ont

    x = rng.standard_normal((2, 4, 3))
    rv, w, b, v = rng.random(4) + 0.5, rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(4)
    mask = (rng.random((2, 1, 3)) > 0.5).astype(np.float64)
    T = lambda a: torch.tensor(a, requires_grad=True)  # noqa: E731
    J = jnp.asarray
    assert torch.autograd.gradcheck(ont.evonorm_b0, tuple(map(T, (x, rv, w, b, v))))
    assert torch.autograd.gradcheck(lambda *a: ont.evonorm_s0(*a, groups=2), tuple(map(T, (x, w, b, v))))
    assert torch.autograd.gradcheck(lambda a, ww, bb: ont.region_norm(a, torch.tensor(mask), ww, bb, ww * 2, bb),
                                    tuple(map(T, (x, w, b))))
    check_grads(onj.evonorm_b0, tuple(map(J, (x, rv, w, b, v))), order=1, modes=["rev"])
    check_grads(lambda *a: onj.evonorm_b0(*a, training=False), tuple(map(J, (x, rv, w, b, v))), order=1,
                modes=["rev"])
    check_grads(lambda *a: onj.evonorm_s0(*a, groups=2), tuple(map(J, (x, w, b, v))), order=1, modes=["rev"])
    # (check_grads evaluates finite differences on NumPy copies: convert inside so the mask's library matches)
    check_grads(lambda a, ww, bb: onj.region_norm(J(a), J(mask), J(ww), J(bb)), tuple(map(J, (x, w, b))), order=1,
                modes=["rev"], eps=1e-6)
    g = jax.jit(jax.grad(lambda a: onj.evonorm_s0(a, groups=2).sum() + onj.region_norm(a, J(mask)).sum()
                         + onj.evonorm_b0(a)[0].sum()))(J(x))
    assert g.shape == x.shape


@given(scale=st.sampled_from([1e-6, 1e-2, 1.0, 1e3, 1e6]), dtype=st.sampled_from([np.float32, np.float64]))
def test_extreme_magnitudes(scale, dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 5))
    xs = (x * scale).astype(dtype)
    y = region_norm(xs, (rng.random((3, 1, 5)) > 0.5).astype(dtype), eps=1e-30 if dtype == np.float64 else 1e-20)
    assert np.all(np.isfinite(y))
    if scale >= 1e-2:
        np.testing.assert_allclose(
            evonorm_s0(xs, groups=2, eps=1e-12) / scale, ref_s0(x * scale, None, None, None, 2, 1e-12) / scale,
            rtol=1e-3 if dtype == np.float32 else 1e-9, atol=1e-3 if dtype == np.float32 else 1e-9)
    yb, _ = evonorm_b0(xs)
    assert np.all(np.isfinite(yb))


def test_bad_inputs():
    x = np.ones((2, 4, 3))
    with pytest.raises(ValueError, match="x must have shape"):
        evonorm_b0(np.ones((2, 4)))
    with pytest.raises(ValueError, match="running_var is required"):
        evonorm_b0(x, training=False)
    with pytest.raises(ValueError, match="v has shape"):
        evonorm_b0(x, None, None, None, np.ones(3))
    with pytest.raises(ValueError, match="groups=3 must divide"):
        evonorm_s0(x, groups=3)
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        evonorm_s0(np.ones((2, 4, 3), int), groups=2)
    with pytest.raises(ValueError, match="mask must be binary"):
        region_norm(x, np.full((2, 1, 3), 0.5))
    with pytest.raises(ValueError, match="mask must have shape"):
        region_norm(x, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"eps must be in \(0, inf\)"):
        region_norm(x, np.ones((2, 1, 3)), eps=0)
