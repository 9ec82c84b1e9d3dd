"""Exact (unregularised) optimal transport through SciPy: HiGHS linear program or linear assignment.

Host-only: inputs are copied to NumPy for SciPy and the results copied back to the input's library and device.
The solvers' tolerances are absolute, so the problem is scaled before it is solved: costs by a power of two
near their largest magnitude, masses to an average of one per atom (and the answer scaled back).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.api import public, public_class, vjp
from .._lib.roles import Cost, Weights


@public_class
@dataclass(frozen=True)
class EMDResult:
    """Result of :func:`emd`.

    Attributes
    ----------
    plan : array (n, m)
        Optimal transport plan.
    cost : 0-d array
        :math:`\\langle P, M\\rangle`.
    f, g : arrays (n,) / (m,)
        Dual potentials: :math:`f_i + g_j \\le M_{ij}` with equality on the support of the plan, and
        :math:`\\langle a, f\\rangle + \\langle b, g\\rangle` = cost.  Fixed up to (f + t, g - t); returned with
        :math:`\\langle a, f\\rangle = \\langle b, g\\rangle`.
    method : str
        ``"highs"`` (linear program) or ``"assignment"`` (uniform weights, n = m).
    """
    plan: Any
    cost: Any
    f: Any
    g: Any
    method: str


def _host(a, b, M, fn):
    for nm, x in (("a", a), ("b", b), ("M", M)):
        if x is not None and not compat.is_concrete(x):
            raise TypeError(f"{fn}: {nm} must be a concrete array (not a JAX tracer inside jit): the exact solvers "
                            "run SciPy on the host; call it outside jit or use sinkhorn")
    C = np.asarray(compat.to_numpy(M), dtype=np.float64)
    aw = None if a is None else np.asarray(compat.to_numpy(a), np.float64)
    bw = None if b is None else np.asarray(compat.to_numpy(b), np.float64)
    return aw, bw, C


def _uniform(w):
    return w is None or bool(np.all(w == w[0]))


def _assignment_duals(C, cols, max_rounds=10000):
    """Dual potentials of an optimal assignment (rows i -> cols[i]) by Bellman-Ford on the residual graph."""
    n = C.shape[0]
    matched = C[np.arange(n), cols]
    drow = np.zeros(n)
    dcol = np.min(C, axis=0)
    for _ in range(max_rounds):
        dcol_new = np.min(drow[:, None] + C, axis=0)
        drow_new = dcol_new[cols] - matched
        if np.array_equal(drow_new, drow) and np.array_equal(dcol_new, dcol):
            break
        drow, dcol = drow_new, dcol_new
    return -drow, dcol


def _solve(aw, bw, C):
    """Plan, cost, potentials, normalised weights and method of the exact problem (float64 NumPy).

    Equal uniform weights with n = m (given or omitted) make it an assignment problem (linear_sum_assignment);
    otherwise the HiGHS LP.  Both run on the costs divided by a power of two ``s`` near max |M| and, for the
    LP, masses multiplied by max(n, m): HiGHS's feasibility and optimality tolerances are absolute (costs of
    1e-8 came out more than 100% off, masses of 1e-56 made feasible problems "infeasible", costs of 1e300 failed).
    """
    n, m = C.shape
    top = float(np.max(np.abs(C)))
    s = float(2.0 ** np.floor(np.log2(top))) if top > 0 else 1.0
    Cs = C / s
    if n == m and _uniform(aw) and _uniform(bw):
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(Cs)
        P = np.zeros((n, m))
        P[rows, cols] = 1.0 / n
        f, g = _assignment_duals(Cs, cols)
        aw = bw = np.full(n, 1.0 / n)
        method = "assignment"
    else:
        import scipy.sparse as sp
        from scipy.optimize import linprog

        aw = np.full(n, 1.0 / n) if aw is None else aw / aw.sum()
        bw = np.full(m, 1.0 / m) if bw is None else bw / bw.sum()
        k = float(max(n, m))
        A = sp.vstack([sp.kron(sp.eye(n), np.ones((1, m))), sp.kron(np.ones((1, n)), sp.eye(m))]).tocsr()
        res = linprog(Cs.ravel(), A_eq=A, b_eq=np.concatenate([aw, bw]) * k, bounds=(0, None), method="highs")
        if res.status != 0:
            raise RuntimeError(f"emd: the HiGHS linear program failed ({res.message})")
        P = res.x.reshape(n, m) / k
        duals = res.eqlin.marginals
        f, g = duals[:n], duals[n:]
        method = "highs"
    t = 0.5 * (aw @ f - bw @ g)                              # gauge: <a, f> = <b, g>
    f, g = (f - t) * s, (g + t) * s
    return P, float(np.sum(P * Cs)) * s, f, g, aw, bw, method


_ROLES = dict(a=Weights("n", optional=True), b=Weights("m", optional=True), M=Cost("n m"))


@public(**_ROLES)
def emd(a, b, M):
    r"""Exact optimal transport between discrete measures: :math:`\min_{P1 = a, P^T1 = b, P \ge 0}\langle P, M\rangle`.

    Solved by SciPy on the host: ``scipy.optimize.linear_sum_assignment`` when ``a`` and ``b`` are uniform
    (omitted, or given with equal entries) and n = m (duals then from Bellman-Ford on the residual graph), else
    the HiGHS linear program ``scipy.optimize.linprog(method="highs")`` (n*m variables: for n, m up to a few
    hundred; duals from ``res.eqlin.marginals``).  The solvers' tolerances are absolute, so the problem is
    solved with costs divided by a power of two near the largest cost and masses summing to max(n, m), then
    scaled back: costs of any magnitude and weights down to the smallest floats give the exact answer.  For
    large problems use :func:`optnorm.ot.sinkhorn` with a small ``reg``.

    Parameters
    ----------
    a : array, shape (n,), or None
        Source weights (non-negative, summing to 1; re-normalised internally), uniform if None.
    b : array, shape (m,), or None
    M : array, shape (n, m)
        Finite cost matrix.

    Returns
    -------
    EMDResult
        ``plan``, ``cost`` (0-d), potentials ``f``, ``g`` (in the library of ``M``), ``method``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import emd
    >>> M = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> r = emd(np.array([0.5, 0.5]), np.array([0.25, 0.75]), M)
    >>> float(r.cost)
    0.25
    """
    P, cost, f, g, _, _, method = _solve(*_host(a, b, M, "emd"))
    dt = compat.to_numpy(M).dtype
    back = lambda z: compat.from_numpy_like(np.asarray(z, dtype=dt), M)  # noqa: E731
    return EMDResult(plan=back(P), cost=back(cost), f=back(f), g=back(g), method=method)


@public(**_ROLES, contract={"jit": "the exact solvers run SciPy on the host"})
def emd2(a, b, M):
    r"""Exact OT cost :math:`\min_P \langle P, M\rangle` as a differentiable function of (a, b, M).

    Same solver as :func:`emd` (host-only, SciPy).  VJP: :math:`\bar M = \bar y P`,
    :math:`\bar a = \bar y (f - \langle f, a\rangle)`, :math:`\bar b = \bar y (g - \langle g, b\rangle)` (the dual
    potentials, centred so that the gradient is that of the internally normalised weights).  It is a
    subgradient where the plan or the potentials are not unique.  ``a`` / ``b`` = None (uniform) get no gradient.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import emd2
    >>> float(emd2(None, None, np.array([[1.0, 0.0], [0.0, 1.0]])))
    0.0
    """
    return _emd2_forward(a, b, M)[0]


class EMD2Res(NamedTuple):
    """Residuals of emd2: the plan and the centred potentials (None for omitted weights)."""
    P: Any
    fa: Any
    gb: Any
    dtypes: tuple


def _emd2_forward(a, b, M):
    P, cost, f, g, aw, bw, _ = _solve(*_host(a, b, M, "emd2"))
    dt = compat.to_numpy(M).dtype
    back = lambda z: compat.from_numpy_like(np.asarray(z, dtype=dt), M)  # noqa: E731
    res = EMD2Res(back(P), None if a is None else back(f - aw @ f), None if b is None else back(g - bw @ g),
                  tuple(None if z is None else z.dtype for z in (a, b, M)))
    return back(cost), res


def emd2_fwd(a, b, M):
    return _emd2_forward(a, b, M)


def emd2_bwd(res: EMD2Res, dy):
    xp = compat.array_namespace(res.P)
    dy = compat.cast(dy, res.P.dtype, xp)
    da = None if res.fa is None else compat.cast(dy * res.fa, res.dtypes[0], xp)
    db = None if res.gb is None else compat.cast(dy * res.gb, res.dtypes[1], xp)
    return da, db, compat.cast(dy * res.P, res.dtypes[2], xp)


vjp(emd2, emd2_fwd, emd2_bwd, validate=True)
