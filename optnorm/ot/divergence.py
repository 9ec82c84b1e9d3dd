"""The debiased Sinkhorn divergence between point clouds (GeomLoss's ``SamplesLoss("sinkhorn")``), balanced or
unbalanced, differentiable in the points and the weights, computed lazily (never an n x m matrix).

.. math::

    S_\\varepsilon(\\alpha, \\beta) = \\mathrm{OT}_\\varepsilon(\\alpha, \\beta)
    - \\tfrac12\\mathrm{OT}_\\varepsilon(\\alpha, \\alpha) - \\tfrac12\\mathrm{OT}_\\varepsilon(\\beta, \\beta)
    \\;(+\\,\\tfrac\\varepsilon2(m_\\alpha - m_\\beta)^2\\ \\text{unbalanced}),

with :math:`\\mathrm{OT}_\\varepsilon` the entropic transport cost with reference measure :math:`\\alpha\\otimes\\beta`
and cost :math:`C(x, y) = |x - y|^p / p` (Feydy, Séjourné, Vialard, Amari, Trouvé, Peyré, "Interpolating between
Optimal Transport and MMD using Sinkhorn Divergences", AISTATS 2019; Séjourné, Feydy, Vialard, Trouvé, Peyré,
"Sinkhorn Divergences for Unbalanced Optimal Transport", 2019).  The potentials come from GeomLoss's
epsilon-scaling (one symmetric, averaged update per scale) and are then converged at ``reg``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.roles import Bool, Callback, Float, Int, NonNegative, Positive, Scalar, Weights
from .._lib.solver import Monitor
from .._lib.typing import Array
from . import _common as cm
from ._common import SinkhornState
from ._lazy import LazyCost
from .unbalanced import ti_hooks

INF = math.inf


# ---------------------------------------------------------------------------------------------- preparation
def _clouds(X, Y, p, dtype, xp):
    """Clouds centred at their joint mean and divided by a power of two near their magnitude (exact), flattened
    to (B, n, d); the cost scale t^p / p; the diameter of the joint bounding box (original units)."""
    X = compat.cast(X, dtype, xp)
    Y = compat.cast(Y, dtype, xp)
    batch = tuple(np.broadcast_shapes(tuple(X.shape[:-2]), tuple(Y.shape[:-2])))
    n, m, d = X.shape[-2], Y.shape[-2], X.shape[-1]
    X = xp.reshape(xp.broadcast_to(X, batch + (n, d)), (-1, n, d))
    Y = xp.reshape(xp.broadcast_to(Y, batch + (m, d)), (-1, m, d))
    concrete = compat.is_concrete(X) and compat.is_concrete(Y)
    mu = (xp.sum(X, axis=1, keepdims=True) + xp.sum(Y, axis=1, keepdims=True)) / (n + m)
    X, Y = X - mu, Y - mu
    t, diam = 1.0, None
    if concrete:
        t = float(cm.pow2_scale(xp, (X, None), (Y, None)))
        X, Y = X / t, Y / t
        lo = xp.minimum(xp.min(X, axis=(0, 1)), xp.min(Y, axis=(0, 1)))
        hi = xp.maximum(xp.max(X, axis=(0, 1)), xp.max(Y, axis=(0, 1)))
        diam = float(xp.sqrt(xp.sum((hi - lo) ** 2))) * t
    code = 0 if p == 2.0 else (1 if p == 1.0 else 4)
    try:
        cscale = (t ** p) / p
    except OverflowError:
        cscale = math.inf
    if cscale == math.inf or (diam is not None and not math.isfinite(diam)):
        raise ValueError(f"sinkhorn_divergence: the costs |x - y|^{p:g} / {p:g} of X and Y overflow (coordinates up "
                         f"to {t:.3g}): rescale the clouds (and reg with them)")
    return X, Y, code, cscale, t, diam, batch


def _weights(w, B, k, dtype, xp, like, normalize):
    if w is None:
        return xp.full((B, k), 1.0 / k, dtype=dtype, device=compat.device(like))
    w = compat.cast(w, dtype, xp)
    w = xp.broadcast_to(w if w.ndim == 2 else w[None, :], (B, k))
    return w / xp.sum(w, axis=-1, keepdims=True) if normalize else w


def _schedule(reg, diam, p, scaling):
    """GeomLoss's epsilon list: diam^p, then a geometric decrease by scaling^p down to reg (at most 100 scales)."""
    if diam is None or diam <= 0 or p * math.log(diam) <= math.log(reg) or p * math.log(diam) > 700:
        return []
    eps = [diam ** p]
    ratio = scaling ** p
    while eps[-1] * ratio > reg and len(eps) < 100:
        eps.append(eps[-1] * ratio)
    return eps


