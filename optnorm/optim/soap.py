"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al. 2024; reference nikhilvyas/SOAP)."""
from __future__ import annotations

from typing import Any, NamedTuple

from .._lib.typing import Scalar as ScalarT, Schedule
from .._lib import compat
from .._lib.roles import Bool, Choice, Int, NonNegative, Scalar, Scalars, UnitInterval
from ._common import active, scalar, ssqrt, stable_rms, zeros_state
from .base import LR, NAN_POLICY, Rule, Transform, chain, rule

PRECOND_DTYPES = ("float32", None)


class SOAPLeaf(NamedTuple):
    """Leaf state of :func:`soap`: Adam's moments in the rotated basis, and per axis the Shampoo statistic
    ``GG`` (``L``, ``R`` in the paper) and its eigenbasis ``Q`` (tuples with None for axes left alone)."""
    exp_avg: Any
    exp_avg_sq: Any
    GG: tuple
    Q: tuple


def _axes(p, max_precond_dim, precondition_1d):
    if p.ndim == 0:
        return ()
    if p.ndim == 1 and not precondition_1d:
        return (False,)
    return tuple(int(n) <= max_precond_dim for n in p.shape)


def _mode(x, Q, d, xp, back: bool):
    """``x`` times ``Q^T`` (``back``: ``Q``) along axis ``d``."""
    if x.ndim == 2:
        if d == 0:
            return (Q if back else xp.matrix_transpose(Q)) @ x
        return x @ (xp.matrix_transpose(Q) if back else Q)
    y = xp.tensordot(x, Q, axes=([d], [1 if back else 0]))
    return xp.moveaxis(y, -1, d)


def project(x, Qs, xp, back=False):
    """``x`` in the eigenbasis (``Q_d^T`` applied along every preconditioned axis ``d``), or back."""
    for d, Q in enumerate(Qs):
        if Q is not None:
            x = _mode(x, Q, d, xp, back)
    return x


def _outer(g, d, xp):
    """``G_(d) G_(d)^T``: the contraction of ``g`` with itself over every axis but ``d``."""
    if g.ndim == 1:
        return g[:, None] * g[None, :]
    if g.ndim == 2:
        return g @ xp.matrix_transpose(g) if d == 0 else xp.matrix_transpose(g) @ g
    other = [a for a in range(g.ndim) if a != d]
    return xp.tensordot(g, g, axes=(other, other))


def _eigvecs(M, pdt, xp):
    """Eigenvectors of ``M + 1e-30 I`` in descending eigenvalue order (computed in ``pdt``, or in ``M``'s dtype
    when wider: the reference's ``eigh`` of a float32 matrix plus a float64 identity runs in float64)."""
    n = M.shape[0]
    A = compat.cast(M, pdt, xp)
    if compat.dtype_name(M.dtype) == "float64":
        A = compat.cast(A, M.dtype, xp)
    A = A + 1e-30 * compat.eye(n, like=M, dtype=A.dtype, xp=xp)
    _, V = xp.linalg.eigh(A)
    return compat.cast(xp.flip(V, axis=1), M.dtype, xp)


def _refresh(GG, Q, v, d, pdt, xp):
    """One power iteration and QR from the previous basis, columns ordered by the estimated eigenvalues
    ``diag(Q^T GG Q)`` (descending); the second moment's entries along ``d`` follow the permutation."""
    M, O = compat.cast(GG, pdt, xp), compat.cast(Q, pdt, xp)
    est = xp.sum(O * (M @ O), axis=0)
    idx = xp.argsort(est, descending=True)
    v = xp.take(v, idx, axis=d)
    O = xp.take(O, idx, axis=1)
    Qn, _ = xp.linalg.qr(M @ O)
    return compat.cast(Qn, Q.dtype, xp), v


