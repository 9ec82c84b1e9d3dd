"""cross_entropy (torch semantics, z-loss) and spherical_z_loss."""
from __future__ import annotations

import math

import numpy as np
import pytest

from optnorm._lib import compat, ops
from optnorm.norm import cross_entropy, spherical_z_loss
from optnorm.testing import assert_close, check_vjp, numerical_vjp

from . import F, torch


def _t(a):
    a = np.asarray(a)
    return torch.tensor(a if a.dtype.kind != "f" else a.astype(np.float64))


def _ce_loop(x, t, w=None, eps=0.0, ignore=-100, reduction="mean", z=0.0):
    """Independent float64 loop reference for integer targets, classes on axis 1."""
    x = np.moveaxis(np.asarray(x, np.float64), 1, -1) if x.ndim > 1 else np.asarray(x, np.float64)[None]
    t = np.asarray(t).reshape(-1)
    rows = x.reshape(-1, x.shape[-1])
    c = rows.shape[1]
    w = np.ones(c) if w is None else np.asarray(w, np.float64)
    per, zs, den, nv = [], [], 0.0, 0
    for r, ti in zip(rows, t):
        m = r.max()
        lse = m + math.log(math.fsum(math.exp(v - m) for v in r))
        lp = r - lse
        if ti == ignore:
            per.append(0.0)
            zs.append(0.0)
            continue
        per.append(-(1 - eps) * w[ti] * lp[ti] - eps / c * math.fsum(w * lp))
        zs.append(z * lse * lse)
        den += w[ti]
        nv += 1
    per, zs = np.array(per), np.array(zs)
    if reduction == "none":
        return (per + zs).reshape(np.asarray(x.shape[:-1]))
    if reduction == "sum":
        return per.sum() + zs.sum()
    return per.sum() / den + (zs.sum() / nv if z else 0.0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_integer_targets_match_torch_and_loop(xp, reduction, rng):
    x = rng.standard_normal((6, 5, 3)) * 2
    t = rng.integers(0, 5, (6, 3))
    t[0, 0] = t[2, 1] = t[5, 2] = -100
    w = rng.random(5) + 0.1
    for ww in (None, w):
        for eps in (0.0, 0.3):
            kw = dict(label_smoothing=eps, reduction=reduction)
            got = cross_entropy(xp.asarray(x), xp.asarray(t), None if ww is None else xp.asarray(ww), **kw)
            ref = F.cross_entropy(_t(x), _t(t), None if ww is None else _t(ww), **kw).numpy()
            assert_close(got, ref, rtol=1e-12, atol=1e-13, err_msg=f"w={ww is not None} eps={eps}", xp=xp)
            assert_close(got, _ce_loop(x, t, ww, eps, reduction=reduction), rtol=1e-12, atol=1e-13, xp=xp)
    x2 = rng.standard_normal((4, 7))
    t2 = rng.integers(0, 7, 4)
    got = cross_entropy(xp.asarray(x2), xp.asarray(t2), reduction=reduction, ignore_index=3)
    assert_close(got, F.cross_entropy(_t(x2), _t(t2), reduction=reduction, ignore_index=3).numpy(), rtol=1e-12, xp=xp)
    x1 = rng.standard_normal(5)  # one sample, classes on dim 0 like torch
    got1 = cross_entropy(xp.asarray(x1), xp.asarray(np.asarray(2)), reduction=reduction)
    assert_close(got1, F.cross_entropy(_t(x1), torch.tensor(2), reduction=reduction).numpy(), rtol=1e-12, xp=xp)


def test_probability_targets_match_torch(xp, rng):
    x = rng.standard_normal((4, 6, 2))
    p = rng.random((4, 6, 2))
    p /= p.sum(1, keepdims=True)
    w = rng.random(6) + 0.5
    for reduction in ("mean", "sum", "none"):
        for eps in (0.0, 0.2):
            got = cross_entropy(xp.asarray(x), xp.asarray(p), xp.asarray(w), label_smoothing=eps, reduction=reduction)
            ref = F.cross_entropy(_t(x), _t(p), _t(w), label_smoothing=eps, reduction=reduction).numpy()
            assert_close(got, ref, rtol=1e-12, atol=1e-13, xp=xp)


def test_regression_weight_ignore_index_label_smoothing(xp):
    """pytorch#69339 (weight[-100] was indexed) and #73205 (smoothing counted ignored rows)."""
    x = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, -2.0, 0.0], [0.0, 0.0, 5.0]])
    t = np.array([0, -100, 2, -100])
    w = np.array([0.2, 1.0, 3.0])
    for reduction in ("mean", "sum", "none"):
        got = cross_entropy(xp.asarray(x), xp.asarray(t), xp.asarray(w), label_smoothing=0.25, reduction=reduction)
        assert_close(got, _ce_loop(x, t, w, 0.25, reduction=reduction), rtol=1e-13, atol=1e-14, xp=xp)
        ref = F.cross_entropy(_t(x), _t(t), _t(w), label_smoothing=0.25, reduction=reduction).numpy()
        assert_close(got, ref, rtol=1e-13, atol=1e-14, xp=xp)
    per = compat.to_numpy(cross_entropy(xp.asarray(x), xp.asarray(t), xp.asarray(w), label_smoothing=0.25,
                                        reduction="none"))
    assert per[1] == 0 and per[3] == 0


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_all_rows_ignored(xp):
    x = xp.asarray(np.ones((2, 3)))
    t = xp.asarray(np.array([-100, -100]))
    assert math.isnan(float(cross_entropy(x, t)))
    assert float(cross_entropy(x, t, reduction="sum")) == 0.0


