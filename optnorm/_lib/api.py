"""The public API as a registry: each public function is declared once, and every list derives from it.

A public function is declared where it is defined::

    from .._lib.api import public, vjp
    from .._lib.roles import Float, Axis, Choice, Out

    @public(x=Float("... n"), axis=Axis("x"), method=Choice(METHODS), out=Out("x"),
            gufunc=("(n)->(n)", {"axis_arg": "axis"}))
    def softmax(x, *, axis=-1, method="safe", out=None):
        ...

    vjp(softmax, softmax_fwd, softmax_bwd)          # differentiable: torch/JAX adapters pick it up

and a fast path names the function(s) it serves (:class:`optnorm._lib.dispatch.Dispatcher`). From
these declarations come: the domain package's exports (:func:`export_domain`), argument validation
(:mod:`optnorm._lib.roles`, one layer, one wording), the torch and JAX adapters
(:mod:`optnorm._lib.ops`), the Dask path (``gufunc=``), the generated contract, VJP, API and GPU
test suites, the docs' API pages and capability table, and ``python -m optnorm info``.

``public`` options besides the roles:

``gufunc``    ``(signature, options)`` for :func:`optnorm._lib.dispatch.blockwise` (Dask arrays).
``example``   ``callable(rng, dtype) -> (args, kwargs)``: a valid call for the generated suites when the
              roles alone cannot build one (a divisibility constraint, a structured input).
``sizes``     sizes for named dims in the generated example (``{"n": 6}``).
``contract``  outcome overrides for the contract suite: ``{"x": {"huge": "error"}}`` per argument and
              perturbation label, or ``{"skip": "reason"}`` for a function the suite cannot call.
``name``      the public name when it differs from the Python name.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import types
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar, overload

import numpy as np

from . import compat
from .roles import Call, Role, same_library

__all__ = ["public", "public_class", "constant", "vjp", "check_arguments", "Function", "registry",
           "functions", "lookup", "export_domain", "public_modules", "DOMAINS"]

DOMAINS = ("norm", "ot", "spd", "optim")
_RESERVED = ("gufunc", "example", "sizes", "contract", "name")


@dataclass
class Function:
    """One public name of optnorm: a function, a class or a constant."""
    name: str                       # "norm.softmax"
    kind: str                       # "function", "class" or "constant"
    obj: Any                        # what users call: validated (and Dask-aware) function, class or value
    module: str
    body: Any = None                # the undecorated function
    roles: dict[str, Role] = field(default_factory=dict)
    gufunc: tuple | None = None
    example: Callable | None = None
    sizes: dict = field(default_factory=dict)
    contract: dict = field(default_factory=dict)
    op: Any = None                  # optnorm._lib.ops.Op when differentiable
    checker: Any = None             # the validation of its arguments (functions only)

    @property
    def domain(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


_REGISTRY: dict[str, Function] = {}
LEGACY: set[str] = set()
_BY_OBJ: dict[int, Function] = {}


def _domain_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "optnorm" or parts[1] not in DOMAINS:
        raise ValueError(f"public functions live in a domain package (optnorm.<{'|'.join(DOMAINS)}>), not {module}")
    return parts[1]


def _add(entry: Function) -> Function:
    prev = _REGISTRY.get(entry.name)
    if prev is not None and prev.module != entry.module:
        raise ValueError(f"{entry.name} is declared twice ({prev.module} and {entry.module})")
    for other in _REGISTRY.values():
        if other.short_name == entry.short_name and other.name != entry.name and other.kind == entry.kind == "function":
            raise ValueError(f"public name {entry.short_name!r} is used by {other.name} already (adapters look ops "
                             f"up by short name)")
    _REGISTRY[entry.name] = entry
    _BY_OBJ[id(entry.obj)] = entry
    if entry.body is not None:
        _BY_OBJ[id(entry.body)] = entry
    return entry


# --------------------------------------------------------------------------------------------- validation
class _Checker:
    """Runs the roles of one function over a call's arguments."""

    def __init__(self, qualname: str, sig: inspect.Signature, roles: dict[str, Role]):
        self.fn = qualname
        self.params = list(sig.parameters)
        self.roles = roles
        arrays = [p for p in self.params if roles[p].is_array]
        outs = [p for p in self.params if roles[p].is_out]
        rest = [p for p in self.params if p not in arrays and p not in outs]
        self.order = arrays + rest + outs
        self.arrays = arrays
        self.outs = outs

    def __call__(self, values: dict) -> tuple[dict, list | None]:
        call = Call(self.fn, values)
        roles = self.roles
        present = {p: values[p] for p in self.arrays if values[p] is not None and compat.is_array(values[p])}
        for o in self.outs:
            if values[o] is not None and compat.is_array(values[o]):
                present[o] = values[o]
        if present:
            call.xp = same_library(self.fn, present)
        for p in self.arrays:
            v = values[p]
            if v is not None and not compat.is_array(v):
                values[p] = roles[p].convert(v, p, call)
        for p in self.order:
            values[p] = roles[p].check(values[p], p, call)
        alias = None
        for o in self.outs:
            out = values[o]
            if out is None:
                continue
            for p in self.arrays:
                x = values[p]
                if x is None or not compat.is_array(x):
                    continue
                rel = compat.overlap(out, x)
                if rel == "same":
                    alias = (alias or []) + [o]
                elif rel == "partial":
                    raise ValueError(f"{self.fn}: {o} overlaps {p} in memory without being the same array: pass a "
                                     f"separate buffer (or {p} itself for an in-place result)")
        return values, alias


