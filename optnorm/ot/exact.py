"""Exact (unregularised) optimal transport: a network simplex (Numba), or SciPy's HiGHS LP / linear assignment.

Host-only: inputs are copied to NumPy float64 and the results copied back to the input's library and device.
The solvers live in :mod:`optnorm.ot._lp` (shared with Gromov-Wasserstein and partial OT): costs are divided by
a power of two near their largest magnitude and masses normalised before solving, and the answer scaled back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .._lib import compat, convergence
from .._lib.api import public, public_class, vjp
from .._lib.roles import Choice, Cost, Int, Weights
from .._lib.solver import Result
from .._lib.typing import Array
from . import _lp


@public_class
@dataclass(frozen=True, repr=False)
class EMDResult(Result):
    """Result of :func:`emd`.

    Attributes
    ----------
    plan : array (n, m)
        Optimal transport plan.
    cost : 0-d array
        :math:`\\langle P, M\\rangle`.
    f : array (n,)
        Source potential.  With ``g``: :math:`f_i + g_j \\le M_{ij}` with equality on the support of the plan,
        and :math:`\\langle a, f\\rangle + \\langle b, g\\rangle` = cost.  Fixed up to (f + t, g - t);
        returned with :math:`\\langle a, f\\rangle = \\langle b, g\\rangle`.
    g : array (m,)
        Target potential.
    method : str
        ``"network_simplex"``, ``"highs"`` (linear program) or ``"assignment"`` (uniform weights, n = m).
    n_iter : int
        Network-simplex pivots (0 for the SciPy methods).
    converged : bool
        False when the network simplex stopped at ``max_iter`` pivots (the plan is then feasible but not
        optimal, or, if ``residual > 0``, not even feasible).
    residual : float
        Mass left on the simplex's artificial arcs (0 for a feasible plan).
    """
    plan: Any
    cost: Any
    f: Any
    g: Any
    method: str
    n_iter: int = 0
    converged: bool = True
    residual: float = field(default=0.0)


def _host(a, b, M, fn):
    for nm, x in (("a", a), ("b", b), ("M", M)):
        if x is not None and not compat.is_concrete(x):
            raise TypeError(f"{fn}: {nm} must be a concrete array (not a JAX tracer inside jit): the exact solvers "
                            "run on the host; call it outside jit or use sinkhorn")
    C = np.asarray(compat.to_numpy(M), dtype=np.float64)
    aw = None if a is None else np.asarray(compat.to_numpy(a), np.float64)
    bw = None if b is None else np.asarray(compat.to_numpy(b), np.float64)
    return aw, bw, C


def _solve(a, b, M, fn, method, max_iter):
    """Solve on the host and warn if the network simplex stopped early."""
    aw, bw, C = _host(a, b, M, fn)
    sol = _lp.solve(aw, bw, C, method=method, max_iter=max_iter)
    if not sol.converged:
        state = "feasible" if sol.residual == 0 else "infeasible"
        convergence.warn_not_converged(fn, sol.n_iter, hint=f"the plan is {state} but not optimal; raise max_iter",
                                       stacklevel=4)
    return sol


_ROLES = dict(a=Weights("n", optional=True), b=Weights("m", optional=True), M=Cost("n m"),
              method=Choice(_lp.METHODS), max_iter=Int(1, optional=True))


@public(**_ROLES)
def emd(a: Array | None, b: Array | None, M: Array, *, method: str = "auto",
        max_iter: int | None = None) -> EMDResult:
    r"""Exact optimal transport between discrete measures, :math:`\min_{P \ge 0} \langle P, M\rangle` over couplings.

    .. math::

        \mathrm{OT}(a, b) = \min_{P \ge 0,\ P1 = a,\ P^T1 = b} \langle P, M\rangle

    Solved on the host (inputs copied to NumPy float64, results put back in the library and device of ``M``).
    The default ``method="network_simplex"`` (``"auto"``) is the primal network simplex on the bipartite
    transport graph (a Numba kernel: spanning-tree bases with a preorder thread, block-search pricing over
    :math:`\sqrt{nm}` arcs, strongly feasible pivots; the algorithm of LEMON's ``NetworkSimplex`` and of POT's
    C++ solver, Kovacs 2015; Bonneel et al., "Displacement interpolation using Lagrangian mass transport",
    SIGGRAPH Asia 2011): n = m = 2000 in about a second.  ``"highs"`` solves the linear program with
    ``scipy.optimize.linprog(method="highs")`` (n*m variables: n, m up to a few hundred); ``"assignment"``
    (uniform weights, n = m) runs ``scipy.optimize.linear_sum_assignment`` with duals from Bellman-Ford.  Costs
    are divided by a power of two near the largest cost and masses normalised before solving (then scaled
    back), so costs of any magnitude and weights down to the smallest floats give the exact answer; rows and
    columns of zero weight are left out of the solve and get the largest feasible potential.

    Parameters
    ----------
    a : array, shape (n,), or None
        Source weights (non-negative, summing to 1; re-normalised internally), uniform if None.
    b : array, shape (m,), or None
        Target weights, uniform if None.
    M : array, shape (n, m)
        Finite cost matrix.
    method : {"auto", "network_simplex", "highs", "assignment"}, default "auto"
        Solver (``"auto"`` is the network simplex).
    max_iter : int, optional
        Pivot limit of the network simplex (default ``max(100000, 200 (n + m))``; POT's ``numItermax``).
        Reaching it warns with :class:`optnorm.ConvergenceWarning` and returns ``converged=False``.

    Returns
    -------
    EMDResult
        ``plan``, ``cost`` (0-d), potentials ``f``, ``g`` (in the library of ``M``), ``method``, ``n_iter``,
        ``converged``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import emd
    >>> M = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> r = emd(np.array([0.5, 0.5]), np.array([0.25, 0.75]), M)
    >>> float(r.cost)
    0.25
    >>> r.plan
    array([[0.25, 0.25],
           [0.  , 0.5 ]])
    """
    sol = _solve(a, b, M, "emd", method, max_iter)
    dt = compat.to_numpy(M).dtype
    back = lambda z: compat.from_numpy_like(np.asarray(z, dtype=dt), M)  # noqa: E731
    return EMDResult(plan=back(sol.plan), cost=back(sol.cost), f=back(sol.f), g=back(sol.g), method=sol.method,
                     n_iter=sol.n_iter, converged=sol.converged, residual=sol.residual)


@public(**_ROLES, contract={"jit": "the exact solvers run on the host"})
def emd2(a: Array | None, b: Array | None, M: Array, *, method: str = "auto",
         max_iter: int | None = None) -> Array:
    r"""Exact OT cost :math:`\min_{P1 = a, P^T1 = b, P \ge 0} \langle P, M\rangle` as a differentiable function.

    Same solvers as :func:`emd` (host-only).  VJP: :math:`\bar M = \bar y P`,
    :math:`\bar a = \bar y (f - \langle f, a\rangle)`, :math:`\bar b = \bar y (g - \langle g, b\rangle)` (the
    dual potentials, centred so that the gradient is that of the internally normalised weights).  It is a
    subgradient where the plan or the potentials are not unique.  ``a`` / ``b`` = None (uniform) get no
    gradient.  POT's ``ot.emd2``.

    Parameters
    ----------
    a : array, shape (n,), or None
        Source weights (summing to 1), uniform if None.
    b : array, shape (m,), or None
        Target weights, uniform if None.
    M : array, shape (n, m)
        Finite cost matrix.
    method : {"auto", "network_simplex", "highs", "assignment"}, default "auto"
        Solver, as in :func:`emd`.
    max_iter : int, optional
        Pivot limit of the network simplex, as in :func:`emd`.

    Returns
    -------
    0-d array
        The optimal cost, in the library and dtype of ``M``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import emd2
    >>> float(emd2(None, None, np.array([[1.0, 0.0], [0.0, 1.0]])))
    0.0
    """
    return _emd2_forward(a, b, M, method, max_iter)[0]


class EMD2Res(NamedTuple):
    """Residuals of emd2: the plan and the centred potentials (None for omitted weights)."""
    P: Any
    fa: Any
    gb: Any
    dtypes: tuple


def _emd2_forward(a, b, M, method, max_iter):
    sol = _solve(a, b, M, "emd2", method, max_iter)
    dt = compat.to_numpy(M).dtype
    back = lambda z: compat.from_numpy_like(np.asarray(z, dtype=dt), M)  # noqa: E731
    res = EMD2Res(back(sol.plan), None if a is None else back(sol.f - sol.a @ sol.f),
                  None if b is None else back(sol.g - sol.b @ sol.g),
                  tuple(None if z is None else z.dtype for z in (a, b, M)))
    return back(sol.cost), res


def emd2_fwd(a, b, M, *, method="auto", max_iter=None):
    return _emd2_forward(a, b, M, method, max_iter)


def emd2_bwd(res: EMD2Res, dy):
    xp = compat.array_namespace(res.P)
    dy = compat.cast(dy, res.P.dtype, xp)
    da = None if res.fa is None else compat.cast(dy * res.fa, res.dtypes[0], xp)
    db = None if res.gb is None else compat.cast(dy * res.gb, res.dtypes[1], xp)
    return da, db, compat.cast(dy * res.P, res.dtypes[2], xp)


vjp(emd2, emd2_fwd, emd2_bwd, validate=True)
