"""Gromov-Wasserstein and fused Gromov-Wasserstein: exact (conditional gradient) and entropic, with VJPs.

One problem object (:class:`_Problem`) holds the decomposition of the loss (Peyré, Cuturi, Solomon 2016,
proposition 1), :math:`L(x, y) = f_1(x) + f_2(y) - h_1(x) h_2(y)`, so that the tensor product
:math:`(L \\otimes T)_{ij} = \\sum_{kl} L(C^1_{ik}, C^2_{jl}) T_{kl}` costs two matrix products,
``constC - h1(C1) T h2(C2)^T`` (for T with marginals p, q).  Both solvers run on it:

- the conditional gradient (Frank-Wolfe) solver linearises the objective at T, solves the exact transport
  problem with that cost (:mod:`optnorm.ot._lp`, the network simplex on the host) and takes the exact step
  of the quadratic line search;
- the entropic solver repeats ``T <- Sinkhorn(gradient(T), reg)`` (projected mirror descent, "PGD", or the
  proximal point variant "PPA"), the log-domain Sinkhorn iterations of :mod:`optnorm.ot._common`,
  warm-started from the previous outer iteration's potentials.

For the square loss C1, C2 (and M) are divided by a power of two first (exact: the objective scales by its
square), so the tolerances are relative to the problem's size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np

from .._lib import compat, convergence
from .._lib.api import public, public_class, vjp
from .._lib.roles import Bool, Callback, Choice, Cost, Float, Int, NonNegative, Positive, Scalar, Weights
from .._lib.solver import IterState, Monitor, Result
from .._lib.typing import Array
from . import _common as cm
from . import _lp

LOSSES = ("square_loss", "kl_loss")
SOLVERS = ("PGD", "PPA")
_EPS_LOG = 1e-18          # POT's guard inside the logs of the KL loss
_EPS_DIV = 1e-15          # and in the division of its C2 gradient


@public_class
@dataclass(frozen=True, repr=False)
class GWState(IterState):
    """What a Gromov-Wasserstein callback sees after each outer iteration.

    Attributes
    ----------
    n_iter : int
        Outer iterations done.
    error : float
        The stopping quantity: relative change of the objective (conditional gradient) or Frobenius norm of
        the change of the plan (entropic).
    plan : array (n, m)
        The current plan.
    cost : float
        The current objective (without the entropy), in the inputs' units.
    """
    plan: Any = None
    cost: float = math.nan


@public_class
@dataclass(frozen=True, repr=False)
class GWResult(Result):
    """Result of :func:`gromov_wasserstein` and :func:`fused_gromov_wasserstein`.

    Attributes
    ----------
    plan : array (n, m)
        The coupling found (a local optimum: the problem is not convex).
    cost : 0-d array
        The objective at ``plan`` without the entropy: :math:`\\sum L(C^1_{ik}, C^2_{jl}) T_{ij} T_{kl}`, or for
        the fused problem :math:`(1 - \\alpha)\\langle M, T\\rangle + \\alpha\\,GW(T)` (POT's ``gw_dist`` /
        ``fgw_dist``).
    gw_cost : 0-d array
        The Gromov-Wasserstein term :math:`\\sum L(C^1_{ik}, C^2_{jl}) T_{ij} T_{kl}` alone.
    f : array (n,)
        Source potential of the linearised problem at ``plan`` (exact: the transport duals of its gradient,
        in the gauge :math:`\\langle p, f\\rangle = \\langle q, g\\rangle`; entropic: the last Sinkhorn potentials).
    g : array (m,)
        Target potential.
    n_iter : int
        Outer iterations (conditional-gradient steps or Sinkhorn projections).
    converged : bool
        Whether ``tol`` was met.
    errors : list of float
        The stopping quantity after each outer iteration.
    loss : str
        ``"square_loss"`` or ``"kl_loss"``.
    reg : float or None
        Entropic regularisation (None: exact).
    alpha : float
        Weight of the structure term (1 for plain Gromov-Wasserstein).
    """
    plan: Any
    cost: Any
    gw_cost: Any
    f: Any
    g: Any
    n_iter: int
    converged: bool
    errors: list = field(default_factory=list)
    loss: str = "square_loss"
    reg: float | None = None
    alpha: float = 1.0


# ---------------------------------------------------------------------------------------------- the problem
class _Problem:
    """The (fused) GW objective on scaled inputs: ``(1 - alpha) <M, T> + alpha GW(T)`` (M None: plain GW)."""

    def __init__(self, C1, C2, p, q, M, *, loss, alpha, symmetric, fn):
        xp = compat.array_namespace(C1, C2, p, q, M)
        self.xp, self.fn, self.loss, self.alpha = xp, fn, loss, float(alpha)
        cdt = compat.compute_dtype(C1, xp)
        for z in (C2, M, p, q):
            if z is not None and z.dtype == getattr(xp, "float64", None):
                cdt = z.dtype
        self.dtype = cdt
        n, m = C1.shape[0], C2.shape[0]
        dev = compat.device(C1)
        C1 = compat.cast(compat.detach(C1), cdt, xp)
        C2 = compat.cast(compat.detach(C2), cdt, xp)
        M = None if M is None else compat.cast(compat.detach(M), cdt, xp)
        p = xp.full((n,), 1.0 / n, dtype=cdt, device=dev) if p is None else compat.cast(compat.detach(p), cdt, xp)
        q = xp.full((m,), 1.0 / m, dtype=cdt, device=dev) if q is None else compat.cast(compat.detach(q), cdt, xp)
        self.p, self.q = p / xp.sum(p), q / xp.sum(q)
        if loss == "square_loss":
            t = cm.pow2_scale(xp, (C1, None), (C2, None))    # GW scales by t^2, so M by t^2 too
            self.t2 = t * t
            C1, C2 = C1 / t, C2 / t
            M = None if M is None else M / self.t2
        else:
            self.t2 = xp.ones((), dtype=cdt, device=dev)
            _check_kl(C1, C2, fn, xp)
        self.C1, self.C2 = C1, C2
        self.symmetric = _symmetric(C1, C2, symmetric, fn, xp)
        self.M = None if M is None else (1.0 - self.alpha) * M   # the linear part, weight included
        self.constC, self.h1, self.h2 = self._matrices(C1, C2)
        self.f1 = _low_rank(self.h1, xp)
        self.f2 = _low_rank(self.h2, xp)
        if not self.symmetric:
            self.constCt, self.h1t, self.h2t = self._matrices(xp.matrix_transpose(C1), xp.matrix_transpose(C2))
            self.f1t = None if self.f1 is None else (xp.matrix_transpose(self.f1[1]), xp.matrix_transpose(self.f1[0]))
            self.f2t = None if self.f2 is None else (xp.matrix_transpose(self.f2[1]), xp.matrix_transpose(self.f2[0]))

    def _matrices(self, C1, C2):
        xp, p, q = self.xp, self.p, self.q
        if self.loss == "square_loss":
            f1, f2, h1, h2 = C1 * C1, C2 * C2, C1, 2.0 * C2
        else:
            f1 = C1 * xp.log(C1 + _EPS_LOG) - C1
            f2, h1, h2 = C2, C1, xp.log(C2 + _EPS_LOG)
        constC = (f1 @ p)[:, None] + (f2 @ q)[None, :]
        return constC, h1, h2

    def sandwich(self, T, transposed=False):
        """h1 T h2^T, through the low-rank factors of h1 / h2 where they have them (O((r1 + r2) n m))."""
        mT = self.xp.matrix_transpose
        h1, h2 = (self.h1t, self.h2t) if transposed else (self.h1, self.h2)
        f1, f2 = (self.f1t, self.f2t) if transposed else (self.f1, self.f2)
        if f1 is None and f2 is None:
            return h1 @ T @ mT(h2)
        if f1 is None:                                  # h1 T B2^T A2^T
            return (h1 @ (T @ mT(f2[1]))) @ mT(f2[0])
        inner = f1[1] @ T                               # B1 T  (r1, m)
        inner = inner @ mT(h2) if f2 is None else (inner @ mT(f2[1])) @ mT(f2[0])
        return f1[0] @ inner

    def tens(self, T, transposed=False):
        """L (x) T = constC - h1 T h2^T (for T with marginals p, q)."""
        return (self.constCt if transposed else self.constC) - self.sandwich(T, transposed)

    def gw(self, T):
        return self.xp.sum(self.tens(T) * T)

    def gw_grad(self, T):
        if self.symmetric:
            return 2.0 * self.tens(T)
        return self.tens(T) + self.tens(T, transposed=True)

    def objective(self, T):
        val = self.alpha * self.gw(T)
        return val if self.M is None else val + self.xp.sum(self.M * T)

    def grad(self, T):
        g = self.alpha * self.gw_grad(T)
        return g if self.M is None else g + self.M

    def line_search(self, G, dG):
        """Exact minimiser in [0, 1] of the objective on G + s dG (a quadratic: a s^2 + b s), and a, b."""
        xp = self.xp
        dot = self.sandwich(dG)
        a = -self.alpha * float(xp.sum(dot * dG))
        if self.symmetric:
            b = -2.0 * self.alpha * float(xp.sum(dot * G))
        else:
            b = -self.alpha * float(xp.sum(dot * G) + xp.sum(self.sandwich(G) * dG))
        if self.M is not None:
            b += float(xp.sum(self.M * dG))
        if a > 0:
            s = min(1.0, max(0.0, -b / (2.0 * a)))
        else:
            s = 1.0 if a + b < 0 else 0.0
        return s, a * s * s + b * s


def _low_rank(H, xp, max_rank=24, rtol=1e-13):
    """Factors (A, B) with H = A B to ``rtol`` (Frobenius, relative) when H has numerical rank <= max_rank and is
    large enough for the factored products to pay, else None.

    Squared Euclidean distance matrices of points in R^d have rank d + 2, so the tensor products of the square
    loss then cost O(r n m) instead of O(n^2 m).  A randomised range finder (Halko, Martinsson, Tropp 2011) with
    a fixed seed; the factorisation is used only when its residual is at round-off level, so the products
    equal the dense ones to about ``rtol``.
    """
    n, m = H.shape
    k = max_rank + 8
    if min(n, m) < 4 * k or not compat.is_concrete(H):
        return None
    Om = compat.from_numpy_like(np.random.default_rng(0).standard_normal((m, k)).astype(cm.np_dtype(H)), H)
    Q, _ = xp.linalg.qr(H @ Om)                          # (n, k) orthonormal basis of the range
    B = xp.matrix_transpose(Q) @ H                       # (k, m)
    norm = float(xp.sqrt(xp.sum(H * H)))
    if not norm > 0:
        return None
    if float(xp.sqrt(xp.sum((H - Q @ B) ** 2))) > rtol * norm:
        return None
    U, S, Vt = xp.linalg.svd(B, full_matrices=False)     # (k, k), (k,), (k, m): drop the null directions
    r = max(1, int(xp.sum(xp.astype(S > S[0] * 1e-15, xp.int64))))
    return (Q @ U[:, :r]) * S[None, :r], Vt[:r, :]


def _symmetric(C1, C2, symmetric, fn, xp):
    """Whether both structure matrices are symmetric (to 1e-10 of their scale); ``symmetric=True`` must hold."""
    def asym(C):
        if not compat.is_concrete(C):
            return 0.0
        top = float(xp.max(xp.abs(C)))
        return float(xp.max(xp.abs(C - xp.matrix_transpose(C)))) / (top if top > 0 else 1.0)

    if symmetric is False:
        return False
    d1, d2 = asym(C1), asym(C2)
    if symmetric is True:
        for nm, d in (("C1", d1), ("C2", d2)):
            if d > 1e-10:
                raise ValueError(f"{fn}: symmetric=True but {nm} is not symmetric (max |{nm} - {nm}^T| is {d:.3g} of "
                                 f"its largest entry): pass symmetric=None to detect it, or False")
        return True
    return d1 <= 1e-10 and d2 <= 1e-10


def _check_kl(C1, C2, fn, xp):
    for nm, C in (("C1", C1), ("C2", C2)):
        if compat.is_concrete(C) and float(xp.min(C)) < 0:
            raise ValueError(f"{fn}: loss='kl_loss' needs {nm} >= 0 (it takes x log x and log y); {nm} has the entry "
                             f"{float(xp.min(C)):.6g}")


def _check_plan0(G0, p, q, fn, xp):
    if G0 is None:
        return None
    G = compat.cast(compat.detach(G0), p.dtype, xp)
    if compat.is_concrete(G):
        if float(xp.min(G)) < 0:
            raise ValueError(f"{fn}: G0 must be non-negative; its smallest entry is {float(xp.min(G)):.6g}")
        tol = 1e-6 if p.dtype == getattr(xp, "float64", None) else 1e-4
        err = max(float(xp.max(xp.abs(xp.sum(G, axis=1) - p))), float(xp.max(xp.abs(xp.sum(G, axis=0) - q))))
        if err > tol:
            raise ValueError(f"{fn}: G0 must have marginals p and q (the weights); they are off by {err:.3g}")
    return G


# ---------------------------------------------------------------------------------------------- solvers
def _conditional_gradient(P: _Problem, G, *, tol, max_iter, mon: Monitor, fn):
    """Frank-Wolfe on couplings: exact LP per step (host network simplex), exact quadratic line search."""
    xp = P.xp
    p64 = np.asarray(compat.to_numpy(P.p), np.float64)
    q64 = np.asarray(compat.to_numpy(P.q), np.float64)
    cost = float(P.objective(G))
    scale = P.t2
    for it in range(1, max_iter + 1):
        Mi = compat.to_numpy(P.grad(G))
        sol = _lp.solve(p64, q64, np.asarray(Mi, np.float64))
        Gc = compat.from_numpy_like(sol.plan.astype(cm.np_dtype(G)), G)
        dG = Gc - G
        s, delta = P.line_search(G, dG)
        old = cost
        G = G + s * dG
        cost = old + delta
        err = abs(cost - old) / max(abs(cost), 1.0)
        if mon.update(it, err, lambda: GWState(it, err, G, cost * float(scale))):
            break
    return G


def _inner_sinkhorn(Mb, f, g, loga, logb, b, reg, *, tol, max_iter, xp):
    """Log-domain Sinkhorn on the batched (1, n, m) cost from warm potentials, POT's stopping rule (L2 column
    marginal error below ``tol``, checked every 10 iterations).  Returns (f, g)."""
    it = 0
    while it < max_iter:
        k = min(10, max_iter - it)
        f, g, lc = cm.iterations(Mb, f, g, loga=loga, logb=logb, reg=reg, n_steps=k, xp=xp)
        it += k
        col = xp.exp(xp.clip((g + lc) / reg, None, 300.0))
        if not compat.is_concrete(col) or float(xp.max(cm.marginal_norm(col - b, 2, xp))) < tol:
            break
    return f, g


def _entropic(P: _Problem, G, reg, *, solver, tol, max_iter, inner_tol, inner_max_iter, mon: Monitor):
    """T <- Sinkhorn(grad(T)) (PGD) or Sinkhorn(grad(T) - reg log T) (PPA), warm-started potentials."""
    xp = P.xp
    loga, logb = cm.log_weights(P.p, xp)[None, :], cm.log_weights(P.q, xp)[None, :]
    b = P.q[None, :]
    f = xp.zeros((1, P.p.shape[0]), dtype=P.dtype, device=compat.device(P.p))
    g = xp.zeros((1, P.q.shape[0]), dtype=P.dtype, device=compat.device(P.p))
    logT = None
    scale = P.t2
    for it in range(1, max_iter + 1):
        K = P.grad(G)
        if solver == "PPA":
            K = K - reg * (logT if logT is not None else loga[0, :, None] + logb[0, None, :])
        f, g = _inner_sinkhorn(K[None, ...], f, g, loga, logb, b, reg, tol=inner_tol, max_iter=inner_max_iter, xp=xp)
        logT = (f[0, :, None] + g[0, None, :] - K) / reg
        G_new = xp.exp(logT)
        err = float(xp.sqrt(xp.sum((G_new - G) ** 2))) if compat.is_concrete(G_new) else None
        G = G_new
        e_ = float("nan") if err is None else err
        if mon.update(it, err, lambda: GWState(it, e_, G, float(P.objective(G)) * float(scale))):
            break
    return G, f[0, ...], g[0, ...]


def _solve(C1, C2, p, q, M, *, loss, alpha, reg, symmetric, G0, solver, tol, max_iter, inner_tol, inner_max_iter,
           callback, callback_every, progress, fn, need_duals=True):
    """Run the solver; returns (problem, plan, f, g, result fields) in the compute dtype (scaled units inside)."""
    if not all(compat.is_concrete(z) for z in (C1, C2, p, q, M, G0) if z is not None):
        raise TypeError(f"{fn}: the solver runs a host loop (and, without reg, the exact transport solver): call it "
                        "outside jax.jit")
    P = _Problem(C1, C2, p, q, M, loss=loss, alpha=alpha, symmetric=symmetric, fn=fn)
    xp = P.xp
    G = _check_plan0(G0, P.p, P.q, fn, xp)
    if G is None:
        G = P.p[:, None] * P.q[None, :]
    if max_iter is None:
        max_iter = 10_000 if reg is None else 1000
    tol = convergence.default_tol(1e-9, P.dtype) if tol is None else float(tol)
    inner_tol = convergence.default_tol(1e-9, P.dtype) if inner_tol is None else float(inner_tol)
    mon = Monitor(fn, max_iter=max_iter, tol=tol, callback=callback, callback_every=callback_every,
                  progress=progress)
    if reg is None:
        G = _conditional_gradient(P, G, tol=tol, max_iter=max_iter, mon=mon, fn=fn)
        f = g = None
        if need_duals:
            sol = _lp.solve(np.asarray(compat.to_numpy(P.p), np.float64), np.asarray(compat.to_numpy(P.q), np.float64),
                            np.asarray(compat.to_numpy(P.grad(G)), np.float64))
            f = compat.from_numpy_like(sol.f.astype(cm.np_dtype(G)), G)
            g = compat.from_numpy_like(sol.g.astype(cm.np_dtype(G)), G)
    else:
        G, f, g = _entropic(P, G, float(reg) / float(P.t2), solver=solver, tol=tol, max_iter=max_iter,
                            inner_tol=inner_tol, inner_max_iter=inner_max_iter, mon=mon)
    mon.close()
    if f is not None:
        f, g = f * P.t2, g * P.t2
    return P, G, f, g, mon


def _finish(P: _Problem, G, f, g, mon, *, loss, reg, alpha, like, fn):
    xp = P.xp
    dt = like.dtype
    gw_s = P.gw(G)
    cost = (P.alpha * gw_s if P.M is None else P.alpha * gw_s + xp.sum(P.M * G)) * P.t2
    gw = gw_s * P.t2
    if not (math.isfinite(float(cost)) and math.isfinite(float(gw))):
        raise ValueError(f"{fn}: the Gromov-Wasserstein cost of C1 and C2 overflows {compat.dtype_name(P.dtype)} "
                         "(squared entries of C1, C2 beyond its range); rescale them")
    cast = lambda z: None if z is None else compat.cast(z, dt, xp)  # noqa: E731
    return GWResult(plan=cast(G), cost=cast(cost), gw_cost=cast(gw), f=cast(f), g=cast(g), n_iter=mon.n_iter,
                    converged=mon.converged, errors=list(mon.errors), loss=loss,
                    reg=None if reg is None else float(reg), alpha=float(alpha))


# ---------------------------------------------------------------------------------------------- VJP pieces
def _structure_grads(P: _Problem, G, loss, xp):
    """d GW(T) / d C1, d C2 at fixed T (any T; uses its marginals), in the unscaled inputs' units."""
    r = xp.sum(G, axis=1)
    c = xp.sum(G, axis=0)
    GT = xp.matrix_transpose(G)
    if loss == "square_loss":
        t = xp.sqrt(P.t2)
        C1, C2 = P.C1, P.C2                                    # scaled by 1/t: gradients scale by t
        d1 = 2.0 * C1 * (r[:, None] * r[None, :]) - 2.0 * G @ C2 @ GT
        d2 = 2.0 * C2 * (c[:, None] * c[None, :]) - 2.0 * GT @ C1 @ G
        return d1 * t, d2 * t
    C1, C2 = P.C1, P.C2
    d1 = xp.log(C1 + _EPS_DIV) * (r[:, None] * r[None, :]) - G @ xp.log(C2 + _EPS_DIV) @ GT
    d2 = -(GT @ C1 @ G) / (C2 + _EPS_DIV) + c[:, None] * c[None, :]
    return d1, d2


