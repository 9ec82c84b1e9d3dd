"""Tangent-space features of SPD matrices (pyRiemann's ``tangent_space`` / ``untangent_space``): the logarithmic
map at a reference matrix, then the upper triangle with sqrt(2) weights off the diagonal."""
from __future__ import annotations

import math

import numpy as np

from .._lib import compat
from .._lib.api import public
from .._lib.roles import SPD, Bool, Choice, Float
from .._lib.typing import Array
from ._linalg import sym, upcast
from .metrics import METRIC_ALIASES, spd_exp, require_finite, spd_log, sqrt_and_invsqrt, metric_object

METRICS = tuple(METRIC_ALIASES)


def _triu(n):
    """Row-major upper-triangle indices (``np.triu_indices``) as flat indices, and their weights."""
    i, j = np.triu_indices(n)
    return i * n + j, np.where(i == j, 1.0, math.sqrt(2.0))


def upper(S, xp):
    """``(..., n, n)`` symmetric -> ``(..., n(n+1)/2)``: the upper triangle row by row, off-diagonal entries
    times sqrt(2), so that the Euclidean norm of the vector is the Frobenius norm of ``S``."""
    n = S.shape[-1]
    idx, wts = _triu(n)
    flat = xp.reshape(S, tuple(S.shape[:-2]) + (n * n,))
    dev = compat.device(S)
    v = xp.take(flat, xp.asarray(idx, device=dev), axis=-1)
    return v * xp.asarray(wts, dtype=S.dtype, device=dev)


