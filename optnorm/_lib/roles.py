"""Argument roles: what each parameter of a public function *is*, checked by one validation layer.

A public function declares a role for every parameter next to its signature
(:func:`optnorm._lib.api.public`)::

    @public(x=Float("... n"), axis=Axis("x"), method=Choice(METHODS), out=Out("x"))
    def softmax(x, *, axis=-1, method="safe", out=None): ...

The declaration drives three things, so they cannot drift apart:

1. validation of every call (:class:`Call` runs the roles' :meth:`Role.check`), with one wording for
   every function: the error names the argument, what was expected and what was given;
2. the generated contract suite (``tests/test_contract.py``): :meth:`Role.example` builds a valid
   input, :meth:`Role.perturbations` the bad, extreme and aliased ones with the outcome each must have;
3. the documentation of argument kinds.

Shape specs name dimensions: ``"n d"`` is a matrix whose dims are called ``n`` and ``d``; the same
name in two arguments must have the same size (``X="n d", Y="m d"``: point clouds of one dimension).
``"..."`` as the first token allows any number of leading batch dimensions, ``"[b]"`` an optional
leading dimension, ``"*"`` any size, a number that exact size.

Checks that read the data (finiteness, symmetry, definiteness, sums) run only on concrete arrays
(:func:`optnorm._lib.compat.is_concrete`): under ``jax.jit`` they are skipped.
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from . import compat

__all__ = [
    "Role", "Call", "same_library", "Outcome", "Perturbation", "Array", "Float", "Weights", "Cost", "SPD", "Symmetric", "Labels",
    "Mask", "Scalar", "Positive", "NonNegative", "Probability", "UnitInterval", "Int", "Bool", "Choice", "Axis",
    "Seed", "Out", "Callback", "Option", "Scalars", "parse_spec", "float_kind",
]

# default sizes the contract suite gives named dimensions: distinct, so a mismatch cannot hide
DEFAULT_SIZES = {"n": 5, "m": 4, "d": 3, "k": 2, "c": 3, "b": 2, "l": 6, "s": 7, "h": 2, "e": 3, "v": 6, "p": 4,
                 "t": 8, "g": 2, "r": 2, "q": 3, "o": 3, "f": 4}


# --------------------------------------------------------------------------------------------- outcomes
class Outcome:
    """What a perturbed call must do (the contract suite checks it)."""
    ERROR = "error"      # ValueError/TypeError whose message names the argument
    FINITE = "finite"    # returns, and every floating output is finite
    SAME = "same"        # returns the same values as the unperturbed call
    SAME_OR_ERROR = "same_or_error"      # correct result, or a clear refusal naming the argument
    FINITE_OR_ERROR = "finite_or_error"  # finite result, or a clear refusal naming the argument
    OK = "ok"            # returns without an exception (values unspecified: NaN propagation)


@dataclass(frozen=True)
class Perturbation:
    label: str                       # e.g. "int dtype", "nan", "fortran"
    make: Callable[[Any, np.random.Generator], Any]  # valid value -> perturbed value
    outcome: str


# --------------------------------------------------------------------------------------------- shape specs
_TOKEN = re.compile(r"^(\.\.\.|\*|\d+|\[[A-Za-z_]\w*\]|[A-Za-z_]\w*)$")


@dataclass(frozen=True)
class Spec:
    ellipsis: bool
    optional: tuple[str, ...]        # names of optional leading dims, outermost first
    dims: tuple[str | int, ...]      # required dims: names, sizes, or "*"

    @property
    def min_ndim(self) -> int:
        return len(self.dims)

    @property
    def max_ndim(self) -> int | None:
        return None if self.ellipsis else len(self.dims) + len(self.optional)

    def text(self) -> str:
        parts = (["..."] if self.ellipsis else []) + [f"[{o}]" for o in self.optional] + [str(d) for d in self.dims]
        return " ".join(parts) or "()"


def parse_spec(spec: str | None) -> Spec | None:
    if spec is None:
        return None
    toks = spec.split()
    ell = False
    opt: list[str] = []
    dims: list[str | int] = []
    for i, t in enumerate(toks):
        if not _TOKEN.match(t):
            raise ValueError(f"bad shape spec token {t!r} in {spec!r}")
        if t == "...":
            if i != 0:
                raise ValueError(f"'...' must come first in a shape spec: {spec!r}")
            ell = True
        elif t.startswith("["):
            if dims:
                raise ValueError(f"optional dims come before required ones: {spec!r}")
            opt.append(t[1:-1])
        else:
            dims.append(int(t) if t.isdigit() else t)
    return Spec(ell, tuple(opt), tuple(dims))


# --------------------------------------------------------------------------------------------- call context
class Call:
    """Per-call validation state: the function's name, the arrays' namespace, the sizes of named dims."""

    __slots__ = ("fn", "xp", "dims", "values", "batch")

    def __init__(self, fn: str, values: dict):
        self.fn = fn
        self.xp = None
        self.dims: dict[str, tuple[int, str]] = {}
        self.values = values     # the bound arguments (already validated ones replaced)
        self.batch: list[tuple[str, tuple]] = []

    def error(self, cls, msg: str):
        return cls(f"{self.fn}: {msg}")

    def bind_dim(self, dim: str, size: int, name: str, shape) -> None:
        prev = self.dims.get(dim)
        if prev is None:
            self.dims[dim] = (size, name)
        elif prev[0] != size and prev[1] == name:
            raise self.error(ValueError, f"{name} has shape {tuple(shape)}, but its dimensions named {dim!r} "
                                         f"must have equal sizes (it must be square)")
        elif prev[0] != size:
            raise self.error(ValueError, f"{name} has shape {tuple(shape)}, whose dimension {dim!r} is {size}, but "
                                         f"{prev[1]} has {dim} = {prev[0]}")


def same_library(where: str, arrays: dict):
    """The namespace of ``arrays`` (name -> array); ``TypeError`` naming each argument's library when they mix."""
    if all(type(v) is np.ndarray for v in arrays.values()):
        return compat.array_namespace(*arrays.values())
    kinds = {p: compat.backend_name(v) for p, v in arrays.items()}
    if len(set(kinds.values())) > 1:
        desc = ", ".join(f"{p} is {k}" for p, k in kinds.items())
        raise TypeError(f"{where}: arrays from different libraries were mixed ({desc}): convert them to one library "
                        f"first")
    return compat.array_namespace(*arrays.values())


