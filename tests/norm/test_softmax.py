"""softmax / log_softmax (safe, online, two_pass; masked-row policy) and stablemax / log_stablemax."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.special

import optnorm
from optnorm._lib import compat, ops
from optnorm.norm import log_softmax, log_stablemax, softmax, stablemax
from optnorm.testing import assert_close, check_vjp

from . import F, torch

METHODS = ["safe", "online", "two_pass"]


def _dt(a) -> str:
    return str(a.dtype).split(".")[-1]


def _torch_ref(x, axis, log):
    torch = pytest.importorskip("torch")
    t = torch.tensor(np.asarray(x, dtype=np.float64))
    f = torch.log_softmax if log else torch.softmax
    return f(t, dim=axis).numpy()


def _loop_ref(x, axis, log):
    """Independent reference computed in float64 (math.fsum over each row), returned in x's dtype."""
    import math

    xm = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    out = np.empty_like(xm)
    for idx in np.ndindex(xm.shape[:-1]):
        row = xm[idx]
        m = row.max()
        s = math.fsum(math.exp(v - m) for v in row)
        out[idx] = (row - m - math.log(s)) if log else np.exp(row - m) / s
    return np.moveaxis(out, -1, axis).astype(np.asarray(x).dtype)


# ------------------------------------------------------------------------------------------ values
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("log", [False, True])
def test_matches_reference_and_torch_on_every_backend(xp, method, log, rng):
    x = rng.standard_normal((3, 5, 17)) * 4
    f = log_softmax if log else softmax
    for axis in (-1, 1):
        y = f(xp.asarray(x), axis=axis, method=method)
        assert_close(y, _loop_ref(x, axis, log), rtol=1e-12, atol=1e-13, err_msg=f"{method} axis={axis}", xp=xp)
        assert_close(y, _torch_ref(x, axis, log), rtol=1e-12, atol=1e-13, xp=xp)
    y32 = f(xp.asarray(x.astype(np.float32)), method=method)
    assert _dt(y32) == "float32"
    assert_close(y32, _loop_ref(x.astype(np.float32), -1, log), rtol=2e-6, atol=2e-6, xp=xp)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_paths_agree(path, method, log, dtype, rng):
    """Numba kernels and the generic body against the float64 reference, incl. rows longer than a block."""
    f = log_softmax if log else softmax
    tol = 3e-6 if dtype == np.float32 else 1e-12
    for shape, axis in (((4, 3000), -1), ((7, 33), 0), ((2, 3, 40), 1)):
        x = (rng.standard_normal(shape) * 6).astype(dtype)
        y = f(x, axis=axis, method=method)
        assert y.dtype == dtype
        assert_close(y, _loop_ref(x, axis, log), rtol=tol, atol=tol, err_msg=f"{path} {method} {shape}")
        out = np.full_like(x, 7.0)
        got = f(x, axis=axis, method=method, out=out)
        assert got is out
        assert_close(out, y, rtol=0, atol=0)


def test_numba_path_is_taken():
    from optnorm.norm.softmax import _softmax

    x = np.ones((2, 3), np.float32)
    kw = dict(axis=1, method="safe", masked_row="nan", log=False, out=None, xp=np)
    assert _softmax.path_for(x, **kw) == "numba"
    with optnorm.use_backend("generic"):
        assert _softmax.path_for(x, **kw) == "generic"


@pytest.mark.parametrize("method", METHODS)
def test_huge_magnitudes_float32_no_overflow(xp, method):
    """|x| up to 1e30 in float32: finite, and equal to the exact softmax of the float32 values."""
    x = np.array([[1e30, -1e30, 0.0, 1e30 * (1 - 2.0**-20)],
                  [1e30, 1e30, 3.0, -1e30],
                  [3e37, -2e37, 1e-3, 5.0],
                  [1e-30, -1e-30, 0.0, 2e-30]], np.float32)
    y = softmax(xp.asarray(x), method=method)
    ref = scipy.special.softmax(x.astype(np.float64), axis=-1)
    assert np.all(np.isfinite(optnorm._lib.compat.to_numpy(y)))
    assert_close(y, ref, rtol=1e-6, atol=1e-7, check_dtype="float32", xp=xp)
    ly = log_softmax(xp.asarray(x), method=method)
    lref = scipy.special.log_softmax(x.astype(np.float64), axis=-1)
    # two_pass represents x as x*log2(e) rounded to float32: a relative input perturbation <= 2**-24
    assert_close(ly, lref, rtol=1e-6 if method != "two_pass" else 1e-1, atol=1e-5, check_dtype="float32", xp=xp)
    assert np.all(np.isfinite(optnorm._lib.compat.to_numpy(ly)))


