"""Orthogonalised-momentum rules: muon (torch.optim.Muon), normuon (NorMuon), auon / hybrid_auon (AuON)."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._lib.typing import Scalar as ScalarT, Schedule
from .._lib.roles import Bool, Choice, Int, NonNegative, Positive, Scalar, Scalars, UnitInterval
from . import transforms as T
from ._common import zeros_state
from .base import LR, NAN_POLICY, MatrixRule, Rule, RuleArg, Transform, chain, no_state, rule

NS_DTYPES = ("auto", None, "float32", "float64", "bfloat16")
ADJUST_LR = (None, "original", "match_rms_adamw", "spectral", "none")
_NS = dict(ns_coefficients=Scalars(Scalar(), 3), ns_steps=Int(0, 99))


class MuonLeaf(NamedTuple):
    """Leaf state of :func:`muon`, :func:`auon` and :func:`hybrid_auon`: the momentum buffer."""
    momentum_buffer: Any


class NorMuonLeaf(NamedTuple):
    """Leaf state of :func:`normuon`: the momentum buffer and the per-row second moment ``(m, 1)``."""
    momentum_buffer: Any
    second_momentum_buffer: Any


def _decay(weight_decay):
    return [T.decay_weights(weight_decay)] if weight_decay else []


@rule("Muon", lr=LR, weight_decay=NonNegative(), momentum=UnitInterval(), nesterov=Bool(), eps=Positive(),
      adjust_lr_fn=Choice(ADJUST_LR), ns_dtype=Choice(NS_DTYPES), fallback=RuleArg(), nan_policy=NAN_POLICY, **_NS)
def muon(*, lr: ScalarT | Schedule = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95, nesterov: bool = True,
         ns_coefficients: tuple[float, float, float] = T.MUON_COEFFICIENTS, eps: float = 1e-7, ns_steps: int = 5,
         adjust_lr_fn: str | None = None, ns_dtype: str | None = "auto", fallback: Rule | None = None,
         nan_policy: str = "raise") -> Rule:
    r"""Muon with torch.optim.Muon's defaults and conventions.

    .. math::
        B \leftarrow \mathrm{lerp}(B, g, 1-\mu),\; U = \mathrm{lerp}(g, B, \mu)\ (\text{nesterov}),\;
        O = \mathrm{NS}_5(U),\; p \leftarrow p(1 - lr\,\lambda) - lr\,a(m, n)\,O

    with :func:`newton_schulz_orthogonalize` and the lr adjustment ``a``:
    ``adjust_lr_fn=None``/``"original"`` gives ``sqrt(max(1, m/n))`` (Keller Jordan),
    ``"match_rms_adamw"`` ``0.2 sqrt(max(m, n))`` (Moonshot), ``"spectral"``
    ``sqrt(m/n)``, ``"none"`` 1.  "Muon: An optimizer for hidden layers in neural
    networks", K. Jordan et al., 2024; "Muon is Scalable for LLM Training", J. Liu et al., 2025.
    The chain: ``ema_momentum``, ``orthogonalize``, ``decay_weights``, ``scale_by_shape``, ``scale_by_lr``.


    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size; a schedule is called with the number of steps taken (0 first).
    weight_decay : float >= 0
        Decoupled decay ``p (1 - lr wd)``.
    momentum : float in [0, 1)
        EMA factor :math:`\mu` of the momentum buffer.
    nesterov : bool
        Orthogonalise ``lerp(g, B, mu)`` instead of ``B``.
    ns_coefficients : (float, float, float)
        Quintic coefficients ``(a, b, c)``.
    eps : float > 0
        Floor of the Frobenius norm before the iteration.
    ns_steps : int
        Newton-Schulz iterations.
    adjust_lr_fn : None, "original", "match_rms_adamw", "spectral" or "none"
        The shape factor :math:`a(m, n)`.
    ns_dtype : "auto", None, "float32", "float64" or "bfloat16"
        dtype of the Newton-Schulz matmuls.
    fallback : Rule, optional
        Rule for the parameters that are not 2-D (biases, gains); without one they raise, naming the parameter.
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise before anything changes, skip the step, or are not checked.

    Returns
    -------
    Rule
        ``init`` / ``step`` / ``step_``; leaf state ``MuonLeaf``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.optim import adamw
    >>> opt = muon(lr=0.02, fallback=adamw(lr=3e-4))
    >>> st = opt.init({"w": np.ones((4, 3)), "b": np.zeros(4)})
    """
    transform = chain(T.ema_momentum(momentum, nesterov=nesterov),
                      T.orthogonalize(ns_coefficients, ns_steps, eps, ns_dtype), *_decay(weight_decay),
                      T.scale_by_shape(adjust_lr_fn or "original"), T.scale_by_lr())
    return MatrixRule(lr=lr, transform=transform, leaf=MuonLeaf, fallback=fallback, nan_policy=nan_policy)


def normalize_by_row_moment(beta2: float, scale_mode: str) -> Transform:
    """NorMuon: divide each row of the orthogonalised update by the root of its EMA mean square
    (state field ``second_momentum_buffer``, ``(m, 1)``), then rescale (``keep_norm``: to the update's
    Frobenius norm times Keller's aspect factor; ``rms0.2``: to RMS 0.2)."""

    def init(p, ctx):
        return {"second_momentum_buffer": zeros_state(p, ctx.xp, (p.shape[0], 1))}

    def update(leaf, s, ctx):
        xp, o = ctx.xp, leaf.u
        v = T.ema(s.second_momentum_buffer, xp.mean(o * o, axis=-1, keepdims=True), beta2)
        on = o / (xp.sqrt(v) + 1e-10)
        m, n = leaf.p.shape
        if scale_mode == "keep_norm":     # reference code: restore |O|_F, then Keller's aspect factor
            on = on * (T.fro_norm(o, xp) / (T.fro_norm(on, xp) + 1e-10)) * math.sqrt(max(1.0, m / n))
        else:                             # paper: update RMS 0.2 (AdamW-matched)
            on = on * (0.2 * math.sqrt(m * n) / (T.fro_norm(on, xp) + 1e-10))
        return leaf._replace(u=on), s._replace(second_momentum_buffer=v)

    return Transform(init, update)


@rule("NorMuon", lr=LR, weight_decay=NonNegative(), momentum=UnitInterval(), beta2=UnitInterval(), nesterov=Bool(),
      eps=Positive(), ns_dtype=Choice(NS_DTYPES), scale_mode=Choice(("keep_norm", "rms0.2")), fallback=RuleArg(),
      nan_policy=NAN_POLICY, **_NS)
def normuon(*, lr: ScalarT | Schedule = 0.02, weight_decay: float = 0.0, momentum: float = 0.95, beta2: float = 0.95,
            nesterov: bool = True, ns_coefficients: tuple[float, float, float] = T.MUON_COEFFICIENTS, eps: float = 1e-7,
            ns_steps: int = 5, ns_dtype: str | None = "auto", scale_mode: str = "keep_norm",
            fallback: Rule | None = None, nan_policy: str = "raise") -> Rule:
    r"""NorMuon: Muon with a per-neuron (row) second moment normalising the orthogonalised update.

    "NorMuon" (arXiv:2510.05491, 2025; reference code zichongli5/NorMuon):

    .. math::
        O = \mathrm{NS}_5(U),\; v \leftarrow \beta_2 v + (1-\beta_2)\,\mathrm{mean}_j O_{ij}^2,\;
        \hat O = O / (\sqrt{v} + 10^{-10})

    then ``scale_mode="keep_norm"`` (reference code) rescales ``O_hat`` to ``|O|_F``
    and by ``sqrt(max(1, m/n))``; ``"rms0.2"`` (paper) to RMS 0.2.  Decoupled
    decay ``p (1 - lr wd)``; ``p -= lr O_hat``.  No bias correction of ``v``.

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size; a schedule is called with the number of steps taken (0 first).
    weight_decay : float >= 0
        Decoupled decay ``p (1 - lr wd)``.
    momentum : float in [0, 1)
        EMA factor :math:`\mu` of the momentum buffer.
    beta2 : float in [0, 1)
        EMA factor of the per-row second moment.
    nesterov : bool
        Orthogonalise ``lerp(g, B, mu)`` instead of ``B``.
    ns_coefficients : (float, float, float)
        Quintic coefficients.
    eps : float > 0
        Norm floor of the iteration.
    ns_steps : int
        Newton-Schulz iterations.
    ns_dtype : "auto", None, "float32", "float64" or "bfloat16"
        dtype of the Newton-Schulz matmuls (see :func:`muon`).
    scale_mode : {"keep_norm", "rms0.2"}
        Rescaling of the normalised update.
    fallback : Rule, optional
        Rule for the parameters that are not 2-D (biases, gains); without one they raise, naming the parameter.
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise before anything changes, skip the step, or are not checked.

    Returns
    -------
    Rule
        ``init`` / ``step`` / ``step_``; leaf state ``NorMuonLeaf``.

    Examples
    --------
    >>> import numpy as np
    >>> st = normuon().init(np.ones((4, 3)))
    """
    transform = chain(T.ema_momentum(momentum, nesterov=nesterov),
                      T.orthogonalize(ns_coefficients, ns_steps, eps, ns_dtype),
                      normalize_by_row_moment(beta2, scale_mode), *_decay(weight_decay), T.scale_by_lr())
    return MatrixRule(lr=lr, transform=transform, leaf=NorMuonLeaf, fallback=fallback, nan_policy=nan_policy)


def cosh_brake(gamma: float, normalize_output: bool) -> Transform:
    """AuON's normalisation: ``U / (r + 1e-8)`` with ``r = sqrt(mean(cosh^2(gamma U/|U|_F)))`` (or the unit
    Frobenius form times ``sqrt(max(1, m/n))`` with ``normalize_output``)."""

    def update(leaf, s, ctx):
        xp, u = ctx.xp, leaf.u
        un = u / (T.fro_norm(u, xp) + 1e-7)
        c = xp.cosh(gamma * un)
        r = xp.sqrt(xp.mean(c * c))                       # the "cosh-RMS brake"; ~1 + gamma^2/(2N)
        if normalize_output:
            m, n = leaf.p.shape
            return leaf._replace(u=un / (r + 1e-8) * math.sqrt(max(1.0, m / n))), s
        return leaf._replace(u=u / (r + 1e-8)), s

    return Transform(no_state, update)


def _auon(lr, momentum, weight_decay, gamma, nesterov, normalize_output, ns, fallback, nan_policy) -> Rule:
    parts = [*_decay(weight_decay), T.ema_momentum(momentum, nesterov=nesterov)]
    if ns is not None:
        parts.append(T.orthogonalize(*ns))
    parts += [cosh_brake(gamma, normalize_output), T.scale_by_lr()]
    return MatrixRule(lr=lr, transform=chain(*parts), leaf=MuonLeaf, fallback=fallback, nan_policy=nan_policy)


_AUON = dict(lr=LR, momentum=UnitInterval(), weight_decay=NonNegative(), gamma=NonNegative(), nesterov=Bool(),
             normalize_output=Bool(), fallback=RuleArg(), nan_policy=NAN_POLICY)


@rule("AuON", **_AUON)
def auon(*, lr: ScalarT | Schedule = 0.24, momentum: float = 0.95, weight_decay: float = 0.0, gamma: float = 1.5,
         nesterov: bool = True, normalize_output: bool = False, fallback: Rule | None = None,
         nan_policy: str = "raise") -> Rule:
    r"""AuON: linear-time normalised momentum (no orthogonalisation).

    "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates" (arXiv:2509.24320,
    2025; reference code ryyzn9/AuON): decoupled decay first, Nesterov EMA momentum
    ``U``, then

    .. math::
        r = \sqrt{\mathrm{mean}(\cosh^2(\gamma\,U / (\|U\|_F + 10^{-7})))},\qquad p \leftarrow p - lr\,U/(r + 10^{-8})

    Note: the entries of ``U/|U|_F`` are about ``1/sqrt(N)``, so ``r ~ 1 +
    gamma^2/(2N)`` is essentially 1 for realistic matrices and the update is close
    to SGD-Nesterov with a large lr.  ``normalize_output=True`` uses the paper
    summary's form ``U/|U|_F / (r + 1e-8) sqrt(max(1, m/n))`` (unit Frobenius).

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size; a schedule is called with the number of steps taken (0 first).
    momentum : float in [0, 1)
        EMA factor :math:`\mu` of the momentum buffer.
    weight_decay : float >= 0
        Decoupled decay, applied first.
    gamma : float >= 0
        :math:`\gamma` of the cosh brake.
    nesterov : bool
        Use ``lerp(g, B, mu)`` instead of ``B``.
    normalize_output : bool
        Unit-Frobenius output times ``sqrt(max(1, m/n))``.
    fallback : Rule, optional
        Rule for the parameters that are not 2-D (biases, gains); without one they raise, naming the parameter.
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise before anything changes, skip the step, or are not checked.

    Returns
    -------
    Rule
        ``init`` / ``step`` / ``step_``; leaf state ``MuonLeaf``.

    Examples
    --------
    >>> import numpy as np
    >>> st = auon().init(np.ones((4, 3)))
    """
    return _auon(lr, momentum, weight_decay, gamma, nesterov, normalize_output, None, fallback, nan_policy)


@rule("HybridAuON", ns_dtype=Choice(NS_DTYPES), **_NS, **_AUON)
def hybrid_auon(*, lr: ScalarT | Schedule = 0.24, momentum: float = 0.95, weight_decay: float = 0.0, gamma: float = 1.5,
                nesterov: bool = True, ns_steps: int = 5,
                ns_coefficients: tuple[float, float, float] = T.MUON_COEFFICIENTS, ns_dtype: str | None = None,
                normalize_output: bool = False, fallback: Rule | None = None, nan_policy: str = "raise") -> Rule:
    r"""Hybrid-AuON: :func:`auon` with the momentum first orthogonalised by ``ns_steps`` Newton-Schulz steps.

    Same paper and conventions as :func:`auon`; the Newton-Schulz iteration runs
    in the parameter's dtype by default (the reference code does not cast to bf16).

    .. math::
        O = \mathrm{NS}(U),\quad r = \sqrt{\mathrm{mean}\cosh^2(\gamma O/\|O\|_F)},\quad
        p \leftarrow p - lr\,O/(r + 10^{-8})

    Parameters
    ----------
    lr : float, 0-d array or callable(step) -> float
        Step size; a schedule is called with the number of steps taken (0 first).
    momentum : float in [0, 1)
        EMA factor :math:`\mu` of the momentum buffer.
    weight_decay : float >= 0
        Decoupled decay, applied first.
    gamma : float >= 0
        :math:`\gamma` of the cosh brake.
    nesterov : bool
        Use ``lerp(g, B, mu)`` instead of ``B``.
    ns_steps : int
        Newton-Schulz iterations.
    ns_coefficients : (float, float, float)
        Quintic coefficients.
    ns_dtype : "auto", None, "float32", "float64" or "bfloat16"
        dtype of the Newton-Schulz matmuls (see :func:`muon`).
    normalize_output : bool
        Unit-Frobenius output times ``sqrt(max(1, m/n))``.
    fallback : Rule, optional
        Rule for the parameters that are not 2-D (biases, gains); without one they raise, naming the parameter.
    nan_policy : {"raise", "skip", "ignore"}
        Non-finite gradients raise before anything changes, skip the step, or are not checked.

    Returns
    -------
    Rule
        ``init`` / ``step`` / ``step_``; leaf state ``MuonLeaf``.

    Examples
    --------
    >>> import numpy as np
    >>> st = hybrid_auon(ns_steps=2).init(np.ones((4, 3)))
    """
    ns = (ns_coefficients, ns_steps, 1e-7, ns_dtype)
    return _auon(lr, momentum, weight_decay, gamma, nesterov, normalize_output, ns, fallback, nan_policy)
