"""JAX adapters: every registered op with ``jax.custom_vjp``, every optimizer as an optax transformation.

>>> import jax, jax.numpy as jnp, optnorm.jax as onj
>>> g = jax.grad(lambda x: onj.softmax(x)[0, 0])(jnp.ones((2, 3)))

Ops are generated from :mod:`optnorm._lib.ops`.  Residuals that are JAX arrays
flow through the VJP; every other residual leaf (ints, strings, shapes) is kept
static, so ops work under ``jax.jit``, ``grad`` and ``vmap`` as long as their
generic body is traceable.  Options (keyword arguments) are static.
"""
from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from ._lib import ops as _ops

__all__ = ["apply", "op", "optax"]


def apply(op_or_name, *args, **kwargs):
    """Run a registered op (Op or name) on JAX arrays with optnorm's VJP as its ``custom_vjp``."""
    op_ = _ops.get(op_or_name) if isinstance(op_or_name, str) else op_or_name
    arrays, opts = op_.split(args, kwargs)
    # NumPy inputs become JAX arrays (jax.test_util.check_grads and users pass them); others pass as they are
    arrays = tuple(jnp.asarray(a) if isinstance(a, np.ndarray) else a for a in arrays)
    static: dict = {}

    @jax.custom_vjp
    def f(*arrs):
        return op_.fn(*arrs, **opts)

    def f_fwd(*arrs):
        y, res = op_.fwd(*arrs, **opts)
        leaves, tree = jax.tree_util.tree_flatten(res)
        is_arr = [isinstance(v, jax.Array) for v in leaves]
        static["tree"] = tree
        static["is_arr"] = is_arr
        static["consts"] = [None if a else v for v, a in zip(leaves, is_arr)]
        return y, tuple(v for v, a in zip(leaves, is_arr) if a)

    def f_bwd(dyn, dy):
        it = iter(dyn)
        leaves = [next(it) if a else c for a, c in zip(static["is_arr"], static["consts"])]
        res = jax.tree_util.tree_unflatten(static["tree"], leaves)
        grads = tuple(op_.bwd(res, dy))
        if len(grads) != len(arrays):
            raise ValueError(f"{op_.name}: bwd returned {len(grads)} cotangents for {len(arrays)} inputs")
        return grads

    f.defvjp(f_fwd, f_bwd)
    return f(*arrays)


op, __getattr__, __dir__ = _ops.adapter_namespace(__name__, apply)

# the optax wrappers: ``optnorm.jax.optax.adamw`` and ``from optnorm.jax.optax import adamw``
from .optim import _optax as optax  # noqa: E402

sys.modules[f"{__name__}.optax"] = optax
