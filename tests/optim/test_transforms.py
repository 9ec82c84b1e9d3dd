"""The shared pieces of optnorm/optim/transforms.py: newton_schulz_orthogonalize at extreme magnitudes,
the overflow-free clipped ratio of FAdam, Muon's shape factors."""
from __future__ import annotations

import numpy as np
import pytest

import optnorm.optim as oo
from optnorm.optim import transforms as T
from optnorm.testing import assert_close


@pytest.mark.parametrize("scale,dtype", [(1e300, np.float64), (1e-300, np.float64), (1e30, np.float32)])
def test_newton_schulz_at_extreme_magnitudes(rng, scale, dtype):
    """|G|_F used to overflow to inf for entries near the dtype's range (the result became 0)."""
    G = rng.standard_normal((2, 5, 3))
    ref = oo.newton_schulz_orthogonalize(G)
    got = oo.newton_schulz_orthogonalize((G * scale).astype(dtype))
    assert got.dtype == dtype and np.all(np.isfinite(got))
    if scale > 1e-100:                      # tiny gradients stay tiny (torch's clamp(min=eps) of the norm)
        assert_close(got, ref, rtol=1e-9 if dtype == np.float64 else 1e-4, atol=1e-5 if dtype == np.float32 else 0,
                     check_dtype=False)


def test_clip_ratio_by_rms_without_overflow():
    xp = __import__("array_api_compat.numpy", fromlist=["x"])
    x = np.array([1.0, -2.0, 3.0], np.float32)
    den = np.array([0.5, 1.0, 2.0], np.float32)
    y = x / den
    assert_close(T.clip_ratio_by_rms(x, den, 1.0, xp), y / max(1.0, np.sqrt(np.mean(y * y))), rtol=1e-6)
    tiny = np.array([1e-44, 1.0, 1.0], np.float32)          # x / den overflows float32 in the first entry
    out = T.clip_ratio_by_rms(x, tiny, 1.0, xp)
    assert np.all(np.isfinite(out)) and np.sqrt(np.mean(out.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-5)


def test_matrix_shape_scale():
    assert T.matrix_shape_scale((16, 4), "original") == 2.0
    assert T.matrix_shape_scale((4, 16), "original") == 1.0
    assert T.matrix_shape_scale((16, 4), "spectral") == 2.0
    assert T.matrix_shape_scale((25, 4), "match_rms_adamw") == pytest.approx(1.0)


@pytest.mark.parametrize("scale", [1.0, 1e300, 1e-300, 1e-160])
def test_stable_norm_fast_path_of_large_arrays(rng, scale):
    """Large CPU arrays take the library's norm in one pass unless it overflowed or squares could underflow."""
    import array_api_compat.numpy as xnp

    from optnorm.optim._common import stable_norm

    x = rng.standard_normal(10_000)
    got = stable_norm(x * scale, xnp)
    ref = np.linalg.norm(x) * scale
    assert np.isfinite(got) and got == pytest.approx(ref, rel=1e-12)
    if scale == 1.0:
        assert got == xnp.linalg.vector_norm(x)                        # bitwise the library's norm