def _phi(rho, reg):
    return 1.0 if rho == INF else rho / (rho + reg)


# ---------------------------------------------------------------------------------------------- potentials
def _symmetric_loop(cost, w, lw, f, reg, rho, *, tol, max_iter, xp):
    """The symmetric problem OT(w, w): f <- (f + T(f)) / 2, T(f) = -phi softmin(f + reg log w), to ``tol`` on the
    L1 residual of P1 = w e^{-f/rho}.  Returns (f, n_iter, converged); traced inputs run ``max_iter`` steps."""
    phi = _phi(rho, reg)
    concrete = compat.is_concrete(f)
    for it in range(1, max_iter + 1):
        s = cost.rows(f + reg * lw, reg)
        if concrete:
            row = w * xp.exp(xp.clip((f + s) / reg, None, 300.0))
            target = w if rho == INF else w * xp.exp(xp.clip(-f / rho, None, 300.0))
            if float(xp.max(xp.sum(xp.abs(row - target), axis=-1))) < tol:
                return f, it - 1, True
        f = 0.5 * (f - phi * s)
    return f, max_iter, False


def _potentials(Xs, Ys, code, p, cscale, a, b, reg, rho, debias, diam, scaling, tol, max_iter, callback, progress,
                xp):
    """(f_ba, g_ab, f_aa, g_bb) with the reference a (x) b (the last two None without debias), and n_iter."""
    Cxy = LazyCost(Xs, Ys, code, p, cscale, xp)
    Cxx = LazyCost(Xs, Xs, code, p, cscale, xp)
    Cyy = LazyCost(Ys, Ys, code, p, cscale, xp)
    la, lb = cm.log_weights(a, xp), cm.log_weights(b, xp)
    B, n, m = Cxy.shape
    dt, dev = Xs.dtype, compat.device(Xs)
    f_ba = xp.zeros((B, n), dtype=dt, device=dev)
    g_ab = xp.zeros((B, m), dtype=dt, device=dev)
    f_aa, g_bb = xp.zeros_like(f_ba), xp.zeros_like(g_ab)
    # epsilon-scaling (GeomLoss): from diam^p, one simultaneous update of the four potentials per scale, averaged
    for k, eps in enumerate(_schedule(reg, diam, p, scaling)):
        ph = _phi(rho, eps)
        new = (-ph * Cxy.rows(g_ab + eps * lb, eps), -ph * Cxy.cols(f_ba + eps * la, eps))
        if debias:
            new += (-ph * Cxx.rows(f_aa + eps * la, eps), -ph * Cyy.rows(g_bb + eps * lb, eps))
        if k == 0:
            f_ba, g_ab = new[0], new[1]
            if debias:
                f_aa, g_bb = new[2], new[3]
        else:
            f_ba, g_ab = 0.5 * (f_ba + new[0]), 0.5 * (g_ab + new[1])
            if debias:
                f_aa, g_bb = 0.5 * (f_aa + new[2]), 0.5 * (g_bb + new[3])
    # OT(a, b) at reg: translation-invariant Sinkhorn on the lazy cost (potentials of the reference 1 inside)
    rr = (rho, rho)
    mon = Monitor("sinkhorn_divergence", max_iter=max_iter, tol=tol, callback=callback, callback_every=10,
                  progress=progress, check_every=10, warn=True)
    ti = ti_hooks(rr)
    hook, post = ti(a, b)(reg) if ti is not None else (None, None)
    f1, g1, n_ab, conv, stopped = cm.sinkhorn_loop(
        la, lb, b, Cxy, reg, f_ba + reg * la, g_ab + reg * lb, tol=tol, max_iter=max_iter, check_every=10,
        callback=callback, callback_every=10, xp=xp, errors=[], phi=(_phi(rho, reg),) * 2, rho=rr, monitor=mon,
        hook=hook, post=post)
    mon.close()
    # the c-transforms: finite on zero-weight atoms too (what the gradients with respect to the weights need)
    g_ab = -_phi(rho, reg) * Cxy.cols(f1, reg)
    f_ba = -_phi(rho, reg) * Cxy.rows(g_ab + reg * lb, reg)
    if not debias:
        return f_ba, g_ab, None, None, n_ab
    n_sym = 0
    res = []
    for cost, w, lw, h in ((Cxx, a, la, f_aa), (Cyy, b, lb, g_bb)):
        h, k, ok = _symmetric_loop(cost, w, lw, h, reg, rho, tol=tol, max_iter=max_iter, xp=xp)
        n_sym = max(n_sym, k)
        if not ok and compat.is_concrete(h) and not stopped:
            from .._lib.convergence import warn_not_converged

            warn_not_converged("sinkhorn_divergence (symmetric terms)", k, None, tol, stacklevel=5)
        res.append(h)
    return f_ba, g_ab, res[0], res[1], max(n_ab, n_sym)


