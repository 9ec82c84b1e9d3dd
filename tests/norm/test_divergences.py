"""kl_div and js_divergence (torch, SciPy references), binary_cross_entropy(_with_logits) and nll_loss (torch)."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm._lib import ops
from optnorm.norm import (binary_cross_entropy, binary_cross_entropy_with_logits, js_divergence, kl_div,
                          log_softmax, nll_loss)
from optnorm.testing import assert_close, check_vjp

from . import F, torch


def _tt(a):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=True)


def _grads(f, args, g):
    ts = [_tt(a) for a in args]
    y = f(*ts)
    y.backward(torch.tensor(np.broadcast_to(g, tuple(y.shape)).copy()))
    return y.detach().numpy(), [t.grad.numpy() for t in ts]


# ------------------------------------------------------------------------------------------- kl_div
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean", "none"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_matches_torch_and_scipy(rng, reduction, log_target):
    from scipy.special import rel_entr

    logq = np.log(rng.dirichlet(np.ones(5), size=4))
    p = rng.dirichlet(np.ones(5), size=4)
    p[0, 1] = 0.0
    p[0] /= p[0].sum()
    tgt = np.log(p + 1e-3) if log_target else p
    g = rng.standard_normal((4, 5) if reduction == "none" else ())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref, (rdi, rdt) = _grads(lambda a, b: F.kl_div(a, b, reduction=reduction, log_target=log_target),
                                 (logq, tgt), g)
    import optnorm.torch as ont

    y, (di, dt) = _grads(lambda a, b: ont.kl_div(a, b, reduction=reduction, log_target=log_target), (logq, tgt), g)
    assert_close(y, ref, rtol=1e-12, atol=1e-14)
    # where p = 0 torch 2.13's autograd gives NaN (0 * log 0 in its decomposition); optnorm gives the limits:
    # d/dinput = -p = 0 and d/dtarget = 0 (torch's own documented masking of the target gradient)
    for got, want in ((di, rdi), (dt, rdt)):
        nan = np.isnan(want)
        assert_close(got[~nan], want[~nan], rtol=1e-12, atol=1e-14)
        assert np.all(got[nan] == 0)
    if not log_target and reduction == "sum":
        assert_close(kl_div(logq, p, reduction="sum"), rel_entr(p, np.exp(logq)).sum(), rtol=1e-12)


def test_kl_div_backends_and_broadcast(xp, rng):
    logq = np.log(rng.dirichlet(np.ones(3), size=4))
    p = rng.dirichlet(np.ones(3))
    want = (p * (np.log(p) - logq)).sum() / 4
    assert_close(kl_div(xp.asarray(logq), xp.asarray(p)), want, rtol=1e-12, xp=xp)
    check_vjp(ops.get("kl_div"), logq, p)
    assert kl_div(np.log(np.array(0.5)), np.array(0.5)).shape == ()   # 0-d: batchmean does not divide


def test_kl_div_bad_target():
    with pytest.raises(ValueError, match="target"):
        kl_div(np.zeros(3), np.array([0.5, -0.1, 0.6]))


# ------------------------------------------------------------------------------------------- JSD
def test_js_divergence_matches_scipy(rng, xp):
    from scipy.spatial.distance import jensenshannon
    from scipy.special import softmax

    P, Q = rng.dirichlet(np.ones(6), size=3), rng.dirichlet(np.ones(6), size=3)
    P[0, 2] = 0.0
    P[0] /= P[0].sum()
    ref = np.array([jensenshannon(P[i], Q[i]) ** 2 for i in range(3)])
    assert_close(js_divergence(xp.asarray(P), xp.asarray(Q), reduction="none"), ref, rtol=1e-12, atol=1e-15, xp=xp)
    a, b = rng.standard_normal((3, 6)) * 4, rng.standard_normal((3, 6)) * 4
    ref = np.mean([jensenshannon(softmax(a[i]), softmax(b[i])) ** 2 for i in range(3)])
    assert_close(js_divergence(xp.asarray(a), xp.asarray(b), from_logits=True), ref, rtol=1e-12, xp=xp)
    # along another axis, and the generalised beta against the direct formula
    assert_close(js_divergence(P.T, Q.T, axis=0, reduction="sum"), js_divergence(P, Q, reduction="sum"), rtol=1e-14)
    beta = 0.3
    M = beta * P + (1 - beta) * Q
    with np.errstate(divide="ignore", invalid="ignore"):
        direct = np.sum(np.where(P > 0, beta * P * np.log(P / M), 0.0) + (1 - beta) * Q * np.log(Q / M), axis=-1)
    assert_close(js_divergence(P, Q, beta=beta, reduction="none"), direct, rtol=1e-12)


def test_js_divergence_vjp_and_bounds(rng):
    a, b = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    check_vjp(ops.get("js_divergence"), a, b, opts={"from_logits": True, "beta": 0.3, "reduction": "sum"})
    big = np.array([[1e30, 0.0], [0.0, 1e30]])
    assert_close(js_divergence(big, big[::-1], from_logits=True), np.log(2), rtol=1e-12)
    with pytest.raises(ValueError, match="p must hold probabilities summing to 1"):
        js_divergence(np.array([0.5, 0.6]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="q holds probabilities"):
        js_divergence(np.array([0.5, 0.5]), np.array([1.5, -0.5]))
    with pytest.raises(ValueError, match="beta"):
        js_divergence(np.array([0.5, 0.5]), np.array([0.5, 0.5]), beta=1.0)


# ------------------------------------------------------------------------------------------- BCE
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_matches_torch(rng, reduction):
    import optnorm.torch as ont

    p, y, w = rng.random((3, 4)) * 0.98 + 0.01, rng.random((3, 4)), rng.random(4) + 0.5
    g = rng.standard_normal((3, 4) if reduction == "none" else ())
    wt = torch.tensor(w)
    ref, (rdp, rdy) = _grads(lambda a, b: F.binary_cross_entropy(a, b, weight=wt, reduction=reduction), (p, y), g)
    got, (dp, dy) = _grads(lambda a, b: ont.binary_cross_entropy(a, b, wt, reduction=reduction), (p, y), g)
    assert_close(got, ref, rtol=1e-12, atol=1e-14)
    assert_close(dp, rdp, rtol=1e-12, atol=1e-14)
    assert_close(dy, rdy, rtol=1e-12, atol=1e-14)
    # the clamp at p in {0, 1}: torch's values (log clamped at -100), finite gradients
    pe = np.array([0.0, 1.0, 0.5])
    ye = np.array([1.0, 0.0, 1.0])
    assert_close(binary_cross_entropy(pe, ye, reduction="none"),
                 F.binary_cross_entropy(torch.tensor(pe), torch.tensor(ye), reduction="none").numpy(), rtol=1e-14)
    check_vjp(ops.get("binary_cross_entropy"), p, y, w, opts={"reduction": reduction})


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits_matches_torch(rng, reduction, xp):
    x, y = rng.standard_normal((3, 4)) * 5, rng.random((3, 4))
    w, pw = rng.random((3, 1)) + 0.5, rng.random(4) + 0.5
    g = rng.standard_normal((3, 4) if reduction == "none" else ())
    ref, (rdx, rdy) = _grads(lambda a, b: F.binary_cross_entropy_with_logits(
        a, b, weight=torch.tensor(w), pos_weight=torch.tensor(pw), reduction=reduction), (x, y), g)
    got = binary_cross_entropy_with_logits(xp.asarray(x), xp.asarray(y), xp.asarray(w), pos_weight=xp.asarray(pw),
                                           reduction=reduction)
    assert_close(got, ref, rtol=1e-12, atol=1e-13, xp=xp)
    import optnorm.torch as ont

    _, (dx, dy) = _grads(lambda a, b: ont.binary_cross_entropy_with_logits(
        a, b, torch.tensor(w), pos_weight=torch.tensor(pw), reduction=reduction), (x, y), g)
    assert_close(dx, rdx, rtol=1e-12, atol=1e-13)
    assert_close(dy, rdy, rtol=1e-12, atol=1e-13)
    check_vjp(ops.get("binary_cross_entropy_with_logits"), x, y, w,
              opts={"pos_weight": pw, "reduction": reduction})


def test_bce_with_logits_is_stable_and_reference(rng):
    from scipy.special import log_expit

    x = np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    y = np.array([1.0, 0.0, 0.5, 1.0, 0.0])
    want = -(y * log_expit(x) + (1 - y) * log_expit(-x))
    assert_close(binary_cross_entropy_with_logits(x, y, reduction="none"), want, rtol=1e-14)


def test_bce_bad_input():
    with pytest.raises(ValueError, match="p holds probabilities"):
        binary_cross_entropy(np.array([0.5, 1.2]), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="p holds probabilities"):
        binary_cross_entropy(np.array([0.5, np.nan]), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="y has shape"):
        binary_cross_entropy(np.array([0.5, 0.2]), np.array([1.0]))
    with pytest.raises(ValueError, match="weight has shape"):
        binary_cross_entropy(np.array([0.5, 0.2]), np.array([1.0, 0.0]), np.ones(3))
    with pytest.raises(ValueError, match="pos_weight"):
        binary_cross_entropy_with_logits(np.zeros((2, 3)), np.zeros((2, 3)), pos_weight=np.ones(4))


# ------------------------------------------------------------------------------------------- nll_loss
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_matches_torch(rng, reduction, xp):
    lp = np.log(rng.dirichlet(np.ones(5), size=6))
    t = rng.integers(0, 5, 6)
    t[2] = -100
    w = rng.random(5) + 0.1
    ref = F.nll_loss(torch.tensor(lp), torch.tensor(t), weight=torch.tensor(w), reduction=reduction).numpy()
    got = nll_loss(xp.asarray(lp), xp.asarray(t), xp.asarray(w), reduction=reduction)
    assert_close(got, ref, rtol=1e-12, atol=1e-14, xp=xp)
    x = rng.standard_normal((4, 3, 2))
    tt = rng.integers(0, 3, (4, 2))
    assert_close(nll_loss(log_softmax(x, axis=1), tt),
                 F.cross_entropy(torch.tensor(x), torch.tensor(tt)).numpy(), rtol=1e-12)
    check_vjp(ops.get("nll_loss"), lp, t, w, opts={"reduction": reduction})
    with pytest.raises(ValueError, match="target has class index 7"):
        nll_loss(lp, np.array([0, 1, 7, 2, 3, 4]))
