"""gaussian.py: gaussian_wasserstein (closed form, POT, broadcasting, VJP, adapters, bad input, float32 accuracy,
extreme magnitudes) and the boxes as Gaussians (box_to_gaussian, box_wasserstein, normalized_wasserstein_boxes)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

import optnorm
from optnorm._lib import api
from optnorm.ot import box_to_gaussian, box_wasserstein, gaussian_wasserstein, normalized_wasserstein_boxes
from optnorm.testing import assert_close, check_vjp, role_projections


def _project(name):
    """Finite-difference directions that keep covariances symmetric (the roles refuse asymmetric ones)."""
    return role_projections(api.lookup(f"ot.{name}"))


def _sym(C):
    return (C + C.mT) / 2 if hasattr(C, "mT") else (C + np.swapaxes(C, -1, -2)) / 2


def _spd(rng, d, *batch, cond=10.0):
    a = rng.standard_normal((*batch, d, d))
    return a @ np.swapaxes(a, -1, -2) / d + np.eye(d) / cond


def _ref(m1, C1, m2, C2):
    """float64 reference with scipy.linalg.sqrtm (independent of the eigh path)."""
    s1 = np.real(scipy.linalg.sqrtm(C1))
    mid = np.real(scipy.linalg.sqrtm(s1 @ C2 @ s1))
    return max(float(np.sum((m1 - m2) ** 2) + np.trace(C1 + C2 - 2 * mid)), 0.0)


def test_matches_reference_and_pot(xp, rng):
    ot = pytest.importorskip("ot")
    d, B = 4, 3
    m1, m2 = rng.standard_normal((B, d)), rng.standard_normal((B, d))
    C1, C2 = _spd(rng, d, B), _spd(rng, d, B)
    y = gaussian_wasserstein(xp.asarray(m1), xp.asarray(C1), xp.asarray(m2), xp.asarray(C2))
    ref = np.array([np.sqrt(_ref(m1[i], C1[i], m2[i], C2[i])) for i in range(B)])
    assert_close(y, ref, rtol=1e-10, xp=xp)
    pot = ot.gaussian.bures_wasserstein_distance(m1, m2, C1, C2, paired=True)
    assert_close(y, np.asarray(pot), rtol=1e-8, xp=xp)
    y2 = gaussian_wasserstein(xp.asarray(m1), xp.asarray(C1), xp.asarray(m2), xp.asarray(C2), squared=True)
    assert_close(y2, ref ** 2, rtol=1e-10, xp=xp)


def test_float32_keeps_dtype(xp, rng):
    d = 3
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
    C1, C2 = _spd(rng, d), _spd(rng, d)
    args = [xp.asarray(a.astype(np.float32)) for a in (m1, C1, m2, C2)]
    y = gaussian_wasserstein(*args)
    assert_close(y, np.sqrt(_ref(m1, C1, m2, C2)), rtol=2e-4, check_dtype="float32", xp=xp)


def test_broadcasting_one_against_many(xp, rng):
    d = 3
    m1, C1 = rng.standard_normal(d), _spd(rng, d)
    m2, C2 = rng.standard_normal((2, 5, d)), _spd(rng, d, 2, 5)
    y = gaussian_wasserstein(xp.asarray(m1), xp.asarray(C1), xp.asarray(m2), xp.asarray(C2))
    assert tuple(y.shape) == (2, 5)
    ref = np.array([[np.sqrt(_ref(m1, C1, m2[i, j], C2[i, j])) for j in range(5)] for i in range(2)])
    assert_close(y, ref, rtol=1e-10, xp=xp)


def test_one_dimensional_case_and_identity(rng):
    # d = 1: W2^2 = (m1 - m2)^2 + (s1 - s2)^2
    y = gaussian_wasserstein(np.array([1.0]), np.array([[4.0]]), np.array([-1.0]), np.array([[9.0]]), squared=True)
    assert_close(y, 4.0 + 1.0, rtol=1e-12)
    C = _spd(rng, 5)
    m = rng.standard_normal(5)
    assert float(gaussian_wasserstein(m, C, m, C)) < 1e-6
    # singular (PSD) covariance: no NaN
    v = rng.standard_normal((3, 1))
    Cs = v @ v.T
    y = gaussian_wasserstein(np.zeros(3), Cs, np.zeros(3), np.eye(3))
    nv = np.linalg.norm(v)  # C1^{1/2} = v v^T / |v|, so W2^2 = |v|^2 + 3 - 2 |v|
    assert np.isfinite(y) and abs(float(y) ** 2 - (nv ** 2 + 3 - 2 * nv)) < 1e-10


@pytest.mark.parametrize("squared", [False, True])
def test_vjp_finite_differences(rng, squared):
    d = 3
    m1, m2 = rng.standard_normal((2, d)), rng.standard_normal((2, d))
    C1, C2 = _spd(rng, d, 2), _spd(rng, d, 2)
    check_vjp("ot.gaussian_wasserstein", m1, C1, m2, C2, opts={"squared": squared}, rtol=1e-6,
              project=_project("gaussian_wasserstein"))


def test_vjp_broadcast(rng):
    d = 3
    m1, C1 = rng.standard_normal(d), _spd(rng, d)
    m2, C2 = rng.standard_normal((4, d)), _spd(rng, d, 4)
    check_vjp("ot.gaussian_wasserstein", m1, C1, m2, C2, rtol=1e-6, project=_project("gaussian_wasserstein"))


def test_torch_gradcheck(rng):
    torch = pytest.importorskip("torch")
    import optnorm.torch as ont

    d = 3
    arrs = [rng.standard_normal((2, d)), _spd(rng, d, 2), rng.standard_normal((2, d)), _spd(rng, d, 2)]
    ts = [torch.tensor(a, requires_grad=True) for a in arrs]
    # covariances must be symmetric: gradcheck's perturbations go through a symmetrisation
    f = lambda m1, C1, m2, C2: ont.gaussian_wasserstein(m1, _sym(C1), m2, _sym(C2))  # noqa: E731
    assert torch.autograd.gradcheck(f, ts)


def test_jax_check_grads(rng):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.test_util import check_grads

    import optnorm.jax as onj

    d = 3
    arrs = [jnp.asarray(a) for a in (rng.standard_normal((2, d)), _spd(rng, d, 2), rng.standard_normal((2, d)),
                                     _spd(rng, d, 2))]
    check_grads(lambda m1, C1, m2, C2: onj.gaussian_wasserstein(m1, _sym(C1), m2, _sym(C2), squared=True), arrs,
                order=1, modes=["rev"])
    g = jax.jit(jax.grad(lambda m1, C1, m2, C2: onj.gaussian_wasserstein(m1, C1, m2, C2).sum()))(*arrs)
    assert np.all(np.isfinite(np.asarray(g)))


def test_bad_input(rng):
    C = np.eye(3)
    m = np.zeros(3)
    with pytest.raises(ValueError, match="m2"):
        gaussian_wasserstein(m, C, np.zeros(4), C)
    with pytest.raises(ValueError, match="C1"):
        gaussian_wasserstein(m, np.ones((3, 2)), m, C)
    with pytest.raises(TypeError, match="m1"):
        gaussian_wasserstein(np.zeros(3, int), C, m, C)
    with pytest.raises(ValueError, match="C2 contains NaN"):
        gaussian_wasserstein(m, C, m, np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="broadcast"):
        gaussian_wasserstein(np.zeros((2, 3)), C, np.zeros((5, 3)), C)


def _illcond(rng, d, cond):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.logspace(0, -np.log10(cond), d)) @ q.T


@pytest.mark.parametrize("cond", [1e4, 1e6, 1e8])
def test_float32_ill_conditioned_matches_float64_scipy(rng, cond):
    """Issue #13: float32 lost ~4e-4 relative accuracy (the float32 eigenvalue floor removed real eigenvalues);
    the computation now runs in float64, so the float32 result is the float64 answer of its inputs, rounded."""
    d = 10
    m1, m2 = rng.standard_normal(d).astype(np.float32), rng.standard_normal(d).astype(np.float32)
    C1 = _illcond(rng, d, cond).astype(np.float32)
    C2 = _illcond(rng, d, cond).astype(np.float32)
    C1, C2 = (C1 + C1.T) / 2, (C2 + C2.T) / 2
    ref = np.sqrt(_ref(*(a.astype(np.float64) for a in (m1, C1, m2, C2))))
    y = gaussian_wasserstein(m1, C1, m2, C2)
    assert_close(y, ref, rtol=1e-6, check_dtype=False)
    assert y.dtype == np.float32


def test_covariances_must_be_psd(rng):
    """Issue #13: -I was accepted and gave 0.0."""
    m = np.zeros(3)
    with pytest.raises(ValueError, match="C1 must be positive semi-definite"):
        gaussian_wasserstein(m, -np.eye(3), m, -np.eye(3))
    with pytest.raises(ValueError, match="C2 is not symmetric"):
        gaussian_wasserstein(m, np.eye(3), m, np.triu(np.ones((3, 3))))


