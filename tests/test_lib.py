"""Foundation: backend detection, dispatch, validation, the op registry and both adapters (on a toy op)."""
from __future__ import annotations

import numpy as np
import pytest

import optnorm
from optnorm._lib import compat, dispatch, ops, roles
from optnorm.testing import assert_close, check_vjp, numerical_vjp


def _scratch_dispatcher(name):
    """A Dispatcher for one test, dropped from the global table afterwards (DISPATCHERS feeds the docs and
    the API tests, which must only see the package's own)."""
    d = dispatch.Dispatcher(name)
    dispatch.DISPATCHERS.pop(name)
    return d


# ---------------------------------------------------------------- a toy op written like a real one
def _toy(x, w=None, /, *, scale=2.0):
    """y = scale * w * x**2 (w optional); a second output sum(x) checks tuple outputs."""
    xp = compat.array_namespace(x, w)
    y = scale * x * x
    if w is not None:
        y = y * w
    return y, xp.sum(x, axis=-1)


def _toy_fwd(x, w=None, /, *, scale=2.0):
    return _toy(x, w, scale=scale), (x, w, scale)


def _toy_bwd(res, dy):
    x, w, scale = res
    dy0, dy1 = dy
    wx = 1.0 if w is None else w
    dx = 2 * scale * x * wx * dy0 + dy1[..., None]
    dw = None if w is None else scale * x * x * dy0
    return dx, dw


@pytest.fixture
def toy_op():
    op = ops.register("testing.toy_square", _toy, _toy_fwd, _toy_bwd)
    yield op
    ops._REGISTRY.pop("testing.toy_square", None)


# ---------------------------------------------------------------- compat
def test_backend_names_and_roundtrip(xp):
    a = np.arange(6.0).reshape(2, 3)
    x = xp.asarray(a)
    assert compat.backend_name(x) in {"numpy", "array_api_strict", "torch", "jax", "cupy"}
    assert_close(x, a)
    back = compat.from_numpy_like(a * 2, x)
    assert compat.backend_name(back) == compat.backend_name(x)
    assert_close(back, a * 2)


def test_mixed_namespaces_raise():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="different libraries"):
        roles.same_library("f", {"x": np.ones(3), "weight": torch.ones(3)})


def test_write_out_checks_shape_and_dtype():
    out = np.empty((2, 3))
    with pytest.raises(ValueError, match="out has shape"):
        compat.write_out(out, np.ones((3, 2)))
    with pytest.raises(TypeError, match="dtype"):
        compat.write_out(out, np.ones((2, 3), np.float32))
    assert compat.write_out(out, np.ones((2, 3))) is out


def test_compute_dtype(xp):
    x32 = xp.asarray(np.ones(3, np.float32))
    assert compat.compute_dtype(x32) == xp.float32
    if hasattr(xp, "float16"):
        assert compat.compute_dtype(xp.asarray(np.ones(3, np.float16))) == xp.float32


# ---------------------------------------------------------------- dispatch
def test_dispatch_paths(monkeypatch):
    d = _scratch_dispatcher("testing.double")
    d.generic(lambda x: ("generic", x))
    d.numba(lambda x: ("numba", x), when=lambda x: x.dtype == np.float64)
    x64, x32 = np.ones(2), np.ones(2, np.float32)
    assert d(x64)[0] == "numba"
    assert d(x32)[0] == "generic"  # `when` refused
    with optnorm.use_backend("generic"):
        assert d(x64)[0] == "generic"
        with optnorm.use_backend("auto"):
            assert d(x64)[0] == "numba"
    monkeypatch.setenv("OPTNORM_BACKEND", "generic")
    assert d(x64)[0] == "generic"
    monkeypatch.setenv("OPTNORM_BACKEND", "bogus")
    with pytest.raises(ValueError, match="OPTNORM_BACKEND"):
        d(x64)
    with pytest.raises(ValueError, match="backend must be"):
        with optnorm.use_backend("fast"):
            pass


def test_dispatch_forced_numba_on_torch_runs_generic():
    torch = pytest.importorskip("torch")
    d = _scratch_dispatcher("testing.t")
    d.generic(lambda x: "generic")
    d.numba(lambda x: "numba")
    with optnorm.use_backend("numba"):
        assert d(torch.ones(2)) == "generic"
        assert d(np.ones(2)) == "numba"


def test_dispatch_requires_generic():
    d = _scratch_dispatcher("testing.none")
    with pytest.raises(NotImplementedError, match="testing.none"):
        d(np.ones(2))


