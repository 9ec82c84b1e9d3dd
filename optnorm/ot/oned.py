"""One-dimensional optimal transport: the Wasserstein distance (quantile-function formula; batched, with weights
and a VJP) and the exact plan with its dual potentials (:func:`emd_1d`).

The generic body merges the two cumulative-weight staircases with one sort of their concatenation (no n x m
plan); the NumPy fast path merges the sorted supports in a Numba kernel (north-west corner walk, parallel over
rows).  The shared pieces live in :mod:`optnorm.ot._common` (also used by :mod:`optnorm.ot.sliced`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.api import public, public_class, vjp
from .._lib.roles import Bool, Choice, Float, Scalar, Weights
from .._lib.solver import Result
from .._lib.typing import Array
from .._lib.vjp import unbroadcast
from . import _common as cm


def _check_atoms(values, name):
    """A (..., 1) array is a batch of one-atom measures: almost always atoms laid out along axis 0 by mistake."""
    if values.ndim >= 2 and values.shape[-1] == 1:
        raise ValueError(f"wasserstein_1d: {name} has shape {tuple(values.shape)}, i.e. {values.shape[0]} "
                         f"measures of one atom each: atoms go along the last axis (pass {name}[..., 0] or "
                         f"move the atom axis last, e.g. {name}.T)")


def _prep(u_values, v_values, u_weights, v_weights):
    _check_atoms(u_values, "u_values")
    _check_atoms(v_values, "v_values")
    xp = compat.array_namespace(u_values, v_values, u_weights, v_weights)
    batch = tuple(np.broadcast_shapes(*(tuple(a.shape[:-1]) for a in (u_values, v_values, u_weights, v_weights)
                                        if a is not None)))
    cdt = compat.compute_dtype(u_values, xp)
    t = cm.pow2_scale(xp, (compat.cast(u_values, cdt, xp), 1), (compat.cast(v_values, cdt, xp), 1))
    t = xp.broadcast_to(t, batch)
    u = xp.broadcast_to(compat.cast(u_values, cdt, xp), (*batch, u_values.shape[-1])) / t[..., None]
    v = xp.broadcast_to(compat.cast(v_values, cdt, xp), (*batch, v_values.shape[-1])) / t[..., None]
    uw = None if u_weights is None else xp.broadcast_to(u_weights, u.shape)
    vw = None if v_weights is None else xp.broadcast_to(v_weights, v.shape)
    return xp, t, u, v, uw, vw


def _finish(wpp, t, p, squared, xp):
    """W_p (or W_p^p) of the unscaled problem from W_p^p of the scaled one."""
    if squared:
        return wpp * t ** p
    if p == 1.0:
        return wpp * t
    return xp.clip(wpp, 0.0, None) ** (1.0 / p) * t


def _overflow(y, xp):
    if compat.is_concrete(y) and not bool(xp.all(xp.isfinite(y))):
        raise ValueError("wasserstein_1d: W_p^p of u_values and v_values overflows their dtype (squared=True); "
                         "use squared=False")


_ROLES = dict(u_values=Float("... n", finite=True), v_values=Float("... m", finite=True),
              u_weights=Weights("... n", optional=True), v_weights=Weights("... m", optional=True),
              p=Scalar(1, None), squared=Bool())


@public(**_ROLES, gufunc=("(n),(m)->()", {"array_args": 2}))
def wasserstein_1d(u_values: Array, v_values: Array, u_weights: Array | None = None, v_weights: Array | None = None,
                   *, p: float = 1, squared: bool = False) -> Array:
    r"""Wasserstein-p distance between weighted 1-D empirical measures, batched over leading axes.

    .. math::

        W_p^p(\mu, \nu) = \int_0^1 |F_\mu^{-1}(q) - F_\nu^{-1}(q)|^p\,dq

    computed from the sorted supports and the merged cumulative weights (no n x m plan, O((n+m) log(n+m))).
    Atoms lie along the **last** axis; leading axes are a batch (a ``(n, 1)`` column is refused: it would be
    n one-atom measures, which is what atoms laid out along axis 0 look like).  Inputs are scaled by a power of
    two before any p-th power (exact), so magnitudes up to the dtype's range give finite distances.

    Parameters
    ----------
    u_values : array, shape (..., n)
        Support of the first measure(s); leading axes broadcast against ``v_values``.
    v_values : array, shape (..., m)
    u_weights, v_weights : array, shape (..., n) / (..., m), optional
        Non-negative weights summing to one along the last axis (uniform if omitted).  They are re-normalised
        internally (to remove round-off), so the gradient w.r.t. them is the exact derivative of the normalised
        problem: the dual potential minus its weighted mean.
    p : float, default 1
        Order, ``p >= 1``.
    squared : bool, default False
        Return :math:`W_p^p` instead of :math:`W_p` (no p-th root).

    Returns
    -------
    array, shape = broadcast batch shape

    Notes
    -----
    VJP: positions get :math:`\sum_k \Delta q_k\, p|d_k|^{p-1}\operatorname{sign}(d_k)` over the quantile
    intervals of each atom; weights get the dual potential of the monotone plan.  Both are subgradients at ties.
    The NumPy fast path merges the sorted supports in a Numba kernel (cumulative weights in float64).

    This is also the tool for Wasserstein-1 dependency measures and W1 generalisation bounds (Kantorovich-
    Rubinstein duality: :math:`W_1 = \sup_{\mathrm{Lip}(f)\le 1} E_\mu f - E_\nu f`), e.g. the W1 gap between the
    scores of a critic on train and test samples::

        >>> import numpy as np
        >>> from optnorm.ot import wasserstein_1d
        >>> rng = np.random.default_rng(0)
        >>> s_train, s_test = rng.normal(0, 1, 500), rng.normal(0.3, 1, 400)
        >>> gap = float(wasserstein_1d(s_train, s_test))    # upper-bounds |E f(train) - E f(test)|, Lip(f) <= 1
        >>> bool(0.1 < gap < 0.5)
        True

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import wasserstein_1d
    >>> float(wasserstein_1d(np.array([0.0, 1.0]), np.array([2.0, 3.0])))
    2.0
    >>> float(wasserstein_1d(np.array([0.0, 1.0]), np.array([0.0]), np.array([0.25, 0.75]), p=2, squared=True))
    0.75
    """
    xp, t, u, v, uw, vw = _prep(u_values, v_values, u_weights, v_weights)
    wpp = cm.w1d_value(u, v, uw, vw, p=float(p), xp=xp)
    y = _finish(wpp, t, float(p), squared, xp)
    if squared:
        _overflow(y, xp)
    return compat.cast(y, u_values.dtype, xp)


class W1dRes(NamedTuple):
    """Residuals of wasserstein_1d: gradients of the scaled W_p^p and what rescales them."""
    g_u: Any
    g_v: Any
    f_u: Any
    f_v: Any
    wpp: Any
    t: Any
    p: float
    squared: bool
    shapes: tuple
    dtypes: tuple


def wasserstein_1d_fwd(u_values, v_values, u_weights=None, v_weights=None, *, p=1, squared=False):
    xp, t, u, v, uw, vw = _prep(u_values, v_values, u_weights, v_weights)
    p = float(p)
    us, A, iu = cm.sort_support(u, uw, xp)
    vs, B, iv = cm.sort_support(v, vw, xp)
    wpp, (g_us, g_vs, h_A, h_B) = cm.w1d_sorted(us, A, vs, B, p, xp, need_grad=True)
    y = _finish(wpp, t, p, squared, xp)
    if squared:
        _overflow(y, xp)
    arrays = (u_values, v_values, u_weights, v_weights)
    res = W1dRes(cm.unsort(g_us, iu, xp), cm.unsort(g_vs, iv, xp),
                 None if uw is None else cm.unsort(cm.weight_grad(h_A, A, xp), iu, xp),
                 None if vw is None else cm.unsort(cm.weight_grad(h_B, B, xp), iv, xp),
                 wpp, t, p, squared, tuple(None if a is None else tuple(a.shape) for a in arrays),
                 tuple(None if a is None else a.dtype for a in arrays))
    return compat.cast(y, u_values.dtype, xp), res


def wasserstein_1d_bwd(res: W1dRes, dy):
    xp = compat.array_namespace(res.g_u)
    wpp, t, p = res.wpp, res.t, res.p
    dy = compat.cast(dy, wpp.dtype, xp)
    # s = dy * d(output)/d(scaled W_p^p); positions get s * grad / t (they were divided by t), weights s * grad
    if res.squared:
        s = dy * t ** p
    elif p == 1.0:
        s = dy * t
    else:
        pos = wpp > 0
        safe = xp.where(pos, wpp, xp.ones_like(wpp))
        s = xp.where(pos, dy * t * safe ** (1.0 / p - 1.0) / p, xp.zeros_like(wpp))
    s = s[..., None]
    tt = t[..., None]
    out: list = []
    for k, (g, shape, dt) in enumerate(zip((res.g_u, res.g_v, res.f_u, res.f_v), res.shapes, res.dtypes)):
        if g is None or shape is None:
            out.append(None)
            continue
        gk = compat.cast(s, g.dtype, xp) * g
        if k < 2:
            gk = gk / compat.cast(tt, g.dtype, xp)
        out.append(compat.cast(unbroadcast(gk, shape, xp), dt, xp))
    return tuple(out)


vjp(wasserstein_1d, wasserstein_1d_fwd, wasserstein_1d_bwd, validate=True)


# ---------------------------------------------------------------------------------------------- emd_1d
@public_class
@dataclass(frozen=True, repr=False)
class EMD1DResult(Result):
    """Result of :func:`emd_1d`.

    Attributes
    ----------
    plan : array (n, m) or None
        The optimal (monotone) plan, dense; None with ``dense=False``.
    rows : int array (n + m - 1,)
        Row index of each entry of the plan's staircase support (in the caller's atom order).
    cols : int array (n + m - 1,)
        Column index of each entry.
    values : array (n + m - 1,)
        Mass of each entry (zeros where the staircase is degenerate).
    cost : 0-d array
        :math:`\\sum_{ij} P_{ij}\\, c(x_i, y_j)`.
    f : array (n,)
        Source potential; with ``g``, :math:`f_i + g_j \\le c(x_i, y_j)` with equality on the staircase, and
        :math:`\\langle a, f\\rangle + \\langle b, g\\rangle` = cost; returned, as by :func:`emd`, with
        :math:`\\langle a, f\\rangle = \\langle b, g\\rangle`.
    g : array (m,)
        Target potential.
    """
    plan: Any
    rows: Any
    cols: Any
    values: Any
    cost: Any
    f: Any
    g: Any


METRICS_1D = ("sqeuclidean", "minkowski", "cityblock", "euclidean")


def _ground_cost(d, metric, p, xp):
    if metric == "sqeuclidean":
        return d * d
    if metric == "minkowski":
        return cm.pow_cost(d, p, xp)
    return xp.abs(d)


def _staircase(x_a, x_b, a, b, metric, p, xp):
    """Sorted supports, the north-west-corner staircase over the merged interior breakpoints, its flows, cost
    and potentials (sorted order), all in the positions' scaled units (``t``) and float64 weights."""
    n, m = x_a.shape[0], x_b.shape[0]
    cdt = compat.compute_dtype(x_a, xp)
    xa = compat.cast(x_a, cdt, xp)
    xb = compat.cast(x_b, cdt, xp)
    t = cm.pow2_scale(xp, (xa, None), (xb, None))
    xs, A, ia = cm.sort_support(xa / t, a, xp)
    ys, B, ib = cm.sort_support(xb / t, b, xp)
    acc = A.dtype
    dev = compat.device(A)
    # the n - 1 + m - 1 interior breakpoints; each is one step of the staircase (ties: a row step first)
    Q = xp.concat([A[:-1], B[:-1]])
    order = xp.argsort(Q, stable=True)
    q = xp.take(Q, order)
    isA = order < (n - 1)
    isA_i = xp.astype(isA, xp.int64)
    zero_i = xp.zeros((1,), dtype=xp.int64, device=dev)
    i_k = xp.concat([zero_i, xp.cumulative_sum(isA_i)])               # (n + m - 1,)
    j_k = xp.concat([zero_i, xp.cumulative_sum(1 - isA_i)])
    edges = xp.concat([xp.zeros((1,), dtype=acc, device=dev), q, xp.ones((1,), dtype=acc, device=dev)])
    dq = xp.clip(edges[1:] - edges[:-1], 0.0, None)
    c_k = _ground_cost(xp.take(xs, i_k) - xp.take(ys, j_k), metric, p, xp)
    c64 = compat.cast(c_k, acc, xp)
    cost = xp.sum(dq * c64)
    # potentials along the staircase: a row step k -> k+1 sets f(new row) = f(old row) + c_{k+1} - c_k, a
    # column step sets g(new column) likewise; f of the first row is 0, so g of the first column is c_0
    dc = c64[1:] - c64[:-1]
    isA_f = xp.astype(isA, acc)
    F = xp.cumulative_sum(dc * isA_f)
    G = c64[0] + xp.cumulative_sum(dc * (1.0 - isA_f))
    inv = xp.argsort(order, stable=True)
    f_s = xp.concat([xp.zeros((1,), dtype=acc, device=dev), xp.take(F, inv[:n - 1])])
    g_s = xp.concat([c64[:1], xp.take(G, inv[n - 1:])])
    return t, A, B, ia, ib, i_k, j_k, dq, cost, f_s, g_s


