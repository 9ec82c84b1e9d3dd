"""Test helpers shared by optnorm's test suite (and usable by downstream code).

- :func:`assert_close` compares an array of any library with a NumPy reference.
- :func:`check_vjp` checks a registered op's VJP against central finite differences in float64.
- :func:`numerical_vjp` gives the full finite-difference VJP of any function of NumPy arrays.
- :func:`check_numba_cache` checks that kernels loaded from the Numba cache compute what fresh ones do.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ._lib import compat
from ._lib import ops as _ops

__all__ = ["assert_close", "check_vjp", "numerical_vjp", "as_tuple", "role_projections", "numba_fingerprint",
           "check_numba_cache"]


def as_tuple(y) -> tuple:
    return y if isinstance(y, tuple) else (y,)


def _dtype_str(a) -> str:
    return str(a.dtype).rsplit(".", 1)[-1]  # torch.float32, array_api_strict.float32 -> float32


def assert_close(actual: Any, desired: Any, *, rtol: float = 1e-7, atol: float = 0.0, err_msg: str = "",
                 equal_nan: bool = True, check_dtype: Any = True, xp: Any = None) -> None:
    """Values of ``actual`` (any library) against ``desired``, and by default its dtype and library too.

    Like SciPy's ``xp_assert_close``, the checks beyond values are on unless turned off:

    - ``check_dtype=True`` (default): ``actual`` has ``desired``'s dtype when ``desired`` is an array
      (a Python scalar desired checks nothing); a dtype name (``"float32"``) checks that dtype;
      ``False`` checks values only (a float64 reference for a float32 result).
    - ``xp``: the namespace ``actual`` must come from (the ``xp`` fixture), e.g. torch in, torch out.
    """
    if isinstance(actual, tuple) or isinstance(desired, tuple):
        a_t, d_t = as_tuple(actual), as_tuple(desired)
        assert len(a_t) == len(d_t), f"{err_msg}: {len(a_t)} outputs, expected {len(d_t)}"
        for i, (a, d) in enumerate(zip(a_t, d_t)):
            assert_close(a, d, rtol=rtol, atol=atol, err_msg=f"{err_msg} [output {i}]", equal_nan=equal_nan,
                         check_dtype=check_dtype, xp=xp)
        return
    if actual is None or desired is None:
        assert actual is None and desired is None, f"{err_msg}: one output is None and the other is not"
        return
    if xp is not None and compat.is_array(actual):
        want = compat.backend_name(xp.asarray(0.0))
        got = compat.backend_name(actual)
        assert got == want, f"{err_msg}: result is a {got} array, expected {want}"
    if check_dtype is not False and hasattr(actual, "dtype"):
        if check_dtype is True:
            want_dt = _dtype_str(desired) if hasattr(desired, "dtype") and np.ndim(compat.to_numpy(desired)) >= 0 \
                and not isinstance(desired, (float, int, np.floating, np.integer)) else None
        else:
            want_dt = str(check_dtype)
        if want_dt is not None:
            assert _dtype_str(actual) == want_dt, f"{err_msg}: dtype {_dtype_str(actual)}, expected {want_dt}"
    a = compat.to_numpy(actual)
    d = compat.to_numpy(desired)
    if a.dtype.kind == "f":
        a = a.astype(np.float64)
    if np.asarray(d).dtype.kind == "f":
        d = np.asarray(d, dtype=np.float64)
    np.testing.assert_allclose(a, d, rtol=rtol, atol=atol, err_msg=err_msg, equal_nan=equal_nan)


def _vdot(a, b) -> float:
    if a is None or b is None:
        return 0.0
    return float(np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64)))


def numerical_vjp(f: Callable[..., Any], arrays: Sequence[np.ndarray], dy: Any, *, h: float = 1e-6,
                  argnums: Sequence[int] | None = None) -> list:
    """Central-difference VJP of ``f(*arrays)`` (float64 NumPy) for the inputs in ``argnums``, entry by entry."""
    arrays = [None if a is None else np.array(a, dtype=np.float64) for a in arrays]
    argnums = range(len(arrays)) if argnums is None else argnums
    dys = as_tuple(dy)
    out: list = [None] * len(arrays)
    for i in argnums:
        if arrays[i] is None:
            continue
        g = np.zeros_like(arrays[i])
        flat = arrays[i].reshape(-1)
        gf = g.reshape(-1)
        for k in range(flat.size):
            old = flat[k]
            step = h * max(1.0, abs(old))
            flat[k] = old + step
            yp = as_tuple(f(*arrays))
            flat[k] = old - step
            ym = as_tuple(f(*arrays))
            flat[k] = old
            gf[k] = sum(_vdot(d, compat.to_numpy(p) - compat.to_numpy(m)) for d, p, m in zip(dys, yp, ym)
                        if d is not None and p is not None) / (2 * step)
        out[i] = g
    return out


def check_vjp(op: Any, *arrays: Any, rtol: float = 1e-5, atol: float = 1e-7, h: float = 1e-6, n_dirs: int = 3,
              seed: int = 0, opts: dict | None = None, project: dict | None = None) -> None:
    """Check an op's ``bwd`` against finite differences of its ``fn`` along random directions (float64 NumPy).

    ``op`` is an :class:`~optnorm._lib.ops.Op` or its name.  For every differentiable
    float input ``i`` and random direction ``v``: ``<bwd(res, dy)[i], v>`` must equal
    ``(<dy, f(x + h v)> - <dy, f(x - h v)>) / 2h``.  Also checks that ``fwd`` returns
    the same output as ``fn``.  ``project`` maps an input's index to a function applied to its
    directions, keeping constrained inputs valid (symmetric matrices stay symmetric, weights keep
    summing to one); by default it comes from the declaration's roles (:func:`role_projections`).
    """
    op_ = _ops.get(op) if isinstance(op, str) else op
    if project is None:
        from ._lib import api

        entry = api.lookup(op_.name)
        project = role_projections(entry) if entry is not None and entry.op is not None else {}
    opts = opts or {}
    rng = np.random.default_rng(seed)
    arrays = tuple(None if a is None else (np.array(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f"
                                           else np.asarray(a)) for a in arrays)
    y = op_.fn(*arrays, **opts)
    y2, res = op_.fwd(*arrays, **opts)
    assert_close(y2, y, rtol=1e-12, atol=1e-12, err_msg=f"{op_.name}: fwd output differs from fn")
    ys = as_tuple(y)
    dy = tuple(None if o is None or compat.to_numpy(o).dtype.kind != "f" else rng.standard_normal(np.shape(o))
               for o in ys)
    dy_arg = dy if isinstance(y, tuple) else dy[0]
    grads = as_tuple(op_.bwd(res, dy_arg))
    assert len(grads) == len(arrays), f"{op_.name}: bwd returned {len(grads)} cotangents for {len(arrays)} inputs"
    skip = set(op_.nondiff_argnums) | set(op_.skip_check_argnums)
    checked = 0
    for i, a in enumerate(arrays):
        if a is None or i in skip or a.dtype.kind != "f":
            continue
        g = grads[i]
        assert g is not None, f"{op_.name}: no cotangent for differentiable input {i} ({op_.array_params[i]})"
        g = compat.to_numpy(g)
        assert g.shape == a.shape, f"{op_.name}: cotangent {i} has shape {g.shape}, input has {a.shape}"
        for _ in range(n_dirs):
            v = rng.standard_normal(a.shape)
            if i in project:
                v = project[i](v)
            args_p = list(arrays)
            args_m = list(arrays)
            args_p[i] = a + h * v
            args_m[i] = a - h * v
            fp = as_tuple(op_.fn(*args_p, **opts))
            fm = as_tuple(op_.fn(*args_m, **opts))
            num = sum(_vdot(d, compat.to_numpy(p) - compat.to_numpy(m)) for d, p, m in zip(dy, fp, fm)
                      if d is not None and p is not None) / (2 * h)
            ana = _vdot(g, v)
            tol = atol + rtol * max(abs(num), abs(ana), 1.0)
            assert abs(num - ana) <= tol, (f"{op_.name}: VJP of input {i} ({op_.array_params[i]}) disagrees with "
                                           f"finite differences: analytic {ana:.10g}, numeric {num:.10g}")
        checked += 1
    assert checked > 0 or not any(a is not None and a.dtype.kind == "f" for a in arrays), \
        f"{op_.name}: no input was checked"


def role_projections(entry: Any) -> dict:
    """Direction projections for :func:`check_vjp` from a declaration's roles: symmetric (and SPD) matrices get
    symmetric directions, weights that must sum to one get directions summing to zero."""
    from ._lib.roles import Symmetric, Weights

    out = {}
    for i, p in enumerate(entry.op.array_params):
        r = entry.roles[p]
        if isinstance(r, Symmetric):
            out[i] = lambda v: (v + np.swapaxes(v, -1, -2)) / 2
        elif isinstance(r, Weights) and r.normalized:
            out[i] = lambda v: v - v.mean(axis=-1, keepdims=True)
    return out



def numba_fingerprint(domain: str) -> dict:
    """The exact outputs (bytes) of every ``domain`` function a Numba path serves, with that path forced.

    Each function runs its declared example call, in float64 and float32, plus the contract suite's
    magnitude perturbations of each argument (``huge``, ``tiny``); an exception is recorded by its type.
    A domain's kernel module may add direct probes: ``optnorm._numba.<domain>.cache_probes()`` returning
    ``{name: array}`` (kernels on adversarial inputs: sizes that take every code path, extreme values).
    Run in two processes that share one ``NUMBA_CACHE_DIR`` (:func:`check_numba_cache`), it shows whether
    kernels loaded from the on-disk cache compute exactly what freshly compiled ones do.
    """
    import inspect
    import warnings

    from ._lib import api, contract
    from ._lib.dispatch import fast_paths, use_backend

    fast = fast_paths()
    out = {}
    for entry in api.functions(domain):
        if "numba" not in fast.get(entry.name, ()):
            continue
        params = list(inspect.signature(entry.body).parameters)
        for dt in ("float64", "float32"):
            cases = [("", "example")]
            for p in params:
                if entry.roles[p].is_array:
                    probe = entry.roles[p].example(entry.sizes, np.random.default_rng(0), np.float64)
                    cases += [(p, q.label) for q in contract._perturbations(entry, p, probe)
                              if q.label in ("huge", "tiny")]
            for param, label in cases:
                rng = np.random.default_rng(1)
                fill = (param,) if param else ()
                args, kwargs = contract.example_call(entry, rng, np.dtype(dt), fill=fill)
                vals = contract._bind(entry, args, kwargs)
                if param:
                    pert = next(q for q in contract._perturbations(entry, param, vals[param]) if q.label == label)
                    vals[param] = pert.make(vals[param], rng)
                a, k = contract._split(inspect.signature(entry.body), vals)
                key = f"{entry.name}[{param or '-'}:{label}:{dt}]"
                try:
                    with use_backend("numba"), warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        y = entry.obj(*a, **k)
                    out[key] = b"".join(np.ascontiguousarray(compat.to_numpy(o)).tobytes()
                                        for o in contract.outputs(y))
                except Exception as exc:  # recorded: a cached kernel must fail the same way
                    out[key] = type(exc).__name__.encode()
    import importlib

    try:
        kernels = importlib.import_module(f"optnorm._numba.{domain}")
    except ImportError:
        kernels = None
    for name, y in (getattr(kernels, "cache_probes", dict)() or {}).items():
        out[f"probe:{name}"] = np.ascontiguousarray(y).tobytes()
    return out


def check_numba_cache(domain: str, cache_dir: Any, *, timeout: float = 900) -> dict:
    """Run :func:`numba_fingerprint` in a fresh process (compiling into the empty ``cache_dir``) and again in a
    second one (loading from it); raise AssertionError naming every output that differs bit for bit."""
    import os
    import pickle
    import subprocess
    import sys
    from pathlib import Path

    cache_dir = Path(cache_dir)
    code = ("import pickle, sys\nfrom optnorm.testing import numba_fingerprint\n"
            f"sys.stdout.buffer.write(pickle.dumps(numba_fingerprint({domain!r})))\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), OPTNORM_BACKEND="auto")
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=timeout)
        assert proc.returncode == 0, proc.stderr.decode()[-4000:]
        runs.append(pickle.loads(proc.stdout))
        if len(runs) == 1:
            assert any(cache_dir.rglob("*.nbi")), f"the first run wrote no Numba cache index into {cache_dir}"
    fresh, cached = runs
    assert fresh, f"no {domain} function has a Numba path"
    diff = sorted(k for k in fresh.keys() | cached.keys() if fresh.get(k) != cached.get(k))
    assert not diff, f"kernels loaded from the Numba cache compute differently from fresh ones: {diff}"
    return fresh
