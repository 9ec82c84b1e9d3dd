"""decoupled_softmax_loss and cosine_softmax_loss against loop references."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm.norm import cosine_softmax_loss, decoupled_softmax_loss
from optnorm.testing import assert_close, check_vjp


def _ref_decoupled(s, t, w=None):
    out = []
    for i in range(s.shape[0]):
        P = np.nonzero(t[i])[0]
        N = np.nonzero(t[i] == 0)[0]
        if len(P) == 0 or len(N) == 0:
            out.append(0.0)
            continue
        terms = [s[i, p] - np.log(np.exp(s[i, p]) + np.exp(s[i, N]).sum()) for p in P]
        out.append(-np.mean(terms))
    out = np.array(out)
    return out if w is None else out * w


def test_decoupled_softmax(xp, rng):
    s = rng.standard_normal((6, 9)) * 3
    t = (rng.random((6, 9)) < 0.35).astype(np.float64)
    t[0] = 0
    t[1] = 1
    t[2, :2] = 1
    w = rng.random(6)
    ref = _ref_decoupled(s, t, w)
    assert_close(decoupled_softmax_loss(xp.asarray(s), xp.asarray(t), xp.asarray(w), reduction="none"), ref,
                 rtol=1e-12, atol=1e-14, xp=xp)
    assert_close(decoupled_softmax_loss(xp.asarray(s), xp.asarray(t)), _ref_decoupled(s, t).mean(), rtol=1e-12, xp=xp)
    assert_close(decoupled_softmax_loss(xp.asarray(s), xp.asarray(t), reduction="sum"), _ref_decoupled(s, t).sum(),
                 rtol=1e-12, xp=xp)


def test_decoupled_single_positive_is_cross_entropy(rng):
    torch = pytest.importorskip("torch")
    s = rng.standard_normal((5, 7))
    y = rng.integers(0, 7, 5)
    t = np.eye(7)[y]
    ref = torch.nn.functional.cross_entropy(torch.tensor(s), torch.tensor(y)).item()
    assert float(decoupled_softmax_loss(s, t)) == pytest.approx(ref, rel=1e-12)
    big = decoupled_softmax_loss(s * 1e3, t.astype(bool), reduction="none")
    assert np.all(np.isfinite(big))


def _ref_cos(x, w, y, s, m, kind):
    xh = x / np.linalg.norm(x, axis=1, keepdims=True)
    wh = w / np.linalg.norm(w, axis=1, keepdims=True)
    cos = xh @ wh.T
    z = s * cos.copy()
    for i, c in enumerate(y):
        th = np.arccos(np.clip(cos[i, c], -1, 1))
        z[i, c] = s * (cos[i, c] - m if kind == "additive" else np.cos(th + m))
    z = z - z.max(1, keepdims=True)
    return -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1)))


@pytest.mark.parametrize("kind,m", [("additive", 0.0), ("additive", 0.35), ("angular", 0.5)])
def test_cosine_softmax(xp, rng, kind, m):
    x, w = rng.standard_normal((6, 5)), rng.standard_normal((4, 5))
    y = rng.integers(0, 4, 6)
    ref = _ref_cos(x, w, y, 16.0, m, kind)
    got = cosine_softmax_loss(xp.asarray(x), xp.asarray(w), xp.asarray(y), scale=16.0, margin=m, margin_type=kind,
                              reduction="none")
    assert_close(got, ref, rtol=1e-10, xp=xp)


def test_vjps(rng):
    s = rng.standard_normal((4, 6))
    t = (rng.random((4, 6)) < 0.4).astype(np.float64)
    t[0] = 0
    for red in ("mean", "none"):
        check_vjp("norm.decoupled_softmax_loss", s, t, rng.random(4), opts={"reduction": red})
    x, w = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    y = rng.integers(0, 4, 5)
    for kind, m in (("additive", 0.3), ("angular", 0.4)):
        check_vjp("norm.cosine_softmax_loss", x, w, y, opts={"margin": m, "margin_type": kind, "scale": 4.0})


def test_adapters(rng):
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    import optnorm.jax as onj
    import optnorm.torch as ont

    s = rng.standard_normal((4, 6))
    t = (rng.random((4, 6)) < 0.4).astype(np.float64)
    x, w = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    y = rng.integers(0, 4, 5)
    assert torch.autograd.gradcheck(lambda a: ont.decoupled_softmax_loss(a, torch.tensor(t)),
                                    (torch.tensor(s, requires_grad=True),))
    assert torch.autograd.gradcheck(
        lambda a, b: ont.cosine_softmax_loss(a, b, torch.tensor(y), margin=0.3, margin_type="angular", scale=4.0),
        (torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)))
    J = jax.numpy.asarray
    check_grads(lambda a: onj.decoupled_softmax_loss(J(a), J(t)), (J(s),), order=1, modes=["rev"])
    check_grads(lambda a, b: onj.cosine_softmax_loss(J(a), J(b), J(y), margin=0.2, scale=4.0), (J(x), J(w)),
                order=1, modes=["rev"])


def test_bad_input(rng):
    s = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match="targets has shape"):
        decoupled_softmax_loss(s, np.ones((3, 5)))
    with pytest.raises(ValueError, match="weights has shape"):
        decoupled_softmax_loss(s, np.ones((3, 4)), np.ones(4))
    with pytest.raises(ValueError, match="reduction must be one of"):
        decoupled_softmax_loss(s, np.ones((3, 4)), reduction="avg")
    x, w = rng.standard_normal((3, 2)), rng.standard_normal((4, 2))
    with pytest.raises(TypeError, match="labels must have an integer dtype"):
        cosine_softmax_loss(x, w, np.zeros(3))
    with pytest.raises(ValueError, match=r"labels has label 4, outside \[0, 4\)"):
        cosine_softmax_loss(x, w, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match="margin_type must be one of"):
        cosine_softmax_loss(x, w, np.array([0, 1, 2]), margin_type="mult")
    with pytest.raises(ValueError, match=r"scale must be in \(0, inf\)"):
        cosine_softmax_loss(x, w, np.array([0, 1, 2]), scale=0)
    with pytest.raises(ValueError, match="weights has shape .* but features has d = 2"):
        cosine_softmax_loss(x, rng.standard_normal((4, 3)), np.array([0, 1, 2]))
