"""The SIMD-lane Numba kernels (eight pairs per group) against the per-pair kernels, whose arithmetic they
repeat, and against the generic path: batch sizes that leave partial groups, n from 2 to 20, non-positive-definite
lanes, magnitudes near the dtype's range, identical pairs."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba", reason="Numba is not installed")

from optnorm._numba import spd as per_pair  # noqa: E402
from optnorm._numba import spd_distances as nbd  # noqa: E402
from optnorm._numba import spd_lanes as lanes  # noqa: E402
from optnorm.testing import assert_close  # noqa: E402

from .helpers import random_spd  # noqa: E402


@pytest.mark.parametrize("n,m", [(2, 1), (3, 7), (5, 9), (16, 33), (20, 8)])
def test_pairs_match_the_per_pair_kernels(rng, n, m):
    A, B = random_spd(rng, (m,), n), random_spd(rng, (m,), n)
    B[0] = A[0]
    d0, e0 = per_pair.bw_dist2_batched(A, B)
    d1, e1 = lanes.bw_dist2_pairs_lanes(A, B)
    assert_close(d1, d0, rtol=1e-12, atol=1e-12)       # identical pair: rounding noise of the trace formula
    assert_close(e1, e0, rtol=1e-10, atol=1e-16)
    a0, f0 = nbd.airm_dist2_pairs(A, B)
    a1, f1 = lanes.airm_dist2_pairs_lanes(A, B)
    assert_close(a1, a0, rtol=1e-12, atol=1e-14)
    assert np.array_equal(f0, f1) and a1[0] == 0.0


def test_pairwise_matches_the_per_pair_kernels(rng):
    X, Y = random_spd(rng, (13,), 6), random_spd(rng, (11,), 6)
    for fa, fb in ((nbd.airm_dist2_pairwise, lanes.airm_dist2_pairwise_lanes),
                   (nbd.bw_dist2_pairwise, lanes.bw_dist2_pairwise_lanes)):
        for Z in (Y, None):
            assert_close(fb(X, Z)[0], fa(X, Z)[0], rtol=1e-12, atol=1e-13)


def test_lanes_with_bad_or_extreme_pairs(rng):
    A, B = random_spd(rng, (9,), 4), random_spd(rng, (9,), 4)
    A[2] -= 10 * np.eye(4)                     # not positive definite: NaN in that lane only
    B[5] *= 1e250
    A[6] *= 1e-250                             # magnitudes 1e500 apart: the AIRM shift form, flagged range
    d, _ = lanes.bw_dist2_pairs_lanes(A, B)
    a, f = lanes.airm_dist2_pairs_lanes(A, B)
    assert np.isnan(d[2]) and np.isnan(a[2])
    ok = [0, 1, 3, 4, 7, 8]
    assert np.all(np.isfinite(d[ok])) and np.all(np.isfinite(a[ok]))
    d0, _ = per_pair.bw_dist2_batched(A, B)
    a0, f0 = nbd.airm_dist2_pairs(A, B)
    assert_close(d, d0, rtol=1e-12)
    assert_close(a, a0, rtol=1e-12)
    assert np.array_equal(f, f0)
