"""Scaling rules around the optimiser: spectral_scale / spectral_init / spectral_normalize, nap, norm_loss.

Weight Conditioning lives in :mod:`optnorm.optim.reparam`. Weight Compander (Cakaj et al., 2023)
is not implemented: its reparameterisation function could not be verified from the paper.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from .._lib.typing import Array, Seed as SeedT
from .._lib import compat
from .._lib.api import public, vjp
from .._lib.roles import Axis, Bool, Choice, Float, Int, NonNegative, Option, Positive, Scalar, Seed
from . import transforms as T
from ._common import stable_norm
from .base import NAN_POLICY, Rule, RuleArg, Transform, chain, rule

LAYOUTS = ("torch", "flax")


# ----------------------------------------------------------------------------------------------- spectral condition
def _check_shape(value, name):
    if compat.is_array(value):
        return value
    if not isinstance(value, (tuple, list)) or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                                                         and s >= 1 for s in value):
        raise TypeError(f"{name} must be a shape (a tuple of positive ints) or an array, got {value!r}")
    if len(value) < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (a weight matrix), got {tuple(value)}")
    return tuple(int(s) for s in value)


_SHAPE = Option(check=_check_shape, example=(6, 4))


def _fans(shape, layout):
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"shape must have at least 2 dimensions (a weight matrix), got {shape}")
    rest = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    if layout == "torch":          # (out, in, *kernel)
        return shape[0], shape[1] * rest
    return shape[-1], int(np.prod(shape[:-1]))   # flax: (*kernel, in, out)


@public(shape=_SHAPE, layout=Choice(LAYOUTS))
def spectral_scale(shape: Any, /, *, layout: str = "torch") -> float:
    r"""``sqrt(fan_out / fan_in)``: the spectral norm a layer's weights and updates should have.

    "A Spectral Condition for Feature Learning", G. Yang, J. B. Simon, J. Bernstein,
    2023: feature learning in every layer needs ``|W|_* = Theta(sqrt(fan_out/fan_in))``
    and ``|Delta W|_* = Theta(sqrt(fan_out/fan_in))``.  ``shape`` is a shape or an
    array; ``layout="torch"`` is ``(out, in, *kernel)``, ``"flax"`` ``(*kernel, in, out)``.

    .. math::
        \|W\|_* \approx \|\Delta W\|_* \approx \sqrt{\text{fan\_out}/\text{fan\_in}}

    Parameters
    ----------
    shape : tuple of int or array
        A weight shape (or the weight).
    layout : {"torch", "flax"}
        ``(out, in, *kernel)`` or ``(*kernel, in, out)``.

    Returns
    -------
    float
        :math:`\sqrt{\text{fan\_out}/\text{fan\_in}}`.

    Examples
    --------
    >>> spectral_scale((256, 64))
    2.0
    """
    if compat.is_array(shape):
        shape = shape.shape
    fo, fi = _fans(shape, layout)
    return math.sqrt(fo / fi)


@public(shape=_SHAPE, seed=Seed(), layout=Choice(LAYOUTS), like=Float(optional=True))
def spectral_init(shape: Any, /, *, seed: SeedT = 0, layout: str = "torch", like: Array | None = None) -> Array:
    r"""Gaussian init with ``sigma = min(1, sqrt(fan_out/fan_in)) / sqrt(fan_in)`` (spectral parametrisation).

    Then ``|W|_* ~ sqrt(fan_out/fan_in)`` for large layers (Yang, Simon, Bernstein, 2023).
    NumPy float64 by default; ``like`` gives the library/dtype/device.

    .. math::
        W_{ij} \sim \mathcal N(0, \sigma^2),\qquad
        \sigma = \frac{\min(1, \sqrt{\text{fan\_out}/\text{fan\_in}})}{\sqrt{\text{fan\_in}}}

    Parameters
    ----------
    shape : tuple of int
        Weight shape.
    seed : None, int or Generator
        Random seed.
    layout : {"torch", "flax"}
        ``(out, in, *kernel)`` or ``(*kernel, in, out)``.
    like : array, optional
        Array whose library, device and dtype the result takes.

    Returns
    -------
    array of ``shape``
        The initial weight.

    Examples
    --------
    >>> W = spectral_init((512, 128), seed=0)
    >>> bool(1.5 < np.linalg.norm(W, 2) < 3.5)
    True
    """
    if compat.is_array(shape):
        shape = shape.shape
    fo, fi = _fans(shape, layout)
    sigma = min(1.0, math.sqrt(fo / fi)) / math.sqrt(fi)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    W = rng.standard_normal(tuple(shape)) * sigma
    if like is None:
        return W
    return compat.cast(compat.from_numpy_like(W, like), like.dtype)


def _spectral_norm(G, xp, n_iter, seed):
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    v = compat.cast(compat.from_numpy_like(rng.standard_normal(G.shape[-1]), G), G.dtype, xp)
    for _ in range(n_iter):
        u = G @ v
        u = u / (xp.linalg.vector_norm(u) + 1e-30)
        v = xp.matrix_transpose(G) @ u
        s = xp.linalg.vector_norm(v)
        v = v / (s + 1e-30)
    return s


@public(G=Float("m n"), n_iter=Int(1), seed=Seed(), layout=Choice(LAYOUTS), exact=Bool())
def spectral_normalize(G: Array, /, *, n_iter: int = 20, seed: SeedT = 0, layout: str = "torch",
                       exact: bool = False) -> Array:
    r"""Scale an update to spectral norm ``sqrt(fan_out/fan_in)``: ``sqrt(fan_out/fan_in) G / |G|_*``.

    ``|G|_*`` by ``n_iter`` power iterations (``O(n_iter m n)``), or by SVD with
    ``exact=True``.  The "direct form" of the spectral condition (Yang, Simon, Bernstein, 2023).
    ``G`` is first divided by its largest magnitude (the map is scale-invariant), so
    entries near the dtype's range neither overflow nor underflow; a zero ``G`` stays zero.

    .. math::
        G \leftarrow \sqrt{\text{fan\_out}/\text{fan\_in}}\;G / \|G\|_*

    Parameters
    ----------
    G : array (m, n)
        The update.
    n_iter : int >= 1
        Power iterations.
    seed : None, int or Generator
        Seed of the power iteration's start.
    layout : {"torch", "flax"}
        ``(out, in, *kernel)`` or ``(*kernel, in, out)``.
    exact : bool
        Use the SVD instead of power iterations.

    Returns
    -------
    array like ``G``
        The rescaled update.

    Examples
    --------
    >>> G = np.random.default_rng(0).standard_normal((64, 16))
    >>> round(float(np.linalg.norm(spectral_normalize(G, exact=True), 2)), 6)
    2.0
    """
    xp = compat.array_namespace(G)
    scale = spectral_scale(G.shape, layout=layout)
    big = xp.max(xp.abs(G))
    Gs = G / xp.where(big > 0, big, xp.ones_like(big))
    s = xp.max(xp.linalg.svdvals(Gs)) if exact else _spectral_norm(Gs, xp, n_iter, seed)
    return Gs * (scale / (s + 1e-30))


# ----------------------------------------------------------------------------------------------- NaP
class NaPLeaf(NamedTuple):
    """Leaf state of :func:`nap`: the initial norm(s) ``rho`` (None for parameters left free) and the inner
    rule's state."""
    rho: Any
    inner: Any


