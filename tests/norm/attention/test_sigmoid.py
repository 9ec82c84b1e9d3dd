"""sigmoid_attention against a quadratic float64 reference."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm.norm import sigmoid_attention
from optnorm.testing import assert_close, check_vjp

from . import check_adapters, qkv

def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def ref_sigmoid(q, k, v, mask, bias, scale, causal):
    n, m, d = q.shape[-2], k.shape[-2], q.shape[-1]
    b = -np.log(m) if bias is None else bias
    sc = 1 / np.sqrt(d) if scale is None else scale
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for idx in np.ndindex(q.shape[:-2]):
        W = np.zeros((n, m))
        for i in range(n):
            for j in range(m):
                ok = (mask is None or mask[idx + (i, j)] if mask is not None and mask.ndim == q.ndim else
                      (mask is None or mask[i, j]))
                if causal and j > i:
                    ok = False
                W[i, j] = sig(sc * q[idx][i] @ k[idx][j] + b) if ok else 0.0
        out[idx] = W @ v[idx]
    return out


def test_sigmoid_attention(xp, rng):
    q, k, v = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 6, 4)), rng.standard_normal((2, 6, 3))
    X = lambda *a: tuple(xp.asarray(t) for t in a)  # noqa: E731
    assert_close(sigmoid_attention(*X(q, k, v)), ref_sigmoid(q, k, v, None, None, None, False), rtol=1e-12, xp=xp)
    mask = rng.random((5, 6)) > 0.3
    mask[1] = False    # a fully masked row gives zeros
    got = sigmoid_attention(*X(q, k, v), xp.asarray(mask), bias=-1.5, scale=0.7, causal=True)
    ref = ref_sigmoid(q, k, v, mask, -1.5, 0.7, True)
    assert_close(got, ref, rtol=1e-12, atol=1e-15, xp=xp)
    assert np.all(ref[:, 1] == 0)
    check_vjp("norm.sigmoid_attention", q, k, v, None)
    check_vjp("norm.sigmoid_attention", q, k, v, mask, opts={"causal": True, "bias": 0.3})
    # broadcast batch dims
    check_vjp("norm.sigmoid_attention", q, k[:1], v[:1], None)


def test_adapters(rng):
    check_adapters("sigmoid_attention", qkv(rng), {"causal": True})


@pytest.mark.parametrize("scale", [1e-20, 1e-6, 1.0, 1e3, 1e6, 1e30])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_magnitudes(scale, dtype):
    """Scores saturate to weights 0 / 1 without NaN; the values' range bounds the output."""
    q, k, v = qkv(np.random.default_rng(4), batch=())
    out = sigmoid_attention((q * scale).astype(dtype), (k * scale).astype(dtype), v.astype(dtype), causal=True)
    assert out.dtype == dtype and np.all(np.isfinite(out))
    huge = 1e300 if dtype == np.float64 else 1e30
    assert np.all(np.isfinite(sigmoid_attention(q, k, (v * huge).astype(dtype).astype(np.float64))))


def test_bad_inputs(rng):
    q, k, v = qkv(rng, batch=())
    with pytest.raises(ValueError, match="k has shape .* but q has d = 3"):
        sigmoid_attention(q, k[:, :2], v)
    with pytest.raises(ValueError, match="v has shape .* but k has m = 4"):
        sigmoid_attention(q, k, v[:3])
    with pytest.raises(TypeError, match="mask must have a boolean dtype"):
        sigmoid_attention(q, k, v, np.ones((4, 4)))
    with pytest.raises(ValueError, match="mask has shape"):
        sigmoid_attention(q, k, v, np.ones((3, 4), bool))
