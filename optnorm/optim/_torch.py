"""torch.optim.Optimizer classes generated from optnorm's rules (``optnorm.torch.optim``).

>>> import torch, optnorm.torch as ont
>>> model = torch.nn.Linear(4, 2)
>>> opt = ont.optim.AdamW(model.parameters(), lr=1e-3)
>>> model(torch.randn(8, 4)).pow(2).mean().backward(); opt.step()

One class per declared rule factory of :mod:`optnorm.optim` (its ``torch_name``), made by
:func:`make_optimizer`; nothing is written per optimizer.  Constructor keywords are the factory's
(``lr``, ``betas``, ``weight_decay``, ...) and become the param groups' hyperparameters.  ``step()``
calls the rules' one in-place step driver (:meth:`optnorm.optim.Rule.apply_`).  Per parameter,
``state[p]`` holds ``"step"`` and the rule's leaf-state tensors (nested fields as ``"inner.exp_avg"``),
so ``state_dict()`` / ``load_state_dict()`` round-trip and resume the trajectory; rules held by a param
group (``fallback=``, ``inner=``) are stored as plain dicts, so ``torch.load(..., weights_only=True)``
reads the state dict.  CPU float32/float64 contiguous parameters of rules with a fused kernel
(Adam/AdamW/SGD/Lion) run it on zero-copy NumPy views; everything else runs the rule's leaf update on
the tensors.  Complex parameters of elementwise rules (SGD, Adam, AdamW, Lion) are updated as their real
and imaginary parts (``torch.view_as_real``, as torch.optim does); other rules refuse them.  AdaHessian
builds ``hvp`` from the gradients, so call ``loss.backward(create_graph=True)`` before ``step()``.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch

from .._lib import compat
from .._lib.api import lookup
from .base import Rule, rule_factories, wrapper_doc

_xp = None
_RULE_KEY = "optnorm_rule"


def _ns():
    global _xp
    if _xp is None:
        import array_api_compat.torch as xpt

        _xp = xpt
    return _xp


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


def _encode(v):
    """Rules in a param group as plain dicts (what ``torch.load(weights_only=True)`` accepts)."""
    if isinstance(v, Rule) and getattr(v.factory, "__optnorm_public__", None):
        return {_RULE_KEY: v.factory.__optnorm_public__, "hyper": {k: _encode(x) for k, x in v.hyper.items()}}
    if isinstance(v, tuple):
        return tuple(_encode(x) for x in v)
    return v


def _decode(v):
    if isinstance(v, dict) and _RULE_KEY in v:
        return lookup(v[_RULE_KEY]).obj(**{k: _decode(x) for k, x in v["hyper"].items()})
    if isinstance(v, tuple):
        return tuple(_decode(x) for x in v)
    return v


def _numpy_views(tensors) -> list | None:
    """Zero-copy NumPy views of CPU float32/float64 contiguous tensors of one dtype (the fused kernels' input),
    or None when one of them does not qualify."""
    dt = tensors[0].dtype
    for a in tensors:
        if a.device.type != "cpu" or a.dtype != dt or dt not in (torch.float32, torch.float64) \
                or not a.is_contiguous() or a.is_conj():
            return None
    return [a.detach().numpy() for a in tensors]


class RuleOptimizer(torch.optim.Optimizer):
    """Base of the generated optimizers: runs an optnorm rule's in-place step driver per param group."""

    _factory: Any = None

    def __init__(self, params, **hyper):
        sig = inspect.signature(self._factory)
        names = list(sig.parameters)
        unknown = sorted(set(hyper) - set(names))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {unknown}; accepted: {names}")
        defaults = {n: p.default for n, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}
        defaults.update(hyper)
        missing = [n for n in names if n not in defaults]
        if missing:
            raise TypeError(f"{type(self).__name__} needs {missing}")
        self._hyper_names = names
        self._rules: dict = {}           # param-group index -> (hyperparameter key, rule): one entry per group
        self._templates: dict = {}
        self._factory(**defaults)        # validates the hyperparameters (errors name the argument)
        super().__init__(params, defaults)

    # ---- rules and state
    def _rule(self, gi, group) -> Rule:
        kw = {n: group[n] for n in self._hyper_names}
        key = repr(sorted(kw.items(), key=lambda kv: kv[0]))
        cached = self._rules.get(gi)
        if cached is None or cached[0] != key:   # rebuilt when a scheduler changes the group's hyperparameters
            cached = self._rules[gi] = (key, self._factory(**kw))
        return cached[1]

    def _leaf(self, rule, p, view, name):
        st = self.state[p]
        tmpl = self._templates.get(id(p))
        if not st:
            leaf = rule.init_leaf(view, name=name, xp=_ns())
            st["step"] = torch.zeros((), dtype=torch.float32)
            st.update(_flatten_state(leaf))
            self._templates[id(p)] = leaf
            return leaf
        if tmpl is None:
            tmpl = self._templates[id(p)] = rule.init_leaf(view, name=name, xp=_ns())
        return _unflatten_state(tmpl, st)

    def state_dict(self):
        sd = super().state_dict()
        sd["param_groups"] = [{k: _encode(v) for k, v in g.items()} for g in sd["param_groups"]]
        return sd

    def load_state_dict(self, state_dict):
        sd = dict(state_dict)
        sd["param_groups"] = [{k: _decode(v) for k, v in g.items()} for g in state_dict["param_groups"]]
        super().load_state_dict(sd)

    # ---- the step
    def _plan(self):
        """Per group and step count: (rule, params, tensor views, gradient views, leaves, names, gradient names, t)."""
        jobs = []
        for gi, group in enumerate(self.param_groups):
            rule = self._rule(gi, group)
            items = [(i, p) for i, p in enumerate(group["params"]) if p.grad is not None]
            by_step: dict = {}
            for i, p in items:
                name = f"param_groups[{gi}]['params'][{i}]"
                if p.grad.is_sparse:
                    raise TypeError(f"{type(self).__name__} does not support sparse gradients ({name})")
                view, gview = p.detach(), p.grad.detach()
                if p.is_complex():
                    if not rule.elementwise:
                        raise TypeError(f"{name} is complex ({p.dtype}): {rule.name} acts on real parameters; "
                                        "the elementwise rules (SGD, Adam, AdamW, Lion) take complex ones as their "
                                        "real and imaginary parts")
                    view, gview = torch.view_as_real(view), torch.view_as_real(gview)
                leaf = self._leaf(rule, p, view, name)
                t = int(self.state[p]["step"].item()) + 1
                by_step.setdefault(t, []).append((p, view, gview, leaf, name, name.replace("params", "grads", 1)))
            for t, rows in by_step.items():
                jobs.append((rule, t, *map(list, zip(*rows))))
        return jobs

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        xp = _ns()
        jobs = self._plan()
        precheck = len(jobs) > 1        # several calls: check every gradient before the first one writes
        if precheck and any(r.check_finite(gs, gn, xp) is False for r, _, _, _, gs, _, _, gn in jobs):
            return loss                 # nan_policy="skip": nothing changes (for "raise" check_finite raised)
        for rule, t, params, ps, gs, leaves, names, gnames in jobs:
            hvp = self._hvp(params) if rule.needs_hvp else None
            if rule.kernel is not None and hvp is None:
                bufs = [*ps, *gs, *(a for leaf in leaves for a in _flatten_state(leaf).values())]
                views = _numpy_views(bufs)
                if views is not None:
                    n = len(ps)
                    it = iter(views[2 * n:])
                    leaves = [type(leaf)(*(None if v is None else next(it) for v in leaf)) for leaf in leaves]
                    ps, gs = views[:n], views[n:2 * n]
            done = rule.apply_(ps, gs, leaves, t=t, names=names, gnames=gnames, xp=compat.array_namespace(ps[0]),
                               hvp=hvp, tree=ps,
                               check=False if precheck else None)
            if not done:
                return loss             # nan_policy="skip" on the only call: nothing was written
            for p in params:
                self.state[p]["step"] += 1
        return loss

    @staticmethod
    def _hvp(params):
        gs = [p.grad for p in params]
        if not all(g.requires_grad for g in gs):
            raise RuntimeError("AdaHessian needs Hessian-vector products: call loss.backward(create_graph=True) "
                               "before step()")

        def hvp(vs):
            with torch.enable_grad():
                return list(torch.autograd.grad(gs, params, grad_outputs=list(vs), retain_graph=True))

        return hvp


def make_optimizer(factory, name: str | None = None) -> type:
    """A ``torch.optim.Optimizer`` subclass driving the optnorm rule built by ``factory(**hyper)``."""
    entry = lookup(factory)
    fn = entry.obj if entry is not None else factory
    short = entry.short_name if entry is not None else fn.__name__
    name = name or getattr(getattr(entry, "body", None), "__optnorm_rule__", None) or short
    doc = wrapper_doc(fn, f"torch.optim.Optimizer running :func:`optnorm.optim.{short}` (same keywords; "
                          f"``{name}(params, **hyper)``).")
    return type(name, (RuleOptimizer,), {"_factory": staticmethod(fn), "__doc__": doc, "__module__": __name__})


_CLASSES = {f.body.__optnorm_rule__: make_optimizer(f.obj) for f in rule_factories()}
globals().update(_CLASSES)
__all__ = ["RuleOptimizer", "make_optimizer", *_CLASSES]
