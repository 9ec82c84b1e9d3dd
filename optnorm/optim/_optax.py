"""optax GradientTransformations generated from optnorm's rules (``optnorm.jax.optax``).

>>> import jax, jax.numpy as jnp, optax, optnorm.jax as onj
>>> tx = onj.optax.adamw(learning_rate=1e-3)          # optax's names, or optnorm's: adamw(lr=1e-3)
>>> params = {"w": jnp.ones((3, 2))}
>>> state = tx.init(params)
>>> updates, state = jax.jit(tx.update)(params, state, params)   # grads, state, params
>>> params = optax.apply_updates(params, updates)

One transformation per declared rule factory of :mod:`optnorm.optim` (same name).  Keywords: the
factory's (``lr``, ``betas``, ...), plus optax's names for the same things: ``learning_rate`` (also the
first positional argument), ``b1`` / ``b2`` (entries of ``betas``), ``eps``, ``weight_decay``, ``mask``
(a bool tree or a callable of the params: which leaves are decayed), and per rule ``decay`` (rmsprop's
``alpha``), ``weight_decay_mask`` / ``trust_ratio_mask`` (lars), ``decay_rate`` / ``clipping_threshold`` /
``weight_decay_rate`` (adafactor).  Defaults are optnorm's (torch.optim's where the rule exists there);
numeric ones show as None in the signature, so that ``optax.inject_hyperparams`` traces only the values
passed to it (a traced value cannot switch a term off, so an untraced default keeps the state's
structure, as optax's own ``None`` defaults do).

``update`` needs ``params`` and returns ``new_params - params``, so ``optax.apply_updates`` lands on the
rule's new parameters.  Parameter trees are JAX pytrees (dicts, lists, NamedTuples, None and optax's
``MaskedNode`` leaves, so ``optax.masked`` / ``optax.partition`` work); complex parameters of the
rules that treat them as real pairs are updated as their real and imaginary parts.  The state is an
:class:`~optnorm.optim.OptState` whose ``leaves`` has the params' tree structure (each parameter's
leaf state where the parameter was), so ``optax.tree.map_params`` reaches it.  Every numeric
hyperparameter of the common rules may be a traced value (``optax.inject_hyperparams``); integer
options (``min_dim_size_to_factor``, ``ns_steps``, ...) must stay static (``static_args=``).
Non-finite gradients under ``jax.jit`` skip the step (nothing can raise inside a trace).
AdaHessian takes ``hvp=`` as an extra argument of ``update``.
"""
from __future__ import annotations

import functools
import inspect
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from .._lib import compat
from .._lib.api import lookup
from .._lib.roles import Scalar, Scalars
from .base import OptState, Rule, rule_factories, wrapper_doc

#: optax's names that map onto a factory keyword: (name, index into a tuple or None, converter)
_COMMON = {"learning_rate": ("lr", None, None), "b1": ("betas", 0, None), "b2": ("betas", 1, None)}
_PER_RULE = {
    "rmsprop": {"decay": ("alpha", None, None)},
    "adafactor": {"decay_rate": ("beta2_decay", None, lambda v: -v),
                  "clipping_threshold": ("d", None, lambda v: float("inf") if v is None else v),
                  "weight_decay_rate": ("weight_decay", None, None)},
}
#: wrapper-level masks: optax keyword -> the masked term it switches per leaf
_MASKS = {"mask": "weight_decay", "weight_decay_mask": "weight_decay", "trust_ratio_mask": "trust_ratio"}


def _is_leaf_state(x):
    return isinstance(x, tuple) and hasattr(x, "_fields") and not isinstance(x, OptState)


def _real(x, name, rule):
    if jnp.iscomplexobj(x):
        if not rule.elementwise:
            raise TypeError(f"{name} is complex ({x.dtype}): {rule.name} acts on real parameters; the rules that "
                            "treat complex ones as real pairs (SGD, the Adam family, RMSprop, Lion, LAMB, LARS, ...) "
                            "take them")
        return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)
    return x


def _unreal(v, like):
    if jnp.iscomplexobj(like):
        return jax.lax.complex(v[..., 0], v[..., 1]).astype(like.dtype)
    return v


