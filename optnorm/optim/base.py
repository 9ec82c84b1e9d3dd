"""Functional optimizer core: the :class:`Rule` object, its one step driver, and how rules are declared.

Every optimizer in :mod:`optnorm.optim` is a :class:`Rule` with three entry points

>>> import numpy as np, optnorm.optim as oo
>>> opt = oo.adamw(lr=1e-3)
>>> params = {"w": np.ones((3, 2), np.float32), "b": np.zeros(2, np.float32)}
>>> state = opt.init(params)
>>> grads = {"w": np.full((3, 2), 0.1, np.float32), "b": np.ones(2, np.float32)}
>>> params, state = opt.step(params, grads, state)      # pure: new arrays
>>> state = opt.step_(params, grads, state)             # in place (NumPy/CuPy/torch buffers)

A rule is a chain of small leaf transforms (optax's idea; :mod:`optnorm.optim.transforms`): AdamW is
``chain(decay_weights(wd), scale_by_adam(...), scale_by_lr())``.  Each :class:`Transform` is a pair of
pure functions over one parameter: ``init(p, ctx) -> dict`` of leaf-state fields and
``update(leaf, state, ctx) -> (leaf, state)`` on a :class:`Leaf` ``(p, u, g, scale, wd_mult)`` (the
parameter, the update direction, the gradient, the step multiplier, the decay multiplier, in the
compute dtype); after the chain the driver sets ``p <- p - scale * u``.  The fields of all transforms
form the rule's leaf-state NamedTuple (``AdamLeaf(exp_avg, exp_avg_sq, max_exp_avg_sq)``).

Flattening of parameter trees, argument checks, the step counter, learning-rate schedules, the NaN
policy and the fused multi-tensor kernels live here once, in the step driver (:meth:`Rule.step`,
:meth:`Rule.step_`, :meth:`Rule.apply_`), which the torch and optax wrappers call too.

State: ``OptState(count, leaves)`` where ``count`` is a 0-d integer array (steps taken) and ``leaves``
holds one NamedTuple of arrays per parameter.  It is a JAX pytree, so it can be carried through
``jax.jit``.
"""
from __future__ import annotations

import functools
import inspect
import math
import numbers
from typing import Any, Callable, NamedTuple

from .._lib import compat
from .._lib.api import lookup, public, public_class
from .._lib.roles import Array, Call, Choice, Outcome, Perturbation, Role, Scalar, same_library
from ._common import scalar, tree_flatten, tree_unflatten

# a parameter leaf: a float array of any shape (0-d and empty included)
_LEAF = Array(dtype="float", empty=True, lists=False)

NAN_POLICIES = ("raise", "skip", "ignore")


@public_class
class OptState(NamedTuple):
    """State of every optnorm optimizer: ``count`` (a 0-d integer array, the steps taken) and ``leaves``
    (one NamedTuple of state arrays per parameter, e.g. ``AdamLeaf(exp_avg, exp_avg_sq, max_exp_avg_sq)``)."""
    count: Any
    leaves: tuple


# ----------------------------------------------------------------------------------------------- transforms
class Ctx(NamedTuple):
    """What a leaf update needs besides its arrays: namespace, 1-based step ``t`` (int or traced 0-d array),
    the leaf's name, a per-leaf extra from the rule's probe (AdaHessian's Hessian diagonal), the rule's
    learning rate of this step, the per-step cache of evaluated schedules, and the leaf's masks (which
    masked terms apply to it: ``{"weight_decay": False}`` excludes it from decay; None: all apply)."""
    xp: Any
    t: Any
    name: str = ""
    extra: Any = None
    lr: Any = None
    lrs: dict | None = None
    masks: dict | None = None

    def on(self, what: str) -> bool:
        """Whether the masked term ``what`` (``"weight_decay"``, ``"trust_ratio"``) applies to this leaf."""
        return self.masks is None or bool(self.masks.get(what, True))

    def lr_value(self, lr: Any) -> Any:
        """``lr`` at this step: the number itself, or ``schedule(t - 1)`` (evaluated once per step)."""
        if not callable(lr):
            return lr
        cache = self.lrs if self.lrs is not None else {}
        key = id(lr)
        if key not in cache:
            cache[key] = _schedule_value(lr, self.t)
        return cache[key]


