"""Boxes as Gaussians: box_to_gaussian, box_wasserstein, normalized_wasserstein_boxes."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import scipy.linalg

import optnorm
from optnorm.ot import box_to_gaussian, box_wasserstein, normalized_wasserstein_boxes
from optnorm.testing import assert_close, check_vjp

HAVE_GW = importlib.util.find_spec("optnorm.ot.gaussian") is not None


def _rand_boxes(rng, shape, fmt):
    cx = rng.uniform(0, 50, shape)
    cy = rng.uniform(0, 50, shape)
    w = rng.uniform(1, 20, shape)
    h = rng.uniform(1, 20, shape)
    if fmt == "xyxy":
        return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    if fmt == "cxcywh":
        return np.stack([cx, cy, w, h], -1)
    return np.stack([cx, cy, w, h, rng.uniform(-np.pi, np.pi, shape)], -1)


def _cxcywha(b, fmt):
    b = np.asarray(b, np.float64)
    if fmt == "xyxy":
        out = np.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2, b[..., 2] - b[..., 0],
                        b[..., 3] - b[..., 1], np.zeros(b.shape[:-1])], -1)
    elif fmt == "cxcywh":
        out = np.concatenate([b, np.zeros(b.shape[:-1] + (1,))], -1)
    else:
        out = b
    return out


def _ref_gauss(b, fmt):
    """Independent: build the Gaussian with explicit rotation matrices."""
    p = _cxcywha(b, fmt).reshape(-1, 5)
    means, covs = [], []
    for cx, cy, w, h, t in p:
        R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        means.append([cx, cy])
        covs.append(R @ np.diag([w * w / 4, h * h / 4]) @ R.T)
    shp = np.shape(b)[:-1]
    return np.array(means).reshape(shp + (2,)), np.array(covs).reshape(shp + (2, 2))


def _ref_w2sq(m1, C1, m2, C2):
    """Bures-Wasserstein with scipy's matrix square root (float64, one pair at a time)."""
    s1 = scipy.linalg.sqrtm(C1)
    cross = scipy.linalg.sqrtm(s1 @ C2 @ s1)
    return float(np.sum((m1 - m2) ** 2) + np.trace(C1) + np.trace(C2) - 2 * np.real(np.trace(cross)))


def _yolo_nwd(pred, target, eps=1e-7, constant=12.8):
    """The closed form as written in detection code (cxcywh), re-typed here for the test."""
    dc = pred[..., :2] - target[..., :2]
    center = dc[..., 0] ** 2 + dc[..., 1] ** 2 + eps
    w1, h1 = pred[..., 2] + eps, pred[..., 3] + eps
    w2, h2 = target[..., 2] + eps, target[..., 3] + eps
    wh = ((w1 - w2) ** 2 + (h1 - h2) ** 2) / 4
    return np.exp(-np.sqrt(center + wh) / constant)