def _weights64(w, n, like, xp):
    """The weights in float64 (caller's order), normalised; uniform for None."""
    if w is None:
        return xp.full((n,), 1.0 / n, dtype=like.dtype, device=compat.device(like))
    w = compat.cast(w, like.dtype, xp)
    return w / xp.sum(w)


@public(x_a=Float("n", finite=True), x_b=Float("m", finite=True), a=Weights("n", optional=True),
        b=Weights("m", optional=True), metric=Choice(METRICS_1D), p=Scalar(1, None), dense=Bool())
def emd_1d(x_a: Array, x_b: Array, a: Array | None = None, b: Array | None = None, *, metric: str = "sqeuclidean",
           p: float = 1.0, dense: bool = True) -> EMD1DResult:
    r"""Exact optimal transport between 1-D measures: the monotone plan, its cost and dual potentials.

    .. math::

        P^\star = \arg\min_{P1 = a,\ P^T1 = b,\ P\ge 0} \sum_{ij} P_{ij}\,c(x_i, y_j),\qquad
        c(x, y) = |x - y|^p

    For a convex ground cost the north-west-corner rule on the sorted supports is optimal (Peyré & Cuturi,
    "Computational Optimal Transport", 2019, section 2.6): the plan is the staircase
    :math:`P_{ij} = |[A_{i-1}, A_i] \cap [B_{j-1}, B_j]|` of the cumulative weights, with n + m - 1 entries.
    The dual potentials follow the staircase (:math:`f_i + g_j = c(x_i, y_j)` on it) and are feasible
    everywhere, so they are a gradient of the cost w.r.t. the weights (up to a constant; returned with
    :math:`\langle a, f\rangle = \langle b, g\rangle`, as by :func:`emd`).  POT's ``ot.emd_1d`` (plan) and
    ``log["cost"]``; the potentials are optnorm's.  One sort of each support and of the merged breakpoints:
    :math:`O((n + m)\log(n + m))`, plus :math:`O(nm)` for the dense plan (``dense=False`` skips it and returns
    the staircase entries only).

    Parameters
    ----------
    x_a : array, shape (n,)
        Source support on the real line.
    x_b : array, shape (m,)
        Target support.
    a : array, shape (n,), optional
        Source weights (summing to 1), uniform if None.
    b : array, shape (m,), optional
        Target weights, uniform if None.
    metric : {"sqeuclidean", "minkowski", "cityblock", "euclidean"}, default "sqeuclidean"
        Ground cost :math:`|x - y|^2`, :math:`|x - y|^p` or :math:`|x - y|` (POT's names).
    p : float, default 1
        The power of ``metric="minkowski"``.
    dense : bool, default True
        Build the dense (n, m) plan; otherwise ``plan`` is None and the staircase entries (``rows``,
        ``cols``, ``values``) describe it.

    Returns
    -------
    EMD1DResult
        ``plan``, ``rows``, ``cols``, ``values``, ``cost``, potentials ``f``, ``g``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import emd_1d
    >>> r = emd_1d(np.array([2.0, 0.0]), np.array([0.0, 3.0]))
    >>> r.plan
    array([[0. , 0.5],
           [0.5, 0. ]])
    >>> float(r.cost), r.f.tolist(), r.g.tolist()
    (0.5, [2.25, -1.75], [1.75, -1.25])
    """
    xp = compat.array_namespace(x_a, x_b, a, b)
    n, m = x_a.shape[0], x_b.shape[0]
    p = 2.0 if metric == "sqeuclidean" else float(p) if metric == "minkowski" else 1.0
    t, A, B, ia, ib, i_k, j_k, dq, cost, f_s, g_s = _staircase(x_a, x_b, a, b, metric, p, xp)
    tp = compat.cast(t, A.dtype, xp) ** p
    dt = x_a.dtype
    back = lambda z: compat.cast(z, dt, xp)  # noqa: E731
    plan = None
    if dense:
        zero = xp.zeros((1,), dtype=A.dtype, device=compat.device(A))
        lo = xp.maximum(xp.concat([zero, A[:-1]])[:, None], xp.concat([zero, B[:-1]])[None, :])
        hi = xp.minimum(A[:, None], B[None, :])
        Ps = xp.clip(hi - lo, 0.0, None)                                  # overlaps of quantile intervals
        inv_a = xp.argsort(ia, stable=True)
        inv_b = xp.argsort(ib, stable=True)
        plan = back(xp.take(xp.take(Ps, inv_a, axis=0), inv_b, axis=1))
    aw = _weights64(a, n, A, xp)
    bw = _weights64(b, m, B, xp)
    shift = 0.5 * (xp.sum(aw * xp.take(f_s, xp.argsort(ia, stable=True))) -
                   xp.sum(bw * xp.take(g_s, xp.argsort(ib, stable=True))))
    f = back(cm.unsort((f_s - shift) * tp, ia, xp))
    g = back(cm.unsort((g_s + shift) * tp, ib, xp))
    cost = back(cost * tp)
    if compat.is_concrete(cost) and not (bool(xp.isfinite(cost)) and bool(xp.all(xp.isfinite(f)))
                                         and bool(xp.all(xp.isfinite(g)))):
        raise ValueError(f"emd_1d: the transport cost between x_a and x_b overflows {compat.dtype_name(dt)} "
                         f"(|x - y|^{p:g} of their largest distance); rescale the supports")
    return EMD1DResult(plan=plan, rows=xp.take(ia, i_k), cols=xp.take(ib, j_k), values=back(dq), cost=cost,
                       f=f, g=g)