class GWRes(NamedTuple):
    """Residuals of (fused_)gromov_wasserstein2: the gradients at the final plan, for the inputs given."""
    dC1: Any
    dC2: Any
    dM: Any
    dp: Any
    dq: Any
    dtypes: tuple


def _forward2(M, C1, C2, p, q, alpha, kw, fn):
    with compat.no_grad(M, C1, C2, p, q):
        P, G, f, g, mon = _solve(C1, C2, p, q, M, alpha=alpha, fn=fn, **kw)
        res = _finish(P, G, f, g, mon, loss=kw["loss"], reg=kw["reg"], alpha=alpha, like=C1, fn=fn)
        xp = P.xp
        d1, d2 = _structure_grads(P, G, kw["loss"], xp)
        dM = None if M is None else (1.0 - alpha) * G
        dp = None if p is None else f - xp.sum(f * P.p)
        dq = None if q is None else g - xp.sum(g * P.q)
        r = GWRes(alpha * d1, alpha * d2, dM, dp, dq, tuple(None if z is None else z.dtype for z in (M, C1, C2, p, q)))
    return res.cost, r


def _grads(res: GWRes, dy):
    xp = compat.array_namespace(res.dC1)
    out = []
    for gz, dt in zip((res.dM, res.dC1, res.dC2, res.dp, res.dq), res.dtypes):
        out.append(None if gz is None or dt is None else compat.cast(compat.cast(dy, gz.dtype, xp) * gz, dt, xp))
    return out


