"""fold_layer_norm and tract_linear (and the optim function its backward calls, tract_precondition: its tests
still live here, next to the op that uses it)."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm.norm import fold_layer_norm, layer_norm, tract_linear
from optnorm.optim import tract_precondition
from optnorm.testing import assert_close, check_vjp


def _official_closed_forms(g, a, lam):
    """Both expressions as written in the official torch_tract backward (re-typed with NumPy inverses)."""
    b, n = a.shape
    primal = g.T @ a @ np.linalg.inv(a.T @ a / b + lam * np.eye(n))
    A = a @ a.T / b
    Ib = np.eye(b)
    dual = g.T @ (Ib - 1.0 / lam * A @ np.linalg.inv(A / lam + Ib)) @ a / lam
    return primal, dual


@pytest.mark.parametrize("shape", [(30, 8), (6, 20)])
def test_tract_precondition_closed_forms(xp, rng, shape):
    b, n = shape
    a, g = rng.standard_normal((b, n)), rng.standard_normal((b, 5))
    primal, dual = _official_closed_forms(g, a, 0.1)
    assert_close(primal, dual, rtol=1e-8, atol=1e-10)
    for method, ref in (("primal", primal), ("dual", dual), ("auto", primal)):
        got = tract_precondition(xp.asarray(g), xp.asarray(a), lam=0.1, method=method)
        assert_close(got, ref, rtol=1e-8, atol=1e-10, xp=xp)


def test_tract_auto_choice_and_batched(rng):
    import optnorm.optim.tract as t

    a, g = rng.standard_normal((2, 3, 10)), rng.standard_normal((2, 3, 4))
    primal, dual = _official_closed_forms(g.reshape(6, 4), a.reshape(6, 10), 0.5)
    assert_close(tract_precondition(g, a, lam=0.5), dual, rtol=1e-8)
    y = tract_precondition(g.astype(np.float32), a.astype(np.float32))
    assert y.dtype == np.float32 and y.shape == (4, 10)
    assert t.__all__ == ["tract_precondition"]


def test_tract_large_lambda_is_scaled_gradient(rng):
    a, g = rng.standard_normal((40, 6)), rng.standard_normal((40, 3))
    lam = 1e6
    assert_close(tract_precondition(g, a, lam=lam) * lam, g.T @ a, rtol=1e-4)


def test_tract_linear(xp, rng):
    x, w, b = rng.standard_normal((7, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    y = tract_linear(xp.asarray(x), xp.asarray(w), xp.asarray(b))
    assert_close(y, x @ w.T + b, rtol=1e-12, xp=xp)


def test_tract_linear_backward(rng):
    from optnorm._lib import ops

    x, w, b = rng.standard_normal((7, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    op = ops.get("norm.tract_linear")
    assert op.skip_check_argnums == (1,)
    check_vjp(op, x, w, b, opts={"lam": 0.3})  # x and b exact, w skipped on purpose
    dy = rng.standard_normal((7, 3))
    _, res = op.fwd(x, w, b, lam=0.3)
    dx, dw, db = op.bwd(res, dy)
    primal, _ = _official_closed_forms(dy, x, 0.3)
    assert_close(dw, primal, rtol=1e-10)
    torch = pytest.importorskip("torch")
    import optnorm.torch as ont

    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    (ont.tract_linear(tx, tw, tb, lam=0.3) * torch.tensor(dy)).sum().backward()
    assert_close(tw.grad, primal, rtol=1e-10)
    assert_close(tx.grad, dy @ w, rtol=1e-12)
    assert torch.autograd.gradcheck(lambda a, c: ont.tract_linear(a, tw.detach(), c), (tx, tb))
    jax = pytest.importorskip("jax")
    import optnorm.jax as onj

    gw = jax.grad(lambda ww: (onj.tract_linear(jax.numpy.asarray(x), ww, jax.numpy.asarray(b), lam=0.3)
                              * jax.numpy.asarray(dy)).sum())(jax.numpy.asarray(w))
    assert_close(gw, primal, rtol=1e-10)


def test_fold_layer_norm(xp, rng):
    n, out = 6, 4
    W, b = rng.standard_normal((out, n)), rng.standard_normal(out)
    g, be = rng.random(n) + 0.5, rng.standard_normal(n)
    X = rng.standard_normal((10, n))
    sig = 1.7
    ref = ((X - X.mean(1, keepdims=True)) / sig * g + be) @ W.T + b
    Wf, bf = fold_layer_norm(xp.asarray(W), xp.asarray(b), xp.asarray(g), xp.asarray(be), std=sig)
    from optnorm._lib import compat

    Wf, bf = compat.to_numpy(Wf), compat.to_numpy(bf)
    assert_close(X @ Wf.T + bf, ref, rtol=1e-10)
    Wn, bn = fold_layer_norm(xp.asarray(W), None, xp.asarray(g), xp.asarray(be), std=sig, center=False)
    Xc = X - X.mean(1, keepdims=True)
    assert_close(Xc @ compat.to_numpy(Wn).T + compat.to_numpy(bn), ref - b, rtol=1e-10)


def test_fold_matches_layer_norm_fixed_std(rng):
    n = 5
    W, b = rng.standard_normal((3, n)), rng.standard_normal(3)
    g, be = rng.random(n) + 0.5, rng.standard_normal(n)
    X = rng.standard_normal((8, n))
    ref = layer_norm(X, g, be, fixed_std=1.3) @ W.T + b
    Wf, bf = fold_layer_norm(W, b, g, be, std=1.3)
    assert_close(X @ Wf.T + bf, ref, rtol=1e-10)


def test_bad_input(rng):
    a, g = rng.standard_normal((5, 3)), rng.standard_normal((4, 2))
    with pytest.raises(ValueError, match="grad_out has leading shape"):
        tract_precondition(g, a)
    with pytest.raises(ValueError, match="lam must be > 0"):
        tract_precondition(rng.standard_normal((5, 2)), a, lam=0.0)
    with pytest.raises(ValueError, match="method must be one of"):
        tract_precondition(rng.standard_normal((5, 2)), a, method="woodbury")
    with pytest.raises(ValueError, match="w has shape .* but x has n = 3"):
        tract_linear(a, rng.standard_normal((2, 4)))
    with pytest.raises(ValueError, match="ln_weight has shape"):
        fold_layer_norm(rng.standard_normal((2, 3)), None, np.ones(4), std=1.0)
    with pytest.raises(ValueError, match=r"std must be in \(0, inf\)"):
        fold_layer_norm(rng.standard_normal((2, 3)), std=0.0)
    with pytest.raises(TypeError, match="std must be a Python number"):
        fold_layer_norm(rng.standard_normal((2, 3)), std=np.ones(3))
