"""Gaussian models of features: Mahalanobis distance (Cholesky solve) and class-conditional Gaussian fits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.typing import Array
from .._lib.solver import Result
from .._lib.api import public, public_class, vjp
from .._lib.roles import SPD, Bool, Float, Labels, Option
from .._lib.vjp import unbroadcast
from ._linalg import covariance_body, is_pd, mT, sym


class MahalanobisRes(NamedTuple):
    """Residuals: the scaled difference ``diff / m`` (m its largest entry per point), ``Sigma^{-1} diff / m``
    (or ``P diff / m``), ``m``, the scaled distance, and what the VJP needs to broadcast back."""
    diff: Any
    s: Any
    m: Any
    d: Any
    squared: bool
    is_cov: bool
    shapes: tuple
    dtypes: tuple
    P: Any


@public(x=Float("... d"), mean=Float("... d"), cov=SPD("... d d", optional=True),
        precision=SPD("... d d", optional=True, excludes="cov"), squared=Bool(),
        example=lambda rng, dtype: ((rng.standard_normal((4, 3)).astype(dtype), rng.standard_normal(3).astype(dtype),
                                     (np.eye(3) + 0.3 * np.ones((3, 3))).astype(dtype)), {}),
        sizes={"...": (), "d": 3})
def mahalanobis(x: Array, mean: Array, cov: Array | None = None, precision: Array | None = None, *,
                squared: bool = False) -> Array:
    r"""Mahalanobis distance d(x) = √((x − μ)ᵀ Σ⁻¹ (x − μ)), batched over leading axes.

    .. math::

        d(x) = \sqrt{(x-\mu)^\top\Sigma^{-1}(x-\mu)} = \|L^{-1}(x - \mu)\|_2,\qquad \Sigma = LL^\top

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
        SPD inverse covariance, instead of ``cov`` (exactly one of the two).
    
    squared : bool
        Return d² instead of d.

    Returns
    -------
    array (...), the broadcast batch shape.

    Notes
    -----
    Each difference x − μ is divided by its largest entry before the quadratic form (scale before
    squaring), so points far from the mean give finite distances; a squared distance beyond the
    dtype's range raises ``ValueError``.

    VJP (squared form, s = Σ⁻¹(x − μ)): ∂/∂x = 2s, ∂/∂μ = −2s, ∂/∂Σ = −s sᵀ, ∂/∂P = (x − μ)(x − μ)ᵀ.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.spd import mahalanobis
    >>> float(mahalanobis(np.array([2.0, 0.0]), np.zeros(2), np.diag([4.0, 1.0])))
    1.0
    """
    return mahalanobis_fwd(x, mean, cov, precision, squared=squared)[0]


def mahalanobis_fwd(x, mean, cov=None, precision=None, *, squared=False):
    if (cov is None) == (precision is None):
        raise ValueError("mahalanobis: pass exactly one of cov and precision")
    xp = compat.array_namespace(x, mean, cov, precision)
    is_cov = cov is not None
    mat = cov if is_cov else precision
    d = x.shape[-1]
    dt = compat.compute_dtype(x, xp)
    diff = compat.cast(x, dt, xp) - compat.cast(mean, dt, xp)
    M = compat.cast(mat, dt, xp)
    m = xp.max(xp.abs(diff), axis=-1, keepdims=True)
    m = xp.where(m > 0, m, xp.ones_like(m))
    diff = diff / m                                  # scale before squaring: entries <= 1
    bshape = tuple(diff.shape[:-1])
    P = None
    if is_cov:
        # the symmetric part is used (Cholesky reads one triangle only), so the VJP -s s^T is the
        # gradient for any perturbation, symmetric or not
        L = xp.linalg.cholesky(sym(M, xp))
        if M.ndim == 2:
            # one factorisation shared by all points: one triangular solve with many right-hand sides
            flat = xp.reshape(diff, (-1, d))
            z = mT(xp.linalg.solve(L, mT(flat, xp)), xp)
            s = mT(xp.linalg.solve(mT(L, xp), mT(z, xp)), xp)
            z = xp.reshape(z, bshape + (d,))
            s = xp.reshape(s, bshape + (d,))
        else:
            full = tuple(np.broadcast_shapes(bshape, tuple(M.shape[:-2])))
            diff = xp.broadcast_to(diff, full + (d,))
            m = xp.broadcast_to(m, full + (1,))
            Lb = xp.broadcast_to(L, full + (d, d))
            z = xp.linalg.solve(Lb, diff[..., None])
            s = xp.linalg.solve(mT(Lb, xp), z)[..., 0]
            z = z[..., 0]
        d2 = xp.sum(z * z, axis=-1)
    else:
        if M.ndim > 2:
            full = tuple(np.broadcast_shapes(bshape, tuple(M.shape[:-2])))
            diff = xp.broadcast_to(diff, full + (d,))
            m = xp.broadcast_to(m, full + (1,))
        s = xp.matmul(M, diff[..., None])[..., 0] if M.ndim > 2 else xp.matmul(diff, mT(M, xp))
        # s = P diff (for a symmetric P; the VJP below uses the symmetric part)
        d2 = xp.sum(diff * s, axis=-1)
        P = M
    ds = xp.sqrt(xp.maximum(d2, 0.0))                 # the distance of the scaled difference
    dist = ds * m[..., 0]
    y = dist * dist if squared else dist
    if squared and compat.is_concrete(y) and bool(xp.any(xp.isinf(y))):
        raise ValueError("mahalanobis: the squared distance overflows the dtype (x is too far from mean); "
                         "use squared=False")
    res = MahalanobisRes(diff, s, m, ds, squared, is_cov, (tuple(x.shape), tuple(mean.shape), tuple(mat.shape)),
                         (x.dtype, mean.dtype, mat.dtype), P)
    return compat.cast(y, x.dtype, xp), res




def mahalanobis_bwd(res: MahalanobisRes, dy):
    diff, s, m, ds = res.diff, res.s, res.m[..., 0], res.d
    xp = compat.array_namespace(diff)
    g = compat.cast(dy, diff.dtype, xp)
    if res.squared:      # d^2 = m^2 d_s^2
        kx, kmat = 2 * g * m, g * m * m
    else:                # d = m d_s: d/dd^2 = 1 / (2 m d_s)
        c = xp.where(ds > 0, g / (2 * xp.where(ds > 0, ds, xp.ones_like(ds))), xp.zeros_like(ds))
        kx, kmat = 2 * c, c * m
    if res.is_cov:
        sv = s
    else:  # d^2 = diff^T P diff: gradient (P + P^T) diff
        P = res.P
        Ps = xp.matmul(mT(P, xp), diff[..., None])[..., 0] if P.ndim > 2 else xp.matmul(diff, P)
        sv = (s + Ps) / 2
    gx = kx[..., None] * sv
    sx, sm, smat = res.shapes
    dtx, dtm, dtmat = res.dtypes
    dx = unbroadcast(gx, sx, xp)
    dmean = unbroadcast(-gx, sm, xp)
    if res.is_cov:
        gm = -kmat[..., None, None] * (s[..., :, None] * s[..., None, :])
    else:
        gm = kmat[..., None, None] * (diff[..., :, None] * diff[..., None, :])
    dmat = unbroadcast(gm, smat, xp)
    dx, dmean, dmat = compat.cast(dx, dtx, xp), compat.cast(dmean, dtm, xp), compat.cast(dmat, dtmat, xp)
    return (dx, dmean, dmat, None) if res.is_cov else (dx, dmean, None, dmat)


vjp(mahalanobis, mahalanobis_fwd, mahalanobis_bwd, validate=True)


# ---------------------------------------------------------------- Gaussian fit
@public_class
@dataclass(frozen=True, repr=False)
class GaussianFit(Result):
    """Result of :func:`gaussian_fit`: class means and a tied or per-class covariance, with
    ``mahalanobis(x)`` and ``score(x)`` methods.

    Attributes
    ----------
    means : array (K, d)
        Class means (K = 1 without labels).
    covariance : array (d, d) or (K, d, d)
        Tied (LDA) or per-class covariance.
    precision : array
        Its inverse.
    cholesky : array
        Lower Cholesky factor of the covariance.
    classes : numpy.ndarray (K,)
        The sorted label values (host NumPy array) matching the rows of ``means``.
    counts : numpy.ndarray (K,)
        Samples per class (host NumPy array).
    shrinkage : float or array
        The shrinkage intensity used (per class for untied covariances).
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


