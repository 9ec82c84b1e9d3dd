"""Sinkhorn-Newton-Sparse (SNS): Sinkhorn warm start, then Newton steps with a sparsified Hessian."""
from __future__ import annotations

import math

import numpy as np

from .._lib import compat
from .._lib.api import public
from .._lib.roles import Callback, Choice, Cost, Int, NonNegative, Positive, Scalar, Weights
from . import _common as cm


def _plan(f, g, M, reg, xp):
    """exp((f + g - M) / reg), the exponent capped at 700: a line-search trial that far off is rejected anyway."""
    return xp.exp(xp.clip((f[:, None] + g[None, :] - M) / reg, None, 700.0))


def _dual(f, g, a, b, M, reg, xp):
    """Concave dual F(f, g) = <f, a> + <g, b> - eps * sum exp((f_i + g_j - M_ij)/eps)  (zero weights: f = -inf)."""
    P = _plan(f, g, M, reg, xp)
    fa = xp.where(a > 0, f * a, xp.zeros_like(f))
    gb = xp.where(b > 0, g * b, xp.zeros_like(g))
    return float(xp.sum(fa) + xp.sum(gb) - reg * xp.sum(P)), P


class _SparseHessian:
    """B_s = [[diag(P1), P_s], [P_s^T, diag(P^T 1)]] with P_s the k largest entries of every row of P.

    The diagonal keeps the full row/column sums, so B_s is diagonally dominant (PSD) and CG applies.  NumPy
    inputs store P_s as a SciPy CSR matrix (matvecs cost O(nnz)); other libraries use a dense masked copy.
    """

    def __init__(self, P, k, xp):
        self.xp = xp
        self.n, self.m = P.shape
        self.r = xp.sum(P, axis=1)
        self.c = xp.sum(P, axis=0)
        k = min(k, self.m)
        if compat.fast_path_of(P) == "numba":            # NumPy: SciPy sparse CSR
            import scipy.sparse as sp

            if k < self.m:
                idx = np.argpartition(P, self.m - k, axis=1)[:, self.m - k:]
            else:
                idx = np.broadcast_to(np.arange(self.m), (self.n, self.m))
            rows = np.repeat(np.arange(self.n), idx.shape[1])
            vals = np.take_along_axis(P, idx, axis=1).ravel()
            self.S = sp.csr_matrix((vals, (rows, idx.ravel())), shape=(self.n, self.m))
            self.sparse = True
            self.ST = self.S.T.tocsr()
            self.nnz = self.S.nnz
        else:
            thr = xp.sort(P, axis=1)[:, self.m - k][:, None]
            self.S = xp.where(P >= thr, P, xp.zeros_like(P))
            self.sparse = False
            self.ST = self.S.T
            self.nnz = self.n * k
        k_tot = self.n + self.m
        self.rho = float(xp.mean(self.r))
        self.z = xp.concat([xp.ones_like(self.r), -xp.ones_like(self.c)]) / math.sqrt(k_tot)
        d = xp.concat([self.r, self.c]) + self.rho / k_tot
        self.diag = xp.where(d > 0, d, xp.ones_like(d))

    def matvec(self, w):
        xp = self.xp
        x, y = w[..., :self.n], w[..., self.n:]
        if self.sparse:
            top = self.r * x + (self.S @ y[0])[None]
            bot = (self.ST @ x[0])[None] + self.c * y
        else:
            top = self.r * x + xp.matrix_transpose(self.S @ xp.matrix_transpose(y))
            bot = xp.matrix_transpose(self.ST @ xp.matrix_transpose(x)) + self.c * y
        out = xp.concat([top, bot], axis=-1)
        return out + self.rho * self.z * xp.sum(self.z * w, axis=-1, keepdims=True)


