"""What every iterative solver shares: one callback convention, ``progress=``, convergence warnings,
and result objects with a short ``repr`` and a ``summary()``.

Callback convention (all solvers): ``callback(state)`` is called every ``callback_every``
iterations with the solver's state object, a frozen dataclass that always has ``n_iter`` (iterations
done) and ``error`` (the quantity compared with ``tol``), plus the solver's own fields (potentials,
the current mean, ...).  Returning ``True`` stops the solver early (``converged`` stays False, no
warning: the user asked for it).

``progress=True`` shows a tqdm bar when tqdm is installed (``pip install optnorm[progress]``),
otherwise one line per interval on stderr; ``progress=False`` (default) prints nothing.

A solver drives a :class:`Monitor`::

    mon = Monitor("sinkhorn", max_iter=max_iter, tol=tol, callback=callback,
                  callback_every=callback_every, progress=progress)
    for it in range(1, max_iter + 1):
        ...
        if mon.wants(it):                                   # error needed this iteration?
            err = ...
            if mon.update(it, err, lambda: SinkhornState(it, f, g, err)):
                break                                       # converged, or the callback stopped it
    mon.close()                                             # warns if max_iter was hit unconverged
    return Result(..., n_iter=mon.n_iter, converged=mon.converged)
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any, Callable

from . import compat
from .convergence import warn_not_converged

__all__ = ["Monitor", "Result", "IterState", "format_value"]


@dataclasses.dataclass(frozen=True)
class IterState:
    """The fields every solver state has (solvers subclass it with their own)."""
    n_iter: int
    error: float


class _Bar:
    """tqdm when installed, else a plain line on stderr every ``every`` iterations."""

    def __init__(self, desc: str, total: int):
        self.desc, self.total = desc, total
        self.t0 = time.perf_counter()
        self._tqdm = None
        self._last = 0.0
        try:
            from tqdm.auto import tqdm

            self._tqdm = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
        except ImportError:
            pass

    def update(self, it: int, error: float | None):
        if self._tqdm is not None:
            self._tqdm.n = it
            if error is not None:
                self._tqdm.set_postfix_str(f"error={error:.3g}", refresh=False)
            self._tqdm.refresh()
            return
        now = time.perf_counter()
        if now - self._last >= 0.5 or it == self.total:
            self._last = now
            err = "" if error is None else f", error {error:.3g}"
            print(f"{self.desc}: iteration {it}/{self.total}{err} ({now - self.t0:.1f} s)", file=sys.stderr)

    def close(self, converged: bool, it: int):
        if self._tqdm is not None:
            self._tqdm.close()
        else:
            state = "converged" if converged else "stopped"
            print(f"{self.desc}: {state} after {it} iterations ({time.perf_counter() - self.t0:.2f} s)",
                  file=sys.stderr)


class Monitor:
    """Iteration bookkeeping shared by the solvers (see the module docstring)."""

    def __init__(self, name: str, *, max_iter: int, tol: float | None, callback: Callable | None = None,
                 callback_every: int = 1, progress: bool = False, check_every: int = 1, warn: bool = True):
        self.name = name
        self.max_iter = max_iter
        self.tol = tol
        self.callback = callback
        self.callback_every = max(1, int(callback_every))
        self.check_every = max(1, int(check_every))
        self.bar = _Bar(name, max_iter) if progress else None
        self.warn = warn
        self.n_iter = 0
        self.error: float | None = None
        self.errors: list[float] = []
        self.converged = False
        self.stopped = False

    def wants(self, it: int) -> bool:
        """Whether iteration ``it`` must compute its error (a check, a callback, progress, or the last one)."""
        return (it % self.check_every == 0 or it == self.max_iter
                or (self.callback is not None and it % self.callback_every == 0)
                or (self.bar is not None and it % self.check_every == 0))

    def update(self, it: int, error: Any, state: Callable[[], Any] | None = None) -> bool:
        """Record iteration ``it``'s error; True when the solver must stop (converged or stopped by the callback)."""
        self.n_iter = it
        err = None if error is None else float(error) if compat.is_concrete(error) else None
        if err is not None:
            self.error = err
            self.errors.append(err)
        if self.bar is not None:
            self.bar.update(it, err)
        if err is not None and self.tol is not None and (err <= self.tol) \
                and (it % self.check_every == 0 or it == self.max_iter):    # the last iteration's error counts too
            self.converged = True
            return True
        if err is not None and self.tol is not None and math.isnan(err):
            return True
        if self.callback is not None and it % self.callback_every == 0 and state is not None:
            if self.callback(state()):
                self.stopped = True
                return True
        return False

    def step(self, it: int) -> None:
        """Count an iteration whose error was not computed."""
        self.n_iter = it

    def close(self) -> None:
        """Finish: close the progress bar; warn when the iteration limit was hit before ``tol``."""
        if self.bar is not None:
            self.bar.close(self.converged, self.n_iter)
        if self.warn and not self.converged and not self.stopped and self.tol is not None \
                and self.n_iter >= self.max_iter:
            warn_not_converged(self.name, self.n_iter, self.error, self.tol, stacklevel=4)


def format_value(v: Any) -> str:
    """Short text for a result field: arrays by shape and dtype, numbers to 6 digits."""
    if v is None:
        return "None"
    if compat.is_array(v):
        shape = tuple(v.shape)
        if len(shape) == 0 and compat.is_concrete(v):
            return f"{float(compat.to_numpy(v)):.6g}"
        return f"<{compat.backend_name(v)} {compat.dtype_name(v.dtype)} {shape}>"
    if isinstance(v, float) or (hasattr(v, "dtype") and getattr(v, "ndim", None) == 0 and hasattr(v, "item")
                                and isinstance(v.item(), float)):
        return f"{float(v):.6g}"
    if isinstance(v, (list, tuple)) and len(v) > 4:
        return f"<{type(v).__name__} of {len(v)}>"
    if isinstance(v, tuple) and any(compat.is_array(x) or hasattr(x, "dtype") or isinstance(x, float) for x in v):
        return "(" + ", ".join(format_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


class Result:
    """Mixin for result dataclasses: a one-line ``repr`` (shapes, not values) and ``summary()``."""

    def _fields(self):
        if dataclasses.is_dataclass(self):
            return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.repr]
        return list(vars(self).items())

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={format_value(v)}" for k, v in self._fields())
        return f"{type(self).__name__}({body})"

    def summary(self) -> str:
        """A few lines for a human: each field, arrays by shape; the last error and convergence when present."""
        lines = [type(self).__name__]
        width = max((len(k) for k, _ in self._fields()), default=0)
        for k, v in self._fields():
            if k == "errors" and v is not None and len(v):
                last = v[-1]
                v = f"{len(v)} recorded, last {float(compat.to_numpy(last)) if compat.is_array(last) else last:.3g}"
            lines.append(f"  {k:<{width}}  {v if isinstance(v, str) else format_value(v)}")
        return "\n".join(lines)
