"""Riemannian batch normalization of SPD matrices under the (generalized) Bures-Wasserstein, affine-invariant and
log-Euclidean metrics: centring, variance normalisation and biasing, with running statistics and a VJP for the
data, the SPD bias, the scalar weight and the GBW metric matrix ``M``.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.typing import Array
from .._lib.api import public, public_class, vjp
from .._lib.roles import SPD, Bool, Choice, Float, Int, Option, Positive, Probability, Scalar
from ._linalg import (apply_native, bw2, divdiff, eigh, eye, funm, funm_bwd, lyap_eig, mT, ot_map, recon, rot,
                      sqrt_pair, sym, upcast)

METRICS = ("bw", "gbw", "airm", "lem")


@public_class
class RBNState(NamedTuple):
    """Running statistics of :func:`riemannian_batch_norm`: ``mean`` (n, n) SPD (for bw/gbw in the whitened
    space ``M^{-1/2} X^p M^{-1/2}``) and ``var`` (scalar array)."""

    mean: object
    var: object


# ---------------------------------------------------------------------------- small helpers
def _batch_sum(G, xp):
    """Sum a batch of (.., n, n) cotangents down to one (n, n)."""
    n = G.shape[-1]
    return xp.sum(xp.reshape(G, (-1, n, n)), axis=0)


def _phi(X, Mh, p, xp):
    if p != 1.0:
        X, _ = funm(X, "pow", xp, p=p)
    return X if Mh is None else sym(Mh @ X @ Mh, xp)


def _bw_mean(Y, n_steps, xp):
    """Batch BW barycenter over axis 0 of (N, n, n): ``n_steps`` fixed-point steps from the arithmetic mean."""
    P = xp.mean(Y, axis=0)
    for _ in range(n_steps):
        H, Hi, _ = sqrt_pair(P, xp)
        S = xp.mean(funm(H @ Y @ H, "sqrt", xp)[0], axis=0)
        P = sym(Hi @ S @ S @ Hi, xp)
    return P


def _airm_mean(X, n_steps, xp):
    """Karcher mean (AIRM) over axis 0: ``n_steps`` steps with unit step size from the arithmetic mean."""
    P = xp.mean(X, axis=0)
    for _ in range(n_steps):
        H, Hi, _ = sqrt_pair(P, xp)
        Lm = xp.mean(funm(Hi @ X @ Hi, "log", xp)[0], axis=0)
        E, _ = funm(Lm, "exp", xp)
        P = sym(H @ E @ H, xp)
    return P


def _metric_args(fn, metric, M, power):
    """The checks the roles cannot express: ``M`` exactly for gbw, ``power`` non-zero and only for bw/gbw."""
    if metric == "gbw" and M is None:
        raise ValueError(f"{fn}: M is required for metric='gbw' (the SPD matrix of the generalized BW metric)")
    if metric != "gbw" and M is not None:
        raise ValueError(f"{fn}: M is only used by metric='gbw', got metric={metric!r}")
    p = float(power)
    if p == 0:
        raise ValueError(f"{fn}: power must be non-zero, got {power}")
    if p != 1.0 and metric not in ("bw", "gbw"):
        raise ValueError(f"{fn}: power={power} is only used by metric='bw' or 'gbw'")
    return p


def _spd_sample(rng, shape, n, dtype):
    a = rng.standard_normal(tuple(shape) + (n, 2 * n))
    return (a @ np.swapaxes(a, -1, -2) / (2 * n) + 0.5 * np.eye(n)).astype(dtype)


def _example(with_stats):
    """A valid call for the generated suites: the gbw metric with M, so every argument is in use."""
    def make(rng, dtype):
        X = _spd_sample(rng, (2, 3), 3, dtype)
        M = _spd_sample(rng, (), 3, dtype)
        if not with_stats:
            return (X,), {"M": M, "metric": "gbw"}
        G = _spd_sample(rng, (), 3, dtype)
        return (X, G, np.asarray(0.8, dtype), _spd_sample(rng, (), 3, dtype), np.asarray(1.3, dtype), M), \
            {"metric": "gbw"}
    return make


_STAT_ROLES = dict(X=SPD("... N n n", gate="check"), M=SPD("n n", optional=True, gate="check"),
                   metric=Choice(METRICS), power=Scalar(), check=Bool())


# ---------------------------------------------------------------------------- statistics
def _statistics(X, metric, M, p, mean_iter, xp):
    n = X.shape[-1]
    Xc, dt = upcast(X, xp)
    Xf = xp.reshape(sym(Xc, xp), (-1, n, n))
    # every mean is homogeneous of degree 1 in the batch, the bw variance too, airm/lem variances of degree 0:
    # they are computed for the batch divided by its largest entry (finite near the dtype's range)
    if metric in ("bw", "gbw"):
        Mh = None
        if M is not None:
            _, Mh, _ = sqrt_pair(compat.cast(M, Xf.dtype, xp), xp)
        Y = _phi(Xf, Mh, p, xp)
        c = _global_scale(Y, xp)
        if compat.is_concrete(c) and not math.isfinite(float(c)):
            raise ValueError(f"rbn_statistics: M^(-1/2) X^p M^(-1/2) overflows {dt} (X too large or M too small)")
        Y = Y / c
        G = _bw_mean(Y, mean_iter, xp)
        var = xp.mean(bw2(G, Y, xp)) / p ** 2 * c        # accurate also for points close to the mean
        G = G * c
    else:
        c = _global_scale(Xf, xp)
        Xf = Xf / c
        if metric == "airm":
            G = _airm_mean(Xf, mean_iter, xp)
            _, Hi, _ = sqrt_pair(G, xp)
            w = xp.linalg.eigvalsh(sym(Hi @ Xf @ Hi, xp))
            lw = xp.log(xp.maximum(w, float(xp.finfo(w.dtype).smallest_normal)))
            var = xp.mean(xp.sum(lw * lw, axis=-1))
        else:
            Lx = funm(Xf, "log", xp)[0]
            Lg = xp.mean(Lx, axis=0)
            G = funm(Lg, "exp", xp)[0]
            D = Lx - Lg
            var = xp.mean(xp.sum(D * D, axis=(-2, -1)))
        G = G * c
    return compat.cast(G, dt, xp), compat.cast(xp.asarray(var), dt, xp)   # a 0-d array, not a NumPy scalar


def _global_scale(X, xp):
    """The largest entry magnitude of the whole batch (a 0-d array), 1 for an all-zero batch."""
    c = xp.max(xp.abs(X))
    return xp.where(c > 0, c, xp.ones_like(c))


@public(**_STAT_ROLES, mean_iter=Int(0), example=_example(False), sizes={"n": 3})
def rbn_statistics(X: Array, *, metric: str = "bw", M: Array | None = None, power: float = 1.0, mean_iter: int = 1,
                   check: bool = True) -> tuple[Array, Array]:
    r"""Batch mean and variance of SPD matrices under ``metric`` (no gradient flows through them).

    .. math::

        G = \arg\min_M \sum_i d^2(M, X_i)\ \text{(approximately, after mean\_iter steps)},\qquad v = \frac1N\sum_i d^2(X_i, G)

    - ``"bw"``/``"gbw"``: on ``Xh = M^{-1/2} X^p M^{-1/2}``: the BW barycenter after ``mean_iter`` fixed-point
      steps from the arithmetic mean (GBWBN uses one) and ``var = mean_i d_BW^2(Xh_i, G) / p^2`` (the squared
      distances by :func:`bw_distance`'s accurate formulation).
    - ``"airm"``: Karcher mean after ``mean_iter`` steps (SPDNetBN uses one), ``var = mean_i d_AIRM^2(X_i, G)``.
    - ``"lem"``: ``G = exp(mean_i log X_i)`` (exact), ``var = mean_i ||log X_i - log G||_F^2``.

    ``mean_iter`` is a fixed number of steps, as in the reference implementations (not a solver run to a
    tolerance; :meth:`BuresWasserstein.mean` is that).

    Parameters
    ----------
    X : array (..., N, n, n)
        Batch of SPD matrices; all axes but the last two are the batch.
    metric : {"bw", "gbw", "airm", "lem"}
    M : array (n, n), optional
        SPD matrix of the generalized BW metric (``metric="gbw"`` only, and required there).
    power : float
        Matrix-power deformation for bw/gbw (non-zero).
    mean_iter : int >= 0
        Barycenter / Karcher steps from the arithmetic mean.
    check : bool
        Validate finiteness, symmetry and positive definiteness; ``False`` skips it.

    Returns
    -------
    (G (n, n), var (scalar array))

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> G, v = spd.rbn_statistics(np.stack([np.eye(2), 4 * np.eye(2)]), metric="lem")
    >>> np.allclose(G, 2 * np.eye(2)), round(float(v), 6)
    (True, 0.960906)
    """
    p = _metric_args("rbn_statistics", metric, M, power)
    xp = compat.array_namespace(X, M)
    return _statistics(X, metric, M, p, mean_iter, xp)


# ---------------------------------------------------------------------------- the differentiable core
class _BWParts(NamedTuple):
    c: Any          # the scale of (mean, Xh): the log map is taken at the scaled pair
    sqc: Any
    p: float
    eM: Any
    Mq: Any
    Mh: Any
    eX: Any
    eB0: Any
    Xp: Any
    Bp: Any
    Gh: Any
    Gih: Any
    UG: Any
    KG: Any
    eC: Any
    W: Any
    f: Any
    b: Any
    UB: Any
    H: Any
    D1: Any
    D2: Any
    Zt: Any
    L: Any
    Bh: Any
    D: Any
    eO: Any


class _AIRMParts(NamedTuple):
    Gih: Any
    Bq: Any
    eB: Any
    c: Any
    UC: Any
    Cf: Any
    f: Any


class _LEMParts(NamedTuple):
    eX: Any
    eB: Any
    eA: Any
    Dv: Any
    f: Any


class RBNRes(NamedTuple):
    """Residuals of rbn_normalize: the metric's parts, ``1/sqrt(var + eps)``, which optional inputs were given."""
    metric: str
    parts: Any
    rs: Any
    flags: tuple
    shape: tuple
    dtype: Any


@public(X=SPD("... N n n", gate="check"), mean=SPD("n n", gate="check"), var=Float("", finite=True, gate="check"),
        bias=SPD("n n", optional=True, gate="check"), weight=Float("", finite=True, optional=True, gate="check"),
        M=SPD("n n", optional=True, gate="check"), metric=Choice(METRICS), power=Scalar(), eps=Positive(),
        check=Bool(), example=_example(True), sizes={"n": 3})
def rbn_normalize(X: Array, mean: Array, var: Array, bias: Array | None = None, weight: Array | None = None,
                  M: Array | None = None, *, metric: str = "bw", power: float = 1.0, eps: float = 1e-5,
                  check: bool = True) -> Array:
    r"""Normalise a batch of SPD matrices given its statistics: centre at ``mean``, scale the dispersion by
    ``weight / sqrt(var + eps)``, move to ``bias`` (the differentiable core of :func:`riemannian_batch_norm`).

    .. math::

        Y = \mathrm{Exp}_{B}\Bigl(\Gamma_{I\to B}\bigl(f\,\Gamma_{G\to I}(\mathrm{Log}_G X)\bigr)\Bigr),\qquad f = \frac{w}{\sqrt{v + \epsilon}}

    - ``"bw"``/``"gbw"`` (GBWBN, Wang, Jin, Chen, Luo, Wu, "Learning to Normalize on the SPD Manifold under
      Bures-Wasserstein Geometry", CVPR 2025): with ``Xh = M^{-1/2} X^p M^{-1/2}``,
      ``Bh = M^{-1/2} bias^p M^{-1/2}`` and ``G = mean`` (whitened space),
      ``W = Gamma_{G->I}(Log^BW_G Xh)``, ``D = Exp^BW_Bh(Gamma_{I->Bh}(f W))``, ``Y = (M^{1/2} D M^{1/2})^{1/p}``,
      ``f = weight / sqrt(var + eps)``; ``Gamma_{G->I}(V) = U (sqrt(2/(g_a+g_b)) o U^T V U) U^T`` is the
      eigenbasis isometry ``T_G -> T_I`` of GBWBN (exact BW parallel transport has no closed form) and
      ``Gamma_{I->Bh}`` its inverse at ``Bh``.  (GBWBN writes ``Exp_I(f Log_I(Exp_I W))``; on the domain where
      ``I + W/2`` is positive definite that is ``f W``, used here.)
    - ``"airm"`` (SPDNetBN, Brooks et al., NeurIPS 2019, with LieBN's variance scaling, Chen et al. ICLR 2024):
      ``Y = bias^{1/2} (G^{-1/2} X G^{-1/2})^f bias^{1/2}``.
    - ``"lem"`` (LieBN): ``Y = exp(f (log X - log G) + log bias)``.

    ``mean`` and ``var`` are statistics and get no cotangent (``nondiff``); ``X``, ``bias`` (SPD, default I),
    ``weight`` (scalar, default 1) and ``M`` (gbw) get exact VJPs, including the derivative of the eigenbasis
    transport ``Gamma_{I->Bh}`` with respect to ``Bh`` (divided differences in both arguments, finite for
    repeated eigenvalues such as ``bias = I``).

    Parameters
    ----------
    X : array (..., N, n, n)
        Batch of SPD matrices.
    mean : array (n, n)
        SPD batch mean (for bw/gbw in the whitened space), e.g. from :func:`rbn_statistics`.
    var : array ()
        Batch variance, finite and non-negative.
    bias : array (n, n), optional
        SPD bias (default I).
    weight : array (), optional
        Finite scalar dispersion (default 1).
    M : array (n, n), optional
        SPD matrix of the generalized BW metric (``metric="gbw"`` only, and required there).
    metric : {"bw", "gbw", "airm", "lem"}
    power : float
        Matrix-power deformation for bw/gbw (non-zero).
    eps : float > 0
        Added to the variance.
    check : bool
        Validate the values of the arrays; ``False`` skips the host round trip.

    Returns
    -------
    Y : array, the shape of ``X``

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> X = np.stack([np.eye(2), 4 * np.eye(2)])
    >>> Y = spd.rbn_normalize(X, 2 * np.eye(2), np.asarray(1.0), metric="lem", eps=1e-12)
    >>> np.allclose(Y[0] @ Y[1], np.eye(2))
    True
    """
    return rbn_normalize_fwd(X, mean, var, bias, weight, M, metric=metric, power=power, eps=eps, check=check)[0]


def rbn_normalize_fwd(X, mean, var, bias=None, weight=None, M=None, *, metric="bw", power=1.0, eps=1e-5,
                       check=True):
    p = _metric_args("rbn_normalize", metric, M, power)
    xp = compat.array_namespace(X, mean, var, bias, weight, M)
    if check and compat.is_concrete(var) and float(compat.to_numpy(var)) < 0:
        raise ValueError(f"rbn_normalize: var must be non-negative (a variance), got {float(compat.to_numpy(var))}")
    n = X.shape[-1]
    Xc, dt = upcast(X, xp)
    ct = Xc.dtype
    shape = tuple(X.shape)
    Xf = xp.reshape(sym(Xc, xp), (-1, n, n))
    G = sym(compat.cast(mean, ct, xp), xp)
    v = compat.cast(var, ct, xp)
    s = xp.asarray(1.0, dtype=ct, device=compat.device(Xc)) if weight is None else compat.cast(weight, ct, xp)
    B = eye(n, Xf, xp) if bias is None else sym(compat.cast(bias, ct, xp), xp)
    rs = 1.0 / xp.sqrt(v + eps)
    f = s * rs
    if metric in ("bw", "gbw"):
        Y, parts = _bw_forward(Xf, G, B, f, None if M is None else sym(compat.cast(M, ct, xp), xp), p, xp)
    elif metric == "airm":
        Y, parts = _airm_forward(Xf, G, B, f, xp)
    else:
        Y, parts = _lem_forward(Xf, G, B, f, xp)
    Y = xp.reshape(Y, shape)
    flags = (bias is not None, weight is not None, M is not None)
    return compat.cast(Y, dt, xp), RBNRes(metric, parts, rs, flags, shape, dt)




def rbn_normalize_bwd(res: RBNRes, dY):
    rs = res.rs
    xp = compat.array_namespace(rs)
    n = res.shape[-1]
    dYf = xp.reshape(compat.cast(dY, rs.dtype, xp), (-1, n, n))
    if res.metric in ("bw", "gbw"):
        dX, dB, df, dM = _bw_backward(res.parts, dYf, xp)
    elif res.metric == "airm":
        dX, dB, df = _airm_backward(res.parts, dYf, xp)
        dM = None
    else:
        dX, dB, df = _lem_backward(res.parts, dYf, xp)
        dM = None
    has_b, has_w, has_m = res.flags
    dt = res.dtype
    dX = compat.cast(xp.reshape(dX, res.shape), dt, xp)
    dB = compat.cast(dB, dt, xp) if has_b else None
    dW = compat.cast(df * rs, dt, xp) if has_w else None
    dM = compat.cast(dM, dt, xp) if has_m else None
    return dX, None, None, dB, dW, dM


# ---- BW / GBW
def _gamma_h(b, xp):
    """h(b_a, b_b) = sqrt((b_a + b_b)/2) and its divided differences in each argument (n, n, n)."""
    a_ = b[:, None, None]
    b_ = b[None, :, None]
    c_ = b[None, None, :]

    def h(x, y):
        return xp.sqrt((x + y) / 2)

    # D1[a, b, c] = (h(b_b, b_c) - h(b_a, b_c)) / (b_b - b_a); D2[a, b, c] = (h(b_a, b_c) - h(b_a, b_b)) / (b_c - b_b)
    # cancellation-free: (sqrt(u) - sqrt(w)) / (u - w) = 1 / (sqrt(u) + sqrt(w)) with u, w the halves
    D1 = 0.5 / (h(b_, c_) + h(a_, c_))
    D2 = 0.5 / (h(a_, c_) + h(a_, b_))
    return h(b[:, None], b[None, :]), D1, D2


def _bw_forward(Xf, G, B, f, M, p, xp):
    if M is not None:
        Mq, Mh, eM = sqrt_pair(M, xp)
    else:
        Mq = Mh = eM = None
    if p != 1.0:
        Xp, eX = funm(Xf, "pow", xp, p=p)
        Bp, eB0 = funm(B, "pow", xp, p=p)
    else:
        Xp, eX, Bp, eB0 = Xf, None, B, None
    Xh = Xp if Mh is None else sym(Mh @ Xp @ Mh, xp)
    Bh = Bp if Mh is None else sym(Mh @ Bp @ Mh, xp)
    # W(G, Xh) = sqrt(c) W(G/c, Xh/c): computed on the pair divided by a common scale (no overflow of
    # G^{1/2} Xh G^{1/2} near the dtype's range); the backward chains through the scaled pair
    c = xp.sqrt(_global_scale(G, xp)) * xp.sqrt(_global_scale(Xh, xp))   # the pair's geometric-mean magnitude
    sqc = xp.sqrt(c)
    Gs, Xhs = G / c, Xh / c
    Gh, Gih, (g, UG) = sqrt_pair(Gs, xp)
    C = sym(Gh @ Xhs @ Gh, xp)
    S, eC = funm(C, "sqrt", xp)
    V = sym(Gih @ S @ Gh + Gh @ S @ Gih, xp) - 2 * Gs
    KG = xp.sqrt(2.0 / (g[:, None] + g[None, :]))
    W = sqc * (UG @ (KG * rot(UG, V, xp)) @ mT(UG, xp))
    Z = f * W
    b, UB = eigh(Bh, xp)
    H, D1, D2 = _gamma_h(b, xp)
    Zt = rot(UB, Z, xp)
    Vb = UB @ (H * Zt) @ mT(UB, xp)
    L = lyap_eig(b, UB, Vb, xp)
    D = sym(Bh + Vb + L @ Bh @ L, xp)
    O = D if Mq is None else sym(Mq @ D @ Mq, xp)
    if p != 1.0:
        Y, eO = funm(O, "pow", xp, p=1.0 / p)
    else:
        Y, eO = O, None
    r = _BWParts(c=c, sqc=sqc, p=p, eM=eM, Mq=Mq, Mh=Mh, eX=eX, eB0=eB0, Xp=Xp, Bp=Bp, Gh=Gh, Gih=Gih, UG=UG, KG=KG,
                 eC=eC, W=W, f=f, b=b, UB=UB, H=H, D1=D1, D2=D2, Zt=Zt, L=L, Bh=Bh, D=D, eO=eO)
    return Y, r


def _bw_backward(r, dY, xp):
    p = r.p
    Mq, Mh = r.Mq, r.Mh
    dO = funm_bwd(*r.eO, dY, "pow", xp, p=1.0 / p) if p != 1.0 else sym(dY, xp)
    D = r.D
    if Mq is not None:
        dD = sym(Mq @ dO @ Mq, xp)
        dMq = _batch_sum(sym(dO @ Mq @ D + D @ Mq @ dO, xp), xp)
    else:
        dD, dMq = dO, None
    L, Bh, b, UB = r.L, r.Bh, r.b, r.UB
    # D = Bh + Vb + L Bh L,  Bh L + L Bh = Vb
    R = sym(dD @ L @ Bh + Bh @ L @ dD, xp)
    Q = lyap_eig(b, UB, R, xp)
    dVb = dD + Q
    dBh = _batch_sum(dD + L @ dD @ L - sym(Q @ L + L @ Q, xp), xp)
    # Vb = UB (H o Zt) UB^T: cotangent of Z (self-adjoint map) and of Bh (bivariate divided differences)
    Gt = rot(UB, sym(dVb, xp), xp)
    dZ = UB @ (r.H * Gt) @ mT(UB, xp)
    Zt = r.Zt
    Gt_r = xp.permute_dims(Gt, (2, 1, 0))                        # (c, a, i)
    Zt_r = xp.permute_dims(Zt, (2, 0, 1))                        # (c, i, b)
    P1 = Gt_r @ Zt_r                                             # P1[c, a, b] = sum_i Gt_iac Zt_ibc
    E1 = xp.sum(xp.permute_dims(r.D1, (2, 0, 1)) * P1, axis=0)   # E1[a, b]
    Zt_a = xp.permute_dims(Zt, (1, 2, 0))                        # (a, b, i)
    Gt_a = xp.permute_dims(Gt, (1, 0, 2))                        # (a, i, c)
    P2 = Zt_a @ Gt_a                                             # P2[a, b, c] = sum_i Zt_iab Gt_iac
    E2 = xp.sum(r.D2 * P2, axis=0)                            # E2[b, c]
    dBh = dBh + UB @ sym(E1 + E2, xp) @ mT(UB, xp)
    # Z = f W
    W = r.W
    df = xp.sum(dZ * W)
    dW = r.f * dZ * r.sqc                                        # cotangent of the scaled pair's W
    UG, KG = r.UG, r.KG
    dV = UG @ (KG * rot(UG, sym(dW, xp), xp)) @ mT(UG, xp)
    Gh, Gih = r.Gh, r.Gih
    dS = sym(Gih @ dV @ Gh + Gh @ dV @ Gih, xp)
    dC = funm_bwd(*r.eC, dS, "sqrt", xp)
    dXh = sym(Gh @ dC @ Gh, xp) / r.c
    Xp, Bp = r.Xp, r.Bp
    if Mh is not None:
        dXp = sym(Mh @ dXh @ Mh, xp)
        dBp = sym(Mh @ dBh @ Mh, xp)
        dMh = _batch_sum(sym(dXh @ Mh @ Xp + Xp @ Mh @ dXh, xp), xp) + sym(dBh @ Mh @ Bp + Bp @ Mh @ dBh, xp)
        wM, UM = r.eM
        dM = funm_bwd(wM, UM, dMh, "invsqrt", xp) + funm_bwd(wM, UM, dMq, "sqrt", xp)
    else:
        dXp, dBp, dM = dXh, dBh, None
    if p != 1.0:
        dX = funm_bwd(*r.eX, dXp, "pow", xp, p=p)
        dB = funm_bwd(*r.eB0, dBp, "pow", xp, p=p)
    else:
        dX, dB = sym(dXp, xp), sym(dBp, xp)
    return dX, dB, df, dM


# ---- AIRM
def _airm_forward(Xf, G, B, f, xp):
    _, Gih, _ = sqrt_pair(G, xp)
    Bq, _, eB = sqrt_pair(B, xp)
    C = sym(Gih @ Xf @ Gih, xp)
    c, UC = eigh(C, xp)
    Cf = recon(UC, c ** f, xp)
    Y = sym(Bq @ Cf @ Bq, xp)
    return Y, _AIRMParts(Gih=Gih, Bq=Bq, eB=eB, c=c, UC=UC, Cf=Cf, f=f)


def _airm_backward(r, dY, xp):
    Bq, Cf, c, UC, f, Gih = r.Bq, r.Cf, r.c, r.UC, r.f, r.Gih
    dY = sym(dY, xp)
    dBq = _batch_sum(sym(dY @ Bq @ Cf + Cf @ Bq @ dY, xp), xp)
    dCf = sym(Bq @ dY @ Bq, xp)
    Gt = rot(UC, dCf, xp)
    df = xp.sum(xp.linalg.diagonal(Gt) * (c ** f) * xp.log(c))
    K = divdiff(c, "pow", xp, p=f)
    dC = UC @ (K * Gt) @ mT(UC, xp)
    dX = sym(Gih @ dC @ Gih, xp)
    dB = funm_bwd(*r.eB, dBq, "sqrt", xp)
    return dX, dB, df


# ---- LEM
def _lem_forward(Xf, G, B, f, xp):
    Lx, eX = funm(Xf, "log", xp)
    Lg, _ = funm(G, "log", xp)
    Lb, eB = funm(B, "log", xp)
    Dv = Lx - Lg
    A = f * Dv + Lb
    Y, eA = funm(A, "exp", xp)
    return Y, _LEMParts(eX=eX, eB=eB, eA=eA, Dv=Dv, f=f)


def _lem_backward(r, dY, xp):
    dA = funm_bwd(*r.eA, dY, "exp", xp)
    df = xp.sum(dA * r.Dv)
    dX = funm_bwd(*r.eX, r.f * dA, "log", xp)
    dB = funm_bwd(*r.eB, _batch_sum(dA, xp), "log", xp)
    return dX, dB, df



def _running_update(metric, R, G, m, xp):
    if metric in ("bw", "gbw"):
        T = ot_map(R, G, xp)
        Gm = (1 - m) * eye(R.shape[-1], R, xp) + m * T
        return sym(Gm @ R @ Gm, xp)
    if metric == "airm":
        H, Hi, _ = sqrt_pair(R, xp)
        P, _ = funm(Hi @ G @ Hi, "pow", xp, p=m)
        return sym(H @ P @ H, xp)
    Lr, _ = funm(R, "log", xp)
    Lg, _ = funm(G, "log", xp)
    return funm((1 - m) * Lr + m * Lg, "exp", xp)[0]




vjp(rbn_normalize, rbn_normalize_fwd, rbn_normalize_bwd, nondiff_argnums=(1, 2), validate=True)


# ---------------------------------------------------------------------------- the public layer
def _check_state(value, name):
    if value is None:
        return None
    if not isinstance(value, tuple) or len(value) != 2:
        raise TypeError(f"riemannian_batch_norm: {name} must be an RBNState(mean, var) or None, got "
                        f"{type(value).__name__}")
    return value if isinstance(value, RBNState) else RBNState(*value)


@public(X=SPD("... N n n", gate="check"), state=Option(check=_check_state),
        bias=SPD("n n", optional=True, gate="check"), weight=Float("", finite=True, optional=True, gate="check"),
        M=SPD("n n", optional=True, gate="check"), metric=Choice(METRICS), power=Scalar(), training=Bool(),
        momentum=Probability(), eps=Positive(), mean_iter=Int(0), check=Bool(), example=_example(False),
        sizes={"n": 3})
def riemannian_batch_norm(X: Array, state: RBNState | None = None, *, bias: Array | None = None, weight: Array | None = None,
                          M: Array | None = None, metric: str = "bw", power: float = 1.0, training: bool = True,
                          momentum: float = 0.1, eps: float = 1e-5, mean_iter: int = 1,
                          check: bool = True) -> tuple[Array, RBNState]:
    r"""Riemannian batch normalization of SPD matrices (functional: returns the output and the new state).

    .. math::

        Y_i = \mathrm{Exp}_{B}\Bigl(\Gamma_{I\to B}\bigl(f\,\Gamma_{G\to I}(\mathrm{Log}_G X_i)\bigr)\Bigr),\quad f = \frac{w}{\sqrt{v+\epsilon}},\qquad R \leftarrow \gamma_{R\to G}(m)

    Training: the batch statistics (:func:`rbn_statistics`: mean by ``mean_iter`` fixed-point/Karcher steps,
    variance as the mean squared geodesic distance to it) normalise the batch (:func:`rbn_normalize`) and update
    the running statistics: the running mean moves along the metric's geodesic towards the batch mean by
    ``momentum`` (BW: ``gamma_{R->G}(momentum)``; AIRM: ``R^{1/2}(R^{-1/2} G R^{-1/2})^m R^{1/2}``; LEM: in the
    log domain), the running variance by an exponential moving average.  Evaluation
    (``training=False``) normalises with the running statistics and returns the state unchanged.

    The output has (for an exact batch mean, ``mean_iter`` large, and ``eps -> 0``) mean ``bias`` and variance
    ``weight^2`` under the metric.  Statistics carry no gradient (as in every reference implementation);
    gradients flow to ``X``, ``bias``, ``weight`` and ``M`` through the registered op :func:`rbn_normalize`,
    whose analytic VJP this function uses by itself for torch tensors that require grad and under JAX
    transformations (``jax.grad``/``jit``), so ``riemannian_batch_norm`` can be called directly in a torch or
    JAX model.

    References: Brooks, Schwander, Barbaresco, Schneider, Cord, "Riemannian batch normalization for SPD neural
    networks", NeurIPS 2019 (``metric="airm"``); Chen et al., "A Lie group approach to Riemannian batch
    normalization", ICLR 2024 (``"lem"``, variance scaling); Wang, Jin, Chen, Luo, Wu, "Learning to Normalize on
    the SPD Manifold under Bures-Wasserstein Geometry", CVPR 2025 (``"bw"``, ``"gbw"`` with learnable ``M`` and
    matrix power ``power``).

    Parameters
    ----------
    X : array (..., N, n, n)
        Batch of SPD matrices (all leading axes form the batch).
    state : RBNState, optional
        Running (mean, var); ``None`` starts from ``(I, 1)``.
    bias : array (n, n), optional
        SPD bias (default I).
    weight : array (), optional
        Scalar dispersion (default 1).
    M : array (n, n), optional
        SPD matrix of the generalized BW metric (``metric="gbw"`` only).
    metric : {"bw", "gbw", "airm", "lem"}
    power : float
        Matrix-power deformation for bw/gbw (non-zero).
    training : bool
    momentum : float in [0, 1]
    eps : float > 0
        Added to the variance.
    mean_iter : int
        Barycenter steps for the batch mean (default 1, as the reference implementations).
    check : bool
        Validate the values of the arrays; ``False`` skips the host round trip.

    Returns
    -------
    Y : array, shape of X
    state : RBNState

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> X = spd.covariance(np.random.default_rng(0).standard_normal((8, 50, 4)))
    >>> Y, state = spd.riemannian_batch_norm(X, metric="bw")
    >>> Y.shape, state.mean.shape
    ((8, 4, 4), (4, 4))
    """
    p = _metric_args("riemannian_batch_norm", metric, M, power)
    xp = compat.array_namespace(X, bias, weight, M)
    n = X.shape[-1]
    ct = compat.compute_dtype(X, xp)
    if state is None:
        state = RBNState(eye(n, compat.cast(X[..., 0, :, :], ct, xp), xp),
                         xp.asarray(1.0, dtype=ct, device=compat.device(X)))
    R, r = state
    if tuple(R.shape) != (n, n):
        raise ValueError(f"riemannian_batch_norm: state.mean has shape {tuple(R.shape)}, expected {(n, n)}")
    opts = dict(metric=metric, power=power, eps=eps, check=False)
    if training:
        G, v = _statistics(compat.stop_gradient(X), metric, compat.stop_gradient(M), p, mean_iter, xp)
        Y = apply_native("spd.rbn_normalize", X, G, v, bias, weight, M, **opts)
        newR = _running_update(metric, compat.cast(R, ct, xp), compat.cast(G, ct, xp), momentum, xp)
        newr = (1 - momentum) * compat.cast(r, ct, xp) + momentum * compat.cast(v, ct, xp)
        return Y, RBNState(compat.cast(newR, R.dtype, xp), compat.cast(xp.asarray(newr), r.dtype, xp))
    Y = apply_native("spd.rbn_normalize", X, compat.cast(R, X.dtype, xp), compat.cast(r, X.dtype, xp), bias, weight,
                     M, **opts)
    return Y, state