# ---------------------------------------------------------------------------------------------- public API
def _example(rng, dtype):
    """Two isometric point clouds in shuffled order: the optimum is a permutation (a vertex, so the cost is
    locally a smooth function of C1, C2 and finite differences see the envelope gradient)."""
    x = rng.standard_normal((5, 2))
    perm = np.array([2, 0, 4, 1, 3])
    y = x[perm] @ np.array([[0.0, -1.0], [1.0, 0.0]]) + 0.05 * rng.standard_normal((5, 2))
    C1 = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1)).astype(dtype)
    C2 = np.sqrt(((y[:, None] - y[None]) ** 2).sum(-1)).astype(dtype)
    return (C1, C2), {}


def _example_fused(rng, dtype):
    (C1, C2), _ = _example(rng, dtype)
    M = rng.random((5, 5)).astype(dtype) * 0.1
    return (M, C1, C2), {}


class _Plan(Float):
    """An initial coupling (checked against the weights by the function); the generated example is the
    uniform coupling, which has the marginals of omitted (uniform) weights."""

    def example(self, sizes, rng, dtype):
        shape = self.example_shape(sizes)
        return np.full(shape, 1.0 / (shape[0] * shape[1]), dtype=dtype)


_COMMON = dict(p=Weights("n", optional=True), q=Weights("m", optional=True), loss=Choice(LOSSES),
               reg=Positive(optional=True), symmetric=Bool(optional=True), G0=_Plan("n m", optional=True, finite=True),
               solver=Choice(SOLVERS), tol=NonNegative(optional=True), max_iter=Int(1, optional=True),
               inner_tol=NonNegative(optional=True),
               inner_max_iter=Int(1), callback=Callback(), callback_every=Int(1), progress=Bool())
