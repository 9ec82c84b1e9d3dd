"""The public API is the registry: every list derives from the declarations, and each entry is complete.

Nothing here lists names by hand: a new function is checked by being declared
(:func:`optnorm._lib.api.public`).
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import optnorm
from optnorm._lib import api, ops
from optnorm._lib.dispatch import DISPATCHERS, fast_paths

TESTS = Path(__file__).parent
DOMAINS = api.DOMAINS


@pytest.mark.parametrize("domain", DOMAINS)
def test_domain_exports_are_the_declarations(domain):
    mod = getattr(optnorm, domain)
    declared = [f.short_name for f in api.registry().values() if f.domain == domain]
    assert sorted(mod.__all__) == sorted(declared), "exports that are not declared (or declared but not exported)"
    for n in mod.__all__:
        assert getattr(mod, n) is api.lookup(f"{domain}.{n}").obj


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_exported_name_is_declared(domain):
    legacy = sorted(n for n in api.LEGACY if n.startswith(domain + "."))
    assert not legacy, f"names exported from a module's __all__ without a declaration (@public): {legacy}"


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_public_function_is_documented_and_tested(domain):
    text = "\n".join(p.read_text() for p in (TESTS / domain).rglob("test_*.py"))
    undocumented, untested = [], []
    for f in api.functions(domain, kind=None):
        if f.kind == "constant":
            continue
        doc = inspect.getdoc(f.obj) or ""
        if len(doc) < 40:
            undocumented.append(f.short_name)
        if f.kind == "function" and not re.search(rf"\b{re.escape(f.short_name)}\b", text):
            untested.append(f.short_name)
    assert not undocumented, f"optnorm.{domain}: no real docstring for {undocumented}"
    assert not untested, f"optnorm.{domain}: no test in tests/{domain}/ names {untested}"


def test_every_dispatcher_serves_declared_functions():
    reg = api.registry()
    unknown = {d.name: [s for s in d.serves if s not in reg] for d in DISPATCHERS.values()}
    unknown = {k: v for k, v in unknown.items() if v}
    assert not unknown, f"dispatchers serving names that are not declared public functions: {unknown}"
    no_generic = [d.name for d in DISPATCHERS.values() if "generic" not in d.paths]
    assert not no_generic, f"dispatchers without a generic (reference) path: {no_generic}"


def test_every_op_is_declared_and_reachable_from_the_adapters():
    ops_ = ops.all_ops()
    undeclared = [n for n in ops_ if api.lookup(n) is None]
    assert not undeclared, f"ops registered without a public declaration: {undeclared}"
    torch_ad = pytest.importorskip("optnorm.torch")
    jax_ad = pytest.importorskip("optnorm.jax")
    for name, op in ops_.items():
        assert callable(getattr(torch_ad, op.short_name)), name
        assert callable(getattr(jax_ad, op.short_name)), name


def test_capability_table_rows_come_from_the_registry(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_tables", TESTS.parent / "docs" / "gen_tables.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.write_all(tmp_path)
    table = (tmp_path / "_capabilities.rst").read_text()
    fast = fast_paths()
    for f in api.functions():
        row = next((ln for ln in table.splitlines() if f"``{f.name}``" in ln), None)
        assert row is not None, f"{f.name} missing from the capability table"
        cells = row.split()
        assert ("numba" in fast.get(f.name, ())) == (cells[3] == "yes"), (f.name, row)
        assert ("cuda" in fast.get(f.name, ())) == (cells[4] == "yes"), (f.name, row)
        assert (f.op is not None) == (cells[2] == "yes"), (f.name, row)
