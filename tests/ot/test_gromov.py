"""gromov_wasserstein(2), fused_gromov_wasserstein(2): POT (values, plans, gradients), isometries, the alpha
limits, finite differences at fixed plan, backends, callbacks and progress, bad input."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import optnorm
from optnorm.ot import (emd2, fused_gromov_wasserstein, fused_gromov_wasserstein2, gromov_wasserstein,
                        gromov_wasserstein2)
from optnorm.testing import assert_close

ot = pytest.importorskip("ot")


def _dist(x, sq=False):
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    return d if sq else np.sqrt(d)


def _problem(rng, n=14, m=11, sq=False):
    x, y = rng.standard_normal((n, 2)), rng.standard_normal((m, 3))
    p, q = rng.random(n) + 0.1, rng.random(m) + 0.1
    return _dist(x, sq), _dist(y, sq), p / p.sum(), q / q.sum()


@pytest.mark.parametrize("loss", ["square_loss", "kl_loss"])
@pytest.mark.parametrize("sq", [False, True])
def test_exact_matches_pot(rng, loss, sq):
    C1, C2, p, q = _problem(rng, sq=sq)
    T, log = ot.gromov.gromov_wasserstein(C1, C2, p, q, loss_fun=loss, log=True)
    r = gromov_wasserstein(C1, C2, p, q, loss=loss)
    assert r.converged and r.reg is None
    assert_close(r.cost, log["gw_dist"], rtol=1e-10)
    assert_close(r.plan, T, atol=1e-10)
    assert_close(gromov_wasserstein2(C1, C2, p, q, loss=loss), log["gw_dist"], rtol=1e-10)


def test_asymmetric_structures_match_pot(rng):
    n, m = 12, 9
    C1, C2 = rng.random((n, n)), rng.random((m, m))
    p, q = np.full(n, 1 / n), np.full(m, 1 / m)
    # Frank-Wolfe converges slowly on asymmetric problems: compare tightly converged runs
    T, log = ot.gromov.gromov_wasserstein(C1, C2, p, q, log=True, tol_rel=1e-12, tol_abs=1e-12, max_iter=20000)
    r = gromov_wasserstein(C1, C2, tol=1e-12, max_iter=20000)
    assert_close(r.cost, log["gw_dist"], rtol=1e-7)
    Te, loge = ot.gromov.entropic_gromov_wasserstein(C1, C2, p, q, epsilon=0.05, log=True, max_iter=3000)
    re_ = gromov_wasserstein(C1, C2, reg=0.05, max_iter=3000)
    assert_close(re_.plan, Te, atol=1e-7)


@pytest.mark.parametrize("loss,eps", [("square_loss", 0.1), ("square_loss", 0.02), ("kl_loss", 0.1)])
@pytest.mark.parametrize("solver", ["PGD", "PPA"])
def test_entropic_matches_pot(rng, loss, eps, solver):
    """POT's inner (non-log) Sinkhorn is given enough iterations to converge; then the plans agree."""
    C1, C2, p, q = _problem(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        T, log = ot.gromov.entropic_gromov_wasserstein(C1, C2, p, q, loss_fun=loss, epsilon=eps, log=True,
                                                       max_iter=15, tol=0, solver=solver, numItermax=100000)
    r = gromov_wasserstein(C1, C2, p, q, loss=loss, reg=eps, max_iter=15, tol=0, solver=solver,
                           inner_max_iter=100000)
    assert_close(r.plan, T, atol=1e-7)
    assert_close(r.cost, log["gw_dist"], rtol=1e-6)
    assert_close(np.asarray(r.plan).sum(1), p, atol=1e-12)
    assert_close(np.asarray(r.plan).sum(0), q, atol=1e-8)


def test_isometric_copy_in_reverse_order_is_a_permutation(rng):
    x = rng.standard_normal((9, 2))
    C1 = _dist(x)
    C2 = C1[::-1, ::-1]
    r = gromov_wasserstein(C1, C2)
    assert_close(r.cost, 0.0, atol=1e-12)
    assert_close(np.asarray(r.plan) * 9, np.eye(9)[::-1], atol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.7, 1.0])
def test_fused_matches_pot_and_the_limits(rng, alpha):
    C1, C2, p, q = _problem(rng)
    M = rng.random((C1.shape[0], C2.shape[0]))
    T, log = ot.gromov.fused_gromov_wasserstein(M, C1, C2, p, q, alpha=alpha, log=True)
    r = fused_gromov_wasserstein(M, C1, C2, p, q, alpha=alpha)
    assert_close(r.cost, log["fgw_dist"], rtol=1e-10)
    assert_close(r.plan, T, atol=1e-10)
    if alpha == 0.0:
        assert_close(r.cost, emd2(p, q, M), rtol=1e-12)
    if alpha == 1.0:
        assert_close(r.cost, gromov_wasserstein(C1, C2, p, q).cost, rtol=1e-12)
    assert_close(r.cost, (1 - alpha) * np.sum(M * np.asarray(r.plan)) + alpha * float(r.gw_cost), rtol=1e-12)
    Te, loge = ot.gromov.entropic_fused_gromov_wasserstein(M, C1, C2, p, q, alpha=alpha, epsilon=0.1, log=True,
                                                           max_iter=50, tol=0, numItermax=100000)
    re_ = fused_gromov_wasserstein(M, C1, C2, p, q, alpha=alpha, reg=0.1, max_iter=50, tol=0,
                                   inner_max_iter=100000)
    assert_close(re_.plan, Te, atol=1e-7)


