"""Lyapunov equation ``A X + X A = Q`` for SPD ``A`` (batched), with its VJP.

``lyapunov`` is exported through ``optnorm.spd.bures`` (see ``bures._unshadow``): the package binds the name
``lyapunov`` to this submodule on import.
"""
from __future__ import annotations

from .._lib.vjp import unbroadcast
from .._lib import compat, ops, validate
from .sqrtm import _cast, _check_spd_input, _eigh, _lyap_eig, _lyap_sign, _mT, _sym, _upcast

__all__ = ["lyapunov"]


def lyapunov(A, Q, *, method="eigh", n_iter=40, check=True):
    """Solve the Lyapunov (Sylvester) equation ``A X + X A = Q`` for SPD ``A``, batched over leading axes.

    ``method="eigh"``: ``X = U (U^T Q U / (lambda_i + lambda_j)) U^T`` with ``A = U diag(lambda) U^T`` (exact).
    ``method="sign"``: the coupled Newton-Schulz iteration for the matrix sign of ``[[A, Q], [0, -A]]``
    (``= [[I, 2X], [0, -I]]``) after scaling by ``||A||_F``, ``n_iter`` steps, GEMM only (Song, Sebe, Wang,
    "Fast Differentiable Matrix Square Root", ICLR 2022).  An eigenvalue ``mu`` of ``A/||A||_F`` needs about
    ``log(1/mu)/log(1.5) + 6`` steps: the default 40 covers condition numbers up to ~1e6.

    VJP: ``dQ = L_A[dX]`` (the operator is self-adjoint) and ``dA = -sym(dQ X^T + X^T dQ)``: one more solve.

    Parameters
    ----------
    A : array (..., n, n)
        SPD coefficient matrices (symmetry tolerance: 100 machine epsilons x max|A|).
    Q : array (..., n, n)
        Right-hand sides (any square matrices; broadcast against ``A``).
    method : {"eigh", "sign"}
    n_iter : int
        Sign-iteration steps.
    check : bool
        Validate ``A`` (symmetric, finite, positive definite via a host Cholesky).

    Returns
    -------
    X : array (..., n, n)

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> A = np.diag([1.0, 2.0]); Q = np.array([[2.0, 3.0], [3.0, 8.0]])
    >>> np.allclose(spd.lyapunov(A, Q), [[1.0, 1.0], [1.0, 2.0]])
    True
    """
    return lyapunov_fwd(A, Q, method=method, n_iter=n_iter, check=check)[0]


def lyapunov_fwd(A, Q, *, method="eigh", n_iter=40, check=True):
    xp = validate.check_same_namespace(A=A, Q=Q)
    validate.check_in(method, ("eigh", "sign"), "method")
    _check_spd_input(A, "A", xp, check=check)
    validate.check_float(Q, "Q", xp)
    validate.check_square(Q, "Q")
    if Q.shape[-1] != A.shape[-1]:
        raise ValueError(f"Q has shape {tuple(Q.shape)}, expected (..., {A.shape[-1]}, {A.shape[-1]}) like A")
    validate.check_broadcastable("A", A.shape[:-2], "Q", Q.shape[:-2])
    n_iter = validate.check_int(n_iter, "n_iter", low=1)
    Ac, dt = _upcast(A, xp)
    Qc = xp.astype(Q, Ac.dtype) if Q.dtype != Ac.dtype else Q
    if method == "eigh":
        w, U = _eigh(Ac, xp)
        X = _lyap_eig(w, U, Qc, xp)
        res = (method, (w, U), None, X, A.shape, Q.shape, dt, n_iter)
    else:
        As = _sym(Ac, xp)
        X = _lyap_sign(As, Qc, n_iter, xp)
        res = (method, None, As, X, A.shape, Q.shape, dt, n_iter)
    return _cast(X, dt, xp), res


def _lyapunov_bwd(res, dX):
    method, eig, As, X, a_shape, q_shape, dt, n_iter = res
    xp = compat.array_namespace(X)
    dX = xp.astype(dX, X.dtype) if dX.dtype != X.dtype else dX
    if method == "eigh":
        w, U = eig
        dQ = _lyap_eig(w, U, dX, xp)
    else:
        dQ = _lyap_sign(As, dX, n_iter, xp)
    # A X + X A = Q  =>  <dX, X'> with A' gives -<dQ, A' X + X A'> = -<dQ X^T + X^T dQ, A'>
    Xt = _mT(X, xp)
    dA = -_sym(dQ @ Xt + Xt @ dQ, xp)
    return _cast(unbroadcast(dA, a_shape, xp), dt, xp), _cast(unbroadcast(dQ, q_shape, xp), dt, xp)


ops.register("spd.lyapunov", lyapunov, lyapunov_fwd, _lyapunov_bwd)
