"""Entropic optimal transport: log-domain, stabilised and epsilon-scaling Sinkhorn; ``sinkhorn2`` with a VJP.

Problem (POT's convention): :math:`\\min_{P \\in U(a,b)} \\langle P, M\\rangle + \\varepsilon \\sum_{ij} P_{ij}\\log P_{ij}`,
dual potentials f, g with :math:`P_{ij} = \\exp((f_i + g_j - M_{ij})/\\varepsilon)`.

The hot loop works on the potentials in cost units (never divided by eps, so nothing overflows whatever the ratio
of M to eps) with two soft-minimum passes per iteration (over the columns, then over the rows), run in blocks
between stopping tests by :data:`optnorm.ot._common.iterations`: fused Numba kernels for NumPy inputs
(``optnorm._numba.ot``), CUDA kernels for CuPy inputs (``optnorm/_cuda/ot.cu``), the generic Array-API body for
anything else.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.roles import Bool, Callback, Choice, Cost, Int, NonNegative, Option, Positive, Weights
from .._lib.solver import Monitor
from .._lib.typing import Array
from . import _common as cm
from ._common import SinkhornResult, SinkhornState  # noqa: F401  (documented here; declared in _common)
from .pointcloud import PointCloud

METHODS = ("log", "stabilized", "eps_scaling")


# ---------------------------------------------------------------------------------------------- preparation
def check_warm_start(value, name):
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(compat.is_array(v) for v in value):
        raise TypeError(f"sinkhorn: {name} must be None or a pair of arrays (f, g), got {type(value).__name__}")
    return tuple(value)


# ---------------------------------------------------------------------------------------------- solvers
def _stabilized_loop(a, b, Mb, reg, *, max_iter, check_every, xp, mon, error_norm=1, tau=1e3):
    """Kernel-mode Sinkhorn with absorption of large scalings into the log-potentials (Schmitzer 2016).

    The absorbed potentials start at the row minima of M, so every row of the first kernel has an entry 1
    (a kernel exp(-M/reg) that underflows everywhere would otherwise stall the iterations at once).
    """
    B, n, m = Mb.shape
    dev = compat.device(Mb)
    alpha = xp.min(Mb, axis=2)
    beta = xp.zeros((B, m), dtype=Mb.dtype, device=dev)
    big = -1e300 if Mb.dtype == getattr(xp, "float64", None) else -1e30

    def kernel(al, be):
        return xp.exp((al[:, :, None] + be[:, None, :] - Mb) / reg)

    K = kernel(alpha, beta)
    uu = xp.ones((B, n), dtype=Mb.dtype, device=dev)
    vv = xp.ones((B, m), dtype=Mb.dtype, device=dev)
    it = 0
    tiny = float(xp.finfo(Mb.dtype).smallest_normal)
    while it < max_iter:
        Ktu = xp.sum(K * uu[:, :, None], axis=1)
        vv = b / xp.maximum(Ktu, tiny)
        Kv = xp.sum(K * vv[:, None, :], axis=2)
        uu = a / xp.maximum(Kv, tiny)
        it += 1
        if float(xp.max(xp.abs(uu))) > tau or float(xp.max(xp.abs(vv))) > tau:
            alpha = alpha + reg * cm.log_weights(uu, xp)
            beta = beta + reg * cm.log_weights(vv, xp)
            alpha = xp.where(xp.isfinite(alpha), alpha, xp.full_like(alpha, big))
            beta = xp.where(xp.isfinite(beta), beta, xp.full_like(beta, big))
            uu = xp.ones_like(uu)
            vv = xp.ones_like(vv)
            K = kernel(alpha, beta)
        if mon.wants(it):
            col = vv * xp.sum(K * uu[:, :, None], axis=1)
            e = float(xp.max(cm.marginal_norm(col - b, error_norm, xp)))
            al, be, k = alpha, beta, it
            if mon.update(it, e, lambda: SinkhornState(k, al + reg * cm.log_weights(uu, xp),
                                                       be + reg * cm.log_weights(vv, xp), e)):
                break
        else:
            mon.step(it)
    f = alpha + reg * cm.log_weights(uu, xp)
    g = beta + reg * cm.log_weights(vv, xp)
    return f, g, it


def _start(warm_start, B, n, m, dt, dev, xp):
    if warm_start is None:
        return xp.zeros((B, n), dtype=dt, device=dev), xp.zeros((B, m), dtype=dt, device=dev)
    f = compat.cast(warm_start[0], dt, xp)
    g = compat.cast(warm_start[1], dt, xp)
    return (xp.broadcast_to(f if f.ndim == 2 else f[None, ...], (B, n)),
            xp.broadcast_to(g if g.ndim == 2 else g[None, ...], (B, m)))


def cost_range(cost, xp):
    """An upper bound of the spread of the costs (where epsilon-scaling starts): max - min of a matrix, the cost
    across the bounding box of two point clouds."""
    if isinstance(cost, cm.DenseCost):
        return float(xp.max(cost.M) - xp.min(cost.M)) if compat.is_concrete(cost.M) else 1.0
    X, Y = cost.X, cost.Y
    if not compat.is_concrete(X):
        return 1.0
    lo = xp.minimum(xp.min(X, axis=(0, 1)), xp.min(Y, axis=(0, 1)))
    hi = xp.maximum(xp.max(X, axis=(0, 1)), xp.max(Y, axis=(0, 1)))
    diam = float(xp.sqrt(xp.sum((hi - lo) ** 2)))
    base = {0: diam ** 2, 1: diam, 2: diam * X.shape[-1] ** 0.5, 3: diam * X.shape[-1], 4: diam ** cost.p, 5: 2.0}
    return cost.cscale * base[cost.code]


def solve(ab, bb, Mb, reg, *, method, tol, max_iter, check_every, callback, callback_every, warm_start, xp,
          error_norm=1, monitor=None, phi=(1.0, 1.0), rho=(cm.INF, cm.INF), hook_for=None):
    """Potentials (f, g) of the batched problem; returns (f, g, n_iter, converged, stopped, errors).

    ``Mb`` is a batched matrix or a cost object (:class:`~optnorm.ot._common.DenseCost`, a lazy point-cloud
    cost); ``phi``/``rho`` the unbalanced damping and relaxations (balanced: 1 and inf); ``hook_for(reg)`` the
    per-half-step adjustment and the map from iterates to potentials, ``(hook, post)``, at that reg
    (translation-invariant unbalanced Sinkhorn), or None."""
    hook_for = hook_for or (lambda r: (None, None))
    errors: list = []
    cost = cm.as_cost(Mb, xp)
    B, n, m = cost.shape
    ref = ab
    mon = monitor if monitor is not None else Monitor("sinkhorn", max_iter=max_iter, tol=tol, callback=callback,
                                                      callback_every=callback_every, check_every=check_every,
                                                      warn=False)
    loga, logb = cm.log_weights(ab, xp), cm.log_weights(bb, xp)
    f, g = _start(warm_start, B, n, m, cost.dtype, compat.device(ref), xp)
    if method == "stabilized":
        if not isinstance(cost, cm.DenseCost):
            raise ValueError("sinkhorn: method='stabilized' needs a cost matrix (a PointCloud runs 'log' or "
                             "'eps_scaling')")
        n0 = len(mon.errors)
        f, g, n_done = _stabilized_loop(ab, bb, cost.M, reg, max_iter=max_iter, check_every=check_every, xp=xp,
                                        mon=mon, error_norm=error_norm)
        errors.extend(mon.errors[n0:])
        return f, g, n_done, mon.converged, mon.stopped, errors
    n_done = 0
    if method == "eps_scaling":
        # geometric decrease from the cost range to reg (at most 64 halvings), a few warm-started iterations each
        eps = min(max(cost_range(cost, xp), reg), reg * 2.0 ** 64)
        while eps > reg * 1.0001:
            f, g, k, _, _ = cm.sinkhorn_loop(loga, logb, bb, cost, eps, f, g, tol=tol, max_iter=10, check_every=10,
                                             callback=None, callback_every=1, xp=xp, errors=[], phi=_phi(rho, eps),
                                             rho=rho, hook=hook_for(eps)[0], post=hook_for(eps)[1])
            n_done += k
            eps = max(eps * 0.5, reg)
    f, g, k, converged, stopped = cm.sinkhorn_loop(
        loga, logb, bb, cost, reg, f, g, tol=tol, max_iter=max_iter, check_every=check_every, callback=callback,
        callback_every=callback_every, xp=xp, errors=errors, it0=n_done, error_norm=error_norm, phi=phi, rho=rho,
        monitor=mon, hook=hook_for(reg)[0], post=hook_for(reg)[1])
    return f, g, n_done + k, converged, stopped, errors


def _phi(rho, reg):
    """The unbalanced damping factors rho / (rho + reg) (1 for inf)."""
    return tuple(1.0 if r == cm.INF else r / (r + reg) for r in rho)


_PROBLEM = dict(a=Weights("[b] n", optional=True), b=Weights("[b] m", optional=True), M=cm.CostOrCloud("[b] n m"))


@public(**_PROBLEM, reg=Positive(), method=Choice(METHODS), tol=NonNegative(optional=True), max_iter=Int(1),
        check_every=Int(1), callback=Callback(), callback_every=Int(1), warm_start=Option(check=check_warm_start),
        error_norm=Choice((1, 2)), progress=Bool())
def sinkhorn(a: Array | None, b: Array | None, M: Array | PointCloud, reg: float, *, method: str = "log",
             tol: float | None = None, max_iter: int = 1000, check_every: int = 10,
             callback: Callable[[SinkhornState], bool] | None = None, callback_every: int = 10,
             warm_start: tuple | None = None, error_norm: int = 1, progress: bool = False) -> SinkhornResult:
    r"""Entropic optimal transport by Sinkhorn iterations (log domain by default), on a cost matrix or lazily on
    point clouds.

    Solves :math:`\min_{P1 = a, P^T1 = b,\,P\ge0} \langle P, M\rangle + \varepsilon\sum_{ij}P_{ij}\log P_{ij}`
    ("Sinkhorn Distances: Lightspeed Computation of Optimal Transport", M. Cuturi, NeurIPS 2013) through the dual
    potentials, alternating

    .. math::

        g_j = \varepsilon\log b_j - \varepsilon\,\mathrm{LSE}_i\big((f_i - M_{ij})/\varepsilon\big),\qquad
        f_i = \varepsilon\log a_i - \varepsilon\,\mathrm{LSE}_j\big((g_j - M_{ij})/\varepsilon\big).

    The potentials are kept in cost units and each update is a soft minimum
    :math:`\max_k z_k + \varepsilon\log\sum_k e^{(z_k - \max z)/\varepsilon}`, so no quantity is ever divided by
    :math:`\varepsilon` before the exponential: costs up to the dtype's range and any ``reg`` give finite
    potentials, and the per-iteration cost does not depend on ``reg`` (exponentials below the normal range are
    flushed to zero instead of computed as subnormals).

    ``M`` may be a :class:`PointCloud` instead of a matrix: the costs are then recomputed block by block in every
    half-step (an online log-sum-exp: Numba kernels for NumPy clouds, CUDA kernels for CuPy clouds) and the
    n x m matrix is never formed, so memory is :math:`O((n + m)d)`.

    Methods: ``"log"`` (log-sum-exp updates, stable for any ``reg``; fused Numba/CUDA kernels for NumPy/CuPy),
    ``"stabilized"`` (kernel-mode scaling with absorption of large scalings into the potentials, Schmitzer,
    "Stabilized Sparse Scaling Algorithms for Entropy Regularized Transport Problems", 2016; generic body only,
    cost matrices only) and ``"eps_scaling"`` (log-domain iterations with reg halved from the cost range (for
    point clouds the cost across their bounding box, as GeomLoss starts from the diameter) down to ``reg``, 10
    warm-started iterations per stage, then the log loop to ``tol``).

    Stopping: every ``check_every`` iterations the L1 (``error_norm=1``, like OTT) or L2 (``error_norm=2``, like
    POT) error of the column marginal (the row marginal is exact after each row update) is compared with ``tol``;
    it is read off the next column pass, so checking is free.  Stopping at ``max_iter`` without reaching ``tol``
    gives ``converged=False`` and a :class:`optnorm.ConvergenceWarning` (not when a callback stopped it).

    Parameters
    ----------
    a : array, shape (n,) or (batch, n), or None
    b : array, shape (m,) or (batch, m), or None
        Non-negative weights summing to 1 (re-normalised internally; zeros allowed); None is uniform.
    M : array, shape (n, m) or (batch, n, m), or PointCloud
        Finite cost matrices (a batch of problems of the same size is solved together), or a lazy
        :class:`PointCloud` cost.
    reg : float
        Entropic regularisation :math:`\varepsilon > 0` (positional, POT's order, or ``reg=``).
    method : {"log", "stabilized", "eps_scaling"}
    tol : float, optional
        Default 1e-9 for float64 problems and ``optnorm._lib.convergence.default_tol`` for lower precisions
        (1.2e-5 in float32, which 1e-9 never reaches); the value used is ``result.tol``.
    max_iter : int, default 1000
    check_every : int, default 10
    callback : callable(SinkhornState) -> bool, optional
        Called every ``callback_every`` iterations; returning True stops.
    callback_every : int, default 10
    warm_start : tuple (f, g), optional
        Initial potentials (cost units), shapes (..., n) and (..., m).
    error_norm : {1, 2}, default 1
        Norm of the marginal error used for stopping (``errors`` history).
    progress : bool, default False
        Show a progress bar (tqdm when installed, else a line on stderr) with the current error.

    Returns
    -------
    SinkhornResult
        Potentials ``f``, ``g``, ``cost`` (:math:`\langle P, M\rangle`), ``objective``, ``n_iter``,
        ``converged``, ``errors``, ``marginal_errors``, and ``plan()``.  Without a batch axis in the inputs the
        leading axis is dropped.  No autograd graph is recorded (torch inputs run under ``torch.no_grad``): for
        gradients use :func:`sinkhorn2` (cost matrices) or :func:`sinkhorn_divergence` (point clouds), whose
        VJPs need no unrolling.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import PointCloud, dist, sinkhorn
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.random((50, 2)), rng.random((40, 2))
    >>> res = sinkhorn(None, None, dist(x, y), reg=0.05)          # a, b None: uniform weights
    >>> res.converged, res.plan().shape
    (True, (50, 40))
    >>> lazy = sinkhorn(None, None, PointCloud(x, y), reg=0.05)   # the same problem, never forming M
    >>> bool(np.isclose(lazy.cost, res.cost))
    True
    """
    return solve_public("sinkhorn", a, b, M, reg, method=method, tol=tol, max_iter=max_iter,
                         check_every=check_every, callback=callback, callback_every=callback_every,
                         warm_start=warm_start, error_norm=error_norm, progress=progress)


def solve_public(fn, a, b, M, reg, *, method, tol, max_iter, check_every, callback, callback_every, warm_start,
                  error_norm, progress, reg_m=(cm.INF, cm.INF), finish=None, hook_for=None):
    """The body of :func:`sinkhorn` and :func:`optnorm.ot.sinkhorn_unbalanced` (``reg_m`` finite on a side
    relaxes that marginal; ``finish(f, g, ab, bb, cost, batched, xp)`` computes (cost, objective, errors)."""
    cm.check_batch(a, b, M, fn)
    balanced = reg_m[0] == cm.INF and reg_m[1] == cm.INF
    xp, ab, bb, cost, batched = cm.prep_problem(a, b, M, normalize=balanced)
    reg = float(reg)
    tol = cm.default_tol(tol, cost.dtype)
    ref = M.X if cm.is_cloud(M) else M
    mon = Monitor(fn, max_iter=max_iter, tol=tol, callback=callback, callback_every=callback_every,
                  progress=progress, check_every=check_every, warn=True)
    with compat.no_grad(*[x for x in (a, b, ref) if x is not None]):
        f, g, n_iter, converged, stopped, errors = solve(
            ab, bb, cost, reg, method=method, tol=tol, max_iter=max_iter, check_every=check_every, callback=callback,
            callback_every=callback_every, warm_start=warm_start, xp=xp, error_norm=error_norm, monitor=mon,
            phi=_phi(reg_m, reg), rho=reg_m, hook_for=None if hook_for is None else hook_for(ab, bb))
        mon.close()
        if finish is None:
            c, obj, errs, _ = cm.finalize(f, g, ab, bb, cost, reg, xp, row_update=True)
        else:
            c, obj, errs = finish(f, g, ab, bb, cost, reg, xp)
        return cm.package(f, g, c, obj, errs, n_iter, converged, errors, reg, tol, batched, M, xp, reg_m=reg_m)


# ---------------------------------------------------------------------------------------------- sinkhorn2 (op)
def _implicit_solve(P, fbar, gbar, xp):
    """Solve [[diag(P1), P], [P^T, diag(P^T 1)]] [x; y] = [fbar; gbar] (gauge fixed along (1, -1))."""
    return cm.implicit_solve(P, fbar, gbar, xp)


class Sinkhorn2Res(NamedTuple):
    """Residuals of sinkhorn2 (batched, compute dtype)."""
    f: Any
    g: Any
    P: Any
    M: Any
    ab: Any
    bb: Any
    reg: float
    value: str
    batched: bool
    shapes: tuple
    dtypes: tuple


def _sinkhorn2_forward(a, b, M, reg, method, tol, max_iter, value, callback=None, progress=False):
    cm.check_batch(a, b, M, "sinkhorn2")
    xp, ab, bb, Mb, batched = cm.prep(a, b, M)
    reg = float(reg)
    tol = cm.default_tol(tol, Mb.dtype)
    mon = Monitor("sinkhorn2", max_iter=max_iter, tol=tol, callback=callback, callback_every=10, progress=progress,
                  check_every=10, warn=True)
    f, g, n_iter, converged, stopped, errors = solve(
        ab, bb, Mb, reg, method=method, tol=tol, max_iter=max_iter, check_every=10, callback=callback,
        callback_every=10, warm_start=None, xp=xp, monitor=mon)
    mon.close()
    cost, obj, _, P = cm.finalize(f, g, ab, bb, Mb, reg, xp, row_update=True)
    y = cost if value == "transport" else obj
    if not batched:
        y = y[0]
    res = Sinkhorn2Res(f, g, P, Mb, ab, bb, reg, value, batched, (_shape(a), _shape(b), tuple(M.shape)),
                       (None if a is None else a.dtype, None if b is None else b.dtype, M.dtype))
    return compat.cast(y, M.dtype, xp), res


def _example2(rng, dtype):
    """A 5 x 4 problem for the generated suites, with max_iter=100 (it converges in ~20): under jax.jit every
    iteration up to max_iter is traced."""
    a, b = rng.random(5) + 0.1, rng.random(4) + 0.1
    return ((a / a.sum()).astype(dtype), (b / b.sum()).astype(dtype), rng.random((5, 4)).astype(dtype)), \
        {"reg": 0.5, "max_iter": 100}


def _shape(x):
    return None if x is None else tuple(x.shape)


_MATRIX_PROBLEM = dict(a=Weights("[b] n", optional=True), b=Weights("[b] m", optional=True), M=Cost("[b] n m"))


@public(**_MATRIX_PROBLEM, reg=Positive(), method=Choice(METHODS), tol=NonNegative(optional=True), max_iter=Int(1),
        value=Choice(("transport", "objective")), callback=Callback(), progress=Bool(), example=_example2)
def sinkhorn2(a: Array | None, b: Array | None, M: Array, *, reg: float, method: str = "log",
              tol: float | None = None, max_iter: int = 1000, value: str = "transport",
              callback: Callable[[SinkhornState], bool] | None = None, progress: bool = False) -> Array:
    r"""Entropic OT value as a differentiable function of (a, b, M); see :func:`sinkhorn` for the solver.

    Parameters
    ----------
    a, b : arrays or None
        As in :func:`sinkhorn` (None: uniform, and no cotangent).
    M : array, shape (n, m) or (batch, n, m)
        Cost matrices (for point clouds use :func:`sinkhorn_divergence`, differentiable in the points).
    reg : float
        Keyword only: the positional slots of a differentiable function are its arrays.
    method, tol, max_iter : as in :func:`sinkhorn`
    callback : callable(SinkhornState) -> bool, optional
        Called every 10 iterations; returning True stops (the VJP then assumes what convergence it has).
    progress : bool, default False
        Show a progress bar.
    value : {"transport", "objective"}
        ``"transport"`` returns :math:`\langle P^\star, M\rangle` (what POT's ``sinkhorn2`` returns);
        ``"objective"`` returns the entropic objective
        :math:`\langle P^\star, M\rangle + \varepsilon\sum P^\star\log P^\star = \langle f, a\rangle + \langle g, b\rangle`.

    Returns
    -------
    array, shape () or (batch,)

    Notes
    -----
    VJP, never by unrolling the iterations:

    - ``value="objective"``: envelope (Danskin) theorem, :math:`\bar M = \bar y P`,
      :math:`\bar a = \bar y (f - \langle f, a\rangle)`, :math:`\bar b = \bar y(g - \langle g, b\rangle)` (the
      potentials, centred so that the gradient is that of the internally normalised weights).
    - ``value="transport"``: implicit differentiation of the optimality conditions (the envelope gradient is
      wrong for the linear term): one conjugate-gradient solve with
      :math:`\begin{pmatrix}\mathrm{diag}(P1) & P\\ P^T & \mathrm{diag}(P^T1)\end{pmatrix}`.

    Both assume convergence; with ``converged=False`` they are approximate.  Under ``jax.jit`` (traced inputs)
    no convergence test can run: exactly ``max_iter`` iterations are traced, so pick a moderate ``max_iter``
    there (and prefer ``value="objective"``: the transport VJP's conjugate gradient is also unrolled).

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import sinkhorn2
    >>> M = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> float(sinkhorn2(np.array([0.5, 0.5]), np.array([0.5, 0.5]), M, reg=0.01)) < 1e-10
    True
    """
    return _sinkhorn2_forward(a, b, M, reg, method, tol, max_iter, value, callback, progress)[0]


def sinkhorn2_fwd(a, b, M, *, reg, method="log", tol=None, max_iter=1000, value="transport", callback=None,
                  progress=False):
    return _sinkhorn2_forward(a, b, M, reg, method, tol, max_iter, value, callback, progress)


def _center(grad, w, xp):
    """Gradient of the internally normalised weights: subtract the w-weighted mean (finite part only)."""
    gz = xp.where(w > 0, grad, xp.zeros_like(grad))
    return grad - xp.sum(gz * w, axis=-1, keepdims=True)


def sinkhorn2_bwd(res: Sinkhorn2Res, dy):
    f, g, P, Mb, ab, bb, reg = res.f, res.g, res.P, res.M, res.ab, res.bb, res.reg
    xp = compat.array_namespace(P)
    dy = compat.cast(dy, P.dtype, xp)
    if not res.batched:
        dy = xp.reshape(dy, (1,))
    dyb = dy[:, None]
    if res.value == "objective":
        # zero-weight atoms have f = -inf: use the soft c-transform there (the finite part of the potential)
        fc = -cm.softmin_xp(Mb, g, reg, 2, xp)
        gc = -cm.softmin_xp(Mb, f, reg, 1, xp)
        ff = xp.where(ab > 0, f, fc)
        gg = xp.where(bb > 0, g, gc)
        da = dyb * _center(ff, ab, xp)
        db = dyb * _center(gg, bb, xp)
        dM = dy[:, None, None] * P
    else:
        Pbar = dy[:, None, None] * Mb                       # <P, M>: plan cotangent plus the direct term
        PP = P * Pbar
        x, y = _implicit_solve(P, xp.sum(PP, axis=2) / reg, xp.sum(PP, axis=1) / reg, xp)
        dM = P * (x[:, :, None] + y[:, None, :]) - PP / reg + dy[:, None, None] * P
        da = _center(reg * x, ab, xp)
        db = _center(reg * y, bb, xp)
    if not res.batched:
        dM = dM[0, ...]
    sa, sb, _ = res.shapes
    if sa is not None and len(sa) == 1:                     # one weight vector shared by the batch
        da = xp.sum(da, axis=0)
    if sb is not None and len(sb) == 1:
        db = xp.sum(db, axis=0)
    ta, tb, tM = res.dtypes
    return (None if sa is None else compat.cast(da, ta, xp), None if sb is None else compat.cast(db, tb, xp),
            compat.cast(dM, tM, xp))


vjp(sinkhorn2, sinkhorn2_fwd, sinkhorn2_bwd, validate=True)