def float_kind(x) -> bool:
    """Real floating dtype (float16, bfloat16, float32, float64) in any library."""
    return compat.is_floating(x)


def _dtype_name(x) -> str:
    return compat.dtype_name(x.dtype)


def _data(x):
    """(host-or-device array, namespace) to read values with: JAX to host NumPy, torch detached."""
    if compat.is_jax(x):
        a = compat.to_numpy(x)
        return a, compat.array_namespace(a)
    if compat.is_torch(x):
        x = x.detach()
    return x, compat.array_namespace(x)


# --------------------------------------------------------------------------------------------- roles
class Role:
    """Base class: a role checks (and may convert) one argument, and describes its contract cases."""

    optional: bool = False
    is_array: bool = False
    is_out: bool = False
    _doc = "value"

    @property
    def doc(self) -> str:
        """What the argument is, in a few words (error messages, documentation)."""
        return self._doc

    def convert(self, value, name: str, call: Call):
        """Read a non-array value (a Python list) as an array: array roles only."""
        raise call.error(TypeError, f"{name} must be an array, got {type(value).__name__}")

    def check(self, value, name: str, call: Call):
        return value

    def example(self, call_sizes: dict, rng: np.random.Generator, dtype) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no generated example: declare example= on the function")

    def perturbations(self, value) -> list[Perturbation]:
        return []


# ------------------------------------------------------------------ arrays
_INT_KINDS = ("signed integer", "unsigned integer")