def _finish_alias(values: dict, alias: list, result):
    """The call ran into a temporary because ``out`` aliased an input: copy into the caller's ``out``."""
    outs = [values[o] for o in alias]
    if len(outs) == 1 and compat.is_array(result):
        return compat.copy_into(outs[0], result)
    if isinstance(result, tuple) and len(result) == len(outs):
        return tuple(compat.copy_into(o, r) for o, r in zip(outs, result))
    raise TypeError("out= aliasing an input is not supported for this function")


def _finish_alias_fwd(values: dict, alias: list, result):
    """:func:`_finish_alias` for a VJP forward, which returns ``(y, residuals)``."""
    y, res = result
    return _finish_alias(values, alias, y), res


def _wrap(fn: Callable, checker: _Checker, finish: Callable = _finish_alias) -> Callable:
    """A function with ``fn``'s exact signature that validates, then calls ``fn``."""
    sig = inspect.signature(fn)
    head, call_args, names = [], [], []
    seen_kwonly = False
    ns: dict[str, Any] = {"__check": checker, "__fn": fn, "__finish": finish, "__d": {}}
    last_posonly = max((i for i, p in enumerate(sig.parameters.values()) if p.kind == p.POSITIONAL_ONLY),
                       default=None)
    for i, p in enumerate(sig.parameters.values()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"{fn.__qualname__}: *args/**kwargs are not allowed in a public signature")
        if p.kind == p.KEYWORD_ONLY and not seen_kwonly:
            head.append("*")
            seen_kwonly = True
        txt = p.name
        if p.default is not p.empty:
            ns["__d"][p.name] = p.default
            txt += f"=__d[{p.name!r}]"
        head.append(txt)
        if last_posonly is not None and i == last_posonly:
            head.append("/")
        names.append(p.name)
        call_args.append(f"__v[{p.name!r}]" if p.kind != p.KEYWORD_ONLY else f"{p.name}=__v[{p.name!r}]")
    outs = checker.outs
    src = [f"def {fn.__name__}({', '.join(head)}):",
           f"    __v, __alias = __check({{{', '.join(f'{n!r}: {n}' for n in names)}}})",
           "    if __alias is None:",
           f"        return __fn({', '.join(call_args)})"]
    if outs:
        src += ["    __orig = dict(__v)",
                "    for __o in __alias:",
                "        __v[__o] = None",
                f"    return __finish(__orig, __alias, __fn({', '.join(call_args)}))"]
    else:
        src += ["    raise AssertionError('unreachable')"]
    exec("\n".join(src), ns)  # noqa: S102 - a generated signature-preserving wrapper, like functools.wraps
    w = ns[fn.__name__]
    functools.update_wrapper(w, fn)
    w.__signature__ = sig
    return w


