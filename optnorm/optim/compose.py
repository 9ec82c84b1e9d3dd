"""Composing rules: gradient transforms (clipping, noise), :class:`chain`, gradient accumulation, parameter EMA
and Lookahead.

A :class:`GradientTransform` acts on the whole gradient tree before a rule sees it (the global norm of
:func:`clip_by_global_norm` spans every parameter); ``chain(t1, t2, ..., rule)`` runs them in order and then
the rule, and is itself a rule (``init`` / ``step`` / ``step_``, fused kernels kept, wrappable with
``to_optax`` and the torch wrapper).  :func:`accumulate`, :func:`ema` and :func:`lookahead` wrap a rule
and keep its state inside theirs (``state.leaves[i].inner``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

from .._lib.typing import Seed as SeedT
from .._lib import compat
from .._lib.api import public, public_class
from .._lib.roles import Choice, Int, NonNegative, Positive, Scalar, Seed, UnitInterval
from ._common import scalar, seed_ints, stable_norm, tree_flatten, tree_unflatten
from .base import (NAN_POLICY, Ctx, InPlace, Rule, RuleArg, Transform, chain as chain_leaf, rule,
                   copy_state)


# ----------------------------------------------------------------------------------------------- gradient transforms
@public_class
class GradientTransform:
    """A stateless transform of the whole gradient tree, applied before a rule (:class:`chain`).

    ``fn(grads: list, ctx) -> list`` maps the flattened gradients of one step (``ctx.t`` the 1-based step,
    ``ctx.xp`` the namespace).  Calling it on a tree, ``transform(grads, step=0)``, applies it directly.
    Made by :func:`clip_by_global_norm`, :func:`clip_by_value`, :func:`add_noise`.
    """

    def __init__(self, name: str, hyper: dict, fn: Callable):
        self.name, self.hyper, self.fn = name, dict(hyper), fn

    def __call__(self, grads: Any, *, step: int = 0) -> Any:
        gs, tdef, names = tree_flatten(grads, "grads")
        xp = compat.array_namespace(*gs)
        return tree_unflatten(tdef, self.fn(gs, Ctx(xp, step + 1)))

    def __repr__(self):
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.hyper.items())})"

    def __reduce__(self):
        return _rebuild_transform, (self.name, self.hyper)


def _rebuild_transform(name, hyper):
    from .._lib.api import lookup

    return lookup(f"optim.{name}").obj(**hyper)


def global_norm(gs: list, xp) -> Any:
    """``sqrt(sum_leaves sum g^2)`` (overflow-safe per leaf; a 0-d array in the first leaf's compute dtype)."""
    cd = compat.compute_dtype(gs[0], xp)
    sq = None
    for g in gs:
        n = compat.cast(stable_norm(compat.cast(g, compat.compute_dtype(g, xp), xp), xp), cd, xp)
        sq = n * n if sq is None else sq + n * n
    return xp.sqrt(sq)


@public(max_norm=Positive(), convention=Choice(("optax", "torch")))
def clip_by_global_norm(max_norm: float, *, convention: str = "optax") -> GradientTransform:
    r"""Scale the whole gradient tree down to global norm ``max_norm`` when it is longer.

    .. math::
        n = \Bigl(\sum_{\text{leaves}}\sum g^2\Bigr)^{1/2},\qquad
        g \leftarrow \begin{cases} g & n < c\\ g\,c/n & n \ge c\end{cases}

    (optax.clip_by_global_norm); ``convention="torch"`` is ``torch.nn.utils.clip_grad_norm_``'s
    :math:`g\min(1, c/(n + 10^{-6}))`.  Pascanu, Mikolov, Bengio, "On the difficulty of
    training recurrent neural networks", ICML 2013.

    Parameters
    ----------
    max_norm : float > 0
        :math:`c`.
    convention : {"optax", "torch"}
        Whose formula.

    Returns
    -------
    GradientTransform

    Examples
    --------
    >>> import numpy as np
    >>> clip = clip_by_global_norm(1.0)
    >>> clip({"a": np.array([3.0]), "b": np.array([4.0])})["b"].tolist()
    [0.8]
    """

    def fn(gs, ctx):
        xp = ctx.xp
        n = global_norm(gs, xp)
        if convention == "torch":
            f = xp.minimum(xp.ones_like(n), max_norm / (n + 1e-6))
        else:
            big = n >= max_norm
            f = xp.where(big, max_norm / xp.where(big, n, xp.ones_like(n)), xp.ones_like(n))
        return [g * compat.cast(f, g.dtype, xp) for g in gs]

    return GradientTransform("clip_by_global_norm", {"max_norm": max_norm, "convention": convention}, fn)


@public(max_value=Positive(), min_value=Scalar(optional=True))
def clip_by_value(max_value: float, *, min_value: float | None = None) -> GradientTransform:
    r"""Clip every gradient entry to ``[-max_value, max_value]`` (or ``[min_value, max_value]``).

    .. math::
        g \leftarrow \min(\max(g, a), b),\qquad a = -b \text{ unless given}

    ``torch.nn.utils.clip_grad_value_`` / ``optax.clip`` (Mikolov, "Statistical Language Models Based on
    Neural Networks", 2012).

    Parameters
    ----------
    max_value : float > 0
        :math:`b`.
    min_value : float, optional
        :math:`a` (default :math:`-b`); must not exceed ``max_value``.

    Returns
    -------
    GradientTransform

    Examples
    --------
    >>> import numpy as np
    >>> clip_by_value(0.5)(np.array([-2.0, 0.1, 3.0])).tolist()
    [-0.5, 0.1, 0.5]
    """
    lo = -max_value if min_value is None else min_value
    if lo > max_value:
        raise ValueError(f"clip_by_value: min_value ({lo}) must not exceed max_value ({max_value})")

    def fn(gs, ctx):
        xp = ctx.xp
        return [xp.clip(g, lo, max_value) for g in gs]

    return GradientTransform("clip_by_value", {"max_value": max_value, "min_value": min_value}, fn)


@public(eta=NonNegative(), gamma=NonNegative(), seed=Seed())
def add_noise(eta: float = 0.01, gamma: float = 0.55, *, seed: SeedT = 0) -> GradientTransform:
    r"""Add annealed Gaussian noise to the gradients (optax.add_noise).

    .. math::
        g \leftarrow g + \sqrt{\eta / t^{\gamma}}\;\xi,\qquad \xi \sim \mathcal N(0, I)

    with :math:`t` the 1-based step; the noise is a deterministic function of ``(seed, t)``
    (NumPy's PCG64, ``jax.random`` for JAX arrays), so runs repeat.  Neelakantan et al.,
    "Adding Gradient Noise Improves Learning for Very Deep Networks", 2015.

    Parameters
    ----------
    eta : float >= 0
        Initial variance.
    gamma : float >= 0
        Annealing exponent.
    seed : int, Generator or None
        Noise seed.

    Returns
    -------
    GradientTransform

    Examples
    --------
    >>> import numpy as np
    >>> noisy = add_noise(0.01, seed=0)(np.zeros(3), step=0)
    >>> bool(np.all(np.abs(noisy) < 1.0))
    True
    """
    seeds = seed_ints(seed)

    def fn(gs, ctx):
        xp, t = ctx.xp, ctx.t
        z = compat.random_normal(gs, seed=seeds, step=t)
        if isinstance(t, int):
            sd = math.sqrt(eta / t ** gamma)
            return [g + sd * zi for g, zi in zip(gs, z)]
        tt = xp.astype(t, compat.compute_dtype(gs[0], xp))
        sd = xp.sqrt(eta / tt ** gamma)
        return [g + compat.cast(sd, g.dtype, xp) * zi for g, zi in zip(gs, z)]

    return GradientTransform("add_noise", {"eta": eta, "gamma": gamma, "seed": seed}, fn)


# ----------------------------------------------------------------------------------------------- chain
@public_class
class chain(Rule):  # noqa: N801 - a class used like a function, as itertools.chain
    r"""``chain(t1, ..., tk, rule)``: gradient transforms, then a rule; itself a rule.

    The parts run in order on the whole gradient tree (:class:`GradientTransform`: :func:`clip_by_global_norm`,
    :func:`clip_by_value`, :func:`add_noise`), then ``rule`` steps with the transformed gradients; its state,
    ``lr``, fused kernel, masks and NaN policy are the rule's (non-finite raw gradients are caught before the
    transforms).  The last part may also be a leaf transform chain from :mod:`optnorm.optim.transforms`
    (``chain(clip_by_global_norm(1.0), T.scale_by_adam(0.9, 0.999, 1e-8), T.scale_by_lr(), lr=1e-3)``),
    which becomes a rule whose leaf state holds the transforms' fields.  A
    :class:`~optnorm.optim.base.Transform` needs ``lr=``.

    .. math::
        g \leftarrow t_k(\cdots t_1(g)),\qquad (p, s) \leftarrow \mathrm{rule}(p, g, s)

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.optim import chain, sgd
    >>> opt = chain(clip_by_global_norm(1.0), sgd(lr=0.1))
    >>> p, st = opt.step(np.zeros(2), np.array([3.0, 4.0]), opt.init(np.zeros(2)))
    >>> np.round(p, 6).tolist()
    [-0.06, -0.08]
    """

    def __init__(self, *parts: Any, lr: Any = None):
        if not parts:
            raise ValueError("chain needs at least one part (gradient transforms, then a rule)")
        pre: list = []
        leaf_parts: list = []
        inner: Rule | None = None
        for i, part in enumerate(parts):
            if inner is not None:
                raise TypeError(f"chain: parts[{i}] follows the rule (parts[{i - 1}]); the rule comes last")
            if isinstance(part, GradientTransform):
                if leaf_parts:
                    raise TypeError(f"chain: parts[{i}] is a gradient transform after leaf transforms")
                pre.append(part)
            elif isinstance(part, Rule):
                if leaf_parts:
                    raise TypeError(f"chain: parts[{i}] is a rule after leaf transforms")
                inner = part
            elif isinstance(part, Transform):
                leaf_parts.append(part)
            else:
                raise TypeError(f"chain: parts[{i}] must be a GradientTransform, a Rule or a leaf Transform, got "
                                f"{type(part).__name__}")
        if leaf_parts:
            if lr is None:
                raise ValueError("chain: lr= is needed when the parts end with leaf transforms")
            inner = _leaf_rule(leaf_parts, lr)
        elif inner is None:
            inner = _identity_rule()
        elif lr is not None:
            raise ValueError("chain: lr= is only for leaf transforms (the rule has its own)")
        self.pre = tuple(pre)
        self.inner = inner
        super().__init__(lr=inner.lr, name="chain", nan_policy=inner.nan_policy, elementwise=inner.elementwise,
                         probe=inner.probe)
        self.needs_hvp = inner.needs_hvp
        self.masks = inner.masks
        self.kernel = inner.kernel       # tells the torch wrapper to pass NumPy views (apply_ is overridden)
        self.leaf_type = inner.leaf_type
        self.hyper = {"parts": parts}

    def __repr__(self):
        return f"chain({', '.join(map(repr, (*self.pre, self.inner)))})"

    def __reduce_ex__(self, protocol):
        return _rebuild_chain, ((*self.pre, self.inner),)

    def state_type(self, p):
        return self.inner.state_type(p)

    def init_leaf(self, p, *, name, xp):
        return self.inner.init_leaf(p, name=name, xp=xp)

    def update_leaf(self, p, g, s, ctx):
        return self.inner.update_leaf(p, g, s, ctx)

    def eval_leaf(self, p, s):
        return self.inner.eval_leaf(p, s)

    def _transform(self, gs, ctx):
        for t in self.pre:
            gs = t.fn(gs, ctx)
        return gs

    def updates(self, ps, gs, leaves, *, ctx, names, hvp=None, tree=None, masks=None):
        return self.inner.updates(ps, self._transform(gs, ctx), leaves, ctx=ctx, names=names, hvp=hvp, tree=tree,
                                  masks=masks)

    def apply_(self, ps, gs, leaves, *, t, names, gnames, xp, hvp=None, tree=None, check=None):
        check = self.nan_policy != "ignore" if check is None else check
        if check and self.check_finite(gs, gnames, xp) is False:
            return False
        gs2 = self._transform(list(gs), Ctx(xp, t, lrs={}))
        return self.inner.apply_(ps, gs2, leaves, t=t, names=names, gnames=gnames, xp=xp, hvp=hvp, tree=tree,
                                 check=False)


def _rebuild_chain(parts):
    return chain(*parts)


class _Fields:  # noqa: D101
    """Leaf-state NamedTuple classes for leaf-transform chains, one per field list."""
    cache: dict = {}


def _leaf_rule(parts, lr):
    from .._lib import compat as _c  # noqa: F401

    body = chain_leaf(*parts)

    class _R(Rule):
        def init_leaf(self, p, *, name, xp):
            fields = body.init(p, Ctx(xp, 0, name))
            key = tuple(fields)
            cls = _Fields.cache.get(key)
            if cls is None:
                cls = _Fields.cache[key] = NamedTuple("ChainLeaf", [(k, Any) for k in key])
            self.leaf_type = cls
            return cls(**fields)

        def state_type(self, p):
            return None

    return _R(lr=lr, transform=body, leaf=None, name="chain")


def _identity_rule():
    from .sgd import sgd

    return sgd(lr=0.0)


# ----------------------------------------------------------------------------------------------- wrappers of rules
def _inner_ctx(ctx, t_inner, owner):
    """``ctx`` for a wrapped rule that counts its own steps: its schedules get their own per-step cache."""
    lrs = ctx.lrs if ctx.lrs is not None else {}
    return ctx._replace(t=t_inner, lrs=lrs.setdefault(("inner", id(owner)), {}))


class AccumulateLeaf(NamedTuple):
    """Leaf state of :func:`accumulate`: the wrapped rule's leaf state and the gradient sum since its last step."""
    inner: Any
    acc: Any


def accumulate_step(inner: Rule, every) -> Transform:
    """Sum gradients; every ``every``-th step run ``inner`` on their mean and reset the sum."""

    def init(p, ctx):
        xp = ctx.xp
        return {"inner": inner.init_leaf(p, name=ctx.name, xp=xp),
                "acc": compat.zeros(tuple(p.shape), like=p, dtype=compat.compute_dtype(p, xp), xp=xp)}

    def update(leaf, s, ctx):
        xp, t = ctx.xp, ctx.t
        acc = s.acc + leaf.g
        if isinstance(t, int):
            if t % every:
                return leaf._replace(u=None), s._replace(acc=acc)
            p, si = inner.update_leaf(leaf.p, acc / every, s.inner, _inner_ctx(ctx, t // every, inner))
            return leaf._replace(p=p, u=None), s._replace(inner=si, acc=xp.zeros_like(acc))
        fire = (t % every) == 0
        p, si = inner.update_leaf(leaf.p, acc / every, s.inner, _inner_ctx(ctx, xp.maximum(t // every, 1), inner))
        return (leaf._replace(p=xp.where(fire, p, leaf.p), u=None),
                s._replace(inner=_where_tree(fire, si, s.inner, xp), acc=xp.where(fire, xp.zeros_like(acc), acc)))

    return Transform(init, update)


def _where_tree(c, a, b, xp):
    if b is None:
        return None
    if isinstance(b, tuple):
        return type(b)(*(_where_tree(c, x, y, xp) for x, y in zip(a, b)))
    return xp.where(c, a, b)


class _Wrapper(Rule):
    """A rule wrapping ``inner``: evaluation weights delegate to it unless the wrapper has its own."""

    def __init__(self, *, inner: Rule, **kw):
        super().__init__(**kw)
        self.inner = inner

    def eval_leaf(self, p, s):
        return self.inner.eval_leaf(p, s.inner)


@rule("Accumulate", inner=RuleArg(optional=False), every=Int(1), nan_policy=NAN_POLICY,
      example=lambda rng, dtype: ((_default_inner(),), {"every": 2}))
def accumulate(inner: Rule, *, every: int, nan_policy: str = "raise") -> Rule:
    r"""Gradient accumulation: ``inner`` steps every ``every`` calls with the mean of the gradients since its
    last step; the calls between change nothing but the sum (optax.MultiSteps).

    .. math::
        a \leftarrow a + g_t,\qquad
        t \equiv 0 \pmod k:\ (p, s) \leftarrow \mathrm{inner}(p, a/k, s),\ a \leftarrow 0

    ``inner`` counts its own steps (``t / k``), so its bias corrections and schedules advance once
    per applied step.  Under ``jax.jit`` both branches are computed and selected.

    Parameters
    ----------
    inner : Rule
        The rule to apply.
    every : int >= 1
        :math:`k`.
    nan_policy : {"raise", "skip", "ignore"}
        See :func:`adam`.

    Returns
    -------
    Rule
        Leaf state :class:`AccumulateLeaf` (``inner``, ``acc``).

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.optim import sgd
    >>> opt = accumulate(sgd(lr=1.0), every=2)
    >>> p = np.zeros(1); st = opt.init(p)
    >>> p, st = opt.step(p, np.array([1.0]), st); p.tolist()
    [0.0]
    >>> p, st = opt.step(p, np.array([3.0]), st); p.tolist()
    [-2.0]
    """
    # lr=None: the wrapped rule evaluates its schedule with its own step count, not the calls'
    return _Wrapper(inner=inner, lr=None, transform=chain_leaf(accumulate_step(inner, every)), leaf=AccumulateLeaf,
                    nan_policy=nan_policy, probe=None)


class EMALeaf(NamedTuple):
    """Leaf state of :func:`ema`: the wrapped rule's leaf state and the parameters' moving average."""
    inner: Any
    ema: Any


class _EMA(_Wrapper):
    def eval_leaf(self, p, s):
        return s.ema


def ema_step(inner: Rule, decay) -> Transform:
    def init(p, ctx):
        xp = ctx.xp
        e = compat.cast(p, compat.compute_dtype(p, xp), xp)
        return {"inner": inner.init_leaf(p, name=ctx.name, xp=xp), "ema": e + xp.zeros_like(e)}

    def update(leaf, s, ctx):
        p, si = inner.update_leaf(leaf.p, leaf.g, s.inner, ctx)
        pc = compat.cast(p, s.ema.dtype, ctx.xp)
        return leaf._replace(p=p, u=None), s._replace(inner=si, ema=compat.lerp(s.ema, pc, 1.0 - decay))

    return Transform(init, update)


@rule("EMA", inner=RuleArg(optional=False), decay=UnitInterval(), nan_policy=NAN_POLICY,
      example=lambda rng, dtype: ((_default_inner(),), {}))
def ema(inner: Rule, *, decay: float = 0.999, nan_policy: str = "raise") -> Rule:
    r"""Parameter EMA: ``inner`` steps as usual and a moving average of the parameters rides along in the state.

    .. math::
        \bar p_0 = p_0,\qquad \bar p \leftarrow \beta\bar p + (1-\beta)\,p_{t}

    Evaluate with ``rule.eval_params(params, state)`` (the averages; torch wrapper: ``opt.eval()``
    / ``opt.train()``).  Polyak & Juditsky, "Acceleration of Stochastic Approximation by
    Averaging", 1992; torch.optim.swa_utils' EMA.

    Parameters
    ----------
    inner : Rule
        The rule that steps the parameters.
    decay : float in [0, 1)
        :math:`\beta`.
    nan_policy : {"raise", "skip", "ignore"}
        See :func:`adam`.

    Returns
    -------
    Rule
        Leaf state :class:`EMALeaf` (``inner``, ``ema``).

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.optim import sgd
    >>> opt = ema(sgd(lr=1.0), decay=0.5)
    >>> p = np.zeros(1); st = opt.init(p)
    >>> p, st = opt.step(p, np.array([-2.0]), st)
    >>> p.tolist(), opt.eval_params(p, st).tolist()
    ([2.0], [1.0])
    """
    return _EMA(inner=inner, lr=inner.lr, transform=chain_leaf(ema_step(inner, decay)), leaf=EMALeaf,
                nan_policy=nan_policy, probe=inner.probe)


class LookaheadLeaf(NamedTuple):
    """Leaf state of :func:`lookahead`: the wrapped (fast) rule's leaf state and the slow weights."""
    inner: Any
    slow: Any


class _Lookahead(_Wrapper):
    def eval_leaf(self, p, s):
        return s.slow


def lookahead_step(inner: Rule, sync_period, slow_step_size) -> Transform:
    def init(p, ctx):
        xp = ctx.xp
        e = compat.cast(p, compat.compute_dtype(p, xp), xp)
        return {"inner": inner.init_leaf(p, name=ctx.name, xp=xp), "slow": e + xp.zeros_like(e)}

    def update(leaf, s, ctx):
        xp, t = ctx.xp, ctx.t
        fast, si = inner.update_leaf(leaf.p, leaf.g, s.inner, ctx)
        fc = compat.cast(fast, s.slow.dtype, xp)
        slow_new = s.slow + slow_step_size * (fc - s.slow)
        if isinstance(t, int):
            if t % sync_period:
                return leaf._replace(p=fast, u=None), s._replace(inner=si)
            return leaf._replace(p=slow_new, u=None), s._replace(inner=si, slow=slow_new)
        sync = (t % sync_period) == 0
        slow = xp.where(sync, slow_new, s.slow)
        return leaf._replace(p=xp.where(sync, compat.cast(slow_new, fast.dtype, xp), fast), u=None), \
            s._replace(inner=si, slow=slow)

    return Transform(init, update)


@rule("Lookahead", inner=RuleArg(optional=False), sync_period=Int(1), slow_step_size=Scalar(0, 1),
      nan_policy=NAN_POLICY, example=lambda rng, dtype: ((_default_inner(),), {}))
def lookahead(inner: Rule, sync_period: int = 5, slow_step_size: float = 0.5, *, nan_policy: str = "raise") -> Rule:
    r"""Lookahead: ``inner`` takes ``k`` fast steps, then the slow weights move a fraction ``alpha`` towards
    the fast ones and the fast weights restart from them (optax.lookahead).

    .. math::
        \phi \leftarrow \phi + \alpha(\theta_{t} - \phi),\quad \theta_t \leftarrow \phi
        \qquad\text{every } k \text{ steps}

    The parameters are the fast weights; ``rule.eval_params(params, state)`` gives the slow ones
    (optax's ``reset_state`` is not offered: the fast rule's state carries over).  Zhang,
    Lucas, Hinton, Ba, "Lookahead Optimizer: k steps forward, 1 step back", NeurIPS 2019.

    Parameters
    ----------
    inner : Rule
        The fast rule.
    sync_period : int >= 1
        :math:`k`.
    slow_step_size : float in [0, 1]
        :math:`\alpha`.
    nan_policy : {"raise", "skip", "ignore"}
        See :func:`adam`.

    Returns
    -------
    Rule
        Leaf state :class:`LookaheadLeaf` (``inner``, ``slow``).

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.optim import sgd
    >>> opt = lookahead(sgd(lr=1.0), 2, 0.5)
    >>> p = np.zeros(1); st = opt.init(p)
    >>> p, st = opt.step(p, np.array([-1.0]), st); p.tolist()
    [1.0]
    >>> p, st = opt.step(p, np.array([-1.0]), st); p.tolist()     # slow: 0 + 0.5 (2 - 0)
    [1.0]
    """
    return _Lookahead(inner=inner, lr=inner.lr, transform=chain_leaf(lookahead_step(inner, sync_period,
                                                                                     slow_step_size)),
                      leaf=LookaheadLeaf, nan_policy=nan_policy, probe=inner.probe)


def _default_inner():
    from .sgd import sgd

    return sgd(lr=0.1)