class Array(Role):
    """An array argument.

    Parameters: ``spec`` shape spec (see module doc); ``dtype`` one of ``"float"``, ``"int"``,
    ``"bool"``, ``"any"``, ``"number"`` (int or float); ``finite`` rejects NaN/inf (otherwise they
    propagate as in NumPy); ``empty`` allows zero-size arrays; ``optional`` allows ``None``;
    ``same_dtype`` names another argument whose dtype this one must have; ``sign`` ``"positive"``
    (every entry > 0: scales, variances, temperatures) or ``"nonnegative"`` (>= 0); NaN entries are
    left to ``finite``.

    ``gate`` names a Bool parameter of the function (``check``): when a call passes ``False`` the
    checks that read values (finiteness, symmetry, definiteness, sums) are skipped, the function's
    documented escape from a host round trip (GPU arrays, hot loops); shape and dtype are still
    checked.  ``excludes`` names an argument this one replaces (``precision`` instead of ``cov``):
    passing both is refused, and the contract suite drops the other when it fills this one in.
    """

    is_array = True

    def __init__(self, spec: str | None = None, *, dtype: str = "float", finite: bool = False, empty: bool = False,
                 optional: bool = False, same_dtype: str | None = None, min_ndim: int | None = None,
                 max_ndim: int | None = None, lists: bool = True, gate: str | None = None,
                 excludes: str | None = None, sign: str | None = None):
        if sign not in (None, "positive", "nonnegative"):
            raise ValueError(f"sign must be None, 'positive' or 'nonnegative', got {sign!r}")
        self.sign = sign
        self.spec = parse_spec(spec)
        self.gate = gate
        self.excludes = excludes
        self.dtype = dtype
        self.finite = finite
        self.empty = empty
        self.optional = optional
        self.same_dtype = same_dtype
        self._min = min_ndim if min_ndim is not None else (self.spec.min_ndim if self.spec else 0)
        self._max = max_ndim if max_ndim is not None else (self.spec.max_ndim if self.spec else None)
        self.lists = lists

    # ---- description
    @property
    def doc(self) -> str:
        shape = f" of shape ({self.spec.text()})" if self.spec else ""
        return f"{self.dtype} array{shape}"

    # ---- conversion of Python lists / scalars (NumPy would accept them)
    def convert(self, value, name: str, call: Call):
        if compat.is_array(value):
            return value
        if not self.lists or not isinstance(value, (list, tuple, numbers.Number, np.generic)) \
                or isinstance(value, bool) and self.dtype == "float":
            raise call.error(TypeError, f"{name} must be an array (NumPy, CuPy, torch, JAX or any Array-API "
                                        f"array), got {type(value).__name__}")
        xp = call.xp or compat.array_namespace(np.empty(0))
        try:
            host = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise call.error(TypeError, f"{name} could not be read as an array: {exc}") from None
        if host.dtype == object:
            raise call.error(TypeError, f"{name} could not be read as an array (ragged or non-numeric list)")
        if self.dtype == "float" and host.dtype.kind in "iub":
            host = host.astype(self._list_float(call))
        elif self.dtype == "float" and host.dtype.kind == "f":
            host = host.astype(self._list_float(call))
        return compat.asarray_like(host, call.values, xp)

    def _list_float(self, call: Call):
        for v in call.values.values():
            if compat.is_array(v) and compat.is_floating(v):
                return np.dtype(_dtype_name(v)) if _dtype_name(v) in ("float32", "float64") else np.float32
        return np.float64

    def check(self, value, name: str, call: Call):
        if value is None:
            if self.optional:
                return None
            raise call.error(TypeError, f"{name} is required, got None")
        x = value
        if self.excludes is not None and call.values.get(self.excludes) is not None:
            raise call.error(ValueError, f"pass {name} or {self.excludes}, not both")
        self._check_dtype(x, name, call)
        self._check_shape(x, name, call)
        if self.finite and self.reads_values(call):
            check_finite(x, name, call)
        if self.sign is not None and self.reads_values(call):
            check_sign(x, name, call, self.sign)
        if self.same_dtype is not None:
            other = call.values.get(self.same_dtype)
            if other is not None and compat.is_array(other) and other.dtype != x.dtype:
                raise call.error(TypeError, f"{name} has dtype {_dtype_name(x)} but {self.same_dtype} has "
                                            f"{_dtype_name(other)}: they must match")
        return x

    def reads_values(self, call: Call) -> bool:
        """False when the call turned the value checks off through the ``gate`` parameter."""
        if self.gate is None:
            return True
        flag = call.values.get(self.gate, True)
        return not (flag is False or isinstance(flag, np.bool_) and not flag)

    def _check_dtype(self, x, name, call):
        want = self.dtype
        if want == "any":
            return
        dn = _dtype_name(x)
        if want == "float":
            ok = compat.is_floating(x)
            expect = "a real floating dtype (float16/bfloat16/float32/float64)"
        elif want == "int":
            ok = "int" in dn and "bool" not in dn
            expect = "an integer dtype"
        elif want == "bool":
            ok = dn == "bool"
            expect = "a boolean dtype"
        elif want == "number":
            ok = compat.is_floating(x) or ("int" in dn and "bool" not in dn)
            expect = "a real integer or floating dtype"
        else:  # pragma: no cover - declaration error
            raise ValueError(f"unknown dtype kind {want!r}")
        if not ok:
            raise call.error(TypeError, f"{name} must have {expect}, got {dn}")

    def _check_shape(self, x, name, call):
        shape = tuple(x.shape)
        nd = len(shape)
        if nd < self._min or (self._max is not None and nd > self._max):
            want = f"({self.spec.text()})" if self.spec else (
                f"{self._min}..{self._max} dimensions" if self._max is not None else f">= {self._min} dimensions")
            raise call.error(ValueError, f"{name} must have shape {want}, got shape {shape} ({nd}-d)")
        if not self.empty and 0 in shape:
            raise call.error(ValueError, f"{name} is empty (shape {shape})")
        sp = self.spec
        if sp is None:
            return
        core = shape[nd - len(sp.dims):] if sp.dims else ()
        lead = shape[:nd - len(sp.dims)]
        for d, s in zip(sp.dims, core):
            if isinstance(d, int):
                if s != d:
                    raise call.error(ValueError, f"{name} must have shape ({sp.text()}), got shape {shape}")
            elif d != "*":
                call.bind_dim(d, s, name, shape)
        if sp.optional and not sp.ellipsis:
            present = sp.optional[len(sp.optional) - len(lead):]
            for d, s in zip(present, lead):
                call.bind_dim(d, s, name, shape)
        elif sp.ellipsis and lead:
            for other, olead in call.batch:
                try:
                    np.broadcast_shapes(olead, lead)
                except ValueError:
                    raise call.error(ValueError, f"the batch dimensions of {name} {lead} and of {other} {olead} do "
                                                 f"not broadcast") from None
            call.batch.append((name, lead))

    # ---- contract
    def example(self, sizes, rng, dtype):
        shape = self.example_shape(sizes)
        if self.sign is not None and self.dtype in ("float", "number", "any"):
            return (0.5 + np.abs(rng.standard_normal(shape))).astype(dtype)
        if self.dtype in ("float", "number", "any"):
            return rng.standard_normal(shape).astype(dtype)
        if self.dtype == "int":
            return rng.integers(0, 2, size=shape)
        return rng.random(shape) < 0.5

    def example_shape(self, sizes) -> tuple:
        if self.spec is None:
            nd = max(self._min, min(2, self._max) if self._max is not None else 2)
            return tuple(sizes.get("_shape", (3, 5, 4, 2, 2, 2)[:nd]))
        sp = self.spec
        lead = tuple(sizes[o] for o in sp.optional if o in sizes)  # optional dims: absent unless asked for
        if sp.ellipsis:
            lead = tuple(sizes.get("...", (2,))) + lead
        core = tuple(d if isinstance(d, int) else (sizes.get(d, DEFAULT_SIZES.get(d, 3)) if d != "*" else 3)
                     for d in sp.dims)
        return lead + core

    def perturbations(self, value) -> list[Perturbation]:
        P, O = Perturbation, Outcome
        out: list[Perturbation] = []
        if self.dtype == "float":
            out += [P("int dtype", lambda v, r: np.round(np.asarray(v) * 3).astype(np.int64), O.ERROR),
                    P("bool dtype", lambda v, r: np.asarray(v) > 0, O.ERROR),
                    P("complex dtype", lambda v, r: np.asarray(v).astype(np.complex128), O.ERROR)]
        elif self.dtype == "int":
            out += [P("float dtype", lambda v, r: np.asarray(v).astype(np.float64), O.ERROR)]
        nd = np.ndim(value)
        if self._min >= 1:
            out.append(P("0-d", lambda v, r: np.asarray(v).reshape(-1)[:1].reshape(()), O.ERROR))
        if self._max is not None:
            # enough leading dims to exceed the maximum rank (an example without its optional "[b]" dim would
            # otherwise become a valid batch)
            k = max(1, self._max + 1 - nd)
            def extra(v, r, k=k):
                return np.broadcast_to(np.asarray(v), (2,) * k + np.shape(v)).copy()

            out.append(P("extra dimension", extra, O.ERROR))
        if nd >= 1 and not self.empty:
            out.append(P("empty", lambda v, r: np.asarray(v)[..., :0], O.ERROR))
        if self.dtype == "float" and nd >= 1:
            bad = O.ERROR if self.finite else O.OK
            out += [P("nan", lambda v, r: _poke(v, np.nan), bad),
                    P("+inf", lambda v, r: _poke(v, np.inf), bad),
                    P("-inf", lambda v, r: _poke(v, -np.inf), bad),
                    P("huge", lambda v, r: _scaled(v, "huge"), O.FINITE_OR_ERROR),
                    P("tiny", lambda v, r: _scaled(v, "tiny"), O.FINITE_OR_ERROR)]
        if self.sign is not None and nd >= 1:
            out.append(P("negative entry", lambda v, r: _poke(v, -0.5), O.ERROR))
            if self.sign == "positive":
                out.append(P("zero entry", lambda v, r: _poke(v, 0.0), O.ERROR))
        if nd >= 1:
            out += [P("python list", lambda v, r: np.asarray(v).tolist(), O.SAME),
                    P("read-only", lambda v, r: _readonly(v), O.SAME)]
        if nd >= 2:
            out += [P("fortran order", lambda v, r: np.asfortranarray(v), O.SAME),
                    P("non-contiguous", lambda v, r: _strided(v), O.SAME),
                    P("negative strides", lambda v, r: _reversed_view(v), O.SAME)]
        return out