_STRUCT = dict(C1=Float("n n", finite=True), C2=Float("m m", finite=True))
_CONTRACT = {"jit": "a host loop (and, without reg, the exact transport solver on the host)",
             "vjp": {"fill": ("p", "q")}}                 # G0 is an option (the start), not an input


def _doc(fn):
    """Fill the shared parameter descriptions into a docstring (before @public copies it)."""
    fn.__doc__ = fn.__doc__.replace("{params}", _PARAMS_DOC).replace("{alpha}", _ALPHA_DOC)
    return fn

_PARAMS_DOC = """    p : array, shape (n,), optional
        Weights of the source points (summing to 1), uniform if None.
    q : array, shape (m,), optional
        Weights of the target points, uniform if None.
    loss : {"square_loss", "kl_loss"}, default "square_loss"
        :math:`L(x, y) = (x - y)^2` or :math:`x\\log(x/y) - x + y` (needs C1, C2 >= 0; POT's ``loss_fun``).
    reg : float, optional
        Entropic regularisation :math:`\\varepsilon` (POT's ``epsilon``); None solves the exact problem by
        conditional gradient.
    symmetric : bool, optional
        Whether C1 and C2 are symmetric (None: detected; True is checked).  Asymmetric structures use the
        symmetrised gradient :math:`\\tfrac12(\\nabla_{C} + \\nabla_{C^T})`.
    G0 : array, shape (n, m), optional
        Initial plan (marginals p, q); default :math:`pq^T`.
    solver : {"PGD", "PPA"}, default "PGD"
        Entropic solver: projected (mirror) gradient, or the proximal point variant that also subtracts
        :math:`\\varepsilon\\log T` (Xu et al., "Gromov-Wasserstein learning for graph matching and node
        embedding", ICML 2019).  Ignored without ``reg``.
    tol : float, optional
        Stop when the objective's change is below ``tol * max(|objective|, 1)`` (conditional gradient; POT's
        ``tol_rel`` and ``tol_abs``) or the plan's change :math:`\\|T_{k+1} - T_k\\|_F` is below ``tol``
        (entropic).  Default 1e-9 (POT's) for float64, 100 machine epsilons for float32.
    max_iter : int, optional
        Outer iterations (default 10000 for the conditional gradient, 1000 entropic, as POT).
    inner_tol : float, optional
        Entropic: the inner Sinkhorn stops when the L2 norm of its column-marginal error is below this
        (default as ``tol``; POT's 1e-9), checked every 10 iterations.
    inner_max_iter : int, default 1000
        Entropic: Sinkhorn iterations per outer iteration at most (POT's ``numItermax``).
    callback : callable, optional
        Called as ``callback(state)`` with a :class:`GWState` every ``callback_every`` outer iterations;
        returning True stops.
    callback_every : int, default 1
        Outer iterations between callbacks.
    progress : bool, default False
        Show a progress bar (tqdm when installed) or lines on stderr."""
