"""batch_norm (torch peer, sample weights), alpha_batch_norm, batch_channel_norm, power_norm."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from optnorm._lib import compat, ops
from optnorm.norm import alpha_batch_norm, batch_channel_norm, batch_norm, power_norm, unified_norm
from optnorm.testing import assert_close, check_vjp

from . import F, torch


# ---------------------------------------------------------------- float64 references (loops over channels)
def ref_bn(x, rm, rv, w, b, sw, training, momentum, eps, axis):
    x = np.moveaxis(np.asarray(x, np.float64), axis, 1)
    N, C = x.shape[:2]
    y = np.empty_like(x)
    nrm, nrv = (None if rm is None else np.array(rm, np.float64)), (None if rv is None else np.array(rv, np.float64))
    for c in range(C):
        xc = x[:, c].reshape(N, -1)
        M = xc.shape[1]
        if training:
            om = np.ones(N) / N if sw is None else np.asarray(sw, np.float64) / np.sum(sw)
            om = np.repeat(om[:, None] / M, M, axis=1)
            mu = np.sum(om * xc)
            var = np.sum(om * (xc - mu) ** 2)
            k = 1.0 / (1.0 - np.sum(om ** 2))
            if rm is not None:
                nrm[c] = (1 - momentum) * rm[c] + momentum * mu
                nrv[c] = (1 - momentum) * rv[c] + momentum * k * var
        else:
            mu, var = rm[c], rv[c]
        yc = (x[:, c] - mu) / np.sqrt(var + eps)
        y[:, c] = yc * (1 if w is None else w[c]) + (0 if b is None else b[c])
    return np.moveaxis(y, 1, axis), nrm, nrv


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_matches_torch_and_reference(xp, rng, training, affine):
    x = rng.standard_normal((6, 3, 4, 2)) * 2 + 1
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    w, b = (rng.standard_normal(3), rng.standard_normal(3)) if affine else (None, None)
    a = lambda v: None if v is None else xp.asarray(v)  # noqa: E731
    y, nrm, nrv = batch_norm(a(x), a(rm), a(rv), a(w), a(b), training=training, momentum=0.3, eps=1e-4)
    ry, rrm, rrv = ref_bn(x, rm, rv, w, b, None, training, 0.3, 1e-4, 1)
    assert_close(y, ry, rtol=1e-10, atol=1e-12, xp=xp)
    assert_close(nrm, rrm, rtol=1e-12, xp=xp)
    assert_close(nrv, rrv, rtol=1e-12, xp=xp)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    t = lambda v: None if v is None else torch.tensor(v)  # noqa: E731
    ty = F.batch_norm(torch.tensor(x), trm, trv, t(w), t(b), training, 0.3, 1e-4)
    assert_close(y, ty.numpy(), rtol=1e-10, atol=1e-12, xp=xp)
    assert_close(nrm, trm.numpy(), rtol=1e-12, xp=xp)
    assert_close(nrv, trv.numpy(), rtol=1e-12, xp=xp)


def test_batch_norm_no_running_stats_and_axis(xp, rng):
    x = rng.standard_normal((5, 7, 3))
    y, rm, rv = batch_norm(xp.asarray(x), axis=-1)
    assert rm is None and rv is None
    assert_close(y, ref_bn(x, None, None, None, None, None, True, 0.1, 1e-5, 2)[0], rtol=1e-10, atol=1e-12, xp=xp)


def test_batch_norm_float32_and_float16(xp, rng):
    x = rng.standard_normal((8, 4)).astype(np.float32)
    y, rm, rv = batch_norm(xp.asarray(x), xp.asarray(np.zeros(4, np.float32)), xp.asarray(np.ones(4, np.float32)))
    assert_close(y, ref_bn(x, np.zeros(4), np.ones(4), None, None, None, True, 0.1, 1e-5, 1)[0], rtol=1e-5,
                 atol=1e-5, check_dtype="float32", xp=xp)
    assert "float32" in str(y.dtype)
    assert "float32" in str(rm.dtype)
    if hasattr(xp, "float16"):
        y16, _, _ = batch_norm(xp.asarray(x.astype(np.float16)))
        assert "float16" in str(y16.dtype)
        assert_close(y16, ref_bn(x.astype(np.float16), None, None, None, None, None, True, 0.1, 1e-5, 1)[0],
                     rtol=0, atol=5e-3, check_dtype="float16", xp=xp)


def test_batch_norm_sample_weight(xp, rng):
    x = rng.standard_normal((6, 3, 5))
    sw = rng.random(6) + 0.1
    rm, rv = np.zeros(3), np.ones(3)
    y, nrm, nrv = batch_norm(xp.asarray(x), xp.asarray(rm), xp.asarray(rv), sample_weight=xp.asarray(sw))
    ry, rrm, rrv = ref_bn(x, rm, rv, None, None, sw, True, 0.1, 1e-5, 1)
    assert_close(y, ry, rtol=1e-10, atol=1e-12, xp=xp)
    assert_close(nrm, rrm, rtol=1e-12, xp=xp)
    assert_close(nrv, rrv, rtol=1e-12, xp=xp)
    # uniform weights are exactly torch's batch_norm (incl. the n/(n-1) running update)
    yu = batch_norm(xp.asarray(x), xp.asarray(rm), xp.asarray(rv), sample_weight=xp.asarray(np.full(6, 3.0)))
    y0 = batch_norm(xp.asarray(x), xp.asarray(rm), xp.asarray(rv))
    for a, b in zip(yu, y0):
        assert_close(a, compat.to_numpy(b), rtol=1e-12, atol=1e-14, xp=xp)


def test_batch_norm_vjp(rng):
    x = rng.standard_normal((5, 3, 2))
    rm, rv, w, b = rng.standard_normal(3), rng.random(3) + 0.5, rng.standard_normal(3), rng.standard_normal(3)
    sw = rng.random(5) + 0.2
    check_vjp("norm.batch_norm", x, rm, rv, w, b, None, opts={"momentum": 0.2})
    check_vjp("norm.batch_norm", x, rm, rv, w, b, sw, opts={"momentum": 0.2})
    # running stats None -> None outputs (check_vjp cannot compare None outputs): finite differences by hand
    batch_norm_fwd, batch_norm_bwd = ops.get("batch_norm").fwd, ops.get("batch_norm").bwd
    from optnorm.testing import numerical_vjp
    gy = rng.standard_normal(x.shape)
    _, res = batch_norm_fwd(x, None, None, w, None, sw)
    ana = batch_norm_bwd(res, (gy, None, None))
    num = numerical_vjp(lambda *a: batch_norm(*a)[0], [x, None, None, w, None, sw], gy, argnums=[0, 3, 5])
    for i in (0, 3, 5):
        assert_close(ana[i], num[i], rtol=1e-6, atol=1e-8)
    check_vjp("norm.batch_norm", x, rm, rv, w, b, None, opts={"training": False})


def test_alpha_batch_norm(xp, rng):
    x = rng.standard_normal((6, 3, 4)) + 2
    rm, rv, w, b = rng.standard_normal(3), rng.random(3) + 0.5, rng.standard_normal(3), rng.standard_normal(3)
    al = 0.3
    y = alpha_batch_norm(*(xp.asarray(v) for v in (x, rm, rv, w, b)), alpha=al, eps=1e-3)
    mub, varb = x.mean(axis=(0, 2)), x.var(axis=(0, 2), ddof=1)
    mu, var = (1 - al) * rm + al * mub, (1 - al) * rv + al * varb
    ref = (x - mu[:, None]) / np.sqrt(var[:, None] + 1e-3) * w[:, None] + b[:, None]
    assert_close(y, ref, rtol=1e-10, atol=1e-12, xp=xp)
    # the test-time-adaptation AlphaBatchNorm construction: a momentum-1 BatchNorm gives the batch statistics
    bn = torch.nn.BatchNorm1d(3, affine=False, momentum=1.0).double()
    bn(torch.tensor(x))
    tm = (1 - al) * torch.tensor(rm) + al * bn.running_mean
    tv = (1 - al) * torch.tensor(rv) + al * bn.running_var
    ty = F.batch_norm(torch.tensor(x), tm, tv, torch.tensor(w), torch.tensor(b), False, 0.0, 1e-3)
    assert_close(y, ty.numpy(), rtol=1e-10, atol=1e-12, xp=xp)
    # alpha = 0 is eval-mode BN, alpha = 1 with the biased variance is train-mode BN
    y0 = alpha_batch_norm(*(xp.asarray(v) for v in (x, rm, rv)), alpha=0.0)
    assert_close(y0, ref_bn(x, rm, rv, None, None, None, False, 0.1, 1e-5, 1)[0], rtol=1e-10, xp=xp)
    y1 = alpha_batch_norm(*(xp.asarray(v) for v in (x, rm, rv)), alpha=1.0, unbiased=False)
    assert_close(y1, ref_bn(x, rm, rv, None, None, None, True, 0.1, 1e-5, 1)[0], rtol=1e-10, atol=1e-12, xp=xp)
    check_vjp("norm.alpha_batch_norm", x, rm, rv, w, b, opts={"alpha": al})
    check_vjp("norm.alpha_batch_norm", x, rm, rv, w, None, opts={"alpha": 0.8, "unbiased": False})


def ref_bcn(x, rm, rv, w, b, gw, gb, G, training, momentum, eps):
    z, nrm, nrv = ref_bn(x, rm, rv, w, b, None, training, momentum, eps, 1)
    N, C = x.shape[:2]
    z = z.reshape(N, G, -1)
    y = np.empty_like(z)
    for n in range(N):
        for g in range(G):
            v = z[n, g]
            y[n, g] = (v - v.mean()) / np.sqrt(v.var() + eps) * (1 if gw is None else gw[g]) + (0 if gb is None else gb[g])
    return y.reshape(x.shape), nrm, nrv


def test_batch_channel_norm(xp, rng):
    x = rng.standard_normal((3, 4, 3, 2))
    rm, rv, w, b = rng.standard_normal(4), rng.random(4) + 0.5, rng.standard_normal(4), rng.standard_normal(4)
    gw, gb = rng.standard_normal(2), rng.standard_normal(2)
    for training in (True, False):
        out = batch_channel_norm(*(xp.asarray(v) for v in (x, rm, rv, w, b, gw, gb)), groups=2, training=training)
        ref = ref_bcn(x, rm, rv, w, b, gw, gb, 2, training, 0.1, 1e-5)
        assert_close(out, ref, rtol=1e-9, atol=1e-11, xp=xp)
        check_vjp("norm.batch_channel_norm", x, rm, rv, w, b, gw, gb, opts={"groups": 2, "training": training})


def ref_power(x, phi, ge, w, b, step, wu, af, ab, eps, gy):
    """PowerNorm forward + the official approximate backward, channel last, float64."""
    xf = x.reshape(-1, x.shape[-1])
    psi = np.mean(xf ** 2, axis=0)
    z = xf / np.sqrt(psi + eps) if step <= wu else xf / np.sqrt(phi + eps)
    new = phi.copy()
    if step < wu:
        new = new * (step - 1) / step + psi / step
    new = af * new + (1 - af) * psi
    y = z * w + b
    g = gy.reshape(xf.shape) * w
    ag = g - (1 - ab) * ge * z
    nge = ge + np.mean(ag * z, axis=0)
    dx = ag / np.sqrt(psi + eps)
    return y.reshape(x.shape), new, dx.reshape(x.shape), nge


@pytest.mark.parametrize("step", [1, 3, 7])
def test_power_norm_forward_and_paper_backward(xp, rng, step):
    x = rng.standard_normal((4, 3, 5))
    phi, ge, w, b = rng.random(5) + 0.5, rng.standard_normal(5) * 0.1, rng.standard_normal(5), rng.standard_normal(5)
    gy = rng.standard_normal(x.shape)
    ry, rphi, rdx, rge = ref_power(x, phi, ge, w, b, step, 5, 0.9, 0.8, 1e-5, gy)
    y, nphi = power_norm(*(xp.asarray(v) for v in (x, phi, ge, w, b)), step=step, warmup_iters=5, alpha_bkw=0.8)
    assert_close(y, ry, rtol=1e-10, atol=1e-12, xp=xp)
    assert_close(nphi, rphi, rtol=1e-12, xp=xp)
    power_norm_fwd, power_norm_bwd = ops.get("power_norm").fwd, ops.get("power_norm").bwd
    _, res = power_norm_fwd(*(xp.asarray(v) for v in (x, phi, ge, w, b)), step=step, warmup_iters=5, alpha_bkw=0.8)
    dx, _, dge, dw, db = power_norm_bwd(res, (xp.asarray(gy), None))
    assert_close(dx, rdx, rtol=1e-10, atol=1e-12, xp=xp)
    assert_close(dge, rge, rtol=1e-10, atol=1e-12, xp=xp)
    assert_close(dw, np.sum(gy * ry.reshape(gy.shape) * 0 + gy * ((ry - b) / w), axis=(0, 1)), rtol=1e-9, xp=xp)
    assert_close(db, gy.sum(axis=(0, 1)), rtol=1e-12, xp=xp)
    # eval
    ye, pe = power_norm(*(xp.asarray(v) for v in (x, phi, ge, w, b)), step=step, training=False)
    assert_close(ye, x / np.sqrt(phi + 1e-5) * w + b, rtol=1e-12, xp=xp)
    assert_close(pe, phi, rtol=0, xp=xp)


@pytest.mark.parametrize("step", [2, 9])
def test_power_norm_exact_vjp(rng, step):
    from optnorm.testing import numerical_vjp
    power_norm_fwd, power_norm_bwd = ops.get("power_norm").fwd, ops.get("power_norm").bwd
    x = rng.standard_normal((4, 3))
    phi, w, b = rng.random(3) + 0.5, rng.standard_normal(3), rng.standard_normal(3)
    opts = dict(step=step, warmup_iters=5, backward="exact")
    gy, gp = rng.standard_normal(x.shape), rng.standard_normal(3)
    _, res = power_norm_fwd(x, phi, None, w, b, **opts)
    ana = power_norm_bwd(res, (gy, gp))
    num = numerical_vjp(lambda *a: power_norm(*a, **opts), [x, phi, None, w, b], (gy, gp), argnums=[0, 1, 3, 4])
    for i in (0, 1, 3, 4):
        assert_close(ana[i], num[i], rtol=1e-6, atol=1e-8)


def test_adapters_gradcheck_and_check_grads(rng):
    import jax
    import jax.numpy as jnp
    from jax.test_util import check_grads

    import optnorm.jax as onj
    import optnorm.torch as ont

    x = rng.standard_normal((4, 2, 3))
    rm, rv, w, b, sw = rng.standard_normal(2), rng.random(2) + 0.5, rng.standard_normal(2), rng.standard_normal(2), \
        rng.random(4) + 0.3
    T = lambda v: torch.tensor(v, requires_grad=True)  # noqa: E731
    assert torch.autograd.gradcheck(lambda *a: ont.batch_norm(*a, momentum=0.2), tuple(map(T, (x, rm, rv, w, b, sw))))
    assert torch.autograd.gradcheck(lambda *a: ont.alpha_batch_norm(*a, alpha=0.4), tuple(map(T, (x, rm, rv, w, b))))
    x4 = rng.standard_normal((3, 4, 2))
    assert torch.autograd.gradcheck(lambda *a: ont.batch_channel_norm(*a, groups=2),
                                    tuple(map(T, (x4, rm.repeat(2), rv.repeat(2), w.repeat(2), b.repeat(2), w, b))))
    phi, wc, bc = rng.random(3) + 0.5, rng.standard_normal(3), rng.standard_normal(3)
    assert torch.autograd.gradcheck(
        lambda a, p, ww, bb: ont.power_norm(a, p, None, ww, bb, step=2, warmup_iters=5, backward="exact"),
        tuple(map(T, (x, phi, wc, bc))))
    J = jnp.asarray
    check_grads(lambda *a: onj.batch_norm(*a, momentum=0.2), tuple(map(J, (x, rm, rv, w, b, sw))), order=1,
                modes=["rev"])
    check_grads(lambda *a: onj.batch_norm(*a, training=False), tuple(map(J, (x, rm, rv, w, b))), order=1,
                modes=["rev"])
    check_grads(lambda *a: onj.alpha_batch_norm(*a, alpha=0.4), tuple(map(J, (x, rm, rv, w, b))), order=1,
                modes=["rev"])
    check_grads(lambda *a: onj.batch_channel_norm(*a, groups=2),
                tuple(map(J, (x4, np.tile(rm, 2), np.tile(rv, 2), np.tile(w, 2), np.tile(b, 2), w, b))), order=1,
                modes=["rev"])
    check_grads(lambda a, p, ww, bb: onj.power_norm(a, p, None, ww, bb, step=9, warmup_iters=5, backward="exact"),
                tuple(map(J, (x, phi, wc, bc))), order=1, modes=["rev"])
    g = jax.jit(jax.grad(lambda a: onj.batch_norm(a, J(rm), J(rv))[0].sum() + onj.batch_norm(a)[0][0, 0, 0]))(J(x))
    assert g.shape == x.shape
    # the torch adapter with running stats None (None outputs)
    xt = T(x)
    y, a1, a2 = ont.batch_norm(xt)
    assert a1 is None and a2 is None
    y[0, 0, 0].backward()
    assert xt.grad is not None
    # power_norm paper backward: the new grad_ema comes back in grad_ema's slot
    xt, ge = T(x), torch.zeros(3, dtype=torch.float64, requires_grad=True)
    y, _ = ont.power_norm(xt, torch.tensor(phi), ge, step=2, warmup_iters=5)
    y.backward(torch.ones_like(y))
    zz = x.reshape(-1, 3) / np.sqrt(np.mean(x.reshape(-1, 3) ** 2, axis=0) + 1e-5)
    assert_close(ge.grad, np.mean(zz, axis=0), rtol=1e-10)


@given(scale=st.sampled_from([1e-30, 1e-8, 1.0, 1e8, 1e30]), shift=st.sampled_from([0.0, 1.0, 1e6]))
def test_batch_norm_extreme_magnitudes(scale, shift):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((16, 3)) + shift) * scale
    y, rm, rv = batch_norm(x, np.zeros(3), np.ones(3), eps=1e-300)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(rv))
    ref = (x - x.mean(0)) / x.std(0)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
    y32, _, _ = batch_norm(x.astype(np.float32) if scale < 1e30 else (x / scale).astype(np.float32))
    assert np.all(np.isfinite(y32))


def test_bad_inputs():
    x = np.ones((4, 3))
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        batch_norm(np.ones((4, 3), int))
    with pytest.raises(ValueError, match="running_mean has shape"):
        batch_norm(x, np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="running_mean and running_var"):
        batch_norm(x, np.zeros(3))
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        batch_norm(x, training=False)
    with pytest.raises(ValueError, match="eps"):
        batch_norm(x, eps=0.0)
    with pytest.raises(ValueError, match="momentum"):
        batch_norm(x, momentum=1.5)
    with pytest.raises(ValueError, match="sample_weight has shape"):
        batch_norm(x, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="sample_weight must be >= 0"):
        batch_norm(x, sample_weight=-np.ones(4))
    with pytest.raises(ValueError, match="axis"):
        batch_norm(x, axis=2)
    with pytest.raises(ValueError, match="more than 1"):
        batch_norm(np.ones((1, 3)))
    with pytest.raises(TypeError, match="running_mean is torch"):
        batch_norm(x, torch.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="groups=3 must divide"):
        batch_channel_norm(np.ones((2, 4, 3)), groups=3)
    with pytest.raises(ValueError, match="alpha"):
        alpha_batch_norm(x, np.zeros(3), np.ones(3), alpha=2.0)
    with pytest.raises(TypeError, match="alpha"):
        alpha_batch_norm(x, np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="grad_ema is required"):
        power_norm(x, np.ones(3), step=1)
    with pytest.raises(ValueError, match=r"step must be in \[1, inf\)"):
        power_norm(x, np.ones(3), np.zeros(3), step=0)
    with pytest.raises(ValueError, match="backward must be one of"):
        power_norm(x, np.ones(3), np.zeros(3), step=1, backward="x")


# ---------------------------------------------------------------- unified_norm
def ref_un_step(x, rv, ema, bx, bg, w, b, k, wu, of, eps, m, gy):
    """One training step of the official UN (channel last), forward + gradient compensation, float64 copies."""
    rv, ema, bx, bg = rv.copy(), ema.copy(), bx.copy(), bg.copy()
    xf = x.reshape(-1, x.shape[-1])
    W, Wb = bx.shape[0], bg.shape[0]
    skip = W <= 1
    x2 = (xf * xf).mean(0)
    rec = np.var(np.sqrt(bx), ddof=1)
    bx[k % W] = x2
    if k >= wu and of:
        am, gmv = bx.mean(0), np.exp(np.mean(np.log(bx), 0))
        if np.sum(am - gmv > rec * W) > 0:
            bx[k % W] = rv
            skip = True
    var = x2 if (k <= W or k < wu or skip) else np.exp(np.mean(np.log(bx), 0))
    r = np.sqrt(var + eps) / np.sqrt(rv + eps)
    r = np.ones_like(r) if (k <= max(1000, wu) or skip) else np.clip(r, 0.2, 5)
    z = xf / np.sqrt(var + eps)
    new_rv = m * rv + (1 - m) * var
    y = w * z + b
    g = gy.reshape(xf.shape) * w * r
    gz = (g * z).mean(0)
    bg[k % Wb] = ema if skip else gz
    mean_gz = gz if (k <= Wb or k < wu or skip) else bg.mean(0)
    ema = ema * m + (1 - m) * mean_gz
    ag = g - (mean_gz if skip else ema) * z
    dx = ag / np.sqrt(var + eps)
    dw = (gy.reshape(xf.shape) * r * z).sum(0)
    return y.reshape(x.shape), new_rv, bx, dx.reshape(x.shape), dw, ema, bg


@pytest.mark.parametrize("k,of", [(1, False), (3, False), (6, False), (1200, False), (1200, True), (1201, True)])
def test_unified_norm_matches_official_rule(xp, rng, k, of):
    from optnorm.norm import unified_norm
    unified_norm_fwd, unified_norm_bwd = ops.get("unified_norm").fwd, ops.get("unified_norm").bwd
    x = rng.standard_normal((3, 4, 5)) * 1.3
    rv, ema = rng.random(5) + 0.5, rng.standard_normal(5) * 0.1
    bx = rng.random((3, 5)) + 0.5
    if k == 1201:
        bx[1, 2] = 40.0          # (step 1200 takes the skip branch, step 1201 the clamped-ratio branch)
    bg = rng.standard_normal((2, 5)) * 0.1
    w, b = rng.standard_normal(5), rng.standard_normal(5)
    gy = rng.standard_normal(x.shape)
    opts = dict(step=k, warmup_iters=5, outlier_filtration=of, momentum=0.8)
    ref = ref_un_step(x, rv, ema, bx, bg, w, b, k, 5, of, 1e-5, 0.8, gy)
    A = lambda *a: tuple(xp.asarray(t) for t in a)  # noqa: E731
    y, nrv, nbx = unified_norm(*A(x, rv, ema, bx, bg, w, b), **opts)
    assert_close(y, ref[0], rtol=1e-10, atol=1e-12, xp=xp)
    assert_close(nrv, ref[1], rtol=1e-12, xp=xp)
    assert_close(nbx, ref[2], rtol=1e-12, xp=xp)
    _, res = unified_norm_fwd(*A(x, rv, ema, bx, bg, w, b), **opts)
    dx, _, dge, _, dbg, dw, db = unified_norm_bwd(res, (xp.asarray(gy), None, None))
    assert_close(dx, ref[3], rtol=1e-9, atol=1e-11, xp=xp)
    assert_close(dw, ref[4], rtol=1e-9, atol=1e-11, xp=xp)
    assert_close(dge, ref[5], rtol=1e-10, atol=1e-12, xp=xp)
    assert_close(dbg, ref[6], rtol=1e-10, atol=1e-12, xp=xp)
    # eval
    ye, rve, bxe = unified_norm(*A(x, rv, ema, bx, bg, w, b), step=k, training=False)
    assert_close(ye, x / np.sqrt(rv + 1e-5) * w + b, rtol=1e-12, xp=xp)


@pytest.mark.parametrize("k", [2, 9])
def test_unified_norm_exact_vjp(rng, k):
    from optnorm.norm import unified_norm
    unified_norm_fwd, unified_norm_bwd = ops.get("unified_norm").fwd, ops.get("unified_norm").bwd
    from optnorm.testing import numerical_vjp
    x = rng.standard_normal((4, 3))
    rv, bx, w, b = rng.random(3) + 0.5, rng.random((3, 3)) + 0.5, rng.standard_normal(3), rng.standard_normal(3)
    opts = dict(step=k, warmup_iters=4, backward="exact")
    gs = (rng.standard_normal(x.shape), rng.standard_normal(3), rng.standard_normal((3, 3)))
    _, res = unified_norm_fwd(x, rv, None, bx, None, w, b, **opts)
    ana = unified_norm_bwd(res, gs)
    num = numerical_vjp(lambda *a: unified_norm(*a, **opts), [x, rv, None, bx, None, w, b], gs,
                        argnums=[0, 1, 3, 5, 6])
    for i in (0, 1, 3, 5, 6):
        assert_close(ana[i], num[i], rtol=1e-6, atol=1e-8)
    check_vjp("norm.unified_norm", x, rv, None, bx, None, w, b, opts=opts)


def test_unified_norm_adapters(rng):
    import jax
    import jax.numpy as jnp
    from jax.test_util import check_grads

    import optnorm.jax as onj
    import optnorm.torch as ont
    x = rng.standard_normal((4, 3))
    rv, bx, w, b = rng.random(3) + 0.5, rng.random((3, 3)) + 0.5, rng.standard_normal(3), rng.standard_normal(3)
    T = lambda v: torch.tensor(v, requires_grad=True)  # noqa: E731
    f = lambda a, r, bb, ww, b_: ont.unified_norm(a, r, None, bb, None, ww, b_, step=9, warmup_iters=4,  # noqa
                                                  backward="exact")
    assert torch.autograd.gradcheck(f, tuple(map(T, (x, rv, bx, w, b))))
    fj = lambda a, r, bb, ww, b_: onj.unified_norm(a, r, None, bb, None, ww, b_, step=9, warmup_iters=4,  # noqa
                                                   backward="exact")
    check_grads(fj, tuple(map(jnp.asarray, (x, rv, bx, w, b))), order=1, modes=["rev"])
    # paper mode under jit with outlier filtration (array-valued skip decision)
    ema, bg = jnp.zeros(3), jnp.zeros((2, 3))
    step = jax.jit(jax.grad(lambda a, e, g_: onj.unified_norm(a, jnp.asarray(rv), e, jnp.asarray(bx), g_,
                                                               step=1200, warmup_iters=4,
                                                               outlier_filtration=True)[0].sum(), argnums=(0, 1, 2)))
    dx, new_ema, new_bg = step(jnp.asarray(x), ema, bg)
    assert dx.shape == x.shape and new_bg.shape == (2, 3)
    ref = ref_un_step(x, rv, np.zeros(3), bx, np.zeros((2, 3)), np.ones(3), np.zeros(3), 1200, 4, True, 1e-5, 0.9,
                      np.ones(x.shape))
    assert_close(dx, ref[3], rtol=1e-9, atol=1e-12)
    assert_close(new_ema, ref[5], rtol=1e-9, atol=1e-12)


def test_jit_and_half_precision(rng):
    import jax
    import jax.numpy as jnp

    import optnorm.jax as onj
    x = rng.standard_normal((6, 3, 5))
    J = jnp.asarray
    y = jax.jit(lambda a, w: onj.batch_norm(a, J(np.zeros(3)), J(np.ones(3)), sample_weight=w)[0])(J(x), J(np.ones(6)))
    assert_close(y, ref_bn(x, None, None, None, None, None, True, 0.1, 1e-5, 1)[0], rtol=1e-10, atol=1e-12)
    yp = jax.jit(lambda a: onj.power_norm(a, J(np.ones(5)), J(np.zeros(5)), step=3, warmup_iters=2)[0])(J(x))
    assert_close(yp, x / np.sqrt(1 + 1e-5), rtol=1e-12)
    # bfloat16 / float16 in, same dtype out, statistics accumulated in float32
    xb = torch.tensor(x, dtype=torch.bfloat16)
    yb, rm, rv = batch_norm(xb, torch.zeros(3), torch.ones(3))
    assert yb.dtype == torch.bfloat16 and rm.dtype == torch.float32
    assert_close(yb.float().numpy(), ref_bn(xb.double().numpy(), None, None, None, None, None, True, 0.1, 1e-5, 1)[0],
                 rtol=0, atol=3e-2, check_dtype="float32")
    xh = (x * 1e3).astype(np.float16)          # (x - mu)^2 overflows float16 (65504): accumulate in float32
    yh = batch_norm(xh)[0]
    assert yh.dtype == np.float16 and np.all(np.isfinite(yh))
    assert_close(yh, ref_bn(xh.astype(np.float64), None, None, None, None, None, True, 0.1, 1e-5, 1)[0], rtol=0,
                 atol=5e-3, check_dtype="float16")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_paths(path, rng, dtype, training):
    from optnorm.norm.batch import _bn
    x = (rng.standard_normal((5, 3, 4, 2)) * 3 + 100).astype(dtype)
    rm, rv, w, b = (rng.standard_normal(3) + 100).astype(dtype), (rng.random(3) + 5).astype(dtype), \
        rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)
    for axis in (1, -1, 0):
        args = (x, rm, rv, w, b) if axis != -1 else (x, rm[:1].repeat(2), rv[:1].repeat(2), w[:1].repeat(2),
                                                    b[:1].repeat(2))
        if axis == 0:
            args = (x, np.resize(rm, 5), np.resize(rv, 5), np.resize(w, 5), np.resize(b, 5))
        assert _bn.path_for(*args, None, training=training, momentum=0.1, eps=1e-5, axis=axis, unbiased=True,
                            xp=np) == path
        y, nrm, nrv = batch_norm(*args, training=training, axis=axis)
        ry, rrm, rrv = ref_bn(args[0].astype(np.float64), *(a.astype(np.float64) for a in args[1:]), None, training,
                              0.1, 1e-5, axis)
        tol = 1e-12 if dtype == np.float64 else 2e-4
        assert y.dtype == dtype and nrm.dtype == dtype
        assert_close(y, ry.astype(dtype), rtol=tol, atol=tol)
        assert_close(nrm, rrm.astype(dtype), rtol=tol)
        assert_close(nrv, rrv.astype(dtype), rtol=tol)


def test_unified_norm_state_threading_from_zero_buffers(rng):
    """Eight steps from the module's initial state (zero windows), the state threaded in and out as the layer."""
    from optnorm.norm import unified_norm
    unified_norm_fwd, unified_norm_bwd = ops.get("unified_norm").fwd, ops.get("unified_norm").bwd
    C = 4
    st = dict(rv=np.ones(C), ema=np.zeros(C), bx=np.zeros((3, C)), bg=np.zeros((2, C)))
    ref = {k: v.copy() for k, v in st.items()}
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    for k in range(1, 9):
        x = rng.standard_normal((5, C)) * (1 + k / 4)
        gy = rng.standard_normal(x.shape)
        opts = dict(step=k, warmup_iters=2, momentum=0.7)
        (y, st["rv"], st["bx"]), res = unified_norm_fwd(x, st["rv"], st["ema"], st["bx"], st["bg"], w, b, **opts)
        dx, _, st["ema"], _, st["bg"], _, _ = unified_norm_bwd(res, (gy, None, None))
        with np.errstate(divide="ignore"):
            ry, ref["rv"], ref["bx"], rdx, _, ref["ema"], ref["bg"] = ref_un_step(
                x, ref["rv"], ref["ema"], ref["bx"], ref["bg"], w, b, k, 2, False, 1e-5, 0.7, gy)
        assert_close(y, ry, rtol=1e-10, atol=1e-12)
        assert_close(dx, rdx, rtol=1e-9, atol=1e-12)
        for key in st:
            assert_close(st[key], ref[key], rtol=1e-10, atol=1e-14, err_msg=f"step {k} {key}")
    assert np.all(st["bx"] > 0)   # the window filled up
    assert np.all(np.isfinite(unified_norm(x, st["rv"], st["ema"], st["bx"], st["bg"], step=9, warmup_iters=2)[0]))


