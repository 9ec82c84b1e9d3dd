"""Triangle meshes as measures for OT losses: area-weighted samples, area-weighted centroids, oriented varifolds."""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.typing import Array, Seed as SeedT
from .._lib.api import public, vjp
from .._lib.roles import Choice, Float, Int, Labels, Positive, Seed
from . import _common as cm

KINDS = ("area", "varifold")


def _cross(u, v, xp):
    return xp.stack([u[:, 1] * v[:, 2] - u[:, 2] * v[:, 1],
                     u[:, 2] * v[:, 0] - u[:, 0] * v[:, 2],
                     u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]], axis=1)


def _segment_sum(vals, idx, n_out, xp):
    """out[v] = sum of vals[k] over k with idx[k] == v (sort + cumulative sum: no scatter in the Array API)."""
    order = xp.argsort(idx, stable=True)
    sidx = xp.take(idx, order, axis=0)
    acc = cm.acc_dtype(xp, vals.dtype)
    sv = compat.cast(xp.take(vals, order, axis=0), acc, xp)
    cs = xp.cumulative_sum(sv, axis=0, include_initial=True)           # (K + 1, d)
    ends = xp.searchsorted(sidx, compat.arange(n_out, like=sidx, dtype=sidx.dtype, xp=xp), side="right")
    starts = xp.concat([xp.zeros((1,), dtype=ends.dtype, device=compat.device(ends)), ends[:-1]])
    return compat.cast(xp.take(cs, ends, axis=0) - xp.take(cs, starts, axis=0), vals.dtype, xp)


def _geometry(V, faces, xp):
    """Corners, face normals (unnormalised), their norms and unit normals of the (scaled) vertices ``V``."""
    A = xp.take(V, faces[:, 0], axis=0)
    B = xp.take(V, faces[:, 1], axis=0)
    C = xp.take(V, faces[:, 2], axis=0)
    N = _cross(B - A, C - A, xp)
    nrm = xp.linalg.vector_norm(N, axis=1)
    tiny = float(xp.finfo(V.dtype).smallest_normal) ** 0.5
    safe = xp.where(nrm > tiny, nrm, xp.ones_like(nrm))
    nhat = xp.where((nrm > tiny)[:, None], N / safe[:, None], xp.zeros_like(N))
    return A, B, C, nrm, safe, nhat


class MeshRes(NamedTuple):
    """Residuals of mesh_to_measure (geometry of the vertices divided by the power of two ``t``)."""
    A: Any
    B: Any
    C: Any
    nrm: Any
    safe: Any
    nhat: Any
    w: Any
    total: Any
    t: Any
    faces: Any
    kind: str
    n_vertices: int
    normal_scale: float
    dtype: Any
    sampled: bool
    k: Any = None
    bary: Any = None


def _forward(vertices, faces, n_samples, kind, seed, normal_scale):
    if n_samples is not None and kind == "varifold":
        raise ValueError("mesh_to_measure: n_samples must be None for kind='varifold' (one atom per face)")
    xp = compat.array_namespace(vertices, faces)
    cdt = compat.compute_dtype(vertices, xp)
    V = compat.cast(vertices, cdt, xp)
    t = cm.pow2_scale(xp, (V, None))        # areas are quadratic in V: compute them on V / t (exact scaling)
    A, B, C, nrm, safe, nhat = _geometry(V / t, faces, xp)
    total = xp.sum(nrm)
    if compat.is_concrete(total) and not float(total) > 0:
        raise ValueError("mesh_to_measure: vertices and faces make a mesh of zero total area")
    w = nrm / total
    res = MeshRes(A, B, C, nrm, safe, nhat, w, total, t, faces, kind, vertices.shape[0], float(normal_scale),
                  vertices.dtype, False)
    if kind == "area" and n_samples is not None:
        rng = cm.rng(seed)
        p = compat.to_numpy(w).astype(np.float64)
        cdf = np.cumsum(p)
        cdf /= cdf[-1]
        k = np.minimum(np.searchsorted(cdf, rng.random(n_samples), side="right"), len(p) - 1)
        r1, r2 = rng.random(n_samples), rng.random(n_samples)
        s = np.sqrt(r1)
        bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
        kk = compat.from_numpy_like(k.astype(np.int64), V)
        bb = compat.from_numpy_like(bary.astype(cm.np_dtype(V)), V)
        Ak, Bk, Ck = (xp.take(Z, kk, axis=0) * t for Z in (A, B, C))
        pts = bb[:, 0:1] * Ak + bb[:, 1:2] * Bk + bb[:, 2:3] * Ck
        wts = xp.full((n_samples,), 1.0 / n_samples, dtype=cdt, device=compat.device(V))
        res = res._replace(sampled=True, k=kk, bary=bb)
        return (compat.cast(pts, vertices.dtype, xp), compat.cast(wts, vertices.dtype, xp)), res
    cen = (A / 3.0 + B / 3.0 + C / 3.0) * t
    pts = cen if kind == "area" else xp.concat([cen, normal_scale * nhat], axis=1)
    return (compat.cast(pts, vertices.dtype, xp), compat.cast(w, vertices.dtype, xp)), res


def _example(rng, dtype):
    V = (np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [1, 1, 0]])
         + 0.1 * rng.standard_normal((6, 3))).astype(dtype)
    F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3], [1, 5, 4]])
    return (V, F), {}


