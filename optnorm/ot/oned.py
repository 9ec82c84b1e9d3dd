"""One-dimensional Wasserstein distance (quantile-function formula), batched, with weights and a VJP.

The generic body merges the two cumulative-weight staircases with one sort of their concatenation (no n x m
plan); the NumPy fast path merges the sorted supports in a Numba kernel (north-west corner walk, parallel over
rows).  The shared pieces live in :mod:`optnorm.ot._common` (also used by :mod:`optnorm.ot.sliced`).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.roles import Bool, Float, Scalar, Weights
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
def wasserstein_1d(u_values, v_values, u_weights=None, v_weights=None, *, p=1, squared=False):
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
    out = []
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
