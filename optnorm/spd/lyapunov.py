"""Lyapunov equation ``A X + X A = Q`` for SPD ``A`` (batched), with its VJP."""
from __future__ import annotations

from typing import Any, NamedTuple

from .._lib import compat
from .._lib.typing import Array
from .._lib.api import public, vjp
from .._lib.roles import SPD, Bool, Choice, Float, Int
from .._lib.vjp import unbroadcast
from ._linalg import eigh, lyap_eig, lyap_sign, mT, sym, upcast


class LyapunovRes(NamedTuple):
    method: str
    eig: Any        # (w, U) of A for "eigh", else None
    As: Any         # sym(A) for "sign", else None
    X: Any
    a_shape: tuple
    q_shape: tuple
    dtype: Any
    n_iter: int


@public(A=SPD(gate="check"), Q=Float("... n n", finite=True, gate="check"), method=Choice(("eigh", "sign")),
        n_iter=Int(1), check=Bool())
def lyapunov(A: Array, Q: Array, *, method: str = "eigh", n_iter: int = 40, check: bool = True) -> Array:
    r"""Solve the Lyapunov (Sylvester) equation ``A X + X A = Q`` for SPD ``A``, batched over leading axes.

    .. math::

        AX + XA = Q,\qquad X = U\Bigl(\frac{(U^\top QU)_{ij}}{\lambda_i + \lambda_j}\Bigr)U^\top,\quad A = U\operatorname{diag}(\lambda)U^\top

    ``method="eigh"``: ``X = U (U^T Q U / (lambda_i + lambda_j)) U^T`` with ``A = U diag(lambda) U^T`` (exact).
    ``method="sign"``: the coupled Newton-Schulz iteration for the matrix sign of ``[[A, Q], [0, -A]]``
    (``= [[I, 2X], [0, -I]]``) after scaling by ``||A||_F``, ``n_iter`` steps, GEMM only (Song, Sebe, Wang,
    "Fast Differentiable Matrix Square Root", ICLR 2022).  An eigenvalue ``mu`` of ``A/||A||_F`` needs about
    ``log(1/mu)/log(1.5) + 6`` steps: the default 40 covers condition numbers up to ~1e6 (a fixed count, no
    tolerance).

    VJP: ``dQ = L_A[dX]`` (the operator is self-adjoint) and ``dA = -sym(dQ X^T + X^T dQ)``: one more solve.

    Parameters
    ----------
    A : array (..., n, n)
        SPD coefficient matrices (symmetry tolerance: 100 machine epsilons x max|A|).
    Q : array (..., n, n)
        Right-hand sides (any square matrices; leading axes broadcast against ``A``).
    method : {"eigh", "sign"}
    n_iter : int
        Sign-iteration steps.
    check : bool
        Validate ``A`` (finite, symmetric, positive definite via a host Cholesky) and the finiteness of ``Q``;
        ``False`` skips the host round trip.

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
    xp = compat.array_namespace(A, Q)
    Ac, dt = upcast(A, xp)
    Qc = compat.cast(Q, Ac.dtype, xp)
    if method == "eigh":
        w, U = eigh(Ac, xp)
        X = lyap_eig(w, U, Qc, xp)
        res = LyapunovRes(method, (w, U), None, X, tuple(A.shape), tuple(Q.shape), dt, n_iter)
    else:
        As = sym(Ac, xp)
        X = lyap_sign(As, Qc, n_iter, xp)
        res = LyapunovRes(method, None, As, X, tuple(A.shape), tuple(Q.shape), dt, n_iter)
    return compat.cast(X, dt, xp), res




def lyapunov_bwd(res: LyapunovRes, dX):
    X = res.X
    xp = compat.array_namespace(X)
    dX = compat.cast(dX, X.dtype, xp)
    if res.method == "eigh":
        w, U = res.eig
        dQ = lyap_eig(w, U, dX, xp)
    else:
        dQ = lyap_sign(res.As, dX, res.n_iter, xp)
    # A X + X A = Q  =>  <dX, X'> with A' gives -<dQ, A' X + X A'> = -<dQ X^T + X^T dQ, A'>
    Xt = mT(X, xp)
    dA = -sym(dQ @ Xt + Xt @ dQ, xp)
    return (compat.cast(unbroadcast(dA, res.a_shape, xp), res.dtype, xp),
            compat.cast(unbroadcast(dQ, res.q_shape, xp), res.dtype, xp))


vjp(lyapunov, lyapunov_fwd, lyapunov_bwd, validate=True)