_ALPHA_DOC = """    alpha : float in [0, 1], default 0.5
        Weight of the structure term: 0 is :func:`emd` on M, 1 is :func:`gromov_wasserstein`."""


@public(**_STRUCT, **_COMMON, example=_example, sizes={"n": 5, "m": 5}, contract=_CONTRACT)
@_doc
def gromov_wasserstein(C1: Array, C2: Array, p: Array | None = None, q: Array | None = None, *,
                       loss: str = "square_loss", reg: float | None = None, symmetric: bool | None = None,
                       G0: Array | None = None, solver: str = "PGD", tol: float | None = None,
                       max_iter: int | None = None, inner_tol: float | None = None, inner_max_iter: int = 1000,
                       callback: Callable | None = None, callback_every: int = 1,
                       progress: bool = False) -> GWResult:
    r"""Gromov-Wasserstein transport between two metric-measure spaces given by their structure matrices.

    .. math::

        GW(C^1, C^2, p, q) = \min_{T \ge 0,\ T1 = p,\ T^T1 = q}\ \sum_{i,j,k,l} L(C^1_{ik}, C^2_{jl})\,T_{ij}T_{kl}
        \ \big[+\ \varepsilon \sum_{ij} T_{ij}\log T_{ij}\big]

    (Mémoli, "Gromov-Wasserstein distances and the metric approach to object matching", 2011; Peyré, Cuturi,
    Solomon, "Gromov-Wasserstein averaging of kernel and distance matrices", ICML 2016).  The loss splits as
    :math:`L(x,y) = f_1(x) + f_2(y) - h_1(x)h_2(y)`, so the tensor product with T is
    :math:`f_1(C^1)p1^T + 1q^Tf_2(C^2)^T - h_1(C^1)\,T\,h_2(C^2)^T` (two matrix products).  Without ``reg`` the
    non-convex problem is solved by conditional gradient from :math:`pq^T`: each step solves the exact
    transport problem with cost :math:`\nabla GW(T)` (the network simplex of :func:`emd`) and takes the exact
    quadratic line search; with ``reg`` by repeated Sinkhorn projections
    :math:`T \leftarrow \mathrm{Sinkhorn}_\varepsilon(\nabla GW(T))` (log domain, warm-started from the previous
    potentials, so later projections take few iterations).  The result is a local optimum.  POT's
    ``ot.gromov.gromov_wasserstein`` / ``entropic_gromov_wasserstein``.

    Parameters
    ----------
    C1 : array, shape (n, n)
        Structure (e.g. distance) matrix of the source space.
    C2 : array, shape (m, m)
        Structure matrix of the target space.
{params}

    Returns
    -------
    GWResult
        ``plan``, ``cost`` (POT's ``gw_dist``), potentials, ``n_iter``, ``converged``, ``errors``.  Stopping
        at ``max_iter`` without meeting ``tol`` warns (:class:`optnorm.ConvergenceWarning`).

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import gromov_wasserstein
    >>> x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    >>> C1 = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    >>> C2 = C1[::-1, ::-1]                                # the same space, points in reverse order
    >>> r = gromov_wasserstein(C1, C2)
    >>> float(r.cost), (r.plan * 3).round(6).tolist()
    (0.0, [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    """
    P, G, f, g, mon = _solve(C1, C2, p, q, None, loss=loss, alpha=1.0, reg=reg, symmetric=symmetric, G0=G0,
                             solver=solver, tol=tol, max_iter=max_iter, inner_tol=inner_tol,
                             inner_max_iter=inner_max_iter, callback=callback, callback_every=callback_every,
                             progress=progress, fn="gromov_wasserstein")
    return _finish(P, G, f, g, mon, loss=loss, reg=reg, alpha=1.0, like=C1, fn="gromov_wasserstein")



