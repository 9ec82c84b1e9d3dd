"""Covariance estimators (sample, Ledoit-Wolf, OAS), augmented covariance (time-delay embedding) and partial
correlations (plain and compositional), batched over leading axes."""
from __future__ import annotations

import warnings

from .._lib import compat
from .._lib.api import public
from .._lib.roles import SPD, Axis, Bool, Choice, Float, Int, Probability
from .._lib.typing import Array
from ._linalg import covariance_body, eye, is_pd, matrix_scale, mT, sym, upcast

ESTIMATORS = ("scm", "ledoit_wolf", "oas")
_SHRINK = dict(estimator=Choice(ESTIMATORS), shrinkage=Probability(optional=True), assume_centered=Bool())


LAYOUTS = ("samples_features", "channels_times")


@public(X=Float("... n p", finite=True), axis=Axis("X", none=True), layout=Choice(LAYOUTS + (None,)), **_SHRINK,
        return_shrinkage=Bool())
def covariance(X: Array, *, axis: int | None = None, layout: str | None = None, estimator: str = "scm",
               shrinkage: float | None = None, assume_centered: bool = False,
               return_shrinkage: bool = False) -> Array | tuple[Array, Array]:
    r"""Covariance matrix of the observations in ``X`` (batched), optionally shrunk towards ``mu I``.

    .. math::

        \hat C = (1-\rho)\,S + \rho\,\mu I,\qquad S = \tfrac1n X_c^\top X_c,\qquad \mu = \operatorname{tr}(S)/p

    **Layout** (which of the last two axes holds the observations) is never guessed: the default is
    scikit-learn's ``(..., n_samples, n_features)`` (``layout="samples_features"``, observations on axis -2);
    pyRiemann's and MNE's epochs ``(n_trials, n_channels, n_times)`` need ``layout="channels_times"``
    (observations on axis -1), as does any ``(..., features, samples)`` array.  ``axis=`` (-1 or -2) says the
    same thing by number; passing both is an error when they disagree.  With the default layout and fewer
    observations than features a plain sample covariance (singular) warns that the data may be
    ``(channels, times)``.

    With ``Xc`` the centred data (n observations of p features) and ``S = Xc^T Xc / n`` (maximum-likelihood
    scaling, as scikit-learn's ``empirical_covariance``), the estimate is ``(1 - rho) S + rho mu I`` with
    ``mu = tr(S) / p`` and

    - ``"scm"``: ``rho = shrinkage`` (a float in [0, 1]; ``None`` means 0);
    - ``"ledoit_wolf"``: ``rho = min(b, d) / d`` with ``d = ||S - mu I||_F^2 / p`` and
      ``b = (sum_s ||x_s||^4 / n - ||S||_F^2) / (n p)`` (Ledoit, Wolf, "A well-conditioned estimator for
      large-dimensional covariance matrices", J. Multivar. Anal. 2004; the same value as
      ``sklearn.covariance.ledoit_wolf_shrinkage``);
    - ``"oas"``: ``rho = min((a + mu^2) / ((n + 1)(a - mu^2 / p)), 1)``, ``a = mean(S_ij^2)`` (Chen, Wiesel,
      Eldar, Hero, "Shrinkage algorithms for MMSE covariance estimation", IEEE TSP 2010; the formula of
      ``sklearn.covariance.OAS``).

    Parameters
    ----------
    X : array (..., n, p) or (..., p, n)
        Observations and features in the last two axes (see ``layout``).
    axis : int, optional
        Axis of the observations, -2 or -1 (the other of the last two axes holds the features); default -2.
    layout : {"samples_features", "channels_times"}, optional
        ``"samples_features"`` (default): ``(..., n_samples, n_features)``, scikit-learn's convention;
        ``"channels_times"``: ``(..., n_channels, n_times)``, pyRiemann's ``covariances(X)`` convention.
    estimator : {"scm", "ledoit_wolf", "oas"}
    shrinkage : float, optional
        Fixed shrinkage for ``"scm"``.
    assume_centered : bool
        Do not subtract the mean.
    return_shrinkage : bool
        Also return ``rho`` (array of the batch shape).

    Returns
    -------
    C : array (..., p, p)  [, rho : array (...)]

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> X = np.random.default_rng(0).standard_normal((200, 3))
    >>> spd.covariance(X, estimator="oas").shape
    (3, 3)
    >>> epochs = np.random.default_rng(0).standard_normal((10, 4, 250))   # (trials, channels, times)
    >>> spd.covariance(epochs, layout="channels_times").shape
    (10, 4, 4)
    """
    by_layout = None if layout is None else (X.ndim - 2 if layout == "samples_features" else X.ndim - 1)
    if axis is not None and by_layout is not None and axis != by_layout:
        raise ValueError(f"covariance: axis={axis - X.ndim} and layout={layout!r} disagree (layout "
                         f"{layout!r} reads the observations on axis {by_layout - X.ndim})")
    if axis is None:
        axis = X.ndim - 2 if by_layout is None else by_layout
    if axis not in (X.ndim - 1, X.ndim - 2):
        raise ValueError(f"covariance: axis must be one of the last two axes (-1 or -2), got {axis}")
    if shrinkage is not None and estimator != "scm":
        raise ValueError(f"covariance: shrinkage={shrinkage} is only for estimator='scm'; {estimator!r} estimates "
                         f"its own")
    n_obs, n_feat = (X.shape[-2], X.shape[-1]) if axis == X.ndim - 2 else (X.shape[-1], X.shape[-2])
    if layout is None and estimator == "scm" and not shrinkage and n_obs < n_feat:
        warnings.warn(f"covariance: X has {n_obs} observations of {n_feat} features on axis {axis - X.ndim} (the "
                      f"default layout, (..., n_samples, n_features)), so the sample covariance is singular; for "
                      f"(..., n_channels, n_times) data such as pyRiemann's epochs pass layout='channels_times'",
                      UserWarning, stacklevel=3)
    return covariance_body(X, axis, estimator, shrinkage, assume_centered, return_shrinkage, "covariance", "X")