def test_batch_norm_adab2n_rule(xp, rng, path):
    """AdaB2N's training forward (lvyilin/AdaB2N, models/utils/adab2n.py): task-balanced sample weights, biased
    batch variance in the running update, eta as the momentum."""
    x = rng.standard_normal((6, 3, 2, 2)) + 0.5
    tasks, counts = np.array([0, 0, 1, 1, 1, 2]), np.array([2, 3, 1])
    conc = np.exp(np.array([0.1, -0.2, 0.3])) + np.array([10.0, 20.0, 5.0])
    pi = conc / conc.sum()
    sw = pi[tasks] / counts[tasks]
    rm, rv, eta = rng.standard_normal(3), rng.random(3) + 0.5, 0.3
    mu = np.einsum("nc,n->c", x.mean((2, 3)), sw)
    var = np.einsum("nc,n->c", ((x - mu[None, :, None, None]) ** 2).mean((2, 3)), sw)
    ref_y = (x - mu[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    y, nrm, nrv = batch_norm(xp.asarray(x), xp.asarray(rm), xp.asarray(rv), sample_weight=xp.asarray(sw),
                             momentum=eta, unbiased=False)
    assert_close(y, ref_y, rtol=1e-10, atol=1e-12, xp=xp)
    assert_close(nrm, rm + eta * (mu - rm), rtol=1e-12, xp=xp)
    assert_close(nrv, (1 - eta) * rv + eta * var, rtol=1e-12, xp=xp)
    # without weights and unbiased=False: the biased running update (both paths)
    y2, _, nrv2 = batch_norm(xp.asarray(x), xp.asarray(rm), xp.asarray(rv), momentum=eta, unbiased=False)
    assert_close(nrv2, (1 - eta) * rv + eta * x.var(axis=(0, 2, 3)), rtol=1e-12, xp=xp)
    check_vjp("norm.batch_norm", x, rm, rv, None, None, sw, opts={"momentum": eta, "unbiased": False})


# ------------------------------------------------------------------------------------------ #13 regressions
@pytest.mark.parametrize("scale", [1e160, 1e300])
def test_batch_norm_float64_huge_values(path, scale, rng):
    """Batch statistics of float64 values whose squares overflow: the Numba kernel gave y = 0 (now rescaled); a
    running variance that overflows has no finite update and raises instead of returning inf."""
    x = rng.standard_normal((6, 3, 4))
    y, _, _ = batch_norm(x * scale, eps=1e-300)
    assert_close(y, batch_norm(x, eps=1e-300)[0], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="batch variance of x overflows"):
        batch_norm(x * 1e300, np.zeros(3), np.ones(3))


def test_running_statistics_that_overflow_raise():
    x = np.random.default_rng(0).standard_normal((4, 2, 3)) * 1e300
    with pytest.raises(ValueError, match="quadratic mean of x overflows"):
        power_norm(x, np.ones(3), np.zeros(3), step=2)
    with pytest.raises(ValueError, match="second moment of x overflows"):
        unified_norm(x, np.ones(3), np.zeros(3), np.zeros((4, 3)), np.zeros((4, 3)), step=2)
    y, rm, rv = batch_norm((x / 1e285).astype(np.float32), np.zeros(2, np.float32), np.ones(2, np.float32))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(rv))