def _schedule_value(lr: Callable, t: Any) -> Any:
    v = lr(t - 1)
    if isinstance(v, numbers.Number) or (compat.is_array(v) and compat.is_concrete(v)):
        fv = float(v)
        if not (math.isfinite(fv) and fv >= 0):
            raise ValueError(f"lr schedule returned {fv} at step {t - 1}; lr must be a finite number >= 0")
        if isinstance(v, numbers.Number):
            return fv
    return v


class Leaf(NamedTuple):
    """One parameter on its way through a chain (compute dtype): parameter, update direction (None once
    applied), gradient, step multiplier of ``u``, multiplier of the weight decay, the parameter as it
    entered the chain (before any decay) and the parameter's own dtype."""
    p: Any
    u: Any
    g: Any
    scale: Any = 1.0
    wd_mult: Any = 1.0
    p0: Any = None
    dtype: Any = None


class Transform(NamedTuple):
    """A leaf transform: ``init(p, ctx) -> dict`` of leaf-state fields, ``update(leaf, state, ctx) -> (leaf,
    state)`` (the state is the rule's whole leaf NamedTuple; a transform replaces its own fields)."""
    init: Callable
    update: Callable


def no_state(p, ctx) -> dict:
    return {}


def chain(*transforms: Transform) -> Transform:
    """Run ``transforms`` in order; the leaf state holds the fields of all of them."""

    def init(p, ctx):
        out: dict = {}
        for t in transforms:
            out.update(t.init(p, ctx))
        return out

    def update(leaf, s, ctx):
        for t in transforms:
            leaf, s = t.update(leaf, s, ctx)
        return leaf, s

    return Transform(init, update)


class InPlace(NamedTuple):
    """One in-place step over a list of parameters (what the generic driver and a fused kernel need)."""
    ps: list
    gs: list
    leaves: list
    ctx: Ctx          # namespace, step and the step's schedule cache (``job.ctx.lr_value(rule.lr)``)
    names: list
    gnames: list
    xp: Any
    hvp: Any
    tree: Any
    check: bool