def test_z_loss_and_from_log_probs(xp, rng):
    x = rng.standard_normal((5, 4)) * 3
    t = rng.integers(0, 4, 5)
    t[1] = -100
    for reduction in ("mean", "sum", "none"):
        got = cross_entropy(xp.asarray(x), xp.asarray(t), z_loss=1e-2, label_smoothing=0.1, reduction=reduction)
        assert_close(got, _ce_loop(x, t, None, 0.1, reduction=reduction, z=1e-2), rtol=1e-12, atol=1e-13, xp=xp)
    lp = F.log_softmax(_t(x), 1).numpy()
    got = cross_entropy(xp.asarray(lp), xp.asarray(t), from_log_probs=True)
    assert_close(got, F.nll_loss(_t(lp), _t(t)).numpy(), rtol=1e-12, xp=xp)


def test_float32_huge_logits_and_half(xp, rng):
    x = np.array([[1e30, 0.0, -1e30], [3.0, 1e30, 2.0]], np.float32)
    t = np.array([0, 0])
    got = compat.to_numpy(cross_entropy(xp.asarray(x), xp.asarray(t), reduction="none"))
    assert_close(got, np.array([0.0, 1e30], np.float32), rtol=1e-6)
    if hasattr(xp, "float16"):
        xh = xp.astype(xp.asarray(rng.standard_normal((4, 6)) * 4), xp.float16)
        th = rng.integers(0, 6, 4)
        y = cross_entropy(xh, xp.asarray(th))
        assert y.dtype == xp.float16
        ref = F.cross_entropy(torch.tensor(compat.to_numpy(xh).astype(np.float64)), torch.tensor(th))
        assert_close(y, ref.numpy(), rtol=2e-3, check_dtype="float16")


# ------------------------------------------------------------------------------------------ VJPs
def test_vjps(rng):
    x = rng.standard_normal((5, 4))
    t = rng.integers(0, 4, 5)
    t[2] = -100
    w = rng.random(4) + 0.2
    p = rng.random((5, 4))
    p /= p.sum(1, keepdims=True)
    for reduction in ("mean", "sum", "none"):
        for eps, z in ((0.0, 0.0), (0.2, 1e-2)):
            opts = dict(label_smoothing=eps, z_loss=z, reduction=reduction)
            check_vjp("cross_entropy", x, t, w, opts=opts)
            check_vjp("cross_entropy", x, t, None, opts=opts)
            check_vjp("cross_entropy", x, p, w, opts=opts)
    x3 = rng.standard_normal((2, 4, 3))
    check_vjp("cross_entropy", x3, rng.integers(0, 4, (2, 3)), w, opts=dict(z_loss=0.1))
    check_vjp("cross_entropy", x, t, w, opts=dict(from_log_probs=True, label_smoothing=0.1))
    op = ops.get("cross_entropy")
    _, res = op.fwd(x, t, w)
    assert op.bwd(res, np.float64(1.0))[1] is None  # integer target: no cotangent


def test_grad_matches_torch_on_every_backend(xp, rng):
    x = rng.standard_normal((4, 5))
    t = rng.integers(0, 5, 4)
    t[0] = -100
    w = rng.random(5) + 0.1
    xt = _t(x).requires_grad_()
    F.cross_entropy(xt, _t(t), _t(w), label_smoothing=0.1).backward()  # torch has no weight gradient
    dw_ref = numerical_vjp(lambda ww: np.asarray(_ce_loop(x, t, ww, 0.1)), [w], np.asarray(1.0))[0]
    op = ops.get("cross_entropy")
    _, res = op.fwd(xp.asarray(x), xp.asarray(t), xp.asarray(w), label_smoothing=0.1)
    dx, dt, dw = op.bwd(res, xp.asarray(np.asarray(1.0)))
    assert dt is None
    assert_close(dx, xt.grad.numpy(), rtol=1e-11, atol=1e-13, xp=xp)
    assert_close(dw, dw_ref, rtol=1e-6, atol=1e-8, xp=xp)