@pytest.mark.parametrize("method", METHODS)
def test_methods_agree_float32(path, method, rng):
    x = (rng.standard_normal((16, 1000)) * 30).astype(np.float32)
    x[3] *= 1e20
    base = softmax(x, method="safe")
    assert_close(softmax(x, method=method), base, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------ masked rows, inf, NaN
@pytest.mark.parametrize("method", METHODS)
def test_masked_rows(xp, method, path):
    x = np.array([[-np.inf] * 4, [0.0, -np.inf, 1.0, -np.inf], [2.0, 1.0, 0.0, -1.0]])
    ref = scipy.special.softmax(x[1:], axis=-1)
    y = optnorm._lib.compat.to_numpy(softmax(xp.asarray(x), method=method))
    assert np.all(np.isnan(y[0]))
    assert_close(y[1:], ref, rtol=1e-12, atol=1e-15)
    assert y[1, 1] == 0 and y[1, 3] == 0  # masked entries exactly 0
    yz = optnorm._lib.compat.to_numpy(softmax(xp.asarray(x), method=method, masked_row="zero"))
    assert np.all(yz[0] == 0)
    assert_close(yz[1:], ref, rtol=1e-12, atol=1e-15)
    ly = optnorm._lib.compat.to_numpy(log_softmax(xp.asarray(x), method=method))
    assert np.all(np.isnan(ly[0]))
    lz = optnorm._lib.compat.to_numpy(log_softmax(xp.asarray(x), method=method, masked_row="zero"))
    assert np.all(lz[0] == -np.inf)
    assert_close(lz[1:], scipy.special.log_softmax(x[1:], axis=-1), rtol=1e-12)


@pytest.mark.parametrize("log", [False, True])
def test_masked_row_zero_has_zero_vjp(xp, log, path):
    f = log_softmax if log else softmax
    x = xp.asarray(np.array([[-np.inf] * 3, [0.5, -np.inf, 1.0]]))
    op = ops.get("log_softmax" if log else "softmax")
    y, res = op.fwd(x, masked_row="zero")
    (dx,) = op.bwd(res, xp.asarray(np.ones((2, 3))))
    dx = optnorm._lib.compat.to_numpy(dx)
    assert np.all(dx[0] == 0)
    if not log:
        assert dx[1, 1] == 0  # masked entry of a live row: p = 0, no cotangent (log_softmax passes g through)
    assert np.all(np.isfinite(dx))
    assert_close(f(x, masked_row="zero"), optnorm._lib.compat.to_numpy(y), xp=xp)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("method", METHODS)
def test_inf_and_nan_rows_give_nan(xp, method, path):
    x = np.array([[1.0, np.inf, 0.0], [np.nan, 1.0, 2.0], [1.0, 2.0, 3.0]])
    y = optnorm._lib.compat.to_numpy(softmax(xp.asarray(x), method=method))
    assert np.all(np.isnan(y[:2]))
    assert np.all(np.isfinite(y[2]))


# ------------------------------------------------------------------------------------------ low precision
def test_half_precision_computed_in_float32(xp, rng):
    x = rng.standard_normal((4, 50)) * 8
    names = [n for n in ("float16", "bfloat16") if hasattr(xp, n)]
    if not names:
        pytest.skip("this array library has neither float16 nor bfloat16")
    for nm in names:
        dt = getattr(xp, nm)
        xh = xp.astype(xp.asarray(x), dt)
        xr = optnorm._lib.compat.to_numpy(xh).astype(np.float64)
        for method in METHODS:
            y = softmax(xh, method=method)
            assert y.dtype == dt
            assert_close(y, scipy.special.softmax(xr, axis=-1), rtol=1e-2, atol=2e-3, check_dtype=nm, xp=xp)
            ly = log_softmax(xh, method=method)
            assert_close(ly, scipy.special.log_softmax(xr, axis=-1), rtol=1e-2, atol=5e-2, check_dtype=nm, xp=xp)


def test_float16_large_logits_do_not_overflow():
    x = np.array([[60000.0, 59990.0, 0.0]], np.float16)  # exp(12) is already inf in float16
    y = softmax(x)
    assert y.dtype == np.float16 and np.all(np.isfinite(y))
    assert_close(y, scipy.special.softmax(x.astype(np.float64), axis=-1), atol=1e-3, check_dtype="float16")


# ------------------------------------------------------------------------------------------ VJPs and adapters
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("method", METHODS)
def test_vjp(name, method, rng, path):
    check_vjp(name, rng.standard_normal((3, 6)), opts={"method": method})
    check_vjp(name, rng.standard_normal((4, 3)), opts={"method": method, "axis": 0})


@pytest.mark.parametrize("name", ["stablemax", "log_stablemax"])
def test_stablemax_vjp(name, rng):
    check_vjp(name, rng.standard_normal((3, 6)) * 2)
    check_vjp(name, rng.standard_normal((4, 3)), opts={"axis": 0})


def test_vjp_on_every_backend(xp, rng):
    x = rng.standard_normal((3, 5))
    g = rng.standard_normal((3, 5))
    y = scipy.special.softmax(x, axis=-1)
    ref = y * (g - (g * y).sum(-1, keepdims=True))
    op = ops.get("softmax")
    _, res = op.fwd(xp.asarray(x))
    assert_close(op.bwd(res, xp.asarray(g))[0], ref, rtol=1e-12, atol=1e-14, xp=xp)
    op = ops.get("log_softmax")
    _, res = op.fwd(xp.asarray(x), method="two_pass")
    assert_close(op.bwd(res, xp.asarray(g))[0], g - y * g.sum(-1, keepdims=True), rtol=1e-12, atol=1e-14, xp=xp)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "stablemax", "log_stablemax"])
