"""Exact (unregularised) optimal transport through SciPy: HiGHS linear program or linear assignment.

Host-only: inputs are copied to NumPy for SciPy and the results copied back to the input's library and device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._lib import compat, ops, validate
from .oned import _check_finite, _check_weights

__all__ = ["emd", "emd2", "EMDResult"]


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


def _check(a, b, M):
    validate.check_float(M, "M")
    xp = validate.check_same_namespace(a=a, b=b, M=M)
    if M.ndim != 2:
        raise ValueError(f"M must have shape (n, m), got shape {tuple(M.shape)}")
    n, m = M.shape
    if n == 0 or m == 0:
        raise ValueError(f"M is empty (shape {tuple(M.shape)}): both measures need at least one atom")
    for nm, w, k, ax in (("a", a, n, "rows"), ("b", b, m, "columns")):
        if w is None:
            continue
        validate.check_float(w, nm)
        if tuple(w.shape) != (k,):
            raise ValueError(f"{nm} has shape {tuple(w.shape)}, expected ({k},) to match the {k} {ax} of M "
                             f"(shape {tuple(M.shape)})")
        _check_weights(w, nm)
    _check_finite(M, "M")
    for nm, x in (("a", a), ("b", b), ("M", M)):
        if x is not None and not compat.is_concrete(x):
            raise TypeError(f"emd runs SciPy on the host: {nm} must be a concrete array (not a JAX tracer inside "
                            "jit); call it outside jit or use sinkhorn")
    return xp


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


def _solve(a, b, M):
    C = np.asarray(compat.to_numpy(M), dtype=np.float64)
    n, m = C.shape
    if a is None and b is None and n == m:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(C)
        P = np.zeros((n, m))
        P[rows, cols] = 1.0 / n
        f, g = _assignment_duals(C, cols)
        aw = bw = np.full(n, 1.0 / n)
        method = "assignment"
    else:
        import scipy.sparse as sp
        from scipy.optimize import linprog

        aw = np.full(n, 1.0 / n) if a is None else np.asarray(compat.to_numpy(a), np.float64)
        bw = np.full(m, 1.0 / m) if b is None else np.asarray(compat.to_numpy(b), np.float64)
        aw = aw / aw.sum()
        bw = bw / bw.sum()
        A = sp.vstack([sp.kron(sp.eye(n), np.ones((1, m))), sp.kron(np.ones((1, n)), sp.eye(m))]).tocsr()
        res = linprog(C.ravel(), A_eq=A, b_eq=np.concatenate([aw, bw]), bounds=(0, None), method="highs")
        if res.status != 0:
            raise RuntimeError(f"emd: the HiGHS linear program failed ({res.message})")
        P = res.x.reshape(n, m)
        duals = res.eqlin.marginals
        f, g = duals[:n], duals[n:]
        method = "highs"
    t = 0.5 * (aw @ f - bw @ g)                              # gauge: <a, f> = <b, g>
    f, g = f - t, g + t
    return P, float(np.sum(P * C)), f, g, aw, bw, method


def emd(a, b, M):
    r"""Exact optimal transport between discrete measures: :math:`\min_{P1 = a, P^T1 = b, P \ge 0}\langle P, M\rangle`.

    Solved by SciPy on the host: ``scipy.optimize.linear_sum_assignment`` when ``a`` and ``b`` are both omitted
    (uniform) and n = m (duals then from Bellman-Ford on the residual graph), else the HiGHS linear program
    ``scipy.optimize.linprog(method="highs")`` (n*m variables: for n, m up to a few hundred; duals from
    ``res.eqlin.marginals``).  For large problems use :func:`optnorm.ot.sinkhorn` with a small ``reg``.

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
        ``plan``, ``cost``, potentials ``f``, ``g`` (in the library of ``M``), ``method``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import emd
    >>> M = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> r = emd(np.array([0.5, 0.5]), np.array([0.25, 0.75]), M)
    >>> float(r.cost)
    0.25
    """
    _check(a, b, M)
    P, cost, f, g, _, _, method = _solve(a, b, M)
    dt = compat.to_numpy(M).dtype
    back = lambda z: compat.from_numpy_like(np.asarray(z, dtype=dt), M)  # noqa: E731
    return EMDResult(plan=back(P), cost=back(cost), f=back(f), g=back(g), method=method)


def emd2(a, b, M):
    r"""Exact OT cost :math:`\min_P \langle P, M\rangle` as a differentiable function of (a, b, M).

    Same solver as :func:`emd` (host-only, SciPy).  VJP (registered as ``"ot.emd2"``): :math:`\bar M = \bar y P`,
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
    return emd2_fwd(a, b, M)[0]


def emd2_fwd(a, b, M):
    _check(a, b, M)
    P, cost, f, g, aw, bw, _ = _solve(a, b, M)
    dt = compat.to_numpy(M).dtype
    back = lambda z, like: compat.from_numpy_like(np.asarray(z, dtype=dt), like)  # noqa: E731
    res = dict(P=back(P, M), fa=None if a is None else back(f - aw @ f, M),
               gb=None if b is None else back(g - bw @ g, M),
               dtypes=tuple(None if z is None else z.dtype for z in (a, b, M)))
    return back(cost, M), res


def emd2_bwd(res, dy):
    P = res["P"]
    xp = compat.array_namespace(P)
    dy = xp.astype(dy, P.dtype)
    da = None if res["fa"] is None else xp.astype(dy * res["fa"], res["dtypes"][0])
    db = None if res["gb"] is None else xp.astype(dy * res["gb"], res["dtypes"][1])
    return da, db, xp.astype(dy * P, res["dtypes"][2])


ops.register("ot.emd2", emd2, emd2_fwd, emd2_bwd)
