"""Orthogonalised-momentum rules: muon (torch.optim.Muon), normuon (NorMuon), auon / hybrid_auon (AuON)."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._lib import compat, validate
from . import transforms as T
from .base import Ctx, MatrixRule, Rule, cast, check_beta, scalar

__all__ = ["muon", "normuon", "auon", "hybrid_auon"]


class MuonLeaf(NamedTuple):
    momentum_buffer: Any


class NorMuonLeaf(NamedTuple):
    momentum_buffer: Any
    second_momentum_buffer: Any     # one entry per row (m, 1)


def _ns_dtype(ns_dtype, p):
    if ns_dtype == "auto":
        return "bfloat16" if (compat.is_torch(p) or compat.is_jax(p)) else None
    return ns_dtype


def _check_ns(ns_coefficients, ns_steps, ns_dtype):
    if len(tuple(ns_coefficients)) != 3:
        raise ValueError(f"ns_coefficients must be (a, b, c), got {ns_coefficients!r}")
    validate.check_int(ns_steps, "ns_steps", low=0, high=99)
    validate.check_in(ns_dtype, ("auto", None, "float32", "float64", "bfloat16"), "ns_dtype")


class _Momentum(MatrixRule):
    """EMA momentum with optional Nesterov look-ahead, then an orthogonalising map (shared by the family)."""

    def __init__(self, *, momentum, nesterov, ns_coefficients, ns_steps, ns_eps, ns_dtype, **kw):
        super().__init__(**kw)
        self.momentum = check_beta(momentum, "momentum")
        self.nesterov = bool(nesterov)
        _check_ns(ns_coefficients, ns_steps, ns_dtype)
        self.ns_coefficients = tuple(float(c) for c in ns_coefficients)
        self.ns_steps = int(ns_steps)
        self.ns_eps = validate.check_positive(ns_eps, "eps")
        self.ns_dtype = ns_dtype

    def _buf(self, p, xp):
        return xp.zeros(p.shape, dtype=compat.compute_dtype(p, xp), device=compat.device(p))

    def _momentum_update(self, gc, buf):
        buf = T.ema(buf, gc, self.momentum)                       # lerp(B, g, 1 - mu)
        u = T.nesterov(gc, buf, self.momentum) if self.nesterov else buf
        return u, buf

    def _orth(self, u, p, xp):
        dt = T._resolve_dtype(u, _ns_dtype(self.ns_dtype, p), xp)
        return T._ns(u, self.ns_steps, self.ns_coefficients, self.ns_eps, dt, xp)


class Muon(_Momentum):
    name = "muon"

    def __init__(self, *, weight_decay, adjust_lr_fn, **kw):
        super().__init__(**kw)
        self.weight_decay = validate.check_nonnegative(weight_decay, "weight_decay")
        T.matrix_shape_scale((1, 1), adjust_lr_fn or "original")
        self.adjust_lr_fn = adjust_lr_fn or "original"

    def init_matrix(self, p, *, name, xp):
        return MuonLeaf(self._buf(p, xp))

    def update_matrix(self, p, g, s, ctx: Ctx):
        xp = ctx.xp
        cd = compat.compute_dtype(p, xp)
        pc, gc = cast(p, cd, xp), cast(g, cd, xp)
        lr = self.lr_at(ctx.t)
        u, buf = self._momentum_update(gc, s.momentum_buffer)
        o = self._orth(u, p, xp)
        adj = T.matrix_shape_scale(p.shape, self.adjust_lr_fn)
        pc = T.decay_decoupled(pc, scalar(lr, pc, xp), self.weight_decay)   # decay uses the unadjusted lr
        pc = pc - scalar(lr * adj, pc, xp) * o
        return cast(pc, p.dtype, xp), MuonLeaf(buf)


def muon(*, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True, ns_coefficients=T.MUON_COEFFICIENTS,
         eps=1e-7, ns_steps=5, adjust_lr_fn=None, ns_dtype="auto", fallback: Rule | None = None,
         nan_policy="raise") -> Rule:
    r"""Muon with torch.optim.Muon's defaults and conventions.

    .. math::
        B \leftarrow \mathrm{lerp}(B, g, 1-\mu),\; U = \mathrm{lerp}(g, B, \mu)\ (\text{nesterov}),\;
        O = \mathrm{NS}_5(U),\; p \leftarrow p(1 - lr\,\lambda) - lr\,a(m, n)\,O

    with :func:`newton_schulz_orthogonalize` and the lr adjustment ``a``:
    ``adjust_lr_fn=None``/``"original"`` gives ``sqrt(max(1, m/n))`` (Keller Jordan),
    ``"match_rms_adamw"`` ``0.2 sqrt(max(m, n))`` (Moonshot), ``"spectral"``
    ``sqrt(m/n)``, ``"none"`` 1.  "Muon: An optimizer for hidden layers in neural
    networks", K. Jordan et al., 2024; "Muon is Scalable for LLM Training", J. Liu et al., 2025.

    Parameters
    ----------
    ns_dtype : "auto", None, "float32", "float64" or "bfloat16"
        Dtype of the Newton-Schulz matmuls.  ``"auto"``: bfloat16 for torch and JAX
        arrays (what torch.optim.Muon does; ~3% relative error per step), the
        parameter's dtype for NumPy/CuPy/others.  None: the parameter's dtype.
    fallback : Rule, optional
        Rule for parameters that are not 2-D (biases, norms); without one they raise.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.optim import adamw
    >>> opt = muon(lr=0.02, fallback=adamw(lr=3e-4))
    >>> st = opt.init({"w": np.ones((4, 3)), "b": np.zeros(4)})
    """
    hyper = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                 ns_coefficients=tuple(ns_coefficients), eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn,
                 ns_dtype=ns_dtype, fallback=fallback, nan_policy=nan_policy)
    return Muon(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                ns_coefficients=ns_coefficients, ns_eps=eps, ns_steps=ns_steps, ns_dtype=ns_dtype,
                adjust_lr_fn=adjust_lr_fn, fallback=fallback, nan_policy=nan_policy, factory=muon, hyper=hyper)


class NorMuon(_Momentum):
    name = "normuon"

    def __init__(self, *, beta2, weight_decay, scale_mode, **kw):
        super().__init__(**kw)
        self.beta2 = check_beta(beta2, "beta2")
        self.weight_decay = validate.check_nonnegative(weight_decay, "weight_decay")
        self.scale_mode = validate.check_in(scale_mode, ("keep_norm", "rms0.2"), "scale_mode")

    def init_matrix(self, p, *, name, xp):
        v = xp.zeros((p.shape[0], 1), dtype=compat.compute_dtype(p, xp), device=compat.device(p))
        return NorMuonLeaf(self._buf(p, xp), v)

    def update_matrix(self, p, g, s, ctx):
        xp = ctx.xp
        cd = compat.compute_dtype(p, xp)
        pc, gc = cast(p, cd, xp), cast(g, cd, xp)
        lr = scalar(self.lr_at(ctx.t), pc, xp)
        u, buf = self._momentum_update(gc, s.momentum_buffer)
        o = self._orth(u, p, xp)
        v = T.ema(s.second_momentum_buffer, xp.mean(o * o, axis=-1, keepdims=True), self.beta2)
        on = o / (xp.sqrt(v) + 1e-10)
        m, n = p.shape
        if self.scale_mode == "keep_norm":     # reference code: restore |O|_F, then Keller's aspect factor
            on = on * (T.fro_norm(o, xp) / (T.fro_norm(on, xp) + 1e-10)) * math.sqrt(max(1.0, m / n))
        else:                                  # paper: update RMS 0.2 (AdamW-matched)
            on = on * (0.2 * math.sqrt(m * n) / (T.fro_norm(on, xp) + 1e-10))
        if self.weight_decay:
            pc = T.decay_decoupled(pc, lr, self.weight_decay)
        pc = pc - lr * on
        return cast(pc, p.dtype, xp), NorMuonLeaf(buf, v)


def normuon(*, lr=0.02, weight_decay=0.0, momentum=0.95, beta2=0.95, nesterov=True,
            ns_coefficients=T.MUON_COEFFICIENTS, eps=1e-7, ns_steps=5, ns_dtype="auto", scale_mode="keep_norm",
            fallback: Rule | None = None, nan_policy="raise") -> Rule:
    r"""NorMuon: Muon with a per-neuron (row) second moment normalising the orthogonalised update.

    "NorMuon" (arXiv:2510.05491, 2025; reference code zichongli5/NorMuon):

    .. math::
        O = \mathrm{NS}_5(U),\; v \leftarrow \beta_2 v + (1-\beta_2)\,\mathrm{mean}_j O_{ij}^2,\;
        \hat O = O / (\sqrt{v} + 10^{-10})

    then ``scale_mode="keep_norm"`` (reference code) rescales ``O_hat`` to ``|O|_F``
    and by ``sqrt(max(1, m/n))``; ``"rms0.2"`` (paper) to RMS 0.2.  Decoupled
    decay ``p (1 - lr wd)``; ``p -= lr O_hat``.  No bias correction of ``v``.

    Examples
    --------
    >>> import numpy as np
    >>> st = normuon().init(np.ones((4, 3)))
    """
    hyper = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, beta2=beta2, nesterov=nesterov,
                 ns_coefficients=tuple(ns_coefficients), eps=eps, ns_steps=ns_steps, ns_dtype=ns_dtype,
                 scale_mode=scale_mode, fallback=fallback, nan_policy=nan_policy)
    return NorMuon(lr=lr, weight_decay=weight_decay, momentum=momentum, beta2=beta2, nesterov=nesterov,
                   ns_coefficients=ns_coefficients, ns_eps=eps, ns_steps=ns_steps, ns_dtype=ns_dtype,
                   scale_mode=scale_mode, fallback=fallback, nan_policy=nan_policy, factory=normuon, hyper=hyper)


class AuON(_Momentum):
    name = "auon"

    def __init__(self, *, weight_decay, gamma, hybrid, normalize_output, **kw):
        super().__init__(**kw)
        self.weight_decay = validate.check_nonnegative(weight_decay, "weight_decay")
        self.gamma = validate.check_nonnegative(gamma, "gamma")
        self.hybrid = bool(hybrid)
        self.normalize_output = bool(normalize_output)

    def init_matrix(self, p, *, name, xp):
        return MuonLeaf(self._buf(p, xp))

    def update_matrix(self, p, g, s, ctx):
        xp = ctx.xp
        cd = compat.compute_dtype(p, xp)
        pc, gc = cast(p, cd, xp), cast(g, cd, xp)
        lr = scalar(self.lr_at(ctx.t), pc, xp)
        if self.weight_decay:
            pc = T.decay_decoupled(pc, lr, self.weight_decay)
        u, buf = self._momentum_update(gc, s.momentum_buffer)
        if self.hybrid:
            u = self._orth(u, p, xp)
        un = u / (T.fro_norm(u, xp) + 1e-7)
        c = xp.cosh(self.gamma * un)
        r = xp.sqrt(xp.mean(c * c))                       # the "cosh-RMS brake"; ~1 + gamma^2/(2N)
        if self.normalize_output:
            m, n = p.shape
            upd = un / (r + 1e-8) * math.sqrt(max(1.0, m / n))
        else:
            upd = u / (r + 1e-8)
        pc = pc - lr * upd
        return cast(pc, p.dtype, xp), MuonLeaf(buf)


def auon(*, lr=0.24, momentum=0.95, weight_decay=0.0, gamma=1.5, nesterov=True, normalize_output=False,
         fallback: Rule | None = None, nan_policy="raise") -> Rule:
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

    Examples
    --------
    >>> import numpy as np
    >>> st = auon().init(np.ones((4, 3)))
    """
    hyper = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, gamma=gamma, nesterov=nesterov,
                 normalize_output=normalize_output, fallback=fallback, nan_policy=nan_policy)
    return AuON(lr=lr, momentum=momentum, weight_decay=weight_decay, gamma=gamma, nesterov=nesterov,
                normalize_output=normalize_output, hybrid=False, ns_coefficients=T.MUON_COEFFICIENTS, ns_eps=1e-7,
                ns_steps=5, ns_dtype=None, fallback=fallback, nan_policy=nan_policy, factory=auon, hyper=hyper)