def _poke(v, val):
    a = np.array(v, copy=True)
    a.reshape(-1)[a.size // 2] = val
    return a


def _scaled(v, which):
    a = np.asarray(v)
    big = {np.dtype(np.float32): 1e30, np.dtype(np.float64): 1e300, np.dtype(np.float16): 1e4}.get(a.dtype, 1e30)
    tiny = {np.dtype(np.float32): 1e-30, np.dtype(np.float64): 1e-300, np.dtype(np.float16): 1e-4}.get(a.dtype, 1e-30)
    return (a * (big if which == "huge" else tiny)).astype(a.dtype)


def _readonly(v):
    a = np.array(v, copy=True)
    a.flags.writeable = False
    return a


def _strided(v):
    a = np.asarray(v)
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def _reversed_view(v):
    a = np.asarray(v)
    return np.ascontiguousarray(a[..., ::-1])[..., ::-1]


def check_finite(x, name: str, call: Call):
    if x is None or not compat.is_concrete(x):
        return x
    a, xp = _data(x)
    if compat.size(a) and not bool(xp.all(xp.isfinite(a))):
        raise call.error(ValueError, f"{name} contains NaN or inf")
    return x


def check_sign(x, name: str, call: Call, sign: str):
    if x is None or not compat.is_concrete(x) or not compat.size(x):
        return x
    a = compat.to_numpy(x)
    bad = a <= 0 if sign == "positive" else a < 0  # NaN compares False: left to the finite check
    if bad.any():
        want = "> 0" if sign == "positive" else ">= 0"
        raise call.error(ValueError, f"{name} must be {want} everywhere; it has the entry {float(a[bad].min()):.6g}")
    return x


class Float(Array):
    """A real floating array (float16/bfloat16/float32/float64)."""

    def __init__(self, spec: str | None = None, **kw):
        kw.setdefault("dtype", "float")
        super().__init__(spec, **kw)


class Cost(Float):
    """A cost matrix: finite floats, shape ``(n, m)`` or a batch ``(b, n, m)`` by default."""

    def __init__(self, spec: str = "[b] n m", **kw):
        kw.setdefault("finite", True)
        super().__init__(spec, **kw)

    @property
    def doc(self):
        return f"cost matrix of shape ({self.spec.text()})"

    def example(self, sizes, rng, dtype):
        return rng.random(self.example_shape(sizes)).astype(dtype)


class Weights(Float):
    """Probability weights: non-negative, finite, positive total.

    ``normalized=True`` requires a sum of one along the last axis (within a tolerance that grows
    with the length); ``False`` accepts any positive total (the function normalises or uses masses).
    ``None`` means uniform when ``optional``.
    """

    def __init__(self, spec: str = "n", *, normalized: bool = True, **kw):
        kw.setdefault("finite", True)
        super().__init__(spec, **kw)
        self.normalized = normalized

    @property
    def doc(self):
        return f"weights of shape ({self.spec.text()})" + (", summing to 1" if self.normalized else "")

    def check(self, value, name, call):
        w = super().check(value, name, call)
        if w is None or not compat.is_concrete(w) or not self.reads_values(call):
            return w
        a, xp = _data(w)
        if not compat.size(a):
            return w
        mn = float(xp.min(a))
        if mn < 0:
            raise call.error(ValueError, f"{name} must be non-negative; its smallest entry is {mn:.6g}")
        s = xp.sum(xp.astype(a, xp.float64) if hasattr(xp, "float64") else a, axis=-1)
        if self.normalized:
            n = a.shape[-1]
            tol = max(1e-6, 100 * float(np.finfo(_dtype_name(a) if _dtype_name(a) in ("float32", "float64")
                                                  else "float32").eps)) * max(n, 1) ** 0.5
            dev = float(xp.max(xp.abs(s - 1)))
            if dev > tol:
                raise call.error(ValueError, f"{name} must sum to 1 along its last axis; it is off by up to {dev:.3g}")
        elif float(xp.min(s)) <= 0:
            raise call.error(ValueError, f"{name} must have a positive total mass")
        return w

    def example(self, sizes, rng, dtype):
        w = rng.random(self.example_shape(sizes)) + 0.1
        return (w / w.sum(-1, keepdims=True)).astype(dtype)

    def perturbations(self, value):
        P, O = Perturbation, Outcome
        out = [p for p in super().perturbations(value) if p.label not in ("huge", "tiny")]
        out.append(P("negative entry", lambda v, r: _poke(v, -0.5), O.ERROR))
        if self.normalized:
            out.append(P("not normalised", lambda v, r: np.asarray(v) * 3, O.ERROR))
        out.append(P("all zero", lambda v, r: np.zeros_like(np.asarray(v)), O.ERROR))
        return out


class Symmetric(Float):
    """A symmetric matrix or stack ``(..., n, n)`` (tolerance: 100 eps times the largest entry)."""

    def __init__(self, spec: str = "... n n", **kw):
        kw.setdefault("finite", True)
        super().__init__(spec, **kw)

    def check(self, value, name, call):
        x = super().check(value, name, call)
        if x is None:
            return x
        if x.shape[-1] != x.shape[-2]:
            raise call.error(ValueError, f"{name} has shape {tuple(x.shape)}, but it must be square (shape (..., n, n))")
        if compat.is_concrete(x) and compat.size(x) and self.reads_values(call):
            a = _host64(x)
            d = a - np.swapaxes(a, -1, -2)          # one temporary: this check runs on every call
            np.abs(d, out=d)
            err = float(d.max())
            scale = float(max(a.max(), -a.min()))
            tol = 100 * float(np.finfo(_dtype_name(x) if _dtype_name(x) in ("float32", "float64") else "float32").eps)
            if err > tol * max(scale, 1e-300):
                raise call.error(ValueError, f"{name} is not symmetric: max |A - A^T| = {err:.3g} "
                                             f"(tolerance {tol * scale:.3g})")
        return x

    def example(self, sizes, rng, dtype):
        a = rng.standard_normal(self.example_shape(sizes))
        return ((a + np.swapaxes(a, -1, -2)) / 2).astype(dtype)

    def perturbations(self, value):
        P, O = Perturbation, Outcome
        out = [p for p in super().perturbations(value)
               if p.label not in ("nan", "+inf", "-inf", "python list", "non-contiguous", "negative strides",
                                  "extra dimension") or p.outcome == O.ERROR]
        out.append(P("not symmetric", lambda v, r: _asym(v), O.ERROR))
        out.append(P("not square", lambda v, r: np.asarray(v)[..., :-1], O.ERROR))
        out.append(P("python list", lambda v, r: np.asarray(v).tolist(), O.SAME))
        return out


def _host64(x):
    """The values of ``x`` as a float64 host NumPy array (no copy for float64 NumPy input)."""
    a = compat.to_numpy(x)
    return a if a.dtype == np.float64 else a.astype(np.float64)


def _asym(v):
    a = np.array(v, copy=True)
    a[..., 0, -1] += 1.0 + abs(a[..., 0, -1])
    return a


class SPD(Symmetric):
    """A symmetric positive definite matrix or stack (``psd=True``: semi-definite allowed).

    Decided by a float64 Cholesky on the host (one factorisation per matrix); the error reports the
    smallest eigenvalue.
    """

    def __init__(self, spec: str = "... n n", *, psd: bool = False, **kw):
        super().__init__(spec, **kw)
        self.psd = psd

    @property
    def doc(self):
        return ("symmetric positive semi-definite" if self.psd else "symmetric positive definite") + \
            f" matrix of shape ({self.spec.text()})"

    def check(self, value, name, call):
        x = super().check(value, name, call)
        if x is None or not compat.is_concrete(x) or not compat.size(x) or not self.reads_values(call):
            return x
        a = _host64(x)
        if not self.psd:
            try:
                np.linalg.cholesky(a)    # reads the lower triangle: symmetry was checked above, no copy needed
                return x
            except np.linalg.LinAlgError:
                pass
            lo = float(np.linalg.eigvalsh(0.5 * (a + np.swapaxes(a, -1, -2))).min())
            raise call.error(ValueError, f"{name} must be positive definite; its smallest eigenvalue is {lo:.6g}")
        ev = np.linalg.eigvalsh(0.5 * (a + np.swapaxes(a, -1, -2)))
        tol = 1e3 * np.finfo(np.float32 if _dtype_name(x) != "float64" else np.float64).eps * \
            np.maximum(np.abs(ev).max(-1), 1e-300)
        if np.any(ev.min(-1) < -tol):
            raise call.error(ValueError, f"{name} must be positive semi-definite; its smallest eigenvalue is "
                                         f"{float(ev.min()):.6g}")
        return x

    def example(self, sizes, rng, dtype):
        shape = self.example_shape(sizes)
        n = shape[-1]
        a = rng.standard_normal(shape[:-1] + (2 * n,))
        s = a @ np.swapaxes(a, -1, -2) / (2 * n) + 0.5 * np.eye(n)
        return s.astype(dtype)

    def perturbations(self, value):
        P, O = Perturbation, Outcome
        out = super().perturbations(value)
        out.append(P("indefinite", lambda v, r: _shift(v, -10.0), O.ERROR))
        if not self.psd:
            out.append(P("singular", lambda v, r: _singular(v), O.ERROR))
        out.append(P("cond 1e12", lambda v, r: _illcond(v, 1e12), O.FINITE_OR_ERROR))
        return out


def _shift(v, s):
    a = np.array(v, dtype=np.asarray(v).dtype, copy=True)
    n = a.shape[-1]
    return (a + s * np.abs(a).max() * np.eye(n)).astype(a.dtype)


def _singular(v):
    a = np.asarray(v)
    n = a.shape[-1]
    u = np.ones(a.shape[:-1] + (1,)) / np.sqrt(n)
    return np.broadcast_to(u @ np.swapaxes(u, -1, -2), a.shape).astype(a.dtype).copy()


def _illcond(v, cond):
    a = np.asarray(v)
    n = a.shape[-1]
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((n, n)))
    ev = np.logspace(0, -np.log10(cond), n)
    m = (q * ev) @ q.T
    return np.broadcast_to(m, a.shape).astype(a.dtype).copy()