# --------------------------------------------------------------------------------------------- declarations
_F = TypeVar("_F", bound=Callable[..., Any])
_C = TypeVar("_C", bound=type)


@overload
def public(fn: _F, /) -> _F: ...
@overload
def public(fn: None = None, /, **options: Any) -> Callable[[_F], _F]: ...


def public(fn: Callable | None = None, /, **options: Any) -> Any:
    """Declare a public function (see the module docstring); every parameter needs a role.

    The decorated function keeps its signature and annotations for type checkers."""
    meta = {k: options.pop(k) for k in _RESERVED if k in options}
    roles = options

    def deco(f):
        sig = inspect.signature(f)
        missing = [p for p in sig.parameters if p not in roles]
        extra = [r for r in roles if r not in sig.parameters]
        if missing or extra:
            raise TypeError(f"{f.__module__}.{f.__qualname__}: roles missing for {missing}, roles for unknown "
                            f"parameters {extra}")
        for r, role in roles.items():
            if not isinstance(role, Role):
                raise TypeError(f"{f.__qualname__}: the role of {r} must be a Role, got {role!r}")
        domain = _domain_of(f.__module__)
        name = f"{domain}.{meta.get('name', f.__name__)}"
        checker = _Checker(name.split(".", 1)[1], sig, roles)
        obj = _wrap(f, checker)
        gufunc = meta.get("gufunc")
        if gufunc is not None:
            from .dispatch import blockwise

            sig_text, opts = gufunc if isinstance(gufunc, tuple) else (gufunc, {})
            obj = blockwise(sig_text, **opts)(obj)
        obj.__optnorm_public__ = name
        _add(Function(name, "function", obj, f.__module__, body=f, roles=dict(roles), gufunc=gufunc,
                      example=meta.get("example"), sizes=dict(meta.get("sizes", {})),
                      contract=dict(meta.get("contract", {})), checker=checker))
        return obj

    return deco if fn is None else deco(fn)


def public_class(cls: _C | None = None, /, *, name: str | None = None) -> Any:
    """Declare a public class (a result object, a metric object, an optimizer rule class)."""

    def deco(c):
        domain = _domain_of(c.__module__)
        _add(Function(f"{domain}.{name or c.__name__}", "class", c, c.__module__))
        return c

    return deco if cls is None else deco(cls)


def constant(module: str, name: str, value: Any) -> Any:
    """Declare a public constant of a domain (``constant(__name__, "SELU_ALPHA", SELU_ALPHA)``)."""
    _add(Function(f"{_domain_of(module)}.{name}", "constant", value, module))
    return value


def check_arguments(where: str, roles: dict[str, Role], **values) -> dict:
    """Validate ``values`` by ``roles`` outside a declared function (methods of public classes, such as a metric
    object's ``distance``): the same layer and wording as a declared function's call, with ``where`` as the
    function's name in messages.  Returns the checked (and converted) values."""
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in roles]
    checker = _Checker(where, inspect.Signature(params), roles)
    if checker.outs:
        raise TypeError("check_arguments() does not handle out= roles")
    vals, _ = checker({n: values.get(n) for n in roles})
    return vals


def _checked(fn: Callable, impl: Callable) -> Callable:
    """``impl`` (a ``fwd`` returning ``(y, residuals)``) behind the argument validation of the declared public
    function ``fn``: what ``vjp(fn, fwd, bwd, validate=True)`` registers.  ``impl`` must have ``fn``'s
    parameters (names, kinds, defaults); an ``out=`` aliasing an input is handled on ``y`` as the public
    function handles it."""
    entry = lookup(fn)
    if entry is None:
        raise ValueError(f"{getattr(fn, '__qualname__', fn)} is not a declared public function: add @public first")
    want = inspect.signature(entry.body)
    got = inspect.signature(impl)
    if [(p.name, p.kind, p.default) for p in want.parameters.values()] != \
            [(p.name, p.kind, p.default) for p in got.parameters.values()]:
        raise TypeError(f"{impl.__qualname__} must have the parameters of {entry.name}: {want} (got {got})")
    return _wrap(impl, _Checker(entry.name.split(".", 1)[1], want, entry.roles), _finish_alias_fwd)


