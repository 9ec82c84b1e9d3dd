"""Registry of differentiable ops: the forward, and a forward/backward pair in JAX's ``custom_vjp`` convention.

Contract (what :mod:`optnorm.torch` and :mod:`optnorm.jax` wrap generically)::

    y = f(x, w, *, opt=...)            # positional parameters are arrays (or None); options are keyword-only
    y, res = f_fwd(x, w, *, opt=...)   # same signature; res is any nest of tuples/lists/dicts of arrays and
                                       # Python constants (the JAX adapter keeps non-array leaves static)
    grads = f_bwd(res, dy)             # a tuple with one cotangent per positional parameter, None where
                                       # there is none (None input, integer input, nondiff_argnums)

``y`` is one array or a tuple of arrays; ``dy`` has the same structure.  An op
registers itself once, at import of its module::

    register("norm.softmax", softmax, softmax_fwd, softmax_bwd)

and the adapters find it as ``optnorm.torch.softmax`` / ``optnorm.jax.softmax``.  Domain code does not
call :func:`register` itself: :func:`optnorm._lib.api.vjp` does, for a declared public function.
``nondiff_argnums`` lists positional inputs that never get a cotangent (integer
targets, masks, running statistics); ``skip_check_argnums`` lists inputs whose
"cotangent" is by design not the gradient (TrAct's weight slot): gradient checks
skip them on purpose.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Op", "register", "get", "all_ops", "DOMAINS", "adapter_namespace"]

from .api import DOMAINS

_REGISTRY: dict[str, "Op"] = {}


@dataclass(frozen=True)
class Op:
    name: str
    fn: Callable
    fwd: Callable
    bwd: Callable
    nondiff_argnums: tuple[int, ...] = ()
    skip_check_argnums: tuple[int, ...] = ()
    array_params: tuple[str, ...] = field(default=())
    # every parameter's (name, default) in order (``inspect.Parameter.empty`` when required): ``split_plain``
    # binds with these, in plain Python that torch.compile traces (it cannot trace ``Signature.bind``)
    params: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        # computed once: the adapters bind every call against it (13 us per call when re-derived)
        return inspect.signature(self.fn)

    def split(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Bind a user call to (positional arrays, keyword options), filling defaults."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arrays = tuple(bound.arguments[p] for p in self.array_params)
        opts = {k: v for k, v in bound.arguments.items() if k not in self.array_params}
        return arrays, opts

    def split_plain(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """:meth:`split` for a call already known to be valid (the adapters under ``torch.compile``)."""
        values = dict(zip([n for n, _ in self.params], args))
        values.update(kwargs)
        for n, d in self.params:
            if n not in values:
                values[n] = d
        return tuple(values[p] for p in self.array_params), {n: values[n] for n, _ in self.params
                                                              if n not in self.array_params}

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def register(name: str, fn: Callable, fwd: Callable, bwd: Callable, *,
             nondiff_argnums: tuple[int, ...] = (), skip_check_argnums: tuple[int, ...] = ()) -> Op:
    """Register ``fn`` with its ``fwd``/``bwd`` pair under ``"domain.name"``; returns the Op."""
    if "." not in name:
        raise ValueError(f"op name must be 'domain.name', got {name!r}")
    sig = inspect.signature(fn)
    params = []
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            params.append(p.name)
        elif p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"op {name}: *args/**kwargs are not allowed in a registered op's signature")
    fwd_params = [p for p in inspect.signature(fwd).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(fwd_params) != len(params):
        raise TypeError(f"op {name}: fwd takes {len(fwd_params)} positional arrays, fn takes {len(params)}")
    short = name.rsplit(".", 1)[-1]
    for other in _REGISTRY.values():
        if other.short_name == short and other.name != name:
            raise ValueError(f"op short name {short!r} is used by {other.name} already")
    op = Op(name, fn, fwd, bwd, tuple(nondiff_argnums), tuple(skip_check_argnums), tuple(params),
            tuple((p.name, p.default) for p in sig.parameters.values()))
    _REGISTRY[name] = op
    return op


def _load_domains() -> None:
    from .api import load_domains

    load_domains()


def get(name: str) -> Op:
    """Look an op up by full (``"norm.softmax"``) or short (``"softmax"``) name."""
    for attempt in range(2):
        if name in _REGISTRY:
            return _REGISTRY[name]
        for op in _REGISTRY.values():
            if op.short_name == name:
                return op
        if attempt == 0:
            _load_domains()
    raise AttributeError(f"optnorm has no registered op named {name!r}")


def all_ops() -> dict[str, Op]:
    """Every registered op (imports the domain packages first)."""
    _load_domains()
    return dict(_REGISTRY)


def adapter_namespace(module_name: str, apply: Callable):
    """``op``, ``__getattr__`` and ``__dir__`` for an adapter module (optnorm.torch, optnorm.jax).

    Attribute access by an op's short name returns that op wrapped by ``apply``.
    """
    import functools

    def op(name: str):
        o = get(name)

        @functools.wraps(o.fn)
        def wrapper(*args, **kwargs):
            return apply(o, *args, **kwargs)

        return wrapper

    def __getattr__(name: str):
        mod = importlib.import_module(module_name)
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            fn = op(name)
        except AttributeError:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}") from None
        setattr(mod, name, fn)
        return fn

    def __dir__():
        mod = importlib.import_module(module_name)
        return sorted(set(mod.__all__) | {o.short_name for o in all_ops().values()})

    op.__doc__ = f"The {module_name} function for a registered op, by full or short name."
    return op, __getattr__, __dir__