class Labels(Array):
    """Integer class labels in ``[0, classes)``; ``classes`` names a dim (or another argument's axis size);
    ``ignore`` is a value that is skipped (``ignore_index``)."""

    def __init__(self, spec: str | None = None, *, classes: str | None = None, ignore: str | int | None = None,
                 **kw):
        kw.setdefault("dtype", "int")
        super().__init__(spec, **kw)
        self.classes = classes
        self.ignore = ignore

    @property
    def doc(self):
        return "integer labels" + (f" in [0, {self.classes})" if self.classes else "")

    def check(self, value, name, call):
        x = super().check(value, name, call)
        if x is None or not compat.is_concrete(x) or not compat.size(x) or self.classes is None:
            return x
        k = call.dims.get(self.classes, (None,))[0]
        if k is None:
            return x
        a = compat.to_numpy(x)
        ign = call.values.get(self.ignore) if isinstance(self.ignore, str) else self.ignore
        if ign is not None:
            a = a[a != ign]
        if a.size and (a.min() < 0 or a.max() >= k):
            bad = int(a.min()) if a.min() < 0 else int(a.max())
            raise call.error(ValueError, f"{name} has label {bad}, outside [0, {k})")
        return x

    def example(self, sizes, rng, dtype):
        k = sizes.get(self.classes, DEFAULT_SIZES.get(self.classes, 3)) if self.classes else 2
        return rng.integers(0, k, size=self.example_shape(sizes))

    def perturbations(self, value):
        P, O = Perturbation, Outcome
        out = [p for p in super().perturbations(value) if p.label != "python list"]
        if self.classes:
            out.append(P("label out of range", lambda v, r: _poke_int(v, 10 ** 6), O.ERROR))
            out.append(P("negative label", lambda v, r: _poke_int(v, -7), O.ERROR))
        return out