def _project(W, rho, axis, eps, xp):
    n = stable_norm(W, xp, axis=axis, keepdims=axis is not None)
    return W * (rho / T.clamp_min(n, eps, xp))


def _project_example(rng, dtype):
    return (rng.standard_normal((3, 4)).astype(dtype), np.abs(rng.standard_normal((3, 1))).astype(dtype)), {"axis": -1}


@public(W=Float(), rho=Float(finite=True), axis=Axis("W", none=True), eps=Positive(), example=_project_example)
def project_to_norm(W: Array, rho: Array | float, /, *, axis: int | None = None, eps: float = 1e-12) -> Array:
    r"""``rho W / |W|`` (Frobenius over ``axis``; ``axis=None``: the whole array, ``-1``: per row).

    ``rho`` is a non-negative number or an array broadcasting against the norms (shape
    ``W.shape`` with ``axis`` reduced to 1); norms below ``eps`` are floored at ``eps``.

    .. math::
        W \leftarrow \rho\, W / \max(\|W\|, \epsilon)

    Parameters
    ----------
    W : array
        The weight.
    rho : float or array
        Target norm(s), broadcasting against the norms.
    axis : int, tuple or None
        Axes of the norm (None: all).
    eps : float > 0
        Floor of the norms.

    Returns
    -------
    array like ``W``
        The projected weight.

    Examples
    --------
    >>> import numpy as np
    >>> project_to_norm(np.array([3.0, 4.0]), 10.0).tolist()
    [6.0, 8.0]
    """
    xp = compat.array_namespace(W, rho)
    if compat.is_concrete(rho) and compat.size(rho) and bool(xp.any(rho < 0)):
        raise ValueError("project_to_norm: rho must be non-negative")
    return _project(W, compat.cast(rho, W.dtype, xp), axis, eps, xp)


