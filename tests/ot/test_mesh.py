"""mesh_to_measure: areas, centroids, normals, sampling law, VJPs, SW between meshes, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from optnorm.ot import mesh_to_measure, sliced_wasserstein
from optnorm.testing import assert_close, check_vjp

TET_V = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
TET_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])      # outward orientation


def _ref(V, F):
    A, B, C = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    N = np.cross(B - A, C - A)
    area = 0.5 * np.linalg.norm(N, axis=1)
    return (A + B + C) / 3, N / np.linalg.norm(N, axis=1, keepdims=True), area / area.sum()


def test_varifold_and_centroids(xp):
    pts, w = mesh_to_measure(xp.asarray(TET_V), xp.asarray(TET_F), kind="varifold")
    c, n, wr = _ref(TET_V, TET_F)
    assert_close(pts, np.concatenate([c, n], axis=1), rtol=1e-12, atol=1e-15, xp=xp)
    assert_close(w, wr, rtol=1e-12, xp=xp)
    assert np.all(np.sum(np.asarray(pts)[:, 3:] * (c - 0.25), axis=1) > 0)   # outward normals
    pc, wc = mesh_to_measure(xp.asarray(TET_V), xp.asarray(TET_F))
    assert_close(pc, c, rtol=1e-12, atol=1e-15, xp=xp)


def test_samples_follow_the_area_law():
    V = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [3, 0, 0], [0, 3, 0]])
    F = np.array([[0, 1, 2], [0, 3, 4]])                               # area 0.5 and 4.5 (nested)
    pts, w = mesh_to_measure(V, F, n_samples=20000, seed=0)
    assert_close(w, np.full(20000, 1 / 20000))
    assert np.all(pts[:, 2] == 0) and np.all(pts[:, :2].sum(1) <= 3 + 1e-12) and np.all(pts[:, :2] >= -1e-12)
    # mixture: mass 0.1 on the small triangle (x + y <= 1), 0.9 uniform on the big one (P(x + y <= 1) = 1/9)
    frac = np.mean(pts[:, :2].sum(1) <= 1)
    q = 0.1 + 0.9 / 9
    assert abs(frac - q) < 4 * np.sqrt(q * (1 - q) / 20000)
    assert_close(pts.mean(0), [0.1 / 3 + 0.9, 0.1 / 3 + 0.9, 0.0], atol=0.03)


@pytest.mark.parametrize("kind,n_samples", [("area", None), ("varifold", None), ("area", 40)])
def test_vjp(rng, kind, n_samples):
    V = TET_V + 0.1 * rng.standard_normal((4, 3))
    check_vjp("ot.mesh_to_measure", V, TET_F, opts=dict(kind=kind, n_samples=n_samples, seed=0))


def test_sw_between_meshes_differentiates_through_weights(rng):
    torch = pytest.importorskip("torch")
    import optnorm.torch as ont

    V = torch.tensor(TET_V + 0.05 * rng.standard_normal((4, 3)), requires_grad=True)
    F = torch.tensor(TET_F)
    pts, w = ont.mesh_to_measure(V, F, kind="varifold")
    target, wt = mesh_to_measure(TET_V * 1.5, TET_F, kind="varifold")
    loss = ont.sliced_wasserstein(pts, torch.tensor(target), w, torch.tensor(wt), n_projections=32, seed=0)
    loss.backward()
    assert V.grad is not None and torch.all(torch.isfinite(V.grad)) and float(V.grad.abs().sum()) > 0
    assert float(sliced_wasserstein(*mesh_to_measure(TET_V, TET_F, kind="varifold")[:1], target, None, None,
                                    n_projections=8, seed=0)) > 0


def test_bad_input():
    with pytest.raises(TypeError, match="faces must have an integer dtype"):
        mesh_to_measure(TET_V, TET_F.astype(float))
    with pytest.raises(ValueError, match=r"faces has label 4, outside \[0, 4\)"):
        mesh_to_measure(TET_V, TET_F + 1)
    with pytest.raises(ValueError, match="vertices must have shape"):
        mesh_to_measure(TET_V[:, :2], TET_F)
    with pytest.raises(ValueError, match="kind must be one of"):
        mesh_to_measure(TET_V, TET_F, kind="volume")
    with pytest.raises(ValueError, match="n_samples must be None for kind='varifold'"):
        mesh_to_measure(TET_V, TET_F, kind="varifold", n_samples=10)
    with pytest.raises(ValueError, match="zero total area"):
        mesh_to_measure(np.zeros((4, 3)), TET_F)


@pytest.mark.parametrize("t", [1e300, 1e-300])
@pytest.mark.parametrize("kind", ["area", "varifold"])
def test_extreme_magnitudes(t, kind):
    """Issue #13: areas (cross products) overflowed near the dtype's range; they are computed on V / 2^k."""
    pts, w = mesh_to_measure(TET_V, TET_F, kind=kind)
    pt, wt = mesh_to_measure(TET_V * t, TET_F, kind=kind)
    assert np.all(np.isfinite(pt)) and np.all(np.isfinite(wt))
    assert_close(wt, w, rtol=1e-12)
    assert_close(pt[:, :3], t * pts[:, :3], rtol=1e-12)
    if kind == "varifold":
        assert_close(pt[:, 3:], pts[:, 3:], rtol=1e-12, atol=1e-15)
    ps, _ = mesh_to_measure(TET_V * t, TET_F, n_samples=100, seed=0)
    assert np.all(np.isfinite(ps))
