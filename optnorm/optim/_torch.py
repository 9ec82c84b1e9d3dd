"""torch.optim.Optimizer classes generated from optnorm's rules (``optnorm.torch.optim``).

>>> import torch, optnorm.torch as ont
>>> model = torch.nn.Linear(4, 2)
>>> opt = ont.optim.AdamW(model.parameters(), lr=1e-3)
>>> model(torch.randn(8, 4)).pow(2).mean().backward(); opt.step()

Every class is made by :func:`make_optimizer` from a rule factory of
:mod:`optnorm.optim`; nothing is written per optimizer.  Constructor keywords are
the factory's (``lr``, ``betas``, ``weight_decay``, ...) and become the param
groups' hyperparameters.  Per parameter, ``state[p]`` holds ``"step"`` and the
rule's leaf-state tensors (nested fields as ``"inner.exp_avg"``), so
``state_dict()`` / ``load_state_dict()`` round-trip and resume the trajectory.
CPU float32/float64 contiguous parameters take the rule's fused Numba kernel on
zero-copy NumPy views (Adam/AdamW/SGD/Lion); everything else runs the rule's
generic leaf update on the tensors.  AdaHessian builds ``hvp`` from the
gradients, so call ``loss.backward(create_graph=True)`` before ``step()``.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch

from .. import optim as _optim
from .._lib import compat
from .base import Ctx, Rule

__all__ = ["RuleOptimizer", "make_optimizer", "SGD", "SGDP", "Adam", "AdamW", "AdamP", "FAdam", "Lion", "Muon",
           "NorMuon", "AuON", "HybridAuON", "Conda", "SWAN", "SinkGD", "AdaHessian", "DCTLowRank", "NaP"]

_xp = None


def _ns():
    global _xp
    if _xp is None:
        import array_api_compat.torch as xpt

        _xp = xpt
    return _xp


def _factory_fn(f):
    return getattr(f, "__wrapped__", f)


def _flatten_state(s, prefix="") -> dict:
    out = {}
    if s is None:
        return out
    if isinstance(s, tuple) and hasattr(s, "_fields"):
        for k, v in zip(s._fields, s):
            out.update(_flatten_state(v, f"{prefix}{k}."))
        return out
    out[prefix[:-1]] = s
    return out


def _unflatten_state(template, d: dict, prefix=""):
    if template is None:
        return None
    if isinstance(template, tuple) and hasattr(template, "_fields"):
        return type(template)(*(_unflatten_state(v, d, f"{prefix}{k}.") for k, v in zip(template._fields, template)))
    return d[prefix[:-1]]


class RuleOptimizer(torch.optim.Optimizer):
    """Base of the generated optimizers: drives an optnorm rule's ``init_leaf``/``update_leaf`` per param group."""

    _factory: Any = None

    def __init__(self, params, **hyper):
        fn = _factory_fn(self._factory)
        sig = inspect.signature(fn)
        names = [n for n, p in sig.parameters.items()]
        unknown = sorted(set(hyper) - set(names))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {unknown}; accepted: {names}")
        defaults = {n: p.default for n, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}
        defaults.update(hyper)
        missing = [n for n in names if n not in defaults]
        if missing:
            raise TypeError(f"{type(self).__name__} needs {missing}")
        self._hyper_names = names
        self._rules: dict = {}
        self._templates: dict = {}
        fn(**defaults)  # validates the hyperparameters (errors name the argument)
        super().__init__(params, defaults)

    def _rule(self, group) -> Rule:
        kw = {n: group[n] for n in self._hyper_names}
        key = repr(sorted(kw.items(), key=lambda kv: kv[0]))
        r = self._rules.get(key)
        if r is None:
            r = self._rules[key] = _factory_fn(self._factory)(**kw)
        return r

    def _leaf(self, rule, p, name):
        st = self.state[p]
        tmpl = self._templates.get(id(p))
        if not st:
            leaf = rule.init_leaf(p.detach(), name=name, xp=_ns())
            st["step"] = torch.zeros((), dtype=torch.float32)
            st.update(_flatten_state(leaf))
            self._templates[id(p)] = leaf
            return leaf
        if tmpl is None:
            tmpl = self._templates[id(p)] = rule.init_leaf(p.detach(), name=name, xp=_ns())
        return _unflatten_state(tmpl, st)

    def _store(self, p, leaf):
        self.state[p].update(_flatten_state(leaf))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        xp = _ns()
        plan = []
        single = len(self.param_groups) == 1
        for gi, group in enumerate(self.param_groups):
            rule = self._rule(group)
            ps = [p for p in group["params"] if p.grad is not None]
            if not ps:
                continue
            names = [f"param_groups[{gi}]['params'][{i}]" for i, p in enumerate(group["params"]) if p.grad is not None]
            gs = [p.grad for p in ps]
            for g in gs:
                if g.is_sparse:
                    raise TypeError(f"{type(self).__name__} does not support sparse gradients")
            gnames = [n.replace("params", "grads") for n in names]
            # one group on the fused path: the kernel checks finiteness itself; otherwise check every group first
            checked = not (single and self._fusable(rule, ps, gs))
            if checked and rule._finite([g.detach() for g in gs], gnames, xp) is False:
                return loss              # nan_policy="skip": nothing changes
            plan.append((rule, ps, gs, names, gnames, checked))
        for rule, ps, gs, names, gnames, checked in plan:
            leaves = [self._leaf(rule, p, n) for p, n in zip(ps, names)]
            steps = [int(self.state[p]["step"].item()) + 1 for p in ps]
            done = self._fused(rule, ps, gs, leaves, steps, not checked)
            if done is not True and not checked:
                if rule._finite([g.detach() for g in gs], gnames, xp) is False:
                    return loss          # raises for nan_policy="raise"; nothing was written
            if done is False:
                extras = None
                if rule.needs_hvp:
                    extras = rule.prepare([p.detach() for p in ps], [g.detach() for g in gs], leaves, t=steps[0],
                                          xp=xp, names=names, hvp=self._hvp(ps, gs), count=steps[0] - 1,
                                          treedef=("list", len(ps), tuple(("leaf",) for _ in ps)))
                for i, (p, g, leaf, n, t) in enumerate(zip(ps, gs, leaves, names, steps)):
                    pn, sn = rule.update_leaf(p.detach(), g.detach(), leaf,
                                              Ctx(xp, t, n, None if extras is None else extras[i]))
                    p.copy_(pn)
                    self._store(p, sn)
            for p in ps:
                self.state[p]["step"] += 1
        return loss

    @staticmethod
    def _fusable(rule, ps, gs) -> bool:
        if type(rule).fused_step_ is Rule.fused_step_:
            return False
        return all(a.device.type == "cpu" and a.dtype in (torch.float32, torch.float64) and a.is_contiguous()
                   and not a.is_conj() and a.dtype == ps[0].dtype for a in [*ps, *gs])

    def _fused(self, rule, ps, gs, leaves, steps, check):
        if len(set(steps)) != 1 or not self._fusable(rule, ps, gs):
            return False
        arrays = [v for leaf in leaves for v in _flatten_state(leaf).values()]
        if not all(a.is_contiguous() and a.dtype == ps[0].dtype for a in arrays):
            return False

        def view(leaf):
            return type(leaf)(*(None if v is None else v.detach().numpy() for v in leaf))

        return rule.fused_step_([p.detach().numpy() for p in ps], [g.detach().numpy() for g in gs],
                                [view(leaf) for leaf in leaves], steps[0], check=check and rule.nan_policy != "ignore")

    @staticmethod
    def _hvp(ps, gs):
        if not all(g.requires_grad for g in gs):
            raise RuntimeError("AdaHessian needs Hessian-vector products: call loss.backward(create_graph=True) "
                               "before step()")

        def hvp(vs):
            with torch.enable_grad():
                return list(torch.autograd.grad(gs, ps, grad_outputs=list(vs), retain_graph=True))

        return hvp


