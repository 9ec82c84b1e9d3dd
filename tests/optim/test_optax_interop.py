"""optax interop of optnorm.jax.optax as optax users combine transformations (issue #17).

optax's own alias tests (optax/_src/alias_test.py: optimisation of a parabola and Rosenbrock in float32
and complex64 with no recompilation on the second jitted call, ``optax.tree.map_params``, extra update
arguments, ``inject_hyperparams`` equality, dtype preservation, ``MultiSteps``, shape/dtype stability under
``lax.cond``) are re-run here through the wrappers, for the rules optax also has, with optax's arguments.
The test bodies are rewritten, not copied.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

import optnorm.optim as oo
from optnorm.testing import assert_close

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jnp = jax.numpy
onj = pytest.importorskip("optnorm.jax")

# optax's _OPTIMIZERS_UNDER_TEST entries for the rules optnorm has (optax's names and arguments)
ALIAS_CASES = [
    ("adadelta", dict(learning_rate=0.1)),
    ("adafactor", dict(learning_rate=5e-3)),
    ("adagrad", dict(learning_rate=1.0)),
    ("adam", dict(learning_rate=1e-1)),
    ("adamax", dict(learning_rate=1e-1)),
    ("adamw", dict(learning_rate=1e-1, weight_decay=1e-4)),      # optax's default decay (torch's 1e-2 is ours)
    ("lamb", dict(learning_rate=1e-3)),
    ("lars", dict(learning_rate=1.0)),
    ("lion", dict(learning_rate=1e-2, weight_decay=1e-4)),
    ("nadam", dict(learning_rate=1e-2)),
    ("radam", dict(learning_rate=5e-3)),
    ("rmsprop", dict(learning_rate=5e-3)),
    ("rmsprop", dict(learning_rate=5e-3, momentum=0.9)),
    ("sgd", dict(learning_rate=1e-3, momentum=0.9)),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(ALIAS_CASES)]
# as in optax's test: no complex parameters for these (adafactor: its factored statistics are of real entries)
NO_COMPLEX = {"lion", "adadelta", "adafactor"}
STATIC = {"adafactor": ("min_dim_size_to_factor",)}


def _parabola(dtype):
    init = jnp.array([-1.0, 10.0, 1.0], dtype=dtype)
    final = jnp.array([1.0, -1.0, 1.0], dtype=dtype)
    if jnp.iscomplexobj(init):
        final = final * (1 + 1j)
    return init, final, lambda p: jnp.sum(jnp.abs(p - final) ** 2)


def _rosenbrock(dtype):
    a = 1.0 if not jnp.issubdtype(dtype, jnp.complexfloating) else 1.0 + 1j
    init = jnp.array([0.0, 0.0], dtype=dtype)
    final = jnp.array([a, a ** 2], dtype=dtype)
    return init, final, lambda p: jnp.abs(a - p[0]) ** 2 + 100.0 * jnp.abs(p[1] - p[0] ** 2) ** 2


@pytest.mark.slow
@pytest.mark.parametrize("target", [_parabola, _rosenbrock], ids=["parabola", "rosenbrock"])
@pytest.mark.parametrize("dtype", ["float32", "complex64"])
@pytest.mark.parametrize("name,kw", ALIAS_CASES, ids=IDS)
def test_alias_optimization_compiles_once(name, kw, dtype, target):
    from optax._src import test_utils

    if name in NO_COMPLEX and dtype == "complex64":
        pytest.skip(f"{name} takes real parameters")
    opt = getattr(onj.optax, name)(**kw)
    init, final, objective = target(getattr(jnp, dtype))

    @jax.jit
    def step(params, state):
        g = jax.grad(objective)(params)
        g = jax.tree.map(lambda x: x.conj(), g)
        u, state = opt.update(g, state, params)
        return optax.apply_updates(params, u), state

    params, state = init, opt.init(init)
    state = optax.tree.map_params(opt, lambda v: v, state)          # a no-op map: must not fail
    for it in range(10_000):
        if it == 1:
            with test_utils.log_compilations() as logs:
                params, state = step(params, state)
            assert not logs, "recompiled on the second call"
        else:
            params, state = step(params, state)
    assert_close(params, final, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("name,kw", ALIAS_CASES, ids=IDS)
def test_alias_no_recompilation_and_extra_args(name, kw):
    from optax._src import test_utils

    opt = getattr(onj.optax, name)(**kw)
    init, _, objective = _rosenbrock(jnp.float32)

    @jax.jit
    def step(params, state):
        u, state = opt.update(jax.grad(objective)(params), state, params, some_extra_argument=1)
        return optax.apply_updates(params, u), state

    params, state = step(init, opt.init(init))
    with test_utils.log_compilations() as logs:
        step(params, state)
    assert not logs


@pytest.mark.parametrize("name,kw", ALIAS_CASES, ids=IDS)
def test_alias_inject_hyperparams(name, kw):
    """inject_hyperparams turns every numeric hyperparameter into a traced array: same updates and states."""
    f = getattr(onj.optax, name)
    opt, inj = f(**kw), optax.inject_hyperparams(f, static_args=STATIC.get(name, ()))(**kw)
    params = [-jnp.ones((2, 3)), jnp.ones((2, 5, 2))]
    grads = [jnp.ones((2, 3)), -jnp.ones((2, 5, 2))]
    u, s = jax.jit(opt.update)(grads, jax.jit(opt.init)(params), params)
    ui, si = jax.jit(inj.update)(grads, jax.jit(inj.init)(params), params)
    for a, b in zip(jax.tree.leaves(ui), jax.tree.leaves(u)):
        assert_close(a, b, rtol=1e-3, atol=1e-6)
    for a, b in zip(jax.tree.leaves(si.inner_state), jax.tree.leaves(s)):
        assert_close(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name,kw", ALIAS_CASES, ids=IDS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_alias_dtypes_and_multisteps(name, kw, dtype):
    opt = getattr(onj.optax, name)(**kw)
    params = jnp.array([1.0, 2.0], dtype=dtype)
    grads = 2 * params
    u, _ = jax.jit(opt.update)(grads, jax.jit(opt.init)(params), params)
    assert u.dtype == grads.dtype
    ms = optax.MultiSteps(opt, every_k_schedule=4)
    u, _ = jax.jit(ms.update)(grads, jax.jit(ms.init)(params), params)
    assert not bool(jnp.any(u != 0))


@pytest.mark.parametrize("name,kw", ALIAS_CASES[:6], ids=IDS[:6])
def test_alias_state_is_stable_under_cond(name, kw):
    opt = getattr(onj.optax, name)(**kw)
    init, _, objective = _parabola(jnp.float32)

    @jax.jit
    def step(params, state):
        g = jax.grad(objective)(params)
        cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
        u, state = jax.lax.cond(cond, lambda: opt.update(g, state, params), lambda: (params, state))
        return optax.apply_updates(params, u), state

    params, state = init, opt.init(init)
    for _ in range(2):
        params, state = step(params, state)
    assert params.dtype == jnp.float32


# ----------------------------------------------------------------------------------------------- argument names
def test_optax_argument_names():
    """optax's names (learning_rate, b1, b2, eps, weight_decay) give the same rule as optnorm's."""
    a = onj.optax.adamw(learning_rate=1e-2, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.1)
    b = onj.optax.adamw(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    c = onj.optax.adamw(1e-2, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.1)     # learning_rate positional, as optax
    p = {"w": jnp.arange(6.0).reshape(2, 3)}
    g = {"w": jnp.ones((2, 3))}
    ups = [tx.update(g, tx.init(p), p)[0]["w"] for tx in (a, b, c)]
    assert_close(ups[0], ups[1], rtol=0, atol=0)
    assert_close(ups[2], ups[1], rtol=0, atol=0)
    import inspect

    sig = inspect.signature(onj.optax.adamw)
    assert list(sig.parameters)[0] == "learning_rate" and {"b1", "b2", "mask", "lr", "betas"} <= set(sig.parameters)
    r = onj.optax.rmsprop(learning_rate=1e-2, decay=0.9)
    assert r.update.__optnorm_rule__.hyper["alpha"] == 0.9
    with pytest.raises(ValueError, match=r"betas\[0\]"):
        onj.optax.adamw(b1=1.5)


def test_mask_limits_weight_decay():
    """``mask`` (tree or callable) excludes leaves from decay, as optax.adamw(mask=...)."""
    p = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    g = jax.tree.map(jnp.zeros_like, p)
    mask = lambda params: {"w": True, "b": False}     # noqa: E731
    for m in (mask, {"w": True, "b": False}):
        tx = onj.optax.adamw(learning_rate=0.1, weight_decay=0.5, mask=m)
        u, _ = tx.update(g, tx.init(p), p)
        ref = optax.adamw(0.1, weight_decay=0.5, mask=m)
        ur, _ = ref.update(g, ref.init(p), p)
        assert_close(u["w"], ur["w"], rtol=1e-6) and bool(jnp.all(u["b"] == 0))
        assert bool(jnp.all(u["b"] == 0)) and bool(jnp.all(u["w"] < 0))


def test_lars_masks_match_optax():
    rng = np.random.default_rng(0)
    p = {"w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32), "b": jnp.asarray(rng.standard_normal(4), jnp.float32)}
    grads = [jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32), p) for _ in range(10)]
    wm = lambda t: {"w": True, "b": False}          # noqa: E731
    tm = {"w": False, "b": True}
    kw = dict(learning_rate=0.1, weight_decay=1e-2, weight_decay_mask=wm, trust_ratio_mask=tm)
    out = []
    for tx in (onj.optax.lars(**kw), optax.lars(**kw)):
        q, s = p, tx.init(p)
        for g in grads:
            u, s = tx.update(g, s, q)
            q = optax.apply_updates(q, u)
        out.append(q)
    for k in p:
        assert_close(out[0][k], out[1][k], rtol=2e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------- combinators
def test_partition_muon_for_matrices_adamw_for_the_rest():
    """The usual setup that failed: optax.partition with optnorm's Muon on 2-D leaves and AdamW elsewhere."""
    rng = np.random.default_rng(0)
    params = {"dense": {"kernel": jnp.asarray(rng.standard_normal((8, 6)), jnp.float32),
                        "bias": jnp.zeros(6, jnp.float32)}, "scale": jnp.ones(6, jnp.float32)}
    labels = jax.tree.map(lambda x: "muon" if x.ndim == 2 else "adamw", params)
    tx = optax.partition({"muon": onj.optax.muon(learning_rate=0.02, ns_dtype="float32"),
                          "adamw": onj.optax.adamw(learning_rate=1e-2)}, labels)
    state = tx.init(params)
    grads = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32), params)

    @jax.jit
    def step(p, s):
        u, s = tx.update(grads, s, p)
        return optax.apply_updates(p, u), s

    p1, s1 = step(params, state)
    mu, aw = oo.muon(lr=0.02, ns_dtype="float32"), oo.adamw(lr=1e-2)
    k, _ = mu.step(np.asarray(params["dense"]["kernel"]), np.asarray(grads["dense"]["kernel"]),
                   mu.init(np.asarray(params["dense"]["kernel"])))
    b, _ = aw.step(np.asarray(params["scale"]), np.asarray(grads["scale"]), aw.init(np.asarray(params["scale"])))
    assert_close(p1["dense"]["kernel"], k, rtol=1e-4, atol=1e-6)
    assert_close(p1["scale"], b, rtol=1e-6, atol=1e-7)
    step(p1, s1)


