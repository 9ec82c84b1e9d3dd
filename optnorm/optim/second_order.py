"""Second-order rules: adahessian (Hutchinson diagonal from ``hvp=``) and gradnorm_newton (regularised Newton)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from .._lib import compat, validate
from . import transforms as T
from .base import Ctx, Rule, cast, check_betas, scalar, ssqrt, tree_flatten, tree_unflatten
from .hutchinson import _seed_ints, hutchinson_diag

__all__ = ["adahessian", "gradnorm_newton", "regularized_newton_step", "NewtonResult"]


class AdaHessianLeaf(NamedTuple):
    exp_avg: Any
    exp_hessian_diag_sq: Any


class AdaHessian(Rule):
    name = "adahessian"
    needs_hvp = True

    def __init__(self, *, lr, betas, eps, weight_decay, hessian_power, n_samples, spatial_average, seed,
                 nan_policy, factory, hyper):
        super().__init__(lr=lr, nan_policy=nan_policy, factory=factory, hyper=hyper)
        self.betas = check_betas(betas)
        self.eps = validate.check_positive(eps, "eps")
        self.weight_decay = validate.check_nonnegative(weight_decay, "weight_decay")
        self.hessian_power = validate.check_probability(hessian_power, "hessian_power")
        self.n_samples = validate.check_int(n_samples, "n_samples", low=1)
        self.spatial_average = validate.check_in(spatial_average, ("conv", "none"), "spatial_average")
        self.seed = _seed_ints(seed)

    def init_leaf(self, p, *, name, xp):
        cd = compat.compute_dtype(p, xp)
        z = xp.zeros(p.shape, dtype=cd, device=compat.device(p))
        return AdaHessianLeaf(z, xp.zeros(p.shape, dtype=cd, device=compat.device(p)))

    def prepare(self, ps, gs, ss, *, t, xp, names, hvp=None, count=None, treedef=None):
        if hvp is None:
            raise ValueError("adahessian needs hvp= in step(): a callable v -> H v on the params tree")
        tree = tree_unflatten(treedef, ps)
        d = hutchinson_diag(hvp, tree, n_samples=self.n_samples, seed=self.seed, step=count)
        dl, _, _ = tree_flatten(d, "hvp(v)")
        return [T.spatial_average(di, xp, mode=self.spatial_average) for di in dl]

    def update_leaf(self, p, g, s, ctx: Ctx):
        xp, t = ctx.xp, ctx.t
        b1, b2 = self.betas
        cd = compat.compute_dtype(p, xp)
        pc, gc, d = cast(p, cd, xp), cast(g, cd, xp), cast(ctx.extra, cd, xp)
        lr = scalar(self.lr_at(t), pc, xp)
        bc1 = scalar(T.bias_correction(b1, t), pc, xp)
        bc2s = scalar(ssqrt(T.bias_correction(b2, t), xp), pc, xp)
        m = b1 * s.exp_avg + (1.0 - b1) * gc
        v = T.ema_sq(s.exp_hessian_diag_sq, d, b2)
        denom = (xp.sqrt(v) / bc2s) ** self.hessian_power + self.eps
        pc = pc - lr * (m / bc1 / denom + self.weight_decay * pc)
        return cast(pc, p.dtype, xp), AdaHessianLeaf(m, v)


def adahessian(*, lr=0.15, betas=(0.9, 0.999), eps=1e-4, weight_decay=0.0, hessian_power=1.0, n_samples=1,
               spatial_average="conv", seed=0, nan_policy="raise") -> Rule:
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

    Examples
    --------
    >>> import numpy as np
    >>> A = np.diag([1.0, 4.0])
    >>> opt = adahessian(lr=0.1)
    >>> x = np.ones(2); st = opt.init(x)
    >>> x, st = opt.step(x, A @ x, st, hvp=lambda v: A @ v)
    """
    hyper = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, hessian_power=hessian_power,
                 n_samples=n_samples, spatial_average=spatial_average, seed=seed, nan_policy=nan_policy)
    return AdaHessian(factory=adahessian, hyper=hyper, **hyper)


