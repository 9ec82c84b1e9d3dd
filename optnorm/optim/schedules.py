"""Learning-rate schedules as plain functions of the step (optax's schedules, the same values).

Every factory returns a :class:`Schedule`: call it with the number of steps taken (0 first), a Python
int (a Python float comes back) or a 0-d integer array of any library, traced under ``jax.jit`` too (a
0-d float array comes back).  Pass one as ``lr=`` to any rule, to the torch and optax wrappers, or to
optax itself.  A schedule pickles and is saved in a torch wrapper's state dict as its name and arguments.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

from .._lib import compat
from .._lib.api import lookup, public, public_class
from .._lib.roles import Bool, Choice, Int, NonNegative, Option, Positive, Role, Scalar, Perturbation, Outcome

__all__: list = []


class _Py:
    """Scalar ops on Python floats."""
    pi = math.pi

    @staticmethod
    def f(x):
        return float(x)

    cos = staticmethod(math.cos)
    floor = staticmethod(math.floor)

    @staticmethod
    def minimum(a, b):
        return min(a, b)

    @staticmethod
    def maximum(a, b):
        return max(a, b)

    @staticmethod
    def where(c, a, b):
        return a if c else b

    @staticmethod
    def power(a, b):
        return a ** b


class _Arr:
    """The same ops on 0-d arrays of one namespace (the step's), in its default float dtype."""
    pi = math.pi

    def __init__(self, step):
        self.xp = compat.array_namespace(step)
        self.dt = self.xp.asarray(0.0).dtype if not compat.is_floating(step) else step.dtype

    def f(self, x):
        if compat.is_array(x):
            return compat.cast(x, self.dt, self.xp)
        return self.xp.asarray(float(x), dtype=self.dt)

    def cos(self, x):
        return self.xp.cos(self.f(x))

    def floor(self, x):
        return self.xp.floor(self.f(x))

    def minimum(self, a, b):
        return self.xp.minimum(self.f(a), self.f(b))

    def maximum(self, a, b):
        return self.xp.maximum(self.f(a), self.f(b))

    def where(self, c, a, b):
        return self.xp.where(c, self.f(a), self.f(b))

    def power(self, a, b):
        return self.xp.pow(self.f(a), self.f(b))


@public_class
class Schedule:
    """A learning-rate schedule: ``schedule(step) -> value`` with ``step`` the number of steps taken.

    Made by :func:`constant`, :func:`linear`, :func:`cosine_decay`, :func:`warmup_cosine`,
    :func:`one_cycle`, :func:`exponential_decay` and :func:`join`; ``name`` and ``args`` record the factory
    and its arguments (its ``repr``, pickling and the torch wrapper's state dict use them).
    """

    def __init__(self, name: str, args: dict, fn: Callable):
        self.name, self.args, self._fn = name, dict(args), fn

    def __call__(self, step: Any) -> Any:
        if isinstance(step, numbers.Real) and not isinstance(step, bool):
            return float(self._fn(float(step), _Py))
        if compat.is_array(step) and getattr(step, "ndim", 0) == 0:
            m = _Arr(step)
            return self._fn(m.f(step), m)
        raise TypeError(f"{self.name}: step must be an int or a 0-d array, got {type(step).__name__}")

    def __repr__(self):
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.args.items())})"

    def __reduce__(self):
        return _rebuild, (self.name, self.args)

    def __eq__(self, other):
        return isinstance(other, Schedule) and repr(self) == repr(other)

    def __hash__(self):
        return hash(repr(self))


def _rebuild(name: str, args: dict) -> Schedule:
    entry = lookup(f"optim.{name}")
    assert entry is not None, name
    return entry.obj(**args)


def _sched(name, args, fn):
    return Schedule(name, args, fn)


class ScheduleArg(Role):
    """A schedule (any callable of the step) or a number (a constant)."""

    doc = "schedule or number"

    def check(self, value, name, call):
        if callable(value):
            return value
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return constant(float(value))
        raise call.error(TypeError, f"{name} must be a schedule (callable of the step) or a number, got "
                                    f"{type(value).__name__}")

    def example(self, sizes, rng, dtype):
        return None

    def perturbations(self, value):
        return [Perturbation("not callable", lambda v, r: "abc", Outcome.ERROR)]


class ScheduleList(Role):
    """A non-empty list of schedules (callables of the step)."""

    doc = "list of schedules"

    def check(self, value, name, call):
        if not isinstance(value, (list, tuple)) or not value:
            raise call.error(ValueError if isinstance(value, (list, tuple)) else TypeError,
                             f"{name} must be a non-empty list of schedules, got {value!r}")
        for i, s in enumerate(value):
            if not callable(s):
                raise call.error(TypeError, f"{name}[{i}] must be a schedule (callable of the step), got "
                                            f"{type(s).__name__}")
        return list(value)

    def example(self, sizes, rng, dtype):
        return [constant(1.0), constant(0.5)]

    def perturbations(self, value):
        return [Perturbation("empty", lambda v, r: [], Outcome.ERROR),
                Perturbation("not callable", lambda v, r: [1.0, "x"], Outcome.ERROR)]


