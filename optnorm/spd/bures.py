"""Bures-Wasserstein (BW) and generalized BW geometry on SPD matrices: a metric object with distance, log, exp,
geodesic, inner product and barycenter.

"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from .._lib import compat, ops, validate
from .._lib.vjp import unbroadcast
from .covariance import covariance
from .distances import bw_distance
from .lyapunov import lyapunov
from .sqrtm import (_cast, _check_spd_input, _divdiff, _eigh, _eye, _fro, _funm, _funm_bwd, _lyap_eig, _mT,
                    _recon, _rot, _sym, _upcast, sqrtm)



__all__ = ["bures_wasserstein", "BuresWasserstein", "BWMeanResult", "bw_log",
           "bw_exp", "bw_geodesic"]


# ---------------------------------------------------------------------------- BW primitives (identity metric)
def _sqrt_pair(P, xp):
    w, U = _eigh(P, xp)
    s = xp.sqrt(w)
    return _recon(U, s, xp), _recon(U, 1.0 / s, xp), (w, U)


def _ot_map(A, B, xp):
    """T_{A->B} = A^{-1/2} (A^{1/2} B A^{1/2})^{1/2} A^{-1/2} (symmetric; T A T = B)."""
    H, Hi, _ = _sqrt_pair(A, xp)
    S, _ = _funm(H @ B @ H, "sqrt", xp)
    return _sym(Hi @ S @ Hi, xp)


def _bw_log(P, X, xp):
    T = _ot_map(P, X, xp)
    return _sym(T @ P + P @ T, xp) - 2 * P


def _bw_exp(P, V, xp):
    w, U = _eigh(P, xp)
    L = _lyap_eig(w, U, V, xp)
    return _sym(P + V + L @ P @ L, xp)


def _bw_inner(P, U_, V_, xp):
    w, U = _eigh(P, xp)
    K = 1.0 / (w[..., :, None] + w[..., None, :])
    return 0.5 * xp.sum(_rot(U, U_, xp) * _rot(U, V_, xp) * K, axis=(-2, -1))


def _bw_geodesic(A, B, t, xp):
    T = _ot_map(A, B, xp)
    eye = _eye(A.shape[-1], A, xp)
    G = (1 - t) * eye + t * T
    return _sym(G @ A @ G, xp)


# ---------------------------------------------------------------------------- registered BW maps (M = I)
def _pair_prep(P, X, names, check):
    xp = validate.check_same_namespace(**{names[0]: P, names[1]: X})
    _check_spd_input(P, names[0], xp, check=check)
    _check_spd_input(X, names[1], xp, check=check, need_pd=names[1] != "V")
    if P.shape[-1] != X.shape[-1]:
        raise ValueError(f"{names[0]} has shape {tuple(P.shape)} and {names[1]} has shape {tuple(X.shape)}: "
                         "matrix sizes differ")
    validate.check_broadcastable(names[0], P.shape[:-2], names[1], X.shape[:-2])
    Pc, dt = _upcast(P, xp)
    Xc, _ = _upcast(X, xp)
    return xp, _sym(Pc, xp), _sym(xp.astype(Xc, Pc.dtype), xp), dt


def _log_parts(P, X, xp):
    w, U = _eigh(P, xp)
    s = xp.sqrt(w)
    H, Hi = _recon(U, s, xp), _recon(U, 1.0 / s, xp)
    C = _sym(H @ X @ H, xp)
    S, eC = _funm(C, "sqrt", xp)
    T = _sym(Hi @ S @ Hi, xp)
    return (w, U), H, Hi, eC, S, T


def _T_bwd(dT, P_eig, H, Hi, eC, S, X, xp):
    """Cotangents of (P, X) for T = P^{-1/2} (P^{1/2} X P^{1/2})^{1/2} P^{-1/2}."""
    dT = _sym(dT, xp)
    dS = _sym(Hi @ dT @ Hi, xp)
    dHi = _sym(dT @ Hi @ S + S @ Hi @ dT, xp)
    dC = _funm_bwd(eC[0], eC[1], dS, "sqrt", xp)
    dX = _sym(H @ dC @ H, xp)
    dH = _sym(dC @ H @ X + X @ H @ dC, xp)
    w, U = P_eig
    dP = _funm_bwd(w, U, dH, "sqrt", xp) + _funm_bwd(w, U, dHi, "invsqrt", xp)
    return dP, dX


def bw_log(P, X, *, check=True):
    """Bures-Wasserstein logarithm ``Log_P(X) = T P + P T - 2P``, ``T = P^{-1/2}(P^{1/2} X P^{1/2})^{1/2}P^{-1/2}``
    (batched, a registered op: its VJP chains the Daleckii-Krein derivatives of ``P^{+-1/2}`` and of the inner
    square root).  ``bures_wasserstein().log`` for the identity metric.

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> np.allclose(spd.bw_log(np.eye(2), np.diag([4.0, 9.0])), np.diag([2.0, 4.0]))
    True
    """
    return bw_log_fwd(P, X, check=check)[0]


def bw_log_fwd(P, X, *, check=True):
    xp, Ps, Xs, dt = _pair_prep(P, X, ("P", "X"), check)
    Pe, H, Hi, eC, S, T = _log_parts(Ps, Xs, xp)
    V = _sym(T @ Ps + Ps @ T, xp) - 2 * Ps
    return _cast(V, dt, xp), (Ps, Xs, Pe, H, Hi, eC, S, T, P.shape, X.shape, dt)


def _bw_log_bwd(res, dV):
    Ps, Xs, Pe, H, Hi, eC, S, T, p_shape, x_shape, dt = res
    xp = compat.array_namespace(Ps)
    dV = _sym(xp.astype(dV, Ps.dtype), xp)
    dT = _sym(dV @ Ps + Ps @ dV, xp)
    dP = _sym(T @ dV + dV @ T, xp) - 2 * dV
    dP2, dX = _T_bwd(dT, Pe, H, Hi, eC, S, Xs, xp)
    return (_cast(unbroadcast(dP + dP2, p_shape, xp), dt, xp), _cast(unbroadcast(dX, x_shape, xp), dt, xp))


def bw_exp(P, V, *, check=True):
    """Bures-Wasserstein exponential ``Exp_P(V) = P + V + L P L`` with ``P L + L P = V`` (batched, a registered op
    with an exact VJP through the Lyapunov solve).  SPD while ``I + L`` is positive definite.

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> np.allclose(spd.bw_exp(np.eye(2), np.diag([2.0, 4.0])), np.diag([4.0, 9.0]))
    True
    """
    return bw_exp_fwd(P, V, check=check)[0]


def bw_exp_fwd(P, V, *, check=True):
    xp, Ps, Vs, dt = _pair_prep(P, V, ("P", "V"), check)
    w, U = _eigh(Ps, xp)
    L = _lyap_eig(w, U, Vs, xp)
    D = _sym(Ps + Vs + L @ Ps @ L, xp)
    return _cast(D, dt, xp), (Ps, w, U, L, P.shape, V.shape, dt)


def _bw_exp_bwd(res, dD):
    Ps, w, U, L, p_shape, v_shape, dt = res
    xp = compat.array_namespace(Ps)
    dD = _sym(xp.astype(dD, Ps.dtype), xp)
    R = _sym(dD @ L @ Ps + Ps @ L @ dD, xp)
    Q = _lyap_eig(w, U, R, xp)
    dV = dD + Q
    dP = dD + L @ dD @ L - _sym(Q @ L + L @ Q, xp)
    return (_cast(unbroadcast(_sym(dP, xp), p_shape, xp), dt, xp), _cast(unbroadcast(_sym(dV, xp), v_shape, xp), dt, xp))


def bw_geodesic(A, B, *, t=0.5, check=True):
    """Point ``((1-t) I + t T) A ((1-t) I + t T)`` of the Bures-Wasserstein geodesic from ``A`` (t=0) to ``B``
    (t=1), ``T`` the optimal transport map A -> B (batched, a registered op; ``t`` is a float option).

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> np.allclose(spd.bw_geodesic(np.eye(2), np.diag([4.0, 9.0]), t=0.5), np.diag([2.25, 4.0]))
    True
    """
    return bw_geodesic_fwd(A, B, t=t, check=check)[0]


def bw_geodesic_fwd(A, B, *, t=0.5, check=True):
    t = validate._real(t, "t")
    xp, As, Bs, dt = _pair_prep(A, B, ("A", "B"), check)
    Pe, H, Hi, eC, S, T = _log_parts(As, Bs, xp)
    eye = _eye(A.shape[-1], As, xp)
    G = (1 - t) * eye + t * T
    Y = _sym(G @ As @ G, xp)
    return _cast(Y, dt, xp), (As, Bs, Pe, H, Hi, eC, S, G, t, A.shape, B.shape, dt)


def _bw_geodesic_bwd(res, dY):
    As, Bs, Pe, H, Hi, eC, S, G, t, a_shape, b_shape, dt = res
    xp = compat.array_namespace(As)
    dY = _sym(xp.astype(dY, As.dtype), xp)
    dG = _sym(dY @ G @ As + As @ G @ dY, xp)
    dA = _sym(G @ dY @ G, xp)
    dA2, dB = _T_bwd(t * dG, Pe, H, Hi, eC, S, Bs, xp)
    return (_cast(unbroadcast(dA + dA2, a_shape, xp), dt, xp), _cast(unbroadcast(dB, b_shape, xp), dt, xp))


def _via_op(name, *arrays, **opts):
    """Call a registered op with optnorm's VJP attached for torch tensors that require grad / traced JAX arrays."""
    if any(compat.is_torch(a) and a.requires_grad for a in arrays if a is not None):
        from .. import torch as ont

        return ont.apply(name, *arrays, **opts)
    if any(compat.is_jax(a) and not compat.is_concrete(a) for a in arrays if a is not None):
        from .. import jax as onj

        return onj.apply(name, *arrays, **opts)
    return ops.get(name).fn(*arrays, **opts)