def test_masked_and_namedtuple_and_none_leaves():
    class Layer(NamedTuple):
        w: object
        b: object

    params = {"layer": Layer(jnp.ones((2, 3)), jnp.zeros(3)), "frozen": None}
    grads = {"layer": Layer(jnp.full((2, 3), 0.5), jnp.ones(3)), "frozen": None}
    tx = onj.optax.adamw(learning_rate=0.1)
    st = tx.init(params)
    u, st = jax.jit(tx.update)(grads, st, params)
    assert isinstance(u["layer"], Layer) and u["frozen"] is None
    masked = optax.masked(onj.optax.sgd(learning_rate=0.1), {"layer": Layer(True, False), "frozen": None})
    ms = masked.init(params)
    u, ms = jax.jit(masked.update)(grads, ms, params)
    assert_close(u["layer"].w, -0.05 * np.ones((2, 3)), rtol=1e-6)
    assert_close(u["layer"].b, np.ones(3), rtol=0)               # masked out: the gradient passes through


def test_map_params_reaches_the_state():
    """optax.tree.map_params maps the per-parameter state (the state's leaves have the params' structure)."""
    params = {"a": jnp.ones((2, 2)), "b": jnp.ones(3)}
    tx = onj.optax.adam(learning_rate=0.1)
    st = tx.init(params)
    st2 = optax.tree.map_params(tx, lambda v: v.astype(jnp.bfloat16), st)
    assert st2.leaves["a"].exp_avg.dtype == jnp.bfloat16 and st2.count.dtype == jnp.int32


