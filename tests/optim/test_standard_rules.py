"""The standard rules of issue #17 against their peers over 200 steps (float32 ~1e-6, float64 ~1e-12).

torch.optim: rmsprop, adagrad, adadelta, adamax, nadam, radam, adafactor (torch convention);
optax: adafactor (optax convention), lamb, lars, schedule-free AdamW/SGD (optax.contrib);
the reference SOAP (nikhilvyas/SOAP a1e5535, ported to NumPy below as an independent float64 oracle, and
run through torch when its source is on the path); facebookresearch/schedule_free when installed.
Every rule runs through ``step`` on every backend of the ``xp`` fixture and through ``step_`` (the fused
Numba kernel on the numba path, the rule's own chain on the generic one).
"""
from __future__ import annotations

import numpy as np
import pytest

import optnorm.optim as oo
from optnorm.testing import assert_close

from ._problems import Quadratic

torch = pytest.importorskip("torch")

SHAPES = [(7, 5), (11,), (3, 2, 4)]
N = 200


def _torch_run(cls, kw, prob, n=N):
    ps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in prob.p0]
    opt = cls(ps, **kw)
    for k in range(n):
        gs = prob.grads([p.detach() for p in ps], k, torch.from_numpy)
        for p, g in zip(ps, gs):
            p.grad = g
        opt.step()
    return [p.detach().numpy() for p in ps]


def _run(rule, prob, xp=None, n=N, inplace=False):
    conv = np.asarray if xp is None else xp.asarray
    ps = [conv(p.copy()) for p in prob.p0]
    st = rule.init(ps)
    for k in range(n):
        gs = prob.grads(ps, k, conv)
        if inplace:
            rule.step_(ps, gs, st)
        else:
            ps, st = rule.step(ps, gs, st)
    return ps, st


def _close(got, ref, dtype, xp=None, loose=1.0):
    for g, r in zip(got, ref):
        scale = float(np.max(np.abs(r)))
        if dtype == np.float32:
            assert_close(g, r, rtol=loose * 2e-6, atol=loose * 1e-6 * scale, xp=xp)
        else:
            assert_close(g, r, rtol=1e-12, atol=1e-12 * scale, xp=xp)


