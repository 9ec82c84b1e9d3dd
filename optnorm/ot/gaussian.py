"""Closed-form 2-Wasserstein distance between Gaussians (the Bures-Wasserstein distance plus the mean term)."""
from __future__ import annotations

from .._lib.vjp import unbroadcast
from .._lib import compat, ops, validate

__all__ = ["gaussian_wasserstein"]


# ---------------------------------------------------------------------------------------------- helpers
def _batch_shape(*shapes) -> tuple[int, ...]:
    out: list[int] = []
    for i in range(1, max(len(s) for s in shapes) + 1):
        sizes = {s[-i] for s in shapes if i <= len(s)} - {1}
        out.append(sizes.pop() if sizes else 1)
    return tuple(reversed(out))


def _sym(a, xp):
    return 0.5 * (a + xp.matrix_transpose(a))


def _eigh_psd(a, xp):
    """Eigen-decomposition of a symmetric PSD stack; eigenvalues below the round-off level are set to 0.

    The level is ``d * eps * max |eigenvalue|``: without it, a round-off eigenvalue of 1e-16 in a singular
    direction would add its square root (1e-8) to the trace term.
    """
    w, v = xp.linalg.eigh(a)
    tol = a.shape[-1] * float(xp.finfo(w.dtype).eps) * xp.max(xp.abs(w), axis=-1, keepdims=True)
    return xp.where(w > tol, w, xp.zeros_like(w)), v


def _from_eig(v, f, xp):
    """``v @ diag(f) @ v^T`` for a stack."""
    return (v * f[..., None, :]) @ xp.matrix_transpose(v)


def _floor(w, xp):
    """Positive floor for inverting (square roots of) PSD eigenvalues: eps * max eigenvalue per matrix."""
    eps = float(xp.finfo(w.dtype).eps)
    top = xp.max(w, axis=-1, keepdims=True)
    return xp.maximum(w, eps * top + xp.finfo(w.dtype).smallest_normal)


def _check(m1, C1, m2, C2):
    for nm, a in (("m1", m1), ("C1", C1), ("m2", m2), ("C2", C2)):
        validate.check_float(a, nm)
    xp = validate.check_same_namespace(m1=m1, C1=C1, m2=m2, C2=C2)
    for nm, m, C in (("1", m1, C1), ("2", m2, C2)):
        if m.ndim < 1:
            raise ValueError(f"m{nm} must have shape (..., d), got shape {tuple(m.shape)}")
        validate.check_square(C, f"C{nm}")
    d = m1.shape[-1]
    for nm, a in (("m2", m2), ("C1", C1), ("C2", C2)):
        if a.shape[-1] != d:
            raise ValueError(f"{nm} has shape {tuple(a.shape)}: its last dimension must be d = {d} (m1 has shape "
                             f"{tuple(m1.shape)})")
    if d == 0:
        raise ValueError(f"m1 is empty (shape {tuple(m1.shape)}): the dimension d must be >= 1")
    batch = validate.check_broadcastable("m1", m1.shape[:-1], "C1", C1.shape[:-2])
    batch = validate.check_broadcastable("the batch of (m1, C1)", batch, "m2", m2.shape[:-1])
    validate.check_broadcastable("the batch of (m1, C1, m2)", batch, "C2", C2.shape[:-2])
    for nm, a in (("m1", m1), ("C1", C1), ("m2", m2), ("C2", C2)):
        validate.check_finite(compat.to_numpy(a) if compat.is_jax(a) and compat.is_concrete(a) else a, nm)
    return xp


# ---------------------------------------------------------------------------------------------- core
def _forward(m1, C1, m2, C2, squared):
    xp = _check(m1, C1, m2, C2)
    dtype = m1.dtype
    cdt = compat.compute_dtype(m1, xp)
    for a in (C1, m2, C2):
        if a.dtype == xp.float64:
            cdt = xp.float64
    m1c, C1c, m2c, C2c = (xp.astype(a, cdt) for a in (m1, C1, m2, C2))
    C1c, C2c = _sym(C1c, xp), _sym(C2c, xp)
    s1, V1 = _eigh_psd(C1c, xp)                      # C1 = V1 diag(s1) V1^T
    sq1 = xp.sqrt(s1)
    S1 = _from_eig(V1, sq1, xp)                      # C1^{1/2}
    Mid = _sym(S1 @ C2c @ S1, xp)                    # C1^{1/2} C2 C1^{1/2}
    lam, U = _eigh_psd(Mid, xp)
    sql = xp.sqrt(lam)
    dm = m1c - m2c
    mean_term = xp.sum(dm * dm, axis=-1)
    tr1 = xp.sum(xp.linalg.diagonal(C1c), axis=-1)
    tr2 = xp.sum(xp.linalg.diagonal(C2c), axis=-1)
    bw2 = mean_term + tr1 + tr2 - 2.0 * xp.sum(sql, axis=-1)
    bw2 = xp.clip(bw2, 0.0, None)                    # round-off can make a zero distance slightly negative
    batch = _batch_shape(m1.shape[:-1], C1.shape[:-2], m2.shape[:-1], C2.shape[:-2])
    bw2 = xp.broadcast_to(bw2, batch)
    y = bw2 if squared else xp.sqrt(bw2)
    res = dict(dm=dm, V1=V1, sq1=sq1, S1=S1, U=U, sql=sql, y=y, squared=squared, batch=batch,
               shapes=(tuple(m1.shape), tuple(C1.shape), tuple(m2.shape), tuple(C2.shape)),
               dtypes=(m1.dtype, C1.dtype, m2.dtype, C2.dtype))
    return xp.astype(y, dtype), res