def test_chained_with_optax_transforms_and_schedules():
    sched = oo.warmup_cosine(0.0, 1e-2, 3, 20)
    tx = optax.chain(optax.clip_by_global_norm(1.0), onj.optax.adamw(learning_rate=sched))
    x = jnp.ones(4, jnp.float32)
    st = tx.init(x)
    rule = oo.chain(oo.clip_by_global_norm(1.0), oo.adamw(lr=sched))
    ref, rs = np.ones(4, np.float32), rule.init(np.ones(4, np.float32))
    upd = jax.jit(tx.update)
    for k in range(12):
        g = jnp.full(4, 0.5 + k, jnp.float32)
        u, st = upd(g, st, x)
        x = optax.apply_updates(x, u)
        ref, rs = rule.step(ref, np.asarray(g), rs)
    assert_close(x, ref, rtol=1e-5, atol=1e-6)


def test_schedule_free_eval_params_and_errors():
    tx = onj.optax.schedule_free_adamw(learning_rate=0.1)
    p = {"w": jnp.ones(3, jnp.float32)}
    st = tx.init(p)
    for _ in range(5):
        u, st = jax.jit(tx.update)({"w": 2 * p["w"]}, st, p)
        p = optax.apply_updates(p, u)
    x = onj.optax.eval_params(tx, st, p)
    rule = oo.schedule_free_adamw(lr=0.1)
    q, s = np.ones(3, np.float32), rule.init(np.ones(3, np.float32))
    for _ in range(5):
        q, s = rule.step(q, 2 * q, s)
    assert_close(x["w"], rule.eval_params(q, s), rtol=1e-5)
    with pytest.raises(ValueError, match="tree structure"):
        tx.update({"w": p["w"], "v": p["w"]}, st, p)
    with pytest.raises(ValueError, match="params"):
        tx.update({"w": p["w"]}, st)
    muon = optax.inject_hyperparams(onj.optax.muon)(learning_rate=0.02)        # only what is passed is traced
    jax.jit(muon.init)({"w": jnp.ones((2, 2))})
    with pytest.raises(TypeError, match=r"ns_steps.*static_args"):
        jax.jit(optax.inject_hyperparams(onj.optax.muon)(learning_rate=0.02, ns_steps=5).init)({"w": jnp.ones((2, 2))})
