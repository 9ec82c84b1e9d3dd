"""Gradient transforms, chain, accumulate, ema, lookahead and the schedules (optnorm/optim/compose.py,
schedules.py) against optax and torch, closed forms, and the bad-input contract of issue #17."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

import optnorm.optim as oo
from optnorm.testing import assert_close

optax = pytest.importorskip("optax")
jax = pytest.importorskip("jax")
jnp = jax.numpy


def _tree(rng, scale=1.0):
    return {"w": (scale * rng.standard_normal((4, 3))).astype(np.float32),
            "b": (scale * rng.standard_normal(3)).astype(np.float32)}


def _optax_run(tx, p0, grads):
    ps = {k: jnp.asarray(v) for k, v in p0.items()}
    st = tx.init(ps)
    for g in grads:
        u, st = tx.update({k: jnp.asarray(v) for k, v in g.items()}, st, ps)
        ps = optax.apply_updates(ps, u)
    return ps, st


def _run(rule, p0, grads, inplace=False):
    ps = {k: v.copy() for k, v in p0.items()}
    st = rule.init(ps)
    for g in grads:
        if inplace:
            rule.step_(ps, g, st)
        else:
            ps, st = rule.step(ps, g, st)
    return ps, st


# ----------------------------------------------------------------------------------------------- gradient transforms
@pytest.mark.parametrize("norm", [0.5, 3.0, 100.0])
def test_clip_by_global_norm_matches_optax_and_torch(rng, norm):
    import torch

    g = _tree(rng, 2.0)
    got = oo.clip_by_global_norm(norm)(g)
    ref, _ = optax.clip_by_global_norm(norm).update({k: jnp.asarray(v) for k, v in g.items()}, None)
    for k in g:
        assert_close(got[k], np.asarray(ref[k]), rtol=1e-6)
    tg = {k: torch.nn.Parameter(torch.zeros(v.shape)) for k, v in g.items()}
    for k, v in tg.items():
        v.grad = torch.from_numpy(g[k].copy())
    torch.nn.utils.clip_grad_norm_(list(tg.values()), norm)
    got_t = oo.clip_by_global_norm(norm, convention="torch")(g)
    for k in g:
        assert_close(got_t[k], tg[k].grad.numpy(), rtol=1e-6)
    n = math.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in g.values()))     # float64 closed form
    out = oo.clip_by_global_norm(norm)(g)
    m = math.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in out.values()))
    assert m == pytest.approx(min(n, norm), rel=1e-6)


def test_clip_by_value_and_add_noise(rng, xp):
    g = rng.standard_normal(50)
    assert_close(oo.clip_by_value(0.3)(xp.asarray(g)), np.clip(g, -0.3, 0.3), xp=xp)
    assert_close(oo.clip_by_value(0.3, min_value=-0.1)(xp.asarray(g)), np.clip(g, -0.1, 0.3), xp=xp)
    noise = oo.add_noise(0.04, 0.55, seed=3)
    z0 = noise(xp.asarray(np.zeros(20000)), step=0)
    z9 = noise(xp.asarray(np.zeros(20000)), step=9)
    assert float(np.std(np.asarray(z0))) == pytest.approx(0.2, rel=0.05)             # sqrt(eta / 1^gamma)
    assert float(np.std(np.asarray(z9))) == pytest.approx(0.2 / 10 ** 0.275, rel=0.05)
    assert_close(noise(xp.asarray(np.zeros(5)), step=2), noise(xp.asarray(np.zeros(5)), step=2), rtol=0, xp=xp)


def test_chain_matches_optax_chain_and_keeps_the_fused_kernel(rng):
    p0 = _tree(rng)
    grads = [_tree(rng, 5.0) for _ in range(12)]
    ref, _ = _optax_run(optax.chain(optax.clip_by_global_norm(1.0), optax.clip(0.4), optax.adam(1e-2)), p0, grads)
    rule = oo.chain(oo.clip_by_global_norm(1.0), oo.clip_by_value(0.4), oo.adam(lr=1e-2, eps_mode="hf"))
    got, st = _run(rule, p0, grads)
    inpl, st2 = _run(rule, p0, grads, inplace=True)
    for k in p0:
        assert_close(got[k], np.asarray(ref[k]), rtol=2e-5, atol=1e-6)
        assert_close(inpl[k], got[k], rtol=1e-6, atol=1e-7)
    assert int(st2.count) == 12 and type(st.leaves[0]).__name__ == "AdamLeaf"
    assert repr(rule).startswith("chain(clip_by_global_norm(")
    assert repr(pickle.loads(pickle.dumps(rule))) == repr(rule)


def test_chain_of_leaf_transforms():
    from optnorm.optim import transforms as T

    rule = oo.chain(oo.clip_by_global_norm(10.0), T.scale_by_adam(0.9, 0.999, 1e-8), T.scale_by_lr(), lr=0.1)
    ref = oo.adam(lr=0.1)
    p = q = np.linspace(-1, 1, 5)
    s1, s2 = rule.init(p), ref.init(q)
    for k in range(4):
        g = np.sin(p * (k + 1))
        p, s1 = rule.step(p, g, s1)
        q, s2 = ref.step(q, g, s2)
    assert_close(p, q, rtol=1e-15)
    with pytest.raises(ValueError, match="lr="):
        oo.chain(T.scale_by_lr())
    with pytest.raises(TypeError, match=r"parts\[1\]"):
        oo.chain(oo.sgd(), oo.clip_by_value(1.0))
    with pytest.raises(TypeError, match=r"parts\[0\]"):
        oo.chain("adam")


def test_accumulate_matches_optax_multisteps(rng):
    p0 = _tree(rng)
    grads = [_tree(rng) for _ in range(12)]
    ref, _ = _optax_run(optax.MultiSteps(optax.adam(1e-2), every_k_schedule=3), p0, grads)
    got, st = _run(oo.accumulate(oo.adam(lr=1e-2, eps_mode="hf"), every=3), p0, grads)
    for k in p0:
        assert_close(got[k], np.asarray(ref[k]), rtol=2e-5, atol=1e-6)
    assert type(st.leaves[0]).__name__ == "AccumulateLeaf" and float(np.abs(st.leaves[0].acc).max()) == 0


def test_accumulate_counts_inner_steps_for_schedules():
    seen = []
    rule = oo.accumulate(oo.sgd(lr=lambda t: seen.append(t) or 0.1), every=2)
    p, st = np.zeros(1), rule.init(np.zeros(1))
    for _ in range(6):
        p, st = rule.step(p, np.ones(1), st)
    assert seen == [0, 1, 2]


def test_lookahead_matches_optax(rng):
    p0 = _tree(rng)
    grads = [_tree(rng) for _ in range(10)]
    tx = optax.lookahead(optax.sgd(0.1, momentum=0.9), 3, 0.5)
    pp = optax.LookaheadParams.init_synced({k: jnp.asarray(v) for k, v in p0.items()})
    st = tx.init(pp)
    for g in grads:
        u, st = tx.update({k: jnp.asarray(v) for k, v in g.items()}, st, pp)
        pp = optax.apply_updates(pp, u)
    rule = oo.lookahead(oo.sgd(lr=0.1, momentum=0.9), 3, 0.5)
    got, s = _run(rule, p0, grads)
    slow = rule.eval_params(got, s)
    for k in p0:
        assert_close(got[k], np.asarray(pp.fast[k]), rtol=2e-5, atol=1e-6)
        assert_close(slow[k], np.asarray(pp.slow[k]), rtol=2e-5, atol=1e-6)


def test_lookahead_and_ema_limits(rng):
    p0 = _tree(rng)
    grads = [_tree(rng) for _ in range(6)]
    fast, _ = _run(oo.adamw(lr=1e-2), p0, grads)
    same, _ = _run(oo.lookahead(oo.adamw(lr=1e-2), 1, 1.0), p0, grads)        # k = 1, alpha = 1: the fast rule
    for k in p0:
        assert_close(same[k], fast[k], rtol=1e-6)
    rule = oo.lookahead(oo.adamw(lr=1e-2), 2, 0.0)                            # alpha = 0: slow stays initial
    got, s = _run(rule, p0, grads)
    for k in p0:
        assert_close(rule.eval_params(got, s)[k], p0[k], rtol=0)
    rule = oo.ema(oo.sgd(lr=0.1), decay=0.9)
    got, s = _run(rule, p0, grads)
    ref = {k: v.astype(np.float64) for k, v in p0.items()}
    q = {k: v.copy() for k, v in p0.items()}
    for g in grads:                                                           # closed-form EMA of the SGD iterates
        q = {k: q[k] - np.float32(0.1) * g[k] for k in q}
        ref = {k: 0.9 * ref[k] + 0.1 * q[k] for k in q}
    for k in p0:
        assert_close(rule.eval_params(got, s)[k], ref[k], rtol=1e-5, atol=1e-6, check_dtype=False)


def test_wrappers_under_jit():
    import optnorm.jax as onj

    for tx, rule in ((onj.optax.accumulate(oo.adam(lr=1e-2), every=2), oo.accumulate(oo.adam(lr=1e-2), every=2)),
                     (onj.optax.lookahead(oo.sgd(lr=0.1), 2, 0.5), oo.lookahead(oo.sgd(lr=0.1), 2, 0.5)),
                     (onj.optax.ema(oo.sgd(lr=0.1), decay=0.5), oo.ema(oo.sgd(lr=0.1), decay=0.5))):
        x = jnp.ones(3, jnp.float32)
        st = tx.init(x)
        q, s = np.ones(3, np.float32), rule.init(np.ones(3, np.float32))
        upd = jax.jit(tx.update)
        for k in range(5):
            g = np.full(3, 0.5 + k, np.float32)
            u, st = upd(jnp.asarray(g), st, x)
            x = optax.apply_updates(x, u)
            q, s = rule.step(q, g, s)
        assert_close(x, q, rtol=1e-6)
        assert_close(onj.optax.eval_params(tx, st, x), rule.eval_params(q, s), rtol=1e-6)


# ----------------------------------------------------------------------------------------------- schedules
SCHEDULES = [
    (lambda: oo.constant(0.3), lambda: optax.constant_schedule(0.3)),
    (lambda: oo.linear(1.0, 0.1, 50, 10), lambda: optax.linear_schedule(1.0, 0.1, 50, 10)),
    (lambda: oo.linear(1.0, 0.1, 50, 10, power=2.0), lambda: optax.polynomial_schedule(1.0, 0.1, 2.0, 50, 10)),
    (lambda: oo.cosine_decay(0.5, 70, 0.1, exponent=1.5), lambda: optax.cosine_decay_schedule(0.5, 70, 0.1, 1.5)),
    (lambda: oo.warmup_cosine(0.0, 1.0, 10, 100, 0.05), lambda: optax.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100, 0.05)),
    (lambda: oo.warmup_cosine(0.1, 1.0, 0, 100), lambda: optax.warmup_cosine_decay_schedule(0.1, 1.0, 0, 100)),
    (lambda: oo.one_cycle(97, 2.0), lambda: optax.cosine_onecycle_schedule(97, 2.0)),
    (lambda: oo.one_cycle(97, 2.0, anneal="linear", pct_start=0.25),
     lambda: optax.linear_onecycle_schedule(97, 2.0, pct_start=0.25)),
    (lambda: oo.exponential_decay(1.0, 7, 0.5, 3, staircase=True, end_value=0.05),
     lambda: optax.exponential_decay(1.0, 7, 0.5, 3, True, 0.05)),
    (lambda: oo.exponential_decay(1.0, 7, 1.5, 3, end_value=4.0), lambda: optax.exponential_decay(1.0, 7, 1.5, 3, False, 4.0)),
    (lambda: oo.join([oo.constant(1.0), oo.linear(1.0, 0.0, 10), oo.cosine_decay(0.5, 20)], [5, 15]),
     lambda: optax.join_schedules([optax.constant_schedule(1.0), optax.linear_schedule(1.0, 0.0, 10),
                                   optax.cosine_decay_schedule(0.5, 20)], [5, 15])),
]


@pytest.mark.parametrize("i", range(len(SCHEDULES)))
def test_schedules_match_optax(i, xp):
    mine, theirs = SCHEDULES[i][0](), SCHEDULES[i][1]()
    steps = list(range(0, 130))
    ref = np.array([float(theirs(k)) for k in steps])                    # optax: float32
    assert_close(np.array([mine(k) for k in steps]), ref, rtol=3e-7, atol=3e-7)
    got = [mine(xp.asarray(k)) for k in (0, 9, 10, 11, 50, 129)]           # 0-d arrays of every library
    assert_close(np.array([float(np.asarray(v)) for v in got]), ref[[0, 9, 10, 11, 50, 129]], rtol=3e-7, atol=3e-7)
    jitted = jax.jit(mine)
    assert_close(np.array([float(jitted(jnp.asarray(k))) for k in (0, 10, 129)]), ref[[0, 10, 129]],
                 rtol=3e-7, atol=3e-7)
    assert repr(pickle.loads(pickle.dumps(mine))) == repr(mine)


def test_schedule_closed_forms():
    s = oo.warmup_cosine(0.0, 1.0, 10, 110, 0.1)
    assert s(5) == pytest.approx(0.5) and s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.1 + 0.9 * 0.5) and s(500) == pytest.approx(0.1)
    assert oo.exponential_decay(2.0, 4, 0.5)(8) == pytest.approx(0.5)
    o = oo.one_cycle(100, 1.0)
    assert o(0) == pytest.approx(0.04) and o(30) == pytest.approx(1.0) and o(100) == pytest.approx(4e-6)


def test_schedules_drive_rules_under_jit():
    """A schedule as lr of a rule run through the optax wrapper under jit: the count is traced."""
    import optnorm.jax as onj

    s = oo.cosine_decay(0.1, 10)
    tx = onj.optax.sgd(learning_rate=s)
    x = jnp.zeros(2, jnp.float32)
    st = tx.init(x)
    upd = jax.jit(tx.update)
    for _ in range(4):
        u, st = upd(jnp.ones(2, jnp.float32), st, x)
        x = optax.apply_updates(x, u)
    assert float(x[0]) == pytest.approx(-sum(s(k) for k in range(4)), rel=1e-6)


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call,match", [
    (lambda: oo.rmsprop(alpha=1.0), "alpha"),
    (lambda: oo.rmsprop(eps=-1.0), "eps"),
    (lambda: oo.adagrad(lr=-0.1), "lr"),
    (lambda: oo.adagrad(lr_decay=-1.0), "lr_decay"),
    (lambda: oo.adadelta(rho=1.5), "rho"),
    (lambda: oo.adamax(betas=(0.9, 1.0)), r"betas\[1\]"),
    (lambda: oo.nadam(momentum_decay=-1.0), "momentum_decay"),
    (lambda: oo.radam(betas=(-0.1, 0.9)), r"betas\[0\]"),
    (lambda: oo.radam(weight_decay=-1.0), "weight_decay"),
    (lambda: oo.adafactor(beta2_decay=0.5), "beta2_decay"),
    (lambda: oo.adafactor(d=0.5), "d"),
    (lambda: oo.adafactor(convention="keras"), "convention"),
    (lambda: oo.lamb(eps=-1.0), "eps"),
    (lambda: oo.lars(momentum=1.0), "momentum"),
    (lambda: oo.lars(weight_decay_mask=3), "weight_decay_mask"),
    (lambda: oo.schedule_free_adamw(warmup_steps=-1), "warmup_steps"),
    (lambda: oo.schedule_free_sgd(momentum=1.0), "momentum"),
    (lambda: oo.soap(precondition_frequency=0), "precondition_frequency"),
    (lambda: oo.soap(betas=(0.9, 1.0)), r"betas\[1\]"),
    (lambda: oo.clip_by_global_norm(0.0), "max_norm"),
    (lambda: oo.clip_by_global_norm(-1.0), "max_norm"),
    (lambda: oo.clip_by_value(0.0), "max_value"),
    (lambda: oo.clip_by_value(1.0, min_value=2.0), "min_value"),
    (lambda: oo.add_noise(-0.1), "eta"),
    (lambda: oo.accumulate(oo.sgd(), every=0), "every"),
    (lambda: oo.accumulate("sgd", every=2), "inner"),
    (lambda: oo.lookahead(oo.sgd(), 0), "sync_period"),
    (lambda: oo.lookahead(oo.sgd(), 5, 1.5), "slow_step_size"),
    (lambda: oo.ema(oo.sgd(), decay=1.0), "decay"),
    (lambda: oo.linear(1.0, 0.0, 0), "transition_steps"),
    (lambda: oo.cosine_decay(1.0, -5), "decay_steps"),
    (lambda: oo.warmup_cosine(0.0, 1.0, 10, 10), "decay_steps"),
    (lambda: oo.warmup_cosine(0.0, 1.0, -1, 10), "warmup_steps"),
    (lambda: oo.one_cycle(0, 1.0), "transition_steps"),
    (lambda: oo.exponential_decay(1.0, 0, 0.5), "transition_steps"),
    (lambda: oo.exponential_decay(1.0, 10, 0.0), "decay_rate"),
    (lambda: oo.join([oo.constant(1.0)], [5]), "boundaries"),
    (lambda: oo.join([oo.constant(1.0), oo.constant(0.5)], [-1]), "boundaries"),
    (lambda: oo.join([], []), "schedules"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_mismatched_trees_and_foreign_states(rng):
    rule = oo.rmsprop(momentum=0.9)
    p = _tree(rng)
    st = rule.init(p)
    with pytest.raises(ValueError, match="structure"):
        rule.step(p, {"w": p["w"]}, st)
    with pytest.raises(TypeError, match=r"state\.leaves\[0\] is AdamLeaf, but rmsprop keeps RMSpropLeaf"):
        rule.step(p, _tree(rng), oo.adam().init(p))
    with pytest.raises(TypeError, match="state"):
        oo.accumulate(oo.sgd(), every=2).step(p, _tree(rng), oo.sgd().init(p))
    with pytest.raises(ValueError, match="state"):
        oo.schedule_free_adamw().eval_params(p, oo.schedule_free_adamw().init([p["w"]]))
    with pytest.raises(TypeError, match="step"):
        oo.constant(1.0)("3")