@pytest.mark.parametrize("fmt", ["xyxy", "cxcywh", "cxcywha"])
def test_box_to_gaussian(xp, rng, fmt):
    b = _rand_boxes(rng, (3, 4), fmt)
    m, C = box_to_gaussian(xp.asarray(b), format=fmt)
    mr, Cr = _ref_gauss(b, fmt)
    assert_close(m, mr, rtol=1e-12, atol=1e-12)
    assert_close(C, Cr, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fmt", ["xyxy", "cxcywh", "cxcywha"])
def test_box_wasserstein_matches_bures(xp, rng, fmt):
    b1, b2 = _rand_boxes(rng, (5,), fmt), _rand_boxes(rng, (5,), fmt)
    m1, C1 = _ref_gauss(b1, fmt)
    m2, C2 = _ref_gauss(b2, fmt)
    ref = np.array([_ref_w2sq(m1[i], C1[i], m2[i], C2[i]) for i in range(5)])
    d2 = box_wasserstein(xp.asarray(b1), xp.asarray(b2), format=fmt, squared=True)
    assert_close(d2, ref, rtol=1e-8, atol=1e-8)
    d = box_wasserstein(xp.asarray(b1), xp.asarray(b2), format=fmt)
    assert_close(d, np.sqrt(ref), rtol=1e-8, atol=1e-8)


@pytest.mark.skipif(not HAVE_GW, reason="optnorm.ot.gaussian (branch ot) is not merged into this branch yet")
@pytest.mark.parametrize("fmt", ["xyxy", "cxcywha"])
def test_box_wasserstein_equals_gaussian_wasserstein(rng, fmt):
    from optnorm.ot.gaussian import gaussian_wasserstein

    b1, b2 = _rand_boxes(rng, (6,), fmt), _rand_boxes(rng, (4,), fmt)
    m1, C1 = box_to_gaussian(b1, format=fmt)
    m2, C2 = box_to_gaussian(b2, format=fmt)
    ref = gaussian_wasserstein(m1[:, None], C1[:, None], m2[None], C2[None])
    assert_close(box_wasserstein(b1, b2, format=fmt, pairwise=True), ref, rtol=1e-7, atol=1e-7)
    nwd = normalized_wasserstein_boxes(b1, b2, format=fmt, pairwise=True, eps=0.0, C=7.0)
    assert_close(nwd, np.exp(-np.asarray(ref) / 7.0), rtol=1e-7, atol=1e-9)


def test_nwd_matches_detection_closed_form(xp, rng):
    b1, b2 = _rand_boxes(rng, (7,), "cxcywh"), _rand_boxes(rng, (7,), "cxcywh")
    y = normalized_wasserstein_boxes(xp.asarray(b1), xp.asarray(b2), format="cxcywh")
    assert_close(y, _yolo_nwd(b1, b2), rtol=1e-12)
    # same boxes in xyxy give the same value
    x1 = np.concatenate([b1[:, :2] - b1[:, 2:] / 2, b1[:, :2] + b1[:, 2:] / 2], -1)
    x2 = np.concatenate([b2[:, :2] - b2[:, 2:] / 2, b2[:, :2] + b2[:, 2:] / 2], -1)
    assert_close(normalized_wasserstein_boxes(xp.asarray(x1), xp.asarray(x2)), _yolo_nwd(b1, b2), rtol=1e-10)


def test_broadcast_and_float32(xp, rng):
    b1 = _rand_boxes(rng, (3, 1), "xyxy")
    b2 = _rand_boxes(rng, (1, 4), "xyxy")
    ref = np.asarray(normalized_wasserstein_boxes(b1, b2))
    assert ref.shape == (3, 4)
    y = normalized_wasserstein_boxes(xp.asarray(b1.astype(np.float32)), xp.asarray(b2.astype(np.float32)))
    assert y.dtype == xp.float32
    assert_close(y, ref, rtol=2e-5)
    # pairwise equals broadcasting
    p = normalized_wasserstein_boxes(xp.asarray(b1[:, 0]), xp.asarray(b2[0]), pairwise=True)
    assert_close(p, ref, rtol=1e-12)


@pytest.mark.parametrize("fmt", ["xyxy", "cxcywh", "cxcywha"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pairwise_paths(path, rng, fmt, dtype):
    b1 = _rand_boxes(rng, (9,), fmt).astype(dtype)
    b2 = _rand_boxes(rng, (11,), fmt).astype(dtype)
    ref = np.array([[np.exp(-np.sqrt(_ref_w2sq(*_ref_gauss(b1[i], fmt), *_ref_gauss(b2[j], fmt)) + 1e-7) / 12.8)
                     for j in range(11)] for i in range(9)])
    y = normalized_wasserstein_boxes(b1, b2, format=fmt, pairwise=True)
    assert y.dtype == dtype and y.shape == (9, 11)
    tol = 1e-5 if dtype == np.float32 else 1e-9
    assert_close(y, ref, rtol=tol, atol=tol)
    d = box_wasserstein(b1, b2, format=fmt, pairwise=True, squared=True)
    assert_close(d, (12.8 * np.log(ref)) ** 2 - 1e-7, rtol=1e-3 if dtype == np.float32 else 1e-7, atol=1e-3)


def test_identical_boxes_and_far_boxes():
    b = np.array([[10.0, 10.0, 14.0, 12.0]])
    assert float(normalized_wasserstein_boxes(b, b)[0]) == pytest.approx(np.exp(-np.sqrt(1e-7) / 12.8))
    assert float(box_wasserstein(b, b)[0]) == 0.0
    far = b + 1e4
    assert float(normalized_wasserstein_boxes(b, far)[0]) == 0.0
    # rotated: a box turned by pi is the same Gaussian
    r = np.array([[5.0, 5.0, 4.0, 2.0, 0.3]])
    r2 = r.copy()
    r2[0, 4] += np.pi
    assert float(box_wasserstein(r, r2, format="cxcywha")[0]) < 1e-6


@pytest.mark.parametrize("fmt", ["xyxy", "cxcywh", "cxcywha"])
def test_vjps(rng, fmt):
    b1, b2 = _rand_boxes(rng, (3,), fmt), _rand_boxes(rng, (3,), fmt)
    check_vjp("ot.box_to_gaussian", b1, opts={"format": fmt})
    for pairwise in (False, True):
        check_vjp("ot.normalized_wasserstein_boxes", b1, b2, opts={"format": fmt, "pairwise": pairwise, "C": 10.0})
        check_vjp("ot.box_wasserstein", b1, b2, opts={"format": fmt, "pairwise": pairwise})
    check_vjp("ot.box_wasserstein", b1, b2, opts={"format": fmt, "squared": True})
    # broadcasting VJP sums over the broadcast axis
    check_vjp("ot.normalized_wasserstein_boxes", b1[:, None], _rand_boxes(rng, (1, 2), fmt), opts={"format": fmt})


def test_adapters(rng):
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    import optnorm.jax as onj
    import optnorm.torch as ont

    b1, b2 = _rand_boxes(rng, (3,), "cxcywha"), _rand_boxes(rng, (2,), "cxcywha")
    t1 = torch.tensor(b1, requires_grad=True)
    t2 = torch.tensor(b2, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: ont.normalized_wasserstein_boxes(a, b, format="cxcywha", pairwise=True, C=8.0), (t1, t2))
    assert torch.autograd.gradcheck(lambda a: ont.box_to_gaussian(a, format="cxcywha"), (t1,))
    x1 = _rand_boxes(rng, (3,), "xyxy")
    assert torch.autograd.gradcheck(lambda a, b: ont.box_wasserstein(a, b), (torch.tensor(x1, requires_grad=True),
                                                                           torch.tensor(x1[::-1].copy(),
                                                                                        requires_grad=True)))
    j1, j2 = jax.numpy.asarray(b1), jax.numpy.asarray(b2)
    f = lambda a, b: onj.normalized_wasserstein_boxes(a, b, format="cxcywha", pairwise=True, C=8.0)  # noqa: E731
    check_grads(f, (j1, j2), order=1, modes=["rev"])
    check_grads(lambda a: onj.box_to_gaussian(a, format="cxcywha")[1], (j1,), order=1, modes=["rev"])
    g = jax.jit(jax.grad(lambda a, b: f(a, b).sum()))(j1, j2)
    assert g.shape == b1.shape


def test_bad_input():
    b = np.array([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="b1 contains boxes with negative width"):
        normalized_wasserstein_boxes(np.array([[2.0, 0.0, 1.0, 1.0]]), b)
    with pytest.raises(ValueError, match="b2 contains boxes with negative width"):
        normalized_wasserstein_boxes(b, np.array([[0.0, 0.0, 1.0, -1.0]]), format="cxcywh", pairwise=True)
    with pytest.raises(ValueError, match="b1 must have a last axis of size 5"):
        box_wasserstein(b, b, format="cxcywha")
    with pytest.raises(ValueError, match="boxes must have a last axis of size 4"):
        box_to_gaussian(np.ones((2, 3)))
    with pytest.raises(ValueError, match="format must be one of"):
        box_wasserstein(b, b, format="xywh")
    with pytest.raises(ValueError, match="C must be > 0"):
        normalized_wasserstein_boxes(b, b, C=0.0)
    with pytest.raises(TypeError, match="b1 must have a floating dtype"):
        normalized_wasserstein_boxes(np.ones((1, 4), int), b)
    with pytest.raises(ValueError, match="b1 must have shape"):
        normalized_wasserstein_boxes(b[0], b, pairwise=True)
    with pytest.raises(ValueError, match="do not broadcast"):
        normalized_wasserstein_boxes(np.ones((2, 4)), np.ones((3, 4)))


def test_numba_path_taken():
    from optnorm.ot import boxes

    b = np.ones((3, 4))
    with optnorm.use_backend("auto"):
        assert boxes._pairwise_fast.path_for(b, b, format="xyxy", kind=2, C=1.0, eps=0.0, xp=None) == "numba"
        assert boxes._pairwise_fast.path_for(np.ones((3, 5)), np.ones((3, 5)), format="cxcywha", kind=2, C=1.0,
                                             eps=0.0, xp=None) == "generic"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_and_vectorised_exp(path, rng, dtype):
    b1 = _rand_boxes(rng, (40,), "xyxy").astype(dtype)
    b2 = np.concatenate([_rand_boxes(rng, (30,), "xyxy"), _rand_boxes(rng, (5,), "xyxy") + 20000]).astype(dtype)
    ref = np.asarray(normalized_wasserstein_boxes(b1.astype(np.float64), b2.astype(np.float64), pairwise=True))
    out = np.empty((40, 35), dtype)
    y = normalized_wasserstein_boxes(b1, b2, pairwise=True, out=out)
    assert y is out
    assert_close(out, ref, rtol=2e-5 if dtype == np.float32 else 1e-12, atol=1e-30)
    assert np.all(out[:, 30:] == 0.0)  # far apart: exp underflows to exactly 0
    out2 = np.empty((40, 35), dtype)
    assert box_wasserstein(b1, b2, pairwise=True, out=out2) is out2
    with pytest.raises(ValueError, match="out has shape"):
        normalized_wasserstein_boxes(b1, b2, pairwise=True, out=np.empty((3, 3), dtype))
