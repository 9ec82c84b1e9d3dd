"""Pieces shared by the optimal-transport modules (no module imports a sibling's private names).

- magnitudes: :func:`pow2_scale`, the power of two that brings inputs near 1 before anything is squared
  (an exact rescaling: the answers are multiplied back);
- 1-D transport between sorted supports (:func:`sort_support`, :func:`w1d_sorted` and their gradients), used
  by :mod:`optnorm.ot.oned` and :mod:`optnorm.ot.sliced`, with the dispatched value :data:`w1d_value`;
- random generators from a ``seed`` (:func:`rng`);
- log-domain Sinkhorn shared by :mod:`optnorm.ot.sinkhorn` and :mod:`optnorm.ot.sns`: the result classes, the
  dispatched half-step :data:`softmin`, the iteration driver :func:`sinkhorn_loop`, :func:`finalize` and the
  batched conjugate gradient :func:`cg`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._lib import compat, convergence
from .._lib.api import public_class
from .._lib.dispatch import Dispatcher, numpy_float
from .._lib.roles import Cost
from .._lib.solver import Monitor, Result


# ---------------------------------------------------------------------------------------------- magnitudes
def pow2_scale(xp, *items):
    """A power of two ``t`` with ``max |x| / t`` in [1, 2) (1 for all-zero or non-finite input), as an array.

    Dividing by a power of two is exact (away from subnormals), so a computation can run on ``x / t`` and
    rescale its answer: squares and p-th powers of the scaled values neither overflow nor underflow.
    ``items`` are ``(array, n_core)`` pairs: the max is taken over the last ``n_core`` axes of each array
    (``None``: over all of them), so ``t`` is per problem of a batch; the results broadcast together.
    """
    top = None
    for x, core in items:
        if x is None:
            continue
        a = xp.abs(x)
        if core is None:
            a = xp.max(a)
        elif core:
            a = xp.max(a, axis=tuple(range(-core, 0)))
        top = a if top is None else xp.maximum(top, a)
    ok = (top > 0) & (top < math.inf)
    safe = xp.where(ok, top, xp.ones_like(top))
    return xp.where(ok, 2.0 ** xp.floor(xp.log2(safe)), xp.ones_like(top))


def np_dtype(x):
    """The NumPy dtype named like an array's dtype (float32/float64 of any library)."""
    return np.dtype(str(x.dtype).rsplit(".", 1)[-1])


