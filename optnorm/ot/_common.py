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
    """What a Sinkhorn or SNS callback sees every ``callback_every`` iterations: ``iteration``, the current
    potentials ``f``, ``g`` (cost units; with a leading batch axis for :func:`optnorm.ot.sinkhorn`, of the
    current problem for :func:`optnorm.ot.sinkhorn_newton_sparse`) and the stopping ``error``."""
    iteration: int
    f: Any
    g: Any
    error: float


@public_class
@dataclass(frozen=True)
class SinkhornResult:
    """Result of :func:`optnorm.ot.sinkhorn` (and :func:`optnorm.ot.sinkhorn_newton_sparse`).

    Attributes
    ----------
    f, g : arrays (..., n) / (..., m)
        Dual potentials, :math:`P = \\exp((f \\oplus g - M)/\\varepsilon)` (``-inf`` where a weight is 0).
    cost : array (...,)
        Transport cost :math:`\\langle P, M\\rangle` (what POT's ``sinkhorn2`` returns).
    objective : array (...,)
        Entropic objective :math:`\\langle P, M\\rangle + \\varepsilon\\sum P\\log P`.
    n_iter : int
        Iterations done (one iteration = one column and one row update; a Newton step for SNS).
    converged : bool
        Whether every problem of the batch reached ``tol``.
    errors : list of float
        History of the stopping criterion (max over the batch of the marginal error), one entry per check.
    marginal_errors : tuple of arrays (...,)
        Final L1 errors :math:`(\\|P1 - a\\|_1, \\|P^T1 - b\\|_1)` per problem.
    reg : float
    tol : float
        The tolerance used (the dtype's default when none was given).
    M : array
        The cost matrix (kept to build the plan on demand).
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

    def plan(self):
        """The transport plan :math:`\\exp((f_i + g_j - M_{ij})/\\varepsilon)`, shape (..., n, m)."""
        xp = compat.array_namespace(self.M)
        return xp.exp((self.f[..., :, None] + self.g[..., None, :] - self.M) / self.reg)


SINKHORN_FUNCTIONS = ("ot.sinkhorn", "ot.sinkhorn2", "ot.sinkhorn_newton_sparse")
SINKHORN_TOL = 1e-9  # float64 default; other dtypes get convergence.default_tol(SINKHORN_TOL, dtype)


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
#   g = reg log b - softmin_cols(f),   f = reg log a - softmin_rows(g).
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
def _iterations_generic(M, f, g, *, loga, logb, reg, n_steps, xp):
    ra, rb = reg * loga, reg * logb
    for _ in range(n_steps):
        g = rb - softmin_xp(M, f, reg, 1, xp)
        f = ra - softmin_xp(M, g, reg, 2, xp)
    return f, g, softmin_xp(M, f, reg, 1, xp)


@iterations.numba(when=lambda M, f, g, **kw: numpy_float(M, f, g))
def _iterations_numba(M, f, g, *, loga, logb, reg, n_steps, xp):
    from .._numba import ot as nb

    return nb.sinkhorn_iterations(M, f, g, loga, logb, reg, n_steps)


@iterations.cuda(when=lambda M, f, g, **kw: str(M.dtype) in ("float32", "float64") and M.dtype == f.dtype == g.dtype)
def _iterations_cuda(M, f, g, *, loga, logb, reg, n_steps, xp):
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
    for _ in range(n_steps):
        g = rb - half(f, 1)
        f = ra - half(g, 2)
    return f, g, half(f, 1)


def marginal_norm(r, p, xp):
    return xp.sum(xp.abs(r), axis=-1) if p == 1 else xp.sqrt(xp.sum(r * r, axis=-1))


def _col_marginal(g, lc, reg, xp):
    """Column sums of the plan after a row update, exp((g + lc)/reg), its exponent clamped so that a far-off
    iterate gives a large finite error instead of inf."""
    return xp.exp(xp.clip((g + lc) / reg, None, 300.0))


def sinkhorn_loop(loga, logb, b, M, reg, f, g, *, tol, max_iter, check_every, callback, callback_every, xp,
                  errors, it0=0, error_norm=1):
    """Log-domain Sinkhorn iterations from potentials (f, g) in cost units, in blocks between stopping tests.

    Every ``check_every`` iterations the column-marginal error (read off the column pass, so free) is compared
    with ``tol``; a callback runs every ``callback_every`` iterations.  Returns ``(f, g, n_iter, converged,
    stopped_by_callback)``; ``errors`` gets the error history.  Traced (jit) inputs run ``max_iter`` iterations.
    """
    concrete = compat.is_concrete(M)
    if not concrete:
        f, g, _ = iterations(M, f, g, loga=loga, logb=logb, reg=reg, n_steps=max_iter, xp=xp)
        return f, g, max_iter, False, False
    it = 0
    converged = stopped = False
    while True:
        nxt = min(max_iter, (it // check_every + 1) * check_every)
        if callback is not None:
            nxt = min(nxt, (it // callback_every + 1) * callback_every)
        f_new, g_new, lc = iterations(M, f, g, loga=loga, logb=logb, reg=reg, n_steps=nxt - it, xp=xp)
        f, g, it = f_new, g_new, nxt
        last = it >= max_iter
        check = it % check_every == 0 or last
        call = callback is not None and it % callback_every == 0
        if check or call:
            err_b = marginal_norm(_col_marginal(g, lc, reg, xp) - b, error_norm, xp)
            e = float(xp.max(err_b))
            if check:
                errors.append(e)
            if e < tol:
                converged = True
                break
            if call and callback(SinkhornState(it0 + it, f, g, e)):
                stopped = True
                break
        if last:
            break
    return f, g, it, converged, stopped


def finalize(f, g, ab, bb, Mb, reg, xp, row_update=False):
    """Cost, objective and marginal errors of the plan of potentials (f, g) (batched), and the plan.

    ``row_update``: f is the row update of g (every Sinkhorn method ends on one), so the plan is
    ``a_i softmax_j((g_j - M_ij) / reg)``, computed from the row maxima: rows sum to a exactly and no entry
    exceeds a_i even where |M| / reg is beyond float64 precision (there exp((f + g - M) / reg) is round-off noise
    of potentials of magnitude |M|, and could overflow).
    """
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
    err_a = xp.sum(xp.abs(row - ab), axis=-1)
    err_b = xp.sum(xp.abs(col - bb), axis=-1)
    cost = xp.sum(xp.sum(P * Mb, axis=-1), axis=-1)
    # <P, M> + reg sum P log P = <P1, f> + <P^T 1, g>   (0 * -inf := 0 for zero weights)
    zero_f, zero_g = xp.zeros_like(f), xp.zeros_like(g)
    objective = xp.sum(row * xp.where(row > 0, f, zero_f), axis=-1) + \
        xp.sum(col * xp.where(col > 0, g, zero_g), axis=-1)
    return cost, objective, (err_a, err_b), P


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


# ---------------------------------------------------------------------------------------------- Sinkhorn problems
def check_batch(a, b, M, fn):
    """A batch of weights needs a batch of costs (the roles bind the batch size when both have one)."""
    for nm, w in (("a", a), ("b", b)):
        if w.ndim == 2 and M.ndim != 3:
            raise ValueError(f"{fn}: {nm} has shape {tuple(w.shape)} but M has shape {tuple(M.shape)}: a batch of "
                             f"weights needs a batch of cost matrices of the same size")


def prep(a, b, M):
    """Batched (B, n, m) arrays in the compute dtype (float64 if any input is), weights re-normalised."""
    xp = compat.array_namespace(a, b, M)
    cdt = compat.compute_dtype(M, xp)
    for x in (a, b):
        if x.dtype == getattr(xp, "float64", None):
            cdt = x.dtype
    Mb = compat.cast(M, cdt, xp)
    batched = M.ndim == 3
    if not batched:
        Mb = Mb[None, ...]
    B = Mb.shape[0]
    ab = compat.cast(a, cdt, xp)
    bb = compat.cast(b, cdt, xp)
    ab = xp.broadcast_to(ab if ab.ndim == 2 else ab[None, :], (B, Mb.shape[1]))
    bb = xp.broadcast_to(bb if bb.ndim == 2 else bb[None, :], (B, Mb.shape[2]))
    ab = ab / xp.sum(ab, axis=-1, keepdims=True)
    bb = bb / xp.sum(bb, axis=-1, keepdims=True)
    return xp, ab, bb, Mb, batched


def warn_if_not_converged(fn, M, converged, stopped, n_iter, errors, tol):
    if not converged and not stopped and compat.is_concrete(M):
        convergence.warn_not_converged(fn, n_iter, errors[-1] if errors else None, tol, stacklevel=4)


def default_tol(tol, dtype):
    return convergence.default_tol(SINKHORN_TOL, dtype) if tol is None else float(tol)


def make_result(f, g, ab, bb, Mb, reg, tol, n_iter, converged, errors, batched, M, xp, row_update=False):
    cost, obj, (ea, eb), _ = finalize(f, g, ab, bb, Mb, reg, xp, row_update)
    if not batched:
        f, g, cost, obj, ea, eb = f[0, ...], g[0, ...], cost[0], obj[0], ea[0], eb[0]
    dt = M.dtype
    cast = lambda z: compat.cast(z, dt, xp)  # noqa: E731
    return SinkhornResult(f=cast(f), g=cast(g), cost=cast(cost), objective=cast(obj), n_iter=int(n_iter),
                          converged=bool(converged), errors=errors, marginal_errors=(cast(ea), cast(eb)),
                          reg=float(reg), tol=float(tol), M=M)