# ---------------------------------------------------------------------------------------------- value
def _relax(h, rho, xp):
    """e^{-h/rho} (1 for rho = inf)."""
    return xp.ones_like(h) if rho == INF else xp.exp(-h / rho)


def _value(f_ba, g_ab, f_aa, g_bb, a, b, reg, rho, debias, xp):
    if rho == INF:
        v = cm.dot0(a, f_ba, xp) + cm.dot0(b, g_ab, xp)
        if debias:
            v = v - cm.dot0(a, f_aa, xp) - cm.dot0(b, g_bb, xp)
        return v
    c = rho + reg / 2
    if debias:
        return (xp.sum(a * c * (_relax(f_aa, rho, xp) - _relax(f_ba, rho, xp)), axis=-1)
                + xp.sum(b * c * (_relax(g_bb, rho, xp) - _relax(g_ab, rho, xp)), axis=-1))
    ma, mb = xp.sum(a, axis=-1), xp.sum(b, axis=-1)
    return (xp.sum(a * (rho - c * _relax(f_ba, rho, xp)), axis=-1)
            + xp.sum(b * (rho - c * _relax(g_ab, rho, xp)), axis=-1) + reg * ma * mb)


class DivergenceRes(NamedTuple):
    """Residuals of sinkhorn_divergence (prepared clouds, potentials of the reference a (x) b)."""
    Xs: Any
    Ys: Any
    a: Any
    b: Any
    f_ba: Any
    g_ab: Any
    f_aa: Any
    g_bb: Any
    code: int
    p: float
    cscale: float
    t: float
    reg: float
    rho: float
    debias: bool
    masses: tuple
    batch: tuple
    shapes: tuple
    dtypes: tuple


