"""Gaussian models of features: Mahalanobis distance (Cholesky solve) and class-conditional Gaussian fits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._lib.vjp import unbroadcast
from .._lib import compat, ops, validate

__all__ = ["mahalanobis", "gaussian_fit", "GaussianFit"]


def _cholesky(cov, name, xp):
    """Cholesky factor; a matrix that is not SPD raises naming ``name`` and its smallest eigenvalue."""
    try:
        L = xp.linalg.cholesky(cov)
    except Exception:  # numpy LinAlgError, torch LinAlgError, ...: report the eigenvalue instead
        validate.check_spd(cov, name, xp, check_sym=False)
        raise
    if compat.is_concrete(L) and not bool(xp.all(xp.isfinite(L))):  # JAX returns NaN instead of raising
        validate.check_spd(cov, name, xp, check_sym=False)
    return L


def _solve_lower(L, b, xp):
    """Solve L z = b for z with b (..., d, k); broadcasting over batches."""
    return xp.linalg.solve(L, b)


def mahalanobis(x, mean, cov=None, precision=None, *, squared=False):
    """Mahalanobis distance d(x) = √((x − μ)ᵀ Σ⁻¹ (x − μ)), batched over leading axes.

    With ``cov`` it factors Σ = L Lᵀ (Cholesky) and solves L z = x − μ, so d² = ‖z‖²: no
    inverse is formed.  With ``precision`` P = Σ⁻¹ it computes (x − μ)ᵀ P (x − μ) directly.
    Used as the anomaly score of a Gaussian fitted to pre-trained features (Rippel, Mertens,
    Merhof, "Modeling the Distribution of Normal Data in Pre-Trained Deep Features for Anomaly
    Detection", ICPR 2020) and as the class-conditional OOD score of Lee, Lee, Lee, Shin, "A
    Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks"
    (NeurIPS 2018).  See :func:`gaussian_fit`.

    Parameters
    ----------
    x : array (..., d)
    mean : array (..., d), broadcasting with ``x``
    cov : array (..., d, d), optional
        SPD covariance; one matrix for all points or one per batch entry.  A matrix that is not
        positive definite raises ``ValueError`` reporting its smallest eigenvalue.
    precision : array (..., d, d), optional
        Inverse covariance, instead of ``cov`` (exactly one of the two).
    squared : bool
        Return d² instead of d.

    Returns
    -------
    array (...), the broadcast batch shape.

    Notes
    -----
    VJP (squared form, s = Σ⁻¹(x − μ)): ∂/∂x = 2s, ∂/∂μ = −2s, ∂/∂Σ = −s sᵀ, ∂/∂P = (x − μ)(x − μ)ᵀ.

    Examples
    --------
    >>> import numpy as np
    >>> float(mahalanobis(np.array([2.0, 0.0]), np.zeros(2), np.diag([4.0, 1.0])))
    1.0
    """
    return mahalanobis_fwd(x, mean, cov, precision, squared=squared)[0]


def mahalanobis_fwd(x, mean, cov=None, precision=None, *, squared=False):
    if (cov is None) == (precision is None):
        raise ValueError("pass exactly one of cov and precision")
    xp = validate.check_same_namespace(x=x, mean=mean, cov=cov, precision=precision)
    validate.check_float(x, "x", xp)
    validate.check_float(mean, "mean", xp)
    if x.ndim < 1:
        raise ValueError(f"x must have at least 1 dimension (..., d), got shape {tuple(x.shape)}")
    d = x.shape[-1]
    if mean.ndim < 1 or mean.shape[-1] != d:
        raise ValueError(f"mean has shape {tuple(mean.shape)}, its last axis must be d = {d} like x")
    mat_name = "cov" if cov is not None else "precision"
    mat = cov if cov is not None else precision
    validate.check_float(mat, mat_name, xp)
    validate.check_square(mat, mat_name)
    if mat.shape[-1] != d:
        raise ValueError(f"{mat_name} has shape {tuple(mat.shape)}, expected (..., {d}, {d}) for x of shape "
                         f"{tuple(x.shape)}")
    dt = compat.compute_dtype(x, xp)
    xc = xp.astype(x, dt)
    mc = xp.astype(mean, dt)
    M = xp.astype(mat, dt)
    diff = xc - mc
    bshape = tuple(diff.shape[:-1])
    if cov is not None:
        # the symmetric part is used (Cholesky reads one triangle only), so the VJP -s s^T is the
        # gradient for any perturbation, symmetric or not
        M = (M + xp.matrix_transpose(M)) / 2
        L = _cholesky(M, "cov", xp)
        if M.ndim == 2:
            # one factorisation shared by all points: one triangular solve with many right-hand sides
            flat = xp.reshape(diff, (-1, d))
            z = xp.matrix_transpose(_solve_lower(L, xp.matrix_transpose(flat), xp))
            s = xp.matrix_transpose(xp.linalg.solve(xp.matrix_transpose(L), xp.matrix_transpose(z)))
            z = xp.reshape(z, bshape + (d,))
            s = xp.reshape(s, bshape + (d,))
        else:
            full = validate.check_broadcastable("x", bshape, mat_name, M.shape[:-2])
            diff = xp.broadcast_to(diff, tuple(full) + (d,))
            bshape = tuple(full)
            Lb = xp.broadcast_to(L, tuple(full) + (d, d))
            z = _solve_lower(Lb, diff[..., None], xp)
            s = xp.linalg.solve(xp.matrix_transpose(Lb), z)[..., 0]
            z = z[..., 0]
        d2 = xp.sum(z * z, axis=-1)
    else:
        if M.ndim > 2:
            full = validate.check_broadcastable("x", bshape, mat_name, M.shape[:-2])
            diff = xp.broadcast_to(diff, tuple(full) + (d,))
        s = xp.matmul(M, diff[..., None])[..., 0] if M.ndim > 2 else xp.matmul(diff, xp.matrix_transpose(M))
        # s = P diff (for a symmetric P; the VJP below uses the symmetric part)
        d2 = xp.sum(diff * s, axis=-1)
    d2 = xp.maximum(d2, 0.0)
    y = d2 if squared else xp.sqrt(d2)
    res = (diff, s, y, squared, cov is not None, tuple(x.shape), tuple(mean.shape), tuple(mat.shape), x.dtype,
           mean.dtype, mat.dtype, M if cov is None else None)
    return (xp.astype(y, x.dtype) if y.dtype != x.dtype else y), res


def mahalanobis_bwd(res, dy):
    diff, s, y, squared, is_cov, sx, sm, smat, dtx, dtm, dtmat, P = res
    xp = compat.array_namespace(diff)
    g = xp.astype(dy, diff.dtype) if dy.dtype != diff.dtype else dy
    if not squared:
        g = xp.where(y > 0, g / (2 * xp.where(y > 0, y, 1.0)), 0.0)
    if is_cov:
        sv = s
    else:  # d² = diffᵀ P diff: gradient (P + Pᵀ) diff
        Ps = xp.matmul(xp.matrix_transpose(P), diff[..., None])[..., 0] if P.ndim > 2 else xp.matmul(diff, P)
        sv = (s + Ps) / 2
    gx = 2 * g[..., None] * sv
    dx = unbroadcast(gx, sx, xp)
    dmean = unbroadcast(-gx, sm, xp)
    if is_cov:
        gm = -g[..., None, None] * (s[..., :, None] * s[..., None, :])
    else:
        gm = g[..., None, None] * (diff[..., :, None] * diff[..., None, :])
    dmat = unbroadcast(gm, smat, xp)
    dx, dmean, dmat = (xp.astype(dx, dtx), xp.astype(dmean, dtm), xp.astype(dmat, dtmat))
    return (dx, dmean, dmat, None) if is_cov else (dx, dmean, None, dmat)


ops.register("spd.mahalanobis", mahalanobis, mahalanobis_fwd, mahalanobis_bwd)


# ---------------------------------------------------------------- Gaussian fit
@dataclass(frozen=True)
class GaussianFit:
    """Result of :func:`gaussian_fit`.

    means: (K, d) class means (K = 1 without labels); covariance: (d, d) tied or (K, d, d);
    precision: its inverse; cholesky: lower Cholesky factor of the covariance; classes: the
    sorted label values (host NumPy array) matching the rows of ``means``; counts: samples per
    class (host NumPy array); shrinkage: the shrinkage intensity used (float, or per class).
    """

    means: Any
    covariance: Any
    precision: Any
    cholesky: Any
    classes: Any
    counts: Any
    shrinkage: Any

    def mahalanobis(self, x, *, squared=False):
        """Distance of ``x`` (..., d) to every class: array (..., K)."""
        return mahalanobis(x[..., None, :], self.means, self.covariance, squared=squared)

    def score(self, x):
        """Lee et al.'s confidence score max_c −(x − μ_c)ᵀ Σ⁻¹ (x − μ_c): array (...)."""
        xp = compat.array_namespace(x)
        return xp.max(-self.mahalanobis(x, squared=True), axis=-1)


def _shrunk(xc, shrinkage, xp, dt):
    """Covariance of already centred data (maximum-likelihood scaling), shrunk as asked, and the intensity.

    Delegates to :func:`optnorm.spd.covariance` (``assume_centered=True``): ``"ledoit_wolf"`` / ``"oas"``
    choose ρ, a float is ρ itself, None is no shrinkage.
    """
    from .covariance import covariance

    if isinstance(shrinkage, str):
        C, rho = covariance(xc, estimator=shrinkage, assume_centered=True, return_shrinkage=True)
    else:
        C, rho = covariance(xc, estimator="scm", shrinkage=shrinkage, assume_centered=True, return_shrinkage=True)
    return _as_dt(C, dt, xp), float(rho)


def _as_dt(a, dt, xp):
    return a if a.dtype == dt else xp.astype(a, dt)


def gaussian_fit(x, labels=None, *, tied=True, shrinkage=None):
    """Fit class-conditional Gaussians to features: class means and a tied or per-class covariance.

    μ_c = mean of the samples of class c;  tied: Σ = (1/N) Σ_c Σ_{i∈c} (xᵢ − μ_c)(xᵢ − μ_c)ᵀ
    (Lee et al. 2018, the LDA estimate); per class: Σ_c = (1/N_c) Σ_{i∈c} (xᵢ − μ_c)(xᵢ − μ_c)ᵀ.
    Shrinkage replaces S by (1 − ρ) S + ρ (tr S / d) I (Rippel et al. 2020 use Ledoit-Wolf); the
    covariances come from :func:`optnorm.spd.covariance` on the class-centred data.

    Lee, Lee, Lee, Shin, "A Simple Unified Framework for Detecting Out-of-Distribution Samples
    and Adversarial Attacks" (NeurIPS 2018); Rippel, Mertens, Merhof, "Modeling the Distribution
    of Normal Data in Pre-Trained Deep Features for Anomaly Detection" (ICPR 2020).

    Parameters
    ----------
    x : array (N, d)
    labels : integer array (N,), optional
        Class of each sample; without labels one Gaussian is fitted (K = 1).
    tied : bool
        One covariance shared by all classes (True) or one per class.
    shrinkage : None, float in [0, 1], "ledoit_wolf" or "oas"
        Shrinkage intensity or the estimator choosing it (computed as scikit-learn's
        ``ledoit_wolf_shrinkage`` / ``OAS`` on the class-centred data).

    Returns
    -------
    GaussianFit
        ``means``, ``covariance``, ``precision``, ``cholesky`` (arrays in x's library),
        ``classes``, ``counts``, ``shrinkage``; ``fit.mahalanobis(x)`` gives (..., K) distances,
        ``fit.score(x)`` Lee et al.'s confidence score.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> fit = gaussian_fit(rng.standard_normal((500, 3)), shrinkage="ledoit_wolf")
    >>> fit.means.shape, fit.covariance.shape
    ((1, 3), (3, 3))
    """
    xp = compat.array_namespace(x)
    validate.check_float(x, "x", xp)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, d), got shape {tuple(x.shape)}")
    validate.check_nonempty(x, "x", axis=0)
    if shrinkage is not None and not isinstance(shrinkage, str):
        validate.check_probability(shrinkage, "shrinkage")
    elif isinstance(shrinkage, str):
        validate.check_in(shrinkage, ("ledoit_wolf", "oas"), "shrinkage")
    import numpy as np

    n, d = x.shape
    dt = compat.compute_dtype(x, xp)
    xc = xp.astype(x, dt)
    if labels is None:
        classes = np.zeros(1, dtype=np.int64)
        lab = np.zeros(n, dtype=np.int64)
    else:
        validate.check_array(labels, "labels")
        lab = compat.to_numpy(labels)
        if lab.dtype.kind not in "iub":
            raise TypeError(f"labels must be an integer array, got {lab.dtype}")
        if lab.shape != (n,):
            raise ValueError(f"labels has shape {lab.shape}, expected ({n},) to match x")
        classes = np.unique(lab)
    inv = np.searchsorted(classes, lab)
    counts = np.bincount(inv, minlength=classes.size)
    K = classes.size
    onehot = compat.from_numpy_like((inv[:, None] == np.arange(K)[None, :]).astype(np.float64), x)
    onehot = xp.astype(onehot, dt)
    cnt = compat.from_numpy_like(counts.astype(np.float64), x)
    means = xp.matmul(xp.matrix_transpose(onehot), xc) / xp.astype(cnt, dt)[:, None]
    centred = xc - xp.matmul(onehot, means)
    if tied:
        cov, rho = _shrunk(centred, shrinkage, xp, dt)
    else:
        covs, rho = [], []
        for c in range(K):
            idx = compat.from_numpy_like(np.nonzero(inv == c)[0], x)
            Sc, r = _shrunk(xp.take(centred, idx, axis=0), shrinkage, xp, dt)
            covs.append(Sc)
            rho.append(r)
        cov = xp.stack(covs, axis=0)
    L = _cholesky(cov, "covariance (fitted; add shrinkage)", xp)
    eye = xp.eye(d, dtype=dt)
    Linv = xp.linalg.solve(L, xp.broadcast_to(eye, L.shape))
    prec = xp.matmul(xp.matrix_transpose(Linv), Linv)
    back = (lambda a: xp.astype(a, x.dtype)) if dt != x.dtype else (lambda a: a)
    return GaussianFit(back(means), back(cov), back(prec), back(L), classes, counts, rho)
