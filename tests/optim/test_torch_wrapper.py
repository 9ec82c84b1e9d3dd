"""The torch.optim wrapper (optnorm.torch.optim, optnorm/optim/_torch.py), generated from the rule declarations."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import optnorm.optim as oo
from optnorm.testing import assert_close

torch = pytest.importorskip("torch", reason="torch is not installed")

# AdaHessian's torch path needs loss.backward(create_graph=True), which makes torch warn about a reference cycle
pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning")


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def _data():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(64, 8, generator=g)
    W = torch.randn(8, 4, generator=g)
    return X, torch.tanh(X @ W)


def _fb():
    return oo.adamw(lr=1e-2, weight_decay=0.0)


TORCH_CASES = {
    "SGD": dict(lr=0.1, momentum=0.9),
    "SGDP": dict(lr=0.1, momentum=0.9),
    "Adam": dict(lr=1e-2),
    "AdamW": dict(lr=1e-2),
    "AdamP": dict(lr=1e-2),
    "FAdam": dict(lr=1e-2, weight_decay=0.0),
    "Lion": dict(lr=3e-3),
    "Muon": dict(lr=0.05, weight_decay=0.0, fallback=_fb()),
    "NorMuon": dict(lr=0.05, fallback=_fb()),
    "AuON": dict(lr=0.5, fallback=_fb()),
    "HybridAuON": dict(lr=0.05, fallback=_fb()),
    "Conda": dict(lr=1e-2, update_proj_gap=5, fallback=_fb()),
    "SWAN": dict(lr=1e-2, fallback=_fb()),
    "SinkGD": dict(lr=1e-2, fallback=_fb()),
    "AdaHessian": dict(lr=0.1),
    "DCTLowRank": dict(inner=oo.adam(lr=1e-2), rank=3),
    "NaP": dict(inner=oo.adam(lr=1e-2)),
}


def _train(model, opt, X, Y, n, create_graph=False):
    for _ in range(n):
        opt.zero_grad()
        loss = ((model(X) - Y) ** 2).mean()
        loss.backward(create_graph=create_graph)
        opt.step()
    with torch.no_grad():
        return float(((model(X) - Y) ** 2).mean())


CORE_TORCH = {"AdamW", "SGD", "Lion", "Muon", "AdaHessian", "DCTLowRank", "SWAN"}


@pytest.mark.parametrize("name", [n if n in CORE_TORCH else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(TORCH_CASES)])
def test_torch_model_trains(name):
    import optnorm.torch as ont

    cls = getattr(ont.optim, name)
    model = _model()
    X, Y = _data()
    opt = cls(model.parameters(), **TORCH_CASES[name])
    assert isinstance(opt, torch.optim.Optimizer)
    with torch.no_grad():
        first = float(((model(X) - Y) ** 2).mean())
    last = _train(model, opt, X, Y, 40, create_graph=name == "AdaHessian")
    assert last < 0.8 * first, f"{name}: {first:.4f} -> {last:.4f}"


@pytest.mark.parametrize("name", ["AdamW", "SGD", "Lion", "Muon", "Conda", "AdaHessian", "DCTLowRank", "FAdam"])
def test_torch_state_dict_resumes_exact_trajectory(name):
    import optnorm.torch as ont

    cls = getattr(ont.optim, name)
    cg = name == "AdaHessian"
    X, Y = _data()
    model = _model()
    opt = cls(model.parameters(), **TORCH_CASES[name])
    _train(model, opt, X, Y, 5, cg)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    _train(model, opt, X, Y, 5, cg)
    model2 = _model()
    model2.load_state_dict(saved_model)
    opt2 = cls(model2.parameters(), **TORCH_CASES[name])
    opt2.load_state_dict(saved_opt)
    _train(model2, opt2, X, Y, 5, cg)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b), name
    assert int(opt2.state[next(model2.parameters())]["step"]) == 10


def test_torch_param_groups_and_matches_plain_rule():
    """Two groups with their own lr; the wrapper's trajectory equals the functional rule's on NumPy."""
    import optnorm.torch as ont

    rng = np.random.default_rng(0)
    p0 = [rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)]
    ps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    opt = ont.optim.AdamW([{"params": [ps[0]]}, {"params": [ps[1]], "lr": 0.1}], lr=0.01, weight_decay=0.05)
    r0, r1 = oo.adamw(lr=0.01, weight_decay=0.05), oo.adamw(lr=0.1, weight_decay=0.05)
    q = [p.copy() for p in p0]
    s0, s1 = r0.init(q[0]), r1.init(q[1])
    for k in range(10):
        gs = [rng.standard_normal(p.shape).astype(np.float32) for p in p0]
        for p, g in zip(ps, gs):
            p.grad = torch.from_numpy(g)
        opt.step()
        q[0], s0 = r0.step(q[0], gs[0], s0)
        q[1], s1 = r1.step(q[1], gs[1], s1)
    for a, b in zip(ps, q):
        assert_close(a.detach(), b, rtol=1e-6, atol=1e-7)


def test_torch_wrapper_errors():
    import optnorm.torch as ont

    p = [torch.nn.Parameter(torch.ones(3))]
    with pytest.raises(ValueError, match="lr"):
        ont.optim.AdamW(p, lr=-1.0)
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        ont.optim.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="unexpected keyword"):
        ont.optim.Adam(p, momentum=0.9)
    opt = ont.optim.Muon(p, lr=0.02)
    p[0].grad = torch.ones(3)
    with pytest.raises(ValueError, match="2-D"):
        opt.step()
    opt = ont.optim.Adam(p, lr=0.1)
    p[0].grad = torch.tensor([1.0, float("nan"), 0.0])
    with pytest.raises(ValueError, match="NaN"):
        opt.step()
    assert torch.equal(p[0].detach(), torch.ones(3))
    assert not opt.state[p[0]] or int(opt.state[p[0]]["step"]) == 0
    skip = ont.optim.AdamW(p, lr=0.1, nan_policy="skip")
    skip.step()
    assert torch.equal(p[0].detach(), torch.ones(3))
    p[0].grad = torch.ones(3)
    skip.step()
    assert int(skip.state[p[0]]["step"]) == 1 and bool((p[0] < 1).all())


# ----------------------------------------------------------------------------------------------- optax


def test_torch_save_load_with_rule_hyperparameters():
    """param_groups hold Rule objects (fallback=, inner=): torch.save / torch.load must round-trip them."""
    import io
    import pickle

    import optnorm.torch as ont

    model = _model()
    X, Y = _data()
    opt = ont.optim.Muon(model.parameters(), lr=0.02, fallback=oo.adamw(lr=1e-3))
    _train(model, opt, X, Y, 2)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=False)
    opt2 = ont.optim.Muon(model.parameters(), lr=0.02, fallback=oo.adamw(lr=1e-3))
    opt2.load_state_dict(sd)
    assert int(opt2.state[model[0].weight]["step"]) == 2
    for f in (oo.sgd, oo.adam, oo.muon, oo.adamw):
        r = pickle.loads(pickle.dumps(f()))
        assert repr(r) == repr(f())


# ----------------------------------------------------------------------------------------------- hardening (#13)
@pytest.mark.parametrize("name,kw", [("Adam", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)), ("AdamW", dict(lr=1e-2)),
                                     ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True))])
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_parameters_match_torch_optim(name, kw, dtype):
    """Complex parameters used to lose their imaginary part; elementwise rules now treat them as torch.optim does
    (real and imaginary parts as separate entries), on the fused and the generic path."""
    import optnorm.torch as ont

    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(4, 3, dtype=dt, generator=g)
    grads = [torch.randn(4, 3, dtype=dt, generator=g) for _ in range(6)]
    ps = {}
    for lib, cls in (("torch", getattr(torch.optim, name)), ("optnorm", getattr(ont.optim, name))):
        p = torch.nn.Parameter(p0.clone())
        opt = cls([p], **kw)
        for gr in grads:
            p.grad = gr.clone()
            opt.step()
        ps[lib] = p.detach()
    assert ps["optnorm"].dtype == dt
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == "complex64" else dict(rtol=1e-12, atol=1e-14)
    assert torch.allclose(ps["optnorm"], ps["torch"], **tol)


def test_complex_parameters_are_refused_by_matrix_rules():
    import optnorm.torch as ont

    p = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.complex64))
    opt = ont.optim.Muon([p], lr=0.02)
    p.grad = torch.ones_like(p)
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[0\] is complex"):
        opt.step()


def test_state_dict_with_a_rule_loads_with_weights_only():
    """torch.load's default weights_only=True used to fail on a param group holding fallback=adamw(...)."""
    import io

    import optnorm.torch as ont

    X, Y = _data()
    model = _model()
    opt = ont.optim.Muon(model.parameters(), lr=0.02, fallback=oo.adamw(lr=1e-3, betas=(0.8, 0.9)))
    _train(model, opt, X, Y, 2)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf)                                      # weights_only=True (torch's default)
    saved = copy.deepcopy(model.state_dict())
    _train(model, opt, X, Y, 3)
    model2 = _model()
    model2.load_state_dict(saved)
    opt2 = ont.optim.Muon(model2.parameters(), lr=0.02)       # the fallback comes back from the state dict
    opt2.load_state_dict(sd)
    fb = opt2.param_groups[0]["fallback"]
    assert isinstance(fb, oo.Rule) and fb.hyper["betas"] == (0.8, 0.9) and fb.hyper["lr"] == 1e-3
    _train(model2, opt2, X, Y, 3)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_rule_cache_stays_bounded_under_a_per_step_scheduler():
    """One cached rule per param group: OneCycleLR (lr and betas change every step) used to grow it by one per step."""
    import optnorm.torch as ont

    X, Y = _data()
    model = _model()
    opt = ont.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=300)
    for _ in range(300):
        opt.zero_grad()
        ((model(X) - Y) ** 2).mean().backward()
        opt.step()
        sched.step()
    assert len(opt._rules) == 1


def test_steps_run_through_the_rules_driver(monkeypatch):
    """The wrapper's step is the rule's in-place driver (Rule.apply_), not a copy of it."""
    import optnorm.torch as ont
    from optnorm.optim.base import Rule

    seen = []
    orig = Rule.apply_
    monkeypatch.setattr(Rule, "apply_", lambda self, *a, **k: seen.append(self.name) or orig(self, *a, **k))
    p = torch.nn.Parameter(torch.ones(4, 3))
    opt = ont.optim.Muon([p], lr=0.02)
    p.grad = torch.ones(4, 3)
    opt.step()
    assert seen == ["muon"]


def test_generated_classes_are_the_declared_rules():
    import optnorm.torch as ont
    from optnorm.optim.base import rule_factories

    names = {f.body.__optnorm_rule__: f.short_name for f in rule_factories()}
    assert set(names) <= set(ont.optim.__all__) and len(names) == len(rule_factories()) >= 30
    for cls, fn in names.items():
        assert issubclass(getattr(ont.optim, cls), torch.optim.Optimizer) and fn in getattr(ont.optim, cls).__doc__
