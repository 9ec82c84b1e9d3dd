"""Entropic optimal transport: log-domain, stabilised and epsilon-scaling Sinkhorn; ``sinkhorn2`` with a VJP.

Problem (POT's convention): :math:`\\min_{P \\in U(a,b)} \\langle P, M\\rangle + \\varepsilon \\sum_{ij} P_{ij}\\log P_{ij}`,
dual potentials f, g with :math:`P_{ij} = \\exp((f_i + g_j - M_{ij})/\\varepsilon)`.

The hot loop works on scaled potentials u = f/eps, v = g/eps and two log-sum-exp passes per iteration (over the
columns, then over the rows).  NumPy inputs use fused Numba kernels (``optnorm._numba.ot``), CuPy inputs CUDA
kernels (``optnorm/_cuda/ot.cu``), anything else the generic Array-API body.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .._lib import compat, ops, validate
from .oned import _check_finite, _check_weights
from .._lib.dispatch import Dispatcher, numpy_float

__all__ = ["sinkhorn", "sinkhorn2", "SinkhornResult", "SinkhornState"]

METHODS = ("log", "stabilized", "eps_scaling")


# ---------------------------------------------------------------------------------------------- result objects
@dataclass(frozen=True)
class SinkhornState:
    """What a callback sees every ``callback_every`` iterations."""
    iteration: int
    f: Any
    g: Any
    error: float


@dataclass(frozen=True)
class SinkhornResult:
    """Result of :func:`sinkhorn` (and :func:`optnorm.ot.sinkhorn_newton_sparse`).

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
        History of the stopping criterion (max over the batch of the L1 marginal error), one entry per check.
    marginal_errors : tuple of arrays (...,)
        Final L1 errors :math:`(\\|P1 - a\\|_1, \\|P^T1 - b\\|_1)` per problem.
    reg : float
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
    M: Any = field(repr=False)

    def plan(self):
        """The transport plan :math:`\\exp((f_i + g_j - M_{ij})/\\varepsilon)`, shape (..., n, m)."""
        xp = compat.array_namespace(self.M)
        return xp.exp((self.f[..., :, None] + self.g[..., None, :] - self.M) / self.reg)


# ---------------------------------------------------------------------------------------------- validation
def _check(a, b, M, reg, *, tol=None, max_iter=None):
    for nm, x in (("a", a), ("b", b), ("M", M)):
        validate.check_float(x, nm)
    xp = validate.check_same_namespace(a=a, b=b, M=M)
    reg = validate.check_positive(reg, "reg")
    if not math.isfinite(reg):
        raise ValueError(f"reg must be finite, got {reg}")
    if M.ndim not in (2, 3):
        raise ValueError(f"M must have shape (n, m) or (batch, n, m), got shape {tuple(M.shape)}")
    n, m = M.shape[-2], M.shape[-1]
    if n == 0 or m == 0:
        raise ValueError(f"M is empty (shape {tuple(M.shape)}): both measures need at least one atom")
    for nm, w, k, ax in (("a", a, n, "rows"), ("b", b, m, "columns")):
        if w.ndim not in (1, 2) or w.shape[-1] != k:
            raise ValueError(f"{nm} has shape {tuple(w.shape)}, expected ({k},) or (batch, {k}) to match the {k} "
                             f"{ax} of M (shape {tuple(M.shape)})")
        if w.ndim == 2 and (M.ndim != 3 or w.shape[0] != M.shape[0]):
            raise ValueError(f"{nm} has shape {tuple(w.shape)} but M has shape {tuple(M.shape)}: a batch of weights "
                             f"needs a batch of cost matrices of the same size")
        _check_weights(w, nm)
    _check_finite(M, "M")
    if tol is not None:
        validate.check_positive(tol, "tol")
    if max_iter is not None:
        validate.check_int(max_iter, "max_iter", low=1)
    return xp, reg