# ----------------------------------------------------------------------------------------------- the rule object
@public_class
class Rule:
    """An optimizer update rule with the functional contract ``init`` / ``step`` / ``step_``.

    Made by the factories (``adamw(...)``, ``muon(...)``); ``rule.hyper`` holds their arguments and
    ``rule.factory`` the function, so the wrappers can rebuild the rule with other hyperparameters.
    A rule is ``transform`` (a :func:`chain` of leaf transforms) with leaf-state class ``leaf``;
    ``accepts`` (a predicate of the parameter) and ``fallback`` (another rule) route the parameters it
    does not take; ``probe`` computes per-leaf extras from the whole tree before the leaf updates
    (AdaHessian's Hutchinson diagonal from ``hvp=``); ``kernel`` is the fused multi-tensor in-place step
    (:mod:`optnorm.optim._kernels`); ``elementwise`` rules treat a complex parameter as its real and
    imaginary parts (the torch wrapper's ``view_as_real``, as torch.optim).  Subclasses may override
    :meth:`init_leaf` and :meth:`update_leaf` instead of giving a transform.
    """

    needs_hvp = False

    def __init__(self, *, lr: Any, transform: Transform | None = None, leaf: type | None = None,
                 name: str = "rule", nan_policy: str = "raise", accepts: Callable | None = None,
                 fallback: Rule | None = None, probe: Callable | None = None, kernel: Any = None,
                 elementwise: bool = False, factory: Callable | None = None, hyper: dict | None = None,
                 masks: dict | None = None):
        self.lr = lr
        self.masks = {k: v for k, v in (masks or {}).items() if v is not None}
        self.transform = transform
        self.leaf_type = leaf
        self.name = name
        self.nan_policy = nan_policy
        self.accepts = accepts
        self.fallback = fallback
        self.probe = probe
        self.kernel = kernel
        self.elementwise = elementwise
        self.needs_hvp = probe is not None or type(self).needs_hvp
        self.factory = factory
        self.hyper = dict(hyper or {})

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper.items())
        return f"{self.name}({args})"

    def __reduce_ex__(self, protocol):
        # transforms are closures: a declared rule pickles as its factory's public name and arguments
        name = getattr(self.factory, "__optnorm_public__", None)
        if name is None:
            return super().__reduce_ex__(protocol)
        return _rebuild, (name, self.hyper)

    # ---- one parameter
    def _route(self, p) -> Rule | None:
        if self.accepts is None or self.accepts(p):
            return None
        return self.fallback

    def _no_fallback(self, p, name):
        return ValueError(f"{name} has shape {tuple(p.shape)}: {self.name} updates 2-D parameters only; pass "
                          f"fallback=optnorm.optim.adamw(...) (or another rule) for the other parameters")

    def state_type(self, p) -> type | None:
        """The leaf-state class this rule keeps for parameter ``p`` (its fallback's for routed parameters)."""
        if self.accepts is not None and not self.accepts(p):
            return None if self.fallback is None else self.fallback.state_type(p)
        return self.leaf_type

    def init_leaf(self, p: Any, *, name: str, xp) -> NamedTuple:
        """Zero state of one parameter."""
        if self.accepts is not None and not self.accepts(p):
            if self.fallback is None:
                raise self._no_fallback(p, name)
            return self.fallback.init_leaf(p, name=name, xp=xp)
        assert self.leaf_type is not None and self.transform is not None, "rules without a transform override this"
        return self.leaf_type(**self.transform.init(p, Ctx(xp, 0, name)))

    def update_leaf(self, p: Any, g: Any, s: NamedTuple, ctx: Ctx) -> tuple[Any, NamedTuple]:
        """``(new p, new state)`` of one parameter (pure; ``p``'s dtype, state in the compute dtype)."""
        if self.accepts is not None and not self.accepts(p):
            if self.fallback is None:
                raise self._no_fallback(p, ctx.name)
            return self.fallback.update_leaf(p, g, s, ctx)
        xp = ctx.xp
        cd = compat.compute_dtype(p, xp)
        pc, gc = compat.cast(p, cd, xp), compat.cast(g, cd, xp)
        ctx = ctx._replace(lr=ctx.lr_value(self.lr))
        if self.masks:                          # the rule's own per-parameter predicates (lars, lamb)
            m = dict(ctx.masks or {})
            for k, pred in self.masks.items():
                m.setdefault(k, bool(pred(p)))
            ctx = ctx._replace(masks=m)
        assert self.transform is not None, "a rule without a transform overrides update_leaf"
        leaf, s = self.transform.update(Leaf(pc, gc, gc, p0=pc, dtype=p.dtype), s, ctx)
        pn = leaf.p
        if leaf.u is not None:
            sc = leaf.scale
            pn = pn - leaf.u if isinstance(sc, float) and sc == 1.0 else pn - scalar(sc, pn, xp) * leaf.u
        return compat.cast(pn, p.dtype, xp), s

    def eval_leaf(self, p: Any, s: NamedTuple) -> Any:
        """The weights to evaluate with for one parameter (``p`` itself for most rules; the average ``x`` of
        schedule-free rules, the EMA of :func:`ema`, the slow weights of :func:`lookahead`)."""
        if self.accepts is not None and not self.accepts(p):
            return p if self.fallback is None else self.fallback.eval_leaf(p, s)
        return p

    def eval_params(self, params: Any, state: OptState) -> Any:
        """The parameters to evaluate (and checkpoint) with, from the training parameters and the state.

        The training parameters themselves for most rules; schedule-free rules return their average ``x``,
        :func:`ema` its moving average, :func:`lookahead` the slow weights (wrappers delegate to the rule
        they wrap).  Pure; the torch wrapper's ``eval()`` / ``train()`` swap them in place."""
        ps, tdef, names = tree_flatten(params, "params")
        if not isinstance(state, OptState) or len(state.leaves) != len(ps):
            raise ValueError(f"state does not belong to these params: expected an OptState with {len(ps)} "
                             f"leaves (from this optimizer's init), got {type(state).__name__}")
        xp = compat.array_namespace(ps[0])
        out = []
        for p, s in zip(ps, state.leaves):
            e = self.eval_leaf(p, s)
            out.append(e if e is p else compat.cast(compat.cast(e, e.dtype, xp), p.dtype, xp))
        return tree_unflatten(tdef, out)

    # ---- checks
    def init(self, params: Any) -> OptState:
        """Zero state for ``params`` (one array or a list/tuple/dict of arrays)."""
        ps, _, names = tree_flatten(params, "params")
        if not ps:
            raise ValueError("params is empty: nothing to optimise")
        xp = same_library("init", dict(zip(names, ps)))
        leaves = []
        for p, n in zip(ps, names):
            _LEAF.check(p, n, Call("init", {}))
            leaves.append(self.init_leaf(p, name=n, xp=xp))
        count = compat.zeros((), like=ps[0], dtype=xp.asarray(0).dtype, xp=xp)
        return OptState(count=count, leaves=tuple(leaves))

    def _check(self, params, grads, state):
        ps, tdef, names = tree_flatten(params, "params")
        gs, gdef, gnames = tree_flatten(grads, "grads")
        if gdef != tdef:
            raise ValueError("grads must have the same structure as params (same keys / lengths)")
        if not isinstance(state, OptState) or len(state.leaves) != len(ps):
            raise ValueError(f"state does not belong to these params: expected an OptState with {len(ps)} "
                             f"leaves (from this optimizer's init), got {type(state).__name__}")
        xp = same_library("step", {names[0]: ps[0], gnames[0]: gs[0]})
        for i, (p, g, pn, gn) in enumerate(zip(ps, gs, names, gnames)):
            _LEAF.check(p, pn, Call("step", {}))
            if not compat.is_array(g):
                raise TypeError(f"step: {gn} must be an array, got {type(g).__name__}")
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError(f"{gn} has shape {tuple(g.shape)}, but {pn} has shape {tuple(p.shape)}")
            if g.dtype != p.dtype:
                raise TypeError(f"{gn} has dtype {g.dtype}, but {pn} has dtype {p.dtype}")
            want = self.state_type(p)
            if want is not None and type(state.leaves[i]) is not want:
                raise TypeError(f"state.leaves[{i}] is {type(state.leaves[i]).__name__}, but {self.name} keeps "
                                f"{want.__name__} for {pn}: pass the state made by this optimizer's init")
        return ps, gs, tdef, names, gnames, xp

    def check_finite(self, gs: list, gnames: list, xp) -> Any:
        """Python bool for concrete gradients (raises under ``nan_policy="raise"``, naming the gradient), a
        0-d bool array for traced ones, True under ``"ignore"``."""
        if self.nan_policy == "ignore":
            return True
        ok = None
        for g, gn in zip(gs, gnames):
            # np.isfinite(x).all() runs at ~6 GB/s (1.7 ms for 10M float32); a parallel Numba reduction
            # was 3-10x slower on a loaded 2-core machine (barrier waits)
            f = xp.all(xp.isfinite(g))
            if compat.is_concrete(f):          # (a constant captured by jax.jit still gives a traced flag)
                if not bool(f):
                    if self.nan_policy == "raise":
                        raise ValueError(f"{gn} contains NaN or inf (nan_policy='raise'); nothing was changed. "
                                         "Pass nan_policy='skip' to skip such steps")
                    return False
                continue
            ok = f if ok is None else xp.logical_and(ok, f)
        return True if ok is None else ok

    # ---- the step driver
    def updates(self, ps: list, gs: list, leaves: list, *, ctx: Ctx, names: list, hvp: Callable | None = None,
                tree: Any = None, masks: dict | None = None) -> tuple[list, list]:
        """New parameters and leaf states of one step (pure): ``ctx`` holds the namespace and the step,
        ``tree`` is the params tree ``hvp`` acts on, ``masks`` maps a masked term to one bool per leaf."""
        xp = ctx.xp
        extras = None
        if self.needs_hvp:
            if hvp is None:
                raise ValueError(f"{self.name} needs hvp= in step(): a callable v -> H v on the params tree")
            assert self.probe is not None
            extras = self.probe(ps, tree if tree is not None else ps, hvp, ctx.t - 1, xp)
        new_p, new_s = [], []
        for i, (p, g, s, n) in enumerate(zip(ps, gs, leaves, names)):
            lm = None if not masks else {k: bool(v[i]) for k, v in masks.items()}
            pn, sn = self.update_leaf(p, g, s, ctx._replace(name=n, extra=None if extras is None else extras[i],
                                                            masks=lm))
            if p.ndim == 0:       # NumPy: 0-d arithmetic gives NumPy scalars, which the next step cannot write
                pn, sn = xp.asarray(pn), _as_arrays(sn, xp)
            new_p.append(pn)
            new_s.append(sn)
        return new_p, new_s

    def step(self, params: Any, grads: Any, state: OptState, *, hvp: Callable | None = None,
             masks: dict | None = None):
        """One pure step: returns ``(new_params, new_state)`` and leaves the inputs untouched.

        ``masks`` (optional) maps a masked term (``"weight_decay"``, ``"trust_ratio"``) to one bool per
        parameter leaf, in the flattening order: False leaves the term out for that parameter (what optax's
        ``mask=`` arguments do; the optax wrapper passes them)."""
        ps, gs, tdef, names, gnames, xp = self._check(params, grads, state)
        ok = self.check_finite(gs, gnames, xp)
        if ok is False:
            return params, state
        count = state.count
        t = int(count) + 1 if compat.is_concrete(count) else count + 1
        new_p, new_s = self.updates(ps, gs, list(state.leaves), ctx=Ctx(xp, t, lrs={}), names=names, hvp=hvp,
                                    tree=params, masks=masks)
        new_count = xp.asarray(count + 1)        # NumPy: 0-d + 1 is a scalar; keep a 0-d array (step_ needs it)
        if ok is not True:  # traced finiteness flag (under jax.jit nothing can raise: the step is skipped)
            new_p = [xp.where(ok, a, b) for a, b in zip(new_p, ps)]
            new_s = [_select(ok, a, b, xp) for a, b in zip(new_s, state.leaves)]
            new_count = xp.where(ok, new_count, count)
        return tree_unflatten(tdef, new_p), OptState(count=new_count, leaves=tuple(new_s))

    def step_(self, params: Any, grads: Any, state: OptState, *, hvp: Callable | None = None) -> OptState:
        """One step in place: ``params`` and the state's buffers are overwritten; returns ``state``.

        Float32/float64 contiguous NumPy buffers go through the fused Numba kernel of the rule where it
        has one (one parallel pass over p, g and the state), CuPy buffers through the CUDA kernel;
        otherwise the pure step is computed and copied back.  JAX arrays are immutable: use :meth:`step`.
        """
        ps, gs, tdef, names, gnames, xp = self._check(params, grads, state)
        if not compat.is_mutable(ps[0]):
            raise TypeError("params are JAX arrays, which are immutable: use step() instead of step_()")
        if not compat.is_concrete(state.count) or getattr(state.count, "shape", None) != ():
            raise TypeError("state.count must be a concrete 0-d array for step_()")
        if self.apply_(ps, gs, list(state.leaves), t=int(state.count) + 1, names=names, gnames=gnames, xp=xp,
                       hvp=hvp, tree=params):
            compat.copy_into(state.count, state.count + 1)
        return state

    def apply_(self, ps: list, gs: list, leaves: list, *, t: int, names: list, gnames: list, xp,
               hvp: Callable | None = None, tree: Any = None, check: bool | None = None) -> bool:
        """The in-place step driver (:meth:`step_` and the torch wrapper): writes the new parameters and
        states into their buffers; False when a non-finite gradient skipped the step (``nan_policy="skip"``).

        ``check=False`` skips the finiteness check (the caller did it).  The fused kernel of the rule runs
        where its buffers allow (it checks finiteness in the same pass), else :meth:`apply_generic_`.
        """
        check = self.nan_policy != "ignore" if check is None else check
        job = InPlace(ps, gs, leaves, Ctx(xp, t, lrs={}), names, gnames, xp, hvp, tree, check)
        fused = self.kernel is not None and hvp is None and not self.masks
        done = self.kernel(self, job) if fused else self.apply_generic_(job)
        if done is None:                     # a gradient is not finite and nothing was written
            self.check_finite(gs, gnames, xp)    # raises naming it under nan_policy="raise"
            return False
        return True

    def apply_generic_(self, job: InPlace) -> bool | None:
        """The rule's pure leaf updates copied into the buffers: True, or None when a gradient is not finite."""
        if job.check and self.check_finite(job.gs, job.gnames, job.xp) is False:
            return None
        new_p, new_s = self.updates(job.ps, job.gs, job.leaves, ctx=job.ctx, names=job.names, hvp=job.hvp,
                                    tree=job.tree)
        for p, pn, s, sn in zip(job.ps, new_p, job.leaves, new_s):
            if pn is not p:
                compat.copy_into(p, pn)
            copy_state(s, sn)
        return True


