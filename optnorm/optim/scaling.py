"""Scaling rules around the optimiser: spectral_scale / spectral_init / spectral_normalize, nap, norm_loss.

Weight Conditioning lives in :mod:`optnorm.optim.reparam`. Weight Compander (Cakaj et al., 2023)
is not implemented: its reparameterisation function could not be verified from the paper.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .._lib import compat, ops, validate
from . import transforms as T
from .base import Ctx, Rule, cast

__all__ = ["spectral_scale", "spectral_init", "spectral_normalize", "nap", "project_to_norm", "norm_loss", "norm_loss_grad"]


# ----------------------------------------------------------------------------------------------- spectral condition
def _fans(shape, layout):
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"shape must have at least 2 dimensions (a weight matrix), got {shape}")
    validate.check_in(layout, ("torch", "flax"), "layout")
    rest = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    if layout == "torch":          # (out, in, *kernel)
        return shape[0], shape[1] * rest
    return shape[-1], int(np.prod(shape[:-1]))   # flax: (*kernel, in, out)


def spectral_scale(shape, /, *, layout: str = "torch") -> float:
    r"""``sqrt(fan_out / fan_in)``: the spectral norm a layer's weights and updates should have.

    "A Spectral Condition for Feature Learning", G. Yang, J. B. Simon, J. Bernstein,
    2023: feature learning in every layer needs ``|W|_* = Theta(sqrt(fan_out/fan_in))``
    and ``|Delta W|_* = Theta(sqrt(fan_out/fan_in))``.  ``shape`` is a shape or an
    array; ``layout="torch"`` is ``(out, in, *kernel)``, ``"flax"`` ``(*kernel, in, out)``.

    Examples
    --------
    >>> spectral_scale((256, 64))
    2.0
    """
    if compat.is_array(shape):
        shape = shape.shape
    fo, fi = _fans(shape, layout)
    return math.sqrt(fo / fi)


def spectral_init(shape, /, *, seed=0, layout: str = "torch", like=None):
    r"""Gaussian init with ``sigma = min(1, sqrt(fan_out/fan_in)) / sqrt(fan_in)`` (spectral parametrisation).

    Then ``|W|_* ~ sqrt(fan_out/fan_in)`` for large layers (Yang, Simon, Bernstein, 2023).
    NumPy float64 by default; ``like`` gives the library/dtype/device.

    Examples
    --------
    >>> W = spectral_init((512, 128), seed=0)
    >>> bool(1.5 < np.linalg.norm(W, 2) < 3.5)
    True
    """
    fo, fi = _fans(shape, layout)
    sigma = min(1.0, math.sqrt(fo / fi)) / math.sqrt(fi)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    W = rng.standard_normal(tuple(shape)) * sigma
    if like is None:
        return W
    xp = compat.array_namespace(like)
    return cast(compat.from_numpy_like(W, like), like.dtype, xp)


def _spectral_norm(G, xp, n_iter, seed):
    rng = np.random.default_rng(seed)
    v = compat.from_numpy_like(rng.standard_normal(G.shape[-1]), G)
    v = cast(v, G.dtype, xp)
    for _ in range(n_iter):
        u = G @ v
        u = u / (xp.linalg.vector_norm(u) + 1e-30)
        v = xp.matrix_transpose(G) @ u
        s = xp.linalg.vector_norm(v)
        v = v / (s + 1e-30)
    return s


def spectral_normalize(G, /, *, n_iter: int = 20, seed=0, layout: str = "torch", exact: bool = False):
    r"""Scale an update to spectral norm ``sqrt(fan_out/fan_in)``: ``sqrt(fan_out/fan_in) G / |G|_*``.

    ``|G|_*`` by ``n_iter`` power iterations (``O(n_iter m n)``), or by SVD with
    ``exact=True``.  The "direct form" of the spectral condition (Yang, Simon, Bernstein, 2023).

    Examples
    --------
    >>> G = np.random.default_rng(0).standard_normal((64, 16))
    >>> round(float(np.linalg.norm(spectral_normalize(G, exact=True), 2)), 6)
    2.0
    """
    xp = compat.array_namespace(G)
    validate.check_float(G, "G", xp)
    if G.ndim != 2:
        raise ValueError(f"G must be a matrix, got shape {tuple(G.shape)}")
    n_iter = validate.check_int(n_iter, "n_iter", low=1)
    scale = spectral_scale(G.shape, layout=layout)
    if exact:
        s = xp.max(xp.linalg.svdvals(G))
    else:
        s = _spectral_norm(G, xp, n_iter, seed)
    return G * (scale / (s + 1e-30))


# ----------------------------------------------------------------------------------------------- NaP
class NaPLeaf(NamedTuple):
    rho: Any          # initial norm(s), or None for parameters that are not projected
    inner: Any


def project_to_norm(W, rho, /, *, axis=None, eps: float = 1e-12):
    """``rho W / |W|`` (Frobenius over ``axis``; ``axis=None``: the whole array, ``-1``: per row)."""
    xp = compat.array_namespace(W)
    n = xp.linalg.vector_norm(W, axis=axis, keepdims=axis is not None)
    return W * (rho / T.clamp_min(n, eps, xp))


class NaP(Rule):
    name = "nap"

    def __init__(self, *, inner, axis, min_ndim, nan_policy, factory, hyper):
        if not isinstance(inner, Rule):
            raise TypeError(f"inner must be an optnorm.optim rule, got {type(inner).__name__}")
        super().__init__(lr=inner.lr, nan_policy=nan_policy, factory=factory, hyper=hyper)
        self.inner = inner
        if axis is not None:
            validate.check_int(axis, "axis")
        self.axis = axis
        self.min_ndim = validate.check_int(min_ndim, "min_ndim", low=0)

    def _proj(self, p):
        return p.ndim >= self.min_ndim

    def init_leaf(self, p, *, name, xp):
        rho = None
        if self._proj(p):
            rho = xp.linalg.vector_norm(cast(p, compat.compute_dtype(p, xp), xp), axis=self.axis,
                                        keepdims=self.axis is not None)
        return NaPLeaf(rho, self.inner.init_leaf(p, name=name, xp=xp))

    def prepare(self, ps, gs, ss, **kw):
        return self.inner.prepare(ps, gs, [s.inner for s in ss], **kw)

    def update_leaf(self, p, g, s, ctx: Ctx):
        pn, si = self.inner.update_leaf(p, g, s.inner, ctx)
        if s.rho is not None:
            xp = ctx.xp
            pc = cast(pn, compat.compute_dtype(pn, xp), xp)
            pn = cast(project_to_norm(pc, s.rho, axis=self.axis), p.dtype, xp)
        return pn, NaPLeaf(s.rho, si)


def nap(inner: Rule, *, axis=None, min_ndim: int = 2, nan_policy="raise") -> Rule:
    r"""Normalize-and-Project: after every step of ``inner``, project each weight back to its initial norm.

    "Normalization and effective learning rates in reinforcement learning",
    C. Lyle et al., NeurIPS 2024 (arXiv:2407.01800): ``rho = |W_0|`` is stored at ``init``, and ``W <- rho W / |W|``
    after each update (``axis=None``: per layer; ``axis=-1``: per output unit).
    Parameters with fewer than ``min_ndim`` dimensions (biases, norm gains) are left
    free.  Pair with a normalisation layer before each nonlinearity so the weights
    are scale-invariant; any lr decay then goes into ``inner``'s schedule.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.optim import sgd
    >>> opt = nap(sgd(lr=0.1))
    >>> W = np.ones((2, 2)); st = opt.init(W)
    >>> W, st = opt.step(W, np.eye(2), st)
    >>> round(float(np.linalg.norm(W)), 6)
    2.0
    """
    hyper = dict(inner=inner, axis=axis, min_ndim=min_ndim, nan_policy=nan_policy)
    return NaP(factory=nap, hyper=hyper, **hyper)


# ----------------------------------------------------------------------------------------------- Norm Loss
def _unit_norms(W, xp, eps):
    if W.ndim <= 1:
        n = xp.linalg.vector_norm(W)
        return n, n
    R = xp.reshape(W, (W.shape[0], -1))
    n = xp.linalg.vector_norm(R, axis=1)
    return n, xp.reshape(n, (W.shape[0],) + (1,) * (W.ndim - 1))


def _check_nl(W, factor):
    xp = compat.array_namespace(W)
    validate.check_float(W, "W", xp)
    validate.check_nonnegative(factor, "factor")
    return xp


def norm_loss(W, /, *, factor: float = 1e-4):
    r"""Norm Loss: ``factor * sum_i (|w_i| - 1)^2`` over the units ``w_i`` of a weight (soft oblique-manifold constraint).

    "Norm Loss: An efficient yet effective regularization method for deep neural
    networks", T. Georgiou et al., ICPR 2020 (arXiv:2103.06583).  A unit
    is a row of a matrix or a flattened filter (``W[i].ravel()``) of an N-D weight;
    a 1-D ``W`` is one unit.  Registered op: differentiable through
    ``optnorm.torch.norm_loss`` and ``optnorm.jax.norm_loss``; its gradient is
    :func:`norm_loss_grad`.

    Examples
    --------
    >>> import numpy as np
    >>> float(norm_loss(np.array([[3.0, 4.0]]), factor=1.0))
    16.0
    """
    xp = _check_nl(W, factor)
    n, _ = _unit_norms(W, xp, 0.0)
    return factor * xp.sum((n - 1.0) ** 2)


def norm_loss_grad(W, /, *, factor: float = 1e-4, eps: float = 1e-12):
    r"""Gradient of :func:`norm_loss`: ``2 factor (1 - 1/|w_i|) w_i`` (norms floored at ``eps``).

    The decoupled form used by Ranger21 is ``p <- p - lr * norm_loss_grad(p)``.

    Examples
    --------
    >>> import numpy as np
    >>> np.round(norm_loss_grad(np.array([[3.0, 4.0]]), factor=1.0), 12).tolist()
    [[4.8, 6.4]]
    """
    xp = _check_nl(W, factor)
    _, nb = _unit_norms(W, xp, eps)
    return (2.0 * factor) * (1.0 - 1.0 / T.clamp_min(nb, eps, xp)) * W


def _norm_loss_fwd(W, *, factor=1e-4):
    return norm_loss(W, factor=factor), (W, factor)


def _norm_loss_bwd(res, dy):
    W, factor = res
    return (dy * norm_loss_grad(W, factor=factor),)


ops.register("optim.norm_loss", norm_loss, _norm_loss_fwd, _norm_loss_bwd)
