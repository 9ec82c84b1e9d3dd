"""Sinkhorn-Newton-Sparse (SNS): Sinkhorn warm start, then Newton steps with a sparsified Hessian.

The Newton loop is written once; its two operations, the dual pass (plan sums, dual value and the histogram
that sets the sparsification threshold) and the Newton solve on the sparsified Hessian, come from a dispatcher:
Numba kernels on NumPy input (:mod:`optnorm._numba.sparse_newton`: the plan is never stored, the Hessian is
assembled as CSR from the entries above the threshold, the Jacobi-preconditioned CG runs in compiled code),
the Array-API body elsewhere (a dense masked Hessian and the batched CG of :mod:`optnorm.ot._common`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .._lib import compat, convergence
from .._lib.api import public, public_class
from .._lib.dispatch import Dispatcher, numpy_float
from .._lib.roles import Bool, Callback, Choice, Cost, Int, NonNegative, Positive, Scalar, Weights
from .._lib.solver import IterState, Monitor
from .._lib.typing import Array
from . import _common as cm

# the grid of the log plan on which the sparsification threshold is chosen (see _numba/sparse_newton.py)
ZLO, ZBIN, NBINS = -100.0, 0.25, 440
_ZCAP = 700.0


@public_class
@dataclass(frozen=True, repr=False)
class SNSState(IterState):
    """What a :func:`sinkhorn_newton_sparse` callback sees after each Newton step.

    Attributes
    ----------
    n_iter : int
        Iterations done (Sinkhorn warm-up iterations plus Newton steps) on the current problem.
    error : float
        The stopping quantity: sum of the row and column marginal errors (``error_norm``).
    f : array (n,)
        Current source potential (cost units) of the current problem of the batch.
    g : array (m,)
        Current target potential.
    """
    f: Any = None
    g: Any = None


def _edge(zk):
    """The largest grid edge at or below the log plan value zk (clipped to the grid)."""
    b = math.floor((zk - ZLO) / ZBIN)
    return ZLO + ZBIN * min(max(b, 0), NBINS - 1)


# ---------------------------------------------------------------------------------------------- operations
class _GenericOps:
    """Dual pass and Newton solve on any Array-API library (dense masked Hessian)."""

    def __init__(self, M, a, b, reg, xp):
        self.M, self.a, self.b, self.reg, self.xp = M, a, b, reg, xp

    def _z(self, f, g):
        return self.xp.clip((f[:, None] + g[None, :] - self.M) / self.reg, None, _ZCAP)

    def dual(self, f, g):
        """(F, row sums, column sums, sorted-z handle) at potentials (f, g)."""
        xp = self.xp
        z = self._z(f, g)
        P = xp.exp(z)
        fa = xp.where(self.a > 0, f * self.a, xp.zeros_like(f))
        gb = xp.where(self.b > 0, g * self.b, xp.zeros_like(g))
        F = float(xp.sum(fa) + xp.sum(gb) - self.reg * xp.sum(P))
        return F, xp.sum(P, axis=1), xp.sum(P, axis=0), z

    def threshold(self, z, k):
        xp = self.xp
        flat = xp.reshape(z, (-1,))
        k = min(k, flat.shape[0])
        zk = float(xp.sort(flat)[flat.shape[0] - k])
        return _edge(zk) if zk > -math.inf else ZLO

    def solve(self, f, g, r, c, zcut, rhs, cg_tol):
        xp = self.xp
        z = self._z(f, g)
        S = xp.where(z >= zcut, xp.exp(z), xp.zeros_like(z))
        ST = xp.matrix_transpose(S)
        n = r.shape[0]
        N = n + c.shape[0]
        rho = float(xp.mean(r))
        gz = xp.concat([xp.ones_like(r), -xp.ones_like(c)]) / math.sqrt(N)
        d = xp.concat([r, c]) + rho / N
        diag = xp.where(d > 0, d, xp.ones_like(d))

        def matvec(w):
            x, y = w[..., :n], w[..., n:]
            top = r * x + xp.matrix_transpose(S @ xp.matrix_transpose(y))
            bot = xp.matrix_transpose(ST @ xp.matrix_transpose(x)) + c * y
            return xp.concat([top, bot], axis=-1) + rho * gz * xp.sum(gz * w, axis=-1, keepdims=True)

        sol = cm.cg(matvec, rhs[None, :], lambda w: w / diag, xp, tol=cg_tol, max_iter=1000)
        return sol[0, ...], int(xp.sum(xp.astype(z >= zcut, xp.int64)))


class _NumbaOps:
    """The same operations on NumPy float arrays with the kernels of :mod:`optnorm._numba.sparse_newton`."""

    def __init__(self, M, a, b, reg, xp):
        from .._numba import sparse_newton as nb

        self.nb = nb
        self.M = np.ascontiguousarray(M, dtype=np.float64)
        self.a, self.b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        self.reg = float(reg)
        n, m = self.M.shape
        self.nch = 8 if n >= 64 else 1
        self.cpart = np.empty((self.nch, m))
        self.hpart = np.empty((self.nch, NBINS), np.int64)
        self.spart = np.empty(self.nch)

    def dual(self, f, g):
        f = np.ascontiguousarray(f, np.float64)
        g = np.ascontiguousarray(g, np.float64)
        r = np.empty(self.M.shape[0])
        self.nb.dual_pass(self.M, f, g, self.reg, r, self.cpart, self.hpart, self.spart)
        fa = np.where(self.a > 0, f * self.a, 0.0)
        gb = np.where(self.b > 0, g * self.b, 0.0)
        F = float(fa.sum() + gb.sum() - self.reg * self.spart.sum())
        return F, r, self.cpart.sum(axis=0), self.hpart.sum(axis=0)

    def threshold(self, hist, k):
        return self.nb.threshold(hist, k)

    def solve(self, f, g, r, c, zcut, rhs, cg_tol):
        indptr, indices, data = self.nb.collect(self.M, np.ascontiguousarray(f, np.float64),
                                                np.ascontiguousarray(g, np.float64), self.reg, zcut)
        x = np.empty(rhs.shape[0])
        self.nb.pcg(indptr, indices, data, r, c, float(np.mean(r)), np.ascontiguousarray(rhs, np.float64),
                    float(cg_tol), 1000, x)
        return x, int(indices.shape[0])


ops = Dispatcher("ot.sns_newton", serves=("ot.sinkhorn_newton_sparse",))


@ops.generic
def _ops_generic(M, a, b, *, reg, xp):
    return _GenericOps(M, a, b, reg, xp)


@ops.numba(when=lambda M, a, b, **kw: numpy_float(M, a, b))
def _ops_numba(M, a, b, *, reg, xp):
    return _NumbaOps(M, a, b, reg, xp)


# ---------------------------------------------------------------------------------------------- solver
def _error(a, b, r, c, error_norm, xp):
    return float(cm.marginal_norm(a - r, error_norm, xp) + cm.marginal_norm(b - c, error_norm, xp))


def _newton(O, a, b, M, reg, f, g, *, k0, cg_tol, mon: Monitor, n1, xp, error_norm):
    """Newton steps on the concave dual from (f, g); the kept plan entries start at k0 and double whenever a
    full step is refused or a step does not halve the error."""
    n, m = M.shape
    k = k0
    F, r, c, hz = O.dual(f, g)
    e = _error(a, b, r, c, error_norm, xp)
    mon.errors.append(e)
    if e <= mon.tol:
        mon.converged = True
        return f, g
    e_prev = math.inf
    loga, logb = cm.log_weights(a, xp), cm.log_weights(b, xp)
    for it in range(1, mon.max_iter + 1):
        if e > 0.5 * e_prev:
            k = min(n * m, 2 * k)                           # no fast local convergence yet: densify
        e_prev = e
        zcut = O.threshold(hz, k)
        ra, rb = a - r, b - c
        d, _ = O.solve(f, g, r, c, zcut, xp.concat([ra, rb]), cg_tol)
        df, dg = reg * d[:n], reg * d[n:]
        slope = float(xp.sum(ra * df) + xp.sum(rb * dg))
        alpha = 1.0
        accepted = False
        while alpha >= 1e-4:
            trial = O.dual(f + alpha * df, g + alpha * dg)
            if math.isfinite(trial[0]) and trial[0] >= F + 1e-4 * alpha * slope:
                accepted = True
                break
            alpha *= 0.5
        if not accepted or alpha < 1.0:
            k = min(n * m, 2 * k)                           # Hessian too sparse for a full step: densify
        if accepted:
            f, g = f + alpha * df, g + alpha * dg
            F, r, c, hz = trial
        else:                                               # one Sinkhorn iteration (always ascends) instead
            f2, g2, _ = cm.iterations(M[None, ...], f[None, ...], g[None, ...], loga=loga[None, ...],
                                      logb=logb[None, ...], reg=reg, n_steps=1, xp=xp)
            f, g = f2[0, ...], g2[0, ...]
            F, r, c, hz = O.dual(f, g)
        e = _error(a, b, r, c, error_norm, xp)
        if mon.update(it, e, lambda: SNSState(n1 + it, e, f, g)):
            break
    return f, g


_SINKHORN_ENOUGH = 100     # Sinkhorn iterations worth about the Newton phase (a few passes over M per step)


def _warm_start(a, b, M, reg, n_steps, tol, xp, error_norm):
    """Log-domain Sinkhorn iterations from zero potentials, in blocks of 10, stopping early at ``tol``.

    After ``n_steps`` the observed linear rate of the last blocks predicts how many more Sinkhorn iterations
    reach ``tol``; when that is at most about what the Newton phase costs (:data:`_SINKHORN_ENOUGH`), Sinkhorn
    goes on instead (large ``reg``: Newton steps on a dense plan only cost more).  Returns (f, g, iterations,
    converged, errors)."""
    f = xp.zeros((1, M.shape[0]), dtype=M.dtype, device=compat.device(M))
    g = xp.zeros((1, M.shape[1]), dtype=M.dtype, device=compat.device(M))
    loga, logb = cm.log_weights(a, xp)[None, ...], cm.log_weights(b, xp)[None, ...]
    it = 0
    errs = []
    limit = n_steps
    while it < limit:
        s = min(10, limit - it)
        f, g, lc = cm.iterations(M[None, ...], f, g, loga=loga, logb=logb, reg=reg, n_steps=s, xp=xp)
        it += s
        col = xp.exp(xp.clip((g + lc) / reg, None, 300.0))
        e = float(cm.marginal_norm(col[0, ...] - b, error_norm, xp))
        errs.append(e)
        if e < tol:
            return f[0, ...], g[0, ...], it, True, errs
        if it == n_steps and len(errs) >= 2 and 0 < e < errs[-2] and math.isfinite(e):
            rate = (e / errs[-2]) ** (1.0 / s)                  # per iteration, over the last block
            more = math.log(tol / e) / math.log(rate)
            if more <= _SINKHORN_ENOUGH:
                limit = it + int(1.5 * more) + 10
    return f[0, ...], g[0, ...], it, False, errs


_SNS_ROLES = dict(a=Weights("[b] n", optional=True), b=Weights("[b] m", optional=True), M=Cost("[b] n m"), reg=Positive(),
                  tol=NonNegative(optional=True), max_iter=Int(1), n_sinkhorn=Int(0),
                  density=Scalar(0, 1, low_open=True, optional=True), cg_tol=Positive(), callback=Callback(),
                  callback_every=Int(1), error_norm=Choice((1, 2)), progress=Bool())


@public(**_SNS_ROLES)
def sinkhorn_newton_sparse(a: Array | None, b: Array | None, M: Array, reg: float, *, tol: float | None = None,
                           max_iter: int = 200, n_sinkhorn: int = 20, density: float | None = None,
                           cg_tol: float = 1e-10, callback: Callable | None = None, callback_every: int = 1,
                           error_norm: int = 1, progress: bool = False) -> cm.SinkhornResult:
    r"""Entropic OT by Sinkhorn-Newton-Sparse: a Sinkhorn warm start, then sparse Newton steps on the dual.

    "Accelerating Sinkhorn Algorithm with Sparse Newton Iterations" (Tang, Shavlovsky, Rahmanian, Tardini,
    Thekumparampil, Xiao, Ying; ICLR 2024).  After ``n_sinkhorn`` log-domain Sinkhorn iterations (stopping
    early if ``tol`` is met; going on when their observed rate reaches ``tol`` within about 100 more, which
    large ``reg`` do), each step maximises the concave dual

    .. math::

        F(f, g) = \langle f, a\rangle + \langle g, b\rangle - \varepsilon\sum_{ij} e^{(f_i + g_j - M_{ij})/\varepsilon}

    with the Newton direction :math:`\varepsilon B_s^{-1}\nabla F`, where
    :math:`B_s = \begin{pmatrix}\mathrm{diag}(P1) & P_s\\ P_s^T & \mathrm{diag}(P^T1)\end{pmatrix}` keeps the
    largest plan entries (the paper's rule: a global threshold keeping about ``k`` entries, ``k = 2 max(n, m)``
    at first, its sparsity :math:`\lambda = 2/n`; the threshold is the largest edge of a grid of width 1/4 on
    :math:`\log P` with at least k entries above it) and the full row and column sums on its diagonal (so it
    is diagonally dominant and CG applies), solved by Jacobi-preconditioned conjugate gradient (gauge fixed
    along (1, -1)), with a backtracking Armijo line search.  ``k`` doubles whenever a full step is not
    accepted or a step does not halve the marginal error (a plan too diffuse for the current sparsity: the
    paper's fixed :math:`\lambda = 2/n` stalls on such problems); a step that fails the line search entirely
    is replaced by one Sinkhorn iteration.  On NumPy input the plan is never stored: one parallel Numba pass
    over M per step gives the gradient, the dual value (for the line search) and the threshold's histogram, a
    second one assembles the CSR Hessian, and the CG runs compiled.  No autograd graph is recorded for torch
    inputs.

    Parameters
    ----------
    a : array, shape ([b,] n), or None
        Source weights (summing to 1); None is uniform.
    b : array, shape ([b,] m), or None
        Target weights; None is uniform.
    M : array, shape ([b,] n, m)
        Cost matrix; a batch of problems is solved one after the other.
    reg : float
        Entropic regularisation :math:`\varepsilon`.
    tol : float, optional
        Stop when the sum of the row and column marginal errors (``error_norm``) is below ``tol``; default 1e-9
        for float64 problems, a reachable one for lower precisions (as in :func:`optnorm.ot.sinkhorn`).  Stopping
        at ``max_iter`` without reaching it gives ``converged=False`` and a :class:`optnorm.ConvergenceWarning`.
    max_iter : int, default 200
        Maximum number of Newton steps.
    n_sinkhorn : int, default 20
        Sinkhorn warm-up iterations (N1 in the paper).
    density : float in (0, 1], optional
        Initial fraction of the plan's entries kept (default: ``2 max(n, m)`` entries, the paper's 2/n).
    cg_tol : float, default 1e-10
        Relative residual at which the conjugate gradient stops.
    callback : callable, optional
        ``callback(state)`` with an :class:`SNSState` every ``callback_every`` Newton steps; True stops.
    callback_every : int, default 1
        Newton steps between callbacks.
    error_norm : {1, 2}
        Norm of the marginal errors.
    progress : bool, default False
        Show a progress bar (tqdm when installed) or lines on stderr.

    Returns
    -------
    SinkhornResult
        ``n_iter`` counts Sinkhorn warm-up iterations plus Newton steps.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import sinkhorn_newton_sparse
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.random((200, 2)), rng.random((200, 2))
    >>> M = ((x[:, None] - y[None]) ** 2).sum(-1)
    >>> r = sinkhorn_newton_sparse(np.full(200, 0.005), np.full(200, 0.005), M, 0.005)
    >>> r.converged and r.n_iter < 60
    True
    """
    cm.check_batch(a, b, M, "sinkhorn_newton_sparse")
    if a is None or b is None:
        xp = compat.array_namespace(M)
        n, m = M.shape[-2], M.shape[-1]
        lead = tuple(M.shape[:-2])
        if a is None:
            a = xp.full(lead + (n,), 1.0 / n, dtype=M.dtype, device=compat.device(M))
        if b is None:
            b = xp.full(lead + (m,), 1.0 / m, dtype=M.dtype, device=compat.device(M))
    if not compat.is_concrete(M):
        raise TypeError("sinkhorn_newton_sparse: M must be a concrete array (not a JAX tracer): the line search and "
                        "the sparsification branch on values")
    with compat.no_grad(a, b, M):
        return _sns(a, b, M, float(reg), tol=tol, max_iter=max_iter, n_sinkhorn=n_sinkhorn, density=density,
                    cg_tol=float(cg_tol), callback=callback, callback_every=callback_every, error_norm=error_norm,
                    progress=progress)


def _sns(a, b, M, reg, *, tol, max_iter, n_sinkhorn, density, cg_tol, callback, callback_every, error_norm,
         progress):
    xp, ab, bb, Mb, batched = cm.prep(a, b, M)
    tol = cm.default_tol(tol, Mb.dtype)
    n, m = Mb.shape[1], Mb.shape[2]
    k0 = min(n * m, 2 * max(n, m)) if density is None else min(n * m, max(1, math.ceil(float(density) * n * m)))
    fs, gs, iters, conv_all, stop_any, errors = [], [], 0, True, False, []
    last = None
    for p in range(Mb.shape[0]):
        a_p, b_p, M_p = ab[p, ...], bb[p, ...], Mb[p, ...]
        f, g, n1, converged, werr = _warm_start(a_p, b_p, M_p, reg, n_sinkhorn, tol, xp, error_norm)
        errors += werr
        mon = Monitor("sinkhorn_newton_sparse", max_iter=max_iter, tol=tol, callback=callback,
                      callback_every=callback_every, progress=progress, warn=False)
        if not converged:
            O = ops(M_p, a_p, b_p, reg=reg, xp=xp)
            f, g = _newton(O, a_p, b_p, M_p, reg, f, g, k0=k0, cg_tol=cg_tol, mon=mon, n1=n1, xp=xp,
                           error_norm=error_norm)
            converged = mon.converged
            f = compat.cast(f, Mb.dtype, xp)
            g = compat.cast(g, Mb.dtype, xp)
        mon.close()
        errors += mon.errors
        fs.append(f)
        gs.append(g)
        iters = max(iters, n1 + mon.n_iter)
        conv_all = conv_all and converged
        stop_any = stop_any or mon.stopped
        last = mon
    if not conv_all and not stop_any:
        convergence.warn_not_converged("sinkhorn_newton_sparse", iters, last.error if last else None, tol,
                                       stacklevel=4)
    return cm.make_result(xp.stack(fs), xp.stack(gs), ab, bb, Mb, reg, tol, iters, conv_all, errors, batched, M,
                          xp)
