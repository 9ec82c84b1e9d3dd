"""Pairwise distance matrices between stacks of SPD matrices and the minimum-distance-to-mean (MDM) decision."""
from __future__ import annotations

import numpy as np

from .._lib import compat
from .._lib.api import public
from .._lib.dispatch import Dispatcher, numpy_float
from .._lib.roles import SPD, Bool, Choice
from .._lib.typing import Array
from ._linalg import _BW_RTOL, bw2, bw2_procrustes, funm, mT, sym, upcast
from .metrics import METRIC_ALIASES

METRICS = tuple(METRIC_ALIASES)
_RANGE = ("pairwise_distances: the generalized eigenvalues of a pair leave the dtype's range (matrices that differ "
          "in magnitude by more than it spans, or are singular to working precision)")


def _features(X, key, xp):
    """Flat Euclidean coordinates of the flat metrics: ``log X`` (LEM) or ``(lower(L), log diag(L))``
    (log-Cholesky), so that the distance is the Euclidean distance of the features."""
    n = X.shape[-1]
    if key == "lem":
        return xp.reshape(funm(X, "log", xp)[0], (X.shape[0], n * n))
    L = xp.linalg.cholesky(X)
    return xp.concat([xp.reshape(xp.tril(L, k=-1), (X.shape[0], n * n)), xp.log(xp.linalg.diagonal(L))], axis=-1)


