"""torch.optim.Optimizer classes generated from optnorm's rules (``optnorm.torch.optim``).

>>> import torch, optnorm.torch as ont
>>> model = torch.nn.Linear(4, 2)
>>> opt = ont.optim.AdamW(model.parameters(), lr=1e-3)
>>> model(torch.randn(8, 4)).pow(2).mean().backward(); opt.step()

One class per declared rule factory of :mod:`optnorm.optim` (its ``torch_name``), made by
:func:`make_optimizer`; nothing is written per optimizer.  ``__init__`` has the factory's parameters
(``lr``, ``betas``, ``weight_decay``, ..., positional like torch.optim's) and ``state_dtype``; they become the
param groups' hyperparameters.  ``step()`` calls the rules' one in-place step driver
(:meth:`optnorm.optim.Rule.apply_`).  Per parameter, ``state[p]`` holds ``"step"`` and the rule's leaf-state
tensors under torch's names (nested fields as ``"inner.exp_avg"``), so ``state_dict()`` / ``load_state_dict()``
round-trip, resume the trajectory, and load torch.optim's state dicts of the same rule; rules and schedules
held by a param group (``fallback=``, ``inner=``, ``lr=``) are stored as plain dicts, so
``torch.load(..., weights_only=True)`` reads the state dict.  CPU float32/float64 contiguous parameters of
rules with a fused kernel run it on zero-copy NumPy views (the kernel is loaded in a background thread at
construction); everything else runs the rule's leaf update on the tensors.  Complex parameters of the rules
that treat them as real pairs are updated as their real and imaginary parts (``torch.view_as_real``, as
torch.optim does); other rules refuse them.  ``eval()`` / ``train()`` swap in the rule's evaluation weights.
AdaHessian builds ``hvp`` from the gradients, so call ``loss.backward(create_graph=True)`` before ``step()``.
"""
from __future__ import annotations

import inspect
import os as _os
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
    out: dict = {}
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
    """Rules and schedules in a param group as plain dicts (what ``torch.load(weights_only=True)`` accepts)."""
    from .schedules import Schedule

    if isinstance(v, Rule) and getattr(v.factory, "__optnorm_public__", None):
        return {_RULE_KEY: v.factory.__optnorm_public__, "hyper": {k: _encode(x) for k, x in v.hyper.items()}}
    if isinstance(v, Schedule):
        return {_RULE_KEY: f"optim.{v.name}", "hyper": {k: _encode(x) for k, x in v.args.items()}}
    if isinstance(v, (tuple, list)):
        return type(v)(_encode(x) for x in v)
    return v