def gaussian_wasserstein(m1, C1, m2, C2, *, squared=False):
    r"""2-Wasserstein distance between Gaussians :math:`N(m_1, C_1)` and :math:`N(m_2, C_2)`, in closed form.

    .. math::

        W_2^2 = \|m_1 - m_2\|^2 + \operatorname{tr}\big(C_1 + C_2 - 2\,(C_1^{1/2} C_2 C_1^{1/2})^{1/2}\big)

    (Dowson & Landau, "The Fréchet distance between multivariate normal distributions", 1982; Olkin & Pukelsheim,
    1982; the trace term is the squared Bures distance).  Matrix square roots use a symmetric eigendecomposition
    with negative round-off eigenvalues clamped to zero, so PSD (singular) covariances are accepted; the result is
    clamped at 0 before the root.  Covariances are symmetrised, ``(C + C^T)/2``.

    Parameters
    ----------
    m1, m2 : array, shape (..., d)
        Means.  Leading axes broadcast against each other and against those of ``C1``/``C2``.
    C1, C2 : array, shape (..., d, d)
        Covariances (symmetric positive semi-definite).
    squared : bool, default False
        Return :math:`W_2^2` instead of :math:`W_2`.

    Returns
    -------
    array, shape = broadcast batch shape
        The distance (or its square), in the dtype of ``m1`` (float16/bfloat16 computed in float32).

    Notes
    -----
    VJP (registered as ``"ot.gaussian_wasserstein"``): :math:`\partial W_2^2/\partial m_1 = 2(m_1 - m_2)`,
    :math:`\partial W_2^2/\partial C_1 = I - T_{12}` with the Monge map
    :math:`T_{12} = C_1^{-1/2}(C_1^{1/2} C_2 C_1^{1/2})^{1/2} C_1^{-1/2}`, and
    :math:`\partial W_2^2/\partial C_2 = I - T_{12}^{-1}`.  For a singular covariance the inverse square roots are
    taken on eigenvalues floored at ``eps * max eigenvalue`` (the distance is not differentiable there).
    At :math:`W_2 = 0` the gradient of the unsquared distance is set to 0.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import gaussian_wasserstein
    >>> m1, m2 = np.zeros(2), np.ones(2)
    >>> C1, C2 = np.eye(2), 4 * np.eye(2)
    >>> float(gaussian_wasserstein(m1, C1, m2, C2, squared=True))   # |m1-m2|^2 + tr(I + 4I - 2*2I)
    4.0
    """
    return _forward(m1, C1, m2, C2, squared)[0]


def gaussian_wasserstein_fwd(m1, C1, m2, C2, *, squared=False):
    return _forward(m1, C1, m2, C2, squared)


def gaussian_wasserstein_bwd(res, dy):
    dm, V1, sq1, S1, U, sql, y = (res[k] for k in ("dm", "V1", "sq1", "S1", "U", "sql", "y"))
    xp = compat.array_namespace(dm)
    dy = xp.astype(dy, y.dtype)
    if res["squared"]:
        g = dy                                       # d y / d bw2 = 1
    else:
        safe = xp.where(y > 0, y, xp.ones_like(y))
        g = xp.where(y > 0, dy / (2.0 * safe), xp.zeros_like(y))
    d = dm.shape[-1]
    eye = xp.eye(d, dtype=dm.dtype)
    # T12 = S1^{-1} Mid^{1/2} S1^{-1};  T21 = T12^{-1} = S1 Mid^{-1/2} S1
    S1inv = _from_eig(V1, 1.0 / _floor(sq1, xp), xp)
    MidSqrt = _from_eig(U, sql, xp)
    MidInvSqrt = _from_eig(U, 1.0 / _floor(sql, xp), xp)
    T12 = _sym(S1inv @ MidSqrt @ S1inv, xp)
    T21 = _sym(S1 @ MidInvSqrt @ S1, xp)
    gm = g[..., None]
    gC = g[..., None, None]
    d_m1 = 2.0 * gm * dm
    d_C1 = gC * (eye - T12)
    d_C2 = gC * (eye - T21)
    s_m1, s_C1, s_m2, s_C2 = res["shapes"]
    t_m1, t_C1, t_m2, t_C2 = res["dtypes"]
    return (xp.astype(unbroadcast(d_m1, s_m1, xp), t_m1), xp.astype(unbroadcast(d_C1, s_C1, xp), t_C1),
            xp.astype(unbroadcast(-d_m1, s_m2, xp), t_m2), xp.astype(unbroadcast(d_C2, s_C2, xp), t_C2))


ops.register("ot.gaussian_wasserstein", gaussian_wasserstein, gaussian_wasserstein_fwd, gaussian_wasserstein_bwd)
