"""Sinkhorn-Newton-Sparse (SNS): Sinkhorn warm start, then Newton steps with a sparsified Hessian."""
from __future__ import annotations

import math

import numpy as np

from .._lib import compat, validate
from .sinkhorn import SinkhornState, _cg, _log, _log_loop, _make_result, _no_grad, _norm, _prep

__all__ = ["sinkhorn_newton_sparse"]


def _plan(f, g, M, reg, xp):
    return xp.exp((f[:, None] + g[None, :] - M) / reg)


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
        if compat.is_numpy(P):
            import scipy.sparse as sp

            if k < self.m:
                idx = np.argpartition(P, self.m - k, axis=1)[:, self.m - k:]
            else:
                idx = np.broadcast_to(np.arange(self.m), (self.n, self.m))
            rows = np.repeat(np.arange(self.n), idx.shape[1])
            vals = np.take_along_axis(P, idx, axis=1).ravel()
            self.S = sp.csr_matrix((vals, (rows, idx.ravel())), shape=(self.n, self.m))
            self.ST = self.S.T.tocsr()
            self.nnz = self.S.nnz
        else:
            thr = xp.sort(P, axis=1)[:, self.m - k][:, None]
            self.S = xp.where(P >= thr, P, xp.zeros_like(P))
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
        if compat.is_numpy(w):
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
    converged = False
    e_prev = math.inf
    while True:
        ra = a - xp.sum(P, axis=1)
        rb = b - xp.sum(P, axis=0)
        e = float(_norm(ra, error_norm, xp) + _norm(rb, error_norm, xp))
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
            if callback(SinkhornState(it0 + it, f, g, e)):
                break
        H = _SparseHessian(P, k, xp)
        rhs = xp.concat([ra, rb])[None, :]
        d = _cg(H.matvec, rhs, lambda w: w / H.diag, xp, tol=cg_tol, max_iter=1000)[0, ...]
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
            lg = _log(b, xp)
            la = _log(a, xp)
            g = reg * (lg - _lse_axis((f[:, None] - M) / reg, 0, xp))
            f = reg * (la - _lse_axis((g[None, :] - M) / reg, 1, xp))
            F, P = _dual(f, g, a, b, M, reg, xp)
            continue
        f, g, F, P = f_new, g_new, F_new, P_new
    return f, g, it, converged, k


def _lse_axis(z, axis, xp):
    mx = xp.max(z, axis=axis, keepdims=True)
    mx = xp.where(xp.isfinite(mx), mx, xp.zeros_like(mx))
    return xp.log(xp.sum(xp.exp(z - mx), axis=axis)) + xp.squeeze(mx, axis=axis)


def sinkhorn_newton_sparse(a, b, M, reg, *, tol=1e-9, max_iter=200, n_sinkhorn=20, density=None, cg_tol=1e-10,
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
    tol : float, default 1e-9
        Stop when the sum of the row and column marginal errors (``error_norm``) is below ``tol``.
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
    with _no_grad(a, b, M):
        return _sns(a, b, M, reg, tol=tol, max_iter=max_iter, n_sinkhorn=n_sinkhorn, density=density, cg_tol=cg_tol,
                    callback=callback, callback_every=callback_every, error_norm=error_norm)


def _sns(a, b, M, reg, *, tol, max_iter, n_sinkhorn, density, cg_tol, callback, callback_every, error_norm):
    xp, reg, ab, bb, Mb, batched = _prep(a, b, M, reg, tol=tol, max_iter=max_iter)
    n_sinkhorn = validate.check_int(n_sinkhorn, "n_sinkhorn", low=0)
    callback_every = validate.check_int(callback_every, "callback_every", low=1)
    cg_tol = validate.check_positive(cg_tol, "cg_tol")
    validate.check_in(error_norm, (1, 2), "error_norm")
    m = Mb.shape[2]
    if density is None:
        k0 = min(m, max(8, m // 50))
    else:
        density = validate.check_positive(density, "density")
        if density > 1:
            raise ValueError(f"density must be in (0, 1], got {density}")
        k0 = min(m, max(1, math.ceil(density * m)))
    if not compat.is_concrete(Mb):
        raise TypeError("sinkhorn_newton_sparse needs concrete arrays (not JAX tracers): its line search and "
                        "sparsification branch on values")
    us, vs, iters, conv_all, errors = [], [], 0, True, []
    for p in range(Mb.shape[0]):
        a_p, b_p, M_p = ab[p, ...], bb[p, ...], Mb[p, ...]
        la, lb = _log(a_p[None, ...], xp), _log(b_p[None, ...], xp)
        u0 = xp.zeros((1, M_p.shape[0]), dtype=Mb.dtype, device=compat.device(Mb))
        v0 = xp.zeros((1, m), dtype=Mb.dtype, device=compat.device(Mb))
        n1 = 0
        converged = False
        if n_sinkhorn > 0:
            u, v, _, n1, converged, _ = _log_loop(la, lb, b_p[None, ...], M_p[None, ...], reg, u0, v0, tol=tol,
                                                  max_iter=n_sinkhorn, check_every=10, callback=None,
                                                  callback_every=10, xp=xp, errors=errors,
                                                  error_norm=error_norm)
        else:
            u, v = u0, v0
        f, g = reg * u[0, ...], reg * v[0, ...]
        n_newton = 0
        if not converged:
            f, g, n_newton, converged, _ = _newton(a_p, b_p, M_p, reg, f, g, tol=tol, max_newton=max_iter, k0=k0,
                                                   cg_tol=cg_tol, callback=callback,
                                                   callback_every=callback_every, errors=errors, it0=n1, xp=xp,
                                                   error_norm=error_norm)
        us.append(f / reg)
        vs.append(g / reg)
        iters = max(iters, n1 + n_newton)
        conv_all = conv_all and converged
    u = xp.stack(us)
    v = xp.stack(vs)
    return _make_result(u, v, ab, bb, Mb, reg, iters, conv_all, errors, batched, M, xp)