def _blocks(m, per_row):
    """Row blocks holding about 2 million entries each."""
    b = max(1, int(2_000_000 // max(per_row, 1)))
    return [(i, min(m, i + b)) for i in range(0, m, b)]


_pairwise = Dispatcher("spd.pairwise_distances", serves=("spd.pairwise_distances", "spd.nearest_mean"))


@_pairwise.generic
def _pairwise_generic(X, Y, *, key, check, xp):
    """(m, k) squared distances, row block by row block (broadcast pairs, no Python loop over pairs)."""
    Z = X if Y is None else Y
    m, k, n = X.shape[0], Z.shape[0], X.shape[-1]
    rows = []
    if key in ("lem", "log_cholesky"):
        F = _features(X, key, xp)
        G = F if Y is None else _features(Z, key, xp)
        for i0, i1 in _blocks(m, k * F.shape[-1]):
            D = F[i0:i1, None, :] - G[None, :, :]
            rows.append(xp.sum(D * D, axis=-1))
        return xp.concat(rows, axis=0)
    from .distances import AIRM_RANGE, airm2_generic

    for i0, i1 in _blocks(m, k * n * n * 4):
        A, B = X[i0:i1, None, :, :], Z[None, :, :, :]
        if key == "bw":
            rows.append(bw2(A, B, xp))
        else:
            d2, low = airm2_generic(A, B, xp=xp)
            if check and low is not None and bool(xp.any(low)):
                raise ValueError(AIRM_RANGE.replace("airm_distance", "pairwise_distances"))
            rows.append(d2)
    D2 = xp.concat(rows, axis=0)
    if Y is None:     # exactly symmetric, exact zeros on the diagonal (as the Numba path, which computes j > i)
        D2 = (D2 + mT(D2, xp)) / 2 * (1.0 - compat.eye(m, like=D2, xp=xp))
    return D2


@_pairwise.numba(when=lambda X, Y, **kw: numpy_float(X, Y) and X.shape[-1] <= 64)
def _pairwise_numba(X, Y, *, key, check, xp):
    """Numba kernels over the pairs (optnorm/_numba/spd_lanes.py: eight columns of a row per SIMD lane group;
    spd_distances.py: Euclidean features), only ``j > i`` for ``Y = None``, rows interleaved across threads."""
    from .._numba import spd_distances as nb
    from .._numba import spd_lanes as nl

    if key in ("lem", "log_cholesky"):
        F = _features(X, key, xp)
        return nb.sqeuclidean_pairwise(F, None if Y is None else _features(Y, key, xp)).astype(X.dtype, copy=False)
    if key == "airm":
        d2, flag = nl.airm_dist2_pairwise_lanes(X, Y)
        if check and flag.any():
            raise ValueError(_RANGE)
        return d2.astype(X.dtype, copy=False)
    d2, err = nl.bw_dist2_pairwise_lanes(X, Y)
    need = err > _BW_RTOL.get(str(X.dtype), 1e-4) * d2
    if need.any():
        i, j = np.nonzero(need)
        Z = X if Y is None else Y
        d2[i, j] = bw2_procrustes(X[i].astype(np.float64), Z[j].astype(np.float64), xp)
    return d2.astype(X.dtype, copy=False)


def _example(rng, dtype):
    def mats(m):
        a = rng.standard_normal((m, 3, 6))
        return (a @ np.swapaxes(a, -1, -2) / 6 + 0.5 * np.eye(3)).astype(dtype)
    return (mats(4), mats(2)), {}


@_pairwise.cuda(when=lambda X, Y, **kw: str(X.dtype) in ("float32", "float64") and X.shape[-1] <= 32)
def _pairwise_cuda(X, Y, *, key, check, xp):
    """One CUDA thread per pair (optnorm/_cuda/spd.cu: airm_dist2_pairwise, bw_dist2_pairwise) for AIRM and BW;
    LEM and log-Cholesky map to Euclidean features (the generic path, GEMM-friendly on a GPU)."""
    if key in ("lem", "log_cholesky"):
        return _pairwise_generic(X, Y, key=key, check=check, xp=xp)
    import cupy

    from .._cuda import launch

    sym_ = Y is None
    Xc = cupy.ascontiguousarray(X)
    Yc = Xc if sym_ else cupy.ascontiguousarray(Y)
    m, k, n = Xc.shape[0], Yc.shape[0], Xc.shape[-1]
    out = cupy.empty((m, k), dtype=X.dtype)
    if key == "airm":
        low = cupy.zeros((m, k), dtype=cupy.int32)
        launch.grid2d("spd", "airm_dist2_pairwise", X.dtype, m, k, (Xc, Yc, out, low, m, k, np.int32(n),
                                                                   np.int32(sym_)))
        if check and bool(low.any()):
            raise ValueError(_RANGE)
        return out + out.T if sym_ else out
    err = cupy.empty((m, k), dtype=X.dtype)
    launch.grid2d("spd", "bw_dist2_pairwise", X.dtype, m, k, (Xc, Yc, out, err, m, k, np.int32(n), np.int32(sym_)))
    if sym_:
        out, err = out + out.T, err + err.T
    need = err > _BW_RTOL.get(str(X.dtype), 1e-4) * out
    if bool(need.any()):
        i, j = cupy.nonzero(need)
        Z = Xc if sym_ else Yc
        out[i, j] = bw2_procrustes(Xc[i], Z[j], xp)
    return out


@public(X=SPD("m n n", gate="check"), Y=SPD("k n n", optional=True, gate="check"), metric=Choice(METRICS),
        squared=Bool(), check=Bool(), example=_example)
def pairwise_distances(X: Array, Y: Array | None = None, *, metric: str = "airm", squared: bool = False,
                       check: bool = True) -> Array:
    r"""Matrix of distances between two stacks of SPD matrices (pyRiemann's ``pairwise_distance``).

    .. math::

        D_{ij} = d(X_i, Y_j),\qquad d_{AIRM}(A, B) = \bigl\|\log(A^{-1/2}BA^{-1/2})\bigr\|_F,\quad
        d_{LEM}(A, B) = \|\log A - \log B\|_F,\quad d_{BW}^2(A, B) = \operatorname{tr}A + \operatorname{tr}B -
        2\operatorname{tr}(A^{1/2}BA^{1/2})^{1/2}

    and the log-Cholesky distance (see :func:`airm`, :func:`lem`, :func:`log_cholesky`,
    :func:`bures_wasserstein`).  ``Y=None`` is ``X`` with itself: each pair is computed once and the diagonal
    is exactly 0.  On NumPy float32/float64 (n <= 64) Numba kernels run over the pairs: AIRM and BW factor each
    ``X_i`` once (Cholesky) and solve one tridiagonal eigenvalue problem per pair, with the accuracy of
    :func:`airm_distance` and :func:`bw_distance` (difference form for close AIRM pairs, Procrustes
    recomputation for cancelling BW pairs); LEM and log-Cholesky map every matrix once to Euclidean features
    and take explicit differences.  Other backends use the same formulas batched over row blocks.
    pyRiemann's metric names (``"riemann"``, ``"logeuclid"``, ``"logchol"``, ``"wasserstein"``) are accepted.

    Parameters
    ----------
    X : array (m, n, n)
        SPD matrices.
    Y : array (k, n, n), optional
        SPD matrices; ``None`` means ``X``.
    metric : {"airm", "lem", "log_cholesky", "bw", "bures_wasserstein", "riemann", "logeuclid", "logchol", "wasserstein"}
    squared : bool
        Return squared distances.
    check : bool
        Validate finiteness, symmetry and positive definiteness; ``False`` skips it.

    Returns
    -------
    array (m, k)

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> X = np.stack([np.eye(2), np.e * np.eye(2)])
    >>> np.round(spd.pairwise_distances(X), 6).tolist()
    [[0.0, 1.414214], [1.414214, 0.0]]
    """
    xp = compat.array_namespace(X, Y)
    Xc, dt = upcast(X, xp)
    Xc = sym(Xc, xp)
    Yc = None if Y is None else sym(compat.cast(Y, Xc.dtype, xp), xp)
    d2 = _pairwise(Xc, Yc, key=METRIC_ALIASES[metric], check=check, xp=xp)
    d2 = xp.maximum(d2, 0.0)
    return compat.cast(d2 if squared else xp.sqrt(d2), dt, xp)


@public(X=SPD(gate="check"), means=SPD("k n n", gate="check"), metric=Choice(METRICS), return_distances=Bool(),
        check=Bool())
def nearest_mean(X: Array, means: Array, *, metric: str = "airm", return_distances: bool = False,
                 check: bool = True) -> Array | tuple[Array, Array]:
    r"""Minimum-distance-to-mean decision (pyRiemann's ``MDM.predict``): the index of the closest class mean.

    .. math::

        \hat y(X) = \arg\min_{c} d(X, M_c)

    (Barachant, Bonnet, Congedo, Jutten, "Multiclass brain-computer interface classification by Riemannian
    geometry", IEEE TBME 2012).  Ties go to the first class (``argmin``).  With the class means from a metric
    object the classifier is three lines::

        g = spd.airm()
        means = np.stack([g.mean(C_train[y_train == c]).mean for c in classes])
        y_pred = classes[spd.nearest_mean(C_test, means)]

    Parameters
    ----------
    X : array (..., n, n)
        SPD matrices to classify.
    means : array (k, n, n)
        The class means (SPD).
    metric : {"airm", "lem", "log_cholesky", "bw", "bures_wasserstein", "riemann", "logeuclid", "logchol", "wasserstein"}
    return_distances : bool
        Also return the distances to every mean (pyRiemann's ``MDM.transform``).
    check : bool
        Validate finiteness, symmetry and positive definiteness; ``False`` skips it.

    Returns
    -------
    labels : int array (...)
        Index of the nearest mean.
    distances : array (..., k)
        Only with ``return_distances=True``.

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> means = np.stack([np.eye(2), 10 * np.eye(2)])
    >>> spd.nearest_mean(np.stack([1.5 * np.eye(2), 8 * np.eye(2)]), means).tolist()
    [0, 1]
    """
    xp = compat.array_namespace(X, means)
    n = X.shape[-1]
    lead = tuple(X.shape[:-2])
    flat = xp.reshape(X, (-1, n, n))
    D = pairwise_distances(flat, means, metric=metric, check=False)
    labels = xp.reshape(xp.argmin(D, axis=-1), lead)
    if return_distances:
        return labels, xp.reshape(D, lead + (means.shape[0],))
    return labels
