"""Second-order rules: adahessian (Hutchinson diagonal from ``hvp=``) and gradnorm_newton (regularised Newton)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.api import public, public_class
from .._lib.convergence import default_tol
from .._lib.solver import IterState, Monitor, Result
from .._lib.typing import Array, Scalar as ScalarT, Schedule, Seed as SeedT
from .._lib.roles import SPD, Bool, Callback, Choice, Float, Int, NonNegative, Positive, Probability, Scalars, Seed, \
    Symmetric, UnitInterval
from . import transforms as T
from ._common import bias_correction, scalar, seed_ints, ssqrt, stable_norm, tree_flatten, zeros_state
from .base import LR, NAN_POLICY, Rule, Transform, chain, rule
from .hutchinson import hutchinson_diag


class AdaHessianLeaf(NamedTuple):
    """Leaf state of :func:`adahessian`: the gradient momentum and the EMA of the squared Hessian diagonal."""
    exp_avg: Any
    exp_hessian_diag_sq: Any


def scale_by_hessian(b1: float, b2: float, eps: float, power: float) -> Transform:
    """AdaHessian's direction ``m/(1-b1^t) / ((sqrt(v)/sqrt(1-b2^t))^k + eps)`` with ``v`` the EMA of the
    squared Hessian diagonal estimate in ``ctx.extra``."""

    def init(p, ctx):
        return {"exp_avg": zeros_state(p, ctx.xp), "exp_hessian_diag_sq": zeros_state(p, ctx.xp)}

    def update(leaf, s, ctx):
        xp, t, g = ctx.xp, ctx.t, leaf.u
        d = compat.cast(ctx.extra, g.dtype, xp)
        bc1 = scalar(bias_correction(b1, t), g, xp)
        bc2s = scalar(ssqrt(bias_correction(b2, t), xp), g, xp)
        m = b1 * s.exp_avg + (1.0 - b1) * g
        v = T.ema_sq(s.exp_hessian_diag_sq, d, b2)
        denom = (xp.sqrt(v) / bc2s) ** power + eps
        return leaf._replace(u=m / bc1 / denom), s._replace(exp_avg=m, exp_hessian_diag_sq=v)

    return Transform(init, update)


def _spatial_average(d, xp, *, mode: str):
    """``|d|``, averaged over the kernel dims (2, 3) of 4-D conv weights when ``mode="conv"``."""
    d = xp.abs(d)
    if mode == "conv" and d.ndim == 4:
        return xp.mean(d, axis=(2, 3), keepdims=True) * xp.ones_like(d)
    return d


def hessian_probe(n_samples: int, seed, spatial_average: str) -> Callable:
    """The per-leaf Hutchinson diagonal of AdaHessian, from ``hvp`` on the params tree (seeded by the step)."""

    def probe(ps, tree, hvp, count, xp):
        d = hutchinson_diag(hvp, tree, n_samples=n_samples, seed=seed, step=count)
        dl, _, _ = tree_flatten(d, "hvp(v)")
        return [_spatial_average(di, xp, mode=spatial_average) for di in dl]

    return probe


@rule("AdaHessian", lr=LR, betas=Scalars(UnitInterval(), 2), eps=Positive(), weight_decay=NonNegative(),
      hessian_power=Probability(), n_samples=Int(1), spatial_average=Choice(("conv", "none")), seed=Seed(),
      nan_policy=NAN_POLICY)
def adahessian(*, lr: ScalarT | Schedule = 0.15, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-4,
               weight_decay: float = 0.0, hessian_power: float = 1.0, n_samples: int = 1, spatial_average: str = "conv",
               seed: SeedT = 0, nan_policy: str = "raise") -> Rule:
    r"""AdaHessian: Adam with the squared Hutchinson Hessian diagonal as second moment.

    "ADAHESSIAN: An Adaptive Second Order Optimizer for Machine Learning", Z. Yao,
    A. Gholami, S. Shen, M. Mustafa, K. Keutzer, M. W. Mahoney, AAAI 2021 (image
    classification code's defaults).  Each step draws Rademacher probes ``z``
    (seeded by ``(seed, step)``), ``D = |z * H z|`` averaged over the kernel dims of
    4-D conv weights (``spatial_average="conv"``), then

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\; v \leftarrow \beta_2 v + (1-\beta_2) D^2,\;
        p \leftarrow p - lr\Big(\frac{m/(1-\beta_1^t)}{(\sqrt{v}/\sqrt{1-\beta_2^t})^{k} + \epsilon} + \lambda p\Big)

    ``step(params, grads, state, hvp=...)`` needs ``hvp(v) -> H v`` on the params tree.

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size; a schedule is called with the number of steps taken (0 first).
    betas : (float, float)
        Moment decays, each in [0, 1).
    eps : float > 0
        Added to the root.
    weight_decay : float >= 0
        Coupled decay inside the step.
    hessian_power : float in [0, 1]
        Exponent :math:`k` of the root.
    n_samples : int >= 1
        Rademacher probes per step.
    spatial_average : {"conv", "none"}
        Average ``D`` over the kernel dims of 4-D weights.
    seed : None, int or Generator
        Probe seed (with the step).
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise before anything changes, skip the step, or are not checked.

    Returns
    -------
    Rule
        ``init`` / ``step`` / ``step_``; leaf state ``AdaHessianLeaf``.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.diag([1.0, 4.0])
    >>> opt = adahessian(lr=0.1)
    >>> x = np.ones(2); st = opt.init(x)
    >>> x, st = opt.step(x, A @ x, st, hvp=lambda v: A @ v)
    """
    parts = [scale_by_hessian(betas[0], betas[1], eps, hessian_power)]
    if weight_decay:
        parts.append(T.add_decayed_weights(weight_decay))
    parts.append(T.scale_by_lr())
    return Rule(lr=lr, transform=chain(*parts), leaf=AdaHessianLeaf, nan_policy=nan_policy,
                probe=hessian_probe(n_samples, seed_ints(seed)[0], spatial_average))


# ----------------------------------------------------------------------------------------------- regularised Newton
def _newton_example(rng, dtype):
    d = 3
    a = rng.standard_normal((d, 2 * d))
    H = (a @ a.T / (2 * d) + np.eye(d)).astype(dtype)
    return (rng.standard_normal(d).astype(dtype), H, 0.5), {}


@public(g=Float("d", finite=True), H=Symmetric("d d"), lam=NonNegative(array=True), B=SPD("d d", optional=True),
        example=_newton_example)
def regularized_newton_step(g: Array, H: Array, lam: float, B: Array | None = None) -> Array:
    r"""The regularised Newton step ``-(H + lam B)^{-1} g`` (``B`` = identity when None).

    One step of :func:`gradnorm_newton`.  ``g`` has shape (d,), ``H`` (a symmetric Hessian or an
    approximation of it) and ``B`` (a positive definite metric) shape (d, d).  A ``ValueError`` names
    ``H`` when ``H + lam B`` is singular, and ``g`` when the step overflows.

    .. math::
        \Delta = -(H + \lambda B)^{-1} g

    Parameters
    ----------
    g : array (d,)
        Gradient.
    H : array (d, d)
        Symmetric Hessian (or an approximation).
    lam : float >= 0 or 0-d array
        :math:`\lambda`.
    B : array (d, d), optional
        Positive definite metric (identity when None).

    Returns
    -------
    array (d,)
        The step :math:`\Delta`.

    Examples
    --------
    >>> import numpy as np
    >>> regularized_newton_step(np.array([2.0, 4.0]), np.diag([1.0, 3.0]), 1.0).tolist()
    [-1.0, -1.0]
    """
    xp = compat.array_namespace(g, H, B)
    Bm = compat.eye(g.shape[0], like=H, xp=xp) if B is None else B
    lam = scalar(lam, H, xp)
    try:
        step = -xp.linalg.solve(H + lam * Bm, g[:, None])[:, 0]
    except Exception as exc:  # NumPy's and torch's LinAlgError (JAX and CuPy return inf/NaN instead)
        if "LinAlgError" not in type(exc).__name__:
            raise
        raise ValueError(f"regularized_newton_step: H + lam B is singular (lam = {float(lam):.3g}); increase lam "
                         "or regularise H") from None
    if compat.is_concrete(step) and not bool(xp.all(xp.isfinite(step))):
        raise ValueError("regularized_newton_step: the step -(H + lam B)^{-1} g overflows or H + lam B is singular: "
                         "scale g down or increase lam")
    return step


def _dual_norm(g, B, xp):
    if B is None:
        return float(stable_norm(g, xp))
    return math.sqrt(max(float(xp.sum(g * xp.linalg.solve(B, g[:, None])[:, 0])), 0.0))


@public_class
@dataclass(frozen=True, repr=False)
class NewtonResult(Result):
    r"""Result of :func:`gradnorm_newton`.

    Attributes
    ----------
    x : array (d,)
        The last iterate.
    n_iter : int
        Newton steps taken.
    converged : bool
        Whether ``|grad f(x)|_* <= tol`` was reached.
    errors : tuple of float
        The dual gradient norm at ``x0`` and after every step.
    gamma : float
        The final smoothness estimate :math:`\gamma`.
    n_trials : int
        Linear solves (accepted and rejected trial steps).
    """
    x: Any
    n_iter: int
    converged: bool
    errors: tuple
    gamma: float
    n_trials: int


@dataclass(frozen=True)
class NewtonState(IterState):
    """What :func:`gradnorm_newton`'s ``callback`` receives: ``n_iter``, ``error`` (the dual gradient norm),
    the iterate ``x`` and the current ``gamma``."""
    x: Any = None
    gamma: float = 0.0


def _gnn_example(rng, dtype):
    A = np.array([[3.0, 1.0], [1.0, 2.0]])
    b = np.array([1.0, -1.0])
    return (lambda x: 0.5 * x @ A @ x - b @ x, lambda x: A @ x - b, lambda x: A.astype(x.dtype),
            np.zeros(2, dtype)), {}


def _finite_value(v, what: str, k: int) -> float:
    fv = float(v)
    if not math.isfinite(fv):
        at = "x0" if k == 0 else f"the iterate of step {k}"
        raise ValueError(f"gradnorm_newton: {what} is {fv} at {at}; fun and grad must be finite there (scale x0 "
                         "or the problem)")
    return fv


@public(fun=Callback(optional=False), grad=Callback(optional=False), hess=Callback(optional=False),
        x0=Float("d", finite=True), gamma0=Positive(), gamma_min=Positive(), eps=Positive(),
        B=SPD("d d", optional=True), max_iter=Int(0), max_trials=Int(1), tol=NonNegative(optional=True),
        callback=Callback(), callback_every=Int(1), progress=Bool(), example=_gnn_example, sizes={"d": 2})
def gradnorm_newton(fun: Callable, grad: Callable, hess: Callable, x0: Array, /, *, gamma0: float = 1.0,
                    gamma_min: float = 1e-9, eps: float = 1e-8, B: Array | None = None, max_iter: int = 100,
                    max_trials: int = 40, tol: float | None = None, callback: Callable | None = None,
                    callback_every: int = 1, progress: bool = False) -> NewtonResult:
    r"""Gradient-regularised Newton method with an adaptive gradient-normalised smoothness estimate.

    "Gradient-Normalized Smoothness for Optimization with Approximate Hessians",
    A. Semenov, M. Jaggi, N. Doikov, 2025 (Algorithm 1).  With ``H_k = hess(x_k)``
    (exact or any approximation: Gauss-Newton, Fisher, ...):

    .. math::
        \lambda_k = \|g_k\|_* / (\gamma_k + \epsilon),\qquad
        \Delta = -(H_k + \lambda_k B)^{-1} g_k

    accepted when ``f(x) - f(x + Delta) >= |grad f(x + Delta)|_*^2 / (8 lambda_k)``
    (then ``gamma <- 2 gamma``), otherwise ``gamma <- max(gamma/2, gamma_min)`` and
    retried (at most ``max_trials``).  ``|.|_*`` is the dual norm ``sqrt(g^T B^{-1} g)``.
    A dense small-problem solver (one linear solve per trial); any Array-API namespace.
    Stopping at ``max_iter`` with ``|g|_* > tol`` returns ``converged=False`` and warns
    with :class:`optnorm.ConvergenceWarning`.

    Parameters
    ----------
    fun : callable(x) -> float
        The objective.
    grad : callable(x) -> array (d,)
        Its gradient.
    hess : callable(x) -> array (d, d)
        Its Hessian or an approximation.
    x0 : array (d,)
        Starting point.
    gamma0 : float > 0
        Initial smoothness estimate :math:`\gamma_0`.
    gamma_min : float > 0
        Floor of :math:`\gamma`.
    eps : float > 0
        :math:`\epsilon` in :math:`\lambda_k`.
    B : array (d, d), optional
        Positive definite metric (identity by default).
    max_iter : int >= 0
        Newton steps at most.
    max_trials : int >= 1
        Trial steps per iteration at most.
    tol : float >= 0, optional
        Stop when ``|g|_* <= tol`` (default ``1e-8`` for float64 ``x0``, ``1.2e-5`` for float32:
        :func:`optnorm._lib.convergence.default_tol`).
    callback : callable(state) -> bool, optional
        Called every ``callback_every`` steps with a :class:`NewtonState` (``n_iter``, ``error``, ``x``,
        ``gamma``); returning True stops.
    callback_every : int >= 1
        Steps between callbacks.
    progress : bool
        Show a progress bar (tqdm when installed, else a line per interval on stderr).

    Returns
    -------
    NewtonResult
        ``x``, ``n_iter``, ``converged``, ``errors``, ``gamma``, ``n_trials``.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.array([[3.0, 1.0], [1.0, 2.0]]); b = np.array([1.0, -1.0])
    >>> r = gradnorm_newton(lambda x: 0.5 * x @ A @ x - b @ x, lambda x: A @ x - b, lambda x: A, np.zeros(2))
    >>> bool(r.converged), np.allclose(A @ r.x, b)
    (True, True)
    """
    xp = compat.array_namespace(x0, B)
    tol = default_tol(1e-8, x0.dtype) if tol is None else tol
    gamma = float(gamma0)
    x = x0
    trials = 0
    mon = Monitor("gradnorm_newton", max_iter=max_iter, tol=tol, callback=callback, callback_every=callback_every,
                  progress=progress)
    gn = _finite_value(_dual_norm(grad(x), B, xp), "|grad|", 0)
    mon.errors.append(gn)
    if gn <= tol:
        mon.converged = True
    for k in range(1, max_iter + 1):
        if mon.converged:
            break
        g = grad(x)
        H = hess(x)
        fx = _finite_value(fun(x), "fun", k - 1)
        for _ in range(max_trials):
            trials += 1
            lam = gn / (gamma + eps)
            x1 = x + regularized_newton_step(g, H, lam, B)
            f1 = float(fun(x1))
            g1n = _dual_norm(grad(x1), B, xp)
            if fx - f1 >= g1n * g1n / (8.0 * lam):
                gamma = max(2.0 * gamma, gamma_min)
                break
            gamma = max(gamma / 2.0, gamma_min)
        x = x1
        gn = _finite_value(_dual_norm(grad(x), B, xp), "|grad|", k)
        if mon.update(k, gn, lambda: NewtonState(k, gn, x, gamma)):
            break
    mon.close()
    return NewtonResult(x=x, n_iter=mon.n_iter, converged=mon.converged, errors=tuple(mon.errors), gamma=gamma,
                        n_trials=trials)