TORCH_CASES = [
    ("rmsprop", "RMSprop", dict(lr=1e-2)),
    ("rmsprop", "RMSprop", dict(lr=1e-2, alpha=0.9, momentum=0.9, centered=True, weight_decay=0.01)),
    ("rmsprop", "RMSprop", dict(lr=1e-2, eps=1e-6, maximize=True)),
    ("adagrad", "Adagrad", dict(lr=0.1)),
    ("adagrad", "Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.01)),
    ("adadelta", "Adadelta", dict(lr=1.0)),
    ("adadelta", "Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.01, maximize=True)),
    ("adamax", "Adamax", dict(lr=2e-2)),
    ("adamax", "Adamax", dict(lr=2e-2, betas=(0.8, 0.99), weight_decay=0.01)),
    ("nadam", "NAdam", dict(lr=1e-2)),
    ("nadam", "NAdam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, momentum_decay=1e-2)),
    ("nadam", "NAdam", dict(lr=1e-2, weight_decay=0.05, maximize=True)),
    ("radam", "RAdam", dict(lr=1e-2)),
    ("radam", "RAdam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
    ("radam", "RAdam", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.05)),
    ("adafactor", "Adafactor", dict(lr=1e-2)),
    ("adafactor", "Adafactor", dict(lr=0.5, weight_decay=0.1, d=2.0, eps=(1e-20, 1e-2), beta2_decay=-0.5)),
    ("adafactor", "Adafactor", dict(lr=1e-2, maximize=True)),
]
TIDS = [f"{n}-{i}" for i, (n, _, _) in enumerate(TORCH_CASES)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name,cls,kw", TORCH_CASES, ids=TIDS)
def test_matches_torch_optim(name, cls, kw, dtype):
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)    # NAdam keeps mu_product in it
    try:
        prob = Quadratic(SHAPES, seed=1, dtype=dtype, steps=N)
        ref = _torch_run(getattr(torch.optim, cls), kw, prob)
    finally:
        torch.set_default_dtype(prev)
    got, _ = _run(getattr(oo, name)(**kw), prob)
    _close(got, ref, dtype)


@pytest.mark.parametrize("name,cls,kw", TORCH_CASES[::2], ids=TIDS[::2])
def test_every_backend_follows_torch(xp, name, cls, kw):
    prob = Quadratic(SHAPES, seed=2, steps=50)
    ref = _torch_run(getattr(torch.optim, cls), kw, prob, 50)
    got, _ = _run(getattr(oo, name)(**kw), prob, xp, 50)
    _close(got, ref, np.float32, xp)


@pytest.mark.parametrize("name,cls,kw", TORCH_CASES, ids=TIDS)
def test_fused_step_matches_torch(path, name, cls, kw):
    """``step_``: the fused multi-tensor kernel (numba path) or the chain copied in place (generic)."""
    for dtype in (np.float32, np.float64):
        prev = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
        try:
            prob = Quadratic(SHAPES, seed=3, dtype=dtype, steps=N)
            ref = _torch_run(getattr(torch.optim, cls), kw, prob)
        finally:
            torch.set_default_dtype(prev)
        got, st = _run(getattr(oo, name)(**kw), prob, inplace=True)
        assert int(st.count) == N
        _close(got, ref, dtype)


# ----------------------------------------------------------------------------------------------- optax peers
OPTAX_CASES = [
    ("lamb", dict(learning_rate=1e-2), dict(lr=1e-2), 1.0),
    # optax forms 1 - b^t in float32 when jax runs in float32: ~3e-6 after 200 steps (more accurate here)
    ("lamb", dict(learning_rate=1e-2, b1=0.8, weight_decay=0.1, eps_root=1e-8),
     dict(lr=1e-2, betas=(0.8, 0.999), weight_decay=0.1, eps_root=1e-8), 5.0),
    ("lars", dict(learning_rate=0.1), dict(lr=0.1), 1.0),
    ("lars", dict(learning_rate=0.1, weight_decay=1e-2, trust_coefficient=0.01, eps=1e-6, momentum=0.8, nesterov=True),
     dict(lr=0.1, weight_decay=1e-2, trust_coefficient=0.01, eps=1e-6, momentum=0.8, nesterov=True), 1.0),
    ("adafactor", dict(learning_rate=1e-2), dict(lr=1e-2, convention="optax"), 1.0),
    ("adafactor", dict(learning_rate=0.1, weight_decay_rate=1e-3, clipping_threshold=2.0, decay_rate=0.5,
                       min_dim_size_to_factor=4, multiply_by_parameter_scale=False),
     dict(lr=0.1, weight_decay=1e-3, d=2.0, beta2_decay=-0.5, min_dim_size_to_factor=4, convention="optax",
          multiply_by_parameter_scale=False), 1.0),
    ("adafactor", dict(learning_rate=1e-2, clipping_threshold=None, factored=False),
     dict(lr=1e-2, d=float("inf"), factored=False, convention="optax"), 1.0),
]
OIDS = [f"{n}-{i}" for i, (n, *_) in enumerate(OPTAX_CASES)]


@pytest.mark.parametrize("name,okw,kw,loose", OPTAX_CASES, ids=OIDS)
def test_matches_optax(name, okw, kw, loose):
    optax = pytest.importorskip("optax")
    import jax
    import jax.numpy as jnp

    prob = Quadratic([(6, 5), (7,), (2, 3, 4), (9, 8)], seed=4, steps=N)
    tx = getattr(optax, name)(**okw)
    ps = [jnp.asarray(p) for p in prob.p0]
    st = tx.init(ps)
    upd = jax.jit(tx.update)
    for k in range(N):
        u, st = upd(prob.grads(ps, k, jnp.asarray), st, ps)
        ps = optax.apply_updates(ps, u)
    got, _ = _run(getattr(oo, name)(**kw), prob)
    _close(got, [np.asarray(p) for p in ps], np.float32, loose=loose)


def test_adafactor_optax_convention_float64():
    """optax computes its decay in float32 whatever the dtype; optnorm follows, so float64 agrees to 1e-12."""
    optax = pytest.importorskip("optax")
    import jax

    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        import jax.numpy as jnp

        prob = Quadratic([(6, 5), (7,), (130, 129)], seed=5, dtype=np.float64, steps=50)
        tx = optax.adafactor(learning_rate=1e-2)
        ps = [jnp.asarray(p) for p in prob.p0]
        st = tx.init(ps)
        for k in range(50):
            u, st = tx.update(prob.grads(ps, k, jnp.asarray), st, ps)
            ps = optax.apply_updates(ps, u)
        ref = [np.asarray(p) for p in ps]
    finally:
        jax.config.update("jax_enable_x64", prev)
    got, _ = _run(oo.adafactor(lr=1e-2, convention="optax"), prob, n=50)
    _close(got, ref, np.float64)


def test_adafactor_factored_axes():
    """torch factors the last two axes of any ndim >= 2 parameter; optax the two largest when the second-largest
    has >= min_dim_size_to_factor entries."""
    t = oo.adafactor().init([np.ones((3, 4, 5)), np.ones(6)])
    assert t.leaves[0].row_var.shape == (3, 4, 1) and t.leaves[0].col_var.shape == (3, 1, 5)
    assert t.leaves[1].variance.shape == (6,) and t.leaves[1].row_var is None
    o = oo.adafactor(convention="optax", min_dim_size_to_factor=4).init([np.ones((3, 6, 5)), np.ones((3, 2))])
    assert o.leaves[0].row_var.shape == (3, 5) and o.leaves[0].col_var.shape == (3, 6)
    assert o.leaves[1].variance.shape == (3, 2)


@pytest.mark.parametrize("name,kw,okw", [
    ("schedule_free_adamw", dict(lr=1e-2), dict(learning_rate=1e-2)),
    # no warmup here: optax's base optimizer evaluates the warmup one step behind the averaging weights
    # (its scale_by_learning_rate counts from 0, schedule_free from 1); schedule_free's reference does not
    ("schedule_free_adamw", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.05),
     dict(learning_rate=1e-2, b1=0.8, b2=0.99, weight_decay=0.05)),
    ("schedule_free_sgd", dict(lr=0.05), dict(learning_rate=0.05)),
    ("schedule_free_sgd", dict(lr=0.05, momentum=0.8, weight_decay=0.1),
     dict(learning_rate=0.05, b1=0.8, weight_decay=0.1)),
])
def test_schedule_free_matches_optax_contrib(name, kw, okw):
    optax = pytest.importorskip("optax")
    import jax
    import jax.numpy as jnp
    from optax import contrib

    prob = Quadratic(SHAPES, seed=6, steps=N)
    tx = getattr(contrib, name)(**okw)
    ps = [jnp.asarray(p) for p in prob.p0]
    st = tx.init(ps)
    upd = jax.jit(tx.update)
    for k in range(N):
        u, st = upd(prob.grads(ps, k, jnp.asarray), st, ps)
        ps = optax.apply_updates(ps, u)
    x_ref = contrib.schedule_free_eval_params(st, ps)
    rule = getattr(oo, name)(**kw)
    for inplace in (False, True):
        got, s = _run(rule, prob, inplace=inplace)
        # optax rebuilds x from y and z each step ((y - (1 - b1) z) / b1): a few float32 ulps more per step
        _close(got, [np.asarray(p) for p in ps], np.float32, loose=5.0)
        _close(rule.eval_params(got, s), [np.asarray(p) for p in x_ref], np.float32, loose=5.0)


def _sf_reference(p0, grads, lr, b1, b2, eps, wd, warmup, r, power, adam):
    """NumPy float64 port of schedule_free's *reference* form (explicit x, y, z): an independent oracle."""
    z = [p.astype(np.float64) for p in p0]
    x = [p.astype(np.float64) for p in p0]
    y = [p.astype(np.float64) for p in p0]
    v = [np.zeros_like(p) for p in z]
    lr_max, wsum = -1.0, 0.0
    for k, g in enumerate(grads):
        sched = min(1.0, (k + 1) / warmup) if warmup else 1.0
        lrk = lr * sched
        lr_max = max(lr_max, lrk)
        w = (k + 1) ** r * lr_max ** power
        wsum += w
        c = w / wsum
        for i in range(len(z)):
            gi = g[i].astype(np.float64)
            if adam:
                z[i] = z[i] - lrk * wd * y[i]
                v[i] = b2 * v[i] + (1 - b2) * gi * gi
                z[i] = z[i] - lrk * gi / (np.sqrt(v[i] / (1 - b2 ** (k + 1))) + eps)
            else:
                z[i] = z[i] - lrk * (gi + wd * y[i])
            x[i] = (1 - c) * x[i] + c * z[i]
            y[i] = b1 * x[i] + (1 - b1) * z[i]
    return y, x


@pytest.mark.parametrize("adam", [True, False])
def test_schedule_free_against_the_reference_form(adam):
    """Gradients fixed in advance (so the oracle needs no problem): the production form equals the reference."""
    rng = np.random.default_rng(7)
    p0 = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(60)]
    kw = dict(lr=0.02, weight_decay=0.0, warmup_steps=5, r=0.5, weight_lr_power=2.0)
    rule = oo.schedule_free_adamw(betas=(0.9, 0.99), eps=1e-8, **kw) if adam else oo.schedule_free_sgd(momentum=0.9, **kw)
    ps, st = [p.copy() for p in p0], rule.init(p0)
    for g in grads:
        ps, st = rule.step(ps, g, st)
    y, x = _sf_reference(p0, grads, 0.02, 0.9, 0.99, 1e-8, 0.0, 5, 0.5, 2.0, adam)
    _close(ps, y, np.float64)
    _close(rule.eval_params(ps, st), x, np.float64)


def test_schedule_free_matches_facebookresearch_when_installed():
    sf = pytest.importorskip("schedulefree")
    prob = Quadratic(SHAPES, seed=8, steps=N)
    ps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in prob.p0]
    opt = sf.AdamWScheduleFree(ps, lr=1e-2, weight_decay=0.01, warmup_steps=10, foreach=False)
    opt.train()
    for k in range(N):
        for p, g in zip(ps, prob.grads([p.detach() for p in ps], k, torch.from_numpy)):
            p.grad = g
        opt.step()
    got, _ = _run(oo.schedule_free_adamw(lr=1e-2, weight_decay=0.01, warmup_steps=10), prob)
    _close(got, [p.detach().numpy() for p in ps], np.float32)