@public(vertices=Float("v 3", finite=True), faces=Labels("f 3", classes="v"), n_samples=Int(1, optional=True),
        kind=Choice(KINDS), seed=Seed(), normal_scale=Positive(), example=_example)
def mesh_to_measure(vertices: Array, faces: Array, *, n_samples: int | None = None, kind: str = "area",
                    seed: SeedT = None, normal_scale: float = 1.0) -> tuple[Array, Array]:
    r"""A triangle mesh as a discrete probability measure, differentiable in the vertex positions.

    - ``kind="area"``, ``n_samples=k``: k i.i.d. samples of the uniform surface measure
      :math:`\mu_M = \sum_t (|T_t|/|M|)\,\mathrm{Unif}(T_t)`: a face drawn with probability proportional to its area,
      then :math:`x = (1-\sqrt{r_1})A + \sqrt{r_1}(1-r_2)B + \sqrt{r_1}r_2C` (uniform in the triangle); weights 1/k.
      The gradient reaches the vertices through the barycentric formula (the face choice is held fixed).
    - ``kind="area"``, ``n_samples=None``: face centroids weighted by area, :math:`\sum_t (|T_t|/|M|)\delta_{c_t}`.
    - ``kind="varifold"``: the discrete oriented varifold :math:`\sum_t (|T_t|/|M|)\delta_{(c_t, n_t)}` with unit
      normals :math:`n_t = (B-A)\times(C-A)/\|\cdot\|`, as 6-vectors ``[c_t, normal_scale * n_t]``.

    ("Diffeomorphic Mesh Deformation via Efficient Optimal Transport for Cortical Surface Reconstruction",
    Le, Nguyen, Sun, Han, Ho, Xie, ICLR 2024; oriented varifolds: Kaltenmark, Charlier, Charon, CVPR 2017.)
    Feed the result to :func:`optnorm.ot.sliced_wasserstein` (points, weights): the weights of the centroid and
    varifold measures depend on the vertices, and the SW VJP includes the weight gradient.

    Parameters
    ----------
    vertices : array, shape (n_vertices, 3)
    faces : integer array, shape (n_faces, 3)
        Vertex indices of each triangle (orientation sets the normal's sign).
    n_samples : int, optional
        Number of surface samples (``kind="area"`` only).
    kind : {"area", "varifold"}
    seed : int or numpy.random.Generator, optional
        For the samples (drawn on the host; the face areas are copied to the host to build the CDF).
    normal_scale : float, default 1
        Scale of the normal part of the varifold atoms relative to the positions.

    Returns
    -------
    points : array, shape (k, 3), (n_faces, 3) or (n_faces, 6)
    weights : array, shape (k,) or (n_faces,)
        Sum to one.  Zero-area faces get weight 0 and normal 0.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import mesh_to_measure
    >>> V = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    >>> F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    >>> pts, w = mesh_to_measure(V, F, kind="varifold")
    >>> pts.shape, round(float(w.sum()), 12)
    ((4, 6), 1.0)
    """
    return _forward(vertices, faces, n_samples, kind, seed, normal_scale)[0]


def mesh_to_measure_fwd(vertices, faces, *, n_samples=None, kind="area", seed=None, normal_scale=1.0):
    return _forward(vertices, faces, n_samples, kind, seed, normal_scale)


def mesh_to_measure_bwd(res: MeshRes, dy):
    dpts, dw = dy
    A, B, C = res.A, res.B, res.C
    xp = compat.array_namespace(A)
    faces = res.faces
    nV = res.n_vertices
    dpts = compat.cast(dpts, A.dtype, xp)
    if res.sampled:
        idx = xp.concat([xp.take(faces[:, j], res.k, axis=0) for j in range(3)])
        vals = xp.concat([res.bary[:, j:j + 1] * dpts for j in range(3)], axis=0)
        return compat.cast(_segment_sum(vals, idx, nV, xp), res.dtype, xp), None
    dw = compat.cast(dw, A.dtype, xp)
    w, total, nrm, safe, nhat = res.w, res.total, res.nrm, res.safe, res.nhat
    dc = dpts[:, :3] / 3.0
    # weights w = |N| / sum |N| (area ratios)  ->  d|N|_t = (dw_t - <dw, w>) / total; d|N| / dN = nhat
    d_nrm = (dw - xp.sum(dw * w)) / total
    Nbar = d_nrm[:, None] * nhat
    if res.kind == "varifold":
        dn = res.normal_scale * dpts[:, 3:]
        proj = dn - xp.sum(dn * nhat, axis=1, keepdims=True) * nhat
        ok = (nrm > 0)[:, None] & (xp.linalg.vector_norm(nhat, axis=1) > 0)[:, None]
        Nbar = Nbar + xp.where(ok, proj / safe[:, None], xp.zeros_like(proj))
    # geometry of V / t: its gradients w.r.t. V are those w.r.t. V / t divided by t
    dA = dc + _cross(B - C, Nbar, xp) / res.t
    dB = dc + _cross(C - A, Nbar, xp) / res.t
    dC = dc + _cross(A - B, Nbar, xp) / res.t
    idx = xp.concat([faces[:, 0], faces[:, 1], faces[:, 2]])
    vals = xp.concat([dA, dB, dC], axis=0)
    return compat.cast(_segment_sum(vals, idx, nV, xp), res.dtype, xp), None


vjp(mesh_to_measure, mesh_to_measure_fwd, mesh_to_measure_bwd, nondiff_argnums=(1,), validate=True)