def test_torch_gradcheck_and_jax(rng):
    import optnorm.torch as ont

    x = torch.tensor(rng.standard_normal((4, 5)), requires_grad=True)
    w = torch.tensor(rng.random(5) + 0.1, requires_grad=True)
    t = torch.tensor([0, 3, -100, 1])
    assert torch.autograd.gradcheck(lambda a, c: ont.cross_entropy(a, t, c, label_smoothing=0.1, z_loss=1e-2),
                                    (x, w))
    p = torch.softmax(torch.tensor(rng.standard_normal((4, 5))), 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, q: ont.cross_entropy(a, q, reduction="sum"), (x, p))
    assert torch.autograd.gradcheck(lambda a: ont.spherical_z_loss(a, torch.tensor([0, 1, 2, 3]), a=2.0, b=1.0),
                                    (x,))
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    import optnorm.jax as onj

    xj = jax.numpy.asarray(rng.standard_normal((4, 5)))
    tj = jax.numpy.asarray(np.array([0, 3, -100, 1]))
    jnp = jax.numpy  # check_grads' finite differences hand NumPy arrays to the function: convert back
    check_grads(lambda a: onj.cross_entropy(jnp.asarray(a), tj, None, z_loss=1e-2), (xj,), order=1, modes=["rev"])
    check_grads(lambda a: onj.spherical_z_loss(jnp.asarray(a), jnp.asarray([0, 1, 2, 3]), a=2.0, b=1.0), (xj,),
                order=1, modes=["rev"])
    v = jax.jit(lambda a: onj.cross_entropy(a, tj, None, label_smoothing=0.1))(xj)
    ref = F.cross_entropy(_t(np.asarray(xj)), _t(np.asarray(tj)), label_smoothing=0.1).numpy()
    assert_close(v, ref, rtol=1e-12)


# ------------------------------------------------------------------------------------------ spherical z-loss
def _zloss_loop(o, t, a, b, eps):
    out = []
    for r, c in zip(np.asarray(o, np.float64), t):
        mu = r.mean()
        sd = math.sqrt(((r - mu) ** 2).mean() + eps)
        z = (r[c] - mu) / sd
        out.append(math.log1p(math.exp(a * (b - z))) / a)
    return np.array(out)


def test_spherical_z_loss(xp, rng):
    o = rng.standard_normal((5, 7)) * 2
    t = rng.integers(0, 7, 5)
    for reduction, agg in (("none", lambda v: v), ("sum", np.sum), ("mean", np.mean)):
        got = spherical_z_loss(xp.asarray(o), xp.asarray(t), a=1.5, b=0.7, reduction=reduction)
        assert_close(got, agg(_zloss_loop(o, t, 1.5, 0.7, 1e-12)), rtol=1e-12, xp=xp)
    base = spherical_z_loss(xp.asarray(o), xp.asarray(t), a=1.5, b=0.7, reduction="none")
    moved = spherical_z_loss(xp.asarray(3.0 * o - 4.0), xp.asarray(t), a=1.5, b=0.7, reduction="none")
    assert_close(moved, compat.to_numpy(base), rtol=1e-9, xp=xp)  # invariant to o -> alpha o + beta
    o3 = rng.standard_normal((2, 4, 3))
    t3 = rng.integers(0, 4, (2, 3))
    got3 = spherical_z_loss(xp.asarray(o3), xp.asarray(t3), a=1.0, b=0.0, reduction="none")
    ref3 = _zloss_loop(np.moveaxis(o3, 1, -1).reshape(-1, 4), t3.reshape(-1), 1.0, 0.0, 1e-12).reshape(2, 3)
    assert_close(got3, ref3, rtol=1e-12, xp=xp)
    const = spherical_z_loss(xp.asarray(np.ones((1, 4))), xp.asarray(np.array([0])), a=1.0, b=1.0)
    assert np.isfinite(float(const))