@pytest.mark.parametrize("loss", ["square_loss", "kl_loss"])
def test_gradients_match_pot(rng, loss):
    """Structure gradients equal POT's (envelope at the plan); weight gradients equal POT's up to the gauge
    (POT centres by the plain mean, optnorm by the weighted mean)."""
    torch = pytest.importorskip("torch")
    import optnorm.torch as ont

    C1, C2, p, q = _problem(rng, 10, 8)
    M = rng.random((10, 8))
    for fused in (False, True):
        ins = (M, C1, C2, p, q) if fused else (C1, C2, p, q)
        t1 = [torch.tensor(z, requires_grad=True) for z in ins]
        t2 = [torch.tensor(z, requires_grad=True) for z in ins]
        if fused:
            ot.gromov.fused_gromov_wasserstein2(*t1, loss_fun=loss, alpha=0.4).backward()
            ont.fused_gromov_wasserstein2(*t2, loss=loss, alpha=0.4).backward()
        else:
            ot.gromov.gromov_wasserstein2(*t1, loss_fun=loss).backward()
            ont.gromov_wasserstein2(*t2, loss=loss).backward()
        for k, (a, b) in enumerate(zip(t1, t2)):
            ga, gb = a.grad.numpy(), b.grad.numpy()
            if k >= len(ins) - 2:                               # weights: equal up to a constant
                ga, gb = ga - ga.mean(), gb - gb.mean()
            scale = max(1.0, np.abs(ga).max())
            assert_close(gb, ga, atol=1e-9 * scale, rtol=1e-9)


def test_structure_gradient_at_fixed_plan_by_finite_differences(rng):
    """The VJP is the derivative of sum L(C1_ik, C2_jl) T_ij T_kl at the returned plan (any plan)."""
    from optnorm.ot import gromov as G

    C1, C2, p, q = _problem(rng, 8, 7)
    C1, C2 = C1 + 0.5, C2 + 0.5                                # positive entries: the KL loss's logs stay smooth
    for loss in ("square_loss", "kl_loss"):
        r = gromov_wasserstein(C1, C2, p, q, loss=loss, reg=0.05)
        T = np.asarray(r.plan)

        def value(A, B):
            if loss == "square_loss":
                L = (A[:, None, :, None] - B[None, :, None, :]) ** 2
            else:
                L = A[:, None, :, None] * np.log((A[:, None, :, None] + 1e-18) / (B[None, :, None, :] + 1e-18)) \
                    - A[:, None, :, None] + B[None, :, None, :]
            return np.einsum("ijkl,ij,kl->", L, T, T)

        P = G._Problem(C1, C2, p, q, None, loss=loss, alpha=1.0, symmetric=None, fn="t")
        d1, d2 = G._structure_grads(P, T, loss, np)
        E = rng.standard_normal(C1.shape)
        h = 1e-6
        fd = (value(C1 + h * E, C2) - value(C1 - h * E, C2)) / (2 * h)
        assert_close(np.sum(d1 * E), fd, rtol=1e-6)
        E2 = rng.standard_normal(C2.shape)
        fd2 = (value(C1, C2 + h * E2) - value(C1, C2 - h * E2)) / (2 * h)
        assert_close(np.sum(d2 * E2), fd2, rtol=1e-6)


def test_jax_and_torch_adapters(rng):
    jax = pytest.importorskip("jax")
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp

    import optnorm.jax as onj
    import optnorm.torch as ont

    C1, C2, p, q = _problem(rng, 7, 6)
    gj = jax.grad(lambda a: onj.gromov_wasserstein2(a, jnp.asarray(C2)))(jnp.asarray(C1))
    t = torch.tensor(C1, requires_grad=True)
    ont.gromov_wasserstein2(t, torch.tensor(C2)).backward()
    assert_close(np.asarray(gj), t.grad.numpy(), atol=1e-12)