def _prep(a, b, M, reg, **kw):
    """Validated, batched (B, n, m) float arrays in the compute dtype; weights re-normalised."""
    xp, reg = _check(a, b, M, reg, **kw)
    cdt = compat.compute_dtype(M, xp)
    for x in (a, b):
        if x.dtype == getattr(xp, "float64", None):
            cdt = x.dtype
    Mb = xp.astype(M, cdt)
    batched = M.ndim == 3
    if not batched:
        Mb = Mb[None, ...]
    B = Mb.shape[0]
    ab = xp.astype(a, cdt)
    bb = xp.astype(b, cdt)
    ab = xp.broadcast_to(ab if ab.ndim == 2 else ab[None, :], (B, Mb.shape[1]))
    bb = xp.broadcast_to(bb if bb.ndim == 2 else bb[None, :], (B, Mb.shape[2]))
    ab = ab / xp.sum(ab, axis=-1, keepdims=True)
    bb = bb / xp.sum(bb, axis=-1, keepdims=True)
    return xp, reg, ab, bb, Mb, batched


def _no_grad(*arrays):
    """``torch.no_grad()`` for torch inputs: the solvers return plain potentials, never an unrolled autograd graph
    (which is what runs out of memory in POT#565); gradients come from :func:`sinkhorn2`'s VJP."""
    import contextlib

    if any(compat.is_torch(x) for x in arrays if x is not None):
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def _log(w, xp):
    pos = w > 0
    return xp.where(pos, xp.log(xp.where(pos, w, xp.ones_like(w))), xp.full_like(w, -math.inf))


# ---------------------------------------------------------------------------------------------- LSE kernels
def _lse(z, axis, xp):
    mx = xp.max(z, axis=axis, keepdims=True)
    mx = xp.where(xp.isfinite(mx), mx, xp.zeros_like(mx))
    s = xp.sum(xp.exp(z - mx), axis=axis)
    return xp.log(s) + xp.squeeze(mx, axis=axis)


class _GenericEngine:
    """Row/column log-sum-exp passes of log-domain Sinkhorn written against the Array API."""

    def __init__(self, M, reg, xp):
        self.M, self.s, self.xp = M, 1.0 / reg, xp

    def cols(self, u):
        """c_j = log sum_i exp(u_i - M_ij / eps)   (B, m)."""
        return _lse(u[:, :, None] - self.M * self.s, 1, self.xp)

    def rows(self, v):
        """r_i = log sum_j exp(v_j - M_ij / eps)   (B, n)."""
        return _lse(v[:, None, :] - self.M * self.s, 2, self.xp)


class _NumbaEngine:
    """Fused two-pass LSE kernels (``optnorm._numba.ot``), parallel over rows / column blocks."""

    def __init__(self, M, reg, xp):
        self.M = np.ascontiguousarray(M)
        self.s = np.full(M.shape[0], 1.0 / reg, dtype=M.dtype)

    def cols(self, u):
        from .._numba import ot as nb

        out = np.empty((self.M.shape[0], self.M.shape[2]), dtype=self.M.dtype)
        nb.lse_cols(self.M, self.s, np.ascontiguousarray(u, dtype=self.M.dtype), out)
        return out

    def rows(self, v):
        from .._numba import ot as nb

        out = np.empty((self.M.shape[0], self.M.shape[1]), dtype=self.M.dtype)
        nb.lse_rows(self.M, self.s, np.ascontiguousarray(v, dtype=self.M.dtype), out)
        return out


class _KernelEngine(_NumbaEngine):
    """NumPy fast path: LSE_j(v_j - M_ij/eps) = vmax + log sum_j K_ij exp(v_j - vmax), K = exp(-M/eps) in float64.

    One BLAS matrix-vector product per half-step instead of n*m scalar exps (Numba has no vector exp here).
    Exactness: a term dropped by underflow (of K_ij or of exp(v_j - vmax)) is below 1e-308, so wherever the
    computed sum is >= 1e-280 the result equals the two-pass LSE to round-off; otherwise (very small reg, far
    apart potentials) the call falls back to the exact Numba kernels.
    """

    LIMIT = 1e-280

    def __init__(self, M, reg, xp):
        super().__init__(M, reg, xp)
        self.K = np.exp(-np.asarray(M, np.float64) / reg)
        self.KT = [np.ascontiguousarray(k.T) for k in self.K]

    def _apply(self, mats, w, exact):
        w64 = np.asarray(w, np.float64)
        mx = np.max(w64, axis=1, keepdims=True)
        mx = np.where(np.isfinite(mx), mx, 0.0)
        e = np.exp(w64 - mx)
        s = np.stack([mats[b] @ e[b] for b in range(len(mats))])
        if not np.all(s >= self.LIMIT):
            return exact(w)
        return (np.log(s) + mx).astype(self.M.dtype)

    def cols(self, u):
        return self._apply(self.KT, u, super().cols)

    def rows(self, v):
        return self._apply(self.K, v, super().rows)