def _summary(doc):
    """The factory's docstring without its Examples section (those run on NumPy, not here)."""
    doc = doc or ""
    i = doc.find("Examples\n")
    return doc[:i].rstrip() + "\n" if i >= 0 else doc


def make_optimizer(factory, name: str | None = None) -> type:
    """A ``torch.optim.Optimizer`` subclass driving the optnorm rule built by ``factory(**hyper)``."""
    fn = _factory_fn(factory)
    name = name or fn.__name__
    doc = (f"torch.optim.Optimizer running :func:`optnorm.optim.{fn.__name__}` (same keywords; "
           f"``{name}(params, **hyper)``).\n\n" + _summary(fn.__doc__))
    return type(name, (RuleOptimizer,), {"_factory": staticmethod(fn), "__doc__": doc, "__module__": __name__})


SGD = make_optimizer(_optim.sgd, "SGD")
SGDP = make_optimizer(_optim.sgdp, "SGDP")
Adam = make_optimizer(_optim.adam, "Adam")
AdamW = make_optimizer(_optim.adamw, "AdamW")
AdamP = make_optimizer(_optim.adamp, "AdamP")
FAdam = make_optimizer(_optim.fadam, "FAdam")
Lion = make_optimizer(_optim.lion, "Lion")
Muon = make_optimizer(_optim.muon, "Muon")
NorMuon = make_optimizer(_optim.normuon, "NorMuon")
AuON = make_optimizer(_optim.auon, "AuON")
HybridAuON = make_optimizer(_optim.hybrid_auon, "HybridAuON")
Conda = make_optimizer(_optim.conda, "Conda")
SWAN = make_optimizer(_optim.swan, "SWAN")
SinkGD = make_optimizer(_optim.sinkgd, "SinkGD")
AdaHessian = make_optimizer(_optim.adahessian, "AdaHessian")
DCTLowRank = make_optimizer(_optim.dct_lowrank, "DCTLowRank")
NaP = make_optimizer(_optim.nap, "NaP")