@pytest.mark.parametrize("t", [1e150, 1e-150, 2.0 ** 600, 2.0 ** -600])
def test_extreme_magnitudes_scale_exactly(rng, t):
    """W2(t m1, t^2 C1; t m2, t^2 C2) = t W2(m1, C1; m2, C2): no overflow of C1^(1/2) C2 C1^(1/2) or of |m1 - m2|^2."""
    d = 4
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
    C1, C2 = _spd(rng, d), _spd(rng, d)
    base = float(gaussian_wasserstein(m1, C1, m2, C2))
    big = float(gaussian_wasserstein(t * m1, t * t * C1, t * m2, t * t * C2)) if 1e-300 < t * t < 1e300 else None
    if big is not None:
        assert big == pytest.approx(t * base, rel=1e-12)
    y = gaussian_wasserstein(t * m1, C1, t * m2, C2)               # means alone at the extreme
    assert np.isfinite(y)
    if t > 1:
        assert float(y) == pytest.approx(t * np.linalg.norm(m1 - m2), rel=1e-12)
        with pytest.raises(ValueError, match="overflows"):
            gaussian_wasserstein(1e200 * m1, C1, 1e200 * m2, C2, squared=True)


# ============================================================================================== boxes as Gaussians
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
    assert_close(m, mr, rtol=1e-12, atol=1e-12, xp=xp)
    assert_close(C, Cr, rtol=1e-10, atol=1e-10, xp=xp)


