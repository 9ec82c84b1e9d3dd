"""Every differentiable public function runs under ``jax.jit`` through the JAX adapter (forward and
gradient), on its declared example call.  A function whose algorithm needs concrete values (a host
LP solver, data-dependent shapes) declares ``contract={"jit": "reason"}`` and is skipped with it.
"""
from __future__ import annotations

import numpy as np
import pytest

from optnorm._lib import api, contract

jax = pytest.importorskip("jax", reason="jax is not installed (pip install optnorm[jax])")
jnp = jax.numpy

_OPS = [f for f in api.functions() if f.op is not None]


@pytest.mark.parametrize("entry", _OPS, ids=[f.name for f in _OPS])
def test_jit_forward_and_grad(entry):
    import optnorm.jax as onj

    if "jit" in entry.contract:
        pytest.skip(entry.contract["jit"])
    args, kwargs = contract.example_call(entry, np.random.default_rng(7), np.float64)
    arrays, opts = entry.op.split(args, kwargs)
    f = onj.op(entry.short_name)
    jarrs = [None if a is None else jnp.asarray(a) for a in arrays]
    diff = [i for i, a in enumerate(jarrs) if a is not None and jnp.issubdtype(a.dtype, jnp.floating)
            and i not in entry.op.nondiff_argnums]

    def scalar(*a):
        ys = [y for y in jax.tree_util.tree_leaves(f(*a, **opts)) if jnp.issubdtype(y.dtype, jnp.floating)]
        return sum(jnp.sum(y * jnp.arange(1, y.size + 1, dtype=y.dtype).reshape(y.shape)) for y in ys)

    y_eager = f(*jarrs, **opts)
    y_jit = jax.jit(lambda *a: f(*a, **opts))(*jarrs)
    for a, b in zip(jax.tree_util.tree_leaves(y_eager), jax.tree_util.tree_leaves(y_jit)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)
    if diff:
        g = jax.jit(jax.grad(scalar, argnums=tuple(diff)))(*jarrs)
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in g), f"{entry.name}: non-finite gradient under jit"