def unupper(T, n, xp):
    """Inverse of :func:`upper` (a gather, no scatter: every backend)."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    # position of (lo, hi) in the row-major upper triangle
    pos = lo * n - lo * (lo - 1) // 2 + (hi - lo)
    scale = np.where(i == j, 1.0, 1.0 / math.sqrt(2.0))
    dev = compat.device(T)
    full = xp.take(T, xp.asarray(pos.reshape(-1), device=dev), axis=-1)
    full = full * xp.asarray(scale.reshape(-1), dtype=T.dtype, device=dev)
    return xp.reshape(full, tuple(T.shape[:-1]) + (n, n))


@public(X=SPD(gate="check"), reference=SPD(gate="check"), metric=Choice(METRICS), check=Bool())
def tangent_space(X: Array, reference: Array, *, metric: str = "airm", check: bool = True) -> Array:
    r"""Tangent-space vectors of SPD matrices at a reference point, exactly as pyRiemann's ``tangent_space`` /
    ``TangentSpace``.

    .. math::

        t(X) = \mathrm{upper}\bigl(\log(C^{-1/2}XC^{-1/2})\bigr)\ \ (\text{AIRM}),\qquad
        t(X) = \mathrm{upper}\bigl(\mathrm{Log}_C X\bigr)\ \ (\text{other metrics}),

    :math:`\mathrm{upper}(S) = (S_{ij}\,c_{ij})_{i\le j}` in row-major order (``np.triu_indices``) with
    :math:`c_{ii} = 1`, :math:`c_{ij} = \sqrt2`, so :math:`\|\mathrm{upper}(S)\|_2 = \|S\|_F`; for AIRM
    :math:`\|t(X)\|_2 = d_{AIRM}(X, C)` (Barachant, Bonnet, Congedo, Jutten, "Multiclass brain-computer
    interface classification by Riemannian geometry", IEEE TBME 2012, eq. 7).  AIRM uses the *whitened*
    logarithm (pyRiemann's ``log_map_riemann`` default); ``"lem"`` the differential form
    :math:`D\exp_{\log C}[\log X - \log C]` (pyRiemann 0.12's ``log_map_logeuclid``); ``"log_cholesky"``
    and ``"bw"`` the metrics' logarithms.  pyRiemann's names (``"riemann"``, ``"logeuclid"``,
    ``"logchol"``, ``"wasserstein"``) are accepted.  Under torch autograd and JAX transformations the AIRM map
    differentiates through the registered :func:`invsqrtm` and :func:`logm` (Daleckii-Krein VJPs).

    Parameters
    ----------
    X : array (..., n, n)
        SPD matrices.
    reference : array (..., n, n)
        The SPD reference point (usually one (n, n) matrix, e.g. the class-independent mean), broadcast
        against ``X``.
    metric : {"airm", "lem", "log_cholesky", "bw", "bures_wasserstein", "riemann", "logeuclid", "logchol", "wasserstein"}
    check : bool
        Validate finiteness, symmetry and positive definiteness; ``False`` skips it.

    Returns
    -------
    array (..., n (n + 1) / 2)

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> t = spd.tangent_space(np.diag([np.e, 1.0]), np.eye(2))
    >>> t.tolist()
    [1.0, 0.0, 0.0]
    """
    xp = compat.array_namespace(X, reference)
    Xc, dt = upcast(X, xp)
    C = sym(compat.cast(reference, Xc.dtype, xp), xp)
    Xc = sym(Xc, xp)
    key = METRIC_ALIASES[metric]
    if key == "airm":
        _, Ci = sqrt_and_invsqrt(C, xp)
        S = spd_log(sym(Ci @ Xc @ Ci, xp), xp)
    else:
        S = metric_object(key).log(C, Xc, check=False)
    return compat.cast(upper(S, xp), dt, xp)


@public(T=Float("... k", finite=True, gate="check"), reference=SPD(gate="check"), metric=Choice(METRICS),
        check=Bool(), sizes={"k": 6, "n": 3})
def untangent_space(T: Array, reference: Array, *, metric: str = "airm", check: bool = True) -> Array:
    r"""SPD matrices from tangent-space vectors: the inverse of :func:`tangent_space` (pyRiemann's
    ``untangent_space``).

    .. math::

        X = C^{1/2}\exp\bigl(\mathrm{unupper}(t)\bigr)C^{1/2}\ \ (\text{AIRM}),\qquad
        X = \mathrm{Exp}_C\bigl(\mathrm{unupper}(t)\bigr)\ \ (\text{other metrics}),

    ``unupper`` fills the symmetric matrix from the row-major upper triangle and divides the off-diagonal
    entries by :math:`\sqrt2`; ``n`` is read from the length :math:`k = n(n+1)/2` of the vectors.  AIRM and the
    log-Euclidean and log-Cholesky metrics map every vector to an SPD matrix; BW only vectors small enough for
    :math:`I + L` to stay positive definite (it is geodesically incomplete).

    Parameters
    ----------
    T : array (..., k)
        Tangent vectors, ``k = n (n + 1) / 2``.
    reference : array (..., n, n)
        The SPD reference point used by :func:`tangent_space`.
    metric : {"airm", "lem", "log_cholesky", "bw", "bures_wasserstein", "riemann", "logeuclid", "logchol", "wasserstein"}
    check : bool
        Validate finiteness of ``T`` and the reference; ``False`` skips it.

    Returns
    -------
    array (..., n, n)

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> C = np.array([[2.0, 0.5], [0.5, 1.0]]); X = np.array([[1.0, 0.2], [0.2, 3.0]])
    >>> np.allclose(spd.untangent_space(spd.tangent_space(X, C), C), X)
    True
    """
    n = reference.shape[-1]
    k = T.shape[-1]
    if k != n * (n + 1) // 2:
        raise ValueError(f"untangent_space: T has {k} entries per vector, but a reference of size {n} needs "
                         f"n (n + 1) / 2 = {n * (n + 1) // 2}")
    xp = compat.array_namespace(T, reference)
    Tc, dt = upcast(T, xp)
    C = sym(compat.cast(reference, Tc.dtype, xp), xp)
    S = unupper(Tc, n, xp)
    key = METRIC_ALIASES[metric]
    if key == "airm":
        H, _ = sqrt_and_invsqrt(C, xp)
        X = sym(H @ spd_exp(S, xp) @ H, xp)
    else:
        X = metric_object(key).exp(C, S, check=False)
    return require_finite(compat.cast(X, dt, xp), "untangent_space", "T", xp)