def _poke_int(v, val):
    a = np.array(v, copy=True)
    a.reshape(-1)[0] = val
    return a


class Mask(Array):
    """A boolean mask (``additive=True`` also accepts a float mask added to scores)."""

    def __init__(self, spec: str | None = None, *, additive: bool = False, **kw):
        kw.setdefault("dtype", "any" if additive else "bool")
        kw.setdefault("optional", True)
        super().__init__(spec, **kw)


# ------------------------------------------------------------------ scalars and options
class Scalar(Role):
    """A real number in a range. ``low``/``high`` bounds (``low_open``/``high_open`` exclude them);
    ``finite`` rejects inf; ``schedule`` also accepts a callable of the step; ``array`` also accepts a
    0-d array (its value is checked when concrete); ``optional`` accepts None."""

    def __init__(self, low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False, finite: bool = True, schedule: bool = False, array: bool = False,
                 optional: bool = False, integer: bool = False):
        self.low, self.high = low, high
        self.low_open, self.high_open = low_open, high_open
        self.finite = finite
        self.schedule = schedule
        self.array = array
        self.optional = optional
        self.integer = integer

    @property
    def doc(self):
        lo = "-inf" if self.low is None else repr(self.low)
        hi = "inf" if self.high is None else repr(self.high)
        lb = "(" if self.low_open or self.low is None else "["
        rb = ")" if self.high_open or self.high is None else "]"
        return f"{'int' if self.integer else 'number'} in {lb}{lo}, {hi}{rb}"

    def check(self, value, name, call):
        if value is None:
            if self.optional:
                return None
            raise call.error(TypeError, f"{name} is required, got None")
        if self.schedule and callable(value) and not compat.is_array(value):
            return value
        if compat.is_array(value) and not isinstance(value, np.generic):
            if not self.array:
                raise call.error(TypeError, f"{name} must be a Python number, got an array")
            if getattr(value, "ndim", 0) != 0:
                raise call.error(ValueError, f"{name} must be a scalar (0-d), got shape {tuple(value.shape)}")
            if not compat.is_concrete(value):
                return value
            v = float(compat.to_numpy(value))
            self._range(v, value, name, call)
            return value
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise call.error(TypeError, f"{name} must be a real number, got {type(value).__name__}")
        if self.integer and not isinstance(value, numbers.Integral):
            raise call.error(TypeError, f"{name} must be an int, got {type(value).__name__}")
        v = float(value)
        self._range(v, value, name, call)
        return int(value) if self.integer else value

    def _range(self, v, value, name, call):
        if math.isnan(v):
            raise call.error(ValueError, f"{name} must not be NaN")
        if self.finite and math.isinf(v):
            raise call.error(ValueError, f"{name} must be finite, got {value}")
        lo_bad = self.low is not None and (v <= self.low if self.low_open else v < self.low)
        hi_bad = self.high is not None and (v >= self.high if self.high_open else v > self.high)
        if lo_bad or hi_bad:
            raise call.error(ValueError, f"{name} must be {self.doc.split(' ', 1)[1]}, got {value!r}")

    def example(self, sizes, rng, dtype):
        if self.low is not None and self.high is not None:
            return type(self.low)((self.low + self.high) / 2) if self.integer else (self.low + self.high) / 2
        if self.low is not None:
            return int(self.low) + 1 if self.integer else float(self.low) + 0.5
        return 1 if self.integer else 0.5

    def perturbations(self, value):
        P, O = Perturbation, Outcome
        out = [P("NaN", lambda v, r: float("nan"), O.ERROR), P("string", lambda v, r: "abc", O.ERROR),
               P("bool", lambda v, r: True, O.ERROR)]
        if self.finite:
            out.append(P("inf", lambda v, r: float("inf"), O.ERROR))
        if self.low is not None:
            out.append(P("below range", lambda v, r: self.low - 1 if not self.low_open else self.low, O.ERROR))
        if self.high is not None:
            out.append(P("above range", lambda v, r: self.high + 1 if not self.high_open else self.high, O.ERROR))
        if self.integer:
            out.append(P("float for int", lambda v, r: 1.5, O.ERROR))
        return out


