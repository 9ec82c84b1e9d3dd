"""Rules that torch.optim / optax have: 100 steps on the same problem give the same parameters (float32 tolerance).

Every backend of the ``xp`` fixture runs optnorm's rule; torch.optim (or optax.lion)
runs on torch/JAX.  The problem is elementwise (see ``_problems.py``) so the
gradients are bitwise identical on every backend.
"""
from __future__ import annotations

import numpy as np
import pytest

import optnorm.optim as oo
from optnorm.testing import assert_close

from ._problems import Quadratic, run_optax, run_torch

torch = pytest.importorskip("torch", reason="the references are torch.optim's optimizers")

SHAPES = [(7, 5), (11,), (3, 2, 4)]
N_STEPS = 100


def _run_optnorm(xp, rule, prob, n=N_STEPS):
    ps = [xp.asarray(p) for p in prob.p0]
    st = rule.init(ps)
    for k in range(n):
        gs = prob.grads(ps, k, xp.asarray)
        ps, st = rule.step(ps, gs, st)
    return ps


CASES = [
    ("sgd", dict(lr=0.05)),
    ("sgd", dict(lr=0.05, momentum=0.9)),
    ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, maximize=False)),
    ("sgd", dict(lr=0.01, momentum=0.5, maximize=True)),
    ("adam", dict(lr=1e-2)),
    ("adam", dict(lr=1e-2, weight_decay=0.05, amsgrad=True)),
    ("adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, maximize=True)),
    ("adamw", dict(lr=1e-2)),
    ("adamw", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
]
TORCH = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_matches_torch_optim(xp, name, kw):
    prob = Quadratic(SHAPES, seed=1)
    ref = run_torch(TORCH[name], kw, prob, N_STEPS)
    got = _run_optnorm(xp, getattr(oo, name)(**kw), prob)
    for g, r in zip(got, ref):
        assert str(g.dtype).rsplit(".", 1)[-1] == "float32"
        assert_close(g, r.numpy(), rtol=2e-5, atol=2e-6, xp=xp)


@pytest.mark.parametrize("name,kw", CASES[:3] + CASES[5:7] + CASES[8:], ids=lambda v: str(v))
def test_fused_step_matches_torch(path, name, kw):
    """``step_`` (Numba kernel on the numba path, pure update copied back on the generic one) against torch."""
    prob = Quadratic(SHAPES, seed=2)
    ref = run_torch(TORCH[name], kw, prob, N_STEPS)
    rule = getattr(oo, name)(**kw)
    ps = [p.copy() for p in prob.p0]
    st = rule.init(ps)
    for k in range(N_STEPS):
        rule.step_(ps, prob.grads(ps, k, np.asarray), st)
    assert int(st.count) == N_STEPS
    for g, r in zip(ps, ref):
        assert_close(g, r.numpy(), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("kw", [dict(lr=1e-2), dict(lr=3e-3, betas=(0.8, 0.95), weight_decay=0.1)])
def test_lion_matches_optax(xp, kw):
    optax = pytest.importorskip("optax")

    prob = Quadratic(SHAPES, seed=3)
    tx = optax.lion(kw["lr"], b1=kw.get("betas", (0.9, 0.99))[0], b2=kw.get("betas", (0.9, 0.99))[1],
                    weight_decay=kw.get("weight_decay", 0.0))
    ps, _ = run_optax(tx, prob, N_STEPS, jit=False)
    got = _run_optnorm(xp, oo.lion(**kw), prob)
    for g, r in zip(got, ps):
        assert_close(g, np.asarray(r), rtol=2e-5, atol=2e-6, xp=xp)


# ----------------------------------------------------------------------------------------------- Muon
def _ns_fp32(grad, ns_coefficients, ns_steps, eps):
    """torch.optim.Muon's Newton-Schulz without its bf16 cast (so the comparison is float32 against float32)."""
    a, b, c = ns_coefficients
    X = grad.float()
    if grad.size(0) > grad.size(1):
        X = X.T
    X = X / X.norm().clamp(min=eps)
    for _ in range(ns_steps):
        A = X @ X.T
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if grad.size(0) > grad.size(1):
        X = X.T
    return X


MUON_SHAPES = [(16, 8), (6, 12)]


@pytest.mark.parametrize("kw", [dict(lr=0.02), dict(lr=0.02, weight_decay=0.0, nesterov=False),
                                dict(lr=0.01, adjust_lr_fn="match_rms_adamw")])
def test_muon_matches_torch_muon_fp32(xp, kw, monkeypatch):
    import torch.optim._muon as tm

    monkeypatch.setattr(tm, "_zeropower_via_newtonschulz", _ns_fp32)
    prob = Quadratic(MUON_SHAPES, seed=5)
    ref = run_torch(torch.optim.Muon, kw, prob, N_STEPS)
    got = _run_optnorm(xp, oo.muon(ns_dtype="float32", **kw), prob)
    for g, r in zip(got, ref):
        assert_close(g, r.numpy(), rtol=1e-4, atol=2e-5, xp=xp)


def test_muon_bf16_close_to_torch_muon():
    """Default path on torch (bf16 Newton-Schulz, as torch.optim.Muon): the same trajectory."""
    prob = Quadratic(MUON_SHAPES, seed=6)
    ref = run_torch(torch.optim.Muon, dict(lr=0.02), prob, 30)
    import array_api_compat.torch as xpt

    got = _run_optnorm(xpt, oo.muon(lr=0.02), prob, 30)
    for g, r in zip(got, ref):
        # same ops as torch (lerp, bf16 addmm Newton-Schulz): agree to float32 rounding (1.8e-7 after 100 steps)
        assert_close(g, r.numpy(), rtol=1e-5, atol=1e-6)
