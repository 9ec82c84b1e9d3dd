"""sparsemax and entmax15 against independent float64 references (simplex projection, root finding), their
exact VJPs against finite differences, the Numba rows against the sorted generic path, every backend."""
from __future__ import annotations

import numpy as np
import pytest

import optnorm
from optnorm._lib import ops
from optnorm.norm import entmax15, softmax, sparsemax
from optnorm.testing import assert_close, check_vjp, numerical_vjp


def _proj_simplex(v):
    """Duchi et al. (2008): Euclidean projection onto the simplex, by sorting."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u)
    rho = np.nonzero(u * np.arange(1, len(v) + 1) > css - 1)[0][-1]
    theta = (css[rho] - 1) / (rho + 1.0)
    return np.maximum(v - theta, 0)


def _entmax_root(x):
    """1.5-entmax by root finding: sum max(x/2 - tau, 0)^2 = 1 (scipy brentq to 1e-15)."""
    from scipy.optimize import brentq

    z = x / 2
    t = brentq(lambda t: (np.maximum(z - t, 0) ** 2).sum() - 1, z.max() - 1, z.max(), xtol=1e-15)
    return np.maximum(z - t, 0) ** 2


@pytest.fixture
def rows(rng):
    x = rng.standard_normal((40, 23)) * 3
    x[0] = 1.0          # ties: a uniform output
    x[1, :5] = 7.0      # tied maxima
    x[2] = np.arange(23) * 1e-3
    return x


def test_against_references(rows, path):
    sp = np.array([_proj_simplex(r) for r in rows])
    en = np.array([_entmax_root(r) for r in rows])
    assert_close(sparsemax(rows), sp, rtol=1e-12, atol=1e-14)
    assert_close(entmax15(rows), en, rtol=1e-10, atol=1e-13)
    assert_close(sparsemax(rows.T, axis=0), sp.T, rtol=1e-12, atol=1e-14)
    assert_close(entmax15(rows.reshape(4, 10, 23)), en.reshape(4, 10, 23), rtol=1e-10, atol=1e-13)
    y32 = sparsemax(rows.astype(np.float32))
    assert y32.dtype == np.float32
    assert_close(y32, sp, rtol=1e-5, atol=2e-6, check_dtype=False)
    assert_close(entmax15(rows.astype(np.float32)), en, rtol=1e-5, atol=2e-6, check_dtype=False)


def test_properties(rng, path):
    x = rng.standard_normal((8, 1000)) * 2
    for f in (sparsemax, entmax15):
        y = f(x)
        assert_close(y.sum(-1), np.ones(8), rtol=1e-12)
        assert (y >= 0).all() and (y == 0).mean() > 0.5    # sparse
        assert_close(f(x + 100.0), y, rtol=1e-9, atol=1e-12)   # shift invariance
    assert_close(sparsemax(np.array([[1e30, 0.0]], np.float32)), np.array([[1.0, 0.0]], np.float32), rtol=0)
    assert np.isnan(sparsemax(np.array([1.0, np.nan]))).all() and np.isnan(entmax15(np.array([np.inf, 0.0]))).all()


def test_numba_matches_generic(rng):
    x = rng.standard_normal((64, 3000)).astype(np.float32) * 4
    g = rng.standard_normal((64, 3000)).astype(np.float32)
    for name in ("sparsemax", "entmax15"):
        op = ops.get(name)
        res = {}
        for path in ("generic", "numba"):
            with optnorm.use_backend(path):
                y, r = op.fwd(x)
                res[path] = (y, op.bwd(r, g)[0])
        assert_close(res["numba"][0], res["generic"][0], rtol=1e-5, atol=1e-6, err_msg=name)
        assert_close(res["numba"][1], res["generic"][1], rtol=1e-4, atol=1e-5, err_msg=name)


def test_vjps_exact(rng, path):
    x = rng.standard_normal((5, 7)) * 2
    for name in ("sparsemax", "entmax15"):
        check_vjp(ops.get(name), x)
        check_vjp(ops.get(name), x.T.copy(), opts={"axis": 0})
    # sparsemax's Jacobian on the support, entmax's against a float64 numerical VJP
    y = sparsemax(x[0])
    s = y > 0
    g = rng.standard_normal(7)
    _, res = ops.get("sparsemax").fwd(x[0])
    (dx,) = ops.get("sparsemax").bwd(res, g)
    assert_close(dx, np.where(s, g - g[s].mean(), 0.0), rtol=1e-14)
    num = numerical_vjp(lambda a: entmax15(a), [x[1]], g)[0]
    _, res = ops.get("entmax15").fwd(x[1])
    assert_close(ops.get("entmax15").bwd(res, g)[0], num, rtol=1e-6, atol=1e-8)


def test_backends(xp, rows):
    assert_close(sparsemax(xp.asarray(rows)), np.array([_proj_simplex(r) for r in rows]), rtol=1e-12, atol=1e-14,
                 xp=xp)
    assert_close(entmax15(xp.asarray(rows)), np.array([_entmax_root(r) for r in rows]), rtol=1e-10, atol=1e-13,
                 xp=xp)


def test_between_softmax_and_sparsemax(rng):
    """Support sizes: sparsemax <= entmax15 <= softmax (all entries)."""
    x = rng.standard_normal((20, 50)) * 2
    ns, ne = (sparsemax(x) > 0).sum(-1), (entmax15(x) > 0).sum(-1)
    assert (ns <= ne).all() and (ne <= 50).all() and (softmax(x) > 0).all()