def _check_bounds(boundaries, n):
    if not isinstance(boundaries, (list, tuple)):
        raise TypeError(f"join: boundaries must be a list of ints, got {type(boundaries).__name__}")
    if len(boundaries) != n - 1:
        raise ValueError(f"join: boundaries must have len(schedules) - 1 = {n - 1} entries, got {len(boundaries)}")
    out = []
    for i, b in enumerate(boundaries):
        if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 0:
            raise ValueError(f"join: boundaries[{i}] must be an int >= 0, got {b!r}")
        if out and b < out[-1]:
            raise ValueError(f"join: boundaries must not decrease (boundaries[{i}] = {b} < {out[-1]})")
        out.append(int(b))
    return out


VALUE = Scalar()
STEPS = Int(1)


# ----------------------------------------------------------------------------------------------- factories
@public(value=VALUE)
def constant(value: float) -> Schedule:
    r"""A constant schedule: :math:`\eta_t = v` (optax.constant_schedule).

    Parameters
    ----------
    value : float
        The value at every step.

    Returns
    -------
    Schedule

    Examples
    --------
    >>> constant(0.1)(1000)
    0.1
    """
    return _sched("constant", {"value": value}, lambda t, m: m.f(value) if m is not _Py else value)


@public(init_value=VALUE, end_value=VALUE, transition_steps=STEPS, transition_begin=Int(0), power=Positive())
def linear(init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0, *,
           power: float = 1.0) -> Schedule:
    r"""Linear (or polynomial) interpolation from ``init_value`` to ``end_value`` (optax.linear_schedule /
    polynomial_schedule).

    .. math::
        c = \mathrm{clip}(t - t_0, 0, T),\qquad
        \eta_t = (v_0 - v_1)\,(1 - c/T)^{p} + v_1

    Parameters
    ----------
    init_value, end_value : float
        :math:`v_0` before ``transition_begin``, :math:`v_1` from ``transition_begin + transition_steps`` on.
    transition_steps : int >= 1
        :math:`T`.
    transition_begin : int >= 0
        :math:`t_0`: steps held at ``init_value`` first.
    power : float > 0
        :math:`p` (1: linear).

    Returns
    -------
    Schedule

    Examples
    --------
    >>> s = linear(1.0, 0.0, 10)
    >>> [s(0), s(5), s(10), s(20)]
    [1.0, 0.5, 0.0, 0.0]
    """

    def fn(t, m):
        c = m.minimum(m.maximum(t - transition_begin, 0.0), float(transition_steps))
        frac = 1.0 - c / transition_steps
        return (init_value - end_value) * m.power(frac, power) + end_value

    return _sched("linear", {"init_value": init_value, "end_value": end_value, "transition_steps": transition_steps,
                             "transition_begin": transition_begin, "power": power}, fn)


@public(init_value=VALUE, decay_steps=STEPS, alpha=Scalar(), exponent=Positive())
def cosine_decay(init_value: float, decay_steps: int, alpha: float = 0.0, *, exponent: float = 1.0) -> Schedule:
    r"""Cosine decay (optax.cosine_decay_schedule; Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with
    Warm Restarts", ICLR 2017).

    .. math::
        c = \min(t, T),\qquad
        \eta_t = v_0\Bigl[(1-\alpha)\bigl(\tfrac12(1 + \cos\tfrac{\pi c}{T})\bigr)^{e} + \alpha\Bigr]

    Parameters
    ----------
    init_value : float
        :math:`v_0`.
    decay_steps : int >= 1
        :math:`T`.
    alpha : float
        Final value as a fraction of ``init_value``.
    exponent : float > 0
        :math:`e`.

    Returns
    -------
    Schedule

    Examples
    --------
    >>> s = cosine_decay(1.0, 10)
    >>> [round(s(k), 6) for k in (0, 5, 10, 11)]
    [1.0, 0.5, 0.0, 0.0]
    """

    def fn(t, m):
        c = m.minimum(t, float(decay_steps))
        cd = 0.5 * (1.0 + m.cos(m.pi * c / decay_steps))
        return init_value * ((1.0 - alpha) * m.power(cd, exponent) + alpha)

    return _sched("cosine_decay", {"init_value": init_value, "decay_steps": decay_steps, "alpha": alpha,
                                   "exponent": exponent}, fn)


