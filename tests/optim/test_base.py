"""Contract of every rule: trees, purity, in-place step_, schedules, NaN policy, argument errors, dtypes."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import optnorm.optim as oo
from optnorm._lib.compat import to_numpy
from optnorm.testing import assert_close

FB = oo.adamw(lr=1e-2)
ALL = {
    "sgd": lambda: oo.sgd(lr=0.1, momentum=0.9),
    "adam": lambda: oo.adam(lr=1e-2),
    "adamw": lambda: oo.adamw(lr=1e-2),
    "adamp": lambda: oo.adamp(lr=1e-2),
    "sgdp": lambda: oo.sgdp(lr=0.1, momentum=0.9),
    "fadam": lambda: oo.fadam(lr=1e-2),
    "lion": lambda: oo.lion(lr=1e-3),
    "muon": lambda: oo.muon(lr=0.02, ns_dtype=None, fallback=FB),
    "normuon": lambda: oo.normuon(ns_dtype=None, fallback=FB),
    "auon": lambda: oo.auon(fallback=FB),
    "hybrid_auon": lambda: oo.hybrid_auon(fallback=FB),
    "conda": lambda: oo.conda(fallback=FB),
    "swan": lambda: oo.swan(fallback=FB),
    "sinkgd": lambda: oo.sinkgd(fallback=FB),
    "dct_lowrank": lambda: oo.dct_lowrank(oo.adam(lr=1e-2), rank=2),
    "nap": lambda: oo.nap(oo.adam(lr=1e-2)),
}


def _tree(rng, dtype=np.float64):
    return {"w": rng.standard_normal((5, 4)).astype(dtype), "b": rng.standard_normal(4).astype(dtype),
            "more": [rng.standard_normal((3, 3)).astype(dtype)]}


@pytest.mark.parametrize("name", sorted(ALL))
def test_pure_step_and_in_place_step_agree(name, rng):
    rule = ALL[name]()
    p = _tree(rng)
    g = _tree(rng)
    p_copy = {"w": p["w"].copy(), "b": p["b"].copy(), "more": [p["more"][0].copy()]}
    state = rule.init(p)
    new_p, new_state = rule.step(p, g, state)
    assert np.array_equal(p["w"], p_copy["w"]) and int(state.count) == 0       # inputs untouched
    assert isinstance(new_p, dict) and isinstance(new_p["more"], list)
    assert int(new_state.count) == 1
    st2 = rule.step_(p, g, state)
    assert st2 is state and int(state.count) == 1
    for k in ("w", "b"):
        assert_close(p[k], new_p[k], rtol=1e-12, atol=1e-14)
    assert_close(p["more"][0], new_p["more"][0], rtol=1e-12, atol=1e-14)


CORE = {"adamw", "sgd", "muon", "conda", "swan", "dct_lowrank"}


@pytest.mark.parametrize("name", [n if n in CORE else pytest.param(n, marks=pytest.mark.slow) for n in sorted(ALL)])
def test_every_rule_runs_on_every_backend(xp, name, rng):
    rule = ALL[name]()
    p = {k: xp.asarray(v) for k, v in {"w": rng.standard_normal((5, 4)), "b": rng.standard_normal(4)}.items()}
    g = {k: xp.asarray(v) for k, v in {"w": rng.standard_normal((5, 4)), "b": rng.standard_normal(4)}.items()}
    st_ = rule.init(p)
    p2, st_ = rule.step(p, g, st_)
    ref, rst = rule.step({k: to_numpy(v) for k, v in p.items()}, {k: to_numpy(v) for k, v in g.items()},
                         rule.init({k: to_numpy(v) for k, v in p.items()}))
    for k in p:
        assert type(p2[k]) is type(p[k])
        assert_close(p2[k], ref[k], rtol=1e-9, atol=1e-12, xp=xp)


@pytest.mark.parametrize("name", ["adamw", "sgd", "lion", "muon", "fadam"])
def test_float16_and_bfloat16_params_keep_dtype(name):
    torch = pytest.importorskip("torch")
    rule = ALL[name]()
    for dt in (torch.float16, torch.bfloat16):
        p = {"w": torch.randn(5, 4).to(dt), "b": torch.randn(4).to(dt)}
        g = {"w": torch.randn(5, 4).to(dt), "b": torch.randn(4).to(dt)}
        st_ = rule.init(p)
        assert st_.leaves[1][0].dtype == torch.float32        # state accumulates in float32
        p2, _ = rule.step(p, g, st_)
        assert p2["w"].dtype == dt and bool(torch.isfinite(p2["w"].float()).all())


def test_lr_schedule_is_called_with_steps_taken():
    seen = []
    rule = oo.sgd(lr=lambda t: seen.append(t) or 0.1 * (t + 1))
    p, st_ = np.zeros(2), None
    st_ = rule.init(p)
    for _ in range(3):
        p, st_ = rule.step(p, np.ones(2), st_)
    assert seen == [0, 1, 2]
    assert_close(p, -np.full(2, 0.1 + 0.2 + 0.3))
    bad = oo.sgd(lr=lambda t: -1.0)
    with pytest.raises(ValueError, match="lr"):
        bad.step(np.zeros(2), np.ones(2), bad.init(np.zeros(2)))


@pytest.mark.parametrize("name", sorted(ALL))
def test_nan_policy(name, rng):
    rule = ALL[name]()
    p = _tree(rng)
    g = _tree(rng)
    g["b"][1] = np.nan
    state = rule.init(p)
    before = [np.array(a, copy=True) for leaf in state.leaves for a in leaf if isinstance(a, np.ndarray)]
    with pytest.raises(ValueError, match=r"grads\['b'\] contains NaN"):
        rule.step(p, g, state)
    with pytest.raises(ValueError, match="NaN"):
        rule.step_(p, g, state)
    after = [a for leaf in state.leaves for a in leaf if isinstance(a, np.ndarray)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after)) and int(state.count) == 0
    skip = rule.factory(**{**rule.hyper, "nan_policy": "skip"}) if "inner" not in rule.hyper else None
    if skip is not None:
        p2, st2 = skip.step(p, g, skip.init(p))
        assert p2 is p and int(st2.count) == 0


def test_grads_must_match_params(rng):
    rule = oo.adamw()
    p = _tree(rng)
    st_ = rule.init(p)
    with pytest.raises(ValueError, match="structure"):
        rule.step(p, {"w": p["w"], "b": p["b"]}, st_)
    g = _tree(rng)
    g["w"] = g["w"][:, :3]
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape"):
        rule.step(p, g, st_)
    g = _tree(rng)
    g["b"] = g["b"].astype(np.float32)
    with pytest.raises(TypeError, match=r"grads\['b'\] has dtype"):
        rule.step(p, g, st_)
    with pytest.raises(ValueError, match="state"):
        rule.step(p, _tree(rng), oo.adamw().init([np.ones(3)]))
    with pytest.raises(TypeError, match=r"params\['w'\] must have a real floating dtype"):
        rule.init({"w": np.ones(3, dtype=np.int64)})
    with pytest.raises(TypeError, match="params"):
        rule.init({"w": "not an array"})
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="mixed"):
        rule.step(np.ones(3), torch.ones(3, dtype=torch.float64), rule.init(np.ones(3)))


@pytest.mark.parametrize("factory,kw,match", [
    (oo.adam, dict(lr=-1.0), "lr"),
    (oo.adam, dict(eps=-1e-8), "eps"),
    (oo.adamw, dict(betas=(1.0, 0.9)), r"betas\[0\]"),
    (oo.adamw, dict(betas=(0.9, -0.1)), r"betas\[1\]"),
    (oo.adamw, dict(betas=0.9), "betas"),
    (oo.adam, dict(weight_decay=-1), "weight_decay"),
    (oo.sgd, dict(nesterov=True), "nesterov"),
    (oo.sgd, dict(momentum=-0.5), "momentum"),
    (oo.lion, dict(betas=(0.9, 1.5)), r"betas\[1\]"),
    (oo.muon, dict(momentum=1.0), "momentum"),
    (oo.muon, dict(adjust_lr_fn="bogus"), "adjust_lr"),
    (oo.muon, dict(ns_steps=-1), "ns_steps"),
    (oo.muon, dict(fallback="adamw"), "fallback"),
    (oo.normuon, dict(scale_mode="x"), "scale_mode"),
    (oo.fadam, dict(adaptive_eps="mean"), "adaptive_eps"),
    (oo.adahessian, dict(hessian_power=2.0), "hessian_power"),
    (oo.conda, dict(update_proj_gap=0), "update_proj_gap"),
    (oo.swan, dict(whitening="svd"), "whitening"),
    (oo.sinkgd, dict(n_iter=0), "n_iter"),
    (oo.adam, dict(nan_policy="warn"), "nan_policy"),
])
def test_bad_hyperparameters_name_the_argument(factory, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        factory(**kw)


def test_matrix_rule_without_fallback_names_the_parameter():
    with pytest.raises(ValueError, match=r"params\['b'\] has shape \(4,\)"):
        oo.muon().init({"w": np.ones((3, 4)), "b": np.ones(4)})
    with pytest.raises(ValueError, match=r"params\[0\]"):
        oo.swan().init([np.ones((2, 2, 2))])


def test_step_in_place_rejects_jax():
    jnp = pytest.importorskip("jax.numpy")
    rule = oo.adamw()
    p = jnp.ones(3)
    with pytest.raises(TypeError, match="immutable"):
        rule.step_(p, jnp.ones(3), rule.init(p))


def test_family_factories_are_public_functions():
    """optnorm.optim.sgd / adam / muon are the factories (the same-named modules stay importable)."""
    import importlib

    adam_mod = importlib.import_module("optnorm.optim.adam")
    assert callable(oo.adam) and isinstance(oo.adam(lr=0.1), oo.Rule)
    assert adam_mod.AdamLeaf is oo.adam(lr=0.1).init(np.zeros(2)).leaves[0].__class__ and "Kingma" in oo.adam.__doc__
    assert {"sgd", "adam", "muon", "adamw", "lion", "newton_schulz_orthogonalize"} <= set(oo.__all__)


@given(scale=st.floats(min_value=-30, max_value=30), lr=st.floats(min_value=1e-6, max_value=1.0))
def test_adam_step_is_bounded_for_extreme_gradients(scale, lr):
    """Adam's first step is -lr * sign(g) (up to eps) for any representable gradient: never NaN or above lr.

    Where g^2 overflows float32 (|g| > 1.8e19) v becomes inf and the step 0, exactly as in torch.
    """
    g = np.array([10.0 ** scale, -(10.0 ** scale), 0.0], np.float32)
    rule = oo.adam(lr=lr)
    with np.errstate(over="ignore", under="ignore"):
        p, _ = rule.step(np.zeros(3, np.float32), g, rule.init(np.zeros(3, np.float32)))
    assert np.all(np.isfinite(p))
    assert np.all(np.abs(p) <= lr * (1 + 1e-5)) and p[2] == 0
    if 1e-3 < abs(float(g[0])) < 1e18:
        assert_close(p[:2], [-lr, lr], rtol=1e-4)


@given(scale=st.floats(min_value=-20, max_value=20))
def test_newton_schulz_is_scale_invariant(scale):
    G = np.random.default_rng(0).standard_normal((6, 4))
    a = oo.newton_schulz_orthogonalize(G)
    b = oo.newton_schulz_orthogonalize(G * 10.0 ** scale)
    if 10.0 ** scale * np.linalg.norm(G) > 1e-6:
        assert_close(b, a, rtol=1e-6, atol=1e-9)
    assert np.all(np.isfinite(b))


def test_newton_schulz_bf16_torch_and_errors():
    torch = pytest.importorskip("torch")
    G = torch.randn(16, 8)
    O = oo.newton_schulz_orthogonalize(G, dtype="bfloat16")
    assert O.dtype == torch.float32
    ref = oo.newton_schulz_orthogonalize(G.double())
    assert float((O.double() - ref).abs().max()) < 0.1
    with pytest.raises(ValueError, match="dtype"):
        oo.newton_schulz_orthogonalize(np.ones((3, 2)), dtype="bfloat16")
    with pytest.raises(ValueError, match="G"):
        oo.newton_schulz_orthogonalize(np.ones(3))
    with pytest.raises(TypeError, match="G"):
        oo.newton_schulz_orthogonalize(np.ones((3, 3), dtype=np.int32))


def test_state_from_pure_step_feeds_step_():
    rule = oo.adamw(lr=0.1)
    p = np.ones(3)
    p2, st2 = rule.step(p, np.ones(3), rule.init(p))
    assert getattr(st2.count, "shape", None) == ()
    p2 = np.array(p2)
    rule.step_(p2, np.ones(3), st2)
    assert int(st2.count) == 2


@pytest.mark.parametrize("module", ["base", "transforms", "sgd", "adam", "sign", "muon", "matrix", "stateless",
                                    "second_order", "hutchinson", "lowrank", "scaling"])
def test_docstring_examples_run(module):
    import doctest
    import importlib
    import sys

    importlib.import_module(f"optnorm.optim.{module}")
    mod = sys.modules[f"optnorm.optim.{module}"]
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS, verbose=False)
    assert res.failed == 0 and res.attempted > 0


# ----------------------------------------------------------------------------------------------- hardening (#13)
ZERO_D = {"sgd": lambda: oo.sgd(lr=0.1, momentum=0.9), "adam": lambda: oo.adam(lr=0.1), "lion": lambda: oo.lion(lr=0.1),
          "fadam": lambda: oo.fadam(lr=0.1), "muon": lambda: oo.muon(fallback=oo.adamw(lr=0.1)),
          "nap": lambda: oo.nap(oo.adam(lr=0.1)), "adahessian": lambda: oo.adahessian(lr=0.1)}


@pytest.mark.parametrize("name", sorted(ZERO_D))
def test_zero_d_numpy_parameter_stays_an_array(name):
    """A 0-d NumPy parameter used to come back as a NumPy scalar, and the next step raised."""
    rule = ZERO_D[name]()
    kw = {"hvp": lambda v: 2.0 * v} if rule.needs_hvp else {}
    p = np.array(1.0)
    st_ = rule.init(p)
    for _ in range(2):
        p, st_ = rule.step(p, np.array(0.5), st_, **kw)
        assert type(p) is np.ndarray and p.shape == ()
        assert all(type(a) is np.ndarray for leaf in st_.leaves for a in leaf if isinstance(a, np.generic | np.ndarray))
    rule.step_(p, np.array(0.5), st_, **kw)          # in place into the 0-d buffers of the pure step's state
    assert int(st_.count) == 3 and np.isfinite(p) and float(p) < 1.0


def test_fadam_all_zero_gradient_leaf_is_finite():
    """FAdam's eps_t = eps min(1, RMS(g)) is 0 for an all-zero gradient and F = g^2 = 0 on the first step: 0/0."""
    p = {"w": np.ones((2, 3)), "b": np.full(3, 2.0)}
    g = {"w": np.full((2, 3), 0.5), "b": np.zeros(3)}
    for adaptive_eps in ("min", "max"):
        rule = oo.fadam(lr=0.1, adaptive_eps=adaptive_eps)
        q, st_ = p, rule.init(p)
        for _ in range(3):
            q, st_ = rule.step(q, g, st_)
        assert np.all(np.isfinite(q["b"])) and np.all(np.isfinite(st_.leaves[0].momentum))
        assert np.all(q["b"] < 2.0) and np.all(q["b"] > 1.5)        # only the Fisher-preconditioned decay acts
        alone, sa = {"w": p["w"]}, rule.init({"w": p["w"]})        # leaves are independent: w as if b were absent
        for _ in range(3):
            alone, sa = rule.step(alone, {"w": g["w"]}, sa)
        assert_close(q["w"], alone["w"], rtol=1e-14)
    tiny = {"w": np.full(3, 1e-30, np.float32)}                  # eps_t underflows in float32: still finite
    rule = oo.fadam(lr=0.1)
    q, st_ = rule.step({"w": np.ones(3, np.float32)}, tiny, rule.init({"w": np.ones(3, np.float32)}))
    assert np.all(np.isfinite(q["w"]))