def _newton(a, b, M, reg, f, g, *, tol, max_newton, k0, cg_tol, callback, callback_every, errors, it0, xp,
            error_norm):
    n, m = M.shape
    k = k0
    F, P = _dual(f, g, a, b, M, reg, xp)
    it = 0
    converged = stopped = False
    e_prev = math.inf
    while True:
        ra = a - xp.sum(P, axis=1)
        rb = b - xp.sum(P, axis=0)
        e = float(cm.marginal_norm(ra, error_norm, xp) + cm.marginal_norm(rb, error_norm, xp))
        errors.append(e)
        if e > 0.5 * e_prev:
            k = min(m, 2 * k)                               # no fast local convergence yet: densify the Hessian
        e_prev = e
        if e < tol:
            converged = True
            break
        if it >= max_newton or not math.isfinite(e):
            break
        if callback is not None and it % callback_every == 0 and it > 0:
            if callback(cm.SinkhornState(it0 + it, f, g, e)):
                stopped = True
                break
        H = _SparseHessian(P, k, xp)
        rhs = xp.concat([ra, rb])[None, :]
        d = cm.cg(H.matvec, rhs, lambda w: w / H.diag, xp, tol=cg_tol, max_iter=1000)[0, ...]
        df, dg = reg * d[:n], reg * d[n:]
        slope = float(xp.sum(ra * df) + xp.sum(rb * dg))
        alpha = 1.0
        accepted = False
        while alpha >= 1e-4:
            f_new = f + alpha * df
            g_new = g + alpha * dg
            F_new, P_new = _dual(f_new, g_new, a, b, M, reg, xp)
            if math.isfinite(F_new) and F_new >= F + 1e-4 * alpha * slope:
                accepted = True
                break
            alpha *= 0.5
        it += 1
        if not accepted or alpha < 1.0:
            k = min(m, 2 * k)                               # Hessian too sparse for a full step: densify
        if not accepted:
            # one Sinkhorn iteration (always ascends) instead of a failed Newton step
            g = reg * cm.log_weights(b, xp) - cm.softmin_xp(M[None], f[None], reg, 1, xp)[0]
            f = reg * cm.log_weights(a, xp) - cm.softmin_xp(M[None], g[None], reg, 2, xp)[0]
            F, P = _dual(f, g, a, b, M, reg, xp)
            continue
        f, g, F, P = f_new, g_new, F_new, P_new
    return f, g, it, converged, stopped


_SNS_ROLES = dict(a=Weights("[b] n"), b=Weights("[b] m"), M=Cost("[b] n m"), reg=Positive(),
                  tol=NonNegative(optional=True), max_iter=Int(1), n_sinkhorn=Int(0),
                  density=Scalar(0, 1, low_open=True, optional=True), cg_tol=Positive(), callback=Callback(),
                  callback_every=Int(1), error_norm=Choice((1, 2)))


