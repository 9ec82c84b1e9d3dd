"""Euclidean projections onto spectral matrix cones (PSD, nuclear-norm epigraph, sum of the k largest
eigenvalues, log-det cone), reduced to a projection of the eigenvalue vector (Cederberg, Boyd, "Projections onto
spectral matrix cones", 2025).
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .._lib import compat
from .._lib.typing import Array
from .._lib.api import public, vjp
from .._lib.roles import Choice, Float, Int, NonNegative
from ._linalg import eigh, matrix_scale, mT, recon, rot, sym, upcast

CONES = ("psd", "nuclear", "sum_largest", "logdet")


# ---------------------------------------------------------------------------- PSD
class ProjectPSDRes(NamedTuple):
    w: Any
    U: Any
    eps: float
    dtype: Any


@public(A=Float("... n n", finite=True), eps=NonNegative())
def project_psd(A: Array, *, eps: float = 0.0) -> Array:
    r"""Nearest (Frobenius) matrix ``X >= eps I`` to ``sym(A)``: ``U diag(max(lambda, eps)) U^T`` (Higham 1988).

    .. math::

        \Pi(A) = U\operatorname{diag}\bigl(\max(\lambda_i, \epsilon)\bigr)U^\top,\qquad \operatorname{sym}(A) = U\operatorname{diag}(\lambda)U^\top

    VJP: Daleckii-Krein with the divided differences of ``max(., eps)`` (1 for both eigenvalues above ``eps``,
    0 for both below, ``(f(a) - f(b)) / (a - b)`` across), symmetrised.

    Parameters
    ----------
    A : array (..., n, n)
        Finite square matrices, symmetric or not: their symmetric part is projected.
    eps : float >= 0
        Eigenvalue floor (``eps > 0`` gives an SPD result, the ReEig layer of SPDNet).

    Returns
    -------
    array (..., n, n)

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> np.allclose(spd.project_psd(np.diag([2.0, -1.0])), np.diag([2.0, 0.0]))
    True
    """
    return project_psd_fwd(A, eps=eps)[0]


def project_psd_fwd(A, *, eps=0.0):
    xp = compat.array_namespace(A)
    Ac, dt = upcast(A, xp)
    w, U = eigh(Ac, xp, clamp=False)
    Y = recon(U, xp.maximum(w, eps), xp)
    return compat.cast(Y, dt, xp), ProjectPSDRes(w, U, float(eps), dt)




def project_psd_bwd(res: ProjectPSDRes, dY):
    w, U, eps = res.w, res.U, res.eps
    xp = compat.array_namespace(w)
    a = w[..., :, None]
    b = w[..., None, :]
    fa, fb = xp.maximum(a, eps), xp.maximum(b, eps)
    d = a - b
    close = xp.abs(d) <= 1e-12 * (xp.abs(a) + xp.abs(b) + 1e-300)
    K = xp.where(close, xp.astype((a + b) / 2 > eps, w.dtype), (fa - fb) / xp.where(close, xp.ones_like(d), d))
    G = rot(U, sym(compat.cast(dY, w.dtype, xp), xp), xp)
    return (compat.cast(U @ (K * G) @ mT(U, xp), res.dtype, xp),)


vjp(project_psd, project_psd_fwd, project_psd_bwd, validate=True)


# ---------------------------------------------------------------------------- vector cones
def _l1_cone(t0, x0, xp):
    """Projection of (t0, x0) onto {(t, x): ||x||_1 <= t} (batched over leading axes of x0)."""
    a = xp.abs(x0)
    n = x0.shape[-1]
    inside = xp.sum(a, axis=-1) <= t0
    polar = xp.max(a, axis=-1) <= -t0
    s = -xp.sort(-a, axis=-1)                                      # descending
    cs = xp.cumulative_sum(s, axis=-1)
    k = compat.arange(n, like=x0, dtype=x0.dtype, xp=xp) + 1
    mu_k = (cs - t0[..., None]) / (k + 1)
    valid = s > mu_k
    kstar = xp.sum(xp.astype(valid, x0.dtype), axis=-1)           # the valid k form a prefix
    onehot = xp.astype(k == kstar[..., None], x0.dtype)
    mu = xp.sum(onehot * mu_k, axis=-1)
    mu = xp.maximum(mu, 0.0)
    x = xp.sign(x0) * xp.maximum(a - mu[..., None], 0.0)
    t = t0 + mu
    t = xp.where(inside, t0, xp.where(polar, xp.zeros_like(t0), t))
    x = xp.where(inside[..., None], x0, xp.where(polar[..., None], xp.zeros_like(x0), x))
    return t, x


def _topk_sum(x, k, xp):
    s = -xp.sort(-x, axis=-1)
    return xp.sum(s[..., :k], axis=-1)


def _proj_capped_simplex(y, mu, k, xp, n_iter):
    """Projection of y onto {g: 0 <= g <= mu, sum g = k mu} by bisection on the shift (mu: (...,) > 0)."""
    lo = xp.min(y, axis=-1) - mu
    hi = xp.max(y, axis=-1)
    for _ in range(n_iter):
        nu = (lo + hi) / 2
        g = xp.clip(y - nu[..., None], 0.0, None)
        g = xp.minimum(g, mu[..., None])
        above = xp.sum(g, axis=-1) > k * mu
        lo = xp.where(above, nu, lo)
        hi = xp.where(above, hi, nu)
    nu = (lo + hi) / 2
    return xp.minimum(xp.clip(y - nu[..., None], 0.0, None), mu[..., None])


def _sum_largest_cone(t0, x0, k, xp, n_iter=64):
    """Projection of (t0, x0) onto {(t, x): sum of the k largest entries of x <= t}.

    Moreau: outside the cone the projection is (t0 + mu, prox_{mu f_k}(x0)), prox_{mu f_k}(x) = x - P_{mu C}(x),
    C = {0 <= g <= 1, sum g = k}; mu > 0 solves f_k(prox) = t0 + mu (monotone: bisection)."""
    n = x0.shape[-1]
    inside = _topk_sum(x0, k, xp) <= t0
    lo = xp.zeros_like(t0)
    hi = 2 * (xp.abs(t0) + n * xp.max(xp.abs(x0), axis=-1)) + 1.0
    for _ in range(n_iter):
        mu = (lo + hi) / 2
        x = x0 - _proj_capped_simplex(x0, mu, k, xp, n_iter)
        pos = _topk_sum(x, k, xp) - t0 - mu > 0
        lo = xp.where(pos, mu, lo)
        hi = xp.where(pos, hi, mu)
    mu = (lo + hi) / 2
    x = x0 - _proj_capped_simplex(x0, mu, k, xp, n_iter)
    t = t0 + mu
    return xp.where(inside, t0, t), xp.where(inside[..., None], x0, x)


def _logdet_x(x0, lam, v, xp):
    """Positive root of x^2 - x0 x - lam v = 0, cancellation-free for x0 < 0."""
    q = 4 * (lam * v)[..., None]
    r = xp.sqrt(x0 * x0 + q)
    return xp.where(x0 >= 0, (x0 + r) / 2, (q / 2) / xp.where(r - x0 > 0, r - x0, xp.ones_like(r)))


def _logdet_cone(t0, v0, x0, xp, n_iter=80):
    """Projection of (t0, v0, x0) onto K = cl{(t, v, x): v > 0, x > 0, -v sum_i log(x_i / v) <= t}.

    Outside K and its polar, the projection is on the boundary with multiplier lam > 0:
    ``t = t0 + lam``, ``x_i = (x0_i + sqrt(x0_i^2 + 4 lam v)) / 2``, ``v = v0 + lam (sum_i log(x_i/v) - n)``
    (the last equation is monotone in v for fixed lam) and ``t = -v sum log(x_i / v)`` (monotone in lam):
    nested bisection.  Special cases as in SCS: inside K (unchanged), in the polar cone (0), and
    ``v0 <= 0, t0 >= 0`` (``(t0, 0, max(x0, 0))``).
    """
    n = x0.shape[-1]
    tiny = float(xp.finfo(x0.dtype).smallest_normal) ** 0.5
    xpos = xp.all(x0 > 0, axis=-1)
    vpos = v0 > 0
    vs = xp.where(vpos, v0, xp.ones_like(v0))
    xs = xp.where(x0 > 0, x0, xp.ones_like(x0))
    inside = xpos & vpos & (-vs * xp.sum(xp.log(xs / vs[..., None]), axis=-1) <= t0)
    # polar K° = -K*:  K* = cl{(s, u, y): s > 0, y > 0, u >= -s n - s sum log(y_i / s)}
    s_, u_, y_ = -t0, -v0, -x0
    ypos = xp.all(y_ > 0, axis=-1)
    ss = xp.where(s_ > 0, s_, xp.ones_like(s_))
    ys = xp.where(y_ > 0, y_, xp.ones_like(y_))
    polar = (s_ > 0) & ypos & (u_ >= -ss * n - ss * xp.sum(xp.log(ys / ss[..., None]), axis=-1))
    face = (v0 <= 0) & (t0 >= 0)

    def solve_v(lam):
        lo = xp.zeros_like(v0) + tiny
        hi = xp.abs(v0) + lam * n + xp.max(xp.abs(x0), axis=-1) + 1.0
        # grow hi until r(hi) >= 0 (r increases without bound)
        for _ in range(40):
            x = _logdet_x(x0, lam, hi, xp)
            r = hi - v0 - lam * (xp.sum(xp.log(xp.maximum(x, tiny * tiny) / hi[..., None]), axis=-1) - n)
            hi = xp.where(r < 0, 2 * hi, hi)
        for _ in range(n_iter):   # geometric bisection: v may be many orders of magnitude below hi
            v = xp.exp((xp.log(lo) + xp.log(hi)) / 2)
            x = _logdet_x(x0, lam, v, xp)
            r = v - v0 - lam * (xp.sum(xp.log(xp.maximum(x, tiny * tiny) / v[..., None]), axis=-1) - n)
            lo = xp.where(r < 0, v, lo)
            hi = xp.where(r < 0, hi, v)
        v = xp.exp((xp.log(lo) + xp.log(hi)) / 2)
        return v, _logdet_x(x0, lam, v, xp)

    def phi(lam):
        v, x = solve_v(lam)
        return t0 + lam + v * xp.sum(xp.log(xp.maximum(x, tiny * tiny) / v[..., None]), axis=-1), v, x

    llo = xp.zeros_like(t0) + float(xp.finfo(x0.dtype).smallest_normal)
    lhi = xp.ones_like(t0)
    for _ in range(40):
        f, _, _ = phi(lhi)
        grow = f < 0
        llo = xp.where(grow, lhi, llo)
        lhi = xp.where(grow, 2 * lhi, lhi)
    for _ in range(n_iter):   # geometric bisection: lam can be tiny (x_i ~ lam v / |x0_i| for x0_i < 0)
        lam = xp.exp((xp.log(llo) + xp.log(lhi)) / 2)
        f, _, _ = phi(lam)
        llo = xp.where(f < 0, lam, llo)
        lhi = xp.where(f < 0, lhi, lam)
    lam = xp.exp((xp.log(llo) + xp.log(lhi)) / 2)
    _, v, x = phi(lam)
    t = t0 + lam
    zero = xp.zeros_like(t0)
    t = xp.where(inside, t0, xp.where(polar, zero, xp.where(face, t0, t)))
    v = xp.where(inside, v0, xp.where(polar, zero, xp.where(face, zero, v)))
    x = xp.where(inside[..., None], x0,
                 xp.where(polar[..., None], xp.zeros_like(x0), xp.where(face[..., None], xp.maximum(x0, 0.0), x)))
    return t, v, x


@public(X=Float("... m n", finite=True), t=Float("...", optional=True, finite=True),
        v=Float("...", optional=True, finite=True), cone=Choice(CONES), k=Int(1, optional=True),
        sizes={"m": 4, "n": 4},
        example=lambda rng, dtype: ((rng.standard_normal((2, 4, 4)).astype(dtype), rng.standard_normal(2).astype(dtype),
                                     rng.random(2).astype(dtype) + 0.5), {"cone": "logdet"}))
def project_spectral_cone(X: Array, t: Array | None = None, v: Array | None = None, *, cone: str = "psd",
                          k: int | None = None) -> Array:
    r"""Euclidean projection onto a spectral matrix cone, through the eigenvalues of ``sym(X)``.

    .. math::

        \Pi_{\mathcal K}(A) = U\operatorname{diag}\bigl(\pi_{K}(\lambda)\bigr)U^\top,\qquad \mathcal K = \{X : \lambda(X) \in K\}

    With ``X = U diag(lambda) U^T`` the projection is ``(t', [v',] U diag(lambda') U^T)`` where
    ``(t', [v',] lambda')`` is the projection of ``(t, [v,] lambda)`` onto the corresponding vector cone
    (Cederberg, Boyd, "Projections onto spectral matrix cones", arXiv 2511.01089, 2025):

    - ``"psd"``: ``{X >= 0}``; returns ``X'`` only (``t``/``v`` not used).
    - ``"nuclear"``: ``{(t, X): ||X||_* <= t}`` for any (..., m, n) ``X``, through its SVD ``U diag(s) V^T``
      (singular values instead of eigenvalues); the l1-cone projection by sorting:
      ``mu_k = (sum_{i<=k} s_(i) - t) / (k + 1)``.  Returns ``(t', X')``.
    - ``"sum_largest"``: ``{(t, X): sum of the k largest eigenvalues <= t}`` (0 < k < n): Moreau decomposition,
      bisection on the multiplier with an inner capped-simplex projection.  Returns ``(t', X')``.
    - ``"logdet"``: ``cl{(t, v, X): X > 0, v > 0, -v log det(X / v) <= t}`` (the epigraph of the perspective
      of ``-log det``, SCS's sign convention in ``log_cone_Newton.c``): KKT system reduced to two monotone
      scalar equations solved by nested bisection.  Returns ``(t', v', X')``.

    Parameters
    ----------
    X : array (..., n, n) (``"nuclear"``: (..., m, n))
    t, v : array (...), optional
        The scalar parts (required by the cones that have them).
    cone : {"psd", "nuclear", "sum_largest", "logdet"}
    k : int
        For ``"sum_largest"``.

    Returns
    -------
    array or tuple of arrays, see above.

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> t, Xp = spd.project_spectral_cone(np.diag([3.0, -1.0]), np.array(1.0), cone="nuclear")
    >>> float(t), np.round(np.diag(Xp), 6).tolist()
    (2.0, [2.0, 0.0])
    """
    xp = compat.array_namespace(X, t, v)
    if cone != "nuclear" and X.shape[-1] != X.shape[-2]:
        raise ValueError(f"project_spectral_cone: X must be square for cone={cone!r}, got shape {tuple(X.shape)}")
    if cone == "psd":
        return project_psd(X)
    if t is None:
        raise ValueError(f"project_spectral_cone: t is required for cone={cone!r}")
    if tuple(t.shape) != tuple(X.shape[:-2]):
        raise ValueError(f"project_spectral_cone: t has shape {tuple(t.shape)}, expected the batch shape "
                         f"{tuple(X.shape[:-2])} of X")
    if cone == "logdet":
        if v is None:
            raise ValueError("project_spectral_cone: v is required for cone='logdet'")
        if tuple(v.shape) != tuple(X.shape[:-2]):
            raise ValueError(f"project_spectral_cone: v has shape {tuple(v.shape)}, expected the batch shape "
                             f"{tuple(X.shape[:-2])} of X")
    Xc, dt = upcast(X, xp)
    tc = compat.cast(t, Xc.dtype, xp)
    vc = None if v is None else compat.cast(v, Xc.dtype, xp)
    # projections onto cones are positively homogeneous: project (X, t, v) / s and scale back (s the largest
    # magnitude per problem), so the bisections and squares stay finite near the dtype's range
    sc = xp.maximum(matrix_scale(xp, Xc)[..., 0, 0], xp.abs(tc))
    if vc is not None and cone == "logdet":
        sc = xp.maximum(sc, xp.abs(vc))
        vc = vc / sc
    Xc, tc = Xc / sc[..., None, None], tc / sc
    if cone == "nuclear":   # singular values (>= 0): any m x n matrix
        U, sv, Vt = xp.linalg.svd(Xc, full_matrices=False)
        t2, s2 = _l1_cone(tc, sv, xp)
        return compat.cast(t2 * sc, dt, xp), compat.cast((U * s2[..., None, :]) @ Vt * sc[..., None, None], dt, xp)
    w, U = eigh(Xc, xp, clamp=False)
    n = X.shape[-1]
    if cone == "sum_largest":
        if k is None or not 0 < k < n:
            raise ValueError(f"project_spectral_cone: k must be an int in [1, {n - 1}] for cone='sum_largest', "
                             f"got {k}")
        t2, w2 = _sum_largest_cone(tc, w, k, xp)
        return compat.cast(t2 * sc, dt, xp), compat.cast(recon(U, w2 * sc[..., None], xp), dt, xp)
    t2, v2, w2 = _logdet_cone(tc, vc, w, xp)
    return (compat.cast(t2 * sc, dt, xp), compat.cast(v2 * sc, dt, xp),
            compat.cast(recon(U, w2 * sc[..., None], xp), dt, xp))