def vjp(fn: Callable, fwd: Callable, bwd: Callable, *, nondiff_argnums: tuple[int, ...] = (),
        skip_check_argnums: tuple[int, ...] = (), validate: bool = False):
    """Make a declared public function differentiable: ``fwd``/``bwd`` in JAX's ``custom_vjp`` convention
    (see :mod:`optnorm._lib.ops`); the torch and JAX adapters then offer it.

    ``validate=True`` runs the function's roles on every call of ``fwd`` too (the adapters call ``fwd``
    directly when a gradient is needed), so a ``fwd`` written against validated arguments (normalised
    axes, lists read as arrays, ``out=`` aliasing handled) need not call the public function; this is the
    one way to give an op's forward its function's checks.  ``fwd`` must then have exactly the public
    function's parameters.  A ``fwd`` that calls the public function itself needs no ``validate``."""
    entry = lookup(fn)
    if entry is None:
        raise ValueError(f"{getattr(fn, '__qualname__', fn)} is not a declared public function: add @public first")
    from . import ops

    if validate:
        fwd = _checked(fn, fwd)

    entry.op = ops.register(entry.name, entry.obj, fwd, bwd, nondiff_argnums=nondiff_argnums,
                            skip_check_argnums=skip_check_argnums)
    return entry.op


# --------------------------------------------------------------------------------------------- queries
def load_domains() -> None:
    for d in DOMAINS:
        importlib.import_module(f"optnorm.{d}")


def registry() -> dict[str, Function]:
    """Every public name (imports the domain packages first)."""
    load_domains()
    return dict(_REGISTRY)


def functions(domain: str | None = None, *, kind: str | None = "function") -> list[Function]:
    """Declared entries of one domain (or all), in declaration order."""
    return [f for f in registry().values() if (domain is None or f.domain == domain)
            and (kind is None or f.kind == kind)]


def lookup(obj_or_name: Any) -> Function | None:
    """The declaration of a public callable (or of ``"domain.name"``), or None."""
    if isinstance(obj_or_name, str):
        return _REGISTRY.get(obj_or_name)
    return _BY_OBJ.get(id(obj_or_name))


def public_modules(package: str) -> list[str]:
    """Names of the public modules of a domain package, subpackages included (``optnorm.norm.attention.soft``);
    names with a component starting with ``_`` are private."""
    pkg = importlib.import_module(package)
    return [info.name for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}.")
            if not any(part.startswith("_") for part in info.name[len(package) + 1:].split("."))]


def export_domain(namespace: dict, package: str) -> list[str]:
    """Import every module of a domain package and put its declared public names into ``namespace``.

    Returns the domain's ``__all__``.  No hand-written list: a new module is found by its file (in a
    subpackage too), a new function by its declaration.
    """
    mods = [importlib.import_module(name) for name in public_modules(package)]
    domain = package.rsplit(".", 1)[-1]
    names = []
    # transitional: names a module still lists in __all__ without a declaration (LEGACY; a test counts them)
    for mod in mods:
        for n in getattr(mod, "__all__", ()):
            if f"{domain}.{n}" not in _REGISTRY:
                namespace[n] = getattr(mod, n)
                names.append(n)
                LEGACY.add(f"{domain}.{n}")
    for entry in list(_REGISTRY.values()):
        if entry.domain != domain:
            continue
        prev = namespace.get(entry.short_name)
        if isinstance(prev, types.ModuleType) and prev.__name__ != f"{package}.{entry.short_name}":
            raise ImportError(f"{package}: public name {entry.short_name!r} clashes with module {prev.__name__}")
        namespace[entry.short_name] = entry.obj
        names.append(entry.short_name)
    return names