@public(init_value=VALUE, peak_value=VALUE, warmup_steps=Int(0), decay_steps=STEPS, end_value=VALUE,
        exponent=Positive())
def warmup_cosine(init_value: float, peak_value: float, warmup_steps: int, decay_steps: int, end_value: float = 0.0,
                  *, exponent: float = 1.0) -> Schedule:
    r"""Linear warmup to ``peak_value``, then cosine decay to ``end_value`` (optax.warmup_cosine_decay_schedule).

    .. math::
        \eta_t = \begin{cases} v_0 + (v_p - v_0)\,t/W & t < W\\
        v_1 + (v_p - v_1)\bigl(\tfrac12(1 + \cos\tfrac{\pi\min(t - W, D - W)}{D - W})\bigr)^{e} & t \ge W
        \end{cases}

    ``decay_steps`` (:math:`D`) includes the warmup, as in optax.

    Parameters
    ----------
    init_value : float
        :math:`v_0`.
    peak_value : float
        :math:`v_p`.
    warmup_steps : int >= 0
        :math:`W`.
    decay_steps : int
        :math:`D > W`: total length.
    end_value : float
        :math:`v_1`.
    exponent : float > 0
        :math:`e`.

    Returns
    -------
    Schedule

    Examples
    --------
    >>> s = warmup_cosine(0.0, 1.0, 10, 110)
    >>> [round(s(k), 6) for k in (0, 5, 10, 60, 110)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    if decay_steps <= warmup_steps:
        raise ValueError(f"warmup_cosine: decay_steps ({decay_steps}) must exceed warmup_steps ({warmup_steps}): "
                         "decay_steps counts the warmup too")
    alpha = 0.0 if peak_value == 0 else end_value / peak_value
    up = linear(init_value, peak_value, max(warmup_steps, 1))
    down = cosine_decay(peak_value, decay_steps - warmup_steps, alpha, exponent=exponent)

    def fn(t, m):
        return m.where(t < warmup_steps, up._fn(t, m), down._fn(t - warmup_steps, m))

    return _sched("warmup_cosine", {"init_value": init_value, "peak_value": peak_value, "warmup_steps": warmup_steps,
                                    "decay_steps": decay_steps, "end_value": end_value, "exponent": exponent}, fn)


def _piecewise(kind, init, knots):
    """optax.piecewise_interpolate_schedule: values ``cumprod(init, scales)`` at the knots, interpolated."""
    bounds = [0] + [b for b, _ in knots]
    values = [init]
    for _, s in knots:
        values.append(values[-1] * s)

    def fn(t, m):
        out = m.where(t >= bounds[-1], values[-1], 0.0)
        for i in range(len(bounds) - 1):
            size = max(bounds[i + 1] - bounds[i], 1)
            pct = (t - bounds[i]) / size
            a, b = values[i], values[i + 1]
            if kind == "linear":
                v = (b - a) * pct + a
            else:
                v = b + (a - b) / 2.0 * (m.cos(m.pi * pct) + 1.0)
            inside = (bounds[i] <= t) & (t < bounds[i + 1]) if m is not _Py else bounds[i] <= t < bounds[i + 1]
            out = m.where(inside, v, out)
        return out

    return fn


@public(transition_steps=STEPS, peak_value=VALUE, pct_start=Scalar(0, 1), pct_final=Scalar(0, 1),
        div_factor=Positive(), final_div_factor=Positive(), anneal=Choice(("cos", "linear")))
def one_cycle(transition_steps: int, peak_value: float, *, pct_start: float = 0.3, pct_final: float = 0.85,
              div_factor: float = 25.0, final_div_factor: float = 1e4, anneal: str = "cos") -> Schedule:
    r"""One-cycle schedule (optax.cosine_onecycle_schedule, ``anneal="linear"``: linear_onecycle_schedule;
    Smith & Topin, "Super-Convergence", 2017).

    ``anneal="cos"``: from :math:`v_p/d` up to :math:`v_p` over ``int(pct_start T)`` steps, then down to
    :math:`v_p/(d f)` at ``T``, cosine-interpolated (:math:`b + (a-b)(\cos\pi u + 1)/2`);
    ``"linear"``: linear up to :math:`v_p` at ``int(pct_start T)``, down to :math:`v_p/d` at
    ``int(pct_final T)`` and to :math:`v_p/(d f)` at ``T``.

    .. math::
        \eta_t = v_{i+1} + (v_i - v_{i+1})\,\tfrac12\bigl(1 + \cos(\pi u)\bigr),\quad
        u = \frac{t - b_i}{b_{i+1} - b_i}

    Parameters
    ----------
    transition_steps : int >= 1
        :math:`T`.
    peak_value : float
        :math:`v_p`.
    pct_start : float in [0, 1]
        Fraction of ``T`` spent increasing.
    pct_final : float in [0, 1]
        ``anneal="linear"``: where the second phase ends.
    div_factor : float > 0
        :math:`d`: the initial value is :math:`v_p/d`.
    final_div_factor : float > 0
        :math:`f`: the final value is :math:`v_p/(d f)`.
    anneal : {"cos", "linear"}
        Interpolation (torch's OneCycleLR default is ``"cos"``).

    Returns
    -------
    Schedule

    Examples
    --------
    >>> s = one_cycle(100, 1.0)
    >>> [round(s(k), 6) for k in (0, 30, 100)]
    [0.04, 1.0, 4e-06]
    """
    if anneal == "cos":
        knots = [(int(pct_start * transition_steps), div_factor),
                 (int(transition_steps), 1.0 / (div_factor * final_div_factor))]
    else:
        knots = [(int(pct_start * transition_steps), div_factor), (int(pct_final * transition_steps), 1.0 / div_factor),
                 (transition_steps, 1.0 / final_div_factor)]
    knots = sorted(knots, key=lambda kv: kv[0])
    fn = _piecewise("linear" if anneal == "linear" else "cosine", peak_value / div_factor, knots)
    return _sched("one_cycle", {"transition_steps": transition_steps, "peak_value": peak_value, "pct_start": pct_start,
                                "pct_final": pct_final, "div_factor": div_factor,
                                "final_div_factor": final_div_factor, "anneal": anneal}, fn)


@public(init_value=VALUE, transition_steps=STEPS, decay_rate=Positive(), transition_begin=Int(0), staircase=Bool(),
        end_value=Scalar(optional=True))
def exponential_decay(init_value: float, transition_steps: int, decay_rate: float, transition_begin: int = 0, *,
                      staircase: bool = False, end_value: float | None = None) -> Schedule:
    r"""Exponential decay (optax.exponential_decay).

    .. math::
        \eta_t = \begin{cases} v_0 & t \le t_0\\ v_0\, r^{(t - t_0)/T} & t > t_0\end{cases}

    (``staircase``: the exponent rounded down); ``end_value`` bounds the result (a floor when
    ``decay_rate < 1``, a ceiling otherwise).

    Parameters
    ----------
    init_value : float
        :math:`v_0`.
    transition_steps : int >= 1
        :math:`T`.
    decay_rate : float > 0
        :math:`r`.
    transition_begin : int >= 0
        :math:`t_0`.
    staircase : bool
        Decay in discrete steps.
    end_value : float, optional
        Bound of the result.

    Returns
    -------
    Schedule

    Examples
    --------
    >>> s = exponential_decay(1.0, 10, 0.5)
    >>> [s(0), s(10), s(20)]
    [1.0, 0.5, 0.25]
    """

    def fn(t, m):
        d = t - transition_begin
        p = d / transition_steps
        if staircase:
            p = m.floor(p)
        v = m.where(d <= 0, init_value, init_value * m.power(decay_rate, p))
        if end_value is not None:
            v = m.maximum(v, end_value) if decay_rate < 1.0 else m.minimum(v, end_value)
        return v

    return _sched("exponential_decay", {"init_value": init_value, "transition_steps": transition_steps,
                                        "decay_rate": decay_rate, "transition_begin": transition_begin,
                                        "staircase": staircase, "end_value": end_value}, fn)


@public(schedules=ScheduleList(), boundaries=Option(example=[3]))
def join(schedules: list, boundaries: list) -> Schedule:
    r"""Schedules one after another (optax.join_schedules): from step ``boundaries[i]`` on, ``schedules[i + 1]``
    runs, restarted at 0.

    .. math::
        \eta_t = s_i(t - b_{i-1})\quad\text{for } b_{i-1} \le t < b_i\quad(b_{-1} = 0)

    Parameters
    ----------
    schedules : list of callables
        :math:`s_0, s_1, \dots`
    boundaries : list of int
        Non-decreasing absolute steps, one fewer than ``schedules``.

    Returns
    -------
    Schedule

    Examples
    --------
    >>> s = join([constant(1.0), linear(1.0, 0.0, 10)], [5])
    >>> [s(0), s(5), s(10), s(15)]
    [1.0, 1.0, 0.5, 0.0]
    """
    bounds = _check_bounds(boundaries, len(schedules))

    def call(s, t, m):
        if isinstance(s, Schedule):
            return s._fn(t, m)
        return s(t)

    def fn(t, m):
        out = call(schedules[0], t, m)
        for b, s in zip(bounds, schedules[1:]):
            out = m.where(t < b, out, call(s, t - b, m))
        return out

    return _sched("join", {"schedules": list(schedules), "boundaries": bounds}, fn)