def _forward(X, Y, a, b, reg, p, reg_m, debias, scaling, tol, max_iter, callback, progress):
    arrays = [z for z in (X, Y, a, b) if z is not None]
    xp = compat.array_namespace(*arrays)
    cdt = compat.compute_dtype(X, xp)
    for z in arrays:
        if z.dtype == getattr(xp, "float64", None):
            cdt = z.dtype
    rho = INF if reg_m is None else float(reg_m)
    p = float(p)
    Xs, Ys, code, cscale, t, diam, batch = _clouds(X, Y, p, cdt, xp)
    B, n, m = Xs.shape[0], Xs.shape[1], Ys.shape[1]
    for nm, w, k in (("a", a, n), ("b", b, m)):
        if w is not None and w.ndim == 2 and (len(batch) != 1 or w.shape[0] != B):
            raise ValueError(f"sinkhorn_divergence: {nm} has shape {tuple(w.shape)} but the clouds have batch shape "
                             f"{batch}: a batch of weights needs the same batch of clouds")
    balanced = rho == INF
    masses = tuple(None if w is None else xp.reshape(xp.sum(compat.cast(w, cdt, xp), axis=-1), (-1, 1))
                   for w in (a, b))
    ab = _weights(a, B, n, cdt, xp, Xs, balanced)
    bb = _weights(b, B, m, cdt, xp, Xs, balanced)
    reg = float(reg)
    tol = cm.default_tol(tol, cdt)
    with compat.no_grad(*arrays):
        f_ba, g_ab, f_aa, g_bb, _ = _potentials(Xs, Ys, code, p, cscale, ab, bb, reg, rho, debias, diam, scaling, tol,
                                                max_iter, callback, progress, xp)
    v = _value(f_ba, g_ab, f_aa, g_bb, ab, bb, reg, rho, debias, xp)
    v = xp.reshape(v, batch) if batch else v[0]
    res = DivergenceRes(Xs, Ys, ab, bb, f_ba, g_ab, f_aa, g_bb, code, p, cscale, t, reg, rho, debias, masses, batch,
                        tuple(None if z is None else tuple(z.shape) for z in (X, Y, a, b)),
                        tuple(None if z is None else z.dtype for z in (X, Y, a, b)))
    return compat.cast(v, X.dtype, xp), res


def _example(rng, dtype):
    """Two small clouds with weights, max_iter=30 (converges in ~10 at reg=1; jit traces every iteration)."""
    a, b = rng.random(5) + 0.2, rng.random(4) + 0.2
    return ((rng.standard_normal((5, 2)).astype(dtype), rng.standard_normal((4, 2)).astype(dtype),
             (a / a.sum()).astype(dtype), (b / b.sum()).astype(dtype)), {"reg": 1.0, "max_iter": 30})


@public(X=Float("[b] n d", finite=True), Y=Float("[b] m d", finite=True),
        a=Weights("[b] n", optional=True, normalized=False), b=Weights("[b] m", optional=True, normalized=False),
        reg=Positive(), p=Scalar(1.0, None), reg_m=Positive(optional=True, finite=False), debias=Bool(),
        scaling=Scalar(0.0, 1.0, low_open=True, high_open=True), tol=NonNegative(optional=True), max_iter=Int(1),
        callback=Callback(), progress=Bool(), example=_example)
