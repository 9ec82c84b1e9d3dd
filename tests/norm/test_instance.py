"""instance_norm and ibn_norm against compositions of torch.nn.functional.instance_norm / batch_norm."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm._lib import compat
from optnorm.norm import ibn_norm, instance_norm
from optnorm.testing import assert_close, check_vjp

from . import F, torch


def test_instance_norm_matches_torch(xp, rng):
    x = rng.standard_normal((3, 4, 5, 6))
    w, b = rng.standard_normal(4), rng.standard_normal(4)
    ref = F.instance_norm(torch.tensor(x), weight=torch.tensor(w), bias=torch.tensor(b), eps=1e-4).numpy()
    assert_close(instance_norm(xp.asarray(x), xp.asarray(w), xp.asarray(b), eps=1e-4), ref, rtol=1e-10, atol=1e-12,
                 xp=xp)
    ref0 = F.instance_norm(torch.tensor(x)).numpy()
    assert_close(instance_norm(xp.asarray(x)), ref0, rtol=1e-10, atol=1e-12, xp=xp)
    # channel-last layout
    xl = np.moveaxis(x, 1, -1)
    assert_close(instance_norm(xp.asarray(xl), xp.asarray(w), xp.asarray(b), axis=-1, eps=1e-4),
                 np.moveaxis(ref, 1, -1), rtol=1e-10, atol=1e-12, xp=xp)


def test_instance_norm_float32_and_half(rng):
    x = rng.standard_normal((2, 3, 8)).astype(np.float32) * 100 + 1000
    y = instance_norm(x)
    assert y.dtype == np.float32
    assert_close(y, F.instance_norm(torch.tensor(x, dtype=torch.float64)).numpy(), rtol=1e-3, atol=1e-3,
                 check_dtype="float32")
    xh = torch.tensor(rng.standard_normal((2, 3, 8)), dtype=torch.bfloat16)
    yh = instance_norm(xh)
    assert yh.dtype == torch.bfloat16
    assert_close(yh, F.instance_norm(xh.double()).numpy(), rtol=2e-2, atol=2e-2, check_dtype="bfloat16")


@pytest.mark.parametrize("ratio", [0.5, 0.25, 0.0, 1.0])
@pytest.mark.parametrize("training", [True, False])
def test_ibn_a_matches_torch_composition(xp, rng, ratio, training):
    N, C = 4, 8
    c1 = int(ratio * C)
    x = rng.standard_normal((N, C, 3, 5))
    wi, bi = rng.standard_normal(c1), rng.standard_normal(c1)
    wb, bb = rng.standard_normal(C - c1), rng.standard_normal(C - c1)
    rm, rv = rng.standard_normal(C - c1), rng.random(C - c1) + 0.5
    tx = torch.tensor(x)
    parts = []
    if c1:
        parts.append(F.instance_norm(tx[:, :c1], weight=torch.tensor(wi), bias=torch.tensor(bi)))
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    if c1 < C:
        parts.append(F.batch_norm(tx[:, c1:], trm, trv, torch.tensor(wb), torch.tensor(bb), training=training,
                                  momentum=0.2))
    ref = torch.cat(parts, 1).numpy()
    A = xp.asarray
    y, nrm, nrv = ibn_norm(A(x), A(wi) if c1 else None, A(bi) if c1 else None, A(wb) if c1 < C else None,
                           A(bb) if c1 < C else None, A(rm) if c1 < C else None, A(rv) if c1 < C else None,
                           ratio=ratio, training=training, momentum=0.2)
    assert_close(y, ref, rtol=1e-9, atol=1e-10, xp=xp)
    if c1 < C:
        assert_close(nrm, trm.numpy(), rtol=1e-12, xp=xp)
        assert_close(nrv, trv.numpy(), rtol=1e-12, xp=xp)
        assert_close(compat.to_numpy(A(rm)), rm)  # inputs not mutated


def test_ibn_b(xp, rng):
    x = rng.standard_normal((2, 5, 7))
    w, b = rng.standard_normal(5), rng.standard_normal(5)
    y, rm, rv = ibn_norm(xp.asarray(x), xp.asarray(w), xp.asarray(b), variant="b")
    ref = F.instance_norm(torch.tensor(x), weight=torch.tensor(w), bias=torch.tensor(b)).numpy()
    assert_close(y, ref, rtol=1e-10, atol=1e-12, xp=xp)
    assert rm is None and rv is None


def test_vjps(rng):
    x = rng.standard_normal((3, 4, 5))
    w, b = rng.standard_normal(4), rng.standard_normal(4)
    check_vjp("norm.instance_norm", x, w, b, None, None)
    check_vjp("norm.instance_norm", x, None, None, None, None)
    check_vjp("norm.instance_norm", np.moveaxis(x, 1, -1).copy(), w, b, None, None, opts={"axis": -1})
    wi, bi, wb, bb = (rng.standard_normal(2) for _ in range(4))
    rm, rv = rng.standard_normal(2), rng.random(2) + 0.5
    check_vjp("norm.ibn_norm", x, wi, bi, wb, bb, rm, rv, opts={"momentum": 0.3})
    check_vjp("norm.ibn_norm", x, wi, bi, wb, bb, rm, rv, opts={"training": False})
    # variant "b" returns (y, None, None): check_vjp cannot compare None outputs, gradcheck covers it below


def test_adapters(rng):
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    import optnorm.jax as onj
    import optnorm.torch as ont

    x = rng.standard_normal((3, 4, 5))
    w, b = rng.standard_normal(4), rng.standard_normal(4)
    args = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    assert torch.autograd.gradcheck(lambda a, c, d: ont.instance_norm(a, c, d), args)
    half = [torch.tensor(rng.standard_normal(2), requires_grad=True) for _ in range(4)]
    rm, rv = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, p, q, r, s: ont.ibn_norm(a, p, q, r, s, rm, rv)[0],
                                    [args[0]] + half)
    assert torch.autograd.gradcheck(lambda a, c, d: ont.ibn_norm(a, c, d, variant="b")[0], args)
    ja = [jax.numpy.asarray(a) for a in (x, w, b)]
    check_grads(lambda a, c, d: onj.instance_norm(a, c, d), ja, order=1, modes=["rev"])
    jh = [jax.numpy.asarray(h.detach().numpy()) for h in half]
    jrm, jrv = jax.numpy.zeros(2), jax.numpy.ones(2)
    J = jax.numpy.asarray  # check_grads may call with NumPy arrays; the closure holds JAX ones
    check_grads(lambda a, p, q, r, s: onj.ibn_norm(J(a), J(p), J(q), J(r), J(s), jrm, jrv)[0], [ja[0]] + jh,
                order=1, modes=["rev"])
    y = jax.jit(lambda a: onj.instance_norm(a))(ja[0])
    assert y.shape == x.shape


def test_bad_input(rng):
    x = rng.standard_normal((2, 4, 3))
    with pytest.raises(ValueError, match="x must have shape >= 3 dimensions"):
        instance_norm(np.ones((2, 3)))
    with pytest.raises(ValueError, match="weight has shape"):
        instance_norm(x, np.ones(3))
    with pytest.raises(ValueError, match=r"eps must be in \(0, inf\)"):
        instance_norm(x, eps=0.0)
    with pytest.raises(ValueError, match="axis=0 is the batch axis"):
        instance_norm(x, axis=0)
    with pytest.raises(ValueError, match="variant must be one of"):
        ibn_norm(x, variant="c")
    with pytest.raises(ValueError, match="running_mean must be None for variant='b'"):
        ibn_norm(x, running_mean=np.zeros(4), variant="b")
    with pytest.raises(ValueError, match="in_weight has shape"):
        ibn_norm(x, np.ones(4))
    with pytest.raises(ValueError, match="ratio must be in"):
        ibn_norm(x, ratio=1.5)


@pytest.mark.parametrize("use_input_stats", [True, False])
def test_running_statistics_match_torch(rng, use_input_stats):
    import optnorm.torch as ont

    x = rng.standard_normal((4, 3, 5, 6))
    w, b = rng.random(3) + 0.5, rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    rmt, rvt = torch.tensor(rm), torch.tensor(rv)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.instance_norm(xt, rmt, rvt, wt, bt, use_input_stats=use_input_stats, momentum=0.2)
    g = torch.tensor(rng.standard_normal(x.shape))
    y.backward(g)
    x2, w2, b2 = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y2, nrm, nrv = ont.instance_norm(x2, w2, b2, torch.tensor(rm), torch.tensor(rv), use_input_stats=use_input_stats,
                                     momentum=0.2)
    y2.backward(g)
    assert_close(y2.detach().numpy(), y.detach().numpy(), rtol=1e-12, atol=1e-13)
    assert_close(nrm.detach().numpy(), rmt.numpy(), rtol=1e-12)      # torch updated its buffers in place
    assert_close(nrv.detach().numpy(), rvt.numpy(), rtol=1e-12)
    for a, r in ((x2, xt), (w2, wt), (b2, bt)):
        assert_close(a.grad.numpy(), r.grad.numpy(), rtol=1e-11, atol=1e-12)
    check_vjp("norm.instance_norm", x[:2, :, :2, :3], w, b, rm, rv,
              opts={"use_input_stats": use_input_stats, "momentum": 0.3})
    rm0, rv0 = rm.copy(), rv.copy()
    y3, rm3, rv3 = instance_norm(x, w, b, rm, rv, use_input_stats=use_input_stats)
    assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)   # our inputs are never mutated
    assert y3.shape == x.shape and rm3.shape == (3,)


def test_running_statistics_bad_input(rng):
    x = rng.standard_normal((2, 3, 4))
    with pytest.raises(ValueError, match="running_var is required"):
        instance_norm(x, running_mean=np.zeros(3))
    with pytest.raises(ValueError, match="use_input_stats=False"):
        instance_norm(x, use_input_stats=False)
    with pytest.raises(ValueError, match="running_var"):
        instance_norm(x, running_mean=np.zeros(3), running_var=-np.ones(3))