# ---------------------------------------------------------------- roles (the one validation layer)
def _call(values=None):
    return roles.Call("f", values or {})


def test_roles_messages_name_the_argument():
    with pytest.raises(TypeError, match="f: logits must have a real floating dtype"):
        roles.Float().check(np.arange(3), "logits", _call())
    with pytest.raises(ValueError, match=r"f: eps must be in \(0, inf\), got 0.0"):
        roles.Positive().check(0.0, "eps", _call())
    with pytest.raises(TypeError, match="eps must be a real number"):
        roles.Positive().check("1", "eps", _call())
    with pytest.raises(ValueError, match="axis=3 is out of range for x with 2 dimensions"):
        roles.Axis("x").check(3, "axis", _call({"x": np.ones((2, 2))}))
    with pytest.raises(ValueError, match=r"betas\[0\] must be in \[0, 1\)"):
        roles.UnitInterval().check(1.0, "betas[0]", _call())
    with pytest.raises(ValueError, match="x is empty"):
        roles.Float("n d").check(np.ones((2, 0)), "x", _call())
    with pytest.raises(ValueError, match="M contains NaN or inf"):
        roles.Cost().check(np.array([[1.0, np.nan]]), "M", _call())
    with pytest.raises(ValueError, match="method must be one of"):
        roles.Choice(("safe", "online")).check("fast", "method", _call())
    call = _call()
    roles.Float("n d").check(np.ones((3, 2)), "X", call)
    with pytest.raises(ValueError, match="Y has shape \\(4, 5\\), whose dimension 'd' is 5, but X has d = 2"):
        roles.Float("m d").check(np.ones((4, 5)), "Y", call)


def test_roles_weights_and_spd():
    with pytest.raises(ValueError, match="a must sum to 1 along its last axis; it is off by up to 0.5"):
        roles.Weights().check(np.array([0.5, 0.25, 0.75]), "a", _call())
    with pytest.raises(ValueError, match="smallest entry is -0.5"):
        roles.Weights().check(np.array([1.5, -0.5]), "b", _call())
    roles.Weights().check(np.full(4, 0.25), "a", _call())
    with pytest.raises(ValueError, match="smallest eigenvalue is -1"):
        roles.SPD().check(np.diag([2.0, -1.0]), "A", _call())
    with pytest.raises(ValueError, match="not symmetric"):
        roles.Symmetric().check(np.array([[1.0, 2.0], [0.0, 1.0]]), "A", _call())
    with pytest.raises(ValueError, match="square"):
        roles.Symmetric().check(np.ones((2, 3)), "A", _call())


# ---------------------------------------------------------------- registry + VJP helpers
def test_registry_lookup(toy_op):
    assert ops.get("testing.toy_square") is toy_op
    assert ops.get("toy_square") is toy_op
    assert toy_op.array_params == ("x", "w")
    arrays, opts = toy_op.split((np.ones(2),), {"scale": 3.0})
    assert arrays[1] is None and opts == {"scale": 3.0}
    with pytest.raises(AttributeError, match="no registered op"):
        ops.get("no_such_op")
    with pytest.raises(ValueError, match="domain.name"):
        ops.register("flat", _toy, _toy_fwd, _toy_bwd)


def test_check_vjp_catches_a_wrong_backward(toy_op, rng):
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    check_vjp(toy_op, x, w, opts={"scale": 1.5})
    bad = ops.Op("testing.bad", _toy, _toy_fwd, lambda res, dy: (_toy_bwd(res, dy)[0] * 1.01, _toy_bwd(res, dy)[1]),
                 array_params=("x", "w"))
    with pytest.raises(AssertionError, match="disagrees with finite differences"):
        check_vjp(bad, x, w)