@pytest.mark.parametrize("fmt", ["xyxy", "cxcywh", "cxcywha"])
def test_box_wasserstein_matches_bures(xp, rng, fmt):
    b1, b2 = _rand_boxes(rng, (5,), fmt), _rand_boxes(rng, (5,), fmt)
    m1, C1 = _ref_gauss(b1, fmt)
    m2, C2 = _ref_gauss(b2, fmt)
    ref = np.array([_ref_w2sq(m1[i], C1[i], m2[i], C2[i]) for i in range(5)])
    d2 = box_wasserstein(xp.asarray(b1), xp.asarray(b2), format=fmt, squared=True)
    assert_close(d2, ref, rtol=1e-8, atol=1e-8, xp=xp)
    d = box_wasserstein(xp.asarray(b1), xp.asarray(b2), format=fmt)
    assert_close(d, np.sqrt(ref), rtol=1e-8, atol=1e-8, xp=xp)


@pytest.mark.parametrize("fmt", ["xyxy", "cxcywha"])
def test_box_wasserstein_equals_gaussian_wasserstein(rng, fmt):
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
    assert_close(y, _yolo_nwd(b1, b2), rtol=1e-12, xp=xp)
    # same boxes in xyxy give the same value
    x1 = np.concatenate([b1[:, :2] - b1[:, 2:] / 2, b1[:, :2] + b1[:, 2:] / 2], -1)
    x2 = np.concatenate([b2[:, :2] - b2[:, 2:] / 2, b2[:, :2] + b2[:, 2:] / 2], -1)
    assert_close(normalized_wasserstein_boxes(xp.asarray(x1), xp.asarray(x2)), _yolo_nwd(b1, b2), rtol=1e-10, xp=xp)


def test_broadcast_and_float32(xp, rng):
    b1 = _rand_boxes(rng, (3, 1), "xyxy")
    b2 = _rand_boxes(rng, (1, 4), "xyxy")
    ref = np.asarray(normalized_wasserstein_boxes(b1, b2))
    assert ref.shape == (3, 4)
    y = normalized_wasserstein_boxes(xp.asarray(b1.astype(np.float32)), xp.asarray(b2.astype(np.float32)))
    assert_close(y, ref, rtol=2e-5, check_dtype="float32", xp=xp)
    # pairwise equals broadcasting
    p = normalized_wasserstein_boxes(xp.asarray(b1[:, 0]), xp.asarray(b2[0]), pairwise=True)
    assert_close(p, ref, rtol=1e-12, xp=xp)


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
    assert_close(y, ref, rtol=tol, atol=tol, check_dtype=False)
    d = box_wasserstein(b1, b2, format=fmt, pairwise=True, squared=True)
    assert_close(d, (12.8 * np.log(ref)) ** 2 - 1e-7, rtol=1e-3 if dtype == np.float32 else 1e-7, atol=1e-3,
                 check_dtype=False)


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
    with pytest.raises(ValueError, match=r"C must be in \(0, inf\)"):
        normalized_wasserstein_boxes(b, b, C=0.0)
    with pytest.raises(TypeError, match="b1 must have a real floating dtype"):
        normalized_wasserstein_boxes(np.ones((1, 4), int), b)
    with pytest.raises(ValueError, match="b1 must have shape"):
        normalized_wasserstein_boxes(b[0], b, pairwise=True)
    with pytest.raises(ValueError, match="do not broadcast"):
        normalized_wasserstein_boxes(np.ones((2, 4)), np.ones((3, 4)))