class _CudaEngine:
    """CUDA kernels of ``optnorm/_cuda/ot.cu`` (one block per row; column blocks reduce over rows)."""

    def __init__(self, M, reg, xp):
        import cupy

        self.M = cupy.ascontiguousarray(M)
        self.s = cupy.full(M.shape[0], 1.0 / reg, dtype=M.dtype)

    def _launch(self, name, vec, out_len):
        import cupy

        from .._cuda import loader

        Bn, n, m = self.M.shape
        vec = cupy.ascontiguousarray(vec, dtype=self.M.dtype)
        out = cupy.empty((Bn, out_len), dtype=self.M.dtype)
        k = loader.kernel("ot", f"{name}<{loader.dtype_name(self.M.dtype)}>")
        if name == "lse_rows":
            k((Bn * n,), (256,), (self.M, self.s, vec, out, np.int32(Bn), np.int32(n), np.int32(m)))
        else:
            k(((m + 31) // 32, Bn), (32, 8), (self.M, self.s, vec, out, np.int32(Bn), np.int32(n), np.int32(m)))
        return out

    def cols(self, u):
        return self._launch("lse_cols", u, self.M.shape[2])

    def rows(self, v):
        return self._launch("lse_rows", v, self.M.shape[1])


_engine = Dispatcher("ot.sinkhorn.lse")


@_engine.generic
def _(M, *, reg, xp):
    return _GenericEngine(M, reg, xp)


@_engine.numba(when=lambda M, **kw: numpy_float(M))
def _(M, *, reg, xp):
    if M.size * 8 <= 2 ** 29:                               # float64 kernel copy up to 512 MiB
        return _KernelEngine(M, reg, xp)
    return _NumbaEngine(M, reg, xp)


@_engine.cuda(when=lambda M, **kw: str(M.dtype) in ("float32", "float64"))
def _(M, *, reg, xp):
    return _CudaEngine(M, reg, xp)


# ---------------------------------------------------------------------------------------------- solvers
def _norm(r, p, xp):
    return xp.sum(xp.abs(r), axis=-1) if p == 1 else xp.sqrt(xp.sum(r * r, axis=-1))


def _log_loop(loga, logb, b, Mb, reg, u, v, *, tol, max_iter, check_every, callback, callback_every, xp,
              errors, it0=0, error_norm=1):
    """Log-domain Sinkhorn iterations; returns (u, v, col_lse, n_iter, converged, err_b)."""
    eng = _engine(Mb, reg=reg, xp=xp)
    concrete = compat.is_concrete(Mb)
    it = 0
    converged = False
    err_b = None
    while True:
        lc = eng.cols(u)                                  # column LSE of the current u
        last = it >= max_iter
        if it > 0 and concrete and (it % check_every == 0 or last or
                                    (callback is not None and it % callback_every == 0)):
            col = xp.exp(v + lc)
            err_b = _norm(col - b, error_norm, xp)
            e = float(xp.max(err_b))
            if it % check_every == 0 or last:
                errors.append(e)
            if not math.isfinite(e):
                break
            if e < tol:
                converged = True
                break
            if callback is not None and it % callback_every == 0:
                if callback(SinkhornState(it0 + it, reg * u, reg * v, e)):
                    break
        if last:
            break
        v = logb - lc
        u = loga - eng.rows(v)
        it += 1
    return u, v, lc, it, converged, err_b


def _stabilized_loop(a, b, Mb, reg, *, tol, max_iter, check_every, callback, callback_every, xp, errors,
                     tau=1e3, error_norm=1):
    """Kernel-mode Sinkhorn with absorption of large scalings into the log-potentials (Schmitzer 2016)."""
    B, n, m = Mb.shape
    alpha = xp.zeros((B, n), dtype=Mb.dtype, device=compat.device(Mb))
    beta = xp.zeros((B, m), dtype=Mb.dtype, device=compat.device(Mb))

    def kernel(al, be):
        return xp.exp((al[:, :, None] + be[:, None, :] - Mb) / reg)

    K = kernel(alpha, beta)
    uu = xp.ones((B, n), dtype=Mb.dtype, device=compat.device(Mb))
    vv = xp.ones((B, m), dtype=Mb.dtype, device=compat.device(Mb))
    it = 0
    converged = False
    tiny = float(xp.finfo(Mb.dtype).smallest_normal)
    while it < max_iter:
        Ktu = xp.sum(K * uu[:, :, None], axis=1)
        vv = b / xp.maximum(Ktu, tiny)
        Kv = xp.sum(K * vv[:, None, :], axis=2)
        uu = a / xp.maximum(Kv, tiny)
        it += 1
        if float(xp.max(xp.abs(uu))) > tau or float(xp.max(xp.abs(vv))) > tau:
            alpha = alpha + reg * _log(uu, xp)
            beta = beta + reg * _log(vv, xp)
            alpha = xp.where(xp.isfinite(alpha), alpha, xp.full_like(alpha, -1e300 if Mb.dtype == xp.float64 else -1e30))
            beta = xp.where(xp.isfinite(beta), beta, xp.full_like(beta, -1e300 if Mb.dtype == xp.float64 else -1e30))
            uu = xp.ones_like(uu)
            vv = xp.ones_like(vv)
            K = kernel(alpha, beta)
        if it % check_every == 0 or it == max_iter or (callback is not None and it % callback_every == 0):
            col = vv * xp.sum(K * uu[:, :, None], axis=1)
            e = float(xp.max(_norm(col - b, error_norm, xp)))
            if it % check_every == 0 or it == max_iter:
                errors.append(e)
            if e < tol:
                converged = True
                break
            if callback is not None and it % callback_every == 0:
                if callback(SinkhornState(it, alpha + reg * _log(uu, xp), beta + reg * _log(vv, xp), e)):
                    break
    f = alpha + reg * _log(uu, xp)
    g = beta + reg * _log(vv, xp)
    return f / reg, g / reg, it, converged


def _finalize(u, v, ab, bb, Mb, reg, xp):
    """Potentials, cost, objective and marginal errors from scaled potentials (exact recomputation)."""
    eng = _engine(Mb, reg=reg, xp=xp)
    s = 1.0 / reg
    lr = eng.rows(v)
    lc = eng.cols(u)
    row = xp.exp(u + lr)
    col = xp.exp(v + lc)
    err_a = xp.sum(xp.abs(row - ab), axis=-1)
    err_b = xp.sum(xp.abs(col - bb), axis=-1)
    P = xp.exp(u[:, :, None] + v[:, None, :] - Mb * s)
    cost = xp.sum(xp.sum(P * Mb, axis=-1), axis=-1)
    # sum P log P = <P1, u> + <P^T1, v> - <P, M>/eps   (0 * -inf := 0 for zero weights)
    ru = row * xp.where(row > 0, u, xp.zeros_like(u))
    cv = col * xp.where(col > 0, v, xp.zeros_like(v))
    objective = reg * (xp.sum(ru, axis=-1) + xp.sum(cv, axis=-1))
    return reg * u, reg * v, cost, objective, (err_a, err_b), P


def _solve(ab, bb, Mb, reg, *, method, tol, max_iter, check_every, callback, callback_every, warm_start, xp,
           error_norm=1):
    errors: list = []
    B, n, m = Mb.shape
    loga, logb = _log(ab, xp), _log(bb, xp)
    if warm_start is not None:
        u = xp.astype(warm_start[0], Mb.dtype) / reg
        v = xp.astype(warm_start[1], Mb.dtype) / reg
        u = xp.broadcast_to(u if u.ndim == 2 else u[None, ...], (B, n))
        v = xp.broadcast_to(v if v.ndim == 2 else v[None, ...], (B, m))
    else:
        u = xp.zeros((B, n), dtype=Mb.dtype, device=compat.device(Mb))
        v = xp.zeros((B, m), dtype=Mb.dtype, device=compat.device(Mb))
    n_done = 0
    if method == "stabilized":
        u, v, n_done, converged = _stabilized_loop(ab, bb, Mb, reg, tol=tol, max_iter=max_iter,
                                                   check_every=check_every, callback=callback,
                                                   callback_every=callback_every, xp=xp, errors=errors,
                                                   error_norm=error_norm)
    else:
        if method == "eps_scaling":
            # geometric decrease from the cost scale to reg, a few warm-started iterations per stage
            scale = float(xp.max(Mb) - xp.min(Mb)) if compat.is_concrete(Mb) else 1.0
            eps = max(scale, reg)
            stages = []
            while eps > reg * 1.0001:
                stages.append(eps)
                eps = max(eps * 0.5, reg)
            for e_k in stages:
                uk, vk = u * reg / e_k, v * reg / e_k       # same potentials f, g at the new scale
                uk, vk, _, k, _, _ = _log_loop(loga, logb, bb, Mb, e_k, uk, vk, tol=tol, max_iter=10,
                                               check_every=10 ** 9, callback=None, callback_every=1, xp=xp,
                                               errors=[])
                u, v = uk * e_k / reg, vk * e_k / reg
                n_done += k
        u, v, _, k, converged, _ = _log_loop(loga, logb, bb, Mb, reg, u, v, tol=tol, max_iter=max_iter,
                                             check_every=check_every, callback=callback,
                                             callback_every=callback_every, xp=xp, errors=errors, it0=n_done,
                                             error_norm=error_norm)
        n_done += k
    return u, v, n_done, converged, errors


def sinkhorn(a, b, M, reg, *, method="log", tol=1e-9, max_iter=1000, check_every=10, callback=None,
             callback_every=10, warm_start=None, error_norm=1):
    r"""Entropic optimal transport by Sinkhorn iterations (log domain by default).

    Solves :math:`\min_{P1 = a, P^T1 = b,\,P\ge0} \langle P, M\rangle + \varepsilon\sum_{ij}P_{ij}\log P_{ij}`
    ("Sinkhorn Distances: Lightspeed Computation of Optimal Transport", M. Cuturi, NeurIPS 2013) through the dual
    potentials, alternating

    .. math::

        g_j = \varepsilon\log b_j - \varepsilon\,\mathrm{LSE}_i\big((f_i - M_{ij})/\varepsilon\big),\qquad
        f_i = \varepsilon\log a_i - \varepsilon\,\mathrm{LSE}_j\big((g_j - M_{ij})/\varepsilon\big).

    Methods: ``"log"`` (log-sum-exp updates, stable for any ``reg``; fused Numba/CUDA kernels for NumPy/CuPy),
    ``"stabilized"`` (kernel-mode scaling with absorption of large scalings into the potentials, Schmitzer,
    "Stabilized Sparse Scaling Algorithms for Entropy Regularized Transport Problems", 2016; generic body only)
    and ``"eps_scaling"`` (log-domain iterations with reg halved from the cost range down to ``reg``, 10
    warm-started iterations per stage, then the log loop to ``tol``).

    Stopping: every ``check_every`` iterations the L1 (``error_norm=1``, like OTT) or L2 (``error_norm=2``, like
    POT) error of the column marginal (the row marginal is exact after each row update) is compared with ``tol``; it is read off the next column pass, so checking is free.
    Non-convergence is reported (``converged=False``), not raised.

    Parameters
    ----------
    a : array, shape (n,) or (batch, n)
    b : array, shape (m,) or (batch, m)
        Non-negative weights summing to 1 (re-normalised internally; zeros allowed).
    M : array, shape (n, m) or (batch, n, m)
        Finite cost matrices; a batch of problems of the same size is solved together.
    reg : float
        Entropic regularisation :math:`\varepsilon > 0`.
    method : {"log", "stabilized", "eps_scaling"}
    tol : float, default 1e-9
    max_iter : int, default 1000
    check_every : int, default 10
    callback : callable(SinkhornState) -> bool, optional
        Called every ``callback_every`` iterations; returning True stops.
    callback_every : int, default 10
    warm_start : tuple (f, g), optional
        Initial potentials.
    error_norm : {1, 2}, default 1
        Norm of the marginal error used for stopping (``errors`` history).

    Returns
    -------
    SinkhornResult
        Potentials ``f``, ``g``, ``cost`` (:math:`\langle P, M\rangle`), ``objective``, ``n_iter``,
        ``converged``, ``errors``, ``marginal_errors``, and ``plan()``.  Without a batch axis in the inputs the
        leading axis is dropped.  No autograd graph is recorded (torch inputs run under ``torch.no_grad``): for
        gradients use :func:`sinkhorn2`, whose VJP needs no unrolling.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import sinkhorn
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.random((50, 2)), rng.random((40, 2))
    >>> M = ((x[:, None] - y[None]) ** 2).sum(-1)
    >>> res = sinkhorn(np.full(50, 1 / 50), np.full(40, 1 / 40), M, 0.05)
    >>> res.converged, res.plan().shape
    (True, (50, 40))
    """
    xp, reg, ab, bb, Mb, batched = _prep(a, b, M, reg, tol=tol, max_iter=max_iter)
    validate.check_in(method, METHODS, "method")
    check_every = validate.check_int(check_every, "check_every", low=1)
    callback_every = validate.check_int(callback_every, "callback_every", low=1)
    validate.check_in(error_norm, (1, 2), "error_norm")
    with _no_grad(a, b, M):
        u, v, n_iter, converged, errors = _solve(ab, bb, Mb, reg, method=method, tol=tol, max_iter=max_iter,
                                                 check_every=check_every, callback=callback,
                                                 callback_every=callback_every, warm_start=warm_start, xp=xp,
                                                 error_norm=error_norm)
        return _make_result(u, v, ab, bb, Mb, reg, n_iter, converged, errors, batched, M, xp)


def _make_result(u, v, ab, bb, Mb, reg, n_iter, converged, errors, batched, M, xp):
    f, g, cost, obj, (ea, eb), _ = _finalize(u, v, ab, bb, Mb, reg, xp)
    dt = M.dtype
    if not batched:
        f, g, cost, obj, ea, eb = f[0, ...], g[0, ...], cost[0], obj[0], ea[0], eb[0]
    cast = lambda z: xp.astype(z, dt)  # noqa: E731
    return SinkhornResult(f=cast(f), g=cast(g), cost=cast(cost), objective=cast(obj), n_iter=int(n_iter),
                          converged=bool(converged), errors=errors, marginal_errors=(cast(ea), cast(eb)),
                          reg=reg, M=M)


# ---------------------------------------------------------------------------------------------- sinkhorn2 (op)
def _cg(matvec, rhs, precond, xp, *, tol=1e-12, max_iter=500):
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


def _implicit_solve(P, fbar, gbar, xp):
    """Solve [[diag(P1), P], [P^T, diag(P^T 1)]] [x; y] = [fbar; gbar] (gauge fixed along (1, -1))."""
    n = P.shape[1]
    r = xp.sum(P, axis=2)
    c = xp.sum(P, axis=1)
    k = n + P.shape[2]
    rho = xp.mean(r, axis=-1, keepdims=True)
    zvec = xp.concat([xp.ones_like(r), -xp.ones_like(c)], axis=-1) / math.sqrt(k)
    diag = xp.concat([r, c], axis=-1) + rho / k
    diag = xp.where(diag > 0, diag, xp.ones_like(diag))

    def matvec(w):
        x, y = w[:, :n], w[:, n:]
        top = r * x + xp.sum(P * y[:, None, :], axis=2)
        bot = xp.sum(P * x[:, :, None], axis=1) + c * y
        return xp.concat([top, bot], axis=-1) + rho * zvec * xp.sum(zvec * w, axis=-1, keepdims=True)

    sol = _cg(matvec, xp.concat([fbar, gbar], axis=-1), lambda w: w / diag, xp)
    return sol[:, :n], sol[:, n:]


def _sinkhorn2_forward(a, b, M, reg, method, tol, max_iter, value):
    xp, reg, ab, bb, Mb, batched = _prep(a, b, M, reg, tol=tol, max_iter=max_iter)
    validate.check_in(method, METHODS, "method")
    validate.check_in(value, ("transport", "objective"), "value")
    u, v, n_iter, converged, errors = _solve(ab, bb, Mb, reg, method=method, tol=tol, max_iter=max_iter,
                                             check_every=10, callback=None, callback_every=10, warm_start=None,
                                             xp=xp)
    f, g, cost, obj, _, P = _finalize(u, v, ab, bb, Mb, reg, xp)
    y = cost if value == "transport" else obj
    if not batched:
        y = y[0]
    res = dict(f=f, g=g, P=P, M=Mb, ab=ab, bb=bb, reg=reg, value=value, batched=batched,
               shapes=(tuple(a.shape), tuple(b.shape), tuple(M.shape)), dtypes=(a.dtype, b.dtype, M.dtype))
    return xp.astype(y, M.dtype), res


def sinkhorn2(a, b, M, *, reg, method="log", tol=1e-9, max_iter=1000, value="transport"):
    r"""Entropic OT value as a differentiable function of (a, b, M); see :func:`sinkhorn` for the solver.

    Parameters
    ----------
    a, b, M : as in :func:`sinkhorn`
    reg : float
    method, tol, max_iter : as in :func:`sinkhorn`
    value : {"transport", "objective"}
        ``"transport"`` returns :math:`\langle P^\star, M\rangle` (what POT's ``sinkhorn2`` returns);
        ``"objective"`` returns the entropic objective
        :math:`\langle P^\star, M\rangle + \varepsilon\sum P^\star\log P^\star = \langle f, a\rangle + \langle g, b\rangle`.

    Returns
    -------
    array, shape () or (batch,)

    Notes
    -----
    VJP (registered as ``"ot.sinkhorn2"``), never by unrolling the iterations:

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
    return _sinkhorn2_forward(a, b, M, reg, method, tol, max_iter, value)[0]


def sinkhorn2_fwd(a, b, M, *, reg, method="log", tol=1e-9, max_iter=1000, value="transport"):
    return _sinkhorn2_forward(a, b, M, reg, method, tol, max_iter, value)


def _center(grad, w, xp):
    """Gradient of the internally normalised weights: subtract the w-weighted mean (finite part only)."""
    ok = w > 0
    gz = xp.where(ok, grad, xp.zeros_like(grad))
    return grad - xp.sum(gz * w, axis=-1, keepdims=True)


def sinkhorn2_bwd(res, dy):
    f, g, P, Mb, ab, bb, reg = (res[k] for k in ("f", "g", "P", "M", "ab", "bb", "reg"))
    xp = compat.array_namespace(P)
    dy = xp.astype(dy, P.dtype)
    if not res["batched"]:
        dy = xp.reshape(dy, (1,))
    dyb = dy[:, None]
    if res["value"] == "objective":
        # zero-weight atoms have f = -inf: use the soft c-transform there (the finite part of the potential)
        s = 1.0 / reg
        fc = -reg * _lse(g[:, None, :] * s - Mb * s, 2, xp)
        gc = -reg * _lse(f[:, :, None] * s - Mb * s, 1, xp)
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
    if not res["batched"]:
        dM = dM[0, ...]
    sa, sb, _ = res["shapes"]
    if len(sa) == 1:                                        # one weight vector shared by the batch
        da = xp.sum(da, axis=0)
    if len(sb) == 1:
        db = xp.sum(db, axis=0)
    ta, tb, tM = res["dtypes"]
    return xp.astype(da, ta), xp.astype(db, tb), xp.astype(dM, tM)


ops.register("ot.sinkhorn2", sinkhorn2, sinkhorn2_fwd, sinkhorn2_bwd)
