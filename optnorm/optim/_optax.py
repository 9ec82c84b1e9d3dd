"""optax GradientTransformations generated from optnorm's rules (``optnorm.jax.optax``).

>>> import jax, jax.numpy as jnp, optax, optnorm.jax as onj
>>> tx = onj.optax.adamw(lr=1e-3)
>>> params = {"w": jnp.ones((3, 2))}
>>> state = tx.init(params)
>>> updates, state = jax.jit(tx.update)(params, state, params)   # grads, state, params
>>> params = optax.apply_updates(params, updates)

One transformation per declared rule factory of :mod:`optnorm.optim` (same name, same keywords:
optnorm's ``lr``, ``betas``, ..., not optax's ``learning_rate``, ``b1``).  ``update`` needs ``params``
and returns ``new_params - params`` as the updates, so ``optax.apply_updates`` lands exactly on the
rule's new parameters (for small steps the difference is exact in floating point).  Non-finite
gradients under ``jax.jit`` skip the step (nothing can raise inside a trace).  AdaHessian takes
``hvp=`` as an extra argument of ``update`` (a ``GradientTransformationExtraArgs``).
"""
from __future__ import annotations

import functools

import jax
import optax

from .base import Rule, rule_factories, wrapper_doc


def to_optax(rule: Rule) -> optax.GradientTransformationExtraArgs:
    """Wrap an optnorm rule as an optax transformation (state: the rule's ``OptState``)."""
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be an optnorm.optim rule, got {type(rule).__name__}")

    def init_fn(params):
        return rule.init(params)

    def update_fn(updates, state, params=None, *, hvp=None, **extra):
        if params is None:
            raise ValueError(f"{rule.name}: update() needs params (optnorm rules use the parameters)")
        new_params, new_state = rule.step(params, updates, state, hvp=hvp)
        return jax.tree_util.tree_map(lambda a, b: a - b, new_params, params), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _wrap(factory):
    @functools.wraps(factory)
    def make(*args, **kwargs):
        return to_optax(factory(*args, **kwargs))

    make.__doc__ = wrapper_doc(factory, f"optax transformation of :func:`optnorm.optim.{factory.__name__}`.")
    return make


_TRANSFORMS = {f.short_name: _wrap(f.obj) for f in rule_factories()}
globals().update(_TRANSFORMS)
__all__ = ["to_optax", *_TRANSFORMS]
