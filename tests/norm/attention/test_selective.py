"""selective_attention and log_position_temperature against float64 references."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm.norm import log_position_temperature, selective_attention
from optnorm.testing import assert_close, check_vjp

from . import check_adapters, qkv

def _softmax_attn(q, k, v, tq, tv, causal, s):
    qt = q * (1 if tq is None else tq)
    vt = v * (1 if tv is None else tv)
    z = s * qt @ np.swapaxes(k, -1, -2)
    if causal:
        z = np.where(np.tril(np.ones(z.shape[-2:], bool)), z, -np.inf)
    a = np.exp(z - z.max(-1, keepdims=True))
    return (a / a.sum(-1, keepdims=True)) @ vt


@pytest.mark.parametrize("causal", [False, True])
def test_selective_attention(xp, rng, causal):
    q, k, v = (rng.standard_normal((2, 5, 4)) for _ in range(3))
    tq, tv = rng.random((2, 5, 1)) + 0.5, rng.random((5, 1)) + 0.5
    y = selective_attention(xp.asarray(q), xp.asarray(k), xp.asarray(v), xp.asarray(tq), xp.asarray(tv),
                            causal=causal)
    assert_close(y, _softmax_attn(q, k, v, tq, tv, causal, 0.5), rtol=1e-10, xp=xp)
    y0 = selective_attention(xp.asarray(q), xp.asarray(k), xp.asarray(v), causal=causal)
    assert_close(y0, _softmax_attn(q, k, v, None, None, causal, 0.5), rtol=1e-10, xp=xp)


def test_log_position_temperature(xp):
    t = log_position_temperature(4, 0.3)
    ref = 1 + np.log(np.arange(1, 5))[:, None] / (1 + np.exp(-0.3))
    assert_close(t, ref, rtol=1e-12)
    a = xp.asarray(np.array([0.0, 2.0]))
    t2 = log_position_temperature(3, a, offset=0.5)
    assert tuple(t2.shape) == (2, 3, 1)
    assert_close(t2[1, ...], 0.5 + np.log(np.arange(1, 4))[:, None] / (1 + np.exp(-2.0)), rtol=1e-12, xp=xp)


def test_vjps(rng):
    q, k, v = qkv(rng, n=5, m=5)
    tq, tv = rng.random((2, 5, 1)) + 0.5, rng.random((5, 1)) + 0.5
    for causal in (False, True):
        check_vjp("norm.selective_attention", q, k, v, tq, tv, opts={"causal": causal})
    check_vjp("norm.selective_attention", q, k, v, None, None)


def test_adapters(rng):
    q, k, v = qkv(rng, batch=())
    check_adapters("selective_attention", (q, k, v, rng.random((4, 1)) + 0.5, rng.random((4, 1)) + 0.5), {})
    jax = pytest.importorskip("jax")
    import optnorm.jax as onj

    y = jax.jit(lambda *a: onj.selective_attention(*a))(*(jax.numpy.asarray(a) for a in (q, k, v)))
    assert y.shape == (4, 2)


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_extreme_magnitudes(rng, scale):
    q, k, v = qkv(rng, batch=())
    assert np.all(np.isfinite(selective_attention(q * scale, k, v)))
    assert np.all(np.isfinite(selective_attention(q, k, v * scale)))


def test_bad_input(rng):
    q = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match="q_temperature must broadcast"):
        selective_attention(q, q, q, np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"scale must be in \(0, inf\)"):
        selective_attention(q, q, q, scale=-1.0)
    with pytest.raises(ValueError, match="causal=True needs as many queries as keys"):
        selective_attention(q[:2], q, q)
    with pytest.raises(ValueError, match=r"n must be in \[1, inf\)"):
        log_position_temperature(0, 1.0)
