"""Unbalanced entropic optimal transport: marginals relaxed by KL divergences (POT's ``sinkhorn_unbalanced``).

Problem, with reference measure :math:`a\\otimes b` (POT's default ``reg_type="kl"``, GeomLoss's):

.. math::

    \\min_{P\\ge0}\\ \\langle P, M\\rangle + \\varepsilon\\,\\mathrm{KL}(P\\,|\\,a\\otimes b)
    + \\rho_1\\mathrm{KL}(P1\\,|\\,a) + \\rho_2\\mathrm{KL}(P^T1\\,|\\,b),\\qquad
    \\mathrm{KL}(p|q) = \\sum p\\log\\tfrac pq - p + q .

It runs on the log-domain Sinkhorn machinery of :mod:`optnorm.ot.sinkhorn` (dense kernels, or the lazy
point-cloud ones for a :class:`~optnorm.ot.PointCloud` cost): in the potentials :math:`f, g` of
:math:`P = e^{(f\\oplus g - M)/\\varepsilon}` the updates are the balanced ones with the soft minimum damped by
:math:`\\phi_k = \\rho_k/(\\rho_k + \\varepsilon)` (Chizat, Peyré, Schmitzer, Vialard, "Scaling algorithms for
unbalanced optimal transport problems", Math. Comp. 2018).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.roles import Bool, Callback, Choice, Cost, Int, NonNegative, Option, Perturbation, Outcome, Positive, \
    Role, Weights
from .._lib.solver import Monitor
from .._lib.typing import Array
from . import _common as cm
from .pointcloud import PointCloud
from .sinkhorn import SinkhornResult, SinkhornState, check_warm_start, solve_public, solve

INF = math.inf
DIVERGENCES = ("kl",)
METHODS = ("translation_invariant", "log", "eps_scaling")


class RegM(Role):
    """The marginal relaxation: a number in (0, inf] or a pair (rho_a, rho_b); inf is a hard marginal."""

    doc = "number in (0, inf] or a pair of them"

    def check(self, value, name, call):
        vals = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        if len(vals) not in (1, 2):
            raise call.error(ValueError, f"{name} must be a number or a pair of numbers, got {len(vals)} entries")
        out = []
        for i, v in enumerate(vals):
            label = name if len(vals) == 1 else f"{name}[{i}]"
            if isinstance(v, (bool,)) or not isinstance(v, numbers.Real):
                raise call.error(TypeError, f"{label} must be a real number (inf for a hard marginal), got "
                                            f"{type(v).__name__}")
            v = float(v)
            if math.isnan(v) or v <= 0:
                raise call.error(ValueError, f"{label} must be in (0, inf] (inf: a hard marginal), got {v!r}")
            out.append(v)
        return (out[0], out[0]) if len(out) == 1 else tuple(out)

    def example(self, sizes, rng, dtype):
        return 1.0

    def perturbations(self, value):
        P, O = Perturbation, Outcome
        return [P("NaN", lambda v, r: float("nan"), O.ERROR), P("string", lambda v, r: "abc", O.ERROR),
                P("bool", lambda v, r: True, O.ERROR), P("zero", lambda v, r: 0.0, O.ERROR),
                P("negative", lambda v, r: -1.0, O.ERROR), P("triple", lambda v, r: (1.0, 1.0, 1.0), O.ERROR),
                P("pair", lambda v, r: (v, 2.0 * v), O.FINITE)]


def _phi(rho, reg):
    return tuple(1.0 if r == INF else r / (r + reg) for r in rho)


def ti_hooks(rho):
    """``hook_for(a, b) -> (reg -> hook)``: the translation-invariant Sinkhorn adjustment of each half-step.

    Séjourné, Vialard, Peyré, "Faster Unbalanced Optimal Transport: Translation invariant Sinkhorn and 1-D
    Frank-Wolfe", AISTATS 2022.  The dual is invariant along (f + t, g - t) only up to the marginal terms; its
    maximum over t is the TI dual H(f, g) = -(rho1 + rho2) A(f)^(rho1/(rho1+rho2)) B(g)^(rho2/(rho1+rho2)) - reg
    <a (x) b, e^{(f + g - M)/reg}>, A = <a, e^{-f_a/rho1}>, B = <b, e^{-g_b/rho2}> (f_a = f - reg log a).  Its exact
    maximisation in f for fixed g (derived here) is the damped Sinkhorn update plus a constant,

        f_a = -phi1 softmin_rows(g) + reg rho2 / (rho1 + rho2 + reg) * log(B(g) / A(f_hat)),

    f_hat the damped update (and symmetrically for g), so each half-step costs O(n + m) more; the slow mode of
    plain unbalanced Sinkhorn (the total mass, contracting like 1 - reg/rho per iteration) is solved exactly.
    """
    r1, r2 = rho
    if r1 == INF and r2 == INF:
        return None

    def factory(ab, bb):
        xp = compat.array_namespace(ab, bb)
        la, lb = cm.log_weights(ab, xp), cm.log_weights(bb, xp)

        def logmass(logw, h, r, reg):
            """log sum_i w_i e^{-(h_i - reg log w_i)/r} (log of the total mass for r = inf), (B, 1)."""
            if r == INF:
                return cm.lse(logw, -1, xp, keepdims=True)
            pos = logw > -math.inf
            z = xp.zeros_like(h)
            e = xp.where(pos, logw - (xp.where(pos, h, z) - reg * xp.where(pos, logw, z)) / r, logw)
            return cm.lse(e, -1, xp, keepdims=True)

        def at(reg):
            den = r1 + r2 + reg
            c_row = 0.0 if r1 == INF else (reg if r2 == INF else reg * r2 / den)    # reg rho2 / (rho1+rho2+reg)
            c_col = 0.0 if r2 == INF else (reg if r1 == INF else reg * r1 / den)

            def hook(kind, new, other):
                if (c_col if kind == "cols" else c_row) == 0.0:
                    return new
                if kind == "cols":           # new = g_hat, other = f
                    k = c_col * (logmass(la, other, r1, reg) - logmass(lb, new, r2, reg))
                    return xp.where(lb > -math.inf, new + k, new)
                k = c_row * (logmass(lb, other, r2, reg) - logmass(la, new, r1, reg))
                return xp.where(la > -math.inf, new + k, new)

            def post(f, g):
                """(f + t, g - t) with the optimal translation t = rho1 rho2/(rho1 + rho2) log(A(f)/B(g))."""
                rt = r2 if r1 == INF else (r1 if r2 == INF else r1 * r2 / (r1 + r2))
                t = rt * (logmass(la, f, r1, reg) - logmass(lb, g, r2, reg))
                return xp.where(la > -math.inf, f + t, f), xp.where(lb > -math.inf, g - t, g)
            return hook, post
        return at
    return factory


def _kl(p, q, xp):
    """Generalised KL(p | q) = sum p log(p/q) - p + q along the last axis (0 log 0 = 0)."""
    pos = p > 0
    lg = xp.log(xp.where(pos, p, xp.ones_like(p)) / xp.where(pos, q, xp.ones_like(q)))
    return xp.sum(xp.where(pos, p * lg, xp.zeros_like(p)) - p + q, axis=-1)


def cab_potentials(f, g, ab, bb, cost, reg, rho, xp):
    """The potentials of the reference measure a (x) b, f_a = f - reg log a, finite on zero-weight atoms too:
    f_a = -phi1 softmin_rows(g) and g_b = -phi2 softmin_cols(f) (the fixed-point forms)."""
    p1, p2 = _phi(rho, reg)
    fa = -p1 * cost.rows(g, reg)
    gb = -p2 * cost.cols(f, reg)
    return fa, gb


def _finish(rho):
    def finish(f, g, ab, bb, cost, reg, xp):
        """(cost <P, M>, objective, marginal residuals) of the unbalanced plan of (f, g)."""
        row, col, lin = cost.stats(f, g, reg)
        fa, gb = cab_potentials(f, g, ab, bb, cost, reg, rho, xp)
        ma, mb = xp.sum(ab, axis=-1), xp.sum(bb, axis=-1)
        obj = cm.dot0(row, fa, xp) + cm.dot0(col, gb, xp) - reg * (xp.sum(row, axis=-1) - ma * mb)
        if rho[0] != INF:
            obj = obj + rho[0] * _kl(row, ab, xp)
        if rho[1] != INF:
            obj = obj + rho[1] * _kl(col, bb, xp)
        ta = cm.relaxed_target(ab, cm.log_weights(ab, xp), f, reg, rho[0], xp)
        tb = cm.relaxed_target(bb, cm.log_weights(bb, xp), g, reg, rho[1], xp)
        errs = (xp.sum(xp.abs(row - ta), axis=-1), xp.sum(xp.abs(col - tb), axis=-1))
        return lin, obj, errs
    return finish


_ROLES = dict(a=Weights("[b] n", optional=True, normalized=False), b=Weights("[b] m", optional=True, normalized=False))


@public(**_ROLES, M=cm.CostOrCloud("[b] n m"), reg=Positive(), reg_m=RegM(), divergence=Choice(DIVERGENCES),
        method=Choice(METHODS), tol=NonNegative(optional=True), max_iter=Int(1), check_every=Int(1),
        callback=Callback(), callback_every=Int(1), warm_start=Option(check=check_warm_start),
        error_norm=Choice((1, 2)), progress=Bool())
def sinkhorn_unbalanced(a: Array | None, b: Array | None, M: Array | PointCloud, reg: float,
                        reg_m: float | tuple[float, float], *, divergence: str = "kl",
                        method: str = "translation_invariant",
                        tol: float | None = None, max_iter: int = 1000, check_every: int = 10,
                        callback: Callable[[SinkhornState], bool] | None = None, callback_every: int = 10,
                        warm_start: tuple | None = None, error_norm: int = 1,
                        progress: bool = False) -> SinkhornResult:
    r"""Unbalanced entropic optimal transport (KL-relaxed marginals) by log-domain Sinkhorn iterations.

    Solves

    .. math::

        \min_{P\ge0}\ \langle P, M\rangle + \varepsilon\,\mathrm{KL}(P\,|\,a\otimes b)
        + \rho_1\mathrm{KL}(P1\,|\,a) + \rho_2\mathrm{KL}(P^T1\,|\,b)

    (Chizat, Peyré, Schmitzer, Vialard, "Scaling algorithms for unbalanced optimal transport problems",
    Math. Comp. 2018; POT's ``sinkhorn_unbalanced`` with ``reg_type="kl"``) with the updates

    .. math::

        g_j = \varepsilon\log b_j - \phi_2\,\varepsilon\,\mathrm{LSE}_i\big((f_i - M_{ij})/\varepsilon\big),\quad
        f_i = \varepsilon\log a_i - \phi_1\,\varepsilon\,\mathrm{LSE}_j\big((g_j - M_{ij})/\varepsilon\big),\quad
        \phi_k = \frac{\rho_k}{\rho_k + \varepsilon},

    in cost units (stable for any ``reg``), so :math:`P = e^{(f\oplus g - M)/\varepsilon}`.  ``reg_m=inf`` on a
    side makes that marginal a constraint (:math:`\phi = 1`); ``inf`` on both is balanced :func:`sinkhorn` (the
    weights are then normalised).  ``M`` may be a :class:`PointCloud` (lazy, never forming the n x m cost).

    Stopping: the L1 (or L2) residual of the column condition :math:`P^T1 = b\,e^{-g_b/\rho_2}`
    (:math:`g_b = g - \varepsilon\log b`; the row condition is exact after each row update), checked every
    ``check_every`` iterations against ``tol``; POT stops on the relative change of the scalings instead.

    Parameters
    ----------
    a : array, shape (n,) or (batch, n), or None
    b : array, shape (m,) or (batch, m), or None
        Non-negative weights of any total mass (not normalised: mass matters); None is uniform (mass 1).
    M : array, shape (n, m) or (batch, n, m), or PointCloud
    reg : float
        :math:`\varepsilon > 0`.
    reg_m : float or (float, float)
        :math:`\rho` for both marginals or :math:`(\rho_1, \rho_2)`, each in (0, inf] (inf: hard marginal).
    divergence : {"kl"}
        The marginal penalty (KL, the one POT's Sinkhorn solvers and GeomLoss use).
    method : {"translation_invariant", "log", "eps_scaling"}
        All log-domain.  ``"translation_invariant"`` (default): each half-step also solves exactly for the
        best translation :math:`(f + t, g - t)` of the potentials (Séjourné, Vialard, Peyré, "Faster Unbalanced
        Optimal Transport: Translation invariant Sinkhorn and 1-D Frank-Wolfe", AISTATS 2022), O(n + m) more
        per iteration and far fewer iterations when :math:`\rho \gg \varepsilon` (the total mass, which plain
        iterations adjust by a factor :math:`\sim 1 - \varepsilon/\rho` per iteration, is solved exactly);
        ``"log"``: the plain damped updates above; ``"eps_scaling"``: reg halved from the cost range down to
        ``reg`` (10 translation-invariant iterations a stage) first.
    tol : float, optional
        Default 1e-9 (float64), 100 eps for lower precisions.
    max_iter : int, default 1000
    check_every : int, default 10
    callback : callable(SinkhornState) -> bool, optional
        Called every ``callback_every`` iterations; returning True stops.
    callback_every : int, default 10
    warm_start : tuple (f, g), optional
        Initial potentials in cost units (POT's ``(log u, log v)`` are ``((f - reg log a)/reg, (g - reg log b)/reg)``).
    error_norm : {1, 2}, default 1
    progress : bool, default False
        Show a progress bar.

    Returns
    -------
    SinkhornResult
        ``f``, ``g``, ``plan()``, ``cost`` (:math:`\langle P, M\rangle`, POT's ``log["cost"]``), ``objective``
        (the objective above with the full generalised KL, i.e. the dual value at convergence; POT's
        ``log["total_cost"]`` omits the mass terms :math:`-\sum p + \sum q` of each KL and so differs by
        :math:`\varepsilon(\sum a\otimes b - \sum P) + \rho_1(\sum a - \sum P) + \rho_2(\sum b - \sum P)`),
        ``marginal_errors`` (residuals of the two optimality conditions), ``reg_m``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import sinkhorn_unbalanced
    >>> M = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> res = sinkhorn_unbalanced(np.array([0.5, 0.5]), np.array([0.25, 0.25]), M, reg=0.05, reg_m=1.0)
    >>> P = res.plan()
    >>> bool(0.5 < P.sum() < 1.0)          # the mass lies between the two marginals' masses
    True
    """
    ti = method != "log"
    return solve_public("sinkhorn_unbalanced", a, b, M, reg, method="log" if method == "translation_invariant"
                        else method, tol=tol, max_iter=max_iter, check_every=check_every, callback=callback,
                        callback_every=callback_every, warm_start=warm_start, error_norm=error_norm, progress=progress,
                        reg_m=reg_m, finish=None if reg_m == (INF, INF) else _finish(reg_m),
                        hook_for=ti_hooks(reg_m) if ti else None)


# ---------------------------------------------------------------------------------------------- value (op)
class UnbalancedRes(NamedTuple):
    """Residuals of sinkhorn_unbalanced2 (batched, compute dtype)."""
    fa: Any
    gb: Any
    P: Any
    M: Any
    ab: Any
    bb: Any
    reg: float
    rho: tuple
    value: str
    batched: bool
    shapes: tuple
    dtypes: tuple


def _forward(a, b, M, reg, reg_m, method, tol, max_iter, value, callback, progress):
    cm.check_batch(a, b, M, "sinkhorn_unbalanced2")
    rho = tuple(reg_m)
    balanced = rho == (INF, INF)
    xp, ab, bb, cost, batched = cm.prep_problem(a, b, M, normalize=balanced)
    reg = float(reg)
    tol = cm.default_tol(tol, cost.dtype)
    mon = Monitor("sinkhorn_unbalanced2", max_iter=max_iter, tol=tol, callback=callback, callback_every=10,
                  progress=progress, check_every=10, warn=True)
    ti = ti_hooks(rho) if method != "log" else None
    f, g, _, _, _, _ = solve(ab, bb, cost, reg, method="log" if method == "translation_invariant" else method, tol=tol,
                             max_iter=max_iter, check_every=10, callback=callback, callback_every=10, warm_start=None,
                             xp=xp, monitor=mon, phi=_phi(rho, reg), rho=rho,
                             hook_for=None if ti is None else ti(ab, bb))
    mon.close()
    Mb = cost.M
    P = xp.exp((f[:, :, None] + g[:, None, :] - Mb) / reg)
    fa, gb = cab_potentials(f, g, ab, bb, cost, reg, rho, xp)
    if value == "transport":
        y = xp.sum(xp.sum(P * Mb, axis=2), axis=1)
    else:
        y = _finish(rho)(f, g, ab, bb, cost, reg, xp)[1]
    if not batched:
        y = y[0]
    res = UnbalancedRes(fa, gb, P, Mb, ab, bb, reg, rho, value, batched,
                        (_shape(a), _shape(b), tuple(M.shape)),
                        (None if a is None else a.dtype, None if b is None else b.dtype, M.dtype))
    return compat.cast(y, M.dtype, xp), res


def _shape(x):
    return None if x is None else tuple(x.shape)


def _example(rng, dtype):
    """Unnormalised weights (mass matters) and max_iter=200 (converges in ~40; jit traces every iteration)."""
    a, b = rng.random(5) + 0.2, rng.random(4) + 0.2
    return (a.astype(dtype), b.astype(dtype), rng.random((5, 4)).astype(dtype)), \
        {"reg": 0.5, "reg_m": 1.0, "max_iter": 200}


@public(**_ROLES, M=Cost("[b] n m"), reg=Positive(), reg_m=RegM(), value=Choice(("transport", "objective")),
        method=Choice(METHODS), tol=NonNegative(optional=True), max_iter=Int(1), callback=Callback(),
        progress=Bool(), example=_example)
def sinkhorn_unbalanced2(a: Array | None, b: Array | None, M: Array, *, reg: float,
                         reg_m: float | tuple[float, float], value: str = "transport",
                         method: str = "translation_invariant",
                         tol: float | None = None, max_iter: int = 1000,
                         callback: Callable[[SinkhornState], bool] | None = None, progress: bool = False) -> Array:
    r"""Unbalanced entropic OT value as a differentiable function of (a, b, M) (POT's ``sinkhorn_unbalanced2``).

    The plan :math:`P^\star` of :func:`sinkhorn_unbalanced`; ``value="transport"`` returns
    :math:`\langle P^\star, M\rangle` (POT's default ``returnCost="linear"``), ``value="objective"`` the
    optimal value of

    .. math::

        \langle P, M\rangle + \varepsilon\,\mathrm{KL}(P\,|\,a\otimes b) + \rho_1\mathrm{KL}(P1\,|\,a)
        + \rho_2\mathrm{KL}(P^T1\,|\,b)

    with the full generalised KL (POT's ``returnCost="total"`` drops its mass terms; see
    :func:`sinkhorn_unbalanced`).

    Parameters
    ----------
    a, b : arrays or None
        Weights of any mass (None: uniform of mass 1, no cotangent).
    M : array, shape (n, m) or (batch, n, m)
    reg : float
        :math:`\varepsilon` (keyword only: the positional slots of a differentiable function are its arrays).
    reg_m : float or (float, float)
        :math:`\rho` or :math:`(\rho_1, \rho_2)` in (0, inf].
    value : {"transport", "objective"}
    method, tol, max_iter : as in :func:`sinkhorn_unbalanced`
    callback : callable(SinkhornState) -> bool, optional
        Called every 10 iterations; returning True stops.
    progress : bool, default False
        Show a progress bar.

    Returns
    -------
    array, shape () or (batch,)

    Notes
    -----
    VJP, never by unrolling.  ``value="objective"``: envelope theorem on the dual
    :math:`D = -\rho_1\langle a, e^{-f_a/\rho_1} - 1\rangle - \rho_2\langle b, e^{-g_b/\rho_2} - 1\rangle
    - \varepsilon\langle a\otimes b, e^{(f_a\oplus g_b - M)/\varepsilon} - 1\rangle`:
    :math:`\bar M = \bar y P`, :math:`\bar a = \bar y\,[\rho_1(1 - e^{-f_a/\rho_1}) - \varepsilon(e^{-f_a/\rho_1}
    - \textstyle\sum b)]` (:math:`f_a` for :math:`\rho_1 = \infty`).  ``value="transport"``: implicit
    differentiation of the optimality conditions :math:`P1 = a e^{-f_a/\rho_1}`, :math:`P^T1 = b e^{-g_b/\rho_2}`,
    one conjugate-gradient solve with
    :math:`\begin{pmatrix}\kappa_1\mathrm{diag}(P1) & P\\ P^T & \kappa_2\mathrm{diag}(P^T1)\end{pmatrix}`,
    :math:`\kappa_k = 1 + \varepsilon/\rho_k` (positive definite when a marginal is relaxed).

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import sinkhorn_unbalanced2
    >>> M = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> float(sinkhorn_unbalanced2(np.array([0.5, 0.5]), np.array([0.5, 0.5]), M, reg=0.01, reg_m=10.0)) < 1e-3
    True
    """
    return _forward(a, b, M, reg, reg_m, method, tol, max_iter, value, callback, progress)[0]


def sinkhorn_unbalanced2_fwd(a, b, M, *, reg, reg_m, value="transport", method="translation_invariant", tol=None,
                             max_iter=1000,
                             callback=None, progress=False):
    return _forward(a, b, M, reg, reg_m, method, tol, max_iter, value, callback, progress)


def _center(grad, w, xp):
    """Gradient through the internal normalisation w / sum(w) (balanced problems)."""
    m = xp.sum(w, axis=-1, keepdims=True)
    wn = w / m
    gz = xp.where(w > 0, grad, xp.zeros_like(grad))
    return (grad - xp.sum(gz * wn, axis=-1, keepdims=True)) / m


def sinkhorn_unbalanced2_bwd(res: UnbalancedRes, dy):
    fa, gb, P, Mb, ab, bb, reg, rho = res.fa, res.gb, res.P, res.M, res.ab, res.bb, res.reg, res.rho
    xp = compat.array_namespace(P)
    dy = compat.cast(dy, P.dtype, xp)
    if not res.batched:
        dy = xp.reshape(dy, (1,))
    dyb = dy[:, None]
    ma, mb = xp.sum(ab, axis=-1, keepdims=True), xp.sum(bb, axis=-1, keepdims=True)

    def relax(h, r):
        """rho (1 - e^{-h/rho}) (h for rho = inf) and e^{-h/rho} (1 for inf)."""
        if r == INF:
            return h, xp.ones_like(h)
        e = xp.exp(-h / r)
        return -r * xp.expm1(-h / r), e

    if res.value == "objective":
        ta, ea = relax(fa, rho[0])
        tb, eb = relax(gb, rho[1])
        da = dyb * (ta - reg * (ea - mb))
        db = dyb * (tb - reg * (eb - ma))
        dM = dy[:, None, None] * P
    else:
        Pbar = dy[:, None, None] * Mb
        PP = P * Pbar
        kappa = tuple(1.0 if r == INF else 1.0 + reg / r for r in rho)
        x, y = cm.implicit_solve(P, xp.sum(PP, axis=2), xp.sum(PP, axis=1), xp, kappa)   # eps * H^{-1}(u, v)
        dM = dy[:, None, None] * P - PP / reg + P * (x[:, :, None] + y[:, None, :]) / reg
        # P / a and P / b without dividing by zero weights: K_ij = b_j e^{(f_a + g_b - M)/eps} (and its transpose)
        Ka = xp.exp((fa[:, :, None] + gb[:, None, :] - Mb) / reg)
        da = xp.sum((Pbar - y[:, None, :]) * Ka * bb[:, None, :], axis=2)
        db = xp.sum((Pbar - x[:, :, None]) * Ka * ab[:, :, None], axis=1)
    if rho == (INF, INF):
        da, db = _center(da, ab, xp), _center(db, bb, xp)
    if not res.batched:
        dM = dM[0, ...]
    sa, sb, _ = res.shapes
    if sa is not None and len(sa) == 1:
        da = xp.sum(da, axis=0)
    if sb is not None and len(sb) == 1:
        db = xp.sum(db, axis=0)
    ta_, tb_, tM = res.dtypes
    return (None if sa is None else compat.cast(da, ta_, xp), None if sb is None else compat.cast(db, tb_, xp),
            compat.cast(dM, tM, xp))


vjp(sinkhorn_unbalanced2, sinkhorn_unbalanced2_fwd, sinkhorn_unbalanced2_bwd, validate=True)
