"""Every differentiable public function's VJP against central finite differences (float64), generated
from the declarations: a new op is checked by being declared with :func:`optnorm._lib.api.vjp`.

The example call is the contract suite's (:func:`optnorm._lib.contract.example_call`); optional array
inputs are filled in so their cotangents are checked too.  A declaration may tune the check with
``contract={"vjp": {"rtol": ..., "atol": ..., "h": ..., "fill": (...), "skip": "reason"}}``.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from optnorm._lib import api, contract
from optnorm.testing import check_vjp, role_projections

_OPS = [f for f in api.functions() if f.op is not None]


@pytest.mark.parametrize("entry", _OPS, ids=[f.name for f in _OPS])
def test_vjp_matches_finite_differences(entry):
    opts = dict(entry.contract.get("vjp", {}))
    if "skip" in opts:
        pytest.skip(opts["skip"])
    fill = opts.pop("fill", tuple(p for p in inspect.signature(entry.body).parameters
                                  if entry.roles[p].is_array and entry.roles[p].dtype == "float"))
    rng = np.random.default_rng(3)
    args, kwargs = contract.example_call(entry, rng, np.float64, fill=tuple(fill))
    arrays, options = entry.op.split(args, kwargs)
    opts.setdefault("project", role_projections(entry))   # constrained inputs stay valid along the directions
    check_vjp(entry.op, *arrays, opts=options, **opts)
