"""Shared test problems: an elementwise quadratic with a fixed noise sequence (bitwise identical across backends)."""
from __future__ import annotations

import numpy as np


class Quadratic:
    """``g = d * (p - q) + noise_k``: elementwise, so every backend computes the same float32 gradients."""

    def __init__(self, shapes, seed=0, dtype=np.float32, steps=100):
        rng = np.random.default_rng(seed)
        self.shapes = shapes
        self.p0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
        self.q = [rng.standard_normal(s).astype(dtype) for s in shapes]
        self.d = [rng.uniform(0.1, 2.0, s).astype(dtype) for s in shapes]
        self.noise = [[(0.1 * rng.standard_normal(s)).astype(dtype) for s in shapes] for _ in range(steps)]

    def grads(self, ps, k, conv):
        return [conv(d) * (p - conv(q)) + conv(n) for p, d, q, n in zip(ps, self.d, self.q, self.noise[k])]


def run_torch(cls, kw, prob, n):
    """``n`` steps of the torch.optim optimizer ``cls(params, **kw)`` on ``prob``; the parameters (detached
    tensors)."""
    import torch

    ps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in prob.p0]
    opt = cls(ps, **kw)
    for k in range(n):
        gs = prob.grads([p.detach() for p in ps], k, torch.from_numpy)
        for p, g in zip(ps, gs):
            p.grad = g
        opt.step()
    return [p.detach() for p in ps]


def run_optax(tx, prob, n, *, jit=True):
    """``n`` steps of the optax transformation ``tx`` on ``prob`` (its update under ``jax.jit`` unless ``jit=False``);
    ``(params, state)``."""
    import jax
    import jax.numpy as jnp
    import optax

    ps = [jnp.asarray(p) for p in prob.p0]
    st = tx.init(ps)
    upd = jax.jit(tx.update) if jit else tx.update
    for k in range(n):
        u, st = upd(prob.grads(ps, k, jnp.asarray), st, ps)
        ps = optax.apply_updates(ps, u)
    return ps, st


def side_by_side(rule, ref, steps=4):
    """``rule`` and ``ref`` from ``linspace(-1, 1, 5)`` for ``steps`` steps on the same gradients ``sin(p (k + 1))``
    (``p``: ``rule``'s params); both final params."""
    p = q = np.linspace(-1, 1, 5)
    s1, s2 = rule.init(p), ref.init(q)
    for k in range(steps):
        g = np.sin(p * (k + 1))
        p, s1 = rule.step(p, g, s1)
        q, s2 = ref.step(q, g, s2)
    return p, q
