"""The exact transport LP on the host, shared by :func:`optnorm.ot.emd`, the Gromov-Wasserstein conditional
gradient and partial OT: a network simplex (Numba, the default), SciPy's HiGHS linear program and SciPy's
linear assignment (uniform square problems).

Everything here is float64 NumPy.  The solvers see a normalised problem: costs divided by a power of two
``s`` near ``max |C|`` (exact; the network simplex's artificial cost ``(max C + 1)(n + m + 1)`` must not
overflow, HiGHS's tolerances are absolute), masses summing to one, rows and columns of zero weight removed
(they carry no flow; their potentials are repaired afterwards so that ``f_i + g_j <= C_ij`` everywhere).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._lib.dispatch import Dispatcher

METHODS = ("auto", "network_simplex", "highs", "assignment")
STATUS = {0: "optimal", 1: "max_iter", 2: "infeasible", 3: "unbounded"}

# the network simplex as a dispatched kernel: the Numba build, or the same code run by the interpreter
# (``use_backend("generic")``; slow, for tests on small problems)
network_simplex = Dispatcher("ot.network_simplex",
                             serves=("ot.emd", "ot.emd2", "ot.gromov_wasserstein", "ot.gromov_wasserstein2",
                                     "ot.fused_gromov_wasserstein", "ot.fused_gromov_wasserstein2",
                                     "ot.partial_wasserstein", "ot.partial_wasserstein2"))


@network_simplex.generic
def _ns_generic(a, b, C, max_iter, G, alpha, beta, *, xp=None):
    from .._numba import simplex

    return simplex.network_simplex.py_func(a, b, C, max_iter, G, alpha, beta)


@network_simplex.numba(when=lambda *args, **kw: True)
def _ns_numba(a, b, C, max_iter, G, alpha, beta, *, xp=None):
    from .._numba import simplex

    return simplex.network_simplex(a, b, C, max_iter, G, alpha, beta)


@dataclass
class Solution:
    """A solved exact problem (float64 NumPy, in the caller's cost units and masses)."""
    plan: np.ndarray
    cost: float
    f: np.ndarray
    g: np.ndarray
    a: np.ndarray               # the masses used (b rescaled to a's total)
    b: np.ndarray
    method: str
    n_iter: int
    converged: bool
    residual: float = 0.0       # largest mass left on an artificial arc (network simplex stopped early)


def _uniform(w):
    return w is None or bool(np.all(w == w[0]))


def default_max_iter(n, m):
    """Pivots allowed by default: far above what random problems need (about 8 (n + m) at n = m = 2000)."""
    return max(100_000, 200 * (n + m))


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


def _highs(a, b, C):
    import scipy.sparse as sp
    from scipy.optimize import linprog

    n, m = C.shape
    k = float(max(n, m))                         # masses of order one per atom: HiGHS's tolerances are absolute
    A = sp.vstack([sp.kron(sp.eye(n), np.ones((1, m))), sp.kron(np.ones((1, n)), sp.eye(m))]).tocsr()
    res = linprog(C.ravel(), A_eq=A, b_eq=np.concatenate([a, b]) * k, bounds=(0, None), method="highs")
    if res.status != 0:
        raise RuntimeError(f"the HiGHS linear program failed ({res.message})")
    duals = res.eqlin.marginals
    return res.x.reshape(n, m) / k, duals[:n], duals[n:]


def _simplex(a, b, C, max_iter):
    """Network simplex on the rows/columns of positive weight; potentials of the others repaired."""
    n, m = C.shape
    ri = np.flatnonzero(a > 0)
    cj = np.flatnonzero(b > 0)
    full = ri.size == n and cj.size == m
    Cr = C if full else C[np.ix_(ri, cj)]
    Cr = np.ascontiguousarray(Cr, dtype=np.float64)
    Gr = np.zeros(Cr.shape)
    fr = np.empty(ri.size)
    gr = np.empty(cj.size)
    status, it, resid = network_simplex(np.ascontiguousarray(a[ri]), np.ascontiguousarray(b[cj]), Cr,
                                        int(max_iter), Gr, fr, gr)
    if status in (2, 3):
        raise RuntimeError(f"the network simplex reported an {STATUS[status]} problem")
    if full:
        return Gr, fr, gr, it, status == 0, resid
    G = np.zeros((n, m))
    G[np.ix_(ri, cj)] = Gr
    f = np.full(n, np.inf)
    g = np.full(m, np.inf)
    f[ri] = fr
    g[cj] = gr
    if ri.size < n:                              # zero-weight rows: the largest feasible potential
        zr = np.setdiff1d(np.arange(n), ri)
        f[zr] = np.min(C[np.ix_(zr, cj)] - gr[None, :], axis=1)
    if cj.size < m:
        zc = np.setdiff1d(np.arange(m), cj)
        g[zc] = np.min(C[:, zc] - f[:, None], axis=0)
    return G, f, g, it, status == 0, resid


def solve(a, b, C, *, method="auto", max_iter=None, normalize=True) -> Solution:
    """Solve ``min <P, C>`` over couplings of a and b (float64 NumPy; None = uniform).

    ``normalize``: weights are divided by their sums (the emd convention); otherwise the masses are kept and b
    is rescaled to a's total (they must agree to round-off).  ``method``: ``"auto"`` is the network simplex.
    The potentials are returned in the gauge :math:`\\langle a, f\\rangle = \\langle b, g\\rangle`.
    """
    n, m = C.shape
    top = float(np.max(np.abs(C))) if C.size else 0.0
    s = float(2.0 ** np.floor(np.log2(top))) if top > 0 else 1.0
    Cs = C / s
    a = np.full(n, 1.0 / n) if a is None else np.asarray(a, np.float64)
    b = np.full(m, 1.0 / m) if b is None else np.asarray(b, np.float64)
    if normalize:
        mass = 1.0
        a = a / a.sum()
        b = b / b.sum()
    else:
        mass = float(a.sum())
        b = b * (mass / b.sum())
    an, bn = a / mass, b / mass                  # unit total inside the solvers
    if method == "assignment":
        if not (n == m and _uniform(an) and _uniform(bn)):
            raise ValueError("method='assignment' needs n = m and uniform weights")
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(Cs)
        P = np.zeros((n, m))
        P[rows, cols] = 1.0 / n
        f, g = _assignment_duals(Cs, cols)
        it, conv, resid = 0, True, 0.0
    elif method == "highs":
        P, f, g = _highs(an, bn, Cs)
        it, conv, resid = 0, True, 0.0
    else:
        mi = default_max_iter(n, m) if max_iter is None else int(max_iter)
        P, f, g, it, conv, resid = _simplex(an, bn, Cs, mi)
        method = "network_simplex"
    t = 0.5 * (an @ f - bn @ g)                  # gauge: <a, f> = <b, g>
    f, g = (f - t) * s, (g + t) * s
    P = P * mass
    cost = float(np.sum(P * Cs)) * s
    return Solution(P, cost, f, g, a, b, method, int(it), bool(conv), float(resid) * mass)
