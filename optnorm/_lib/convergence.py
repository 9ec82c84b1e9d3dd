"""Non-convergence is never silent: iterative solvers warn with :class:`ConvergenceWarning`.

A solver that stops at ``max_iter`` without meeting ``tol`` returns its result with
``converged=False`` *and* calls :func:`warn_not_converged`, so users see it even when they do not
read the flag; filter it like scikit-learn's::

    import warnings, optnorm
    warnings.simplefilter("ignore", optnorm.ConvergenceWarning)

Float32 inputs get tolerances they can reach: :func:`default_tol` scales a float64 default to the
dtype's precision.
"""
from __future__ import annotations

import warnings

__all__ = ["ConvergenceWarning", "warn_not_converged", "default_tol"]


class ConvergenceWarning(UserWarning):
    """An iterative optnorm solver stopped at its iteration limit before reaching its tolerance."""


def warn_not_converged(fn: str, n_iter: int, error: float | None = None, tol: float | None = None, *,
                       hint: str = "raise max_iter or loosen tol", stacklevel: int = 3) -> None:
    err = "" if error is None else f" (last error {float(error):.3g}"
    err += "" if tol is None or error is None else f", tol {float(tol):.3g})"
    if error is not None and tol is None:
        err += ")"
    warnings.warn(f"{fn} did not converge in {n_iter} iterations{err}: {hint}", ConvergenceWarning,
                  stacklevel=stacklevel)


def default_tol(tol_float64: float, dtype) -> float:
    """A tolerance reachable in ``dtype``: ``tol_float64`` for float64, else at least 100 eps of the dtype
    (``1e-9`` becomes ``1.2e-5`` in float32)."""
    import numpy as np

    name = str(dtype).rsplit(".", 1)[-1]
    if name == "float64":
        return tol_float64
    eps = float(np.finfo(np.float32 if name in ("float32", "float16", "bfloat16") else np.float64).eps)
    if name in ("float16", "bfloat16"):
        eps = 1e-3
    return max(tol_float64, 100 * eps)
