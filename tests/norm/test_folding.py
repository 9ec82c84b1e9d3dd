"""fold_layer_norm and tract_linear (tract_precondition, which tract_linear's backward calls, is tested in
tests/optim/test_tract.py)."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm.norm import fold_layer_norm, layer_norm, tract_linear
from optnorm.testing import assert_close, check_vjp


def test_tract_linear(xp, rng):
    x, w, b = rng.standard_normal((7, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    y = tract_linear(xp.asarray(x), xp.asarray(w), xp.asarray(b))
    assert_close(y, x @ w.T + b, rtol=1e-12, xp=xp)


def _primal(g, a, lam):
    """TrAct's primal closed form, as written in the official backward (re-typed with a NumPy inverse)."""
    b, n = a.shape
    return g.T @ a @ np.linalg.inv(a.T @ a / b + lam * np.eye(n))


def test_tract_linear_backward(rng):
    from optnorm._lib import ops

    x, w, b = rng.standard_normal((7, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    op = ops.get("norm.tract_linear")
    assert op.skip_check_argnums == (1,)
    check_vjp(op, x, w, b, opts={"lam": 0.3})  # x and b exact, w skipped on purpose
    dy = rng.standard_normal((7, 3))
    _, res = op.fwd(x, w, b, lam=0.3)
    dx, dw, db = op.bwd(res, dy)
    primal = _primal(dy, x, 0.3)
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
    a = rng.standard_normal((5, 3))
    with pytest.raises(ValueError, match="w has shape .* but x has n = 3"):
        tract_linear(a, rng.standard_normal((2, 4)))
    with pytest.raises(ValueError, match="ln_weight has shape"):
        fold_layer_norm(rng.standard_normal((2, 3)), None, np.ones(4), std=1.0)
    with pytest.raises(ValueError, match=r"std must be in \(0, inf\)"):
        fold_layer_norm(rng.standard_normal((2, 3)), std=0.0)
    with pytest.raises(TypeError, match="std must be a Python number"):
        fold_layer_norm(rng.standard_normal((2, 3)), std=np.ones(3))