# ----------------------------------------------------------------------------------------------- SOAP
def _soap_reference(p0, grads, lr, b1, b2, bs, eps, wd, freq, normalize):
    """NumPy float64 port of the reference SOAP (a1e5535) for 2-D parameters: first call builds L, R and
    their eigenbases; m kept in the rotated basis; QR refresh every ``freq`` steps."""
    out = []
    for p, gseq in zip(p0, zip(*grads)):
        p = p.astype(np.float64).copy()
        L = np.zeros((p.shape[0],) * 2)
        R = np.zeros((p.shape[1],) * 2)
        m = np.zeros_like(p)
        v = np.zeros_like(p)
        QL = QR = None
        step = 0
        for g in gseq:
            g = g.astype(np.float64)
            if QL is None:
                L = bs * L + (1 - bs) * g @ g.T
                R = bs * R + (1 - bs) * g.T @ g
                QL = np.linalg.eigh(L + 1e-30 * np.eye(len(L)))[1][:, ::-1]
                QR = np.linalg.eigh(R + 1e-30 * np.eye(len(R)))[1][:, ::-1]
                continue
            step += 1
            gp = QL.T @ g @ QR
            m = b1 * m + (1 - b1) * gp
            v = b2 * v + (1 - b2) * gp * gp
            ss = lr * np.sqrt(1 - b2 ** step) / (1 - b1 ** step)
            ng = QL @ (m / (np.sqrt(v) + eps)) @ QR.T
            if normalize:
                ng = ng / (1e-30 + np.sqrt(np.mean(ng ** 2)))
            p = p - ss * ng
            p = p - lr * wd * p
            m = QL @ m @ QR.T
            L = bs * L + (1 - bs) * g @ g.T
            R = bs * R + (1 - bs) * g.T @ g
            if step % freq == 0:
                new = []
                for d, (M, Q) in enumerate(((L, QL), (R, QR))):
                    idx = np.argsort(-np.diag(Q.T @ M @ Q), kind="stable")
                    v = np.take(v, idx, axis=d)
                    new.append(np.linalg.qr(M @ Q[:, idx])[0])
                QL, QR = new
            m = QL.T @ m @ QR
        out.append(p)
    return out


