"""Riemannian metrics on SPD matrices as objects with one set of methods: the affine-invariant (AIRM),
log-Euclidean (LEM) and log-Cholesky metrics (the Bures-Wasserstein one is in :mod:`optnorm.spd.bures`).

Every metric object has ``distance``, ``log``, ``exp``, ``geodesic``, ``inner``, ``norm``,
``parallel_transport`` and ``mean``; arguments are validated by the role layer
(:func:`optnorm._lib.api.check_arguments`), matrices are the last two axes and leading axes broadcast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from typing import Any, Callable

from .._lib import compat
from .._lib.api import check_arguments, public, public_class
from .._lib.dispatch import Dispatcher
from .._lib.convergence import default_tol
from .._lib.roles import SPD, Bool, Callback, Int, NonNegative, Scalar, Symmetric, Weights
from .._lib.solver import IterState, Monitor, Result
from .._lib.typing import Array
from ._linalg import (apply_native, divdiff, eigh, eye, funm, lapack_single_thread, mT, recon, rot, sqrt_pair,
                      sym, upcast)

_X = SPD(gate="check")
_TAN = Symmetric(gate="check")


# ---------------------------------------------------------------------------- result and state of the means
@public_class
@dataclass(frozen=True, repr=False)
class MeanResult(Result):
    """Fréchet mean of SPD matrices under a metric (``metric.mean(X)``).

    Attributes
    ----------
    mean : array (..., n, n)
        The mean (SPD).
    n_iter : int
        Iterations run (0 for the closed forms of the log-Euclidean and log-Cholesky metrics).
    converged : bool
        Whether the stopping criterion was met (always True for closed forms).
    errors : tuple of float
        The criterion per iteration (the Riemannian gradient norm for AIRM, ``||T - I||_F`` for BW; the
        largest over a batch of means).
    """

    mean: Any
    n_iter: int
    converged: bool
    errors: tuple = ()


@public_class
@dataclass(frozen=True, repr=False)
class MeanState(IterState):
    """What ``callback(state)`` receives from an iterative ``mean``: returning True stops the iteration.

    Attributes
    ----------
    n_iter : int
        Iterations done.
    error : float
        The current criterion (compared with ``tol``).
    mean : array (..., n, n)
        The current iterate.
    step : float
        The current step size (AIRM's Karcher flow; 1 for BW's fixed point).
    """

    mean: Any = None
    step: float = 1.0


# ---------------------------------------------------------------------------- differentiable building blocks
def _plain(*arrays) -> bool:
    return compat.native_autograd(*arrays) is None


def sqrt_and_invsqrt(X, xp):
    """``(X^{1/2}, X^{-1/2})``: one eigendecomposition, or the registered ops under torch/JAX autodiff (their
    Daleckii-Krein VJPs are finite for repeated eigenvalues, where autodiff through ``eigh`` is not)."""
    if _plain(X):
        H, Hi, _ = sqrt_pair(X, xp)
        return H, Hi
    return apply_native("spd.sqrtm", X, check=False), apply_native("spd.invsqrtm", X, check=False)


def spd_log(X, xp):
    return funm(X, "log", xp)[0] if _plain(X) else apply_native("spd.logm", X, check=False)


def spd_exp(V, xp):
    return funm(V, "exp", xp)[0] if _plain(V) else apply_native("spd.expm", V, check=False)


def _pow(X, t, xp):
    if compat.is_array(t) or not _plain(X):
        if compat.is_array(t) and getattr(t, "ndim", 0) > 0:      # a batch of t: exp(t log X)
            return spd_exp(t[..., None, None] * spd_log(X, xp), xp)
        return apply_native("spd.powm", X, t if compat.is_array(t) else xp.asarray(t, dtype=X.dtype,
                                                                                     device=compat.device(X)),
                            check=False)
    return funm(X, "pow", xp, p=float(t))[0]


def _whiten(L, M, xp):
    """``L^{-1} M L^{-T}`` (symmetrised) by two solves."""
    return sym(xp.linalg.solve(L, mT(xp.linalg.solve(L, M), xp)), xp)


def _congr(L, M, xp):
    """``L M L^T`` (symmetrised)."""
    return sym(L @ M @ mT(L, xp), xp)


def _dexp(L, D, xp):
    """Fréchet derivative of the matrix exponential at the symmetric ``L`` in direction ``D``."""
    w, U = eigh(L, xp, clamp=False)
    return sym(U @ (divdiff(w, "exp", xp) * rot(U, D, xp)) @ mT(U, xp), xp)


def _dlog(X, D, xp):
    """Fréchet derivative of the matrix logarithm at the SPD ``X`` in direction ``D``."""
    w, U = eigh(X, xp)
    return sym(U @ (divdiff(w, "log", xp) * rot(U, D, xp)) @ mT(U, xp), xp)


def require_finite(Y, where, name, xp):
    """``Y``, or ``ValueError`` when an exponential map overflowed the dtype (``name`` is the tangent argument)."""
    if compat.is_concrete(Y) and not bool(xp.all(xp.isfinite(Y))):
        raise ValueError(f"{where}: the result overflows {compat.dtype_name(Y.dtype)}: {name} is too large for "
                         f"the base point")
    return Y


def _as_t(t, where):
    if compat.is_array(t):
        return t
    return check_arguments(where, {"t": Scalar()}, t=t)["t"]


# ---------------------------------------------------------------------------- the common base
class SPDMetric:
    """Methods shared by the SPD metric objects: validation, ``norm``, and the generic pieces of ``mean``."""

    name = "metric"

    def _args(self, method, check, **arrays):
        roles = {k: r for k, (r, _) in arrays.items()}
        values = {k: v for k, (_, v) in arrays.items()}
        roles["check"] = Bool()
        return check_arguments(f"{type(self).__name__}.{method}", roles, check=check, **values)

    @staticmethod
    def _up(*arrays):
        xp = compat.array_namespace(*arrays)
        first, dt = upcast(arrays[0], xp)
        out = [sym(first, xp)] + [sym(compat.cast(a, first.dtype, xp), xp) for a in arrays[1:]]
        return xp, out, dt

    # every metric implements these (the base documents the common signature)
    def distance(self, X: Array, Y: Array, *, squared: bool = False, check: bool = True) -> Array:
        raise NotImplementedError

    def log(self, X: Array, Y: Array, *, check: bool = True) -> Array:
        raise NotImplementedError

    def exp(self, X: Array, V: Array, *, check: bool = True) -> Array:
        raise NotImplementedError

    def geodesic(self, X: Array, Y: Array, t: Array | float, *, check: bool = True) -> Array:
        raise NotImplementedError

    def inner(self, X: Array, U: Array, V: Array, *, check: bool = True) -> Array:
        raise NotImplementedError

    def norm(self, X: Array, V: Array, *, check: bool = True) -> Array:
        r"""Riemannian norm :math:`\|V\|_X = \sqrt{g_X(V, V)}` of the tangent vector ``V`` at ``X``."""
        v = self._args("norm", check, X=(_X, X), V=(_TAN, V))
        g = self.inner(v["X"], v["V"], v["V"], check=False)
        xp = compat.array_namespace(g)
        return xp.sqrt(xp.maximum(g, 0.0))

    def _mean_args(self, X, weights, init, tol, max_iter, callback, callback_every, progress, check):
        v = self._args("mean", check, X=(SPD("... m n n", gate="check"), X),
                       weights=(Weights("... m", optional=True, gate="check"), weights),
                       init=(SPD("... n n", optional=True, gate="check"), init),
                       tol=(NonNegative(optional=True), tol), max_iter=(Int(1), max_iter),
                       callback=(Callback(), callback), callback_every=(Int(1), callback_every),
                       progress=(Bool(), progress))
        X, weights, init = v["X"], v["weights"], v["init"]
        xp = compat.array_namespace(X, weights, init)
        Xc, dt = upcast(X, xp)
        Xc = sym(Xc, xp)
        m = X.shape[-3]
        if weights is None:
            w = xp.ones(X.shape[:-2], dtype=Xc.dtype, device=compat.device(X)) / m
        else:
            w = compat.cast(weights, Xc.dtype, xp)
            w = w / xp.sum(w, axis=-1, keepdims=True)
        tol = default_tol(1e-10, Xc.dtype) if v["tol"] is None else v["tol"]
        return xp, Xc, w, init, tol, dt

    def __repr__(self):
        return f"{type(self).__name__}()"


# ---------------------------------------------------------------------------- AIRM
@public_class
class AffineInvariant(SPDMetric):
    r"""The affine-invariant Riemannian metric (AIRM) on SPD matrices; create with :func:`airm`.

    .. math::

        g_P(U, V) = \operatorname{tr}(P^{-1}UP^{-1}V),\qquad
        d(A, B) = \bigl\|\log(A^{-1/2}BA^{-1/2})\bigr\|_F

    (Pennec, Fillard, Ayache, "A Riemannian framework for tensor computing", IJCV 2006).  ``log``, ``exp``,
    ``geodesic`` and ``parallel_transport`` are closed forms; they are congruence-equivariant, so the symmetric
    root :math:`X^{1/2}` in the formulas is replaced by the Cholesky factor :math:`X = LL^\top`
    (:math:`\mathrm{Log}_X Y = L\log(L^{-1}YL^{-\top})L^\top`, the same value, with triangular solves instead
    of an eigendecomposition: faster, and 3-4x more accurate for ill-conditioned ``X``).  The inner spectral
    functions are the registered ops (:func:`logm`, :func:`expm`, :func:`powm`), so torch autograd and JAX
    transformations use their Daleckii-Krein VJPs; ``mean`` is the Karcher mean.
    """

    name = "airm"

    def distance(self, X: Array, Y: Array, *, squared: bool = False, check: bool = True) -> Array:
        r"""Geodesic distance :math:`\|\log(X^{-1/2}YX^{-1/2})\|_F` (:func:`airm_distance`)."""
        v = self._args("distance", check, X=(_X, X), Y=(SPD(gate="check"), Y), squared=(Bool(), squared))
        return apply_native("spd.airm_distance", v["X"], v["Y"], squared=squared, check=False)

    def log(self, X: Array, Y: Array, *, check: bool = True) -> Array:
        r"""Riemannian logarithm :math:`\mathrm{Log}_X Y = X^{1/2}\log(X^{-1/2}YX^{-1/2})X^{1/2}`.

        (pyRiemann's ``log_map_riemann(Y, X, C12=True)``; its default ``C12=False`` is the whitened inner
        logarithm, which :func:`tangent_space` uses.)"""
        v = self._args("log", check, X=(_X, X), Y=(SPD(gate="check"), Y))
        xp, (Xs, Ys), dt = self._up(v["X"], v["Y"])
        L = xp.linalg.cholesky(Xs)
        return compat.cast(_congr(L, spd_log(_whiten(L, Ys, xp), xp), xp), dt, xp)

    def exp(self, X: Array, V: Array, *, check: bool = True) -> Array:
        r"""Riemannian exponential :math:`\mathrm{Exp}_X V = X^{1/2}\exp(X^{-1/2}VX^{-1/2})X^{1/2}` (AIRM is
        complete: every symmetric ``V`` gives an SPD result)."""
        v = self._args("exp", check, X=(_X, X), V=(_TAN, V))
        xp, (Xs, Vs), dt = self._up(v["X"], v["V"])
        L = xp.linalg.cholesky(Xs)
        return require_finite(compat.cast(_congr(L, spd_exp(_whiten(L, Vs, xp), xp), xp), dt, xp), "AffineInvariant.exp",
                       "V", xp)

    def geodesic(self, X: Array, Y: Array, t: Array | float, *, check: bool = True) -> Array:
        r"""Point :math:`\gamma(t) = X^{1/2}(X^{-1/2}YX^{-1/2})^tX^{1/2}` of the geodesic from ``X`` (t=0) to
        ``Y`` (t=1); ``t`` is a float or an array broadcast against the batch (pyRiemann's ``alpha``)."""
        v = self._args("geodesic", check, X=(_X, X), Y=(SPD(gate="check"), Y))
        t = _as_t(t, "AffineInvariant.geodesic")
        xp, (Xs, Ys), dt = self._up(v["X"], v["Y"])
        if compat.is_array(t):
            t = compat.cast(t, Xs.dtype, xp)
        L = xp.linalg.cholesky(Xs)
        return compat.cast(_congr(L, _pow(_whiten(L, Ys, xp), t, xp), xp), dt, xp)

    def inner(self, X: Array, U: Array, V: Array, *, check: bool = True) -> Array:
        r"""Inner product :math:`g_X(U, V) = \operatorname{tr}(X^{-1}UX^{-1}V)`, computed as
        :math:`\langle L^{-1}UL^{-\top}, L^{-1}VL^{-\top}\rangle_F` with :math:`X = LL^\top`."""
        v = self._args("inner", check, X=(_X, X), U=(_TAN, U), V=(_TAN, V))
        xp, (Xs, Us, Vs), dt = self._up(v["X"], v["U"], v["V"])
        L = xp.linalg.cholesky(Xs)
        a = xp.linalg.solve(L, mT(xp.linalg.solve(L, Us), xp))
        b = xp.linalg.solve(L, mT(xp.linalg.solve(L, Vs), xp))
        return compat.cast(xp.sum(a * b, axis=(-2, -1)), dt, xp)

    def parallel_transport(self, V: Array, X: Array, Y: Array, *, check: bool = True) -> Array:
        r"""Parallel transport of ``V`` from ``X`` to ``Y`` along their geodesic: :math:`EVE^\top`,
        :math:`E = X^{1/2}(X^{-1/2}YX^{-1/2})^{1/2}X^{-1/2}` (pyRiemann's ``transport_riemann(V, X, Y)``;
        argument order as pyRiemann and geomstats: the vector first)."""
        v = self._args("parallel_transport", check, V=(_TAN, V), X=(_X, X), Y=(SPD(gate="check"), Y))
        xp, (Xs, Ys, Vs), dt = self._up(v["X"], v["Y"], v["V"])
        L = xp.linalg.cholesky(Xs)
        M = L @ _pow(_whiten(L, Ys, xp), 0.5, xp)
        E = mT(xp.linalg.solve(mT(L, xp), mT(M, xp)), xp)            # L S^{1/2} L^{-1}
        return compat.cast(sym(E @ Vs @ mT(E, xp), xp), dt, xp)

    def mean(self, X: Array, weights: Array | None = None, *, init: Array | None = None, tol: float | None = None,
             max_iter: int = 50, callback: Callable | None = None, callback_every: int = 1, progress: bool = False,
             check: bool = True) -> MeanResult:
        r"""Karcher (Fréchet) mean :math:`\arg\min_M \sum_k w_k d^2(M, X_k)` over axis -3 of ``X``.

        Riemannian gradient descent (the Karcher flow; Pennec 2006, Fletcher et al. 2004):
        :math:`J = \sum_k w_k\log(M^{-1/2}X_kM^{-1/2})`, :math:`M \leftarrow M^{1/2}\exp(\nu J)M^{1/2}`,
        from the weighted arithmetic mean (or ``init``), stopping when :math:`\|J\|_F \le` ``tol`` (the
        criterion of pyRiemann's ``mean_riemann``, whose ``tol`` is this one; default 1e-10 in float64).
        Step-size control: :math:`\nu = 1/(1 + r)` with :math:`r` the largest of the last three contraction
        ratios :math:`\|J_k\|/\|J_{k-1}\|` (a unit step overshoots: the Hessian of the Fréchet function is
        :math:`\succeq I` on this Hadamard manifold, and :math:`r` estimates the excess), halved when
        :math:`\|J\|_F` grows (pyRiemann's ``mean_riemann`` shrinks :math:`\nu` by 0.95 on every successful step
        and by half on a failed one; a plain unit step fails to converge on widely dispersed data).  Stopping at
        ``max_iter`` warns with :class:`optnorm.ConvergenceWarning`; ``callback(state)`` receives a
        :class:`MeanState` (returning True stops); ``progress=True`` shows a progress bar.

        Returns
        -------
        MeanResult
        """
        xp, Xc, w, init, tol, dt = self._mean_args(X, weights, init, tol, max_iter, callback, callback_every,
                                                    progress, check)
        w4 = w[..., None, None]
        M = xp.sum(w4 * Xc, axis=-3) if init is None else sym(compat.cast(init, Xc.dtype, xp), xp)
        mon = Monitor("AffineInvariant.mean", max_iter=max_iter, tol=tol, callback=callback,
                      callback_every=callback_every, progress=progress)
        with lapack_single_thread(Xc):
            M = self._karcher(Xc, w, M, mon, max_iter, tol, dt, xp)
        mon.close()
        return MeanResult(compat.cast(M, dt, xp), mon.n_iter, mon.converged, tuple(mon.errors))

    @staticmethod
    def _karcher(Xc, w, M, mon, max_iter, tol, dt, xp):
        nu, prev = 1.0, math.inf
        ratios: list[float] = []
        for it in range(1, max_iter + 1):
            H, Hi, _ = sqrt_pair(M, xp)
            J = _karcher_grad(Xc, Hi, w, xp=xp)
            err = xp.max(xp.sqrt(xp.sum(J * J, axis=(-2, -1))))
            e = float(err) if compat.is_concrete(err) else None
            if e is not None and e <= tol:
                mon.update(it - 1, e)
                break
            if e is not None:
                # unit steps overshoot on a Hadamard manifold (the Hessian of the Fréchet function is >= I): the
                # observed contraction r = e_k / e_{k-1} estimates the excess curvature, and nu = 1 / (1 + r)
                # (r the largest of the last three) damps the overshoot; a growing gradient halves the step.
                # Iterations to 1e-10 on six test sets (dispersed to cond 1e6): unit step 9, 11, 12, 37, 28, and
                # no convergence in 200; this rule 6, 8, 9, 27, 13, 24 (pyRiemann's 0.95 decay: slower still)
                ratios.append(e / prev if prev < math.inf else 0.0)
                r = max(ratios[-3:])
                nu = nu * 0.5 if ratios[-1] >= 1.0 else 1.0 / (1.0 + r)
                prev = e
            M = sym(H @ funm(nu * J, "exp", xp)[0] @ H, xp)
            if mon.update(it, e, lambda: MeanState(it, e if e is not None else float("nan"), compat.cast(M, dt, xp),
                                                   nu)):
                break
        return M


_karcher_grad = Dispatcher("spd.karcher_gradient", serves=("spd.airm",))


@_karcher_grad.generic
def _karcher_grad_generic(Xc, Hi, w, *, xp):
    """The whitened Riemannian gradient ``J = sum_k w_k log(Hi X_k Hi)`` over axis -3."""
    Hb = Hi[..., None, :, :]
    return _weighted_log_sum(sym(Hb @ Xc @ Hb, xp), w, xp)


@_karcher_grad.numba(when=lambda Xc, Hi, w, **kw: Xc.ndim == 3 and Xc.dtype == np.float64 and compat.all_numpy(Xc))
def _karcher_grad_numba(Xc, Hi, w, *, xp):
    """Parallel over the stack (optnorm/_numba/spd.py: karcher_gradient): each thread whitens, eigendecomposes
    (LAPACK) and accumulates its matrices; NumPy's batched ``eigh`` runs on one core."""
    from .._numba import spd as nb

    return nb.karcher_gradient(Xc, Hi, w)


def _weighted_log_sum(W, w, xp):
    """``sum_k w_k log(W_k)`` over axis -3: one batched eigendecomposition, then one GEMM over the stacked
    eigenvectors (``[U_1 D_1, ..., U_m D_m] [U_1, ..., U_m]^T``) instead of m reconstructions."""
    lam, U = eigh(W, xp)
    d = xp.log(lam) * w[..., None]
    UD = U * d[..., None, :]
    if W.ndim == 3 and compat.all_numpy(W):
        m, n, _ = W.shape
        a = xp.reshape(xp.permute_dims(UD, (1, 0, 2)), (n, m * n))
        b = xp.reshape(xp.permute_dims(U, (1, 0, 2)), (n, m * n))
        return sym(a @ mT(b, xp), xp)
    return sym(xp.sum(UD @ mT(U, xp), axis=-3), xp)


@public()
def airm() -> AffineInvariant:
    r"""The affine-invariant Riemannian metric object (AIRM) on SPD matrices.

    .. math::

        g_P(U, V) = \operatorname{tr}(P^{-1}UP^{-1}V),\quad
        \mathrm{Exp}_P(V) = P^{1/2}\exp(P^{-1/2}VP^{-1/2})P^{1/2},\quad
        d(A, B) = \bigl\|\log(A^{-1/2}BA^{-1/2})\bigr\|_F

    (Pennec, Fillard, Ayache, "A Riemannian framework for tensor computing", IJCV 2006; Bhatia, *Positive
    Definite Matrices*, 2007, ch. 6).  pyRiemann's ``metric="riemann"``; geomstats' ``SPDAffineMetric``.

    Returns
    -------
    AffineInvariant
        with ``distance``, ``log``, ``exp``, ``geodesic``, ``inner``, ``norm``, ``parallel_transport`` and
        ``mean`` (Karcher mean, a :class:`MeanResult`).

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> g = spd.airm()
    >>> A, B = np.eye(2), np.diag([4.0, 9.0])
    >>> np.allclose(g.geodesic(A, B, 0.5), np.diag([2.0, 3.0]))
    True
    >>> np.allclose(g.exp(A, g.log(A, B)), B)
    True
    """
    return AffineInvariant()


# ---------------------------------------------------------------------------- LEM
@public_class
class LogEuclidean(SPDMetric):
    r"""The log-Euclidean metric (LEM) on SPD matrices; create with :func:`lem`.

    The pull-back of the Euclidean metric by :math:`\log`: :math:`d(A, B) = \|\log A - \log B\|_F`,
    :math:`g_P(U, V) = \langle D\log_P[U], D\log_P[V]\rangle_F` (Arsigny, Fillard, Pennec, Ayache, "Geometric
    means in a novel vector space structure on symmetric positive-definite matrices", SIAM J. Matrix Anal.
    Appl. 2007).  ``log``/``exp``/``parallel_transport`` use the Fréchet derivatives of ``log``/``exp``
    (Daleckii-Krein), as pyRiemann 0.12's ``log_map_logeuclid``.
    """

    name = "lem"

    def distance(self, X: Array, Y: Array, *, squared: bool = False, check: bool = True) -> Array:
        r"""Distance :math:`\|\log X - \log Y\|_F` (:func:`lem_distance`)."""
        v = self._args("distance", check, X=(_X, X), Y=(SPD(gate="check"), Y), squared=(Bool(), squared))
        return apply_native("spd.lem_distance", v["X"], v["Y"], squared=squared, check=False)

    def log(self, X: Array, Y: Array, *, check: bool = True) -> Array:
        r"""Riemannian logarithm :math:`\mathrm{Log}_X Y = D\exp_{\log X}[\log Y - \log X]`."""
        v = self._args("log", check, X=(_X, X), Y=(SPD(gate="check"), Y))
        xp, (Xs, Ys), dt = self._up(v["X"], v["Y"])
        LX = spd_log(Xs, xp)
        return compat.cast(_dexp(LX, spd_log(Ys, xp) - LX, xp), dt, xp)

    def exp(self, X: Array, V: Array, *, check: bool = True) -> Array:
        r"""Riemannian exponential :math:`\mathrm{Exp}_X V = \exp(\log X + D\log_X[V])`."""
        v = self._args("exp", check, X=(_X, X), V=(_TAN, V))
        xp, (Xs, Vs), dt = self._up(v["X"], v["V"])
        return require_finite(compat.cast(spd_exp(spd_log(Xs, xp) + _dlog(Xs, Vs, xp), xp), dt, xp), "LogEuclidean.exp", "V", xp)

    def geodesic(self, X: Array, Y: Array, t: Array | float, *, check: bool = True) -> Array:
        r"""Point :math:`\gamma(t) = \exp((1-t)\log X + t\log Y)` of the geodesic from ``X`` to ``Y``."""
        v = self._args("geodesic", check, X=(_X, X), Y=(SPD(gate="check"), Y))
        t = _as_t(t, "LogEuclidean.geodesic")
        xp, (Xs, Ys), dt = self._up(v["X"], v["Y"])
        if compat.is_array(t):
            t = compat.cast(t, Xs.dtype, xp)[..., None, None]
        LX = spd_log(Xs, xp)
        return compat.cast(spd_exp(LX + t * (spd_log(Ys, xp) - LX), xp), dt, xp)

    def inner(self, X: Array, U: Array, V: Array, *, check: bool = True) -> Array:
        r"""Inner product :math:`g_X(U, V) = \langle D\log_X[U], D\log_X[V]\rangle_F`."""
        v = self._args("inner", check, X=(_X, X), U=(_TAN, U), V=(_TAN, V))
        xp, (Xs, Us, Vs), dt = self._up(v["X"], v["U"], v["V"])
        w, Q = eigh(Xs, xp)
        K = divdiff(w, "log", xp)
        return compat.cast(xp.sum((K * rot(Q, Us, xp)) * (K * rot(Q, Vs, xp)), axis=(-2, -1)), dt, xp)

    def parallel_transport(self, V: Array, X: Array, Y: Array, *, check: bool = True) -> Array:
        r"""Parallel transport :math:`D\exp_{\log Y}[D\log_X[V]]` (the metric is flat in log coordinates;
        pyRiemann's ``transport_logeuclid``)."""
        v = self._args("parallel_transport", check, V=(_TAN, V), X=(_X, X), Y=(SPD(gate="check"), Y))
        xp, (Xs, Ys, Vs), dt = self._up(v["X"], v["Y"], v["V"])
        return compat.cast(_dexp(spd_log(Ys, xp), _dlog(Xs, Vs, xp), xp), dt, xp)

    def mean(self, X: Array, weights: Array | None = None, *, init: Array | None = None, tol: float | None = None,
             max_iter: int = 50, callback: Callable | None = None, callback_every: int = 1, progress: bool = False,
             check: bool = True) -> MeanResult:
        r"""Log-Euclidean mean :math:`\exp(\sum_k w_k\log X_k)` over axis -3 (closed form: ``n_iter=0``,
        ``converged=True``; ``init``, ``tol``, ``max_iter``, ``callback`` and ``progress`` are accepted for
        a common signature and unused)."""
        xp, Xc, w, _, _, dt = self._mean_args(X, weights, init, tol, max_iter, callback, callback_every,
                                              progress, check)
        M = spd_exp(xp.sum(w[..., None, None] * spd_log(Xc, xp), axis=-3), xp)
        return MeanResult(compat.cast(M, dt, xp), 0, True, ())


@public()
def lem() -> LogEuclidean:
    r"""The log-Euclidean metric object (LEM) on SPD matrices.

    .. math::

        d(A, B) = \|\log A - \log B\|_F,\qquad
        \gamma(t) = \exp\bigl((1-t)\log A + t\log B\bigr),\qquad
        \bar X = \exp\Bigl(\sum_k w_k \log X_k\Bigr)

    (Arsigny, Fillard, Pennec, Ayache, SIAM J. Matrix Anal. Appl. 2007).  pyRiemann's ``metric="logeuclid"``;
    geomstats' ``SPDLogEuclideanMetric``.

    Returns
    -------
    LogEuclidean
        with ``distance``, ``log``, ``exp``, ``geodesic``, ``inner``, ``norm``, ``parallel_transport`` and
        ``mean`` (closed form).

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> X = np.stack([np.eye(2), np.diag([4.0, 9.0])])
    >>> np.allclose(spd.lem().mean(X).mean, np.diag([2.0, 3.0]))
    True
    """
    return LogEuclidean()


# ---------------------------------------------------------------------------- log-Cholesky
def _parts(L, xp):
    """``(strict lower part, diagonal as a vector)`` of lower-triangular ``L``."""
    return xp.tril(L, k=-1), xp.linalg.diagonal(L)


def _diag(d, xp):
    n = d.shape[-1]
    return d[..., :, None] * eye(n, d, xp)


def _half(L, V, xp):
    """``P_1/2 = lower(P) + diag(P)/2`` with ``P = L^{-1} V L^{-T}`` (Lin 2019, Prop. 4): the differential of the
    Cholesky map at ``L L^T`` in direction ``V`` is ``L P_1/2``."""
    P = xp.linalg.solve(L, mT(xp.linalg.solve(L, V), xp))
    P = sym(P, xp)
    return xp.tril(P, k=-1) + _diag(xp.linalg.diagonal(P) / 2, xp)


@public_class
class LogCholesky(SPDMetric):
    r"""The log-Cholesky metric on SPD matrices (Lin, "Riemannian geometry of symmetric positive definite matrices
    via Cholesky decomposition", SIAM J. Matrix Anal. Appl. 2019); create with :func:`log_cholesky`.

    With :math:`A = LL^\top`, :math:`\lfloor\cdot\rfloor` the strictly lower part and :math:`\mathbb{D}` the
    diagonal, the map :math:`A \mapsto (\lfloor L\rfloor, \log\mathbb{D}(L))` is an isometry onto a Euclidean
    space, so every object has a closed form; pyRiemann's ``metric="logchol"``, geomstats' ``CholeskyMetric``
    (not ``LieCholeskyMetric``, a different metric).
    """

    name = "log_cholesky"

    @staticmethod
    def _chol(*mats, xp):
        return [xp.linalg.cholesky(m) for m in mats]

    def distance(self, X: Array, Y: Array, *, squared: bool = False, check: bool = True) -> Array:
        r""":math:`d^2 = \|\lfloor L\rfloor - \lfloor K\rfloor\|_F^2 + \|\log\mathbb{D}(L) - \log\mathbb{D}(K)\|_F^2`."""
        v = self._args("distance", check, X=(_X, X), Y=(SPD(gate="check"), Y), squared=(Bool(), squared))
        xp, (Xs, Ys), dt = self._up(v["X"], v["Y"])
        L, K = self._chol(Xs, Ys, xp=xp)
        (l0, ld), (k0, kd) = _parts(L, xp), _parts(K, xp)
        D = l0 - k0
        e = xp.log(ld) - xp.log(kd)
        d2 = xp.sum(D * D, axis=(-2, -1)) + xp.sum(e * e, axis=-1)
        return compat.cast(d2 if squared else xp.sqrt(d2), dt, xp)

    def log(self, X: Array, Y: Array, *, check: bool = True) -> Array:
        r""":math:`\mathrm{Log}_X Y = L\tilde X^\top + \tilde XL^\top`,
        :math:`\tilde X = \lfloor K\rfloor - \lfloor L\rfloor + \mathbb{D}(L)\log(\mathbb{D}(K)\mathbb{D}(L)^{-1})`."""
        v = self._args("log", check, X=(_X, X), Y=(SPD(gate="check"), Y))
        xp, (Xs, Ys), dt = self._up(v["X"], v["Y"])
        L, K = self._chol(Xs, Ys, xp=xp)
        (l0, ld), (k0, kd) = _parts(L, xp), _parts(K, xp)
        Xt = k0 - l0 + _diag(ld * (xp.log(kd) - xp.log(ld)), xp)
        return compat.cast(sym(L @ mT(Xt, xp) + Xt @ mT(L, xp), xp), dt, xp)

    def exp(self, X: Array, V: Array, *, check: bool = True) -> Array:
        r""":math:`\mathrm{Exp}_X V = \Lambda\Lambda^\top`,
        :math:`\Lambda = \lfloor L\rfloor + \lfloor L P_{1/2}\rfloor + \mathbb{D}(L)\exp(\mathbb{D}(P_{1/2}))`,
        :math:`P_{1/2} = \lfloor P\rfloor + \mathbb{D}(P)/2`, :math:`P = L^{-1}VL^{-\top}`."""
        v = self._args("exp", check, X=(_X, X), V=(_TAN, V))
        xp, (Xs, Vs), dt = self._up(v["X"], v["V"])
        (L,) = self._chol(Xs, xp=xp)
        Ph = _half(L, Vs, xp)
        l0, ld = _parts(L, xp)
        Lam = l0 + xp.tril(L @ Ph, k=-1) + _diag(ld * xp.exp(xp.linalg.diagonal(Ph)), xp)
        return require_finite(compat.cast(sym(Lam @ mT(Lam, xp), xp), dt, xp), "LogCholesky.exp", "V", xp)

    def geodesic(self, X: Array, Y: Array, t: Array | float, *, check: bool = True) -> Array:
        r""":math:`\gamma(t) = \Lambda_t\Lambda_t^\top`,
        :math:`\Lambda_t = \lfloor L\rfloor + t(\lfloor K\rfloor - \lfloor L\rfloor) + \mathbb{D}(L)^{1-t}\mathbb{D}(K)^t`."""
        v = self._args("geodesic", check, X=(_X, X), Y=(SPD(gate="check"), Y))
        t = _as_t(t, "LogCholesky.geodesic")
        xp, (Xs, Ys), dt = self._up(v["X"], v["Y"])
        L, K = self._chol(Xs, Ys, xp=xp)
        (l0, ld), (k0, kd) = _parts(L, xp), _parts(K, xp)
        if compat.is_array(t):
            t = compat.cast(t, Xs.dtype, xp)
            tm, tv = t[..., None, None], t[..., None]
        else:
            tm = tv = t
        Lam = l0 + tm * (k0 - l0) + _diag(xp.exp((1 - tv) * xp.log(ld) + tv * xp.log(kd)), xp)
        return compat.cast(sym(Lam @ mT(Lam, xp), xp), dt, xp)

    def inner(self, X: Array, U: Array, V: Array, *, check: bool = True) -> Array:
        r""":math:`g_X(U, V) = \langle\lfloor LP^U_{1/2}\rfloor, \lfloor LP^V_{1/2}\rfloor\rangle_F +
        \langle\mathbb{D}(P^U_{1/2}), \mathbb{D}(P^V_{1/2})\rangle_F` (pyRiemann's ``innerproduct_logchol``)."""
        v = self._args("inner", check, X=(_X, X), U=(_TAN, U), V=(_TAN, V))
        xp, (Xs, Us, Vs), dt = self._up(v["X"], v["U"], v["V"])
        (L,) = self._chol(Xs, xp=xp)
        Pu, Pv = _half(L, Us, xp), _half(L, Vs, xp)
        a, b = xp.tril(L @ Pu, k=-1), xp.tril(L @ Pv, k=-1)
        g = xp.sum(a * b, axis=(-2, -1)) + xp.sum(xp.linalg.diagonal(Pu) * xp.linalg.diagonal(Pv), axis=-1)
        return compat.cast(g, dt, xp)

    def parallel_transport(self, V: Array, X: Array, Y: Array, *, check: bool = True) -> Array:
        r"""Closed-form parallel transport (Lin 2019, Prop. 7): :math:`\tilde X = L_X P_{1/2}`,
        :math:`T = \lfloor\tilde X\rfloor + \mathbb{D}(L_Y)\mathbb{D}(L_X)^{-1}\mathbb{D}(\tilde X)`, result
        :math:`L_YT^\top + TL_Y^\top` (pyRiemann's ``transport_logchol``)."""
        v = self._args("parallel_transport", check, V=(_TAN, V), X=(_X, X), Y=(SPD(gate="check"), Y))
        xp, (Xs, Ys, Vs), dt = self._up(v["X"], v["Y"], v["V"])
        L, K = self._chol(Xs, Ys, xp=xp)
        Xt = L @ _half(L, Vs, xp)
        T = xp.tril(Xt, k=-1) + _diag(xp.linalg.diagonal(K) / xp.linalg.diagonal(L) * xp.linalg.diagonal(Xt), xp)
        return compat.cast(sym(K @ mT(T, xp) + T @ mT(K, xp), xp), dt, xp)

    def mean(self, X: Array, weights: Array | None = None, *, init: Array | None = None, tol: float | None = None,
             max_iter: int = 50, callback: Callable | None = None, callback_every: int = 1, progress: bool = False,
             check: bool = True) -> MeanResult:
        r"""Closed-form mean :math:`\Lambda\Lambda^\top`, :math:`\Lambda = \sum_k w_k\lfloor L_k\rfloor +
        \exp(\sum_k w_k\log\mathbb{D}(L_k))` over axis -3 (``n_iter=0``; the iteration options are accepted for
        a common signature and unused)."""
        xp, Xc, w, _, _, dt = self._mean_args(X, weights, init, tol, max_iter, callback, callback_every,
                                              progress, check)
        (L,) = self._chol(Xc, xp=xp)
        l0, ld = _parts(L, xp)
        Lam = xp.sum(w[..., None, None] * l0, axis=-3) + _diag(xp.exp(xp.sum(w[..., None] * xp.log(ld), axis=-2)),
                                                                xp)
        return MeanResult(compat.cast(sym(Lam @ mT(Lam, xp), xp), dt, xp), 0, True, ())


@public()
def log_cholesky() -> LogCholesky:
    r"""The log-Cholesky metric object on SPD matrices (Lin, SIAM J. Matrix Anal. Appl. 2019).

    .. math::

        d^2(A, B) = \|\lfloor L\rfloor - \lfloor K\rfloor\|_F^2 + \|\log\mathbb{D}(L) - \log\mathbb{D}(K)\|_F^2,
        \qquad A = LL^\top,\ B = KK^\top

    with closed-form log, exp, geodesic, parallel transport and mean.  pyRiemann's ``metric="logchol"``.

    Returns
    -------
    LogCholesky
        with ``distance``, ``log``, ``exp``, ``geodesic``, ``inner``, ``norm``, ``parallel_transport`` and
        ``mean`` (closed form).

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> g = spd.log_cholesky()
    >>> round(float(g.distance(np.eye(2), np.diag([np.e ** 2, 1.0]))), 6)
    1.0
    """
    return LogCholesky()


METRIC_ALIASES = {"airm": "airm", "riemann": "airm", "lem": "lem", "logeuclid": "lem",
                  "log_cholesky": "log_cholesky", "logchol": "log_cholesky", "bw": "bw", "wasserstein": "bw",
                  "bures_wasserstein": "bw"}  # the metric object's name (optnorm.spd.bures_wasserstein) too


def metric_object(name: str) -> SPDMetric:
    """The metric object for a ``metric=`` string (pyRiemann's names are accepted as aliases)."""
    key = METRIC_ALIASES[name]
    if key == "airm":
        return AffineInvariant()
    if key == "lem":
        return LogEuclidean()
    if key == "log_cholesky":
        return LogCholesky()
    from .bures import BuresWasserstein

    return BuresWasserstein()