def sinkhorn_divergence(X: Array, Y: Array, a: Array | None = None, b: Array | None = None, *, reg: float,
                        p: float = 2.0, reg_m: float | None = None, debias: bool = True, scaling: float = 0.5,
                        tol: float | None = None, max_iter: int = 1000,
                        callback: Callable[[SinkhornState], bool] | None = None, progress: bool = False) -> Array:
    r"""Debiased Sinkhorn divergence between two weighted point clouds, differentiable in points and weights.

    .. math::

        S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
        - \tfrac12\mathrm{OT}_\varepsilon(\alpha, \alpha) - \tfrac12\mathrm{OT}_\varepsilon(\beta, \beta),
        \qquad \mathrm{OT}_\varepsilon(\alpha, \beta) = \min_P \langle P, C\rangle
        + \varepsilon\,\mathrm{KL}(P\,|\,\alpha\otimes\beta) + \dots,

    with :math:`C(x, y) = |x - y|^p / p` (Feydy et al., "Interpolating between Optimal Transport and MMD using
    Sinkhorn Divergences", AISTATS 2019; GeomLoss's ``SamplesLoss("sinkhorn")``).  It is :math:`\ge 0`, zero
    iff :math:`\alpha = \beta`, and removes the entropic bias that makes :math:`\mathrm{OT}_\varepsilon` collapse a
    point-cloud gradient flow into a blob; as :math:`\varepsilon \to 0` it tends to :math:`W_p^p / p`.  In terms
    of the potentials, :math:`S = \langle a, f_{ba} - f_{aa}\rangle + \langle b, g_{ab} - g_{bb}\rangle`.

    Unbalanced (``reg_m`` = :math:`\rho`, KL marginal penalties; Séjourné et al., "Sinkhorn Divergences for
    Unbalanced Optimal Transport", 2019): the same combination plus :math:`\frac\varepsilon2(m_a - m_b)^2`,
    :math:`S = \langle a, (\rho + \frac\varepsilon2)(e^{-f_{aa}/\rho} - e^{-f_{ba}/\rho})\rangle + \langle b,
    (\rho + \frac\varepsilon2)(e^{-g_{bb}/\rho} - e^{-g_{ab}/\rho})\rangle`.

    Computed lazily: the costs are recomputed block by block (:class:`PointCloud`'s kernels), memory
    :math:`O((n + m)d)`.  Potentials: GeomLoss's epsilon-scaling (from :math:`\mathrm{diam}^p`, one
    simultaneous averaged update of the four potentials per scale, each scale ``scaling**p`` times the last),
    then :math:`\mathrm{OT}_\varepsilon(\alpha, \beta)` is converged by (translation-invariant) Sinkhorn and the
    symmetric terms by averaged fixed-point steps, each to ``tol`` on its marginal residual.

    Parameters
    ----------
    X : array, shape (n, d) or (batch, n, d)
    Y : array, shape (m, d) or (batch, m, d)
        Point clouds of the same dimension.
    a : array, shape (n,) or (batch, n), optional
    b : array, shape (m,) or (batch, m), optional
        Non-negative weights; None is uniform.  Balanced (``reg_m=None``): normalised internally.
    reg : float
        :math:`\varepsilon`, in cost units (GeomLoss's ``blur`` :math:`\sigma` is ``reg = sigma**p``).
    p : float, default 2
        Exponent of the cost :math:`|x - y|^p / p` (GeomLoss's ``p``).
    reg_m : float, optional
        :math:`\rho` of the KL marginal penalties (GeomLoss's ``reach`` r is ``reg_m = r**p``); None: balanced.
    debias : bool, default True
        False returns :math:`\mathrm{OT}_\varepsilon(\alpha, \beta)` (the dual value) alone.
    scaling : float in (0, 1), default 0.5
        Ratio of the epsilon-scaling (GeomLoss's ``scaling``).
    tol : float, optional
        L1 tolerance of the marginal conditions (1e-9 in float64, 100 eps otherwise).
    max_iter : int, default 1000
        Iterations at ``reg`` for each of the three problems (after the scaling phase).
    callback : callable(SinkhornState) -> bool, optional
        Called every 10 iterations of the :math:`\mathrm{OT}_\varepsilon(\alpha, \beta)` solve; True stops it.
    progress : bool, default False
        Show a progress bar.

    Returns
    -------
    array, shape () or (batch,)

    Notes
    -----
    VJP by the envelope theorem (the potentials are optimal): :math:`\bar x_i = \bar S\,(\sum_j P^{ab}_{ij}
    \nabla_x C(x_i, y_j) - \sum_j P^{aa}_{ij}\nabla_x C(x_i, x_j))`, computed block-wise like the forward;
    :math:`\bar a = \bar S\,(f_{ba} - f_{aa})` (balanced, projected through the normalisation) or
    :math:`\bar S\,(\rho + \varepsilon)(e^{-f_{aa}/\rho} - e^{-f_{ba}/\rho})` (unbalanced: the backward scale
    is :math:`\rho + \varepsilon`, not the forward's :math:`\rho + \varepsilon/2`).

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import sinkhorn_divergence
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 2))
    >>> float(sinkhorn_divergence(X, X, reg=0.01)) < 1e-8               # zero for identical measures
    True
    >>> s = float(sinkhorn_divergence(X, X + np.array([1.0, 0.0]), reg=0.01))
    >>> bool(abs(s - 0.5) < 1e-6)             # a translation by t costs |t|^2 / 2, whatever reg
    True
    """
    return _forward(X, Y, a, b, reg, p, reg_m, debias, scaling, tol, max_iter, callback, progress)[0]


