"""Wasserstein barycenters: fixed support (entropic, iterative Bregman projections in the log domain) and free
support (Cuturi & Doucet's fixed-point iteration on the atoms' positions).

For Gaussians the barycenter has a closed-form fixed point in the Bures-Wasserstein geometry:
:meth:`optnorm.spd.BuresWasserstein.mean` (covariances) with the weighted mean of the means.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.convergence import ConvergenceWarning, warn_not_converged
from .._lib.api import public, public_class, vjp
from .._lib.dispatch import Dispatcher, numpy_float
from .._lib.roles import Bool, Callback, Choice, Cost, Float, Int, NonNegative, Option, Positive, Weights
from .._lib.solver import Monitor, Result
from .._lib.typing import Array
from . import _common as cm

METHODS = ("log",)


# ---------------------------------------------------------------------------------------------- results
@public_class
@dataclass(frozen=True)
class BarycenterState:
    """What a barycenter callback sees (the convention of :mod:`optnorm._lib.solver`).

    Attributes
    ----------
    n_iter : int
        Iterations done.
    error : float
        The stopping criterion.
    barycenter : array
        The current barycenter (weights on the support for :func:`optnorm.ot.barycenter`, the atoms' positions
        for :func:`optnorm.ot.free_support_barycenter`).
    """
    n_iter: int
    error: float
    barycenter: Any


@public_class
@dataclass(frozen=True, repr=False)
class BarycenterResult(Result):
    """Result of :func:`optnorm.ot.barycenter`.

    Attributes
    ----------
    barycenter : array (m,)
        The entropic barycenter (a histogram on the columns of ``M``).
    f, g : arrays (k, n) / (k, m)
        Potentials of the k transport problems between the inputs and the barycenter, in cost units:
        :math:`P_k = e^{(f_k\\oplus g_k - M)/\\varepsilon}`.
    n_iter : int
        Iterations done.
    converged : bool
        Whether ``tol`` was reached.
    errors : list of float
        History of the stopping criterion.
    reg : float
        :math:`\\varepsilon`.
    tol : float
        The tolerance used.
    """
    barycenter: Any
    f: Any
    g: Any
    n_iter: int
    converged: bool
    errors: list
    reg: float
    tol: float


@public_class
@dataclass(frozen=True, repr=False)
class FreeSupportResult(Result):
    """Result of :func:`optnorm.ot.free_support_barycenter`.

    Attributes
    ----------
    X : array (k, d)
        The barycenter's atoms.
    b : array (k,)
        Their (fixed) weights.
    n_iter : int
        Iterations done.
    converged : bool
        Whether the squared displacement fell below ``tol``.
    errors : list of float
        Squared displacement :math:`\\sum_i |x_i^{t+1} - x_i^t|^2` per iteration.
    cost : float
        :math:`\\sum_k w_k \\mathrm{OT}(\\beta, \\mu_k)` at the last plans (squared Euclidean cost).
    """
    X: Any
    b: Any
    n_iter: int
    converged: bool
    errors: list
    cost: float


# ---------------------------------------------------------------------------------------------- iterations
# ``n_steps`` iterations from the column potentials g (k, m); returns (f, g, lc, logq, g_prev), g_prev the potentials
# the last column pass followed.  The generic body one problem at a time (n x m memory per soft minimum); NumPy
# inputs two BLAS products per iteration for all k problems (optnorm._numba.barycenter).
bary_iterations = Dispatcher("ot.barycenter_iterations", serves="ot.barycenter")


@bary_iterations.generic
def _bary_generic(M, ra, w, g, *, reg, n_steps, cache, xp):
    M1 = M[None, ...]

    def soft(H, axis):
        return xp.concat([cm.softmin_xp(M1, H[i:i + 1, ...], reg, axis, xp) for i in range(H.shape[0])], axis=0)

    g_prev = g
    f = lc = logq = None
    for _ in range(n_steps):
        f = ra - soft(g, 2)
        lc = soft(f, 1)
        logq = xp.sum(w[:, None] * lc, axis=0) / reg
        g_prev = g
        g = reg * logq[None, :] - lc
    return f, g, lc, logq, g_prev


@bary_iterations.numba(when=lambda M, ra, w, g, **kw: numpy_float(M, ra, w, g))
def _bary_numba(M, ra, w, g, *, reg, n_steps, cache, xp):
    from .._numba import barycenter as nb

    dt = M.dtype
    out = nb.iterations(M, np.asarray(ra, np.float64), np.asarray(w, np.float64), np.asarray(g, np.float64), reg,
                        n_steps, cache)
    return tuple(o.astype(dt) for o in out)


def _example(rng, dtype):
    A = rng.random((3, 6)) + 0.1
    M = (np.arange(6)[:, None] - np.arange(6)[None, :]) ** 2 / 25.0
    return ((A / A.sum(-1, keepdims=True)).astype(dtype), M.astype(dtype)), {"reg": 0.1, "max_iter": 60}


class BarycenterRes(NamedTuple):
    f: Any           # (k, n) row potentials of the last pass
    g: Any           # (k, m) the column potentials that pass followed
    lc: Any          # (k, m) its column soft maxima
    logq: Any        # (m,)
    A: Any           # (k, n) normalised inputs
    M: Any
    w: Any           # (k,) normalised weights
    reg: float
    max_iter: int
    tol: float
    dtypes: tuple


def _bary_forward(A, M, reg, weights, method, tol, max_iter, check_every, callback, callback_every, progress):
    xp = compat.array_namespace(*[x for x in (A, M, weights) if x is not None])
    cdt = compat.compute_dtype(M, xp)
    for x in (A, weights):
        if x is not None and x.dtype == getattr(xp, "float64", None):
            cdt = x.dtype
    k = A.shape[0]
    m = M.shape[1]
    dev = compat.device(A)
    Ab = compat.cast(A, cdt, xp)
    Ab = Ab / xp.sum(Ab, axis=1, keepdims=True)
    Mb = compat.cast(M, cdt, xp)
    if weights is None:
        w = xp.full((k,), 1.0 / k, dtype=cdt, device=dev)
    else:
        w = compat.cast(weights, cdt, xp)
        w = w / xp.sum(w)
    reg = float(reg)
    tol = cm.default_tol(tol, cdt)
    ra = reg * cm.log_weights(Ab, xp)
    g = xp.zeros((k, m), dtype=cdt, device=dev)
    mon = Monitor("barycenter", max_iter=max_iter, tol=tol, callback=callback, callback_every=callback_every,
                  progress=progress, check_every=check_every, warn=True)
    concrete = compat.is_concrete(Mb) and compat.is_concrete(Ab)
    cache: dict = {}
    it = 0
    with compat.no_grad(A, M, *(() if weights is None else (weights,))):
        if not concrete:                    # traced (jax.jit): max_iter iterations, no test
            f, g, lc, logq, g_prev = bary_iterations(Mb, ra, w, g, reg=reg, n_steps=max_iter, cache=cache, xp=xp)
            mon.step(max_iter)
            mon.warn = False
        while concrete and it < max_iter:
            nxt = min(max_iter, (it // check_every + 1) * check_every)
            if callback is not None:
                nxt = min(nxt, (it // callback_every + 1) * callback_every)
            f, g, lc, logq, g_prev = bary_iterations(Mb, ra, w, g, reg=reg, n_steps=nxt - it, cache=cache, xp=xp)
            it = nxt
            if mon.wants(it):
                q = xp.exp(logq)
                col = xp.exp(xp.clip((g_prev + lc) / reg, None, 300.0))
                e = float(xp.max(xp.sum(xp.abs(col - q[None, :]), axis=-1)))
                k_ = it
                if mon.update(it, e, lambda: BarycenterState(k_, e, compat.cast(q, A.dtype, xp))):
                    break
            else:
                mon.step(it)
        mon.close()
    res = BarycenterRes(f, g_prev, lc, logq, Ab, Mb, w, reg, max_iter, tol,
                        (A.dtype, M.dtype, None if weights is None else weights.dtype))
    return xp.exp(logq), g, mon, res


@public(A=Weights("k n"), M=Cost("n m"), reg=Positive(), weights=Weights("k", optional=True), method=Choice(METHODS),
        tol=NonNegative(optional=True), max_iter=Int(1), check_every=Int(1), callback=Callback(),
        callback_every=Int(1), progress=Bool(), return_result=Bool(), example=_example, sizes={"k": 3})
def barycenter(A: Array, M: Array, weights: Array | None = None, *, reg: float, method: str = "log",
               tol: float | None = None, max_iter: int = 1000, check_every: int = 10,
               callback: Callable[[BarycenterState], bool] | None = None, callback_every: int = 10,
               progress: bool = False, return_result: bool = False) -> Array | BarycenterResult:
    r"""Entropic Wasserstein barycenter of histograms on a fixed support (POT's ``ot.bregman.barycenter``).

    .. math::

        q^\star = \arg\min_q \sum_k w_k\, \mathrm{OT}_\varepsilon(A_k, q),

    by iterative Bregman projections in the log domain (Benamou, Carlier, Cuturi, Nenna, Peyré, "Iterative
    Bregman Projections for Regularized Transportation Problems", SIAM J. Sci. Comput. 2015): for every input,
    in cost units,

    .. math::

        f_k = \varepsilon\log A_k - \varepsilon\,\mathrm{LSE}_j\big((g_{kj} - M_{ij})/\varepsilon\big),\quad
        \ell_k = \varepsilon\,\mathrm{LSE}_i\big((f_{ki} - M_{ij})/\varepsilon\big),\quad
        \varepsilon\log q = \sum_k w_k \ell_k,\quad g_k = \varepsilon\log q - \ell_k .

    Stopping: every ``check_every`` iterations, the largest L1 distance between a plan's column marginal and the
    new barycenter, :math:`\max_k \|e^{(g_k + \ell_k)/\varepsilon} - q\|_1` (POT: the sum of their standard
    deviations across k, default 1e-4).  The entropic barycenter is blurred (that of identical inputs is not
    the input); as :math:`\varepsilon\to0` it tends to the LP barycenter.  The gradient (w.r.t. ``A``, ``M``
    and ``weights``) is implicit: the adjoint of the fixed point, iterated at the converged potentials (POT
    differentiates through every iteration).  On NumPy input the k problems share one absorbed kernel, two
    matrix-matrix products per iteration.  The barycenter of Gaussians is Gaussian: the weighted mean of the
    means and the Bures-Wasserstein barycenter of the covariances, ``optnorm.spd.BuresWasserstein().mean(C,
    weights)`` (no discretisation, no blur).

    Parameters
    ----------
    A : array, shape (k, n)
        The k input histograms, one per **row** (POT takes the transpose, ``(n, k)``), each summing to 1.
    M : array, shape (n, m)
        Cost between the inputs' support (n points) and the barycenter's (m points; POT: the same support).
    weights : array, shape (k,), optional
        Barycentric weights summing to 1 (default uniform).
    reg : float
        :math:`\varepsilon`, keyword-only (POT: third positional argument): the positional parameters of a
        differentiable function are its differentiable arrays.
    method : {"log"}
        Log-domain iterations (POT's ``"sinkhorn_log"``; stable for any reg).
    tol : float, optional
        Default 1e-9 (float64), 100 eps for lower precisions.
    max_iter : int, default 1000
        Maximum number of iterations (every one of them under ``jax.jit``, where nothing is tested).
    check_every : int, default 10
        Iterations between two evaluations of the stopping criterion.
    callback : callable(BarycenterState) -> bool, optional
        Called every ``callback_every`` iterations with the current barycenter; True stops.
    callback_every : int, default 10
        Iterations between callbacks.
    progress : bool, default False
        Show a progress bar.
    return_result : bool, default False
        Return a :class:`BarycenterResult` (potentials, iterations, convergence) instead of the histogram (POT's
        ``log=True``); not differentiable.

    Returns
    -------
    array, shape (m,)
        The barycenter :math:`q^\star` (differentiable), or a :class:`BarycenterResult` with ``return_result``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import barycenter
    >>> x = np.linspace(0, 1, 50)
    >>> A = np.stack([np.exp(-(x - 0.2) ** 2 / 0.002), np.exp(-(x - 0.8) ** 2 / 0.002)])
    >>> A /= A.sum(1, keepdims=True)
    >>> q = barycenter(A, (x[:, None] - x[None]) ** 2, reg=1e-3)
    >>> round(float(x @ q), 3)          # the mass sits half way
    0.5
    """
    q, g, mon, res = _bary_forward(A, M, reg, weights, method, tol, max_iter, check_every, callback,
                                   callback_every, progress)
    xp = compat.array_namespace(q)
    cast = lambda z: compat.cast(z, A.dtype, xp)  # noqa: E731
    if not return_result:
        return cast(q)
    return BarycenterResult(barycenter=cast(q), f=cast(res.f), g=cast(g), n_iter=mon.n_iter,
                            converged=mon.converged, errors=list(mon.errors), reg=res.reg, tol=res.tol)


def barycenter_fwd(A, M, weights=None, *, reg, method="log", tol=None, max_iter=1000, check_every=10, callback=None,
                   callback_every=10, progress=False, return_result=False):
    if return_result:
        raise TypeError("barycenter: return_result=True returns a result object, which the autodiff adapters cannot "
                        "differentiate; differentiate the histogram (return_result=False)")
    q, _, _, res = _bary_forward(A, M, reg, weights, method, tol, max_iter, check_every, callback, callback_every,
                                 progress)
    return compat.cast(q, A.dtype, compat.array_namespace(q)), res


def _bary_pass_bwd(u, lam, Pr, Pc, w, reg, xp):
    """Cotangents of one pass g -> (log q, g') at the fixed point, for the cotangents (u, lam) of (log q, g'):
    (g_bar, f_bar, l_bar, u_bar).  Pr (k, n, m) row-stochastic (the row half-step's softmax), Pc column-stochastic."""
    ubar = u + reg * xp.sum(lam, axis=0)
    lbar = w[:, None] * ubar[None, :] / reg - lam
    fbar = (Pc @ lbar[:, :, None])[..., 0]
    gbar = -(xp.matrix_transpose(Pr) @ fbar[:, :, None])[..., 0]
    return gbar, fbar, lbar, ubar


def barycenter_bwd(res: BarycenterRes, dq):
    """Implicit VJP: lam = Phi_g^T lam + O_g^T u iterated from 0 (Phi: one pass g -> g', O: g -> log q; the
    directions Phi leaves invariant, g_k + c_k with sum_k w_k c_k = 0, change neither q nor lam's fixed point),
    then the parameters' cotangents O_theta^T u + Phi_theta^T lam."""
    f, g, lc, logq, Ab, Mb, w, reg = res.f, res.g, res.lc, res.logq, res.A, res.M, res.w, res.reg
    xp = compat.array_namespace(Mb)
    u = compat.cast(dq, Mb.dtype, xp) * xp.exp(logq)
    M1 = Mb[None, ...]
    pos = Ab > 0
    Pr = xp.exp((f[:, :, None] + g[:, None, :] - M1) / reg)
    Pr = Pr / xp.where(pos, Ab, xp.ones_like(Ab))[:, :, None]
    Pc = xp.exp((f[:, :, None] - lc[:, None, :] - M1) / reg)
    lam = xp.zeros_like(g)
    concrete = compat.is_concrete(lam)
    n_adj = 4 * res.max_iter if concrete else res.max_iter
    for t in range(1, n_adj + 1):
        new = _bary_pass_bwd(u, lam, Pr, Pc, w, reg, xp)[0]
        if concrete and t % 10 == 0:
            d = float(xp.max(xp.abs(new - lam)))
            s = float(xp.max(xp.abs(new)))
            lam = new
            if d <= max(res.tol, 1e-12) * max(s, 1e-30) or not math.isfinite(d):
                break
        lam = new
    _, fbar, lbar, ubar = _bary_pass_bwd(u, lam, Pr, Pc, w, reg, xp)
    dM = xp.sum(Pr * fbar[:, :, None] - Pc * lbar[:, None, :], axis=0)
    dA = xp.where(pos, reg * fbar / xp.where(pos, Ab, xp.ones_like(Ab)), xp.zeros_like(Ab))
    dA = dA - xp.sum(dA * Ab, axis=1, keepdims=True)            # through the normalisation (rows sum to 1)
    ta, tM, tw = res.dtypes
    dw = None
    if tw is not None:
        dw = xp.sum(lc * ubar[None, :], axis=1) / reg
        dw = compat.cast(dw - xp.sum(dw * w), tw, xp)
    return compat.cast(dA, ta, xp), compat.cast(dM, tM, xp), dw


vjp(barycenter, barycenter_fwd, barycenter_bwd, validate=True)


# ---------------------------------------------------------------------------------------------- free support
def _check_measures(value, name):
    if compat.is_array(value):
        if value.ndim != 3:
            raise ValueError(f"free_support_barycenter: {name} must be a list of (n_k, d) arrays or one (K, n, d) "
                             f"array, got shape {tuple(value.shape)}")
        return [value[i, ...] for i in range(value.shape[0])]
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(f"free_support_barycenter: {name} must be a non-empty list of arrays, got "
                        f"{type(value).__name__}")
    return list(value)


def _check_weights_list(value, name):
    if value is None:
        return None
    if compat.is_array(value):
        return [value[i, ...] for i in range(value.shape[0])] if value.ndim == 2 else [value]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"free_support_barycenter: {name} must be None or a list of arrays, got "
                        f"{type(value).__name__}")
    return list(value)


def _example_free(rng, dtype):
    Ys = [rng.standard_normal((5, 2)).astype(dtype) + i for i in range(3)]
    return (Ys,), {"X_init": rng.standard_normal((4, 2)).astype(dtype)}


@public(measures_locations=Option(check=_check_measures), measures_weights=Option(check=_check_weights_list),
        X_init=Float("k d", finite=True), b=Weights("k", optional=True), weights=Weights("K", optional=True),
        reg=Positive(optional=True), max_iter=Int(1), tol=NonNegative(), inner_max_iter=Int(1), callback=Callback(),
        progress=Bool(), return_result=Bool(), example=_example_free, sizes={"k": 4, "K": 3})
def free_support_barycenter(measures_locations: list, measures_weights: list | None = None, *, X_init: Array,
                            b: Array | None = None, weights: Array | None = None, reg: float | None = None,
                            max_iter: int = 100, tol: float = 1e-7, inner_max_iter: int = 1000,
                            callback: Callable[[BarycenterState], bool] | None = None,
                            progress: bool = False, return_result: bool = False) -> Array | FreeSupportResult:
    r"""Free-support Wasserstein barycenter: optimal positions of k atoms with fixed weights (POT's
    ``ot.lp.free_support_barycenter``).

    Minimises :math:`\sum_K w_K\,W_2^2(\beta, \mu_K)` over the positions :math:`X` of
    :math:`\beta = \sum_i b_i\delta_{x_i}` by the fixed-point iteration of Cuturi & Doucet ("Fast Computation of
    Wasserstein Barycenters", ICML 2014):

    .. math::

        X \leftarrow \sum_K w_K\, \mathrm{diag}(1/b)\, T_K Y_K,\qquad
        T_K = \arg\min_{T\in U(b, a_K)} \langle T, \mathrm{dist}(X, Y_K)\rangle

    (each atom moves to the weighted mean of what its plans send it), exact plans by :func:`emd`, or entropic
    ones by :func:`sinkhorn` with ``reg`` (POT's ``free_support_sinkhorn_barycenter``).  Stops when the squared
    displacement :math:`\sum_i|x_i^{t+1} - x_i^t|^2` falls below ``tol`` (POT's criterion).  For Gaussian
    measures use ``optnorm.spd.BuresWasserstein().mean`` on the covariances (the exact barycenter).

    Parameters
    ----------
    measures_locations : list of arrays (n_K, d), or array (K, n, d)
        Supports of the K input measures.
    measures_weights : list of arrays (n_K,), or array (K, n), optional
        Their weights (default uniform).
    X_init : array, shape (k, d)
        Initial atoms of the barycenter (their number k is kept).
    b : array, shape (k,), optional
        Weights of the barycenter's atoms (default uniform; fixed).
    weights : array, shape (K,), optional
        Barycentric weights (default uniform).
    reg : float, optional
        None: exact plans (:func:`emd`); a number: entropic plans of that :math:`\varepsilon`.
    max_iter : int, default 100
    tol : float, default 1e-7
    inner_max_iter : int, default 1000
        Iterations of each entropic plan (warm-started from the last outer iteration's potentials; POT's
        ``numInnerItermax``); plans that stop there are counted in one warning.
    callback : callable(BarycenterState) -> bool, optional
        Called every iteration with the current atoms; True stops.
    progress : bool, default False
        Show a progress bar.
    return_result : bool, default False
        Return a :class:`FreeSupportResult` (POT's ``log=True``) instead of the atoms.

    Returns
    -------
    array, shape (k, d)
        The barycenter's atoms (POT's return), or a :class:`FreeSupportResult` (``X``, ``b``, ``n_iter``,
        ``converged``, ``errors``, ``cost``) with ``return_result``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import free_support_barycenter
    >>> Y1 = np.array([[0.0], [1.0], [2.0]])
    >>> Y2 = np.array([[10.0], [11.0], [12.0]])
    >>> X = free_support_barycenter([Y1, Y2], X_init=np.array([[0.0], [3.0], [4.0]]))
    >>> np.sort(X[:, 0])                        # 1-D: the average of the sorted samples
    array([5., 6., 7.])
    """
    from .dist import dist
    from .exact import emd
    from .sinkhorn import sinkhorn

    Ys = measures_locations
    xp = compat.array_namespace(X_init, *Ys)
    K = len(Ys)
    kx, d = X_init.shape
    for i, Y in enumerate(Ys):
        if not compat.is_array(Y) or Y.ndim != 2 or Y.shape[1] != d:
            raise ValueError(f"free_support_barycenter: measures_locations[{i}] must have shape (n, {d}) (the "
                             f"dimension of X_init), got {getattr(Y, 'shape', type(Y).__name__)}")
        if not bool(xp.all(xp.isfinite(Y))):
            raise ValueError(f"free_support_barycenter: measures_locations[{i}] contains NaN or inf")
    As = measures_weights
    if As is not None:
        if len(As) != K:
            raise ValueError(f"free_support_barycenter: measures_weights has {len(As)} entries for {K} measures")
        for i, (a, Y) in enumerate(zip(As, Ys)):
            if tuple(a.shape) != (Y.shape[0],) or not bool(xp.all(a >= 0)):
                raise ValueError(f"free_support_barycenter: measures_weights[{i}] must be non-negative of shape "
                                 f"({Y.shape[0]},)")
    if weights is not None and weights.shape[0] != K:
        raise ValueError(f"free_support_barycenter: weights has {weights.shape[0]} entries for {K} measures")
    dt = X_init.dtype
    bb = xp.full((kx,), 1.0 / kx, dtype=dt, device=compat.device(X_init)) if b is None else compat.cast(b, dt, xp)
    w = [1.0 / K] * K if weights is None else [float(v) for v in compat.to_numpy(weights)]
    X = X_init
    mon = Monitor("free_support_barycenter", max_iter=max_iter, tol=tol, callback=callback, callback_every=1,
                  progress=progress, check_every=1, warn=True)
    cost = math.nan
    warm: list = [None] * K                  # entropic plans: each solve starts from the last potentials
    inner_failed = 0
    for it in range(1, max_iter + 1):
        Xn = xp.zeros_like(X)
        cost = 0.0
        for i, (Y, wk, a) in enumerate(zip(Ys, w, As if As is not None else [None] * K)):
            try:
                C = dist(X, compat.cast(Y, dt, xp))
            except ValueError as exc:
                raise ValueError(f"free_support_barycenter: the costs between X_init and measures_locations[{i}] "
                                 f"cannot be computed ({exc})") from None
            if reg is None:
                T = emd(bb, a, C).plan
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    r = sinkhorn(bb, a, C, reg, warm_start=warm[i], max_iter=inner_max_iter)
                warm[i] = (r.f, r.g)
                inner_failed += not r.converged
                T = r.plan()
            Xn = Xn + wk * (T @ compat.cast(Y, dt, xp)) / bb[:, None]
            cost += wk * float(xp.sum(T * C))
        e = float(xp.sum((Xn - X) ** 2))
        X = Xn
        Xs = X
        if mon.update(it, e, lambda: BarycenterState(it, e, Xs)):
            break
    mon.close()
    if inner_failed:
        warn_not_converged("free_support_barycenter (inner sinkhorn)", inner_max_iter, hint=f"{inner_failed} of the "
                           f"entropic plans stopped at inner_max_iter: raise it or reg", stacklevel=3)
    if not return_result:
        return X
    return FreeSupportResult(X=X, b=bb, n_iter=mon.n_iter, converged=mon.converged, errors=list(mon.errors),
                             cost=cost)
