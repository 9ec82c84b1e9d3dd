"""Partial optimal transport: move only a mass m between measures of possibly different total masses.

Exact: the problem becomes a balanced one with one dummy point on each side (Chapel, Alaya, Gasso, "Partial
optimal transport with applications on positive-unlabeled learning", NeurIPS 2020), solved by the network
simplex (:mod:`optnorm.ot._lp`).  Entropic: Dykstra's algorithm of iterated KL projections on the three
constraint sets (Benamou, Carlier, Cuturi, Nenna, Peyré, "Iterative Bregman projections for regularized
transportation problems", 2015), written on scalings: every correction of Dykstra's algorithm is a row
vector, a column vector or a scalar, so one sweep is two soft-minimum passes over M (the log-domain Sinkhorn
half-steps of :mod:`optnorm.ot._common`) and nothing of size n x m is stored besides M.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np

from .._lib import compat, convergence
from .._lib.api import public, public_class, vjp
from .._lib.dispatch import Dispatcher, numpy_float
from .._lib.roles import Bool, Callback, Cost, Int, NonNegative, Positive, Weights
from .._lib.solver import IterState, Monitor, Result
from .._lib.typing import Array
from . import _common as cm
from . import _lp


@public_class
@dataclass(frozen=True, repr=False)
class PartialState(IterState):
    """What an entropic :func:`partial_wasserstein` callback sees after each Dykstra sweep.

    Attributes
    ----------
    n_iter : int
        Sweeps done.
    error : float
        Largest change of a log plan entry in the last sweep.
    f : array (n,)
        Row scaling :math:`\\varepsilon u` (cost units, <= 0 at convergence).
    g : array (m,)
        Column scaling :math:`\\varepsilon v`.
    """
    f: Any = None
    g: Any = None


@public_class
@dataclass(frozen=True, repr=False)
class PartialResult(Result):
    """Result of :func:`partial_wasserstein`.

    Attributes
    ----------
    plan : array (n, m)
        The partial plan: :math:`P1 \\le a`, :math:`P^T1 \\le b`, total mass ``mass``.
    cost : 0-d array
        :math:`\\langle M, P\\rangle` (POT's ``partial_w_dist``).
    mass : float
        The mass transported, ``m``.
    f : array (n,)
        Derivative of the optimal value w.r.t. ``a`` (exact: the row dual plus the dual of the dummy column;
        entropic: the row scaling :math:`\\varepsilon u \\le 0`, the derivative of the entropic objective).
    g : array (m,)
        Derivative w.r.t. ``b``.
    n_iter : int
        Network-simplex pivots (exact) or Dykstra sweeps (entropic).
    converged : bool
        Whether the solver met its tolerance.
    errors : list of float
        Entropic: the largest change of a log plan entry after each sweep.
    reg : float or None
        Entropic regularisation (None: exact).
    """
    plan: Any
    cost: Any
    mass: float
    f: Any
    g: Any
    n_iter: int
    converged: bool
    errors: list = field(default_factory=list)
    reg: float | None = None


# ---------------------------------------------------------------------------------------------- exact
def _exact(a, b, M, m, fn):
    """Plan and value derivatives of the partial problem through the dummy-extended balanced problem."""
    n, k = M.shape
    sa, sb = float(a.sum()), float(b.sum())
    if m == 0.0:
        return np.zeros((n, k)), np.zeros(n), np.zeros(k), 0, True
    # <M - c, P> = <M, P> - c m for every plan of mass m: solve with M - min M >= 0, so the dummy-dummy arc
    # (cost 2 max) is never worth using and exactly m moves between real points
    Ms = M - M.min()
    top = float(Ms.max())
    big = 2.0 * top if top > 0 else 1.0
    Me = np.zeros((n + 1, k + 1))
    Me[:n, :k] = Ms
    Me[n, k] = big
    ae = np.concatenate([a, [max(sb - m, 0.0)]])
    be = np.concatenate([b, [max(sa - m, 0.0)]])
    sol = _lp.solve(ae, be, Me, normalize=False)
    if not sol.converged:
        convergence.warn_not_converged(fn, sol.n_iter, hint="the network simplex hit its pivot limit", stacklevel=5)
    P = sol.plan[:n, :k]
    f = sol.f[:n] + sol.g[k]                    # a_i enters its row and, through sum(a) - m, the dummy column
    g = sol.g[:k] + sol.f[n]
    return P, f, g, sol.n_iter, sol.converged


# ---------------------------------------------------------------------------------------------- entropic
# The two soft-minimum passes of one sweep: rows s_i = reg log sum_j exp((h_j - M_ij) / reg) and the same down
# the columns, on batched (1, n, m) arrays; the Numba kernels of the log-domain Sinkhorn on NumPy input.
softmin = Dispatcher("ot.partial_softmin", serves=("ot.partial_wasserstein", "ot.partial_wasserstein2"))


@softmin.generic
def _softmin_generic(M, h, *, reg, axis, xp):
    return cm.softmin_xp(M, h, reg, axis, xp)


@softmin.numba(when=lambda M, h, **kw: numpy_float(M, h))
def _softmin_numba(M, h, *, reg, axis, xp):
    from .._numba import ot as nb

    M = np.ascontiguousarray(M)
    h = np.ascontiguousarray(h, dtype=M.dtype)
    out = np.empty((M.shape[0], M.shape[1] if axis == 2 else M.shape[2]), dtype=M.dtype)
    (nb.softmin_rows if axis == 2 else nb.softmin_cols)(M, h, float(reg), out)
    return out


def _dykstra(a, b, M, m, reg, *, tol, max_iter, mon: Monitor, xp):
    """Dykstra's KL projections on {P1 <= a}, {P^T1 <= b}, {sum P = m} from K = m exp(-M/reg) / sum exp(-M/reg).

    The log plan is ``(f_i + g_j + c - M_ij) / reg`` (cost units); the corrections of the two inequality sets
    are the last row / column steps, that of the mass constraint the last scalar step.
    """
    n, k = M.shape
    Mb = M[None, ...]
    dev = compat.device(M)
    f = xp.zeros((1, n), dtype=M.dtype, device=dev)
    g = xp.zeros((1, k), dtype=M.dtype, device=dev)
    ra = reg * cm.log_weights(a, xp)[None, :]
    rb = reg * cm.log_weights(b, xp)[None, :]
    rm = reg * math.log(m)
    col = softmin(Mb, f, reg=reg, axis=1, xp=xp)                      # (1, k): reg LSE_i (f_i - M_ij)/reg
    c = rm - reg * float(cm.lse(col[0, :] / reg, 0, xp))
    q1 = xp.zeros_like(f)
    q2 = xp.zeros_like(g)
    q3 = 0.0
    zf, zg = xp.zeros_like(f), xp.zeros_like(g)
    for it in range(1, max_iter + 1):
        f0, g0, c0 = f, g, c
        f = f + q1                                                     # rows: undo the last correction, project
        rows = softmin(Mb, g, reg=reg, axis=2, xp=xp) + f + c          # reg log (row sums)
        s1 = xp.minimum(ra - rows, zf)
        f = f + s1
        q1 = -s1
        g = g + q2                                                     # columns
        cols = softmin(Mb, f, reg=reg, axis=1, xp=xp) + g + c
        s2 = xp.minimum(rb - cols, zg)
        g = g + s2
        q2 = -s2
        c = c + q3                                                     # total mass (cols used the old c)
        tot = reg * float(cm.lse((cols + s2)[0, :] / reg, 0, xp)) + q3
        s3 = rm - tot
        c = c + s3
        q3 = -s3
        err = (float(xp.max(xp.abs(f - f0))) + float(xp.max(xp.abs(g - g0))) + abs(c - c0)) / reg
        if mon.update(it, err, lambda: PartialState(it, err, f[0, ...], g[0, ...])):
            break
    return f[0, ...], g[0, ...], c


def _plan(f, g, c, M, reg, xp):
    return xp.exp((f[:, None] + g[None, :] + c - M) / reg)


# ---------------------------------------------------------------------------------------------- public API
def _check_mass(a, b, m, fn):
    top = min(float(a.sum()), float(b.sum()))
    if m > top * (1 + 1e-12):
        raise ValueError(f"{fn}: m = {m!r} is more mass than the smaller measure has (min(sum(a), sum(b)) = "
                         f"{top:.6g}): m must be in [0, {top:.6g}]")
    return min(float(m), top)


def _host(a, b, M, fn):
    for nm, x in (("a", a), ("b", b), ("M", M)):
        if x is not None and not compat.is_concrete(x):
            raise TypeError(f"{fn}: {nm} must be a concrete array (not a JAX tracer inside jit): the solver branches "
                            "on values; call it outside jit")


def _solve(a, b, M, m, reg, max_iter, tol, callback, callback_every, progress, fn):
    _host(a, b, M, fn)
    xp = compat.array_namespace(a, b, M)
    n, k = M.shape
    cdt = compat.compute_dtype(M, xp)
    for z in (a, b):
        if z is not None and z.dtype == getattr(xp, "float64", None):
            cdt = z.dtype
    dev = compat.device(M)
    Mc = compat.cast(compat.detach(M), cdt, xp)
    ac = xp.full((n,), 1.0 / n, dtype=cdt, device=dev) if a is None else compat.cast(compat.detach(a), cdt, xp)
    bc = xp.full((k,), 1.0 / k, dtype=cdt, device=dev) if b is None else compat.cast(compat.detach(b), cdt, xp)
    a64 = np.asarray(compat.to_numpy(ac), np.float64)
    b64 = np.asarray(compat.to_numpy(bc), np.float64)
    m = _check_mass(a64, b64, float(m), fn)
    if reg is None:
        P, f, g, it, conv = _exact(a64, b64, np.asarray(compat.to_numpy(Mc), np.float64), m, fn)
        back = lambda z: compat.from_numpy_like(np.asarray(z, dtype=cm.np_dtype(Mc)), Mc)  # noqa: E731
        return back(P), back(f), back(g), it, conv, [], m, xp, Mc
    if m == 0.0:
        z = xp.zeros((n, k), dtype=cdt, device=dev)
        return z, xp.zeros((n,), dtype=cdt, device=dev), xp.zeros((k,), dtype=cdt, device=dev), 0, True, [], m, xp, Mc
    t = cm.pow2_scale(xp, (Mc, None))                  # the sweeps run on M / t (exp arguments stay O(1/reg))
    Ms = Mc / t
    regs = float(reg) / float(t)
    tol = convergence.default_tol(1e-9, cdt) if tol is None else float(tol)
    mon = Monitor(fn, max_iter=1000 if max_iter is None else max_iter, tol=tol, callback=callback,
                  callback_every=callback_every, progress=progress)
    f, g, c = _dykstra(ac, bc, Ms, m, regs, tol=tol, max_iter=mon.max_iter, mon=mon, xp=xp)
    mon.close()
    P = _plan(f, g, c, Ms, regs, xp)
    return P, f * t, g * t, mon.n_iter, mon.converged, list(mon.errors), m, xp, Mc


def _result(P, f, g, it, conv, errors, m, xp, Mc, M, reg):
    dt = M.dtype
    cast = lambda z: compat.cast(z, dt, xp)  # noqa: E731
    cost = xp.sum(Mc * P)
    return PartialResult(plan=cast(P), cost=cast(cost), mass=float(m), f=cast(f), g=cast(g), n_iter=int(it),
                         converged=bool(conv), errors=errors, reg=None if reg is None else float(reg))


_ROLES = dict(a=Weights("n", normalized=False, optional=True), b=Weights("m", normalized=False, optional=True),
              M=Cost("n m"), m=NonNegative(), reg=Positive(optional=True), max_iter=Int(1, optional=True),
              tol=NonNegative(optional=True), callback=Callback(), callback_every=Int(1), progress=Bool())


def _example(rng, dtype):
    a = (rng.random(5) + 0.2).astype(dtype)
    b = (rng.random(4) + 0.2).astype(dtype)
    a, b = a / a.sum(), b / b.sum() * 0.8
    return (a, b, rng.random((5, 4)).astype(dtype)), {"m": 0.5}


_PARAMS = """    a : array, shape (n,), optional
        Source masses (non-negative, any positive total), uniform 1/n if None.
    b : array, shape (m,), optional
        Target masses, uniform 1/m if None.
    M : array, shape (n, m)
        Cost matrix.
    m : float
        The mass to transport, ``0 <= m <= min(sum(a), sum(b))`` (larger is an error naming m).
    reg : float, optional
        Entropic regularisation; None solves the exact problem.
    max_iter : int, optional
        Entropic: Dykstra sweeps at most (default 1000, POT's ``numItermax``).
    tol : float, optional
        Entropic: stop when no log plan entry changed by more than ``tol`` in a sweep (default 1e-9 for
        float64; POT's default ``stopThr=1e-100`` always runs ``numItermax`` sweeps).
    callback : callable, optional
        Entropic: ``callback(state)`` with a :class:`PartialState` every ``callback_every`` sweeps; True stops.
    callback_every : int, default 1
        Sweeps between callbacks.
    progress : bool, default False
        Entropic: show a progress bar (tqdm when installed) or lines on stderr."""


def _doc(fn):
    fn.__doc__ = fn.__doc__.replace("{params}", _PARAMS)
    return fn


@public(**_ROLES, example=_example, contract={"jit": "the solvers branch on values (host loop / network simplex)"})
@_doc
def partial_wasserstein(a: Array | None, b: Array | None, M: Array, *, m: float, reg: float | None = None,
                        max_iter: int | None = None, tol: float | None = None, callback: Callable | None = None,
                        callback_every: int = 1, progress: bool = False) -> PartialResult:
    r"""Partial optimal transport: the cheapest way to move a mass m between two measures.

    .. math::

        \mathrm{PW}(a, b; m) = \min_{P \ge 0,\ P1 \le a,\ P^T1 \le b,\ 1^TP1 = m}\ \langle M, P\rangle
        \ \big[+\ \varepsilon\sum_{ij} P_{ij}(\log P_{ij} - 1)\big]

    Exact (``reg=None``): a balanced problem with one dummy point on each side (masses
    :math:`\sum b - m` and :math:`\sum a - m`, zero cost to every real point, a prohibitive cost between the
    dummies), solved by the network simplex of :func:`emd` (Chapel, Alaya, Gasso, "Partial optimal transport
    with applications on positive-unlabeled learning", NeurIPS 2020).  Entropic: Dykstra's iterated KL
    projections of :math:`m\,e^{-M/\varepsilon}/\sum e^{-M/\varepsilon}` onto the three constraint sets
    (Benamou et al., "Iterative Bregman projections for regularized transportation problems", SIAM J. Sci.
    Comput. 2015), in the log domain on scalings (two soft-minimum passes over M per sweep), so any ``reg``
    works.  POT's ``ot.partial.partial_wasserstein`` / ``entropic_partial_wasserstein``; unlike POT, ``m`` is
    required (POT's ``m=None`` switches to a different, Lagrangian problem).

    Parameters
    ----------
{params}

    Returns
    -------
    PartialResult
        ``plan``, ``cost``, ``mass``, value derivatives ``f``, ``g``, ``n_iter``, ``converged``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import partial_wasserstein
    >>> M = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> r = partial_wasserstein(np.array([0.5, 0.5]), np.array([0.25, 0.75]), M, m=0.5)
    >>> float(r.cost), r.plan.tolist()          # half the mass moves, along the free diagonal
    (0.0, [[0.0, 0.0], [0.0, 0.5]])
    """
    P, f, g, it, conv, errors, m_, xp, Mc = _solve(a, b, M, m, reg, max_iter, tol, callback, callback_every, progress,
                                                   "partial_wasserstein")
    return _result(P, f, g, it, conv, errors, m_, xp, Mc, M, reg)


@public(**_ROLES, example=_example, contract={"jit": "the solvers branch on values (host loop / network simplex)"})
@_doc
def partial_wasserstein2(a: Array | None, b: Array | None, M: Array, *, m: float, reg: float | None = None,
                         max_iter: int | None = None, tol: float | None = None, callback: Callable | None = None,
                         callback_every: int = 1, progress: bool = False) -> Array:
    r"""The partial transport cost :math:`\langle M, P\rangle` of :func:`partial_wasserstein`, differentiable.

    VJP (the plan held fixed): :math:`\bar M = \bar y P`, :math:`\bar a = \bar y f`, :math:`\bar b = \bar y g`
    where, exactly, :math:`f_i` is the row dual of the dummy-extended problem plus the dual of the dummy column
    (``a`` enters the dummy column's mass :math:`\sum a - m`): the derivative of the optimal value, a
    subgradient where the plan or the duals are not unique.  With ``reg`` these are the derivatives of the
    entropic objective (the scalings :math:`\varepsilon u, \varepsilon v \le 0`), not of
    :math:`\langle M, P\rangle` through the plan.  POT's ``partial_wasserstein2``.

    Parameters
    ----------
{params}

    Returns
    -------
    0-d array
        :math:`\langle M, P\rangle`, in the library and dtype of M.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import partial_wasserstein2
    >>> M = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> float(partial_wasserstein2(np.array([0.5, 0.5]), np.array([0.75, 0.25]), M, m=0.9))
    0.15
    """
    return _forward2(a, b, M, m, reg, max_iter, tol, callback, callback_every, progress)[0]


class PartialRes(NamedTuple):
    """Residuals of partial_wasserstein2: plan and value derivatives (None for omitted weights)."""
    P: Any
    f: Any
    g: Any
    dtypes: tuple


def _forward2(a, b, M, m, reg, max_iter, tol, callback, callback_every, progress):
    with compat.no_grad(a, b, M):
        P, f, g, it, conv, errors, m_, xp, Mc = _solve(a, b, M, m, reg, max_iter, tol, callback, callback_every,
                                                       progress, "partial_wasserstein2")
        cost = compat.cast(xp.sum(Mc * P), M.dtype, xp)
    return cost, PartialRes(P, None if a is None else f, None if b is None else g,
                            tuple(None if z is None else z.dtype for z in (a, b, M)))


def partial_wasserstein2_fwd(a, b, M, *, m, reg=None, max_iter=None, tol=None, callback=None, callback_every=1,
                             progress=False):
    return _forward2(a, b, M, m, reg, max_iter, tol, callback, callback_every, progress)


def partial_wasserstein2_bwd(res: PartialRes, dy):
    xp = compat.array_namespace(res.P)
    dy = compat.cast(dy, res.P.dtype, xp)
    da = None if res.f is None else compat.cast(dy * res.f, res.dtypes[0], xp)
    db = None if res.g is None else compat.cast(dy * res.g, res.dtypes[1], xp)
    return da, db, compat.cast(dy * res.P, res.dtypes[2], xp)


vjp(partial_wasserstein2, partial_wasserstein2_fwd, partial_wasserstein2_bwd, validate=True)