def scale_by_soap(b1, b2, shampoo_beta, eps, precondition_frequency, max_precond_dim, precondition_1d,
                  normalize_grads, correct_bias, weight_decay, precondition_dtype) -> Transform:
    """SOAP's step (the reference's order): first call only builds ``GG`` and ``Q``; then Adam in the
    rotated basis, the step, decoupled decay after it, and the preconditioner update."""
    bs = b2 if shampoo_beta is None else shampoo_beta

    def init(p, ctx):
        xp = ctx.xp
        ax = _axes(p, max_precond_dim, precondition_1d)
        GG = tuple(zeros_state(p, xp, (int(n), int(n))) if on else None for n, on in zip(p.shape, ax))
        return {"exp_avg": zeros_state(p, xp), "exp_avg_sq": zeros_state(p, xp), "GG": GG,
                "Q": tuple(None if G is None else G for G in GG)}

    def update(leaf, s, ctx):
        xp, g, t, pc = ctx.xp, leaf.g, ctx.t, leaf.p
        if isinstance(t, int):
            return _concrete(leaf, s, ctx, xp, g, t, pc)
        return _traced(leaf, s, ctx, xp, g, t, pc)

    def pdtype(x, xp):
        return getattr(xp, precondition_dtype) if precondition_dtype else x.dtype

    def new_gg(GG, g, xp):
        return tuple(None if G is None else compat.lerp(G, _outer(g, d, xp), 1.0 - bs) for d, G in enumerate(GG))

    def adam_part(s, g, k, pc, xp, ctx):
        lr = ctx.lr
        gp = project(g, s.Q, xp)
        m = b1 * s.exp_avg + (1.0 - b1) * gp
        v = b2 * s.exp_avg_sq + (1.0 - b2) * (gp * gp)
        den = xp.sqrt(v) + eps
        if correct_bias:
            bc1, bc2 = 1.0 - b1 ** k, 1.0 - b2 ** k
            step = scalar(lr, pc, xp) * ssqrt(scalar(bc2, pc, xp), xp) / scalar(bc1, pc, xp)
        else:
            step = scalar(lr, pc, xp)
        ng = project(m / den, s.Q, xp, back=True)
        if normalize_grads:
            ng = ng / (1e-30 + stable_rms(ng, xp))
        pn = pc - step * ng
        if active(weight_decay) and ctx.on("weight_decay"):
            pn = pn - scalar(lr, pc, xp) * weight_decay * pn
        return pn, m, v

    def _concrete(leaf, s, ctx, xp, g, t, pc):
        if t == 1:                                       # build the preconditioner; no step (reference)
            GG = new_gg(s.GG, g, xp)
            Q = tuple(None if G is None else _eigvecs(G, pdtype(G, xp), xp) for G in GG)
            return leaf._replace(u=None), s._replace(GG=GG, Q=Q)
        k = t - 1
        pn, m, v = adam_part(s, g, k, pc, xp, ctx)
        m = project(m, s.Q, xp, back=True)
        GG = new_gg(s.GG, g, xp)
        Q = s.Q
        if k % precondition_frequency == 0:
            Qn = []
            for d, (G, Qd) in enumerate(zip(GG, Q)):
                if G is None:
                    Qn.append(None)
                    continue
                q, v = _refresh(G, Qd, v, d, pdtype(G, xp), xp)
                Qn.append(q)
            Q = tuple(Qn)
        m = project(m, Q, xp)
        return leaf._replace(p=pn, u=None), s._replace(exp_avg=m, exp_avg_sq=v, GG=GG, Q=Q)

    def _traced(leaf, s, ctx, xp, g, t, pc):
        # under jax.jit the step is traced: both branches are computed and selected (eigh and QR every step)
        k = t - 1
        first = t == 1
        pn, m, v = adam_part(s, g, xp.maximum(k, xp.ones_like(k)), pc, xp, ctx)
        m = project(m, s.Q, xp, back=True)
        GG = new_gg(s.GG, g, xp)
        refresh = xp.logical_and(k > 0, k % precondition_frequency == 0)
        Qn, v2 = [], v
        for d, (G, Qd) in enumerate(zip(GG, s.Q)):
            if G is None:
                Qn.append(None)
                continue
            q, vr = _refresh(G, Qd, v2, d, pdtype(G, xp), xp)
            v2 = xp.where(refresh, vr, v2)
            q = xp.where(refresh, q, Qd)
            Qn.append(xp.where(first, _eigvecs(G, pdtype(G, xp), xp), q))
        Q = tuple(Qn)
        m = project(m, Q, xp)
        zero = xp.zeros_like(m)
        return (leaf._replace(p=xp.where(first, pc, pn), u=None),
                s._replace(exp_avg=xp.where(first, zero, m), exp_avg_sq=xp.where(first, zero, v2), GG=GG, Q=Q))

    return Transform(init, update)


@rule("SOAP", lr=LR, betas=Scalars(UnitInterval(), 2), shampoo_beta=UnitInterval(optional=True), eps=NonNegative(),
      weight_decay=NonNegative(), precondition_frequency=Int(1), max_precond_dim=Int(1), precondition_1d=Bool(),
      normalize_grads=Bool(), correct_bias=Bool(), precondition_dtype=Choice(PRECOND_DTYPES), nan_policy=NAN_POLICY)