def _kw(loss, reg, symmetric, G0, solver, tol, max_iter, inner_tol, inner_max_iter, callback, callback_every,
        progress):
    return dict(loss=loss, reg=reg, symmetric=symmetric, G0=G0, solver=solver, tol=tol, max_iter=max_iter,
                inner_tol=inner_tol, inner_max_iter=inner_max_iter, callback=callback, callback_every=callback_every,
                progress=progress)


@public(**_STRUCT, **_COMMON, example=_example, sizes={"n": 5, "m": 5}, contract=_CONTRACT)
@_doc
def gromov_wasserstein2(C1: Array, C2: Array, p: Array | None = None, q: Array | None = None, *,
                        loss: str = "square_loss", reg: float | None = None, symmetric: bool | None = None,
                        G0: Array | None = None, solver: str = "PGD", tol: float | None = None,
                        max_iter: int | None = None, inner_tol: float | None = None, inner_max_iter: int = 1000,
                        callback: Callable | None = None, callback_every: int = 1,
                        progress: bool = False) -> Array:
    r"""The Gromov-Wasserstein cost of :func:`gromov_wasserstein` as a differentiable function of C1, C2, p, q.

    The value is :math:`\sum L(C^1_{ik}, C^2_{jl}) T_{ij}T_{kl}` at the plan found (without the entropy; POT's
    ``gromov_wasserstein2`` / ``entropic_gromov_wasserstein2``).  The VJP holds the plan fixed (envelope
    theorem, as POT's ``gromov_wasserstein2``): for the square loss

    .. math::

        \partial_{C^1} = 2\,C^1 \odot pp^T - 2\,T C^2 T^T,\qquad \partial_{C^2} = 2\,C^2 \odot qq^T - 2\,T^T C^1 T

    (KL loss: :math:`\log C^1 \odot pp^T - T\log(C^2)T^T` and :math:`qq^T - (T^TC^1T)/C^2`), and the weights
    get the transport potentials of the linearised problem, centred (:math:`f - \langle f, p\rangle`).
    Without ``reg`` this is the derivative wherever the optimal plan is locally unique; with ``reg`` it is
    the derivative of the entropic objective (which includes :math:`\varepsilon\sum T\log T`), not of the
    reported value through the plan.

    Parameters
    ----------
    C1 : array, shape (n, n)
        Structure matrix of the source space.
    C2 : array, shape (m, m)
        Structure matrix of the target space.
{params}

    Returns
    -------
    0-d array
        The Gromov-Wasserstein cost, in the library and dtype of C1.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import gromov_wasserstein2
    >>> C1 = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> float(gromov_wasserstein2(C1, 2 * C1))               # (1 - 2)^2 on the two off-diagonal pairs, / 4 * 2
    0.5
    """
    return _forward2(None, C1, C2, p, q, 1.0, _kw(loss, reg, symmetric, G0, solver, tol, max_iter, inner_tol,
                                                   inner_max_iter, callback, callback_every, progress),
                     "gromov_wasserstein2")[0]



