"""optax GradientTransformations generated from optnorm's rules (``optnorm.jax.optax``).

>>> import jax, jax.numpy as jnp, optax, optnorm.jax as onj
>>> tx = onj.optax.adamw(lr=1e-3)
>>> params = {"w": jnp.ones((3, 2))}
>>> state = tx.init(params)
>>> updates, state = jax.jit(tx.update)(params, state, params)   # grads, state, params
>>> params = optax.apply_updates(params, updates)

Keywords are optnorm's (``lr``, ``betas``, ...), not optax's (``learning_rate``,
``b1``).  ``update`` needs ``params`` and returns ``new_params - params`` as the
updates, so ``optax.apply_updates`` lands exactly on the rule's new parameters
(for small steps the difference is exact in floating point).  Non-finite
gradients under ``jax.jit`` skip the step (nothing can raise inside a trace).
AdaHessian takes ``hvp=`` as an extra argument of ``update``
(a ``GradientTransformationExtraArgs``).
"""
from __future__ import annotations

import functools

import jax
import optax

from .. import optim as _optim
from .base import Rule

__all__ = ["to_optax", "sgd", "sgdp", "adam", "adamw", "adamp", "fadam", "lion", "muon", "normuon", "auon",
           "hybrid_auon", "conda", "swan", "sinkgd", "adahessian", "dct_lowrank", "nap"]


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


def _summary(doc):
    """The factory's docstring without its Examples section (those run on NumPy, not here)."""
    doc = doc or ""
    i = doc.find("Examples\n")
    return doc[:i].rstrip() + "\n" if i >= 0 else doc


def _wrap(factory):
    fn = getattr(factory, "__wrapped__", factory)

    @functools.wraps(fn)
    def make(*args, **kwargs):
        return to_optax(fn(*args, **kwargs))

    make.__doc__ = f"optax transformation of :func:`optnorm.optim.{fn.__name__}`.\n\n" + _summary(fn.__doc__)
    return make


sgd = _wrap(_optim.sgd)
sgdp = _wrap(_optim.sgdp)
adam = _wrap(_optim.adam)
adamw = _wrap(_optim.adamw)
adamp = _wrap(_optim.adamp)
fadam = _wrap(_optim.fadam)
lion = _wrap(_optim.lion)
muon = _wrap(_optim.muon)
normuon = _wrap(_optim.normuon)
auon = _wrap(_optim.auon)
hybrid_auon = _wrap(_optim.hybrid_auon)
conda = _wrap(_optim.conda)
swan = _wrap(_optim.swan)
sinkgd = _wrap(_optim.sinkgd)
adahessian = _wrap(_optim.adahessian)
dct_lowrank = _wrap(_optim.dct_lowrank)
nap = _wrap(_optim.nap)
