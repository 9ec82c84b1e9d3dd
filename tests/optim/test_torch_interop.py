"""torch.optim interop of optnorm.torch.optim as torch users rely on it (issue #17): real signatures,
switching from/to a torch.optim optimizer through its state dict, bfloat16 state, schedules in param groups
with torch.load(weights_only=True), eval()/train() weight swaps, the compile-ahead warm-up."""
from __future__ import annotations

import copy
import inspect
import io

import numpy as np
import pytest

import optnorm.optim as oo

torch = pytest.importorskip("torch")
ont = pytest.importorskip("optnorm.torch")


def _model(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3)).to(dtype)


def _data(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(32, 6, generator=g).to(dtype)
    return X, torch.sin(X[:, :3])


def _train(model, opt, n):
    X, Y = _data(next(model.parameters()).dtype)
    for _ in range(n):
        opt.zero_grad()
        ((model(X) - Y) ** 2).mean().backward()
        opt.step()


def test_real_init_signatures():
    sig = inspect.signature(ont.optim.AdamW)
    assert list(sig.parameters)[:5] == ["params", "lr", "betas", "eps", "weight_decay"]
    assert sig.parameters["lr"].default == 1e-3 and sig.parameters["state_dtype"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(ont.optim.RMSprop).parameters)[1:4] == ["lr", "alpha", "eps"]
    p = [torch.nn.Parameter(torch.ones(3))]
    opt = ont.optim.SGD(p, 0.1, 0.9)                       # positional, as torch.optim.SGD(params, lr, momentum)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["momentum"] == 0.9
    with pytest.raises(TypeError):
        ont.optim.Adam(p, momentum=0.9)
    with pytest.raises(TypeError, match="state_dtype"):
        ont.optim.Adam(p, state_dtype="bf16")


PAIRS = [("Adam", dict(lr=1e-2, weight_decay=0.01)), ("Adam", dict(lr=1e-2, amsgrad=True)), ("AdamW", dict(lr=1e-2)),
         ("SGD", dict(lr=0.05, momentum=0.9)), ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
         ("RMSprop", dict(lr=1e-2, momentum=0.5)), ("Adagrad", dict(lr=0.1)), ("NAdam", dict(lr=1e-2)),
         ("RAdam", dict(lr=1e-2)), ("Adamax", dict(lr=1e-2)), ("Adadelta", dict(lr=1.0))]


@pytest.mark.parametrize("name,kw", PAIRS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(PAIRS)])
@pytest.mark.parametrize("direction", ["torch->optnorm", "optnorm->torch"])
def test_switch_mid_training_through_the_state_dict(name, kw, direction):
    """Train 5 steps with one implementation, save, load into the other, train 5 more: the same weights as
    10 steps of torch.optim alone (the state maps one to one)."""
    first, second = ((getattr(torch.optim, name), getattr(ont.optim, name)) if direction == "torch->optnorm"
                     else (getattr(ont.optim, name), getattr(torch.optim, name)))
    ref = _model()
    opt = getattr(torch.optim, name)(ref.parameters(), **kw)
    _train(ref, opt, 10)
    m = _model()
    o1 = first(m.parameters(), **kw)
    _train(m, o1, 5)
    buf = io.BytesIO()
    torch.save(o1.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf)                                         # weights_only=True
    o2 = second(m.parameters(), **kw)
    o2.load_state_dict(sd)
    _train(m, o2, 5)
    for a, b in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bfloat16_state_option():
    m = _model(torch.bfloat16)
    opt = ont.optim.AdamW(m.parameters(), lr=1e-2, state_dtype="param")
    _train(m, opt, 3)
    st = opt.state[m[0].weight]
    assert st["exp_avg"].dtype == torch.bfloat16 and st["exp_avg_sq"].dtype == torch.bfloat16
    ref = _model(torch.bfloat16)
    ro = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    _train(ref, ro, 3)
    assert ro.state[ref[0].weight]["exp_avg"].dtype == torch.bfloat16          # what torch keeps
    for a, b in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)
    m32 = _model(torch.bfloat16)
    o32 = ont.optim.AdamW(m32.parameters(), lr=1e-2)                           # default: float32 state
    _train(m32, o32, 1)
    assert o32.state[m32[0].weight]["exp_avg"].dtype == torch.float32


def test_schedule_as_lr_survives_weights_only_load():
    m = _model()
    sched = oo.warmup_cosine(0.0, 1e-2, 3, 30)
    opt = ont.optim.AdamW(m.parameters(), lr=sched)
    _train(m, opt, 4)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    saved = copy.deepcopy(m.state_dict())
    _train(m, opt, 3)
    m2 = _model()
    m2.load_state_dict(saved)
    opt2 = ont.optim.AdamW(m2.parameters(), lr=1e-3)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == sched
    _train(m2, opt2, 3)
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name,kw", [("AdamWScheduleFree", dict(lr=1e-2)), ("SGDScheduleFree", dict(lr=0.1)),
                                     ("EMA", dict(inner=oo.adamw(lr=1e-2), decay=0.9)),
                                     ("Lookahead", dict(inner=oo.adamw(lr=1e-2)))])
def test_eval_train_swap(name, kw):
    m = _model()
    opt = getattr(ont.optim, name)(m.parameters(), **kw)
    _train(m, opt, 7)
    y = [p.detach().clone() for p in m.parameters()]
    opt.eval()
    rule = opt._rule(0, opt.param_groups[0])
    for p, yp in zip(m.parameters(), y):
        leaf = opt._leaf(rule, p, p.detach(), "p")
        torch.testing.assert_close(p.detach(), rule.eval_leaf(yp, leaf))
    with pytest.raises(RuntimeError, match="train"):
        opt.step()
    opt.train()
    for p, yp in zip(m.parameters(), y):
        assert torch.equal(p.detach(), yp)
    _train(m, opt, 1)


def test_first_step_after_warm_up_is_fast():
    """The fused kernel is loaded in a background thread at construction; the first step only waits for it."""
    import time

    p = [torch.nn.Parameter(torch.randn(1000)) for _ in range(3)]
    for q in p:
        q.grad = torch.randn(1000)
    opt = ont.optim.AdamW(p, lr=1e-3)
    opt._warm is None or opt._warm.join()
    t0 = time.perf_counter()
    opt.step()
    assert time.perf_counter() - t0 < 0.25


def test_make_optimizer_of_a_chain_keeps_the_fused_kernel(monkeypatch):
    """A user factory returning chain(clip_by_global_norm, adamw) wraps like a declared rule; its step reaches
    the fused kernel on NumPy views and follows torch's clip_grad_norm_ + AdamW."""
    from optnorm.optim import _kernels

    calls = []
    orig = _kernels._numba_step
    monkeypatch.setattr(_kernels.Fused, "__call__", lambda self, rule, job: calls.append(type(job.ps[0])) or
                        self.dispatcher(job.ps[0], rule, job, self.config))
    ClipAdamW = ont.optim.make_optimizer(
        lambda lr=1e-2: oo.chain(oo.clip_by_global_norm(1.0, convention="torch"), oo.adamw(lr=lr)), "ClipAdamW")
    m, ref = _model(), _model()
    opt, ro = ClipAdamW(m.parameters(), lr=1e-2), torch.optim.AdamW(ref.parameters(), lr=1e-2)
    X, Y = _data()
    for _ in range(5):
        for mod, o in ((m, opt), (ref, ro)):
            o.zero_grad()
            (10 * ((mod(X) - Y) ** 2).mean()).backward()
            if o is ro:
                torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
            o.step()
    for a, b in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert calls and all(c is np.ndarray for c in calls) and orig is _kernels._numba_step
