"""Tests of :mod:`optnorm.norm.attention`, one test module per module of the subpackage."""
from __future__ import annotations

import numpy as np
import pytest


def qkv(rng, n=4, m=4, d=3, e=2, batch=(2,)):
    return rng.standard_normal(batch + (n, d)), rng.standard_normal(batch + (m, d)), rng.standard_normal(batch + (m, e))


def check_adapters(name, arrs, opts):
    """torch gradcheck and JAX check_grads of the adapters of ``name`` on float64 inputs."""
    torch = pytest.importorskip("torch")
    jnp = pytest.importorskip("jax.numpy")
    from jax.test_util import check_grads

    import optnorm.jax as onj
    import optnorm.torch as ont

    ft, fj = getattr(ont, name), getattr(onj, name)
    assert torch.autograd.gradcheck(lambda *a: ft(*a, **opts), tuple(torch.tensor(np.asarray(x), requires_grad=True)
                                                                     for x in arrs))
    check_grads(lambda *a: fj(*a, **opts), tuple(map(jnp.asarray, arrs)), order=1, modes=["rev"])