ops.register("spd.bw_log", bw_log, bw_log_fwd, _bw_log_bwd)
ops.register("spd.bw_exp", bw_exp, bw_exp_fwd, _bw_exp_bwd)
ops.register("spd.bw_geodesic", bw_geodesic, bw_geodesic_fwd, _bw_geodesic_bwd)


@dataclass(frozen=True)
class BWMeanResult:
    """Barycenter under the (generalized) BW metric: ``mean``, iterations, convergence and the error history
    (``||mean_i T_i - I||_F`` per iteration, max over the batch)."""

    mean: Any
    n_iter: int
    converged: bool
    errors: tuple


class BuresWasserstein:
    """(Generalized, power-deformed) Bures-Wasserstein metric on SPD matrices; create with :func:`bures_wasserstein`.

    For the plain metric (``M=None, power=1``) ``distance``, ``log``, ``exp`` and ``geodesic`` (float ``t``) are the
    registered ops :func:`bw_distance`, :func:`bw_log`, :func:`bw_exp`, :func:`bw_geodesic`, differentiated with
    optnorm's VJPs under torch autograd and JAX transformations; the other methods and the generalized/deformed
    metric run the generic Array-API body (differentiable by the framework's own autodiff through ``eigh``).

    With ``phi(X) = M^{-1/2} X^p M^{-1/2}`` every object is the BW one pulled back by ``phi``:
    ``d(X, Y) = d_BW(phi X, phi Y) / |p|``, ``Log_X Y = dphi_X^{-1} Log^BW_{phi X}(phi Y)``,
    ``Exp_X V = phi^{-1}(Exp^BW_{phi X}(dphi_X V))``, ``g_X(U, V) = g^BW_{phi X}(dphi_X U, dphi_X V) / p^2``,
    geodesics and barycenters are mapped by ``phi^{-1}``.  ``M = I, p = 1`` is plain BW; ``M`` alone is the GBW
    metric of Han, Mishra, Jawanpuria, Gao ("Generalized Bures-Wasserstein geometry for positive definite
    matrices", 2021); ``p`` is the matrix-power deformation used in GBWBN (Wang et al., CVPR 2025).
    """

    def __init__(self, M=None, power=1.0):
        if M is not None:
            xp = compat.array_namespace(M)
            _check_spd_input(M, "M", xp)
            if M.ndim != 2:
                raise ValueError(f"M must be one (n, n) SPD matrix, got shape {tuple(M.shape)}")
            Mc, _ = _upcast(M, xp)
            w, U = _eigh(Mc, xp)
            self._Mq = _recon(U, xp.sqrt(w), xp)
            self._Mh = _recon(U, 1.0 / xp.sqrt(w), xp)
        else:
            self._Mq = self._Mh = None
        p = validate._real(power, "power")
        if p == 0 or not math.isfinite(p):
            raise ValueError(f"power must be a finite non-zero number, got {power}")
        self.M = M
        self.power = p

    def __repr__(self):
        m = "I" if self.M is None else f"array{tuple(self.M.shape)}"
        return f"BuresWasserstein(M={m}, power={self.power})"

    # -------------------------------------------------------------- helpers
    def _prep(self, xp, check, **arrays):
        out = []
        for name, X in arrays.items():
            _check_spd_input(X, name, xp, check=check, need_pd=name in ("X", "Y", "init"))
            Xc, dt = _upcast(X, xp)
            if self.M is not None:
                if X.shape[-1] != self.M.shape[-1]:
                    raise ValueError(f"{name} has shape {tuple(X.shape)} but M is {tuple(self.M.shape)}")
                validate.check_same_namespace(**{name: X, "M": self.M})
            out.append(_sym(Xc, xp))
        return out, dt

    def _validate(self, xp, check, **arrays):
        for name, X in arrays.items():
            _check_spd_input(X, name, xp, check=check, need_pd=name in ("X", "Y", "init"))

    def _mats(self, like, xp):
        if self.M is None:
            return None, None
        return (xp.astype(self._Mq, like.dtype), xp.astype(self._Mh, like.dtype))

    def _phi(self, X, xp):
        if self.power != 1.0:
            X, _ = _funm(X, "pow", xp, p=self.power)
        Mq, Mh = self._mats(X, xp)
        return X if Mh is None else _sym(Mh @ X @ Mh, xp)

    def _phi_inv(self, P, xp):
        Mq, Mh = self._mats(P, xp)
        X = P if Mq is None else _sym(Mq @ P @ Mq, xp)
        if self.power != 1.0:
            X, _ = _funm(X, "pow", xp, p=1.0 / self.power)
        return X

    def _dpow(self, X, V, xp, inverse=False):
        w, U = _eigh(X, xp)
        K = _divdiff(w, "pow", xp, p=self.power)
        Vt = _rot(U, V, xp)
        return _sym(U @ ((Vt / K) if inverse else (Vt * K)) @ _mT(U, xp), xp)

    def _dphi(self, X, V, xp):
        if self.power != 1.0:
            V = self._dpow(X, V, xp)
        Mq, Mh = self._mats(X, xp)
        return V if Mh is None else _sym(Mh @ V @ Mh, xp)

    def _dphi_inv(self, X, W, xp):
        Mq, Mh = self._mats(X, xp)
        V = W if Mq is None else _sym(Mq @ W @ Mq, xp)
        if self.power != 1.0:
            V = self._dpow(X, V, xp, inverse=True)
        return V

    # -------------------------------------------------------------- public methods
    def distance(self, X, Y, *, squared=False, check=True):
        """Geodesic distance ``d(X, Y)`` (leading axes broadcast); ``squared=True`` gives ``d^2``.

        For ``M=None, power=1`` this is :func:`bw_distance` (a registered op with a VJP)."""
        xp = validate.check_same_namespace(X=X, Y=Y, M=self.M)
        if self.M is None and self.power == 1.0:
            return _via_op("spd.bw_distance", X, Y, squared=squared, check=check)
        (Xs, Ys), dt = self._prep(xp, check, X=X, Y=Y)
        d2 = bw_distance(self._phi(Xs, xp), self._phi(Ys, xp), squared=True, check=False) / self.power ** 2
        return _cast(d2 if squared else xp.sqrt(d2), dt, xp)

    def log(self, X, Y, *, check=True):
        """Riemannian logarithm ``Log_X(Y)`` (BW: ``T X + X T - 2X``, ``T`` the optimal transport map X -> Y)."""
        xp = validate.check_same_namespace(X=X, Y=Y, M=self.M)
        if self.M is None and self.power == 1.0:
            self._validate(xp, check, X=X, Y=Y)
            return _via_op("spd.bw_log", X, Y, check=False)
        (Xs, Ys), dt = self._prep(xp, check, X=X, Y=Y)
        V = _bw_log(self._phi(Xs, xp), self._phi(Ys, xp), xp)
        return _cast(self._dphi_inv(Xs, V, xp), dt, xp)

    def exp(self, X, V, *, check=True):
        """Riemannian exponential ``Exp_X(V)`` (BW: ``X + V + L X L``, ``X L + L X = V``); SPD while
        ``I + L`` is positive definite (BW is geodesically incomplete)."""
        xp = validate.check_same_namespace(X=X, V=V, M=self.M)
        if self.M is None and self.power == 1.0:
            self._validate(xp, check, X=X, V=V)
            return _via_op("spd.bw_exp", X, V, check=False)
        (Xs, Vs), dt = self._prep(xp, check, X=X, V=V)
        P = _bw_exp(self._phi(Xs, xp), self._dphi(Xs, Vs, xp), xp)
        return _cast(self._phi_inv(P, xp), dt, xp)

    def geodesic(self, X, Y, t, *, check=True):
        """Point ``gamma(t)`` of the geodesic from ``X`` (t=0) to ``Y`` (t=1):
        BW ``((1-t) I + t T) X ((1-t) I + t T)``.  ``t`` is a float or an array broadcast against the batch."""
        xp = validate.check_same_namespace(X=X, Y=Y, M=self.M)
        if self.M is None and self.power == 1.0 and not compat.is_array(t):
            self._validate(xp, check, X=X, Y=Y)
            return _via_op("spd.bw_geodesic", X, Y, t=float(t), check=False)
        (Xs, Ys), dt = self._prep(xp, check, X=X, Y=Y)
        if compat.is_array(t):
            t = xp.astype(t, Xs.dtype)[..., None, None]
        P = _bw_geodesic(self._phi(Xs, xp), self._phi(Ys, xp), t, xp)
        return _cast(self._phi_inv(P, xp), dt, xp)

    def inner(self, X, U, V, *, check=True):
        """Riemannian inner product ``g_X(U, V)`` (BW: ``1/2 sum_ij U~_ij V~_ij / (l_i + l_j)`` in the
        eigenbasis of X)."""
        xp = validate.check_same_namespace(X=X, U=U, V=V, M=self.M)
        (Xs, Us, Vs), dt = self._prep(xp, check, X=X, U=U, V=V)
        P = self._phi(Xs, xp)
        g = _bw_inner(P, self._dphi(Xs, Us, xp), self._dphi(Xs, Vs, xp), xp) / self.power ** 2
        return _cast(g, dt, xp)

    def mean(self, X, weights=None, *, init=None, tol=1e-10, max_iter=50, callback: Callable | None = None,
             callback_every=1, check=True):
        """Barycenter of ``X`` (..., m, n, n) over axis -3 by the fixed point of Alvarez-Esteban et al.
        (Bhatia, Jain, Lim 2019): ``P <- P^{-1/2} (sum_i w_i (P^{1/2} X_i P^{1/2})^{1/2})^2 P^{-1/2}``,
        i.e. Riemannian gradient descent with unit step, ``P <- T P T``, ``T = sum_i w_i T_{P -> X_i}``.

        Starts from the weighted arithmetic mean (or ``init``), stops when ``||T - I||_F <= tol`` for every
        matrix of the batch (scale-free; ``T - I`` is the tangent mean up to the metric) or after
        ``max_iter`` steps.  ``callback(state)`` with ``state = {"n_iter", "mean", "error"}`` runs every
        ``callback_every`` iterations; returning True stops.  Under ``jax.jit`` exactly ``max_iter`` steps run.

        Returns
        -------
        BWMeanResult(mean, n_iter, converged, errors)
        """
        xp = validate.check_same_namespace(X=X, weights=weights, init=init, M=self.M)
        if X.ndim < 3:
            raise ValueError(f"X must have shape (..., m, n, n) with the matrices to average on axis -3, got "
                             f"{tuple(X.shape)}")
        (Xs,), dt = self._prep(xp, check, X=X)
        m = X.shape[-3]
        validate.check_nonempty(X, "X", axis=-3)
        if weights is None:
            w = xp.ones(X.shape[:-2], dtype=Xs.dtype, device=compat.device(X)) / m
        else:
            validate.check_weights(weights, "weights", axis=-1, xp=xp)
            if tuple(weights.shape) != tuple(X.shape[:-2]):
                validate.check_broadcastable("weights", weights.shape, "X[..., 0, 0]", X.shape[:-2])
            w = xp.astype(weights, Xs.dtype)
            w = w / xp.sum(w, axis=-1, keepdims=True)
        tol = validate.check_nonnegative(tol, "tol")
        max_iter = validate.check_int(max_iter, "max_iter", low=1)
        callback_every = validate.check_int(callback_every, "callback_every", low=1)
        Y = self._phi(Xs, xp)
        w4 = w[..., None, None]
        if init is None:
            P = xp.sum(w4 * Y, axis=-3)
        else:
            (I0,), _ = self._prep(xp, check, init=init)
            P = self._phi(I0, xp)
        eye = _eye(X.shape[-1], P, xp)
        concrete = compat.is_concrete(Y)
        errors = []
        converged = False
        k = 0
        for k in range(1, max_iter + 1):
            H, Hi, _ = _sqrt_pair(P, xp)
            S = xp.sum(w4 * _funm(H[..., None, :, :] @ Y @ H[..., None, :, :], "sqrt", xp)[0], axis=-3)
            T = _sym(Hi @ S @ Hi, xp)
            P = _sym(Hi @ S @ S @ Hi, xp)
            if concrete:
                err = float(xp.max(_fro(T - eye, xp)))
                errors.append(err)
                if callback is not None and k % callback_every == 0:
                    if callback({"n_iter": k, "mean": _cast(self._phi_inv(P, xp), dt, xp), "error": err}):
                        break
                if err <= tol:
                    converged = True
                    break
        return BWMeanResult(_cast(self._phi_inv(P, xp), dt, xp), k, converged, tuple(errors))