@public_class
class MatrixRule(Rule):
    """A rule for 2-D parameters; any other parameter goes to ``fallback`` (or raises, naming the parameter)."""

    def __init__(self, *, fallback: Rule | None = None, **kw):
        super().__init__(accepts=_is_matrix, fallback=fallback, **kw)


def _is_matrix(p) -> bool:
    return p.ndim == 2


def _rebuild(name: str, hyper: dict) -> Rule:
    entry = lookup(name)
    assert entry is not None, name
    return entry.obj(**hyper)


# ----------------------------------------------------------------------------------------------- state helpers
def _rebuild_tuple(like, items):
    """A tuple of ``like``'s type (NamedTuple or plain) from ``items``."""
    items = list(items)
    return type(like)(*items) if hasattr(like, "_fields") else tuple(items)


def _as_arrays(s, xp):
    if s is None:
        return None
    if isinstance(s, tuple):
        return _rebuild_tuple(s, (_as_arrays(v, xp) for v in s))
    return xp.asarray(s)


def _select(ok, new, old, xp):
    if old is None:
        return None
    if isinstance(old, tuple):
        return _rebuild_tuple(old, (_select(ok, a, b, xp) for a, b in zip(new, old)))
    return xp.where(ok, new, old)


def copy_state(old, new):
    if old is None or old is new:
        return
    if isinstance(old, tuple):
        for a, b in zip(old, new):
            copy_state(a, b)
        return
    compat.copy_into(old, new)