# ----------------------------------------------------------------------------------------------- regularised Newton
def regularized_newton_step(g, H, lam, B=None):
    """``-(H + lam B)^{-1} g`` (B = identity when None); ``g`` of shape (d,), ``H`` and ``B`` (d, d)."""
    xp = compat.array_namespace(g, H, B)
    d = g.shape[0]
    Bm = xp.eye(d, dtype=H.dtype, device=compat.device(H)) if B is None else B
    return -xp.linalg.solve(H + lam * Bm, g[:, None])[:, 0]


def _dual_norm(g, B, xp):
    if B is None:
        return float(xp.linalg.vector_norm(g))
    return math.sqrt(max(float(xp.sum(g * xp.linalg.solve(B, g[:, None])[:, 0])), 0.0))


@dataclass(frozen=True)
class NewtonResult:
    """Result of :func:`gradnorm_newton`: ``x``, iterations, convergence, gradient norms and the final gamma."""
    x: Any
    n_iter: int
    converged: bool
    errors: tuple
    gamma: float
    n_trials: int


def gradnorm_newton(fun: Callable, grad: Callable, hess: Callable, x0, /, *, gamma0: float = 1.0,
                    gamma_min: float = 1e-9, eps: float = 1e-8, B=None, max_iter: int = 100, max_trials: int = 40,
                    tol: float = 1e-8, callback: Callable | None = None, callback_every: int = 1) -> NewtonResult:
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

    Parameters
    ----------
    fun, grad, hess : callables of ``x`` (shape (d,)) returning a float, (d,), (d, d).
    x0 : array (d,)
    gamma0, gamma_min, eps : floats of the gamma controller.
    B : array (d, d), optional
        Positive definite metric (identity by default).
    max_iter, max_trials, tol : stop when ``|g|_* <= tol``.
    callback : callable(k, x) -> bool, optional, called every ``callback_every`` iterations; True stops.

    Returns
    -------
    NewtonResult

    Examples
    --------
    >>> import numpy as np
    >>> A = np.array([[3.0, 1.0], [1.0, 2.0]]); b = np.array([1.0, -1.0])
    >>> r = gradnorm_newton(lambda x: 0.5 * x @ A @ x - b @ x, lambda x: A @ x - b, lambda x: A, np.zeros(2))
    >>> bool(r.converged), np.allclose(A @ r.x, b)
    (True, True)
    """
    xp = compat.array_namespace(x0, B)
    validate.check_float(x0, "x0", xp)
    if x0.ndim != 1:
        raise ValueError(f"x0 must be a vector (d,), got shape {tuple(x0.shape)}")
    gamma = validate.check_positive(gamma0, "gamma0")
    gamma_min = validate.check_positive(gamma_min, "gamma_min")
    validate.check_positive(eps, "eps")
    max_iter = validate.check_int(max_iter, "max_iter", low=0)
    max_trials = validate.check_int(max_trials, "max_trials", low=1)
    callback_every = validate.check_int(callback_every, "callback_every", low=1)
    x = x0
    errors = []
    converged = False
    trials = 0
    k = 0
    for k in range(1, max_iter + 1):
        g = grad(x)
        gn = _dual_norm(g, B, xp)
        errors.append(gn)
        if gn <= tol:
            converged = True
            k -= 1
            break
        H = hess(x)
        fx = float(fun(x))
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
        if callback is not None and k % callback_every == 0 and callback(k, x):
            break
    else:
        g = grad(x)
        gn = _dual_norm(g, B, xp)
        converged = gn <= tol
        errors.append(gn)
    return NewtonResult(x=x, n_iter=k, converged=converged, errors=tuple(errors), gamma=gamma, n_trials=trials)