def hybrid_auon(*, lr=0.24, momentum=0.95, weight_decay=0.0, gamma=1.5, nesterov=True, ns_steps=5,
                ns_coefficients=T.MUON_COEFFICIENTS, ns_dtype=None, normalize_output=False,
                fallback: Rule | None = None, nan_policy="raise") -> Rule:
    r"""Hybrid-AuON: :func:`auon` with the momentum first orthogonalised by ``ns_steps`` Newton-Schulz steps.

    Same paper and conventions as :func:`auon`; the Newton-Schulz iteration runs
    in the parameter's dtype by default (the reference code does not cast to bf16).

    Examples
    --------
    >>> import numpy as np
    >>> st = hybrid_auon(ns_steps=2).init(np.ones((4, 3)))
    """
    hyper = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, gamma=gamma, nesterov=nesterov,
                 ns_steps=ns_steps, ns_coefficients=tuple(ns_coefficients), ns_dtype=ns_dtype,
                 normalize_output=normalize_output, fallback=fallback, nan_policy=nan_policy)
    r = AuON(lr=lr, momentum=momentum, weight_decay=weight_decay, gamma=gamma, nesterov=nesterov,
             normalize_output=normalize_output, hybrid=True, ns_coefficients=ns_coefficients, ns_eps=1e-7,
             ns_steps=ns_steps, ns_dtype=ns_dtype, fallback=fallback, nan_policy=nan_policy, factory=hybrid_auon,
             hyper=hyper)
    r.name = "hybrid_auon"
    return r