@pytest.mark.parametrize("kw", [dict(lr=1e-2, precondition_frequency=3),
                                dict(lr=1e-2, betas=(0.9, 0.99), shampoo_beta=0.9, weight_decay=0.1,
                                     precondition_frequency=2, normalize_grads=True)])
def test_soap_against_a_numpy_port_of_the_reference(kw):
    """Square matrices (full-rank statistics from the first gradient: the eigenbasis is unique), float64."""
    rng = np.random.default_rng(9)
    p0 = [rng.standard_normal((6, 6)), rng.standard_normal((4, 4))]
    grads = [[0.1 * rng.standard_normal(p.shape) + 0.05 * p for p in p0] for _ in range(40)]
    b1, b2 = kw.get("betas", (0.95, 0.95))
    ref = _soap_reference(p0, grads, kw["lr"], b1, b2, kw.get("shampoo_beta") or b2, 1e-8, kw.get("weight_decay", 0.01),
                          kw["precondition_frequency"], kw.get("normalize_grads", False))
    rule = oo.soap(precondition_dtype=None, **kw)
    ps, st = [p.copy() for p in p0], rule.init(p0)
    for g in grads:
        ps, st = rule.step(ps, g, st)
    for a, b in zip(ps, ref):
        assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_soap_matches_the_reference_implementation_when_available():
    """The reference's own code (its float32 eigh/QR quirks included), when nikhilvyas/SOAP is importable."""
    soap_ref = pytest.importorskip("soap", reason="the reference SOAP (soap.py of nikhilvyas/SOAP) is not on the path")
    import array_api_compat.torch as xpt

    rng = np.random.default_rng(10)
    p0 = [rng.standard_normal((6, 6)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
    grads = [[0.1 * rng.standard_normal(p.shape).astype(np.float32) + 0.05 * p for p in p0] for _ in range(40)]
    ps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    opt = soap_ref.SOAP(ps, lr=1e-2, precondition_frequency=3)
    for g in grads:
        for p, x in zip(ps, g):
            p.grad = torch.from_numpy(x)
        opt.step()
    rule = oo.soap(lr=1e-2, precondition_frequency=3)
    q, st = [xpt.asarray(p.copy()) for p in p0], rule.init([xpt.asarray(p.copy()) for p in p0])
    for g in grads:
        q, st = rule.step(q, [xpt.asarray(x) for x in g], st)
    _close(q, [p.detach().numpy() for p in ps], np.float32)


def test_soap_first_step_and_adam_on_vectors():
    """The first step only builds the preconditioner; 1-D parameters are plain bias-corrected Adam after it."""
    rule = oo.soap(lr=0.1, weight_decay=0.0)
    p = [np.ones((3, 3)), np.ones(4)]
    g = [np.full((3, 3), 0.5), np.array([1.0, -2.0, 3.0, 0.5])]
    p1, st = rule.step(p, g, rule.init(p))
    assert all(np.array_equal(a, b) for a, b in zip(p1, p))
    p2, st = rule.step(p1, g, st)
    adam = oo.adam(lr=0.1, betas=(0.95, 0.95), eps_mode="hf")
    ref, _ = adam.step(p[1], g[1], adam.init(p[1]))
    assert_close(p2[1], ref, rtol=1e-12)


def test_soap_under_jit():
    jax = pytest.importorskip("jax")
    import optnorm.jax as onj

    tx = onj.optax.soap(learning_rate=1e-2, precondition_frequency=2, precondition_dtype=None)
    rng = np.random.default_rng(11)
    p0 = {"w": rng.standard_normal((5, 5)), "b": rng.standard_normal(3)}
    grads = [{k: 0.1 * rng.standard_normal(v.shape) for k, v in p0.items()} for _ in range(6)]
    params = {k: jax.numpy.asarray(v) for k, v in p0.items()}
    st = tx.init(params)
    upd = jax.jit(tx.update)
    for g in grads:
        u, st = upd({k: jax.numpy.asarray(v) for k, v in g.items()}, st, params)
        params = jax.tree.map(lambda a, b: a + b, params, u)
    rule = oo.soap(lr=1e-2, precondition_frequency=2, precondition_dtype=None)
    q, s = {k: v.copy() for k, v in p0.items()}, rule.init(p0)
    for g in grads:
        q, s = rule.step(q, g, s)
    for k in q:
        assert_close(params[k], q[k], rtol=1e-9, atol=1e-11)
