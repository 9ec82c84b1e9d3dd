"""Every registered spd op through the torch (gradcheck) and JAX (check_grads, jit) adapters."""
from __future__ import annotations

import numpy as np
import pytest

import optnorm.spd as spd
from optnorm._lib import ops
from optnorm.testing import assert_close

from .helpers import random_spd


def _cases():
    rng = np.random.default_rng(7)
    A, B = random_spd(rng, (2,), 3, shift=0.5), random_spd(rng, (2,), 3, shift=0.5)
    X = random_spd(rng, (3,), 3, shift=0.5)
    Bias, M = random_spd(rng, (), 3, shift=0.5), random_spd(rng, (), 3, shift=0.5)
    G, v = spd.rbn_statistics(X, metric="gbw", M=M)
    S = rng.standard_normal((2, 3, 3))
    S = S + np.swapaxes(S, -1, -2)
    W = rng.standard_normal((2, 3, 2))
    return {
        "sqrtm": ((A,), {}),
        "sqrtm_ns": ((A,), {"method": "newton_schulz", "lyap_iter": 40}),
        "invsqrtm": ((A,), {}),
        "invsqrtm_mpa": ((A,), {"method": "mpa", "degree": 12, "lyap_iter": 40}),
        "lyapunov": ((A, S), {}),
        "bw_distance": ((A, B), {}),
        "airm_distance": ((A, B), {"squared": True}),
        "lem_distance": ((A, B), {}),
        "bw_loss": ((W @ np.swapaxes(W, -1, -2), B), {"smoothing": 0.2}),
        "project_psd": ((S,), {"eps": 0.1}),
        "rbn_normalize": ((X, G, v, Bias, np.array(0.8), M), {"metric": "gbw"}),
        "bw_log": ((A, B), {}),
        "bw_exp": ((A, 0.3 * np.asarray(spd.bw_log(A, B))), {}),
        "bw_geodesic": ((A, B), {"t": 0.3}),
        "rbn_normalize_lem": ((X, G, v, Bias, np.array(0.8), None), {"metric": "lem"}),
        "logm": ((A,), {}),
        "expm": ((0.3 * S,), {}),
        "powm": ((A, np.array(0.7)), {}),
        "funm": ((0.3 * S,), {"f": _cube, "df": _dcube}),
    }


def _cube(w):
    return w * w * w + w


def _dcube(w):
    return 3 * w * w + 1


CASES = _cases()
for _k, (_a, _o) in CASES.items():   # finite differences perturb single entries: symmetry checks off
    if not _k.startswith("project_psd"):
        _o["check"] = False


def test_every_spd_op_is_covered():
    registered = {o.short_name for n, o in ops.all_ops().items() if n.startswith("spd.")}
    registered -= {"mahalanobis"}  # its adapters are tested in tests/spd/test_gaussian.py
    covered = {k.split("_ns")[0].split("_mpa")[0].split("_lem")[0] for k in CASES}
    assert registered <= covered, registered - covered


def _opname(case):
    for suffix in ("_ns", "_mpa", "_lem"):
        if case.endswith(suffix):
            return case[: -len(suffix)]
    return case


@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_gradcheck(case):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    import optnorm.torch as ont

    arrays, opts = CASES[case]
    op = ops.get(_opname(case))
    diff = [i for i, a in enumerate(arrays) if a is not None and i not in op.nondiff_argnums]
    ts = [None if a is None else torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=i in diff)
          for i, a in enumerate(arrays)]
    f = ont.op(_opname(case))

    def fn(*d):
        full = list(ts)
        for i, x in zip(diff, d):
            full[i] = x
        return f(*full, **opts)

    assert torch.autograd.gradcheck(fn, tuple(ts[i] for i in diff), atol=1e-6, rtol=1e-4)
    y = f(*ts, **opts)
    ref = op.fn(*arrays, **opts)
    assert_close(y, ref, rtol=1e-10, atol=1e-12)


_SLOW_JAX = {"rbn_normalize", "invsqrtm_mpa", "sqrtm_ns"}   # long unrolled traces (10-16 s each on 2 cores)


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in _SLOW_JAX else c
                                  for c in sorted(CASES)])
def test_jax_check_grads_and_jit(case):
    jax = pytest.importorskip("jax", reason="jax is not installed")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.test_util import check_grads

    import optnorm.jax as onj

    arrays, opts = CASES[case]
    op = ops.get(_opname(case))
    diff = [i for i, a in enumerate(arrays) if a is not None and i not in op.nondiff_argnums]
    js = [None if a is None else jnp.asarray(np.asarray(a, dtype=np.float64)) for a in arrays]
    f = onj.op(_opname(case))

    def fn(*d):
        full = list(js)
        for i, x in zip(diff, d):
            full[i] = jnp.asarray(x)   # check_grads' numerical pass hands in NumPy arrays
        return f(*full, **opts)

    check_grads(fn, tuple(js[i] for i in diff), order=1, modes=["rev"], atol=1e-5, rtol=1e-4)
    jitted = jax.jit(lambda *d: jnp.sum(fn(*d)))
    val = jitted(*(js[i] for i in diff))
    assert_close(val, np.sum(op.fn(*arrays, **opts)), rtol=1e-10)
    g = jax.jit(jax.grad(lambda *d: jnp.sum(fn(*d))))(*(js[i] for i in diff))
    assert np.all(np.isfinite(np.asarray(g)))
