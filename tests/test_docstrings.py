"""numpydoc validation of the public API (every declared function and class), per domain.

Required for every public function: a docstring (GL08) with a one-line summary (SS01), every parameter
documented and no unknown ones (PR01, PR02), a Returns section (RT01) and a runnable Examples section
(EX01; the examples run in tests/test_doctests.py), and the formula as rendered math
(``:math:`` or ``.. math::``) unless the declaration says ``contract={"doc": {"math": "reason"}}``.
Result and state classes (dataclasses) document their attributes.
"""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from optnorm._lib import api

numpydoc_validate = pytest.importorskip("numpydoc.validate", reason="numpydoc is not installed (optnorm[docs])")

REQUIRED = {"GL08", "SS01", "PR01", "PR02", "RT01", "EX01"}


def _problems(entry) -> list[str]:
    path = f"optnorm.{entry.domain}.{entry.short_name}"
    obj = entry.obj
    out = []
    if entry.kind == "function":
        res = numpydoc_validate.validate(path)
        out += [f"{code} {msg}" for code, msg in res["errors"] if code in REQUIRED]
        doc = inspect.getdoc(obj) or ""
        why = entry.contract.get("doc", {}).get("math")
        if why is None and ":math:" not in doc and ".. math::" not in doc:
            out.append("MATH no formula as rendered math (:math: or .. math::)")
    elif entry.kind == "class":
        doc = inspect.getdoc(obj) or ""
        if len(doc) < 40:
            out.append("GL08 no real docstring")
        if dataclasses.is_dataclass(obj):
            fields = [f.name for f in dataclasses.fields(obj) if not f.name.startswith("_")]
            if fields and "Attributes" not in doc:
                out.append("AT01 no Attributes section for its fields " + ", ".join(fields))
            missing = [f for f in fields if f"{f} :" not in doc and f"{f}:" not in doc]
            if fields and "Attributes" in doc and missing:
                out.append(f"AT02 attributes not documented: {missing}")
    return out


@pytest.mark.parametrize("domain", api.DOMAINS)
def test_public_api_docstrings(domain):
    bad = {}
    for entry in api.functions(domain, kind=None):
        if entry.kind == "constant":
            continue
        p = _problems(entry)
        if p:
            bad[entry.short_name] = p
    assert not bad, f"{len(bad)} public names of optnorm.{domain} fail numpydoc validation:\n" + "\n".join(
        f"  {k}: {'; '.join(v)}" for k, v in sorted(bad.items()))