def _decode(v):
    if isinstance(v, dict) and _RULE_KEY in v:
        return lookup(v[_RULE_KEY]).obj(**{k: _decode(x) for k, x in v["hyper"].items()})
    if isinstance(v, (tuple, list)):
        return type(v)(_decode(x) for x in v)
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
    """Base of the generated optimizers: runs an optnorm rule's in-place step driver per param group.

    Every generated class has an ``__init__`` with the factory's parameters (positional like torch.optim's,
    ``inspect.signature`` and IDEs show them) and a keyword-only ``state_dtype``: None keeps the state in
    the compute dtype (float32 for float16/bfloat16 parameters), ``"param"`` in each parameter's dtype
    (torch.optim's choice: bfloat16 state for bfloat16 parameters), or a torch floating dtype.
    """

    _factory: Any = None

    def _setup(self, params, hyper: dict, state_dtype=None):
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
        if not (state_dtype is None or state_dtype == "param" or
                (isinstance(state_dtype, torch.dtype) and state_dtype.is_floating_point)):
            raise TypeError(f"{type(self).__name__}: state_dtype must be None, 'param' or a torch floating dtype, "
                            f"got {state_dtype!r}")
        self._hyper_names = names
        self._rules: dict = {}           # param-group index -> (hyperparameter key, rule): one entry per group
        self._templates: dict = {}
        self._state_dtype = state_dtype
        self._eval_backup: dict | None = None
        self._warm = None
        rule = self._factory(**defaults)        # validates the hyperparameters (errors name the argument)
        super().__init__(params, defaults)
        self._warm_up(rule)

    def __init__(self, params, **hyper):
        state_dtype = hyper.pop("state_dtype", None)
        self._setup(params, hyper, state_dtype)

    # ---- compile ahead
    def _warm_up(self, rule):
        """Load (or compile) the fused kernel for the parameters' dtypes in a background thread while the user
        runs the first forward and backward passes (Numba's import and cache load take ~0.5-1 s)."""
        if rule.kernel is None or _os.environ.get("OPTNORM_WARMUP", "1") == "0":
            return
        dts = {p.dtype for g in self.param_groups for p in g["params"]
               if p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64)}
        if not dts:
            return
        import threading

        def run():
            import numpy as np

            try:
                for dt in dts:
                    x = [np.zeros(1, dtype=str(dt).rsplit(".", 1)[-1])]
                    st = rule.init(x)
                    rule.step_(x, [np.zeros_like(x[0])], st)
            except Exception:        # a warm-up failure shows again (with its message) on the first step
                pass

        self._warm = threading.Thread(target=run, name="optnorm-warmup", daemon=True)
        self._warm.start()

    # ---- rules and state
    def _rule(self, gi, group) -> Rule:
        kw = {n: group[n] for n in self._hyper_names}
        key = repr(sorted(kw.items(), key=lambda kv: kv[0]))
        cached = self._rules.get(gi)
        if cached is None or cached[0] != key:   # rebuilt when a scheduler changes the group's hyperparameters
            cached = self._rules[gi] = (key, self._factory(**kw))
        return cached[1]

    def _cast_state(self, leaf, p):
        dt = self._state_dtype
        if dt is None:
            return leaf
        dt = p.dtype if dt == "param" else dt
        if p.is_complex():
            dt = p.real.dtype if self._state_dtype == "param" else dt

        def cast(s):
            if s is None:
                return None
            if isinstance(s, tuple):
                return type(s)(*(cast(x) for x in s)) if hasattr(s, "_fields") else tuple(cast(x) for x in s)
            return s.to(dt) if s.is_floating_point() else s

        return cast(leaf)

    def _leaf(self, rule, p, view, name):
        st = self.state[p]
        tmpl = self._templates.get(id(p))
        if not st:
            leaf = self._cast_state(rule.init_leaf(view, name=name, xp=_ns()), p)
            st["step"] = torch.zeros((), dtype=torch.float32)
            st.update(_flatten_state(leaf))
            self._templates[id(p)] = leaf
            return leaf
        if tmpl is None:
            tmpl = self._templates[id(p)] = rule.init_leaf(view, name=name, xp=_ns())
        if "step" not in st:             # a torch.optim.SGD state: no step count; a buffer means steps were taken
            st["step"] = torch.tensor(1.0 if len(st) else 0.0)
        try:
            return _unflatten_state(tmpl, st)
        except KeyError as e:
            raise KeyError(f"{name}: the loaded state has no {e.args[0]!r} (it is not a {type(self).__name__} "
                           f"state, keys {sorted(st)})") from None

    def state_dict(self):
        sd = super().state_dict()
        sd["param_groups"] = [{k: _encode(v) for k, v in g.items()} for g in sd["param_groups"]]
        return sd

    def load_state_dict(self, state_dict):
        """Load a state dict of this optimizer, or of the torch.optim optimizer of the same rule (its state
        keys are the same: ``step``, ``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``, ...), so training can
        switch from ``torch.optim.AdamW`` to ``optnorm.torch.optim.AdamW`` (and back) mid-run.  Hyperparameters
        the saved groups lack take this optimizer's values; torch-only keys (``foreach``, ``fused``, ...) are
        kept but unused."""
        sd = dict(state_dict)
        groups = []
        for i, g in enumerate(state_dict["param_groups"]):
            g = {k: _decode(v) for k, v in g.items()}
            cur = self.param_groups[i] if i < len(self.param_groups) else self.defaults
            for n in self._hyper_names:
                if n not in g and n in cur:
                    g[n] = cur[n]
            groups.append(g)
        sd["param_groups"] = groups
        super().load_state_dict(sd)
        self._templates.clear()

    # ---- evaluation weights (schedule-free average, EMA, Lookahead's slow weights)
    @torch.no_grad()
    def eval(self):
        """Swap the parameters for the rule's evaluation weights (:meth:`optnorm.optim.Rule.eval_params`: the
        schedule-free average ``x``, the EMA, Lookahead's slow weights; the parameters themselves for other
        rules).  ``train()`` puts the training weights back exactly; ``step()`` refuses to run in between."""
        if self._eval_backup is not None:
            return self
        backup = {}
        for gi, group in enumerate(self.param_groups):
            rule = self._rule(gi, group)
            for i, p in enumerate(group["params"]):
                if not self.state[p]:
                    continue
                view = torch.view_as_real(p.detach()) if p.is_complex() else p.detach()
                leaf = self._leaf(rule, p, view, f"param_groups[{gi}]['params'][{i}]")
                e = rule.eval_leaf(view, leaf)
                if e is not view:
                    backup[p] = p.detach().clone()
                    view.copy_(e)
        self._eval_backup = backup
        return self

    @torch.no_grad()
    def train(self, mode: bool = True):
        """Put the training weights back after :meth:`eval` (``train(False)`` is ``eval()``)."""
        if not mode:
            return self.eval()
        if self._eval_backup is not None:
            for p, b in self._eval_backup.items():
                p.copy_(b)
            self._eval_backup = None
        return self

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
        if self._eval_backup is not None:
            raise RuntimeError(f"{type(self).__name__}.step() was called in eval mode: call train() first (eval() "
                               "swapped the parameters for the evaluation weights)")
        if self._warm is not None:
            self._warm.join()
            self._warm = None
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