def rng(seed):
    """A NumPy Generator from a validated seed (None, an int or a Generator)."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------- 1-D transport
def acc_dtype(xp, dtype):
    """float64 for cumulative weights where the library has it (float32 cumulative sums drift)."""
    return getattr(xp, "float64", dtype)


def sort_support(values, weights, xp):
    """Sort ``values`` along the last axis; return (sorted values, normalised cumulative weights, sort index).

    Cumulative weights are accumulated in float64 and divided by their last entry, so the last breakpoint is
    exactly 1 on both sides (which makes the merge end cleanly).
    """
    n = values.shape[-1]
    idx = xp.argsort(values, axis=-1, stable=False)
    vs = xp.take_along_axis(values, idx, axis=-1)
    acc = acc_dtype(xp, values.dtype)
    if weights is None:
        cum = xp.arange(1, n + 1, dtype=acc, device=compat.device(values)) / n
        cum = xp.broadcast_to(cum, vs.shape)
    else:
        ws = xp.take_along_axis(compat.cast(weights, acc, xp), idx, axis=-1)
        cum = xp.cumulative_sum(ws, axis=-1)
        cum = cum / cum[..., -1:]
    return vs, cum, idx


def pow_cost(d, p, xp):
    ad = xp.abs(d)
    if p == 1.0:
        return ad
    if p == 2.0:
        return d * d
    return ad ** p


def pow_grad(d, p, xp):
    """d/dd |d|^p, with sign(0) = 0 at p = 1."""
    if p == 1.0:
        return xp.sign(d)
    if p == 2.0:
        return 2.0 * d
    return p * xp.sign(d) * xp.abs(d) ** (p - 1.0)


def w1d_sorted(us, A, vs, B, p, xp, need_grad=False):
    """W_p^p between sorted supports with cumulative breakpoints A (..., n), B (..., m) (last entries 1).

    Returns ``wpp`` (...,) and, if ``need_grad``, the gradients w.r.t. the sorted positions and the
    breakpoints ``(g_us, g_vs, h_A, h_B)`` (h_A[..., -1] = h_B[..., -1] = 0: the last breakpoints are fixed).
    """
    n, m = us.shape[-1], vs.shape[-1]
    batch = tuple(us.shape[:-1])
    dev = compat.device(us)
    Q = xp.concat([A, B], axis=-1)
    order = xp.argsort(Q, axis=-1, stable=True)          # ties: A's breakpoint first
    q = xp.take_along_axis(Q, order, axis=-1)
    isA = xp.astype(order < n, xp.int64)
    i_k = xp.cumulative_sum(isA, axis=-1) - isA           # number of A breakpoints before position k
    j_k = xp.cumulative_sum(1 - isA, axis=-1) - (1 - isA)
    i_k = xp.clip(i_k, 0, n - 1)
    j_k = xp.clip(j_k, 0, m - 1)
    zero = xp.zeros((*batch, 1), dtype=q.dtype, device=dev)
    dq = compat.cast(q - xp.concat([zero, q[..., :-1]], axis=-1), us.dtype, xp)
    d = xp.take_along_axis(us, i_k, axis=-1) - xp.take_along_axis(vs, j_k, axis=-1)
    cost = pow_cost(d, p, xp)
    wpp = xp.sum(dq * cost, axis=-1)
    if not need_grad:
        return wpp, None
    inv = xp.argsort(order, axis=-1, stable=False)        # position of each breakpoint in sorted order
    posA, posB = inv[..., :n], inv[..., n:]
    c = dq * pow_grad(d, p, xp)
    Cc = xp.cumulative_sum(c, axis=-1)                    # sum of c over the intervals of atom i
    zc = xp.zeros((*batch, 1), dtype=c.dtype, device=dev)
    atA = xp.take_along_axis(Cc, posA, axis=-1)
    atB = xp.take_along_axis(Cc, posB, axis=-1)
    g_us = atA - xp.concat([zc, atA[..., :-1]], axis=-1)
    g_vs = -(atB - xp.concat([zc, atB[..., :-1]], axis=-1))
    # dW/dq_k = cost_k - cost_{k+1}; the breakpoint A_i sits at q_{posA_i}
    cost_next = xp.concat([cost[..., 1:], xp.zeros((*batch, 1), dtype=cost.dtype, device=dev)], axis=-1)
    dWdq = cost - cost_next
    h_A = xp.take_along_axis(dWdq, posA, axis=-1)
    h_B = xp.take_along_axis(dWdq, posB, axis=-1)
    notlastA = xp.concat([xp.ones((*batch, n - 1), dtype=h_A.dtype, device=dev),
                          xp.zeros((*batch, 1), dtype=h_A.dtype, device=dev)], axis=-1)
    notlastB = xp.concat([xp.ones((*batch, m - 1), dtype=h_B.dtype, device=dev),
                          xp.zeros((*batch, 1), dtype=h_B.dtype, device=dev)], axis=-1)
    return wpp, (g_us, g_vs, h_A * notlastA, h_B * notlastB)


def weight_grad(h, cum, xp):
    """Gradient w.r.t. the (sorted, normalised-inside) weights from dW/d(normalised breakpoints) ``h``.

    Breakpoints are A_i / A_last, so the result is the potential f_j = sum_{i>=j} h_i minus its weighted mean
    sum_i h_i A_i: the exact derivative of the internally normalised function (a centred dual potential).
    """
    h = compat.cast(h, cum.dtype, compat.array_namespace(h))
    f = xp.flip(xp.cumulative_sum(xp.flip(h, axis=-1), axis=-1), axis=-1)
    return f - xp.sum(h * cum, axis=-1, keepdims=True)


def unsort(g, idx, xp):
    return xp.take_along_axis(g, xp.argsort(idx, axis=-1, stable=False), axis=-1)


w1d_value = Dispatcher("ot.wasserstein_1d", serves=("ot.wasserstein_1d", "ot.sliced_wasserstein"))


@w1d_value.generic
def _w1d_generic(u, v, uw, vw, *, p, xp):
    us, A, _ = sort_support(u, uw, xp)
    vs, B, _ = sort_support(v, vw, xp)
    return w1d_sorted(us, A, vs, B, p, xp)[0]


@w1d_value.numba(when=lambda u, v, uw, vw, **kw: numpy_float(u, v))
def _w1d_numba(u, v, uw, vw, *, p, xp):
    from .._numba import ot as nb

    return nb.w1d_value(u, v, uw, vw, p)


# ---------------------------------------------------------------------------------------------- Sinkhorn
@public_class
@dataclass(frozen=True)
class SinkhornState:
    """What a Sinkhorn-family callback sees every ``callback_every`` iterations (one convention for every solver of
    :mod:`optnorm._lib.solver`: ``n_iter`` and ``error``, plus the potentials).

    Attributes
    ----------
    n_iter : int
        Iterations done (``iteration`` is an alias).
    f : array
        The current row potential in cost units (with a leading batch axis for :func:`optnorm.ot.sinkhorn`, of the
        current problem for :func:`optnorm.ot.sinkhorn_newton_sparse`).
    g : array
        The current column potential, likewise.
    error : float
        The stopping criterion (max over the batch), compared with ``tol``.
    """
    n_iter: int
    f: Any
    g: Any
    error: float

    @property
    def iteration(self) -> int:
        """Alias of ``n_iter`` (the name before the solvers shared one convention)."""
        return self.n_iter


@public_class
@dataclass(frozen=True, repr=False)
class SinkhornResult(Result):
    """Result of :func:`optnorm.ot.sinkhorn`, :func:`optnorm.ot.sinkhorn_unbalanced` (and
    :func:`optnorm.ot.sinkhorn_newton_sparse`).

    Attributes
    ----------
    f, g : arrays (..., n) / (..., m)
        Dual potentials in cost units, :math:`P = \\exp((f \\oplus g - M)/\\varepsilon)` (``-inf`` where a weight
        is 0).  POT's ``log_u``, ``log_v`` are ``f / reg``, ``g / reg`` (balanced) or
        ``(f - reg log a) / reg``, ``(g - reg log b) / reg`` (unbalanced, reference measure :math:`a\\otimes b`).
    cost : array (...,)
        Transport cost :math:`\\langle P, M\\rangle` (what POT's ``sinkhorn2`` returns).
    objective : array (...,)
        The optimised objective at the solution: :math:`\\langle P, M\\rangle + \\varepsilon\\sum P\\log P`
        (balanced), or the unbalanced objective of :func:`optnorm.ot.sinkhorn_unbalanced` (its dual value).
    n_iter : int
        Iterations done (one iteration = one column and one row update; a Newton step for SNS).
    converged : bool
        Whether every problem of the batch reached ``tol``.
    errors : list of float
        History of the stopping criterion (max over the batch), one entry per check or callback.
    marginal_errors : tuple of arrays (...,)
        Final L1 errors of the two marginal conditions per problem: :math:`(\\|P1 - a\\|_1, \\|P^T1 - b\\|_1)`
        (balanced); for unbalanced transport the residuals of the optimality conditions
        :math:`P1 = a\\,e^{-f_a/\\rho_1}` and :math:`P^T1 = b\\,e^{-g_b/\\rho_2}`.
    reg : float
        The entropic regularisation :math:`\\varepsilon`.
    tol : float
        The tolerance used (the dtype's default when none was given).
    M : array or PointCloud
        The cost (kept to build the plan on demand; not in the repr).
    reg_m : tuple of float or None
        Marginal relaxations :math:`(\\rho_1, \\rho_2)` (inf: a hard marginal); None for balanced transport.
    """
    f: Any
    g: Any
    cost: Any
    objective: Any
    n_iter: int
    converged: bool
    errors: list
    marginal_errors: tuple
    reg: float
    tol: float
    M: Any = field(repr=False)
    reg_m: tuple | None = None

    def plan(self):
        """The transport plan :math:`\\exp((f_i + g_j - M_{ij})/\\varepsilon)`, shape (..., n, m) (a point-cloud
        cost is materialised here)."""
        M = self.M.matrix() if is_cloud(self.M) else self.M
        xp = compat.array_namespace(M)
        return xp.exp((self.f[..., :, None] + self.g[..., None, :] - M) / self.reg)


SINKHORN_FUNCTIONS = ("ot.sinkhorn", "ot.sinkhorn2", "ot.sinkhorn_newton_sparse", "ot.sinkhorn_unbalanced",
                      "ot.sinkhorn_unbalanced2", "ot.barycenter")
SINKHORN_TOL = 1e-9  # float64 default; other dtypes get convergence.default_tol(SINKHORN_TOL, dtype)
INF = math.inf


def is_cloud(M) -> bool:
    """A lazy point-cloud cost (:class:`optnorm.ot.PointCloud`) rather than a matrix."""
    return getattr(M, "_optnorm_cloud", False) is True


def log_weights(w, xp):
    """log w with log 0 = -inf (no warning)."""
    pos = w > 0
    return xp.where(pos, xp.log(xp.where(pos, w, xp.ones_like(w))), xp.full_like(w, -math.inf))


def lse(z, axis, xp, keepdims=False):
    """log sum exp along ``axis`` (rows of -inf give -inf)."""
    mx = xp.max(z, axis=axis, keepdims=True)
    mx = xp.where(xp.isfinite(mx), mx, xp.zeros_like(mx))
    s = xp.log(xp.sum(xp.exp(z - mx), axis=axis, keepdims=True)) + mx
    return s if keepdims else xp.squeeze(s, axis=axis)


# Log-domain Sinkhorn in cost units: the potentials f, g are never divided by reg, so nothing overflows however
# small reg is relative to M.  The half-steps are soft minima,
#   rows:    softmin_rows(g)_i = reg * log sum_j exp((g_j - M_ij) / reg)
#   columns: softmin_cols(f)_j = reg * log sum_i exp((f_i - M_ij) / reg)
# each computed as max z + reg * log sum exp((z - max z) / reg), z = h - M.  One iteration is
#   g = reg log b - phi2 softmin_cols(f),   f = reg log a - phi1 softmin_rows(g)
# with phi = 1 (balanced) or phi_k = rho_k / (rho_k + reg) (unbalanced, KL marginals of weight rho_k).
def softmin_xp(M, h, reg, axis, xp):
    """The half-step on any Array-API library (``axis=2``: rows, h = g (B, m); ``axis=1``: columns, h = f)."""
    z = (h[:, None, :] if axis == 2 else h[:, :, None]) - M
    mx = xp.max(z, axis=axis, keepdims=True)
    mx = xp.where(mx > -math.inf, mx, xp.zeros_like(mx))
    s = xp.sum(xp.exp((z - mx) / reg), axis=axis)
    return xp.squeeze(mx, axis=axis) + reg * xp.log(s)


# ``iterations``: ``n_steps`` Sinkhorn iterations from (f, g), then one column pass ``lc = softmin_cols(f)``
# (what the stopping test reads); returns (f, g, lc).  Batched: M (B, n, m), f (B, n), g (B, m).
iterations = Dispatcher("ot.sinkhorn_iterations", serves=SINKHORN_FUNCTIONS)


@iterations.generic
def _iterations_generic(M, f, g, *, loga, logb, reg, n_steps, xp, phi=(1.0, 1.0), hook=None, cache=None):
    ra, rb = reg * loga, reg * logb
    p1, p2 = phi
    for _ in range(n_steps):
        g = rb - p2 * softmin_xp(M, f, reg, 1, xp)
        if hook is not None:
            g = hook("cols", g, f)
        f = ra - p1 * softmin_xp(M, g, reg, 2, xp)
        if hook is not None:
            f = hook("rows", f, g)
    return f, g, softmin_xp(M, f, reg, 1, xp)


@iterations.numba(when=lambda M, f, g, **kw: numpy_float(M, f, g))
def _iterations_numba(M, f, g, *, loga, logb, reg, n_steps, xp, phi=(1.0, 1.0), hook=None, cache=None):
    from .._numba import ot as nb

    return nb.sinkhorn_iterations(M, f, g, loga, logb, reg, n_steps, phi, hook, cache)


@iterations.cuda(when=lambda M, f, g, **kw: str(M.dtype) in ("float32", "float64") and M.dtype == f.dtype == g.dtype)
def _iterations_cuda(M, f, g, *, loga, logb, reg, n_steps, xp, phi=(1.0, 1.0), hook=None, cache=None):
    import cupy

    from .._cuda import launch

    M = cupy.ascontiguousarray(M)
    Bn, n, m = M.shape
    scal = np.dtype(str(M.dtype)).type(reg)

    def half(h, axis):
        h = cupy.ascontiguousarray(h)
        if axis == 2:
            out = cupy.empty((Bn, n), dtype=M.dtype)
            launch.rows("ot", "softmin_rows", M.dtype, Bn * n, (M, h, out, Bn, n, m, scal))
        else:
            out = cupy.empty((Bn, m), dtype=M.dtype)
            launch.grid2d("ot", "softmin_cols", M.dtype, 8 * Bn, m, (M, h, out, Bn, n, m, scal))
        return out

    ra, rb = reg * loga, reg * logb
    p1, p2 = phi
    for _ in range(n_steps):
        g = rb - p2 * half(f, 1)
        if hook is not None:
            g = hook("cols", g, f)
        f = ra - p1 * half(g, 2)
        if hook is not None:
            f = hook("rows", f, g)
    return f, g, half(f, 1)


half_step = Dispatcher("ot.sinkhorn_half_step", serves=SINKHORN_FUNCTIONS)


@half_step.generic
def _half_generic(M, h, *, reg, axis, xp):
    return softmin_xp(M, h, reg, axis, xp)


@half_step.numba(when=lambda M, h, **kw: numpy_float(M, h))
def _half_numba(M, h, *, reg, axis, xp):
    from .._numba import ot as nb

    M = np.ascontiguousarray(M)
    out = np.empty((M.shape[0], M.shape[1] if axis == 2 else M.shape[2]), dtype=M.dtype)
    (nb.softmin_rows if axis == 2 else nb.softmin_cols)(M, np.ascontiguousarray(h), float(reg), out)
    return out


class DenseCost:
    """A batch of cost matrices (B, n, m) behind the interface of :class:`optnorm.ot._lazy.LazyCost`."""

    def __init__(self, M, xp):
        self.M, self.xp = M, xp
        self.dtype = M.dtype
        self.shape = tuple(M.shape)
        self.cache: dict = {}       # what the fast path keeps from block to block of one solve (absorbed kernel)

    def iterations(self, f, g, *, loga, logb, reg, n_steps, phi=(1.0, 1.0), hook=None, xp=None):
        return iterations(self.M, f, g, loga=loga, logb=logb, reg=reg, n_steps=n_steps, xp=self.xp, phi=phi,
                          hook=hook, cache=self.cache)

    def rows(self, h, reg):
        return half_step(self.M, h, reg=reg, axis=2, xp=self.xp)

    def cols(self, h, reg):
        return half_step(self.M, h, reg=reg, axis=1, xp=self.xp)

    def stats(self, f, g, reg):
        P = self.xp.exp((f[:, :, None] + g[:, None, :] - self.M) / reg)
        xp = self.xp
        return xp.sum(P, axis=2), xp.sum(P, axis=1), xp.sum(xp.sum(P * self.M, axis=2), axis=1)

    def dense(self):
        return self.M


def as_cost(M, xp):
    """A :class:`DenseCost` for a batched matrix; cost objects pass through."""
    return M if hasattr(M, "iterations") else DenseCost(M, xp)


def marginal_norm(r, p, xp):
    return xp.sum(xp.abs(r), axis=-1) if p == 1 else xp.sqrt(xp.sum(r * r, axis=-1))


def _col_marginal(g, lc, reg, xp):
    """Column sums of the plan after a row update, exp((g + lc)/reg), its exponent clamped so that a far-off
    iterate gives a large finite error instead of inf."""
    return xp.exp(xp.clip((g + lc) / reg, None, 300.0))


def relaxed_target(w, logw, h, reg, rho, xp):
    """The marginal the optimality condition asks for: ``w`` (balanced, rho = inf) or
    :math:`w\\,e^{-(h - \\varepsilon\\log w)/\\rho}` (KL-relaxed; h the potential in cost units, 0 where w = 0)."""
    if rho == math.inf:
        return w
    pos = w > 0
    z = xp.zeros_like(h)
    e = -(xp.where(pos, h, z) - reg * xp.where(pos, logw, z)) / rho
    return xp.where(pos, w * xp.exp(xp.clip(e, None, 300.0)), xp.zeros_like(w))


def sinkhorn_loop(loga, logb, b, M, reg, f, g, *, tol, max_iter, check_every, callback, callback_every, xp,
                  errors, it0=0, error_norm=1, phi=(1.0, 1.0), rho=(INF, INF), monitor=None, hook=None,
                  post=None):
    """Log-domain Sinkhorn iterations from potentials (f, g) in cost units, in blocks between stopping tests.

    ``M`` is a batched cost matrix (B, n, m) or a cost object (:class:`DenseCost`, a lazy point-cloud cost).
    Every ``check_every`` iterations the column condition's error (read off the column pass, so free) is
    compared with ``tol``; a callback runs every ``callback_every`` iterations.  ``monitor`` (an
    :class:`optnorm._lib.solver.Monitor`) drives stopping, callbacks and progress; without one a silent
    monitor is made.  Returns ``(f, g, n_iter, converged, stopped_by_callback)``; ``errors`` gets the error
    history.  Traced (jit) inputs run ``max_iter`` iterations.  ``hook`` adjusts each half-step (see
    :data:`iterations`); ``post(f, g) -> (f, g)`` maps the iterate to the potentials that are checked and returned
    (translation-invariant Sinkhorn iterates up to a translation).
    """
    post = post or (lambda f_, g_: (f_, g_))
    cost = as_cost(M, xp)
    mon = monitor if monitor is not None else Monitor("sinkhorn", max_iter=max_iter, tol=tol, callback=callback,
                                                      callback_every=callback_every, check_every=check_every,
                                                      warn=False)
    ref = cost.M if isinstance(cost, DenseCost) else f
    if not compat.is_concrete(ref):
        f, g, _ = cost.iterations(f, g, loga=loga, logb=logb, reg=reg, n_steps=max_iter, phi=phi, hook=hook,
                                  xp=xp)
        mon.step(max_iter)
        mon.warn = False
        f, g = post(f, g)
        return f, g, max_iter, False, False
    it = 0
    n0 = len(mon.errors)
    while True:
        nxt = min(max_iter, (it // check_every + 1) * check_every)
        if callback is not None:
            nxt = min(nxt, (it // callback_every + 1) * callback_every)
        f, g, lc = cost.iterations(f, g, loga=loga, logb=logb, reg=reg, n_steps=nxt - it, phi=phi, hook=hook,
                                   xp=xp)
        it = nxt
        if mon.wants(it):
            pf, pg = post(f, g)
            if pf is not f:                                            # a translation t shifts the column pass
                fin = f > -math.inf
                lc = lc + xp.max(xp.where(fin, pf - xp.where(fin, f, pf), xp.full_like(f, -math.inf)), axis=1,
                                 keepdims=True)
            target = relaxed_target(b, logb, pg, reg, rho[1], xp)
            e = float(xp.max(marginal_norm(_col_marginal(pg, lc, reg, xp) - target, error_norm, xp)))
            snap_f, snap_g, k = pf, pg, it0 + it
            if mon.update(it, e, lambda: SinkhornState(k, snap_f, snap_g, e)):
                break
        else:
            mon.step(it)
        if it >= max_iter:
            break
    errors.extend(mon.errors[n0:])
    f, g = post(f, g)
    return f, g, it, mon.converged, mon.stopped


def finalize(f, g, ab, bb, Mb, reg, xp, row_update=False):
    """Cost, objective and marginal errors of the plan of potentials (f, g) (batched), and the plan.

    ``row_update``: f is the row update of g (every Sinkhorn method ends on one), so the plan is
    ``a_i softmax_j((g_j - M_ij) / reg)``, computed from the row maxima: rows sum to a exactly and no entry
    exceeds a_i even where |M| / reg is beyond float64 precision (there exp((f + g - M) / reg) is round-off noise
    of potentials of magnitude |M|, and could overflow).  A lazy point-cloud cost gives ``P = None`` (its
    statistics are computed block-wise).
    """
    if not isinstance(Mb, DenseCost) and hasattr(Mb, "stats"):
        row, col, cost = Mb.stats(f, g, reg)
        P = None
    else:
        Mb = Mb.M if isinstance(Mb, DenseCost) else Mb
        if row_update:
            z = g[:, None, :] - Mb
            mx = xp.max(z, axis=2, keepdims=True)
            mx = xp.where(mx > -math.inf, mx, xp.zeros_like(mx))
            E = xp.exp((z - mx) / reg)
            P = ab[:, :, None] * (E / xp.sum(E, axis=2, keepdims=True))
        else:
            P = xp.exp((f[:, :, None] + g[:, None, :] - Mb) / reg)
        row = xp.sum(P, axis=2)
        col = xp.sum(P, axis=1)
        cost = xp.sum(xp.sum(P * Mb, axis=-1), axis=-1)
    err_a = xp.sum(xp.abs(row - ab), axis=-1)
    err_b = xp.sum(xp.abs(col - bb), axis=-1)
    # <P, M> + reg sum P log P = <P1, f> + <P^T 1, g>   (0 * -inf := 0 for zero weights)
    objective = dot0(row, f, xp) + dot0(col, g, xp)
    return cost, objective, (err_a, err_b), P


def dot0(w, h, xp):
    """sum w * h over the last axis with 0 * (-inf) = 0."""
    return xp.sum(w * xp.where(w > 0, h, xp.zeros_like(h)), axis=-1)


def cg(matvec, rhs, precond, xp, *, tol=1e-12, max_iter=500):
    """Batched preconditioned conjugate gradient (rhs (B, k)); stops when every residual is below tol * |rhs|."""
    x = xp.zeros_like(rhs)
    r = rhs
    z = precond(r)
    p = z
    rz = xp.sum(r * z, axis=-1, keepdims=True)
    bnorm = xp.sqrt(xp.sum(rhs * rhs, axis=-1)) + 1e-300
    concrete = compat.is_concrete(rhs)
    for _ in range(max_iter):
        Ap = matvec(p)
        pAp = xp.sum(p * Ap, axis=-1, keepdims=True)
        alpha = rz / xp.where(pAp != 0, pAp, xp.ones_like(pAp))
        x = x + alpha * p
        r = r - alpha * Ap
        if concrete and float(xp.max(xp.sqrt(xp.sum(r * r, axis=-1)) / bnorm)) < tol:
            break
        z = precond(r)
        rz_new = xp.sum(r * z, axis=-1, keepdims=True)
        beta = rz_new / xp.where(rz != 0, rz, xp.ones_like(rz))
        p = z + beta * p
        rz = rz_new
    return x


def implicit_solve(P, fbar, gbar, xp, kappa=(1.0, 1.0)):
    """Solve [[diag(k1 P1), P], [P^T, diag(k2 P^T 1)]] [x; y] = [fbar; gbar] by preconditioned CG (batched).

    The Hessian of the Sinkhorn optimality conditions: kappa_k = 1 + reg / rho_k (1 for a hard marginal).  With
    both marginals hard the matrix is singular along (1, -1) (potentials are defined up to (f + t, g - t)): the
    gauge is fixed by adding that direction's projector, and the right-hand side is orthogonal to it.
    """
    n = P.shape[1]
    r = xp.sum(P, axis=2) * kappa[0]
    c = xp.sum(P, axis=1) * kappa[1]
    k = n + P.shape[2]
    gauge = kappa[0] == 1.0 and kappa[1] == 1.0
    rho = xp.mean(r, axis=-1, keepdims=True) if gauge else xp.zeros_like(r[:, :1])
    zvec = xp.concat([xp.ones_like(r), -xp.ones_like(c)], axis=-1) / math.sqrt(k)
    diag = xp.concat([r, c], axis=-1) + rho / k
    diag = xp.where(diag > 0, diag, xp.ones_like(diag))

    def matvec(w):
        x, y = w[:, :n], w[:, n:]
        top = r * x + xp.sum(P * y[:, None, :], axis=2)
        bot = xp.sum(P * x[:, :, None], axis=1) + c * y
        out = xp.concat([top, bot], axis=-1)
        return out + rho * zvec * xp.sum(zvec * w, axis=-1, keepdims=True) if gauge else out

    # CG ends in k steps in exact arithmetic: 4k + 10 leave room for round-off (and bound what jit unrolls)
    sol = cg(matvec, xp.concat([fbar, gbar], axis=-1), lambda w: w / diag, xp, max_iter=min(500, 4 * k + 10))
    return sol[:, :n], sol[:, n:]


# ---------------------------------------------------------------------------------------------- Sinkhorn problems
class CostOrCloud(Cost):
    """A cost matrix ``(..., n, m)`` or a lazy :class:`optnorm.ot.PointCloud` (whose clouds' sizes bind ``n`` and
    ``m``, and whose batch shape binds the optional batch dimension)."""

    @property
    def doc(self):
        return f"cost matrix of shape ({self.spec.text()}) or PointCloud"

    def convert(self, value, name, call):
        return value if is_cloud(value) else super().convert(value, name, call)

    def check(self, value, name, call):
        if not is_cloud(value):
            return super().check(value, name, call)
        if call.xp is not None and not compat.same_namespace(value.X, *[v for v in call.values.values()
                                                                        if compat.is_array(v)]):
            raise call.error(TypeError, f"{name} is a PointCloud of {compat.backend_name(value.X)} arrays but the "
                                        f"weights are not: convert them to one library first")
        shape = tuple(value.shape)
        sp = self.spec
        lead = shape[:-2]
        if len(lead) > len(sp.optional):
            raise call.error(ValueError, f"{name} is a PointCloud of batch shape {lead}: at most "
                                         f"{len(sp.optional)} batch dimension(s) here")
        named = list(sp.optional[len(sp.optional) - len(lead):]) + list(sp.dims)
        for dim, s in zip(named, shape):
            if isinstance(dim, str) and dim != "*":
                call.bind_dim(dim, s, name, shape)
        return value


def check_batch(a, b, M, fn):
    """A batch of weights needs a batch of costs (the roles bind the batch size when both have one)."""
    mnd = len(M.shape)
    for nm, w in (("a", a), ("b", b)):
        if w is not None and w.ndim == 2 and mnd != 3:
            raise ValueError(f"{fn}: {nm} has shape {tuple(w.shape)} but M has shape {tuple(M.shape)}: a batch of "
                             f"weights needs a batch of cost matrices of the same size")


def prep(a, b, M):
    """Batched (B, n, m) arrays in the compute dtype (float64 if any input is), weights re-normalised."""
    xp, ab, bb, cost, batched = prep_problem(a, b, M)
    return xp, ab, bb, cost.M, batched


def prep_problem(a, b, M, *, normalize=True):
    """(xp, a (B, n), b (B, m), cost object, batched) in the compute dtype (float64 if any input is).

    ``a``/``b`` None are uniform (1/n, 1/m); ``normalize`` divides the weights by their totals (balanced
    transport); ``M`` is a matrix (a :class:`DenseCost` is returned) or a PointCloud (its lazy cost)."""
    cloud = is_cloud(M)
    ref = M.X if cloud else M
    xp = compat.array_namespace(*[x for x in (a, b, ref) if x is not None])
    cdt = compat.compute_dtype(ref, xp)
    for x in (a, b):
        if x is not None and x.dtype == getattr(xp, "float64", None):
            cdt = x.dtype
    shape = tuple(M.shape)
    batched = len(shape) == 3
    B = shape[0] if batched else 1
    n, m = shape[-2], shape[-1]
    if cloud:
        cost = M.lazy(cdt)
    else:
        Mb = compat.cast(M, cdt, xp)
        cost = DenseCost(Mb if batched else Mb[None, ...], xp)
    dev = compat.device(ref)

    def weights(w, k):
        if w is None:
            return xp.full((B, k), 1.0 / k, dtype=cdt, device=dev)
        w = compat.cast(w, cdt, xp)
        w = xp.broadcast_to(w if w.ndim == 2 else w[None, :], (B, k))
        return w / xp.sum(w, axis=-1, keepdims=True) if normalize else w

    return xp, weights(a, n), weights(b, m), cost, batched


def warn_if_not_converged(fn, M, converged, stopped, n_iter, errors, tol):
    ref = M.X if is_cloud(M) else M
    if not converged and not stopped and compat.is_concrete(ref):
        convergence.warn_not_converged(fn, n_iter, errors[-1] if errors else None, tol, stacklevel=4)


def default_tol(tol, dtype):
    return convergence.default_tol(SINKHORN_TOL, dtype) if tol is None else float(tol)


def make_result(f, g, ab, bb, Mb, reg, tol, n_iter, converged, errors, batched, M, xp, row_update=False):
    cost, obj, (ea, eb), _ = finalize(f, g, ab, bb, Mb, reg, xp, row_update)
    return package(f, g, cost, obj, (ea, eb), n_iter, converged, errors, reg, tol, batched, M, xp)


def package(f, g, cost, obj, errs, n_iter, converged, errors, reg, tol, batched, M, xp, reg_m=(INF, INF)):
    """A :class:`SinkhornResult` in the dtype of the inputs, the batch axis dropped for unbatched problems."""
    ea, eb = errs
    if not batched:
        f, g, cost, obj, ea, eb = f[0, ...], g[0, ...], cost[0], obj[0], ea[0], eb[0]
    dt = M.dtype
    cast = lambda z: compat.cast(z, dt, xp)  # noqa: E731
    return SinkhornResult(f=cast(f), g=cast(g), cost=cast(cost), objective=cast(obj), n_iter=int(n_iter),
                          converged=bool(converged), errors=errors, marginal_errors=(cast(ea), cast(eb)),
                          reg=float(reg), tol=float(tol), M=M,
                          reg_m=None if tuple(reg_m) == (INF, INF) else tuple(float(r) for r in reg_m))