def test_numerical_vjp_matches_analytic(rng):
    x = rng.standard_normal((2, 3))
    dy = (rng.standard_normal((2, 3)), rng.standard_normal(2))
    num = numerical_vjp(lambda a: _toy(a), [x], dy)[0]
    ana = _toy_bwd((x, None, 2.0), dy)[0]
    assert_close(num, ana, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- adapters
def test_torch_adapter_gradcheck(toy_op, rng):
    torch = pytest.importorskip("torch")
    import optnorm.torch as ont

    x = torch.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    w = torch.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    f = ont.op("toy_square")
    assert torch.autograd.gradcheck(lambda a, b: f(a, b, scale=1.5), (x, w))
    y, s = ont.toy_square(x, w)  # attribute access by short name
    assert y.requires_grad and s.requires_grad
    y2, _ = ont.toy_square(x.detach(), w.detach())  # no grad needed: plain forward
    assert not y2.requires_grad


def test_jax_adapter_check_grads_and_jit(toy_op, rng):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.test_util import check_grads

    import optnorm.jax as onj

    x = jnp.asarray(rng.standard_normal((3, 4)))
    w = jnp.asarray(rng.standard_normal((3, 4)))
    f = onj.op("toy_square")
    check_grads(lambda a, b: f(a, b, scale=1.5), (x, w), order=1, modes=["rev"])
    g_jit = jax.jit(jax.grad(lambda a, b: f(a, b)[0].sum() + f(a, b)[1].sum()))(x, w)
    g_ref = 2 * 2.0 * x * w + 1.0
    assert_close(g_jit, np.asarray(g_ref), rtol=1e-12)
    # a None positional input is passed through and gets no cotangent
    g_none = jax.grad(lambda a: onj.toy_square(a)[0].sum())(x)
    assert_close(g_none, np.asarray(4.0 * x), rtol=1e-12)


def test_import_is_lazy():
    import subprocess
    import sys

    code = ("import sys, optnorm; bad = [m for m in ('numba', 'torch', 'jax', 'scipy', 'optnorm.norm') "
            "if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import optnorm pulled in: {out}"


def test_check_vjp_skips_none_outputs(rng):
    def f(x, *, scale=1.0):
        return x * scale, None

    def f_fwd(x, *, scale=1.0):
        return f(x, scale=scale), scale

    def f_bwd(res, dy):
        assert dy[1] is None
        return (dy[0] * res,)

    check_vjp(ops.Op("testing.none_out", f, f_fwd, f_bwd, array_params=("x",)), rng.standard_normal(4),
              opts={"scale": 3.0})


def test_assert_close_dtype_names(xp):
    assert_close(xp.asarray(np.ones(2, np.float32)), np.ones(2), check_dtype="float32")


def test_validation_of_closed_over_jax_constant_under_jit():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    w = jnp.asarray([0.25, 0.75])
    m = jnp.asarray([[1.0, 2.0], [2.0, 5.0]])

    @jax.jit
    def f(x):
        # arrays closed over by a jitted function are concrete: the value checks read them on the host
        roles.Weights().check(w, "w", _call())
        roles.Symmetric().check(m, "m", _call())
        return x * 2

    assert_close(f(jnp.ones(2)), np.full(2, 2.0))


def test_from_numpy_like_keeps_a_0d_array_0d(xp):
    x = xp.asarray(np.zeros(3))
    back = compat.from_numpy_like(np.asarray(2.5), x)
    assert tuple(back.shape) == ()
    assert float(back) == 2.5


def test_vjp_validate_gives_a_fwd_the_roles_of_its_public_function():
    from optnorm._lib import api
    from optnorm.norm import softmax

    def fwd(x, *, axis=-1, method="safe", masked_row="nan", dtype=None, out=None):
        return x, ("res", axis)

    checked = api._checked(softmax, fwd)           # what vjp(softmax, fwd, bwd, validate=True) registers
    y, res = checked([1.0, 2.0], axis=-1)          # a list is read as NumPy, axis normalised
    assert isinstance(y, np.ndarray) and res == ("res", 0)
    with pytest.raises(ValueError, match="method"):
        checked(np.ones(3), method="nope")
    with pytest.raises(TypeError, match="parameters"):
        api._checked(softmax, lambda x, *, axis=-1: (x, None))


def test_backend_name_of_a_numpy_scalar():
    # NumPy reductions return NumPy scalars, not 0-d arrays: they are still NumPy (assert_close(..., xp=xp))
    assert compat.backend_name(np.float32(1.0)) == "numpy"
    assert compat.backend_name(np.sum(np.ones(3))) == "numpy"


def test_monitor_counts_the_last_iterations_error_when_checks_are_sparse():
    """An error below tol at the iteration limit is convergence even when it is not a check iteration
    (barycenter(max_iter=5, check_every=10) stopped at error 7e-16 and warned that it had not converged)."""
    import warnings

    from optnorm._lib.solver import Monitor

    mon = Monitor("demo", max_iter=5, tol=1e-9, check_every=10)
    for it in range(1, 6):
        if mon.wants(it):
            stop = mon.update(it, 1e-3 if it < 5 else 7e-16)
        else:
            mon.step(it)
            stop = False
        assert not stop or it == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mon.close()
    assert mon.converged and mon.n_iter == 5
