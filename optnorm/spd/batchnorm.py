"""Riemannian batch normalization of SPD matrices under the (generalized) Bures-Wasserstein, affine-invariant and
log-Euclidean metrics: centring, variance normalisation and biasing, with running statistics and a VJP for the
data, the SPD bias, the scalar weight and the GBW metric matrix ``M``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from .._lib import compat, ops, validate
from .sqrtm import (_cast, _check_spd_input, _divdiff, _eigh, _eye, _funm, _funm_bwd, _lyap_eig, _mT,
                    _recon, _rot, _sym, _upcast)

__all__ = ["riemannian_batch_norm", "rbn_statistics", "rbn_normalize", "RBNState"]

METRICS = ("bw", "gbw", "airm", "lem")


class RBNState(NamedTuple):
    """Running statistics: ``mean`` (n, n) SPD (for bw/gbw in the whitened space ``M^{-1/2} X^p M^{-1/2}``)
    and ``var`` (scalar array)."""

    mean: object
    var: object


# ---------------------------------------------------------------------------- small helpers
def _sqrt_pair(P, xp):
    w, U = _eigh(P, xp)
    s = xp.sqrt(w)
    return _recon(U, s, xp), _recon(U, 1.0 / s, xp), (w, U)


def _batch_sum(G, xp):
    """Sum a batch of (.., n, n) cotangents down to one (n, n)."""
    n = G.shape[-1]
    return xp.sum(xp.reshape(G, (-1, n, n)), axis=0)


def _phi(X, Mh, p, xp):
    if p != 1.0:
        X, _ = _funm(X, "pow", xp, p=p)
    return X if Mh is None else _sym(Mh @ X @ Mh, xp)


def _bw_ot(G, X, xp):
    H, Hi, _ = _sqrt_pair(G, xp)
    S, _ = _funm(H @ X @ H, "sqrt", xp)
    return _sym(Hi @ S @ Hi, xp)


def _bw_mean(Y, n_steps, xp):
    """Batch BW barycenter over axis 0 of (N, n, n): ``n_steps`` fixed-point steps from the arithmetic mean."""
    P = xp.mean(Y, axis=0)
    for _ in range(n_steps):
        H, Hi, _ = _sqrt_pair(P, xp)
        S = xp.mean(_funm(H @ Y @ H, "sqrt", xp)[0], axis=0)
        P = _sym(Hi @ S @ S @ Hi, xp)
    return P


def _airm_mean(X, n_steps, xp):
    """Karcher mean (AIRM) over axis 0: ``n_steps`` steps with unit step size from the arithmetic mean."""
    P = xp.mean(X, axis=0)
    for _ in range(n_steps):
        H, Hi, _ = _sqrt_pair(P, xp)
        Lm = xp.mean(_funm(Hi @ X @ Hi, "log", xp)[0], axis=0)
        E, _ = _funm(Lm, "exp", xp)
        P = _sym(H @ E @ H, xp)
    return P


def _bw_dist2(A, B, xp):
    H, _, _ = _sqrt_pair(A, xp)
    mu = xp.linalg.eigvalsh(_sym(H @ B @ H, xp))
    tr = xp.sum(xp.linalg.diagonal(A), axis=-1) + xp.sum(xp.linalg.diagonal(B), axis=-1)
    return xp.maximum(tr - 2 * xp.sum(xp.sqrt(xp.maximum(mu, 0.0)), axis=-1), 0.0)


def _check_common(X, metric, M, power, xp, check):
    validate.check_in(metric, METRICS, "metric")
    _check_spd_input(X, "X", xp, check=check)
    if X.ndim < 3:
        raise ValueError(f"X must be a batch of SPD matrices (..., N, n, n) with at least 3 dimensions, got shape "
                         f"{tuple(X.shape)}")
    n = X.shape[-1]
    if metric == "gbw":
        if M is None:
            raise ValueError("M is required for metric='gbw' (the SPD matrix of the generalized BW metric)")
    elif M is not None:
        raise ValueError(f"M is only used by metric='gbw', got metric={metric!r}")
    if M is not None:
        _check_spd_input(M, "M", xp, check=check)
        validate.check_shape(M, (n, n), "M")
    p = validate._real(power, "power")
    if p == 0 or not math.isfinite(p):
        raise ValueError(f"power must be a finite non-zero number, got {power}")
    if p != 1.0 and metric not in ("bw", "gbw"):
        raise ValueError(f"power={power} is only used by metric='bw' or 'gbw'")
    return n, p


def _np_scalar(v):
    """NumPy scalars (what 0-d array arithmetic returns) become 0-d arrays."""
    import numpy as np

    return np.asarray(v) if isinstance(v, np.generic) else v


# ---------------------------------------------------------------------------- statistics
def rbn_statistics(X, *, metric="bw", M=None, power=1.0, mean_iter=1, check=True):
    """Batch mean and variance of SPD matrices under ``metric`` (no gradient flows through them).

    - ``"bw"``/``"gbw"``: on ``Xh = M^{-1/2} X^p M^{-1/2}``: the BW barycenter after ``mean_iter`` fixed-point
      steps from the arithmetic mean (GBWBN uses one) and ``var = mean_i d_BW^2(Xh_i, G) / p^2``.
    - ``"airm"``: Karcher mean after ``mean_iter`` steps (SPDNetBN uses one), ``var = mean_i d_AIRM^2(X_i, G)``.
    - ``"lem"``: ``G = exp(mean_i log X_i)`` (exact), ``var = mean_i ||log X_i - log G||_F^2``.

    All axes but the last two are the batch.  Returns ``(G (n, n), var (scalar array))``.
    """
    xp = validate.check_same_namespace(X=X, M=M)
    n, p = _check_common(X, metric, M, power, xp, check)
    mean_iter = validate.check_int(mean_iter, "mean_iter", low=0)
    Xc, dt = _upcast(X, xp)
    Xf = xp.reshape(_sym(Xc, xp), (-1, n, n))
    if metric in ("bw", "gbw"):
        Mh = None
        if M is not None:
            Mc, _ = _upcast(M, xp)
            _, Mh, _ = _sqrt_pair(xp.astype(Mc, Xf.dtype), xp)
        Y = _phi(Xf, Mh, p, xp)
        G = _bw_mean(Y, mean_iter, xp)
        var = xp.mean(_bw_dist2(G, Y, xp)) / p ** 2
    elif metric == "airm":
        G = _airm_mean(Xf, mean_iter, xp)
        _, Hi, _ = _sqrt_pair(G, xp)
        w = xp.linalg.eigvalsh(_sym(Hi @ Xf @ Hi, xp))
        lw = xp.log(xp.maximum(w, float(xp.finfo(w.dtype).smallest_normal)))
        var = xp.mean(xp.sum(lw * lw, axis=-1))
    else:
        Lx = _funm(Xf, "log", xp)[0]
        Lg = xp.mean(Lx, axis=0)
        G = _funm(Lg, "exp", xp)[0]
        D = Lx - Lg
        var = xp.mean(xp.sum(D * D, axis=(-2, -1)))
    return _cast(G, dt, xp), _cast(var, dt, xp)


# ---------------------------------------------------------------------------- the differentiable core
def rbn_normalize(X, mean, var, bias=None, weight=None, M=None, *, metric="bw", power=1.0, eps=1e-5, check=True):
    """Normalise a batch of SPD matrices given its statistics: centre at ``mean``, scale the dispersion by
    ``weight / sqrt(var + eps)``, move to ``bias`` (the differentiable core of :func:`riemannian_batch_norm`).

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

    Returns
    -------
    Y : array, the shape of ``X``
    """
    return rbn_normalize_fwd(X, mean, var, bias, weight, M, metric=metric, power=power, eps=eps, check=check)[0]


def rbn_normalize_fwd(X, mean, var, bias=None, weight=None, M=None, *, metric="bw", power=1.0, eps=1e-5,
                      check=True):
    var, weight = _np_scalar(var), _np_scalar(weight)
    xp = validate.check_same_namespace(X=X, mean=mean, var=var, bias=bias, weight=weight, M=M)
    n, p = _check_common(X, metric, M, power, xp, check)
    eps = validate.check_positive(eps, "eps")
    validate.check_shape(mean, (n, n), "mean")
    if var.ndim != 0:
        raise ValueError(f"var must be a scalar array (shape ()), got shape {tuple(var.shape)}")
    if bias is not None:
        validate.check_shape(bias, (n, n), "bias")
        _check_spd_input(bias, "bias", xp, check=check)
    if weight is not None and weight.ndim != 0:
        raise ValueError(f"weight must be a scalar array (shape ()), got shape {tuple(weight.shape)}")
    Xc, dt = _upcast(X, xp)
    ct = Xc.dtype
    shape = X.shape
    Xf = xp.reshape(_sym(Xc, xp), (-1, n, n))
    G = _sym(xp.astype(mean, ct), xp)
    v = xp.astype(var, ct)
    s = xp.asarray(1.0, dtype=ct, device=compat.device(Xc)) if weight is None else xp.astype(weight, ct)
    eye = _eye(n, Xf, xp)
    B = eye if bias is None else _sym(xp.astype(bias, ct), xp)
    rs = 1.0 / xp.sqrt(v + eps)
    f = s * rs
    if metric in ("bw", "gbw"):
        Y, res = _bw_forward(Xf, G, B, f, None if M is None else _sym(xp.astype(M, ct), xp), p, xp)
    elif metric == "airm":
        Y, res = _airm_forward(Xf, G, B, f, xp)
    else:
        Y, res = _lem_forward(Xf, G, B, f, xp)
    Y = xp.reshape(Y, shape)
    flags = (bias is not None, weight is not None, M is not None)
    return _cast(Y, dt, xp), (metric, res, rs, flags, shape, dt)


def _rbn_bwd(res, dY):
    metric, r, rs, flags, shape, dt = res
    xp = compat.array_namespace(rs)
    n = shape[-1]
    dYf = xp.reshape(xp.astype(dY, rs.dtype), (-1, n, n))
    if metric in ("bw", "gbw"):
        dX, dB, df, dM = _bw_backward(r, dYf, xp)
    elif metric == "airm":
        dX, dB, df = _airm_backward(r, dYf, xp)
        dM = None
    else:
        dX, dB, df = _lem_backward(r, dYf, xp)
        dM = None
    has_b, has_w, has_m = flags
    dX = _cast(xp.reshape(dX, shape), dt, xp)
    dB = _cast(dB, dt, xp) if has_b else None
    dW = _cast(df * rs, dt, xp) if has_w else None
    dM = _cast(dM, dt, xp) if has_m else None
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
    eye = _eye(Xf.shape[-1], Xf, xp)
    if M is not None:
        Mq, Mh, eM = _sqrt_pair(M, xp)
    else:
        Mq = Mh = eM = None
    if p != 1.0:
        Xp, eX = _funm(Xf, "pow", xp, p=p)
        Bp, eB0 = _funm(B, "pow", xp, p=p)
    else:
        Xp, eX, Bp, eB0 = Xf, None, B, None
    Xh = Xp if Mh is None else _sym(Mh @ Xp @ Mh, xp)
    Bh = Bp if Mh is None else _sym(Mh @ Bp @ Mh, xp)
    Gh, Gih, (g, UG) = _sqrt_pair(G, xp)
    C = _sym(Gh @ Xh @ Gh, xp)
    S, eC = _funm(C, "sqrt", xp)
    V = _sym(Gih @ S @ Gh + Gh @ S @ Gih, xp) - 2 * G
    KG = xp.sqrt(2.0 / (g[:, None] + g[None, :]))
    W = UG @ (KG * _rot(UG, V, xp)) @ _mT(UG, xp)
    Z = f * W
    b, UB = _eigh(Bh, xp)
    H, D1, D2 = _gamma_h(b, xp)
    Zt = _rot(UB, Z, xp)
    Vb = UB @ (H * Zt) @ _mT(UB, xp)
    L = _lyap_eig(b, UB, Vb, xp)
    D = _sym(Bh + Vb + L @ Bh @ L, xp)
    O = D if Mq is None else _sym(Mq @ D @ Mq, xp)
    if p != 1.0:
        Y, eO = _funm(O, "pow", xp, p=1.0 / p)
    else:
        Y, eO = O, None
    r = dict(p=p, eM=eM, Mq=Mq, Mh=Mh, eX=eX, eB0=eB0, Xp=Xp, Bp=Bp, Gh=Gh, Gih=Gih, UG=UG, KG=KG, eC=eC, W=W,
             f=f, b=b, UB=UB, H=H, D1=D1, D2=D2, Zt=Zt, L=L, Bh=Bh, D=D, eO=eO)
    return Y, r


def _bw_backward(r, dY, xp):
    p = r["p"]
    Mq, Mh = r["Mq"], r["Mh"]
    dO = _funm_bwd(*r["eO"], dY, "pow", xp, p=1.0 / p) if p != 1.0 else _sym(dY, xp)
    D = r["D"]
    if Mq is not None:
        dD = _sym(Mq @ dO @ Mq, xp)
        dMq = _batch_sum(_sym(dO @ Mq @ D + D @ Mq @ dO, xp), xp)
    else:
        dD, dMq = dO, None
    L, Bh, b, UB = r["L"], r["Bh"], r["b"], r["UB"]
    # D = Bh + Vb + L Bh L,  Bh L + L Bh = Vb
    R = _sym(dD @ L @ Bh + Bh @ L @ dD, xp)
    Q = _lyap_eig(b, UB, R, xp)
    dVb = dD + Q
    dBh = _batch_sum(dD + L @ dD @ L - _sym(Q @ L + L @ Q, xp), xp)
    # Vb = UB (H o Zt) UB^T: cotangent of Z (self-adjoint map) and of Bh (bivariate divided differences)
    Gt = _rot(UB, _sym(dVb, xp), xp)
    dZ = UB @ (r["H"] * Gt) @ _mT(UB, xp)
    Zt = r["Zt"]
    Gt_r = xp.permute_dims(Gt, (2, 1, 0))                        # (c, a, i)
    Zt_r = xp.permute_dims(Zt, (2, 0, 1))                        # (c, i, b)
    P1 = Gt_r @ Zt_r                                             # P1[c, a, b] = sum_i Gt_iac Zt_ibc
    E1 = xp.sum(xp.permute_dims(r["D1"], (2, 0, 1)) * P1, axis=0)   # E1[a, b]
    Zt_a = xp.permute_dims(Zt, (1, 2, 0))                        # (a, b, i)
    Gt_a = xp.permute_dims(Gt, (1, 0, 2))                        # (a, i, c)
    P2 = Zt_a @ Gt_a                                             # P2[a, b, c] = sum_i Zt_iab Gt_iac
    E2 = xp.sum(r["D2"] * P2, axis=0)                            # E2[b, c]
    dBh = dBh + UB @ _sym(E1 + E2, xp) @ _mT(UB, xp)
    # Z = f W
    W = r["W"]
    df = xp.sum(dZ * W)
    dW = r["f"] * dZ
    UG, KG = r["UG"], r["KG"]
    dV = UG @ (KG * _rot(UG, _sym(dW, xp), xp)) @ _mT(UG, xp)
    Gh, Gih = r["Gh"], r["Gih"]
    dS = _sym(Gih @ dV @ Gh + Gh @ dV @ Gih, xp)
    dC = _funm_bwd(*r["eC"], dS, "sqrt", xp)
    dXh = _sym(Gh @ dC @ Gh, xp)
    Xp, Bp = r["Xp"], r["Bp"]
    if Mh is not None:
        dXp = _sym(Mh @ dXh @ Mh, xp)
        dBp = _sym(Mh @ dBh @ Mh, xp)
        dMh = _batch_sum(_sym(dXh @ Mh @ Xp + Xp @ Mh @ dXh, xp), xp) + _sym(dBh @ Mh @ Bp + Bp @ Mh @ dBh, xp)
        wM, UM = r["eM"]
        dM = _funm_bwd(wM, UM, dMh, "invsqrt", xp) + _funm_bwd(wM, UM, dMq, "sqrt", xp)
    else:
        dXp, dBp, dM = dXh, dBh, None
    if p != 1.0:
        dX = _funm_bwd(*r["eX"], dXp, "pow", xp, p=p)
        dB = _funm_bwd(*r["eB0"], dBp, "pow", xp, p=p)
    else:
        dX, dB = _sym(dXp, xp), _sym(dBp, xp)
    return dX, dB, df, dM


# ---- AIRM
def _airm_forward(Xf, G, B, f, xp):
    _, Gih, _ = _sqrt_pair(G, xp)
    Bq, _, eB = _sqrt_pair(B, xp)
    C = _sym(Gih @ Xf @ Gih, xp)
    c, UC = _eigh(C, xp)
    Cf = _recon(UC, c ** f, xp)
    Y = _sym(Bq @ Cf @ Bq, xp)
    return Y, dict(Gih=Gih, Bq=Bq, eB=eB, c=c, UC=UC, Cf=Cf, f=f)


def _airm_backward(r, dY, xp):
    Bq, Cf, c, UC, f, Gih = r["Bq"], r["Cf"], r["c"], r["UC"], r["f"], r["Gih"]
    dY = _sym(dY, xp)
    dBq = _batch_sum(_sym(dY @ Bq @ Cf + Cf @ Bq @ dY, xp), xp)
    dCf = _sym(Bq @ dY @ Bq, xp)
    Gt = _rot(UC, dCf, xp)
    df = xp.sum(xp.linalg.diagonal(Gt) * (c ** f) * xp.log(c))
    K = _divdiff(c, "pow", xp, p=f)
    dC = UC @ (K * Gt) @ _mT(UC, xp)
    dX = _sym(Gih @ dC @ Gih, xp)
    dB = _funm_bwd(*r["eB"], dBq, "sqrt", xp)
    return dX, dB, df


# ---- LEM
def _lem_forward(Xf, G, B, f, xp):
    Lx, eX = _funm(Xf, "log", xp)
    Lg, _ = _funm(G, "log", xp)
    Lb, eB = _funm(B, "log", xp)
    Dv = Lx - Lg
    A = f * Dv + Lb
    Y, eA = _funm(A, "exp", xp)
    return Y, dict(eX=eX, eB=eB, eA=eA, Dv=Dv, f=f)


def _lem_backward(r, dY, xp):
    dA = _funm_bwd(*r["eA"], dY, "exp", xp)
    df = xp.sum(dA * r["Dv"])
    dX = _funm_bwd(*r["eX"], r["f"] * dA, "log", xp)
    dB = _funm_bwd(*r["eB"], _batch_sum(dA, xp), "log", xp)
    return dX, dB, df


ops.register("spd.rbn_normalize", rbn_normalize, rbn_normalize_fwd, _rbn_bwd, nondiff_argnums=(1, 2))


# ---------------------------------------------------------------------------- the public layer
def _running_update(metric, R, G, m, xp):
    if metric in ("bw", "gbw"):
        T = _bw_ot(R, G, xp)
        eye = _eye(R.shape[-1], R, xp)
        Gm = (1 - m) * eye + m * T
        return _sym(Gm @ R @ Gm, xp)
    if metric == "airm":
        H, Hi, _ = _sqrt_pair(R, xp)
        P, _ = _funm(Hi @ G @ Hi, "pow", xp, p=m)
        return _sym(H @ P @ H, xp)
    Lr, _ = _funm(R, "log", xp)
    Lg, _ = _funm(G, "log", xp)
    return _funm((1 - m) * Lr + m * Lg, "exp", xp)[0]


def riemannian_batch_norm(X, state=None, *, bias=None, weight=None, M=None, metric="bw", power=1.0, training=True,
                          momentum=0.1, eps=1e-5, mean_iter=1, check=True):
    """Riemannian batch normalization of SPD matrices (functional: returns the output and the new state).

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
    xp = validate.check_same_namespace(X=X, bias=bias, weight=weight, M=M)
    n, _ = _check_common(X, metric, M, power, xp, check)
    momentum = validate.check_probability(momentum, "momentum")
    ct = compat.compute_dtype(X, xp)
    if state is None:
        state = RBNState(_eye(n, xp.astype(X[..., 0, :, :], ct), xp),
                         xp.asarray(1.0, dtype=ct, device=compat.device(X)))
    if not isinstance(state, tuple) or len(state) != 2:
        raise TypeError("state must be an RBNState(mean, var) or None")
    R, r = state
    validate.check_shape(R, (n, n), "state.mean")
    if training:
        Xs, Ms = _detach(X), _detach(M)
        G, v = rbn_statistics(Xs, metric=metric, M=Ms, power=power, mean_iter=mean_iter, check=False)
        Y = _normalize(X, G, v, bias, weight, M, metric=metric, power=power, eps=eps)
        Rc = xp.astype(R, ct)
        newR = _running_update(metric, Rc, xp.astype(G, ct), momentum, xp)
        newr = (1 - momentum) * xp.astype(r, ct) + momentum * xp.astype(v, ct)
        return Y, RBNState(xp.astype(newR, R.dtype), xp.astype(newr, r.dtype))
    Y = _normalize(X, xp.astype(R, X.dtype) if R.dtype != X.dtype else R,
                   xp.astype(r, X.dtype) if r.dtype != X.dtype else r, bias, weight, M, metric=metric,
                   power=power, eps=eps)
    return Y, state


def _detach(x):
    """Statistics carry no gradient: cut the autograd graph (torch) / stop gradients (JAX)."""
    if x is None:
        return None
    if compat.is_torch(x):
        return x.detach()
    if compat.is_jax(x):
        import jax

        return jax.lax.stop_gradient(x)
    return x


def _normalize(X, G, v, bias, weight, M, **opts):
    """rbn_normalize with optnorm's analytic VJP under torch autograd / JAX transformations."""
    arrays = (X, G, v, bias, weight, M)
    if compat.is_torch(X) and any(a is not None and a.requires_grad for a in arrays):
        from .. import torch as ont

        return ont.apply("spd.rbn_normalize", *arrays, check=False, **opts)
    if compat.is_jax(X) and not all(compat.is_concrete(a) for a in arrays if a is not None):
        from .. import jax as onj

        return onj.apply("spd.rbn_normalize", *arrays, check=False, **opts)
    return rbn_normalize(*arrays, check=False, **opts)