def _check_shrinkage(value, name):
    if value is None or isinstance(value, str) and value in ("ledoit_wolf", "oas"):
        return value
    if isinstance(value, (bool, np.bool_, str)) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"gaussian_fit: {name} must be None, a number in [0, 1], 'ledoit_wolf' or 'oas', "
                         f"got {value!r}")
    return float(value)


def _shrunk(xc, shrinkage):
    """Covariance of already centred data (maximum-likelihood scaling), shrunk as asked, and the intensity:
    ``"ledoit_wolf"`` / ``"oas"`` choose rho, a float is rho itself, None is no shrinkage."""
    est, rho = (shrinkage, None) if isinstance(shrinkage, str) else ("scm", shrinkage)
    C, r = covariance_body(xc, xc.ndim - 2, est, rho, True, True, "gaussian_fit", "x")
    return C, float(r)


@public(x=Float("N d", finite=True), labels=Labels("N", optional=True), tied=Bool(),
        shrinkage=Option(check=_check_shrinkage), sizes={"N": 12},
        example=lambda rng, dtype: ((rng.standard_normal((12, 3)).astype(dtype), np.arange(12) % 2), {}))
def gaussian_fit(x: Array, labels: Array | None = None, *, tied: bool = True, shrinkage: Any = None) -> GaussianFit:
    r"""Fit class-conditional Gaussians to features: class means and a tied or per-class covariance.

    .. math::

        \mu_c = \frac{1}{n_c}\sum_{i: y_i = c} x_i,\qquad \Sigma = (1-\rho)\,\frac1n\sum_i (x_i - \mu_{y_i})(x_i - \mu_{y_i})^\top + \rho\,\frac{\operatorname{tr}\Sigma_0}{d}\,I

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
    >>> from optnorm.spd import gaussian_fit
    >>> rng = np.random.default_rng(0)
    >>> fit = gaussian_fit(rng.standard_normal((500, 3)), shrinkage="ledoit_wolf")
    >>> fit.means.shape, fit.covariance.shape
    ((1, 3), (3, 3))
    """
    xp = compat.array_namespace(x, labels)
    n, d = x.shape
    dt = compat.compute_dtype(x, xp)
    xc = compat.cast(x, dt, xp)
    if labels is None:
        classes = np.zeros(1, dtype=np.int64)
        lab = np.zeros(n, dtype=np.int64)
    else:
        lab = compat.to_numpy(labels)
        classes = np.unique(lab)
    inv = np.searchsorted(classes, lab)
    counts = np.bincount(inv, minlength=classes.size)
    K = classes.size
    onehot = compat.cast(compat.from_numpy_like((inv[:, None] == np.arange(K)[None, :]).astype(np.float64), x), dt, xp)
    cnt = compat.cast(compat.from_numpy_like(counts.astype(np.float64), x), dt, xp)
    means = xp.matmul(mT(onehot, xp), xc) / cnt[:, None]
    centred = xc - xp.matmul(onehot, means)
    if tied:
        cov, rho = _shrunk(centred, shrinkage)
    else:
        covs, rho = [], []
        for c in range(K):
            idx = compat.from_numpy_like(np.nonzero(inv == c)[0], x)
            Sc, r = _shrunk(xp.take(centred, idx, axis=0), shrinkage)
            covs.append(Sc)
            rho.append(r)
        cov = xp.stack(covs, axis=0)
    if not is_pd(cov):
        raise ValueError("gaussian_fit: the covariance fitted to x is not positive definite (a class with fewer "
                         "samples than dimensions, collinear features, or entries of x so small that it underflows): "
                         "pass shrinkage=, or rescale x")
    L = xp.linalg.cholesky(cov)
    I = compat.eye(d, like=L, xp=xp)
    Linv = xp.linalg.solve(L, xp.broadcast_to(I, L.shape))
    prec = xp.matmul(mT(Linv, xp), Linv)
    if compat.is_concrete(prec) and not bool(xp.all(xp.isfinite(prec))):
        raise ValueError("gaussian_fit: the precision of the covariance fitted to x overflows; rescale x")
    means, cov, prec, L = (compat.cast(a, x.dtype, xp) for a in (means, cov, prec, L))
    return GaussianFit(means=means, covariance=cov, precision=prec, cholesky=L, classes=classes, counts=counts,
                       shrinkage=rho)
