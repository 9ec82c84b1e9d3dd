"""layer_norm (incl. fixed_std), rms_norm, crms_norm, group_norm: references, torch peer, paths, VJPs, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest

from optnorm._lib import compat, ops
from optnorm.norm import crms_norm, group_norm, layer_norm, rms_norm
from optnorm.testing import assert_close, check_vjp

from . import F, torch


def _t(a):
    return None if a is None else torch.tensor(np.asarray(a, dtype=np.float64))


def _dt(a) -> str:
    return str(a.dtype).split(".")[-1]


def _ln_loop(x, w, b, eps, n_axes=1):
    """Loop reference over the trailing ``n_axes`` axes (math.fsum statistics in float64), in x's dtype."""
    dt = np.asarray(x).dtype
    x = np.asarray(x, np.float64)
    lead = x.shape[: x.ndim - n_axes]
    rows = x.reshape(int(np.prod(lead)), -1)
    out = np.empty_like(rows)
    for i, r in enumerate(rows):
        mu = math.fsum(r) / r.size
        var = math.fsum((v - mu) ** 2 for v in r) / r.size
        out[i] = (r - mu) / math.sqrt(var + eps)
    y = out.reshape(x.shape)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y.astype(dt)


def _rms_loop(x, w, eps):
    """Loop reference (float64 math.fsum), in x's dtype."""
    dt = np.asarray(x).dtype
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        r = x[idx]
        out[idx] = r / math.sqrt(math.fsum(v * v for v in r) / r.size + eps)
    return (out if w is None else out * w).astype(dt)