def soap(*, lr: ScalarT | Schedule = 3e-3, betas: tuple[float, float] = (0.95, 0.95), shampoo_beta: float | None = None,
         eps: float = 1e-8, weight_decay: float = 0.01, precondition_frequency: int = 10, max_precond_dim: int = 10000,
         precondition_1d: bool = False, normalize_grads: bool = False, correct_bias: bool = True,
         precondition_dtype: str | None = "float32", nan_policy: str = "raise") -> Rule:
    r"""SOAP: Adam run in the eigenbasis of Shampoo's preconditioner, the basis refreshed every few steps.

    For a matrix gradient :math:`G` with statistics :math:`L \leftarrow \mathrm{lerp}(L, GG^\top, 1-\beta_s)`,
    :math:`R \leftarrow \mathrm{lerp}(R, G^\top G, 1-\beta_s)` and their eigenbases :math:`Q_L, Q_R`:

    .. math::
        G' = Q_L^\top G Q_R,\quad m \leftarrow \beta_1 m + (1-\beta_1)G',\quad
        v \leftarrow \beta_2 v + (1-\beta_2)G'^2,

    .. math::
        p \leftarrow p - lr\frac{\sqrt{1-\beta_2^k}}{1-\beta_1^k}\,Q_L\frac{m}{\sqrt v + \epsilon}Q_R^\top,
        \qquad p \leftarrow p(1 - lr\,\lambda)

    (every axis of an N-D parameter with at most ``max_precond_dim`` entries gets its own
    :math:`Q`; 1-D parameters run plain Adam unless ``precondition_1d``).  As in the reference
    implementation (nikhilvyas/SOAP, ``SOAP`` at a1e5535): the first step only builds the
    statistics and :math:`Q` by ``eigh`` (no parameter update), :math:`k` counts the steps after
    it, :math:`m` is kept in the rotated basis (moved to the new one when :math:`Q` changes),
    and every ``precondition_frequency`` steps :math:`Q` is refreshed by one power iteration
    and a QR, its columns ordered by the estimated eigenvalues with :math:`v` permuted to
    match.  ``eigh``/``qr`` run in float32 (``precondition_dtype="float32"``, the
    reference's choice) or in the parameter's dtype (None).  ``merge_dims`` (reshaping
    N-D parameters before preconditioning) is not implemented.  Vyas, Morwani, Zhao,
    Kwun, Shapira, Brandfonbrener, Janson, Kakade, "SOAP: Improving and Stabilizing
    Shampoo using Adam", ICLR 2025.

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size.
    betas : (float, float)
        Adam's :math:`\beta_1, \beta_2`.
    shampoo_beta : float in [0, 1) or None
        :math:`\beta_s` of the statistics (None: :math:`\beta_2`).
    eps : float >= 0
        Added to the root.
    weight_decay : float >= 0
        Decoupled decay, applied after the step.
    precondition_frequency : int >= 1
        Steps between basis refreshes.
    max_precond_dim : int >= 1
        Axes longer than this keep the identity basis.
    precondition_1d : bool
        Precondition 1-D parameters too.
    normalize_grads : bool
        Scale each update to RMS 1.
    correct_bias : bool
        Adam's bias correction.
    precondition_dtype : {"float32", None}
        dtype of ``eigh`` and ``qr``.
    nan_policy : {"raise", "skip", "ignore"}
        See :func:`adam`.

    Returns
    -------
    Rule
        Leaf state :class:`SOAPLeaf`.

    Examples
    --------
    >>> import numpy as np
    >>> opt = soap(lr=0.1)
    >>> W = np.eye(3); st = opt.init(W)
    >>> W, st = opt.step(W, np.diag([1.0, 2.0, 3.0]), st)     # first step: preconditioner only
    >>> bool(np.all(W == np.eye(3)))
    True
    >>> W, st = opt.step(W, np.diag([1.0, 2.0, 3.0]), st)
    >>> np.round(np.diag(W), 4).tolist()
    [0.8991, 0.8991, 0.8991]
    """
    body = scale_by_soap(betas[0], betas[1], shampoo_beta, eps, precondition_frequency, max_precond_dim,
                         precondition_1d, normalize_grads, correct_bias, weight_decay, precondition_dtype)
    return Rule(lr=lr, transform=chain(body), leaf=SOAPLeaf, nan_policy=nan_policy)
