"""BW / AIRM / LEM distances: pyRiemann and float64 references on every backend, the Numba kernel, VJPs, edge cases."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

import optnorm.spd as spd
from optnorm.testing import assert_close, check_vjp

from .helpers import random_spd, ref_bw2, ref_funm, to



@pytest.mark.parametrize("name,peer", [("bw_distance", "distance_wasserstein"), ("airm_distance", "distance_riemann"),
                                       ("lem_distance", "distance_logeuclid")])
def test_distances_match_pyriemann(xp, rng, name, peer):
    pyr = pytest.importorskip("pyriemann.geometry.distance", reason="pyRiemann is not installed")
    A, B = random_spd(rng, (7,), 5), random_spd(rng, (7,), 5)
    d = getattr(spd, name)(to(xp, A), to(xp, B))
    assert_close(d, getattr(pyr, peer)(A, B), rtol=1e-10, atol=1e-12, xp=xp)
    d2 = getattr(spd, name)(to(xp, A), to(xp, B), squared=True)
    assert_close(d2, getattr(pyr, peer)(A, B) ** 2, rtol=1e-10, atol=1e-12, xp=xp)


def test_distances_float64_references(rng):
    A, B = random_spd(rng, (2, 3), 4), random_spd(rng, (2, 3), 4)
    assert_close(spd.bw_distance(A, B, squared=True), ref_bw2(A, B), rtol=1e-10)
    Ai = np.linalg.inv(ref_funm(A, np.sqrt))
    mu = np.linalg.eigvalsh(Ai @ B @ Ai)
    assert_close(spd.airm_distance(A, B), np.sqrt(np.sum(np.log(mu) ** 2, -1)), rtol=1e-10)
    D = ref_funm(A, np.log) - ref_funm(B, np.log)
    assert_close(spd.lem_distance(A, B), np.linalg.norm(D, axis=(-2, -1)), rtol=1e-10)


def test_broadcast_and_float32(xp, rng):
    A, B = random_spd(rng, (4,), 3), random_spd(rng, (), 3)
    d = spd.bw_distance(to(xp, A.astype(np.float32)), to(xp, B.astype(np.float32)))
    assert d.dtype == xp.float32 and tuple(d.shape) == (4,)
    assert_close(d, np.sqrt(ref_bw2(A, np.broadcast_to(B, A.shape))), rtol=1e-4, check_dtype=False, xp=xp)


@pytest.mark.parametrize("n", [2, 3, 16, 40])
def test_bw_numba_kernel_matches_generic(rng, path, n):
    A, B = random_spd(rng, (30,), n), random_spd(rng, (30,), n)
    assert_close(spd.bw_distance(A, B), np.sqrt(ref_bw2(A, B)), rtol=1e-10, atol=1e-12)
    assert_close(spd.bw_distance(A.astype(np.float32), B.astype(np.float32)), np.sqrt(ref_bw2(A, B)), rtol=1e-4,
                 check_dtype=False)


def test_self_distance_is_zero_not_nan(rng):
    A = random_spd(rng, (3,), 4)
    for f in (spd.bw_distance, spd.airm_distance, spd.lem_distance):
        d = f(A, A)
        assert np.all(np.isfinite(d)) and np.all(d < 1e-6)
    I = np.eye(3)
    assert spd.bw_distance(I, I) == 0.0


@pytest.mark.parametrize("name", ["bw_distance", "airm_distance", "lem_distance"])
@pytest.mark.parametrize("squared", [False, True])
def test_distance_vjp(rng, name, squared):
    A, B = random_spd(rng, (3,), 4), random_spd(rng, (3,), 4)
    check_vjp(name, A, B, opts=dict(squared=squared, check=False))
    check_vjp(name, A, B[0], opts=dict(squared=squared, check=False))


def test_bw_gradient_is_identity_minus_transport_map(rng):
    A, B = random_spd(rng, (), 4), random_spd(rng, (), 4)
    from optnorm.spd.distances import bw_distance_bwd as _bw_distance_bwd, bw_distance_fwd

    _, res = bw_distance_fwd(A, B, squared=True)
    gA, gB = _bw_distance_bwd(res, np.array(1.0))
    T = np.eye(4) - gA
    assert_close(T @ A @ T, B, rtol=1e-10)                 # T pushes N(0, A) to N(0, B)
    assert_close(np.eye(4) - gB, np.linalg.inv(T), rtol=1e-9)


@given(st.floats(1.0, 8.0), st.sampled_from(["float32", "float64"]))
def test_ill_conditioned_distances_finite(log_cond, dtype):
    if dtype == "float32":
        log_cond = min(log_cond, 4.0)
    rng = np.random.default_rng(int(log_cond * 977))
    A = random_spd(rng, (2,), 5, cond=10 ** log_cond).astype(dtype)
    B = random_spd(rng, (2,), 5, cond=10 ** log_cond).astype(dtype)
    from optnorm.spd import distances as D

    for fwd, bwd in ((D.bw_distance_fwd, D.bw_distance_bwd), (D.airm_distance_fwd, D.airm_distance_bwd),
                     (D.lem_distance_fwd, D.lem_distance_bwd)):
        d, res = fwd(A, B, check=False)
        assert np.all(np.isfinite(d))
        ga, gb = bwd(res, np.ones_like(d))
        assert np.all(np.isfinite(ga)) and np.all(np.isfinite(gb))


def test_bad_input(rng):
    A = random_spd(rng, (), 3)
    with pytest.raises(ValueError, match="B must be positive definite; its smallest eigenvalue is -2"):
        spd.bw_distance(A, np.diag([1.0, 1.0, -2.0]))
    with pytest.raises(ValueError, match="A must be positive definite; its smallest eigenvalue is -3"):
        spd.bw_distance(np.stack([A, np.diag([1.0, 1.0, -3.0])]), A)   # batched: the Numba path flags it
    with pytest.raises(ValueError, match="B has shape .* but A has n = 3"):
        spd.airm_distance(A, np.eye(4))
    with pytest.raises(ValueError, match="do not broadcast"):
        spd.lem_distance(random_spd(rng, (2,), 3), random_spd(rng, (3,), 3))
    with pytest.raises(ValueError, match="A is not symmetric"):
        spd.bw_distance(A + np.triu(np.ones((3, 3)), 1), A)
    torch = pytest.importorskip("torch", reason="torch is not installed")
    with pytest.raises(TypeError, match="A is numpy, B is torch"):
        spd.bw_distance(A, torch.tensor(A))


def test_rootfree_ql_tridiagonal(rng):
    """The root-free QL of the Numba kernel on tridiagonals with zeros, repeated values and wide magnitudes."""
    from scipy.linalg import eigh_tridiagonal

    from optnorm._numba.spd import _ql_rootfree

    for trial in range(300):
        n = int(rng.integers(1, 20))
        d = rng.standard_normal(n) * 10 ** rng.uniform(-3, 3)
        e = rng.standard_normal(max(n - 1, 0)) * 10 ** rng.uniform(-3, 3)
        if trial % 5 == 0:
            e[rng.random(n - 1) < 0.3] = 0.0
        if trial % 7 == 0:
            d[:] = 1.0
        ref = np.sort(eigh_tridiagonal(d, e, eigvals_only=True))
        dd, e2 = d.copy(), np.r_[e ** 2, 0.0]
        _ql_rootfree(dd, e2, n)
        assert np.abs(np.sort(dd) - ref).max() <= 1e-13 * max(np.abs(ref).max(), 1e-300)


# ---------------------------------------------------------------- hardening (issue 13)
@pytest.mark.parametrize("n", [3, 5, 10, 40])
def test_bw_self_distance_at_condition_1e8(rng, path, n):
    """d(A, A) for cond(A) = 1e8 was 6e-5 (the trace formula cancels); the Procrustes form gives ~1e-15."""
    A = random_spd(rng, (3,), n, cond=1e8)
    d = spd.bw_distance(A, A)
    assert np.all(d <= 1e-12), d
    assert np.all(spd.bw_distance(A, A, squared=True) <= 1e-24)


def _commuting_pair(rng, n, cond, rel):
    """A = Q diag(a) Q^T and B = Q diag(b) Q^T: d^2 = sum (a - b)^2 / (sqrt a + sqrt b)^2 exactly, a float64
    reference without cancellation."""
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = np.logspace(0, -np.log10(cond), n)
    b = a * (1 + rel * rng.standard_normal(n))
    ref = np.sqrt(np.sum((a - b) ** 2 / (np.sqrt(a) + np.sqrt(b)) ** 2))
    return (Q * a) @ Q.T, (Q * b) @ Q.T, ref


@pytest.mark.parametrize("rel", [1e-6, 1e-3, 0.3])
def test_bw_distance_accurate_for_close_ill_conditioned_pairs(xp, rng, rel):
    for n in (4, 12):
        A, B, ref = _commuting_pair(rng, n, 1e8, rel)
        d = spd.bw_distance(to(xp, A), to(xp, B))
        # rounding A and B costs ~eps ||A|| / sqrt(lambda_min) = 1e-12 in d; the trace formula was off by 1e-8
        assert_close(d, np.asarray(ref), rtol=1e-6, atol=5e-12, xp=xp)


def test_bw_numba_kernel_reports_its_error_bound(rng):
    from optnorm._numba import spd as nb

    A = random_spd(rng, (4,), 6, cond=1e8)
    B = random_spd(rng, (4,), 6)
    d2, err = nb.bw_dist2_batched(np.concatenate([A, A]), np.concatenate([A, B]))
    assert np.all(err[:4] > 1e-10 * d2[:4])          # identical pairs: the bound flags the cancellation
    assert np.all(err[4:] < 1e-10 * d2[4:])          # distinct pairs: the trace formula is kept


@pytest.mark.parametrize("scale", [1e300, 1e-300])
@pytest.mark.parametrize("name,power", [("bw_distance", 0.5), ("airm_distance", 0.0), ("lem_distance", 0.0)])
def test_distances_near_the_dtype_range(rng, path, name, power, scale):
    A, B = random_spd(rng, (3,), 4), random_spd(rng, (3,), 4)
    f = getattr(spd, name)
    d = f(A * scale, B * scale)
    assert np.all(np.isfinite(d))
    assert_close(d, f(A, B) * scale ** power, rtol=1e-10)


def test_bw_loss_accurate_at_convergence(rng):
    """bw_loss(A, B) with A -> B (a trained model): the Procrustes form, not the cancelling trace formula."""
    A, B, ref = _commuting_pair(rng, 6, 1e8, 1e-6)
    assert_close(spd.bw_loss(A, B), np.asarray(ref ** 2), rtol=1e-5, atol=1e-22)
    assert float(spd.bw_loss(A, A)) <= 1e-24


def test_pairs_of_very_different_magnitude(path):
    """A common scale by the larger matrix would underflow the smaller: the geometric mean keeps both."""
    A, B = 1e300 * np.eye(3), 1e-300 * np.eye(3)
    assert_close(spd.bw_distance(A, B), np.asarray(np.sqrt(3) * (1e150 - 1e-150)), rtol=1e-12)
    assert_close(spd.lem_distance(A, B), np.asarray(np.sqrt(3) * 600 * np.log(10)), rtol=1e-12)
    # AIRM needs the ratio B/A = 1e-600 itself: refused rather than floored to the smallest normal number
    with pytest.raises(ValueError, match="airm_distance: the generalized eigenvalues of \\(B, A\\) leave"):
        spd.airm_distance(A, B)


_CACHE_SCRIPT = """
import sys
import numpy as np
from optnorm._numba import spd as nb
from optnorm._numba import spd_distances as nb_dist
rng = np.random.default_rng(0)
G = rng.standard_normal((2, 20, 6, 12))
A, B = G @ np.swapaxes(G, -1, -2) / 12 + 0.1 * np.eye(6)
d, e = nb.bw_dist2_batched(A * 1e300, B)
d0, e0 = nb.bw_dist2_batched(A, A * (1 + 1e-9))          # distances near 0: all cancellation
pw = [nb_dist.bw_dist2_pairwise(A, A * (1 + 1e-9))[0], nb_dist.airm_dist2_pairwise(A, B)[0],
      nb_dist.airm_dist2_pairs(A, B)[0]]
w, V = nb.eigh_batched(A * 1e-300)
np.save(sys.argv[1], np.concatenate([d, e, d0, e0, np.concatenate([np.ravel(q) for q in pw]), w.ravel(), V.ravel()]))
"""


@pytest.mark.slow
def test_numba_kernels_compute_the_same_fresh_and_cached(tmp_path):
    """A kernel loaded from the on-disk cache computes bit for bit what a freshly compiled one does."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    script = tmp_path / "run.py"
    script.write_text(_CACHE_SCRIPT)
    for k in (1, 2):        # the first run compiles and writes the cache, the second loads it
        subprocess.run([sys.executable, str(script), str(tmp_path / f"r{k}.npy")], env=env, check=True, timeout=600)
    r1, r2 = np.load(tmp_path / "r1.npy"), np.load(tmp_path / "r2.npy")
    assert np.all(np.isfinite(r1)) and np.array_equal(r1, r2)