def test_numba_path_taken():
    from optnorm._lib.dispatch import DISPATCHERS

    d = DISPATCHERS["ot.box_distances"]
    b = np.ones((3, 4))
    kw = dict(pairwise=True, kind=2, Cn=1.0, eps=0.0, out=None, xp=None)
    with optnorm.use_backend("auto"):
        assert d.path_for(b, b, format="xyxy", **kw) == "numba"
        assert d.path_for(np.ones((3, 5)), np.ones((3, 5)), format="cxcywha", **kw) == "generic"
        assert d.path_for(b, b, format="xyxy", **{**kw, "pairwise": False}) == "generic"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_and_vectorised_exp(path, rng, dtype):
    b1 = _rand_boxes(rng, (40,), "xyxy").astype(dtype)
    b2 = np.concatenate([_rand_boxes(rng, (30,), "xyxy"), _rand_boxes(rng, (5,), "xyxy") + 20000]).astype(dtype)
    ref = np.asarray(normalized_wasserstein_boxes(b1.astype(np.float64), b2.astype(np.float64), pairwise=True))
    out = np.empty((40, 35), dtype)
    y = normalized_wasserstein_boxes(b1, b2, pairwise=True, out=out)
    assert y is out
    assert_close(out, ref, rtol=2e-5 if dtype == np.float32 else 1e-12, atol=1e-30, check_dtype=False)
    assert np.all(out[:, 30:] == 0.0)  # far apart: exp underflows to exactly 0
    out2 = np.empty((40, 35), dtype)
    assert box_wasserstein(b1, b2, pairwise=True, out=out2) is out2
    with pytest.raises(ValueError, match="out has shape"):
        normalized_wasserstein_boxes(b1, b2, pairwise=True, out=np.empty((3, 3), dtype))


def test_box_nan_and_extreme_magnitudes():
    """Issue #13: NaN in box functions was not rejected; huge/tiny boxes gave NaN/inf (squares overflowed)."""
    b = np.array([[0.0, 0.0, 2.0, 2.0], [3.0, 4.0, 5.0, 6.0]])
    bad = b.copy()
    bad[0, 1] = np.nan
    for fn in (box_wasserstein, normalized_wasserstein_boxes):
        with pytest.raises(ValueError, match="b1 contains NaN"):
            fn(bad, b)
    with pytest.raises(ValueError, match="boxes contains NaN"):
        box_to_gaussian(bad)
    base = box_wasserstein(b[:1], b[1:], pairwise=True)
    for t in (1e300, 1e-300, 2.0 ** 900):
        for path in ("generic", "numba"):
            with optnorm.use_backend(path):
                for pw in (False, True):
                    y = box_wasserstein(t * b[:1], t * b[1:], pairwise=pw)
                    assert_close(np.reshape(y, -1), t * np.reshape(base, -1), rtol=1e-12)
                    assert np.all(np.isfinite(normalized_wasserstein_boxes(t * b, t * b[::-1], pairwise=pw)))
        r = np.array([[5.0, 5.0, 4.0, 2.0, 0.3]])
        yr = box_wasserstein(t * r * [1, 1, 1, 1, 0] + [0, 0, 0, 0, 0.3], t * r * [1, 1, 0.5, 1, 0] + [0, 0, 0, 0, 1.0],
                             format="cxcywha")
        assert np.all(np.isfinite(yr)) and float(yr[0]) > 0
    with pytest.raises(ValueError, match="overflows"):
        box_wasserstein(1e300 * b[:1], 1e300 * b[1:], squared=True)
    with pytest.raises(ValueError, match="boxes has widths or heights"):
        box_to_gaussian(1e300 * b)


def test_box_vjp_at_extreme_magnitudes(rng):
    """The power-of-two scaling is part of the VJP: gradients at 2^400 equal those at 1 (W2 is 1-homogeneous)."""
    b1, b2 = _rand_boxes(rng, (3,), "cxcywha"), _rand_boxes(rng, (3,), "cxcywha")
    op = api.lookup("ot.box_wasserstein").op
    s = np.array([1.0, 1.0, 1.0, 1.0, 0.0])
    t = 2.0 ** 400
    _, res = op.fwd(b1, b2, format="cxcywha")
    g1, g2 = op.bwd(res, np.ones(3))
    _, res_t = op.fwd(b1 * (t * s + (1 - s)), b2 * (t * s + (1 - s)), format="cxcywha")
    g1t, g2t = op.bwd(res_t, np.ones(3))
    assert_close(g1t[:, :4], g1[:, :4], rtol=1e-10)
    assert_close(g1t[:, 4], t * g1[:, 4], rtol=1e-10)       # d/dtheta scales with the lengths
