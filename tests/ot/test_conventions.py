"""Conventions shared by every optnorm.ot function (issue #14): a/b None are uniform; ``reg`` is accepted by
keyword everywhere, positionally after M (POT's order) only by the solvers returning result objects, and never
positionally by a differentiable function (whose positional parameters are its differentiable arrays)."""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

import optnorm.ot as ot_
from optnorm._lib import api, ops

POSITIONAL_REG = {"sinkhorn", "sinkhorn_unbalanced", "sinkhorn_newton_sparse"}


def test_reg_rule():
    seen = set()
    for f in api.functions("ot"):
        sig = inspect.signature(f.body)
        if "reg" not in sig.parameters:
            continue
        seen.add(f.short_name)
        kind = sig.parameters["reg"].kind
        if f.short_name in POSITIONAL_REG:
            assert kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, f.short_name
            assert list(sig.parameters).index("reg") == 3, f"{f.short_name}: reg must follow a, b, M"
        else:
            assert kind is inspect.Parameter.KEYWORD_ONLY, f"{f.short_name}: reg must be keyword-only"
        assert not (f.op is not None and kind is not inspect.Parameter.KEYWORD_ONLY), f.short_name
    assert {"sinkhorn", "sinkhorn2", "barycenter", "sinkhorn_divergence", "gromov_wasserstein"} <= seen


def test_weights_none_is_uniform(rng):
    n, m = 7, 5
    M = rng.random((n, m))
    a, b = np.full(n, 1 / n), np.full(m, 1 / m)
    calls = {
        "sinkhorn": lambda a, b: ot_.sinkhorn(a, b, M, 0.1).plan(),
        "sinkhorn2": lambda a, b: ot_.sinkhorn2(a, b, M, reg=0.1),
        "sinkhorn_unbalanced": lambda a, b: ot_.sinkhorn_unbalanced(a, b, M, 0.1, 1.0).plan(),
        "sinkhorn_unbalanced2": lambda a, b: ot_.sinkhorn_unbalanced2(a, b, M, reg=0.1, reg_m=1.0),
        "sinkhorn_newton_sparse": lambda a, b: ot_.sinkhorn_newton_sparse(a, b, M, 0.1).plan(),
        "emd": lambda a, b: ot_.emd(a, b, M).plan,
        "emd2": lambda a, b: ot_.emd2(a, b, M),
        "partial_wasserstein2": lambda a, b: ot_.partial_wasserstein2(a, b, M, m=0.5),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, call in calls.items():
            np.testing.assert_allclose(np.asarray(call(None, None)), np.asarray(call(a, b)), rtol=1e-10,
                                       atol=1e-14, err_msg=name)