def project_to_initial_norm(axis, min_ndim: int) -> Transform:
    """NaP's projection: store ``rho = |p_0|`` at init (parameters with ``ndim >= min_ndim``; state field
    ``rho``) and set ``p <- rho p / |p|`` after the update."""

    def init(p, ctx):
        xp = ctx.xp
        if p.ndim < min_ndim:
            return {"rho": None}
        pc = compat.cast(p, compat.compute_dtype(p, xp), xp)
        return {"rho": stable_norm(pc, xp, axis=axis, keepdims=axis is not None)}

    def update(leaf, s, ctx):
        if s.rho is None:
            return leaf, s
        return leaf._replace(p=_project(leaf.p, s.rho, axis, 1e-12, ctx.xp)), s

    return Transform(init, update)


def run_rule(inner: Rule) -> Transform:
    """Apply ``inner``'s whole step to the parameter (state field ``inner``), for rules that act after it."""

    def init(p, ctx):
        return {"inner": inner.init_leaf(p, name=ctx.name, xp=ctx.xp)}

    def update(leaf, s, ctx):
        p, si = inner.update_leaf(leaf.p, leaf.g, s.inner, ctx)
        return leaf._replace(p=p, u=None), s._replace(inner=si)

    return Transform(init, update)


@rule("NaP", inner=RuleArg(optional=False), axis=Scalar(integer=True, optional=True), min_ndim=Int(0),
      nan_policy=NAN_POLICY, example=lambda rng, dtype: ((_default_inner(),), {}))
