"""The contract every public function keeps, generated from its declaration (see :mod:`optnorm._lib.roles`).

For each declared function, :func:`cases` yields one case per (argument, perturbation): bad dtypes,
0-d, empty, wrong rank, mismatched dims, NaN/inf, huge and tiny magnitudes, Python lists, other
memory layouts, read-only inputs, mixed libraries, bad scalars and options, bad ``out=`` buffers and
``out=`` aliasing an input.  :func:`run_case` runs one and checks its declared outcome, and that no
input was mutated.  ``tests/test_contract.py`` runs them all; a new function inherits them by being
declared.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import api, compat
from .roles import Outcome, Perturbation, Seed

__all__ = ["Case", "cases", "run_case", "example_call", "outputs"]


@dataclass(frozen=True)
class Case:
    fn: str               # "norm.softmax"
    param: str            # argument perturbed ("" for the unperturbed call)
    label: str
    outcome: str
    dtype: str = "float64"

    @property
    def id(self) -> str:
        return f"{self.fn}-{self.param or 'base'}-{self.label.replace(' ', '_')}-{self.dtype}"


# --------------------------------------------------------------------------------------------- examples
def example_call(entry: api.Function, rng: np.random.Generator, dtype=np.float64, fill: tuple[str, ...] = ()):
    """A valid call ``(args, kwargs)`` of ``entry`` (NumPy inputs); ``fill`` names optional array
    arguments that get a generated value instead of their default ``None``."""
    sig = inspect.signature(entry.body)
    if entry.example is not None:
        args, kwargs = entry.example(rng, dtype)
        bound = sig.bind_partial(*args, **kwargs)
    else:
        bound = sig.bind_partial()
    vals = dict(bound.arguments)
    for p, par in sig.parameters.items():
        if p in vals:
            continue
        role = entry.roles[p]
        has_default = par.default is not par.empty
        if role.is_out:
            vals[p] = None
        elif role.is_array:
            if has_default and par.default is None and p not in fill:
                vals[p] = None
            else:
                vals[p] = role.example(entry.sizes, rng, dtype)
        elif isinstance(role, Seed):
            vals[p] = role.example(entry.sizes, rng, dtype)     # a fixed seed: repeated calls must be comparable
        elif has_default:
            vals[p] = par.default
        else:
            vals[p] = role.example(entry.sizes, rng, dtype)
    for p in fill:
        if vals.get(p) is None and entry.roles[p].is_array:
            vals[p] = entry.roles[p].example(entry.sizes, rng, dtype)
    for p in fill:  # an argument that replaces another (precision= instead of cov=): drop the other
        other = getattr(entry.roles[p], "excludes", None)
        if other is not None and vals.get(p) is not None:
            vals[other] = None
    return _split(sig, vals)


def _split(sig, vals):
    args, kwargs = [], {}
    for p, par in sig.parameters.items():
        if p not in vals:
            continue
        if par.kind in (par.POSITIONAL_ONLY, par.POSITIONAL_OR_KEYWORD) and not kwargs:
            args.append(vals[p])
        else:
            kwargs[p] = vals[p]
    return tuple(args), kwargs


def _bind(entry, args, kwargs) -> dict:
    b = inspect.signature(entry.body).bind(*args, **kwargs)
    return dict(b.arguments)


# --------------------------------------------------------------------------------------------- outputs
def outputs(y: Any) -> list:
    """Every array or float leaf of a result (tuples, lists, dicts, NamedTuples, dataclasses, result objects)."""
    out: list = []

    def rec(v, depth=0):
        if depth > 6 or v is None:
            return
        if compat.is_array(v) or isinstance(v, (float, np.floating)):
            out.append(v)
        elif isinstance(v, dict):
            for k in v.values():
                rec(k, depth + 1)
        elif isinstance(v, (list, tuple)):
            for k in v:
                rec(k, depth + 1)
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            for f in dataclasses.fields(v):
                rec(getattr(v, f.name), depth + 1)

    rec(y)
    return out


def _finite(y) -> bool:
    for v in outputs(y):
        a = compat.to_numpy(v)
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            return False
    return True


def _same(y, ref, dtype) -> str | None:
    a, b = outputs(y), outputs(ref)
    if len(a) != len(b):
        return f"{len(a)} outputs, expected {len(b)}"
    rtol = 1e-4 if dtype == "float32" else 1e-9
    for i, (u, v) in enumerate(zip(a, b)):
        u, v = compat.to_numpy(u), compat.to_numpy(v)
        if u.shape != v.shape:
            return f"output {i} has shape {u.shape}, expected {v.shape}"
        if u.dtype.kind in "fc":
            scale = np.nanmax(np.abs(v)) if v.size and np.any(np.isfinite(v)) else 1.0
            if not np.allclose(u, v, rtol=rtol, atol=rtol * max(float(scale), 1e-30), equal_nan=True):
                return f"output {i} differs (max abs diff {np.nanmax(np.abs(u.astype(float) - v)):.3g})"
        elif not np.array_equal(u, v):
            return f"output {i} differs"
    return None


def _snapshot(vals: dict) -> dict:
    snap = {}
    for k, v in vals.items():
        if compat.is_array(v):
            snap[k] = np.array(compat.to_numpy(v), copy=True)
        elif isinstance(v, list):
            snap[k] = np.asarray(copy.deepcopy(v))
    return snap


def _mutated(vals: dict, snap: dict, skip) -> list[str]:
    bad = []
    for k, before in snap.items():
        if k in skip:
            continue
        v = vals[k]
        now = np.asarray(compat.to_numpy(v) if compat.is_array(v) else v)
        before = np.asarray(before)
        try:
            same = now.shape == before.shape and np.array_equal(now, before, equal_nan=True)
        except TypeError:           # a list of objects (schedules, rules): compared with ==
            same = now.shape == before.shape and np.array_equal(now, before)
        if not same:
            bad.append(k)
    return bad


# --------------------------------------------------------------------------------------------- cases
def _perturbations(entry: api.Function, param: str, value) -> list[Perturbation]:
    role = entry.roles[param]
    ps = list(role.perturbations(value))
    if role.is_array and value is not None and sum(1 for r in entry.roles.values() if r.is_array) >= 2:
        ps.append(Perturbation("mixed library", _to_torch, Outcome.ERROR))
    if role.is_out:
        ps += _out_perturbations(entry, param)
    over = entry.contract.get(param, {})
    ps = [dataclasses.replace(p, outcome=over.get(p.label, p.outcome)) for p in ps]
    return [p for p in ps if p.outcome != "skip"]


def _to_torch(v, rng):
    import torch

    return torch.from_numpy(np.array(v))


def _out_perturbations(entry, param):
    role = entry.roles[param]
    if not role.like:
        return []
    P, O = Perturbation, Outcome

    def ro(v, rng, like=None):
        a = np.empty_like(like)
        a.flags.writeable = False
        return a

    return [P("read-only out", ro, O.ERROR),
            P("out of the wrong shape", lambda v, rng, like=None: np.empty(like.shape + (1,), like.dtype), O.ERROR),
            P("out of the wrong dtype", lambda v, rng, like=None: np.empty(like.shape, np.complex64), O.ERROR),
            P("out aliases the input", "alias", O.SAME_OR_ERROR),
            P("out partially overlaps the input", "overlap", O.SAME_OR_ERROR),
            P("separate out", lambda v, rng, like=None: np.empty_like(like), O.SAME)]


def cases(domain: str | None = None, *, dtypes=("float64", "float32")) -> list[Case]:
    """All contract cases of the declared functions (``dtypes[1:]`` only for the magnitude cases)."""
    out = []
    rng = np.random.default_rng(0)
    for entry in api.functions(domain):
        if "skip" in entry.contract:
            continue
        out.append(Case(entry.name, "", "valid call", Outcome.SAME))
        args, kwargs = example_call(entry, rng)
        vals = _bind(entry, args, kwargs)
        for p in inspect.signature(entry.body).parameters:
            v = vals.get(p)
            if v is None and entry.roles[p].is_array:
                v = entry.roles[p].example(entry.sizes, rng, np.float64)
            for pert in _perturbations(entry, p, v):
                out.append(Case(entry.name, p, pert.label, pert.outcome))
                if pert.label in ("huge", "tiny", "nan", "cond 1e12") and len(dtypes) > 1:
                    for dt in dtypes[1:]:
                        out.append(Case(entry.name, p, pert.label, pert.outcome, dt))
    return out


def _names(msg: str, param: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(param)}(?![A-Za-z0-9_])", msg) is not None


def run_case(case: Case) -> None:
    """Run one case; raise AssertionError describing the broken contract."""
    entry = api.lookup(case.fn)
    assert entry is not None, f"{case.fn} is not declared"
    fill = (case.param,) if case.param and entry.roles[case.param].is_array else ()
    rng = np.random.default_rng(1)
    dtype = np.dtype(case.dtype)
    args, kwargs = example_call(entry, rng, dtype, fill=fill)
    vals = _bind(entry, args, kwargs)
    fn = entry.obj
    sig = inspect.signature(entry.body)

    def call(v):
        a, k = _split(sig, v)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*a, **k)

    try:
        ref = call(dict(vals))
    except Exception as exc:  # the declared example must be valid
        raise AssertionError(f"{case.fn}: the declared example call fails: {type(exc).__name__}: {exc}") from exc
    if not case.param:
        if not _finite(ref):
            raise AssertionError(f"{case.fn}: the example call returns NaN/inf from finite input")
        snap = _snapshot(vals)
        call(vals)
        bad = _mutated(vals, snap, ())
        assert not bad, f"{case.fn} mutated its input(s) {bad}"
        return
    role: Any = entry.roles[case.param]
    pert: Any = next(p for p in _perturbations(entry, case.param, vals[case.param]) if p.label == case.label)
    pv = dict(vals)
    skip_mut = {case.param} if role.is_out else set()
    if role.is_out:
        like = vals[role.like]
        if pert.make == "alias":
            pv[role.like] = np.array(like, copy=True)
            pv[case.param] = pv[role.like]
            skip_mut |= {role.like}
        elif pert.make == "overlap":
            n = like.shape[-1] if np.ndim(like) else 0
            if n < 2:
                return
            buf = np.zeros(like.shape[:-1] + (n + 1,), like.dtype)
            buf[..., :n] = like
            pv[role.like] = buf[..., :n]
            pv[case.param] = buf[..., 1:]
            skip_mut |= {role.like}
        else:
            pv[case.param] = pert.make(vals[case.param], rng, like=like)
    else:
        pv[case.param] = pert.make(vals[case.param], rng)
        if pert.outcome == Outcome.SAME and case.label == "python list":
            pass
    snap = _snapshot({k: v for k, v in pv.items() if k not in skip_mut})
    try:
        y = call(pv)
        err = None
    except (ValueError, TypeError) as exc:
        y, err = None, exc
    except Exception as exc:
        raise AssertionError(f"{case.fn}({case.param}: {case.label}) raised {type(exc).__name__} (expected "
                             f"{case.outcome}): {exc}") from exc
    bad = _mutated(pv, snap, skip_mut)
    assert not bad, f"{case.fn}({case.param}: {case.label}) mutated its input(s) {bad}"
    want = case.outcome
    if err is not None:
        if want in (Outcome.ERROR, Outcome.SAME_OR_ERROR, Outcome.FINITE_OR_ERROR, Outcome.OK):
            assert _names(str(err), case.param) or (case.label == "mixed library"), (
                f"{case.fn}({case.param}: {case.label}): the {type(err).__name__} does not name {case.param!r}: "
                f"{err}")
            return
        raise AssertionError(f"{case.fn}({case.param}: {case.label}) raised {type(err).__name__} (expected "
                             f"{want}): {err}")
    if want == Outcome.ERROR:
        raise AssertionError(f"{case.fn}({case.param}: {case.label}) returned instead of raising an error that "
                             f"names {case.param!r}")
    if want in (Outcome.FINITE, Outcome.FINITE_OR_ERROR):
        assert _finite(y), f"{case.fn}({case.param}: {case.label}) returned NaN/inf from finite input"
    if want in (Outcome.SAME, Outcome.SAME_OR_ERROR):
        if role.is_out and pert.make in ("alias", "overlap"):
            ref_vals = dict(vals)
            ref = call(ref_vals)
        why = _same(y, ref, case.dtype)
        assert why is None, f"{case.fn}({case.param}: {case.label}): result differs from the plain call: {why}"