def test_backends(xp, rng):
    C1, C2, p, q = _problem(rng, 9, 7, sq=True)
    ref = gromov_wasserstein(C1, C2, p, q, reg=0.05)
    r = gromov_wasserstein(xp.asarray(C1), xp.asarray(C2), xp.asarray(p), xp.asarray(q), reg=0.05)
    assert_close(r.plan, np.asarray(ref.plan), atol=1e-10, xp=xp)
    assert_close(r.cost, float(ref.cost), rtol=1e-9, xp=xp)
    ex = gromov_wasserstein(xp.asarray(C1), xp.asarray(C2), xp.asarray(p), xp.asarray(q))
    assert_close(ex.cost, float(gromov_wasserstein(C1, C2, p, q).cost), rtol=1e-10, xp=xp)
    M = rng.random((9, 7))
    fr = fused_gromov_wasserstein2(xp.asarray(M), xp.asarray(C1), xp.asarray(C2), alpha=0.5)
    assert_close(fr, float(fused_gromov_wasserstein2(M, C1, C2, alpha=0.5)), rtol=1e-10, xp=xp)


def test_float32_keeps_dtype(rng):
    C1, C2, p, q = _problem(rng, 8, 6)
    r = gromov_wasserstein(C1.astype(np.float32), C2.astype(np.float32), reg=0.1)
    assert r.plan.dtype == np.float32 and r.cost.dtype == np.float32
    assert_close(r.cost, float(gromov_wasserstein(C1, C2, reg=0.1).cost), rtol=1e-4)


def test_low_rank_structures_give_the_dense_answer(rng):
    """Squared Euclidean distance matrices (rank d + 2) take the factored tensor products; the answer is the
    dense one to round-off."""
    from optnorm.ot import gromov as G

    n = 160
    x, y = rng.standard_normal((n, 2)), rng.standard_normal((n, 3))
    C1, C2 = _dist(x, sq=True), _dist(y, sq=True)
    C1, C2 = C1 / C1.max(), C2 / C2.max()
    P = G._Problem(C1, C2, None, None, None, loss="square_loss", alpha=1.0, symmetric=None, fn="t")
    assert P.f1 is not None and P.f2 is not None and P.f1[0].shape[1] <= 5
    T = rng.random((n, n)) / n ** 2
    assert_close(P.sandwich(T), P.h1 @ T @ P.h2.T, rtol=1e-11, atol=1e-13 * np.abs(P.h1 @ T @ P.h2.T).max())
    assert G._low_rank(rng.standard_normal((n, n)), np) is None
    T_ref, log = ot.gromov.entropic_gromov_wasserstein(C1, C2, epsilon=0.05, log=True, max_iter=30, tol=0)
    r = gromov_wasserstein(C1, C2, reg=0.05, max_iter=30, tol=0)
    assert_close(r.plan, T_ref, atol=1e-9)


def test_callback_progress_and_non_convergence(rng, capsys):
    C1, C2, p, q = _problem(rng, 10, 8)
    seen = []
    r = gromov_wasserstein(C1, C2, reg=0.05, callback=lambda s: seen.append((s.n_iter, s.error, s.cost)) or
                           s.n_iter >= 3)
    assert [s[0] for s in seen] == [1, 2, 3] and r.n_iter == 3 and not r.converged
    assert all(np.isfinite(c) for _, _, c in seen)
    with pytest.warns(optnorm.ConvergenceWarning, match="gromov_wasserstein did not converge in 2 iterations"):
        r = gromov_wasserstein(C1, C2, reg=0.01, max_iter=2)
    assert not r.converged and len(r.errors) == 2
    gromov_wasserstein(C1, C2, progress=True)
    err = capsys.readouterr().err
    assert "gromov_wasserstein" in err
    assert "GWResult(" in repr(r) and len(repr(r)) < 400 and "converged" in r.summary()


def test_bad_input(rng):
    C1, C2, p, q = _problem(rng, 6, 5)
    with pytest.raises(ValueError, match="C1 must be square|C1 has shape"):
        gromov_wasserstein(C1[:, :4], C2)
    with pytest.raises(ValueError, match="symmetric=True but C1 is not symmetric"):
        gromov_wasserstein(C1 + np.triu(np.ones((6, 6))), C2, symmetric=True)
    with pytest.raises(ValueError, match="kl_loss' needs C2 >= 0"):
        gromov_wasserstein(C1, C2 - 1.0, loss="kl_loss")
    with pytest.raises(ValueError, match=r"reg must be in \(0, inf\)"):
        gromov_wasserstein(C1, C2, reg=-1.0)
    with pytest.raises(ValueError, match="reg must be finite"):
        gromov_wasserstein(C1, C2, reg=np.inf)
    with pytest.raises(ValueError, match="alpha must be in"):
        fused_gromov_wasserstein(rng.random((6, 5)), C1, C2, alpha=1.5)
    with pytest.raises(ValueError, match="G0 must have marginals"):
        gromov_wasserstein(C1, C2, p, q, G0=np.full((6, 5), 1 / 30))
    with pytest.raises(ValueError, match="C2 contains NaN"):
        gromov_wasserstein(C1, C2 * np.nan)
    with pytest.raises(ValueError, match="but M has n = 5"):
        fused_gromov_wasserstein(rng.random((5, 6)), C1, C2)