def bures_wasserstein(M=None, power=1.0) -> BuresWasserstein:
    """The (generalized) Bures-Wasserstein metric object on SPD matrices.

    Parameters
    ----------
    M : array (n, n), optional
        SPD matrix of the generalized BW metric ``d_M^2(X, Y) = tr(M^{-1}X) + tr(M^{-1}Y)
        - 2 tr(X^{1/2} M^{-1} Y M^{-1} X^{1/2})^{1/2}`` (Han, Mishra, Jawanpuria, Gao, "Generalized
        Bures-Wasserstein geometry for positive definite matrices", 2021).  ``None`` is the identity (BW).
    power : float
        Matrix-power deformation ``X -> X^power`` before the metric (distance divided by ``|power|``), as in
        GBWBN (Wang, Jin, Chen, Luo, Wu, "Learning to Normalize on the SPD Manifold under Bures-Wasserstein
        Geometry", CVPR 2025).  Must be non-zero.

    Returns
    -------
    BuresWasserstein
        with methods ``distance``, ``log``, ``exp``, ``geodesic``, ``inner``, ``mean``.

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> bw = spd.bures_wasserstein()
    >>> A, B = np.eye(2), np.diag([4.0, 9.0])
    >>> np.allclose(bw.exp(A, bw.log(A, B)), B)
    True
    >>> np.allclose(bw.geodesic(A, B, 0.5), np.diag([2.25, 4.0]))
    True
    """
    return BuresWasserstein(M, power)