def test_torch_gradcheck(name, rng):
    torch = pytest.importorskip("torch")
    import optnorm.torch as ont

    x = torch.tensor(rng.standard_normal((3, 5)), requires_grad=True)
    f = getattr(ont, name)
    assert torch.autograd.gradcheck(lambda a: f(a, axis=-1), (x,))
    if "stable" not in name:
        assert torch.autograd.gradcheck(lambda a: f(a, method="two_pass"), (x,))


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "stablemax", "log_stablemax"])
def test_jax_check_grads_and_jit(name, rng):
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    import optnorm.jax as onj

    x = jax.numpy.asarray(rng.standard_normal((3, 5)))
    f = getattr(onj, name)
    check_grads(lambda a: f(a, axis=-1), (x,), order=1, modes=["rev"])
    y = jax.jit(lambda a: f(a))(x)
    ref = {"softmax": lambda v: scipy.special.softmax(v, -1), "log_softmax": lambda v: scipy.special.log_softmax(v, -1)}
    if name in ref:
        assert_close(y, ref[name](np.asarray(x)), rtol=1e-12)
    if "stable" not in name:
        g = jax.jit(jax.grad(lambda a: f(a, method="online")[0, 1]))(x)
        assert np.all(np.isfinite(np.asarray(g)))


# ------------------------------------------------------------------------------------------ stablemax
def _s_ref(v):
    return v + 1 if v >= 0 else 1 / (1 - v)


def test_stablemax_values(xp, rng):
    x = rng.standard_normal((4, 7)) * 3
    s = np.vectorize(_s_ref)(x)
    assert_close(stablemax(xp.asarray(x)), s / s.sum(-1, keepdims=True), rtol=1e-13, xp=xp)
    assert_close(log_stablemax(xp.asarray(x)), np.log(s) - np.log(s.sum(-1, keepdims=True)), rtol=1e-13, atol=1e-14,
                 xp=xp)
    assert_close(stablemax(xp.asarray(x), axis=0), s / s.sum(0, keepdims=True), rtol=1e-13, xp=xp)
    y32 = stablemax(xp.asarray(np.array([[1e30, -1e30, 0.0]], np.float32)))
    assert _dt(y32) == "float32"
    assert_close(y32, np.array([[1.0, 0.0, 1e-30]], np.float32), atol=1e-7, xp=xp)


