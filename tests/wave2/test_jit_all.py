"""Every wave-2 op runs under jax.jit (forward and gradient) through the JAX adapter."""
from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

R = np.random.default_rng(7)


def _boxes(n):
    c, wh = R.uniform(0, 20, (n, 2)), R.uniform(1, 5, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], 1)


CASES = {
    "box_to_gaussian": ((_boxes(3),), {}),
    "box_wasserstein": ((_boxes(3), _boxes(3)), {}),
    "normalized_wasserstein_boxes": ((_boxes(3), _boxes(2)), {"pairwise": True}),
    "sinkhorn_normalize": ((R.standard_normal((3, 3)),), {"n_iter": 3}),
    "mahalanobis": ((R.standard_normal((4, 2)), np.zeros(2), np.eye(2) * 2), {}),
    "topk_softmax": ((R.standard_normal((3, 5)),), {"k": 2}),
    "moe_gate": ((R.standard_normal((3, 5)),), {"k": 2, "activation": "tanh"}),
    "soft_topk": ((R.standard_normal((3, 5)),), {"k": 2}),
    "soft_topk_loss": ((R.standard_normal((3, 5)), (R.random((3, 5)) < 0.4) * 1.0), {"k": 2}),
    "instance_norm": ((R.standard_normal((2, 3, 4)), np.ones(3), np.zeros(3)), {}),
    "ibn_norm": ((R.standard_normal((2, 4, 3)), np.ones(2), np.zeros(2), np.ones(2), np.zeros(2), np.zeros(2),
                  np.ones(2)), {}),
    "inline_attention": ((R.standard_normal((4, 3)), R.standard_normal((4, 3)), R.standard_normal((4, 2))),
                         {"causal": True}),
    "selective_attention": ((R.standard_normal((4, 3)), R.standard_normal((4, 3)), R.standard_normal((4, 2)),
                             np.ones((4, 1)), np.ones((4, 1))), {}),
    "favor_attention": ((R.standard_normal((4, 3)), R.standard_normal((4, 3)), R.standard_normal((4, 2))),
                        {"num_features": 4, "seed": 0}),
    "decoupled_softmax_loss": ((R.standard_normal((3, 5)), (R.random((3, 5)) < 0.4) * 1.0), {}),
    "cosine_softmax_loss": ((R.standard_normal((3, 4)), R.standard_normal((5, 4)), np.array([0, 3, 4])),
                            {"margin": 0.2}),
    "tract_linear": ((R.standard_normal((5, 3)), R.standard_normal((2, 3)), np.zeros(2)), {}),
    "task_balanced_weights": ((np.array([0, 1, 1]), np.zeros(2), np.ones(2)), {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_jit_forward_and_grad(name):
    import optnorm.jax as onj

    args, opts = CASES[name]
    f = onj.op(name)
    jargs = [jnp.asarray(a) for a in args]

    def scalar(*a):
        y = f(*a, **opts)
        y = y[0] if isinstance(y, tuple) else y
        return jnp.sum(y * jnp.arange(1, y.size + 1, dtype=y.dtype).reshape(y.shape))

    y_eager = f(*jargs, **opts)
    y_jit = jax.jit(lambda *a: f(*a, **opts))(*jargs)
    for a, b in zip(jax.tree_util.tree_leaves(y_eager), jax.tree_util.tree_leaves(y_jit)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
    float_idx = [i for i, a in enumerate(args) if np.asarray(a).dtype.kind == "f"]
    g = jax.jit(jax.grad(scalar, argnums=float_idx[0]))(*jargs)
    assert g.shape == args[float_idx[0]].shape and bool(jnp.all(jnp.isfinite(g)))
