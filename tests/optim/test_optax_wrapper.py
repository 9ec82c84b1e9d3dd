"""The optax wrapper (optnorm.jax.optax, optnorm/optim/_optax.py), generated from the rule declarations."""
from __future__ import annotations

import numpy as np
import pytest

import optnorm.optim as oo
from optnorm.testing import assert_close

jax = pytest.importorskip("jax", reason="jax is not installed")
optax = pytest.importorskip("optax", reason="optax is not installed")


OPTAX_CASES = {
    "sgd": dict(lr=0.1, momentum=0.9, nesterov=True),
    "adam": dict(lr=1e-2, amsgrad=True),
    "adamw": dict(lr=1e-2),
    "adamp": dict(lr=1e-2, weight_decay=0.1),
    "sgdp": dict(lr=0.1, momentum=0.9, weight_decay=0.1),
    "fadam": dict(lr=1e-2),
    "lion": dict(lr=1e-3, weight_decay=0.1),
    "muon": dict(lr=0.02, ns_dtype="float32", fallback=oo.adamw(lr=1e-2)),
    "normuon": dict(lr=0.02, ns_dtype="float32", fallback=oo.adamw(lr=1e-2)),
    "auon": dict(lr=0.2, fallback=oo.adamw(lr=1e-2)),
    "hybrid_auon": dict(lr=0.2, fallback=oo.adamw(lr=1e-2)),
    "conda": dict(lr=1e-2, update_proj_gap=2, fallback=oo.adamw(lr=1e-2)),
    "swan": dict(lr=1e-2, fallback=oo.adamw(lr=1e-2)),
    "sinkgd": dict(lr=1e-2, fallback=oo.adamw(lr=1e-2)),
    "dct_lowrank": dict(inner=oo.adam(lr=1e-2), rank=2, update_proj_gap=2),
    "nap": dict(inner=oo.sgd(lr=0.1, momentum=0.9)),
}


CORE_OPTAX = {"adamw", "sgd", "lion", "muon", "conda", "dct_lowrank", "fadam"}


@pytest.mark.parametrize("name", [n if n in CORE_OPTAX else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(OPTAX_CASES)])
def test_optax_jit_matches_plain_rule(name):
    import jax.numpy as jnp

    import optnorm.jax as onj

    kw = OPTAX_CASES[name]
    tx = getattr(onj.optax, name)(**kw)
    rule = getattr(oo, name)(**kw)
    rng = np.random.default_rng(0)
    p0 = {"w": rng.standard_normal((6, 4)).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32)}
    grads = [{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in p0.items()} for _ in range(4)]
    params = {k: jnp.asarray(v) for k, v in p0.items()}
    state = tx.init(params)
    upd = jax.jit(tx.update)
    for g in grads:
        u, state = upd({k: jnp.asarray(v) for k, v in g.items()}, state, params)
        params = optax.apply_updates(params, u)
    ref = {k: v.copy() for k, v in p0.items()}
    st = rule.init(ref)
    for g in grads:
        ref, st = rule.step(ref, g, st)
    for k in ref:
        assert_close(params[k], ref[k], rtol=2e-5, atol=2e-6)
    assert int(state.count) == 4


def test_optax_adahessian_jit_with_hvp():
    import jax.numpy as jnp

    import optnorm.jax as onj

    A = jnp.asarray(np.diag([1.0, 3.0, 10.0]).astype(np.float32))
    f = lambda x: 0.5 * x @ A @ x
    tx = onj.optax.adahessian(lr=0.2)
    x = jnp.ones(3, jnp.float32)
    state = tx.init(x)

    @jax.jit
    def step(x, state):
        hvp = lambda v: jax.jvp(jax.grad(f), (x,), (v,))[1]
        u, state = tx.update(jax.grad(f)(x), state, x, hvp=hvp)
        return optax.apply_updates(x, u), state

    for _ in range(50):
        x, state = step(x, state)
    assert float(f(x)) < 1e-2 * float(f(jnp.ones(3)))


def test_optax_nan_under_jit_skips_step():
    import jax.numpy as jnp

    import optnorm.jax as onj

    tx = onj.optax.adamw(lr=0.1)
    x = jnp.ones(3, jnp.float32)
    state = tx.init(x)
    u, state2 = jax.jit(tx.update)(jnp.asarray([1.0, jnp.nan, 0.0], jnp.float32), state, x)
    assert np.all(np.asarray(u) == 0) and int(state2.count) == 0
    assert np.all(np.asarray(state2.leaves.exp_avg) == 0)       # leaves: the params' structure (one array)


def test_optax_chain_and_schedule():
    import jax.numpy as jnp

    import optnorm.jax as onj

    sched = optax.linear_schedule(1e-2, 0.0, 10)
    tx = optax.chain(optax.clip_by_global_norm(1.0), onj.optax.adamw(lr=sched))
    x = jnp.ones(4, jnp.float32)
    st = tx.init(x)
    for _ in range(12):
        u, st = jax.jit(tx.update)(jnp.ones(4, jnp.float32), st, x)
        x = optax.apply_updates(x, u)
    ref = np.ones(4, np.float32)
    rule = oo.adamw(lr=lambda t: max(0.0, 1e-2 * (1 - t / 10)))
    rs = rule.init(ref)
    for _ in range(12):
        ref, rs = rule.step(ref, np.full(4, 0.5, np.float32), rs)
    assert_close(x, ref, rtol=1e-5, atol=1e-6)