# ------------------------------------------------------------------------------------------ layer_norm
@pytest.mark.parametrize("affine", [False, True])
def test_layer_norm_reference_and_torch(xp, affine, rng):
    x = rng.standard_normal((3, 4, 6)) * 3 + 1
    w = rng.standard_normal(6) if affine else None
    b = rng.standard_normal(6) if affine else None
    arr = lambda a: None if a is None else xp.asarray(a)  # noqa: E731
    y = layer_norm(xp.asarray(x), arr(w), arr(b))
    assert_close(y, _ln_loop(x, w, b, 1e-5), rtol=1e-11, atol=1e-12, xp=xp)
    assert_close(y, F.layer_norm(_t(x), (6,), _t(w), _t(b), 1e-5).numpy(), rtol=1e-11, atol=1e-12, xp=xp)
    w2 = rng.standard_normal((4, 6))
    y2 = layer_norm(xp.asarray(x), xp.asarray(w2), None, axis=(-2, -1), eps=1e-3)
    assert_close(y2, F.layer_norm(_t(x), (4, 6), _t(w2), None, 1e-3).numpy(), rtol=1e-11, atol=1e-12, xp=xp)
    y3 = layer_norm(xp.asarray(x), axis=1)
    ref3 = F.layer_norm(_t(x).permute(0, 2, 1), (4,)).permute(0, 2, 1).numpy()
    assert_close(y3, ref3, rtol=1e-11, atol=1e-12, xp=xp)
    y32 = layer_norm(xp.asarray(x.astype(np.float32)), arr(None if w is None else w.astype(np.float32)),
                     arr(None if b is None else b.astype(np.float32)))
    assert _dt(y32) == "float32"
    assert_close(y32, _ln_loop(x.astype(np.float32), w, b, 1e-5), rtol=1e-5, atol=1e-5, xp=xp)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_paths(path, dtype, rng):
    for shape, axis in (((5, 300), -1), ((4, 3, 7), (1, 2)), ((6, 5, 2), 1)):
        x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
        axes = (axis,) if isinstance(axis, int) else axis
        wshape = tuple(shape[a] for a in axes)
        w = rng.standard_normal(wshape).astype(dtype)
        b = rng.standard_normal(wshape).astype(dtype)
        xm = np.moveaxis(x, axis, -1) if isinstance(axis, int) else x
        ref = _ln_loop(xm, w, b, 1e-5, n_axes=len(axes))
        ref = np.moveaxis(ref, -1, axis) if isinstance(axis, int) else ref
        tol = 2e-5 if dtype == np.float32 else 1e-11
        y = layer_norm(x, w, b, axis=axis)
        assert y.dtype == dtype
        assert_close(y, ref, rtol=tol, atol=tol, err_msg=f"{path} {shape} {axis}")
        out = np.zeros_like(x)
        assert layer_norm(x, w, b, axis=axis, out=out) is out
        assert_close(out, y, rtol=0, atol=0)
        # backward against float64 autograd
        g = rng.standard_normal(shape).astype(dtype)
        op = ops.get("layer_norm")
        _, res = op.fwd(x, w, b, axis=axis)
        dx, dw, db = op.bwd(res, g)
        xt, wt, bt = (_t(a).requires_grad_() for a in (x, w, b))
        if isinstance(axis, int):
            yt = F.layer_norm(xt.movedim(axis, -1), wshape, wt, bt, 1e-5).movedim(-1, axis)
        else:
            yt = F.layer_norm(xt, wshape, wt, bt, 1e-5)
        yt.backward(_t(g))
        for got, want in ((dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
            assert got.dtype == dtype
            assert_close(got, want.numpy().astype(dtype), rtol=tol * 10, atol=tol * 10, err_msg=f"{path} bwd {shape}")


def test_layer_norm_float32_offset_rows_and_huge_values(path):
    """N(1000, 1) rows of 2**18 (where the f32 one-pass variance is negative) and rows at 1e30."""
    rng = np.random.default_rng(1)
    x = (1000 + rng.standard_normal((2, 2**18))).astype(np.float32)
    y = layer_norm(x)
    assert_close(y, _ln_loop(x, None, None, 1e-5), rtol=1e-4, atol=1e-4)
    big = (rng.standard_normal((3, 64)) * 1e30).astype(np.float32)
    yb = layer_norm(big)
    assert np.all(np.isfinite(yb))
    assert_close(yb, _ln_loop(big, None, None, 1e-5), rtol=1e-4, atol=1e-5)
    rb = rms_norm(big)
    assert np.all(np.isfinite(rb))
    assert_close(rb, _rms_loop(big, None, 1.1920929e-07), rtol=1e-4, atol=1e-5)


def test_layer_norm_fixed_std(xp, rng):
    x = rng.standard_normal((2, 3, 5))
    w, b = rng.standard_normal(5), rng.standard_normal(5)
    centred = x - x.mean(-1, keepdims=True)
    y = layer_norm(xp.asarray(x), xp.asarray(w), xp.asarray(b), fixed_std=2.5)
    assert_close(y, centred / 2.5 * w + b, rtol=1e-12, atol=1e-13, xp=xp)
    fs = np.array([4.0, 1.0, 1.0])  # per position, BOS gets its own value
    y2 = layer_norm(xp.asarray(x), fixed_std=xp.asarray(fs))
    assert_close(y2, centred / fs[:, None], rtol=1e-12, atol=1e-13, xp=xp)
    check_vjp("layer_norm", x, w, b, opts={"fixed_std": 2.5})


def test_layer_norm_numba_fixed_std_matches_generic(rng):
    import optnorm

    x = rng.standard_normal((4, 3, 9)).astype(np.float32)
    fs = np.array([1.5, 2.0, 3.0], np.float32)
    y = layer_norm(x, fixed_std=fs)
    with optnorm.use_backend("generic"):
        y2 = layer_norm(x, fixed_std=fs)
    assert_close(y, y2, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------ rms_norm
def test_rms_norm_reference_and_torch(xp, rng):
    x = rng.standard_normal((3, 4, 6))
    w = rng.standard_normal(6)
    y = rms_norm(xp.asarray(x), xp.asarray(w))
    assert_close(y, F.rms_norm(_t(x), (6,), _t(w)).numpy(), rtol=1e-12, atol=1e-13, xp=xp)
    assert_close(y, _rms_loop(x, w, np.finfo(np.float64).eps), rtol=1e-12, atol=1e-13, xp=xp)
    x32 = x.astype(np.float32)
    y32 = rms_norm(xp.asarray(x32), eps=1e-6)
    assert _dt(y32) == "float32"
    ref32 = F.rms_norm(torch.tensor(x32), (6,), None, 1e-6).numpy()
    assert_close(y32, ref32, rtol=2e-6, atol=2e-6, xp=xp)
    # default eps = float32 epsilon for float32 input (torch's eps=None)
    tiny = xp.asarray(np.full((1, 4), 1e-4, np.float32))
    ref_tiny = F.rms_norm(torch.full((1, 4), 1e-4), (4,)).numpy()
    assert_close(rms_norm(tiny), ref_tiny, rtol=1e-5, xp=xp)
    y2 = rms_norm(xp.asarray(x), axis=(1, 2))
    assert_close(y2, F.rms_norm(_t(x), (4, 6)).numpy(), rtol=1e-12, atol=1e-13, xp=xp)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rms_norm_paths(path, dtype, rng):
    for shape, axis in (((5, 300), -1), ((6, 5, 2), 1)):
        x = rng.standard_normal(shape).astype(dtype)
        w = rng.standard_normal(shape[axis]).astype(dtype)
        tol = 2e-5 if dtype == np.float32 else 1e-11
        ref = np.moveaxis(_rms_loop(np.moveaxis(x, axis, -1), w, 1e-6), -1, axis)
        y = rms_norm(x, w, axis=axis, eps=1e-6)
        assert y.dtype == dtype
        assert_close(y, ref, rtol=tol, atol=tol)
        out = np.empty_like(x)
        assert rms_norm(x, w, axis=axis, eps=1e-6, out=out) is out
        g = rng.standard_normal(shape).astype(dtype)
        op = ops.get("rms_norm")
        _, res = op.fwd(x, w, axis=axis, eps=1e-6)
        dx, dw = op.bwd(res, g)
        xt, wt = _t(x).requires_grad_(), _t(w).requires_grad_()
        F.rms_norm(xt.movedim(axis, -1), (shape[axis],), wt, 1e-6).movedim(-1, axis).backward(_t(g))
        assert_close(dx, xt.grad.numpy().astype(dtype), rtol=tol * 10, atol=tol * 10)
        assert_close(dw, wt.grad.numpy().astype(dtype), rtol=tol * 10, atol=tol * 10)
        _, res = op.fwd(x, None, axis=axis)
        dx0, dw0 = op.bwd(res, g)
        assert dw0 is None and dx0.shape == x.shape


# ------------------------------------------------------------------------------------------ crms_norm, group_norm
def test_crms_norm_is_rms_of_the_implied_vector(xp, rng):
    full = rng.standard_normal((4, 8))
    full -= full.mean(-1, keepdims=True)
    w = rng.standard_normal(7)
    y = crms_norm(xp.asarray(full[:, :7]), xp.asarray(w), eps=1e-6)
    ref = _rms_loop(full, None, 1e-6)[:, :7] * w
    assert_close(y, ref, rtol=1e-12, atol=1e-13, xp=xp)
    # for zero-mean rows this is LayerNorm
    assert_close(y, _ln_loop(full, None, None, 1e-6)[:, :7] * w, rtol=1e-10, atol=1e-12, xp=xp)
    big = (full[:, :7] * 1e30).astype(np.float32)
    yb = compat.to_numpy(crms_norm(xp.asarray(big)))
    assert np.all(np.isfinite(yb))


def test_group_norm_torch(xp, rng):
    x = rng.standard_normal((2, 6, 3, 4)) * 2 + 1
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    for g in (1, 2, 3, 6):
        y = group_norm(xp.asarray(x), xp.asarray(w), xp.asarray(b), num_groups=g, eps=1e-5)
        assert_close(y, F.group_norm(_t(x), g, _t(w), _t(b), 1e-5).numpy(), rtol=1e-11, atol=1e-12, xp=xp)
    y0 = group_norm(xp.asarray(x[:, :, 0, 0]), num_groups=3)
    assert_close(y0, F.group_norm(_t(x[:, :, 0, 0]), 3).numpy(), rtol=1e-11, atol=1e-12, xp=xp)
    y32 = group_norm(xp.asarray(x.astype(np.float32)), num_groups=2)
    assert _dt(y32) == "float32"


# ------------------------------------------------------------------------------------------ VJPs and adapters
def test_vjps(rng):
    x = rng.standard_normal((3, 4, 5))
    w5, b5 = rng.standard_normal(5), rng.standard_normal(5)
    check_vjp("layer_norm", x, w5, b5)
    check_vjp("layer_norm", x, rng.standard_normal((4, 5)), None, opts={"axis": (1, 2)})
    check_vjp("layer_norm", x, rng.standard_normal(4), rng.standard_normal(4), opts={"axis": 1})
    check_vjp("layer_norm", x, None, None, opts={"fixed_std": np.array([1.0, 2.0, 3.0, 4.0])})
    check_vjp("rms_norm", x, w5)
    check_vjp("rms_norm", x, None, opts={"axis": 0, "eps": 1e-3})
    check_vjp("crms_norm", x, w5, opts={"eps": 1e-3})
    check_vjp("crms_norm", x, None, opts={"axis": 1})
    check_vjp("group_norm", rng.standard_normal((2, 6, 3)), rng.standard_normal(6), rng.standard_normal(6),
              opts={"num_groups": 3})
    check_vjp("group_norm", rng.standard_normal((2, 4)), None, None, opts={"num_groups": 2})


def test_vjp_on_every_backend(xp, rng):
    x = rng.standard_normal((3, 5))
    w, b, g = rng.standard_normal(5), rng.standard_normal(5), rng.standard_normal((3, 5))
    xt, wt, bt = _t(x).requires_grad_(), _t(w).requires_grad_(), _t(b).requires_grad_()
    F.layer_norm(xt, (5,), wt, bt).backward(_t(g))
    op = ops.get("layer_norm")
    _, res = op.fwd(xp.asarray(x), xp.asarray(w), xp.asarray(b))
    assert_close(op.bwd(res, xp.asarray(g)), (xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()), rtol=1e-10,
                 atol=1e-12, xp=xp)
    xt, wt = _t(x).requires_grad_(), _t(w).requires_grad_()
    F.rms_norm(xt, (5,), wt).backward(_t(g))
    _, res = ops.get("rms_norm").fwd(xp.asarray(x), xp.asarray(w))
    assert_close(ops.get("rms_norm").bwd(res, xp.asarray(g)), (xt.grad.numpy(), wt.grad.numpy()), rtol=1e-10,
                 atol=1e-12, xp=xp)


def test_torch_gradcheck(rng):
    import optnorm.torch as ont

    x = torch.tensor(rng.standard_normal((3, 5)), requires_grad=True)
    w = torch.tensor(rng.standard_normal(5), requires_grad=True)
    b = torch.tensor(rng.standard_normal(5), requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, c, d: ont.layer_norm(a, c, d), (x, w, b))
    assert torch.autograd.gradcheck(lambda a, c: ont.rms_norm(a, c), (x, w))
    assert torch.autograd.gradcheck(lambda a, c: ont.crms_norm(a, c), (x, w))
    x4 = torch.tensor(rng.standard_normal((2, 4, 3)), requires_grad=True)
    w4 = torch.tensor(rng.standard_normal(4), requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, c: ont.group_norm(a, c, None, num_groups=2), (x4, w4))


def test_jax_check_grads_and_jit(rng):
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    import optnorm.jax as onj

    x = jax.numpy.asarray(rng.standard_normal((3, 5)))
    w = jax.numpy.asarray(rng.standard_normal(5))
    check_grads(lambda a, c: onj.layer_norm(a, c, c), (x, w), order=1, modes=["rev"])
    check_grads(lambda a, c: onj.rms_norm(a, c), (x, w), order=1, modes=["rev"])
    check_grads(lambda a, c: onj.crms_norm(a, c), (x, w), order=1, modes=["rev"])
    check_grads(lambda a: onj.group_norm(a, None, None, num_groups=1), (x,), order=1, modes=["rev"])
    y = jax.jit(lambda a, c: onj.rms_norm(a, c))(x, w)
    assert_close(y, F.rms_norm(_t(np.asarray(x)), (5,), _t(np.asarray(w))).numpy(), rtol=1e-12)
    gj = jax.jit(jax.grad(lambda a: onj.layer_norm(a)[0, 0]))(x)
    assert np.all(np.isfinite(np.asarray(gj)))


# ------------------------------------------------------------------------------------------ half precision
def test_half_precision(xp, rng):
    names = [n for n in ("float16", "bfloat16") if hasattr(xp, n)]
    if not names:
        pytest.skip("this array library has neither float16 nor bfloat16")
    x = rng.standard_normal((3, 64)) * 3 + 2
    for nm in names:
        dt = getattr(xp, nm)
        xh = xp.astype(xp.asarray(x), dt)
        xr = compat.to_numpy(xh).astype(np.float64)
        y = layer_norm(xh)
        assert y.dtype == dt
        assert_close(y, _ln_loop(xr, None, None, 1e-5), rtol=2e-2, atol=2e-2, check_dtype=nm, xp=xp)
        r = rms_norm(xh)
        assert r.dtype == dt
        assert_close(r, _rms_loop(xr, None, 1.1920929e-07), rtol=2e-2, atol=2e-2, check_dtype=nm, xp=xp)
    # all-zero rows with a tiny eps: eps is added in float32, never in float16 (pytorch#41527)
    z = layer_norm(xp.astype(xp.asarray(np.zeros((1, 8))), getattr(xp, names[0])), eps=1e-12)
    assert np.all(compat.to_numpy(z) == 0)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input():
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        layer_norm(np.ones((2, 3), np.int32))
    with pytest.raises(ValueError, match="weight has shape"):
        layer_norm(x, np.ones(2))
    with pytest.raises(ValueError, match="bias has shape"):
        layer_norm(x, None, np.ones((3, 1)))
    with pytest.raises(ValueError, match="eps must be in \\(0, inf\\)"):
        layer_norm(x, eps=0.0)
    with pytest.raises(ValueError, match="fixed_std must be > 0"):
        layer_norm(x, fixed_std=-1.0)
    with pytest.raises(ValueError, match="fixed_std"):
        layer_norm(x, fixed_std=np.ones(5))
    with pytest.raises(ValueError, match="axis"):
        rms_norm(x, axis=(0, 0))
    with pytest.raises(ValueError, match="axis"):
        rms_norm(x, axis=3)
    with pytest.raises(ValueError, match="eps must be in \\(0, inf\\)"):
        rms_norm(x, eps=-1e-6)
    with pytest.raises(ValueError, match="weight has shape"):
        crms_norm(x, np.ones(4))
    with pytest.raises(ValueError, match="num_groups"):
        group_norm(np.ones((2, 6, 3)), num_groups=4)
    with pytest.raises(ValueError, match=r"num_groups must be in \[1, inf\)"):
        group_norm(np.ones((2, 6, 3)), num_groups=0)
    with pytest.raises(ValueError, match="weight has shape"):
        group_norm(np.ones((2, 6, 3)), np.ones(3), num_groups=3)
    with pytest.raises(ValueError, match="x must have shape"):
        group_norm(np.ones(6), num_groups=3)
    with pytest.raises(ValueError, match="out has shape"):
        rms_norm(x, out=np.empty(3))
    with pytest.raises(TypeError, match="different libraries"):
        layer_norm(x, torch.ones(3))
    with pytest.raises(TypeError, match="x must be an array"):
        rms_norm("abc")
    assert_close(rms_norm([3.0, 4.0]), rms_norm(np.array([3.0, 4.0])), rtol=0)  # lists read as NumPy


# ------------------------------------------------------------------------------------------ out= and magnitudes (#13)
@pytest.mark.parametrize("fn", ["layer_norm", "rms_norm", "crms_norm"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_out_aliasing_the_input_is_correct(path, fn, axis, rng):
    f = {"layer_norm": layer_norm, "rms_norm": rms_norm, "crms_norm": crms_norm}[fn]
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal((5, 7)) * 3 + 1).astype(dtype)
        ref = f(x.copy(), axis=axis)
        buf = x.copy()
        assert f(buf, axis=axis, out=buf) is buf
        assert_close(buf, ref, rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-6)


@pytest.mark.parametrize("fn", [layer_norm, rms_norm, crms_norm])
def test_out_partially_overlapping_the_input_is_refused(path, fn):
    buf = np.zeros((3, 8))
    buf[:, :7] = np.random.default_rng(0).standard_normal((3, 7))
    with pytest.raises(ValueError, match="out overlaps x"):
        fn(buf[:, :7], out=buf[:, 1:])
    ro = np.empty((3, 7))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        fn(buf[:, :7], out=ro)


@pytest.mark.parametrize("scale", [1e160, 1e200, 1e300])
def test_float64_rows_whose_squares_overflow(path, scale, rng):
    """float64 rows at 1e200..1e300: the Numba kernels squared them into inf and returned 0 (now rescaled)."""
    x = rng.standard_normal((4, 33))
    for f in (layer_norm, rms_norm):
        y = f(x * scale, eps=1e-300)
        assert_close(y, f(x, eps=1e-300), rtol=1e-12, atol=1e-12, err_msg=f"{f.__name__} {scale}")