def Positive(**kw) -> Scalar:
    """A number > 0 (finite unless ``finite=False``)."""
    return Scalar(0, None, low_open=True, **kw)


def NonNegative(**kw) -> Scalar:
    """A number >= 0."""
    return Scalar(0, None, **kw)


def Probability(**kw) -> Scalar:
    """A number in [0, 1]."""
    return Scalar(0, 1, **kw)


def UnitInterval(**kw) -> Scalar:
    """A number in [0, 1) (momentum coefficients, dropout rates)."""
    return Scalar(0, 1, high_open=True, **kw)


def Int(low: int | None = None, high: int | None = None, **kw) -> Scalar:
    """An int in ``[low, high]``."""
    return Scalar(low, high, integer=True, **kw)


class Bool(Role):
    _doc = "bool"

    def __init__(self, *, optional: bool = False):
        self.optional = optional

    def check(self, value, name, call):
        if value is None and self.optional:
            return None
        if not isinstance(value, (bool, np.bool_)):
            raise call.error(TypeError, f"{name} must be True or False, got {value!r}")
        return bool(value)

    def example(self, sizes, rng, dtype):
        return False

    def perturbations(self, value):
        return [Perturbation("string", lambda v, r: "yes", Outcome.ERROR)]


class Choice(Role):
    """One of a fixed set of options (strings, or None when listed)."""

    def __init__(self, options: Iterable[Any]):
        self.options = tuple(options)

    @property
    def doc(self):
        return "{" + ", ".join(repr(o) for o in self.options) + "}"

    def check(self, value, name, call):
        try:
            ok = value in self.options
        except TypeError:
            ok = False
        if not ok or isinstance(value, bool) and not any(isinstance(o, bool) for o in self.options):
            raise call.error(ValueError, f"{name} must be one of {self.options}, got {value!r}")
        return value

    def example(self, sizes, rng, dtype):
        return self.options[0]

    def perturbations(self, value):
        return [Perturbation("unknown option", lambda v, r: "no-such-option", Outcome.ERROR),
                Perturbation("wrong type", lambda v, r: 1.5, Outcome.ERROR)]


class Axis(Role):
    """An axis of the array argument ``of`` (``multiple``: an int or a tuple of ints; ``none``: None
    allowed, meaning all axes). Normalised to non-negative ints."""

    def __init__(self, of: str, *, multiple: bool = False, none: bool = False):
        self.of = of
        self.multiple = multiple
        self.none = none

    @property
    def doc(self):
        return f"axis of {self.of}"

    def check(self, value, name, call):
        if value is None and self.none:
            return None
        arr = call.values.get(self.of)
        nd = getattr(arr, "ndim", None)
        vals = value if self.multiple and isinstance(value, (tuple, list)) else (value,)
        if not vals and self.multiple:
            raise call.error(ValueError, f"{name} must name at least one axis")
        out = []
        for a in vals:
            if isinstance(a, (bool, np.bool_)) or not isinstance(a, numbers.Integral):
                raise call.error(TypeError, f"{name} must be an int{' or a tuple of ints' if self.multiple else ''}, "
                                            f"got {type(a).__name__}")
            a = int(a)
            if nd is not None:
                if not -nd <= a < nd:
                    raise call.error(ValueError, f"{name}={a} is out of range for {self.of} with {nd} dimensions")
                a %= nd
            out.append(a)
        if len(set(out)) != len(out):
            raise call.error(ValueError, f"{name} has repeated axes: {value}")
        if self.multiple and isinstance(value, (tuple, list)):
            return tuple(out)
        return out[0]

    def example(self, sizes, rng, dtype):
        return -1

    def perturbations(self, value):
        return [Perturbation("float axis", lambda v, r: 1.5, Outcome.ERROR),
                Perturbation("axis out of range", lambda v, r: 99, Outcome.ERROR)]


