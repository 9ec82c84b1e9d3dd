"""normalize against torch's F.normalize (values, gradients), edge cases (zero vectors, huge entries, p = inf)."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm._lib import ops
from optnorm.norm import normalize
from optnorm.testing import assert_close, check_vjp

from . import F, torch


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, float("inf"), 0.5])
def test_matches_torch(rng, xp, p):
    x = rng.standard_normal((4, 6))
    x[1] = 0.0              # zero vector: divided by eps, no NaN
    x[2, :3] = 5.0          # tied maxima for p = inf
    assert_close(normalize(xp.asarray(x), p=p), F.normalize(torch.tensor(x), p=p, dim=-1).numpy(), rtol=1e-12,
                 atol=1e-15, xp=xp)
    xt = torch.tensor(x, requires_grad=True)
    g = torch.tensor(rng.standard_normal((4, 6)))
    F.normalize(xt, p=p, dim=-1).backward(g)
    _, res = ops.get("normalize").fwd(x, p=p)
    assert_close(ops.get("normalize").bwd(res, g.numpy())[0], xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert_close(normalize(x.T, p=p, axis=0), normalize(x, p=p).T, rtol=1e-14)


def test_vjp_and_scaling(rng):
    x = rng.standard_normal((3, 5))
    for p in (1.5, 2.0, 4.0):
        check_vjp(ops.get("normalize"), x, opts={"p": p})
    big = np.array([3e300, 4e300])          # the squares would overflow float64
    assert_close(normalize(big), np.array([0.6, 0.8]), rtol=1e-15)
    small = np.array([3e-300, 4e-300], np.float64)
    assert_close(normalize(small, eps=1e-320), np.array([0.6, 0.8]), rtol=1e-12)
    assert_close(normalize(np.array([3.0, 4.0], np.float32)), np.array([0.6, 0.8], np.float32), rtol=1e-7)
    with pytest.raises(ValueError, match="eps"):
        normalize(x, eps=0.0)
    with pytest.raises(ValueError, match="p"):
        normalize(x, p=0.0)