# ----------------------------------------------------------------------------------------------- declarations
class RuleArg(Role):
    """A rule argument (``fallback=``, ``inner=``): an optnorm.optim rule, or None when ``optional``."""

    def __init__(self, *, optional: bool = True):
        self.optional = optional

    @property
    def doc(self):
        return "optnorm.optim rule" + (" or None" if self.optional else "")

    def check(self, value, name, call):
        if value is None and self.optional:
            return None
        if not isinstance(value, Rule):
            raise call.error(TypeError, f"{name} must be an optnorm.optim rule (e.g. adamw(lr=3e-4))"
                                        f"{' or None' if self.optional else ''}, got {type(value).__name__}")
        return value

    def example(self, sizes, rng, dtype):
        return None

    def perturbations(self, value):
        return [Perturbation("not a rule", lambda v, r: "adamw", Outcome.ERROR)]


LR = Scalar(0, None, schedule=True, array=True)     # a finite number >= 0, a 0-d array, or a schedule of the step
NAN_POLICY = Choice(NAN_POLICIES)


def rule(torch_name: str, **roles):
    """Declare a rule factory: ``@public`` with a role for every hyperparameter; ``torch_name`` is the class
    name of its ``torch.optim.Optimizer`` (``optnorm.torch.optim.AdamW``); the optax transformation takes the
    factory's name.  Both wrappers are generated from these declarations.  The returned rule records its
    factory and (validated) arguments."""

    def deco(f):
        sig = inspect.signature(f)
        holder: dict = {}

        @functools.wraps(f)
        def body(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            r = f(*args, **kwargs)
            r.factory, r.hyper, r.name = holder["obj"], dict(bound.arguments), f.__name__
            return r

        body.__optnorm_rule__ = torch_name
        holder["obj"] = public(**roles)(body)
        return holder["obj"]

    return deco


def rule_factories() -> list:
    """The declared rule factories (registry entries of the optim domain's exports, in declaration order):
    what the torch and optax wrappers generate.  Imports only :mod:`optnorm.optim`."""
    import importlib

    entries = [lookup(f"optim.{n}") for n in importlib.import_module("optnorm.optim").__all__]
    return [f for f in entries if f is not None and f.kind == "function" and getattr(f.body, "__optnorm_rule__", None)]


def wrapper_doc(factory: Callable, header: str) -> str:
    """A wrapper's docstring: ``header`` and the factory's docstring without its Examples (NumPy ones)."""
    doc = inspect.getdoc(factory) or ""
    i = doc.find("Examples\n")
    return header + "\n\n" + (doc[:i].rstrip() + "\n" if i >= 0 else doc)