@public(X=Float("... C T", finite=True), order=Int(1), lag=Int(1), **_SHRINK, sizes={"T": 12})
def augmented_covariance(X: Array, *, order: int, lag: int, estimator: str = "scm", shrinkage: float | None = None,
                         assume_centered: bool = False) -> Array:
    r"""Augmented covariance matrix (ACM) of multichannel signals by time-delay embedding.

    .. math::

        \tilde X = \begin{pmatrix}X_{:,\,0:L}\\ X_{:,\,\tau:\tau+L}\\ \vdots\\ X_{:,\,(p-1)\tau:(p-1)\tau+L}\end{pmatrix},\quad L = T - p\tau,\qquad C = \operatorname{cov}(\tilde X)

    For an epoch ``X`` of C channels and T samples, ``order`` p and ``lag`` tau, the embedding stacks p delayed
    copies, block k (k = 0..p-1) being ``X[:, k tau : T - (p - k) tau]``, into a (pC, T - p tau) signal
    (``order=1`` keeps X, trimmed by ``lag`` samples as MOABB's ``AugmentedDataset`` does), and the result is its
    covariance (:func:`covariance` over the time axis).  Carrara, Papadopoulo, "Classification of BCI-EEG based
    on augmented covariance matrix", 2023.

    Parameters
    ----------
    X : array (..., C, T)
        Epochs, channels by time.
    order, lag : int
        Embedding dimension p >= 1 and delay tau >= 1 (in samples); requires T - p tau >= 2.
    estimator, shrinkage, assume_centered
        As in :func:`covariance` (Ledoit-Wolf/OAS advisable when T - p tau is not much larger than pC).

    Returns
    -------
    array (..., p C, p C)

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> X = np.random.default_rng(0).standard_normal((2, 3, 100))
    >>> spd.augmented_covariance(X, order=4, lag=2).shape
    (2, 12, 12)
    """
    T = X.shape[-1]
    L = T - order * lag
    if L < 2:
        raise ValueError(f"augmented_covariance: order * lag = {order * lag} leaves {L} samples of the {T} in X "
                         f"(need at least 2)")
    if shrinkage is not None and estimator != "scm":
        raise ValueError(f"augmented_covariance: shrinkage={shrinkage} is only for estimator='scm'; {estimator!r} "
                         f"estimates its own")
    xp = compat.array_namespace(X)
    blocks = [X[..., :, k * lag: k * lag + L] for k in range(order)]
    E = xp.concat(blocks, axis=-2)
    return covariance_body(E, E.ndim - 1, estimator, shrinkage, assume_centered, False, "augmented_covariance", "X")


@public(C=SPD(psd=True), compositional=Bool())
def partial_correlation(C: Array, *, compositional: bool = False) -> Array:
    r"""Partial correlations from a covariance matrix: ``rho_ij = -W_ij / sqrt(W_ii W_jj)`` (diagonal 1),
    ``W = C^{-1}`` the precision (a Cholesky-based solve; corpcor's ``cor2pcor`` convention).

    .. math::

        \rho_{ij} = -\frac{W_{ij}}{\sqrt{W_{ii}W_{jj}}},\qquad W = C^{-1}

    ``compositional=True`` treats ``C`` as the covariance of log-transformed compositions (log x): it is first
    projected to the clr covariance ``S = G C G``, ``G = I - J/D``, which is singular (``S 1 = 0``), and the
    Moore-Penrose precision ``W = (S + J/D)^{-1} - J/D`` is used.  These clr partial correlations equal the
    alr partial correlations of parts 1..D-1 (Erb, "Partial correlations in compositional data analysis",
    Appl. Comput. Geosci. 2020).

    Parameters
    ----------
    C : array (..., D, D)
        Covariance matrices (SPD; for ``compositional=True`` positive semidefinite with rank D-1 is fine).
    compositional : bool

    Returns
    -------
    array (..., D, D)

    Examples
    --------
    >>> import numpy as np, optnorm.spd as spd
    >>> C = np.array([[2.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
    >>> round(float(spd.partial_correlation(C)[0, 2]), 6)
    -0.333333
    """
    xp = compat.array_namespace(C)
    Cc, dt = upcast(C, xp)
    Cc = sym(Cc, xp) / matrix_scale(xp, Cc)      # partial correlations are scale-invariant
    D = C.shape[-1]
    I = eye(D, Cc, xp)
    if compositional:
        J = xp.ones_like(I) / D
        G = I - J
        S = sym(G @ Cc @ G, xp)
        W = _spd_inverse(S + J, xp) - J
    else:
        W = _spd_inverse(Cc, xp)
    d = 1.0 / xp.sqrt(xp.linalg.diagonal(W))
    R = -(d[..., :, None] * W * d[..., None, :])
    R = R * (1.0 - I) + I
    return compat.cast(R, dt, xp)


def _spd_inverse(A, xp):
    if not is_pd(A):
        raise ValueError("partial_correlation: C must be positive definite (for compositional=True: of rank D-1 "
                         "with the constant vector in its null space only)")
    L = xp.linalg.cholesky(A)
    Li = xp.linalg.solve(L, eye(A.shape[-1], A, xp) + 0 * A)
    return sym(mT(Li, xp) @ Li, xp)