def _init_with_signature(fn, cls_name):
    """An ``__init__(self, params, <the factory's parameters>, *, state_dtype=None)`` with a real signature."""
    sig = inspect.signature(fn)
    ns: dict = {"__d": {}}
    head, names = ["self", "params"], []
    for p in sig.parameters.values():
        txt = p.name
        if p.default is not inspect.Parameter.empty:
            ns["__d"][p.name] = p.default
            txt += f"=__d[{p.name!r}]"
        elif any(q.default is not inspect.Parameter.empty for q in sig.parameters.values()
                 if list(sig.parameters).index(q.name) < list(sig.parameters).index(p.name)):
            txt = p.name          # a required parameter after defaults: keyword-only below
        head.append(txt)
        names.append(p.name)
    # required parameters come first in the factories (inner=...); the rest have defaults
    src = [f"def __init__({', '.join(head)}, *, state_dtype=None):",
           f"    self._setup(params, {{{', '.join(f'{n!r}: {n}' for n in names)}}}, state_dtype)"]
    exec("\n".join(src), ns)  # noqa: S102 - a signature-preserving constructor, like optnorm._lib.api._wrap
    init = ns["__init__"]
    init.__qualname__ = f"{cls_name}.__init__"
    P = inspect.Parameter
    init.__signature__ = inspect.Signature(
        [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD)]
        + [p.replace(kind=P.POSITIONAL_OR_KEYWORD) for p in sig.parameters.values()]
        + [P("state_dtype", P.KEYWORD_ONLY, default=None)])
    return init


def make_optimizer(factory, name: str | None = None) -> type:
    """A ``torch.optim.Optimizer`` subclass driving the optnorm rule built by ``factory(**hyper)``; its
    ``__init__(params, <factory parameters>, *, state_dtype=None)`` has the factory's signature."""
    entry = lookup(factory)
    fn = entry.obj if entry is not None else factory
    short = entry.short_name if entry is not None else fn.__name__
    name = name or getattr(getattr(entry, "body", None), "__optnorm_rule__", None) or short
    doc = wrapper_doc(fn, f"torch.optim.Optimizer running :func:`optnorm.optim.{short}` (same parameters; "
                          f"``{name}(params, ...)``, plus ``state_dtype``).")
    return type(name, (RuleOptimizer,), {"_factory": staticmethod(fn), "__doc__": doc, "__module__": __name__,
                                         "__init__": _init_with_signature(fn, name)})


_CLASSES = {f.body.__optnorm_rule__: make_optimizer(f.obj) for f in rule_factories()}
globals().update(_CLASSES)
__all__ = ["RuleOptimizer", "make_optimizer", *_CLASSES]