def gromov_wasserstein2_fwd(C1, C2, p=None, q=None, *, loss="square_loss", reg=None, symmetric=None, G0=None,
                            solver="PGD", tol=None, max_iter=None, inner_tol=None, inner_max_iter=1000,
                            callback=None, callback_every=1, progress=False):
    return _forward2(None, C1, C2, p, q, 1.0, _kw(loss, reg, symmetric, G0, solver, tol, max_iter, inner_tol,
                                                   inner_max_iter, callback, callback_every, progress),
                     "gromov_wasserstein2")


def gromov_wasserstein2_bwd(res: GWRes, dy):
    _, d1, d2, dp, dq = _grads(res, dy)
    return d1, d2, dp, dq


vjp(gromov_wasserstein2, gromov_wasserstein2_fwd, gromov_wasserstein2_bwd, validate=True)


_FUSED = dict(M=Cost("n m"), **_STRUCT, alpha=Scalar(0, 1))


@public(**_FUSED, **_COMMON, example=_example_fused, sizes={"n": 5, "m": 5}, contract=_CONTRACT)
@_doc
def fused_gromov_wasserstein(M: Array, C1: Array, C2: Array, p: Array | None = None, q: Array | None = None, *,
                             alpha: float = 0.5, loss: str = "square_loss", reg: float | None = None,
                             symmetric: bool | None = None, G0: Array | None = None, solver: str = "PGD",
                             tol: float | None = None, max_iter: int | None = None, inner_tol: float | None = None,
                             inner_max_iter: int = 1000, callback: Callable | None = None, callback_every: int = 1,
                             progress: bool = False) -> GWResult:
    r"""Fused Gromov-Wasserstein transport: features and structure together.

    .. math::

        FGW_\alpha = \min_{T \ge 0,\ T1 = p,\ T^T1 = q}\ (1 - \alpha)\sum_{ij} M_{ij}T_{ij}
        + \alpha \sum_{i,j,k,l} L(C^1_{ik}, C^2_{jl})\,T_{ij}T_{kl}\ \big[+\ \varepsilon\sum_{ij}T_{ij}\log T_{ij}\big]

    (Vayer, Chapel, Flamary, Tavenard, Courty, "Optimal transport for structured data with application on
    graphs", ICML 2019).  Solved as :func:`gromov_wasserstein` is, with the linear term added to the gradient
    and to the line search.  POT's ``ot.gromov.fused_gromov_wasserstein`` /
    ``entropic_fused_gromov_wasserstein``.

    Parameters
    ----------
    M : array, shape (n, m)
        Feature cost between the source and target points.
    C1 : array, shape (n, n)
        Structure matrix of the source space.
    C2 : array, shape (m, m)
        Structure matrix of the target space.
{params}
{alpha}

    Returns
    -------
    GWResult
        ``plan``, ``cost`` (POT's ``fgw_dist``), ``gw_cost`` (the structure term), potentials, ``n_iter``,
        ``converged``, ``errors``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import fused_gromov_wasserstein
    >>> C = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> M = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> r = fused_gromov_wasserstein(M, C, C, alpha=0.5)   # the identity matches features and structure
    >>> float(r.cost), (r.plan * 2).tolist()
    (0.0, [[1.0, 0.0], [0.0, 1.0]])
    """
    P, G, f, g, mon = _solve(C1, C2, p, q, M, loss=loss, alpha=alpha, reg=reg, symmetric=symmetric, G0=G0,
                             solver=solver, tol=tol, max_iter=max_iter, inner_tol=inner_tol,
                             inner_max_iter=inner_max_iter, callback=callback, callback_every=callback_every,
                             progress=progress, fn="fused_gromov_wasserstein")
    return _finish(P, G, f, g, mon, loss=loss, reg=reg, alpha=alpha, like=C1, fn="fused_gromov_wasserstein")