def sinkhorn_divergence_fwd(X, Y, a=None, b=None, *, reg, p=2.0, reg_m=None, debias=True, scaling=0.5, tol=None,
                            max_iter=1000, callback=None, progress=False):
    return _forward(X, Y, a, b, reg, p, reg_m, debias, scaling, tol, max_iter, callback, progress)


def _weight_grad(res, xp):
    a, b, reg, rho = res.a, res.b, res.reg, res.rho
    if rho == INF:
        da, db = res.f_ba, res.g_ab
        if res.debias:
            da, db = da - res.f_aa, db - res.g_bb
        return _project(da, a, xp), _project(db, b, xp)
    ma, mb = xp.sum(a, axis=-1, keepdims=True), xp.sum(b, axis=-1, keepdims=True)
    if res.debias:
        return ((rho + reg) * (_relax(res.f_aa, rho, xp) - _relax(res.f_ba, rho, xp)),
                (rho + reg) * (_relax(res.g_bb, rho, xp) - _relax(res.g_ab, rho, xp)))
    ea, eb = _relax(res.f_ba, rho, xp), _relax(res.g_ab, rho, xp)
    return rho * (1 - ea) - reg * (ea - mb), rho * (1 - eb) - reg * (eb - ma)


def _project(g, w, xp):
    """The gradient of F(w / sum w) for weights normalised inside (w here already normalised, the user's mass
    unknown: 1 is assumed, and the caller divides by the actual mass)."""
    return g - xp.sum(g * w, axis=-1, keepdims=True)


def sinkhorn_divergence_bwd(res: DivergenceRes, dy):
    xp = compat.array_namespace(res.Xs)
    dt = res.Xs.dtype
    dy = compat.cast(dy, dt, xp)
    dyb = xp.reshape(dy, (-1,)) if res.batch else xp.reshape(dy, (1,))
    la, lb = cm.log_weights(res.a, xp), cm.log_weights(res.b, xp)
    reg = res.reg
    Cxy = LazyCost(res.Xs, res.Ys, res.code, res.p, res.cscale, xp)
    fx, gy = Cxy.grads(res.f_ba + reg * la, res.g_ab + reg * lb, reg)
    if res.debias:
        fa = res.f_aa + reg * la
        gb = res.g_bb + reg * lb
        fx = fx - LazyCost(res.Xs, res.Xs, res.code, res.p, res.cscale, xp).grads(fa, fa, reg)[0]
        gy = gy - LazyCost(res.Ys, res.Ys, res.code, res.p, res.cscale, xp).grads(gb, gb, reg)[0]
    gX = dyb[:, None, None] * fx / res.t
    gY = dyb[:, None, None] * gy / res.t
    da, db = _weight_grad(res, xp)
    da, db = dyb[:, None] * da, dyb[:, None] * db
    sX, sY, sa, sb = res.shapes
    tX, tY, ta, tb = res.dtypes
    batch = res.batch

    def back(g, shape):
        g = xp.reshape(g, batch + tuple(g.shape[1:])) if batch else g[0, ...]
        lead = len(g.shape) - len(shape)
        if lead > 0:
            g = xp.sum(g, axis=tuple(range(lead)))
        return g

    out = [compat.cast(back(gX, sX), tX, xp), compat.cast(back(gY, sY), tY, xp)]
    for g, s, t, mass in ((da, sa, ta, res.masses[0]), (db, sb, tb, res.masses[1])):
        if s is None:
            out.append(None)
            continue
        if res.rho == INF:                                   # through w / sum(w): divide by the user's mass
            g = g / mass
        out.append(compat.cast(back(g, s), t, xp))
    return tuple(out)


vjp(sinkhorn_divergence, sinkhorn_divergence_fwd, sinkhorn_divergence_bwd, validate=True)