def test_spherical_z_loss_vjp(rng):
    o = rng.standard_normal((4, 6))
    t = rng.integers(0, 6, 4)
    for reduction in ("mean", "sum", "none"):
        check_vjp("spherical_z_loss", o, t, opts=dict(a=2.0, b=0.5, reduction=reduction))
    check_vjp("spherical_z_loss", rng.standard_normal((2, 5, 3)), rng.integers(0, 5, (2, 3)), opts=dict(a=0.5, b=2.0))


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input():
    x = np.ones((3, 4))
    t = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="target has class index .*, outside"):
        cross_entropy(x, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="target has shape"):
        cross_entropy(x, np.array([0, 1]))
    with pytest.raises(ValueError, match="target \\(probabilities\\) has shape"):
        cross_entropy(x, np.ones((3, 5)))
    with pytest.raises(TypeError, match="target must have a real integer or floating dtype"):
        cross_entropy(x, np.ones((3, 4), dtype=bool))
    with pytest.raises(TypeError, match="logits must have a real floating dtype"):
        cross_entropy(np.ones((3, 4), np.int64), t)
    with pytest.raises(ValueError, match="weight has shape"):
        cross_entropy(x, t, np.ones(3))
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(x, t, reduction="avg")
    with pytest.raises(ValueError, match="z_loss"):
        cross_entropy(x, t, z_loss=-1.0)
    with pytest.raises(ValueError, match="z_loss must be 0 with from_log_probs"):
        cross_entropy(x, t, z_loss=1e-4, from_log_probs=True)
    with pytest.raises(ValueError, match="axis"):
        cross_entropy(x, t, axis=2)
    with pytest.raises(ValueError, match=r"a must be in \(0, inf\)"):
        spherical_z_loss(x, t, a=0.0, b=1.0)
    with pytest.raises(TypeError, match="b must be a real number"):
        spherical_z_loss(x, t, a=1.0, b="1")
    with pytest.raises(TypeError, match="a"):
        spherical_z_loss(x, t, b=1.0)
    with pytest.raises(ValueError, match="target has class index .*, outside"):
        spherical_z_loss(x, np.array([0, 1, 9]), a=1.0, b=1.0)
    with pytest.raises(TypeError, match="target must have an integer dtype"):
        spherical_z_loss(x, np.ones(3), a=1.0, b=1.0)
    with pytest.raises(TypeError, match="different libraries"):
        cross_entropy(x, torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_numba_path_matches_generic(dtype, rng):
    import optnorm
    from optnorm.norm.losses import CrossEntropyFusedRes, CrossEntropyRes, _ce

    x = (rng.standard_normal((5, 6, 3)) * 3).astype(dtype)
    t = rng.integers(0, 6, (5, 3))
    t[0, 1] = t[3, 2] = -100
    w = (rng.random(6) + 0.2).astype(dtype)
    kw = dict(ax=1, c=6, eps=0.0, zc=0.0, ignore_index=-100, reduction="mean", from_log_probs=False, integer=True,
              xp=np)
    assert _ce.path_for(x, t, w, **kw) == "numba"
    op = ops.get("cross_entropy")
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for ww in (None, w):
        for red in ("mean", "sum", "none"):
            for eps, z in ((0.0, 0.0), (0.2, 1e-2)):
                opts = dict(label_smoothing=eps, z_loss=z, reduction=red)
                g = rng.standard_normal((5, 3)) if red == "none" else np.asarray(1.3)
                y1, r1 = op.fwd(x, t, ww, **opts)
                got = op.bwd(r1, g.astype(dtype))
                with optnorm.use_backend("generic"):
                    y2, r2 = op.fwd(x, t, ww, **opts)
                    want = op.bwd(r2, g.astype(dtype))
                assert isinstance(r1, CrossEntropyFusedRes) and isinstance(r2, CrossEntropyRes)
                assert y1.dtype == dtype and y1.shape == y2.shape
                assert_close(y1, y2, rtol=tol, atol=tol)
                assert_close(got[0], want[0], rtol=tol, atol=tol)
                assert got[1] is None
                if ww is not None:
                    assert_close(got[2], want[2], rtol=tol * 10, atol=tol * 10)


# ------------------------------------------------------------------------------------------ #13 regressions
def test_z_loss_overflow_raises_instead_of_inf():
    """cross_entropy(z_loss=...) at logits 1e30 (float32): c log^2 Z = 1e56 overflows float32 -> a clear error."""
    x = np.full((2, 3), 1e30, np.float32)
    t = np.array([0, 1])
    with pytest.raises(ValueError, match="z_loss .* overflows"):
        cross_entropy(x, t, z_loss=1e-4)
    with pytest.raises(ValueError, match="z_loss .* overflows"):
        cross_entropy(x.astype(np.float64) * 1e270, t, z_loss=1e-4)
    assert np.isfinite(cross_entropy(x, t))                       # without the z term the loss is finite
    assert np.isfinite(cross_entropy(x.astype(np.float64), t, z_loss=1e-4))  # and in float64 so is 1e56


def test_bfloat16_probability_targets():
    """NumPy bfloat16 (ml_dtypes) probability targets gave an unclear dtype error."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    p = rng.random((3, 4))
    p /= p.sum(-1, keepdims=True)
    got = cross_entropy(x, p.astype(ml_dtypes.bfloat16))
    want = cross_entropy(x, p.astype(ml_dtypes.bfloat16).astype(np.float32))
    assert_close(got, want, rtol=1e-6)