def test_out_argument(xp):
    x = xp.asarray(np.array([[1.0, 2.0, 3.0]]))
    if xp.__name__.startswith("jax"):
        with pytest.raises(TypeError, match="out"):
            softmax(x, out=x)
        return
    out = xp.asarray(np.zeros((1, 3)))
    assert softmax(x, out=out) is out
    assert_close(out, scipy.special.softmax(np.array([[1.0, 2.0, 3.0]]), axis=-1), rtol=1e-14, xp=xp)
    assert log_stablemax(x, out=out) is out


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input():
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        softmax(np.ones((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="method"):
        softmax(x, method="fast")
    with pytest.raises(ValueError, match="masked_row"):
        log_softmax(x, masked_row="uniform")
    with pytest.raises(ValueError, match="axis"):
        softmax(x, axis=2)
    with pytest.raises(TypeError, match="axis"):
        softmax(x, axis=1.0)
    with pytest.raises(ValueError, match="out has shape"):
        softmax(x, out=np.empty((3, 2)))
    with pytest.raises(TypeError, match="out has dtype"):
        softmax(x, out=np.empty((2, 3), np.float32))
    with pytest.raises(ValueError, match="x is empty"):
        softmax(np.ones((2, 0)))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\. n\), got shape \(\)"):
        stablemax(np.ones(()))
    with pytest.raises(TypeError, match="x must be an array"):
        softmax("abc")
    # Python lists are read as NumPy input (float64), as NumPy and SciPy do
    assert_close(softmax([1.0, 2.0]), softmax(np.array([1.0, 2.0])), rtol=0)


# ------------------------------------------------------------------------------------------ out= aliasing (#13)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("axis", [-1, 0])
def test_out_aliasing_the_input_is_correct_on_every_path(path, method, log, axis, rng):
    """softmax(x, out=x) was wrong on the Numba two_pass path (the output row was the scratch space)."""
    f = log_softmax if log else softmax
    for shape in ((3, 5), (4, 3000)):
        x = rng.standard_normal(shape) * 5
        ref = f(x.copy(), axis=axis, method=method)
        buf = x.copy()
        got = f(buf, axis=axis, method=method, out=buf)
        assert got is buf
        assert_close(buf, ref, rtol=1e-13, atol=1e-13, err_msg=f"{path} {method} {shape}")
        buf32 = x.astype(np.float32)
        f(buf32, axis=axis, method=method, out=buf32)
        assert_close(buf32, ref.astype(np.float32), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("fn", [softmax, log_softmax, stablemax, log_stablemax])
def test_out_partially_overlapping_the_input_is_refused(path, fn):
    buf = np.zeros((3, 6))
    buf[:, :5] = np.arange(15.0).reshape(3, 5)
    with pytest.raises(ValueError, match="out overlaps x"):
        fn(buf[:, :5], out=buf[:, 1:])


@pytest.mark.parametrize("method", METHODS)
def test_read_only_out_is_refused_before_the_kernel(path, method):
    out = np.empty((2, 3))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        softmax(np.ones((2, 3)), method=method, out=out)


def test_stablemax_rows_near_the_float32_range():
    """stablemax / log_stablemax of rows near 3e38: the row sum of s overflowed to inf (NaN/0 results)."""
    x = np.array([[3e38, 3e38, 1.0, -3e38], [3.4e38, -1.0, 0.0, 2.0]], np.float32)
    y, ly = stablemax(x), log_stablemax(x)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(ly))
    x64 = x.astype(np.float64)
    s = np.where(x64 >= 0, x64 + 1, 1 / (1 - x64))
    assert_close(y, (s / s.sum(-1, keepdims=True)).astype(np.float32), rtol=1e-6, atol=1e-30)
    assert_close(ly, (np.log(s) - np.log(s.sum(-1, keepdims=True))).astype(np.float32), rtol=1e-6)


def test_small_calls_run_the_serial_kernel():
    """A 3 x 5 softmax runs the serial build of the row kernel (no thread-pool wake-up); big ones the parallel."""
    from optnorm._numba import norm as nb

    k = nb._softmax_safe_rows
    assert k.build_for(np.ones((3, 5))) is k.serial
    assert k.build_for(np.ones((1, 10 ** 6))) is k.serial  # one row: nothing to share out
    if __import__("numba").get_num_threads() > 1:
        assert k.build_for(np.ones((64, 4096))) is k.parallel
    x = np.random.default_rng(0).standard_normal((3, 5))
    assert_close(softmax(x), scipy.special.softmax(x, axis=-1), rtol=1e-14)


# ------------------------------------------------------------------------------------------ dtype=, softmin, Gumbel
def test_dtype_argument_matches_torch(rng):
    import optnorm.torch as ont
    from optnorm.norm import log_softmax, softmax

    x = rng.standard_normal((3, 5)).astype(np.float32)
    for f, tf in ((softmax, torch.softmax), (log_softmax, torch.log_softmax)):
        for dt in ("float64", np.float64, torch.float64):
            y = f(x, dtype=dt) if dt is not torch.float64 else f(torch.tensor(x), dtype=dt)
            assert compat.dtype_name(y.dtype) == "float64"
        xt = torch.tensor(x, requires_grad=True)
        ref = tf(xt, -1, dtype=torch.float64)
        g = torch.tensor(rng.standard_normal((3, 5)))
        ref.backward(g)
        x2 = torch.tensor(x, requires_grad=True)
        got = getattr(ont, f.__name__)(x2, dtype=torch.float64)
        got.backward(g)
        assert_close(got.detach().numpy(), ref.detach().numpy(), rtol=1e-12)
        assert x2.grad.dtype == torch.float32
        assert_close(x2.grad.numpy(), xt.grad.numpy(), rtol=1e-6, atol=1e-7)
    with pytest.raises(TypeError, match="dtype"):
        softmax(x, dtype="int32")


def test_softmin(xp, rng):
    from optnorm.norm import softmin

    x = rng.standard_normal((4, 6))
    assert_close(softmin(xp.asarray(x)), F.softmin(torch.tensor(x), dim=-1).numpy(), rtol=1e-12, xp=xp)
    check_vjp(ops.get("softmin"), x)
    assert_close(softmin(np.array([1e30, 0.0], np.float32)), np.array([0.0, 1.0], np.float32), rtol=0)


def test_gumbel_softmax_statistics_and_gradient(rng, xp):
    from optnorm.norm import gumbel_softmax, softmax

    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    hard = np.array([compat.to_numpy(gumbel_softmax(xp.asarray(logits), hard=True, seed=i)) for i in range(3000)])
    assert ((hard == 0) | (hard == 1)).all() and (hard.sum(-1) == 1).all()
    assert np.abs(hard.mean(0) - np.exp(logits)).max() < 0.03        # Gumbel-max: exact categorical samples
    soft = gumbel_softmax(logits, tau=0.5, seed=3)
    assert_close(soft.sum(), 1.0, rtol=1e-12)
    assert_close(gumbel_softmax(logits, tau=0.5, seed=3), soft, rtol=0)  # the seed fixes the noise
    g = rng.standard_normal(4)
    op = ops.get("gumbel_softmax")
    for hard_ in (False, True):
        _, res = op.fwd(logits, tau=0.5, hard=hard_, seed=3)
        (dx,) = op.bwd(res, g)
        # straight-through: the VJP is the softmax VJP of the relaxed sample at temperature tau
        ys = res.y_soft
        assert_close(dx, ys * (g - (g * ys).sum()) / 0.5, rtol=1e-12)
    check_vjp(op, logits, opts={"tau": 0.7, "seed": 5})
    noise = -np.log(np.random.default_rng(3).standard_exponential(4))
    assert_close(soft, softmax((logits + noise) / 0.5), rtol=1e-12)
    for tau in (0.0, -1.0):
        with pytest.raises(ValueError, match="tau"):
            gumbel_softmax(logits, tau=tau)