@public(**_FUSED, **_COMMON, example=_example_fused, sizes={"n": 5, "m": 5}, contract=_CONTRACT)
@_doc
def fused_gromov_wasserstein2(M: Array, C1: Array, C2: Array, p: Array | None = None, q: Array | None = None, *,
                              alpha: float = 0.5, loss: str = "square_loss", reg: float | None = None,
                              symmetric: bool | None = None, G0: Array | None = None, solver: str = "PGD",
                              tol: float | None = None, max_iter: int | None = None, inner_tol: float | None = None,
                              inner_max_iter: int = 1000, callback: Callable | None = None,
                              callback_every: int = 1, progress: bool = False) -> Array:
    r"""The fused Gromov-Wasserstein cost of :func:`fused_gromov_wasserstein`, differentiable in M, C1, C2, p, q.

    The value is :math:`(1 - \alpha)\langle M, T\rangle + \alpha\,GW(T)` at the plan found (POT's
    ``fused_gromov_wasserstein2``).  The VJP holds the plan fixed: :math:`\partial_M = (1 - \alpha)T`,
    :math:`\partial_{C^1}, \partial_{C^2}` are :math:`\alpha` times those of :func:`gromov_wasserstein2`, and
    the weights get the centred potentials of the linearised problem.

    Parameters
    ----------
    M : array, shape (n, m)
        Feature cost.
    C1 : array, shape (n, n)
        Structure matrix of the source space.
    C2 : array, shape (m, m)
        Structure matrix of the target space.
{params}
{alpha}

    Returns
    -------
    0-d array
        The fused cost, in the library and dtype of C1.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import fused_gromov_wasserstein2
    >>> C = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> float(fused_gromov_wasserstein2(np.ones((2, 2)), C, C, alpha=0.25))
    0.75
    """
    return _forward2(M, C1, C2, p, q, float(alpha), _kw(loss, reg, symmetric, G0, solver, tol, max_iter, inner_tol,
                                                        inner_max_iter, callback, callback_every, progress),
                     "fused_gromov_wasserstein2")[0]



def fused_gromov_wasserstein2_fwd(M, C1, C2, p=None, q=None, *, alpha=0.5, loss="square_loss", reg=None,
                                  symmetric=None, G0=None, solver="PGD", tol=None, max_iter=None, inner_tol=None,
                                  inner_max_iter=1000, callback=None, callback_every=1, progress=False):
    return _forward2(M, C1, C2, p, q, float(alpha), _kw(loss, reg, symmetric, G0, solver, tol, max_iter, inner_tol,
                                                        inner_max_iter, callback, callback_every, progress),
                     "fused_gromov_wasserstein2")


def fused_gromov_wasserstein2_bwd(res: GWRes, dy):
    dM, d1, d2, dp, dq = _grads(res, dy)
    return dM, d1, d2, dp, dq


vjp(fused_gromov_wasserstein2, fused_gromov_wasserstein2_fwd, fused_gromov_wasserstein2_bwd, validate=True)