def nap(inner: Rule, *, axis: int | None = None, min_ndim: int = 2, nan_policy: str = "raise") -> Rule:
    r"""Normalize-and-Project: after every step of ``inner``, project each weight back to its initial norm.

    "Normalization and effective learning rates in reinforcement learning",
    C. Lyle et al., NeurIPS 2024 (arXiv:2407.01800): ``rho = |W_0|`` is stored at ``init``, and ``W <- rho W / |W|``
    after each update (``axis=None``: per layer; ``axis=-1``: per output unit).
    Parameters with fewer than ``min_ndim`` dimensions (biases, norm gains) are left
    free.  Pair with a normalisation layer before each nonlinearity so the weights
    are scale-invariant; any lr decay then goes into ``inner``'s schedule.

    .. math::
        W \leftarrow \mathrm{inner}(W),\qquad W \leftarrow \|W_0\|\, W / \|W\|

    Parameters
    ----------
    inner : Rule
        The rule that steps the weights.
    axis : int or None
        None: one norm per weight; ``-1``: per output unit.
    min_ndim : int >= 0
        Parameters with fewer dimensions are not projected.
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise before anything changes, skip the step, or are not checked.

    Returns
    -------
    Rule
        ``init`` / ``step`` / ``step_``; leaf state ``NaPLeaf``.

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
    return Rule(lr=inner.lr, transform=chain(run_rule(inner), project_to_initial_norm(axis, min_ndim)),
                leaf=NaPLeaf, probe=inner.probe, nan_policy=nan_policy)


def _default_inner():
    from .sgd import sgd

    return sgd(lr=0.1)


# ----------------------------------------------------------------------------------------------- Norm Loss
def _unit_norms(W, xp):
    """Norm of every unit (row of a matrix, ``W[i].ravel()`` of an N-D weight, the whole of a 0/1-D one), and
    the same broadcastable against ``W``; computed without overflow."""
    if W.ndim <= 1:
        n = stable_norm(W, xp)
        return n, n
    R = xp.reshape(W, (W.shape[0], -1))
    n = stable_norm(R, xp, axis=1)
    return n, xp.reshape(n, (W.shape[0],) + (1,) * (W.ndim - 1))


class NormLossResiduals(NamedTuple):
    W: Any
    factor: float


@public(W=Float(), factor=NonNegative())
def norm_loss(W: Array, /, *, factor: float = 1e-4) -> Array:
    r"""Norm Loss: ``factor * sum_i (|w_i| - 1)^2`` over the units ``w_i`` of a weight (a soft oblique constraint).

    "Norm Loss: An efficient yet effective regularization method for deep neural
    networks", T. Georgiou et al., ICPR 2020 (arXiv:2103.06583).  A unit
    is a row of a matrix or a flattened filter (``W[i].ravel()``) of an N-D weight;
    a 1-D ``W`` is one unit.  Differentiable through ``optnorm.torch.norm_loss`` and
    ``optnorm.jax.norm_loss``; its gradient is :func:`norm_loss_grad`.  Norms are
    formed without overflow; a loss beyond the dtype's range raises ``ValueError``.

    .. math::
        L(W) = c\sum_i (\|w_i\| - 1)^2

    Parameters
    ----------
    W : array
        A weight (rows or flattened filters are its units).
    factor : float >= 0
        :math:`c`.

    Returns
    -------
    0-d array
        The loss.

    Examples
    --------
    >>> import numpy as np
    >>> float(norm_loss(np.array([[3.0, 4.0]]), factor=1.0))
    16.0
    """
    xp = compat.array_namespace(W)
    n, _ = _unit_norms(W, xp)
    r = stable_norm(n - 1.0, xp)                     # sqrt(sum_i (|w_i| - 1)^2), formed without overflow
    if compat.is_concrete(r) and factor > 0 and float(r) > math.sqrt(float(xp.finfo(r.dtype).max)) / math.sqrt(factor):
        raise ValueError(f"norm_loss: the loss of W overflows {W.dtype} (unit norms up to {float(xp.max(n)):.3g})")
    return factor * (r * r)


@public(W=Float(), factor=NonNegative(), eps=Positive())
def norm_loss_grad(W: Array, /, *, factor: float = 1e-4, eps: float = 1e-12) -> Array:
    r"""Gradient of :func:`norm_loss`: ``2 factor (1 - 1/|w_i|) w_i`` (norms floored at ``eps``).

    The decoupled form used by Ranger21 is ``p <- p - lr * norm_loss_grad(p)``.

    .. math::
        \frac{\partial L}{\partial w_i} = 2c\,\bigl(1 - 1/\|w_i\|\bigr)\,w_i

    Parameters
    ----------
    W : array
        A weight.
    factor : float >= 0
        :math:`c`.
    eps : float > 0
        Floor of the unit norms.

    Returns
    -------
    array like ``W``
        :math:`\partial L/\partial W`.

    Examples
    --------
    >>> import numpy as np
    >>> np.round(norm_loss_grad(np.array([[3.0, 4.0]]), factor=1.0), 12).tolist()
    [[4.8, 6.4]]
    """
    xp = compat.array_namespace(W)
    _, nb = _unit_norms(W, xp)
    return (2.0 * factor) * (1.0 - 1.0 / T.clamp_min(nb, eps, xp)) * W


def _norm_loss_fwd(W, *, factor=1e-4):
    return norm_loss(W, factor=factor), NormLossResiduals(W, factor)


def _norm_loss_bwd(res, dy):
    return (dy * norm_loss_grad(res.W, factor=res.factor),)


vjp(norm_loss, _norm_loss_fwd, _norm_loss_bwd)