class Seed(Role):
    """A random seed: None, a non-negative int, or a ``numpy.random.Generator``."""

    _doc = "seed (None, int >= 0 or numpy.random.Generator)"
    optional = True

    def check(self, value, name, call):
        if value is None or isinstance(value, (np.random.Generator, np.random.SeedSequence)):
            return value
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            raise call.error(TypeError, f"{name} must be None, a non-negative int or a numpy.random.Generator, "
                                        f"got {type(value).__name__}")
        if value < 0:
            raise call.error(ValueError, f"{name} must be non-negative, got {value}")
        return int(value)

    def example(self, sizes, rng, dtype):
        return 0

    def perturbations(self, value):
        P, O = Perturbation, Outcome
        return [P("string seed", lambda v, r: "abc", O.ERROR), P("negative seed", lambda v, r: -1, O.ERROR),
                P("float seed", lambda v, r: 1.5, O.ERROR)]


class Callback(Role):
    """A callable (``optional=True``, the default: or None)."""

    def __init__(self, *, optional: bool = True):
        self.optional = optional

    @property
    def doc(self):
        return "callable or None" if self.optional else "callable"

    def check(self, value, name, call):
        if value is None and self.optional:
            return None
        if not callable(value):
            raise call.error(TypeError, f"{name} must be {self.doc}, got {type(value).__name__}")
        return value

    def example(self, sizes, rng, dtype):
        return None

    def perturbations(self, value):
        out = [Perturbation("not callable", lambda v, r: 3, Outcome.ERROR)]
        if not self.optional:
            out.append(Perturbation("None", lambda v, r: None, Outcome.ERROR))
        return out


class Scalars(Role):
    """A tuple (or list) of ``n`` numbers, each checked by ``role`` under the name ``name[i]``
    (``betas=Scalars(UnitInterval(), 2)``: Adam's ``(beta1, beta2)``).  Returns a tuple."""

    def __init__(self, role: "Scalar", n: int, *, optional: bool = False):
        self.role = role
        self.n = n
        self.optional = optional

    @property
    def doc(self):
        return f"tuple of {self.n} (each a {self.role.doc})"

    def check(self, value, name, call):
        if value is None and self.optional:
            return None
        if not isinstance(value, (tuple, list)):
            raise call.error(TypeError, f"{name} must be a tuple of {self.n} numbers, got {type(value).__name__}")
        if len(value) != self.n:
            raise call.error(ValueError, f"{name} must have {self.n} entries, got {len(value)}")
        return tuple(self.role.check(v, f"{name}[{i}]", call) for i, v in enumerate(value))

    def example(self, sizes, rng, dtype):
        return tuple(self.role.example(sizes, rng, dtype) for _ in range(self.n))

    def perturbations(self, value):
        P, O = Perturbation, Outcome
        out = [P("not a tuple", lambda v, r: 0.5, O.ERROR),
               P("wrong length", lambda v, r: tuple(v) + tuple(v)[:1], O.ERROR)]
        for p in self.role.perturbations(value[0] if value else None):
            out.append(P(f"[0] {p.label}", lambda v, r, p=p: (p.make(v[0], r),) + tuple(v)[1:], p.outcome))
        return out


class Option(Role):
    """A free-form option the function checks itself (a nested structure, a dtype, a callable with a
    documented signature).  Use sparingly: a typed role gives the contract suite more to test."""

    _doc = "option"

    def __init__(self, *, check: Callable[[Any, str], Any] | None = None, example: Any = None):
        self._check = check
        self._example = example

    def check(self, value, name, call):
        return value if self._check is None else self._check(value, name)

    def example(self, sizes, rng, dtype):
        return self._example


class Out(Role):
    """A preallocated output: same library as the inputs, writeable, the shape and dtype of ``like``
    (an argument name) unless ``shape=False``.  An ``out`` that *is* one of the inputs (same memory,
    same layout) is handled by computing into a temporary and copying; one that partly overlaps an
    input is refused."""

    is_out = True
    optional = True
    _doc = "preallocated output array or None"

    def __init__(self, like: str | None = None, *, shape: bool = True):
        self.like = like
        self.shape = shape

    def check(self, value, name, call):
        if value is None:
            return None
        if not compat.is_array(value):
            raise call.error(TypeError, f"{name} must be an array or None, got {type(value).__name__}")
        if compat.is_jax(value):
            raise call.error(TypeError, f"{name}= cannot be used with JAX arrays: they are immutable")
        if call.xp is not None and compat.array_namespace(value) is not call.xp and not compat.same_namespace(
                value, *[v for v in call.values.values() if compat.is_array(v) and v is not value]):
            raise call.error(TypeError, f"{name} is a {compat.backend_name(value)} array but the inputs are not")
        if not compat.is_writeable(value):
            raise call.error(ValueError, f"{name} is read-only")
        ref = call.values.get(self.like) if self.like else None
        if ref is not None and compat.is_array(ref) and self.shape:
            if tuple(value.shape) != tuple(ref.shape):
                raise call.error(ValueError, f"{name} has shape {tuple(value.shape)}, expected {tuple(ref.shape)} "
                                             f"(the shape of {self.like})")
            if value.dtype != ref.dtype:
                raise call.error(TypeError, f"{name} has dtype {_dtype_name(value)}, expected {_dtype_name(ref)} "
                                            f"(the dtype of {self.like})")
        return value

    def example(self, sizes, rng, dtype):
        return None