@public(**_SNS_ROLES)
def sinkhorn_newton_sparse(a, b, M, reg, *, tol=None, max_iter=200, n_sinkhorn=20, density=None, cg_tol=1e-10,
                           callback=None, callback_every=1, error_norm=1):
    r"""Entropic OT by Sinkhorn-Newton-Sparse: a Sinkhorn warm start, then sparse Newton steps on the dual.

    "Accelerating Sinkhorn Algorithm with Sparse Newton Iterations" (Tang, Shavlovsky, Rahmanian, Tardini,
    Thekumparampil, Xiao, Ying; ICLR 2024).  After ``n_sinkhorn`` log-domain Sinkhorn iterations (stopping
    early if ``tol`` is met), each step maximises the concave dual

    .. math::

        F(f, g) = \langle f, a\rangle + \langle g, b\rangle - \varepsilon\sum_{ij} e^{(f_i + g_j - M_{ij})/\varepsilon}

    with the Newton direction :math:`\varepsilon B_s^{-1}\nabla F`, where
    :math:`B_s = \begin{pmatrix}\mathrm{diag}(P1) & P_s\\ P_s^T & \mathrm{diag}(P^T1)\end{pmatrix}` keeps the
    ``k`` largest plan entries of each row (the full diagonal keeps it PSD), solved by preconditioned conjugate
    gradient (gauge fixed along (1, -1)), and a backtracking Armijo line search.  ``k`` starts at
    ``ceil(density * m)`` and doubles whenever a full step is not accepted (a plan too diffuse for the current
    sparsity: ot.md §5 measured that a fixed 2/n density stalls); a step that fails the line search entirely is
    replaced by one Sinkhorn iteration.  ``k`` also doubles when a step does not halve the marginal error
    (Newton converges quadratically once the Hessian is accurate enough).  NumPy inputs keep the sparse Hessian
    in SciPy CSR form.  No autograd graph is recorded for torch inputs.

    Parameters
    ----------
    a, b, M, reg : as in :func:`optnorm.ot.sinkhorn` (a batch of problems is solved one after the other).
    tol : float, optional
        Stop when the sum of the row and column marginal errors (``error_norm``) is below ``tol``; default 1e-9
        for float64 problems, a reachable one for lower precisions (as in :func:`optnorm.ot.sinkhorn`).  Stopping
        at ``max_iter`` without reaching it gives ``converged=False`` and a :class:`optnorm.ConvergenceWarning`.
    max_iter : int, default 200
        Maximum number of Newton steps.
    n_sinkhorn : int, default 20
        Sinkhorn warm-start iterations (N1 in the paper).
    density : float in (0, 1], optional
        Initial fraction of kept entries per row (default max(8, m/50) entries).
    cg_tol : float, default 1e-10
    callback, callback_every : as in :func:`optnorm.ot.sinkhorn` (called per Newton step).
    error_norm : {1, 2}

    Returns
    -------
    SinkhornResult
        ``n_iter`` counts Sinkhorn warm-start iterations plus Newton steps.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import sinkhorn_newton_sparse
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.random((200, 2)), rng.random((200, 2))
    >>> M = ((x[:, None] - y[None]) ** 2).sum(-1)
    >>> r = sinkhorn_newton_sparse(np.full(200, 0.005), np.full(200, 0.005), M, 0.005)
    >>> r.converged and r.n_iter < 60
    True
    """
    cm.check_batch(a, b, M, "sinkhorn_newton_sparse")
    if not compat.is_concrete(M):
        raise TypeError("sinkhorn_newton_sparse: M must be a concrete array (not a JAX tracer): the line search and "
                        "the sparsification branch on values")
    with compat.no_grad(a, b, M):
        return _sns(a, b, M, float(reg), tol=tol, max_iter=max_iter, n_sinkhorn=n_sinkhorn, density=density,
                    cg_tol=float(cg_tol), callback=callback, callback_every=callback_every, error_norm=error_norm)


def _sns(a, b, M, reg, *, tol, max_iter, n_sinkhorn, density, cg_tol, callback, callback_every, error_norm):
    xp, ab, bb, Mb, batched = cm.prep(a, b, M)
    tol = cm.default_tol(tol, Mb.dtype)
    m = Mb.shape[2]
    k0 = min(m, max(8, m // 50)) if density is None else min(m, max(1, math.ceil(float(density) * m)))
    fs, gs, iters, conv_all, stop_any, errors = [], [], 0, True, False, []
    dev = compat.device(Mb)
    for p in range(Mb.shape[0]):
        a_p, b_p, M_p = ab[p, ...], bb[p, ...], Mb[p, ...]
        f = xp.zeros((1, M_p.shape[0]), dtype=Mb.dtype, device=dev)
        g = xp.zeros((1, m), dtype=Mb.dtype, device=dev)
        n1 = 0
        converged = stopped = False
        if n_sinkhorn > 0:
            f, g, n1, converged, _ = cm.sinkhorn_loop(
                cm.log_weights(a_p[None, ...], xp), cm.log_weights(b_p[None, ...], xp), b_p[None, ...],
                M_p[None, ...], reg, f, g, tol=tol, max_iter=n_sinkhorn, check_every=10, callback=None,
                callback_every=10, xp=xp, errors=errors, error_norm=error_norm)
        f, g = f[0, ...], g[0, ...]
        n_newton = 0
        if not converged:
            f, g, n_newton, converged, stopped = _newton(
                a_p, b_p, M_p, reg, f, g, tol=tol, max_newton=max_iter, k0=k0, cg_tol=cg_tol, callback=callback,
                callback_every=callback_every, errors=errors, it0=n1, xp=xp, error_norm=error_norm)
        fs.append(f)
        gs.append(g)
        iters = max(iters, n1 + n_newton)
        conv_all = conv_all and converged
        stop_any = stop_any or stopped
    cm.warn_if_not_converged("sinkhorn_newton_sparse", M, conv_all, stop_any, iters, errors, tol)
    return cm.make_result(xp.stack(fs), xp.stack(gs), ab, bb, Mb, reg, tol, iters, conv_all, errors, batched, M, xp)