def test_state_of_another_rule_is_a_clear_error(rng):
    p = _tree(rng)
    with pytest.raises(TypeError, match=r"state\.leaves\[0\] is SGDLeaf, but adam keeps AdamLeaf for params\['b'\]"):
        oo.adam().step(p, _tree(rng), oo.sgd().init(p))
    with pytest.raises(TypeError, match="state"):
        oo.muon(fallback=oo.sgd()).step_(p, _tree(rng), oo.muon(fallback=oo.adamw()).init(p))


@pytest.mark.parametrize("factory,kw,match", [
    (oo.adam, dict(lr=math.inf), "lr"),
    (oo.adamw, dict(lr=math.nan), "lr"),
    (oo.adam, dict(eps=math.inf), "eps"),
    (oo.sgd, dict(lr=-0.1), "lr"),
    (oo.sgd, dict(weight_decay=math.inf), "weight_decay"),
    (oo.adamw, dict(betas=(0.9, 1.0)), r"betas\[1\]"),
    (oo.adamw, dict(betas=(0.9, 0.99, 0.9)), "betas"),
    (oo.lion, dict(betas=(-0.1, 0.99)), r"betas\[0\]"),
    (oo.fadam, dict(eps=0.0), "eps"),
    (oo.adahessian, dict(seed="abc"), "seed"),
    (oo.adahessian, dict(seed=-1), "seed"),
    (oo.nap, dict(inner="adam"), "inner"),
    (oo.conda, dict(fallback=3), "fallback"),
])
def test_hyperparameters_are_validated_by_their_roles(factory, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        factory(**kw)


def test_schedule_values_are_checked():
    for bad in (-1.0, math.inf, math.nan):
        rule = oo.adamw(lr=lambda t, bad=bad: bad)
        with pytest.raises(ValueError, match="lr schedule returned"):
            rule.step(np.zeros(2), np.ones(2), rule.init(np.zeros(2)))


def test_schedule_is_evaluated_once_per_step():
    calls = []
    inner = oo.adam(lr=lambda t: calls.append(t) or 0.1)
    rule = oo.dct_lowrank(inner, rank=1, weight_decay=0.1)         # inner and wrapper share the schedule
    p = [np.ones((4, 3)), np.ones(3)]
    st_ = rule.init(p)
    for _ in range(2):
        p, st_ = rule.step(p, [np.ones((4, 3)), np.ones(3)], st_)
    assert calls == [0, 1]


def test_rules_are_chains_of_transforms():
    """Adam without decay is chain(scale_by_adam, scale_by_lr): the same trajectory from the shared pieces."""
    from optnorm.optim import transforms as T
    from optnorm.optim.adam import AdamLeaf
    from optnorm.optim.base import Rule, chain

    mine = Rule(lr=0.1, transform=chain(T.scale_by_adam(0.9, 0.999, 1e-8), T.scale_by_lr()), leaf=AdamLeaf)
    ref = oo.adam(lr=0.1)
    p = q = np.linspace(-1, 1, 5)
    s1, s2 = mine.init(p), ref.init(q)
    for k in range(4):
        g = np.sin(p * (k + 1))
        p, s1 = mine.step(p, g, s1)
        q, s2 = ref.step(q, g, s2)
    assert_close(p, q, rtol=0, atol=0)