def _resolve_masks(masks: dict, params, pdef, n) -> dict | None:
    out = {}
    for what, m in masks.items():
        if m is None:
            continue
        tree = m(params) if callable(m) else m
        if isinstance(tree, bool):
            vals = [tree] * n
        else:
            try:
                vals = pdef.flatten_up_to(tree)  # type: ignore[attr-defined]
            except (ValueError, TypeError) as e:
                raise ValueError(f"the {what} mask must have the params' tree structure (or be a callable of the "
                                 f"params returning one): {e}") from None
        out[what] = [bool(v) for v in vals]
    return out or None


def to_optax(rule: Rule, *, masks: dict | None = None) -> optax.GradientTransformationExtraArgs:
    """Wrap an optnorm rule as an optax transformation.

    ``masks`` maps a masked term (``"weight_decay"``, ``"trust_ratio"``) to a bool tree with the params'
    structure or a callable of the params returning one (optax's ``mask`` arguments).  The state is an
    :class:`~optnorm.optim.OptState` whose ``leaves`` has the params' tree structure.
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be an optnorm.optim rule, got {type(rule).__name__}")
    masks = dict(masks or {})

    def init_fn(params):
        pl, pdef = jax.tree_util.tree_flatten(params)
        count = jnp.zeros([], jnp.int32)
        if not pl:                           # no array leaves (optax.tree.map_params' placeholder, all masked)
            return OptState(count=count, leaves=jax.tree_util.tree_unflatten(pdef, []))
        views = [_real(jnp.asarray(p), f"params leaf {i}", rule) for i, p in enumerate(pl)]
        st = rule.init(views)
        return OptState(count=count, leaves=jax.tree_util.tree_unflatten(pdef, list(st.leaves)))

    def update_fn(updates, state, params=None, *, hvp: Callable | None = None, **extra):
        if params is None:
            raise ValueError(f"{rule.name}: update() needs params (optnorm rules use the parameters)")
        if not isinstance(state, OptState):
            raise TypeError(f"{rule.name}: state must be this transformation's init(params), got "
                            f"{type(state).__name__}")
        pl, pdef = jax.tree_util.tree_flatten(params)
        gl, gdef = jax.tree_util.tree_flatten(updates)
        if gdef != pdef:  # type: ignore[operator]
            raise ValueError(f"{rule.name}: updates (grads) and params have different tree structures: {gdef} vs "
                             f"{pdef}")
        if not pl:
            return updates, state
        try:
            leaf_states = pdef.flatten_up_to(state.leaves)  # type: ignore[attr-defined]
        except (ValueError, TypeError):
            raise ValueError(f"{rule.name}: state does not belong to these params (its leaves do not have the "
                             "params' tree structure): pass this transformation's init(params)") from None
        views = [_real(p, f"params leaf {i}", rule) for i, p in enumerate(pl)]
        gviews = [_real(g, f"updates leaf {i}", rule) for i, g in enumerate(gl)]
        lm = _resolve_masks(masks, params, pdef, len(pl))
        h = None
        if hvp is not None:
            def h(vs):
                out = hvp(jax.tree_util.tree_unflatten(pdef, [_unreal(v, p) for v, p in zip(vs, pl)]))
                return [_real(x, "hvp", rule) for x in jax.tree_util.tree_flatten(out)[0]]
        new_p, new_s = rule.step(views, gviews, OptState(state.count, tuple(leaf_states)), hvp=h, masks=lm)
        ups = [(_unreal(n, p) - p).astype(g.dtype) for n, p, g in zip(new_p, pl, gl)]
        count = jnp.asarray(new_s.count, jnp.int32)
        return (jax.tree_util.tree_unflatten(gdef, ups),
                OptState(count=count, leaves=jax.tree_util.tree_unflatten(pdef, list(new_s.leaves))))

    update_fn.__optnorm_rule__ = rule  # type: ignore[attr-defined]
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def eval_params(tx: optax.GradientTransformation, state: OptState, params: Any) -> Any:
    """The parameters to evaluate with (``rule.eval_params``: the schedule-free average, the EMA, the slow
    weights of Lookahead) for a transformation made here (optax.contrib's ``schedule_free_eval_params``)."""
    r = getattr(tx.update, "__optnorm_rule__", None)
    if r is None:
        raise TypeError("tx is not an optnorm.jax.optax transformation")
    pl, pdef = jax.tree_util.tree_flatten(params)
    leaves = pdef.flatten_up_to(state.leaves)  # type: ignore[attr-defined]
    out = r.eval_params([_real(p, "params", r) for p in pl], OptState(state.count, tuple(leaves)))
    return jax.tree_util.tree_unflatten(pdef, [_unreal(o, p) for o, p in zip(out, pl)])


# ----------------------------------------------------------------------------------------------- the factories
def _accepts_array(role) -> bool:
    if isinstance(role, Scalars):
        role = role.role
    return isinstance(role, Scalar) and role.array


def _static(name, v, role):
    """A JAX array for a hyperparameter whose role takes numbers only: its value (concrete), or an error."""
    if not isinstance(v, jax.Array) or _accepts_array(role):
        return v
    if isinstance(v, jax.core.Tracer):
        raise TypeError(f"{name} is a traced value (optax.inject_hyperparams under jit?) but must be static here: "
                        f"pass static_args=({name!r},) to optax.inject_hyperparams")
    x = v.item()
    return int(x) if isinstance(role, Scalar) and role.integer else x


def _wrap(entry):
    factory = entry.obj
    short = entry.short_name
    sig = inspect.signature(factory)
    aliases = {**_COMMON, **_PER_RULE.get(short, {})}
    aliases = {k: v for k, v in aliases.items() if v[0] in sig.parameters}
    positional = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    params = []
    P = inspect.Parameter
    for p in positional:
        params.append(p.replace(kind=P.POSITIONAL_OR_KEYWORD))
    has_lr = "lr" in sig.parameters
    if has_lr and not positional:
        params.append(P("learning_rate", P.POSITIONAL_OR_KEYWORD, default=None))
    numeric = set()   # numeric defaults show as None: inject_hyperparams traces only the values passed to it
    for p in sig.parameters.values():
        if p.kind == p.KEYWORD_ONLY:
            if isinstance(p.default, numbers.Real) and not isinstance(p.default, bool):
                numeric.add(p.name)
                p = p.replace(default=None)
            params.append(p)
    for k in aliases:
        if k != "learning_rate" or positional:
            if all(q.name != k for q in params):
                params.append(P(k, P.KEYWORD_ONLY, default=None))
    mask_names = ["mask"] + {"lars": ["weight_decay_mask", "trust_ratio_mask"],
                             "adafactor": ["weight_decay_mask"]}.get(short, [])
    for m in mask_names:
        if all(q.name != m for q in params):
            params.append(P(m, P.KEYWORD_ONLY, default=None))
    new_sig = inspect.Signature(params, return_annotation=optax.GradientTransformationExtraArgs)
    names = {p.name for p in params}

    def make(*args, **kwargs):
        bound = new_sig.bind(*args, **kwargs)
        kw = dict(bound.arguments)
        masks = {}
        for m in mask_names:
            v = kw.pop(m, None)
            if v is not None:
                masks[_MASKS[m]] = v
        for m in ("mask", "weight_decay_mask", "trust_ratio_mask"):     # the factory's own (predicates): unused
            if m in sig.parameters:
                kw.pop(m, None)
        for name, (target, idx, conv) in aliases.items():
            v = kw.pop(name, None)
            if v is None:
                continue
            v = conv(v) if conv is not None else v
            if idx is None:
                kw[target] = v
            else:
                cur = list(kw.get(target, sig.parameters[target].default))
                cur[idx] = v
                kw[target] = tuple(cur)
        for k in numeric:
            if kw.get(k, 0) is None:
                del kw[k]
        if short == "adafactor" and isinstance(kw.get("eps"), (numbers.Real, jax.Array)):
            kw["eps"] = (kw["eps"], sig.parameters["eps"].default[1])
        roles = entry.roles
        for k in list(kw):
            v = kw[k]
            if isinstance(v, tuple) and k in roles:
                kw[k] = tuple(_static(f"{k}[{i}]", x, roles[k]) for i, x in enumerate(v))
            elif k in roles:
                kw[k] = _static(k, v, roles[k])
        return to_optax(factory(**kw), masks=masks)

    make.__signature__ = new_sig
    make.__name__ = make.__qualname__ = short
    make.__module__ = __name__
    make.__doc__ = wrapper_doc(factory, f"optax transformation of :func:`optnorm.optim.{short}` (optnorm's "
                                        f"keywords, or optax's: {', '.join(sorted(names & {*aliases, *_MASKS}))}).")
    return make


_TRANSFORMS = {f.short_name: _wrap(f) for f in rule_factories()}
globals().update(_TRANSFORMS)
__all__ = ["to_optax", "eval_params", *_TRANSFORMS]
