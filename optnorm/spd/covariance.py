"""Covariance estimators (sample, Ledoit-Wolf, OAS), augmented covariance (time-delay embedding) and partial
correlations (plain and compositional), batched over leading axes.

``covariance`` is exported through ``optnorm.spd.bures`` (see ``bures._unshadow``): the package binds the name
``covariance`` to this submodule on import.
"""
from __future__ import annotations

from .._lib import compat, validate
from .sqrtm import _cast, _eye, _mT, _sym, _upcast

__all__ = ["covariance", "augmented_covariance", "partial_correlation"]

ESTIMATORS = ("scm", "ledoit_wolf", "oas")


def covariance(X, *, axis=-2, estimator="scm", shrinkage=None, assume_centered=False, return_shrinkage=False):
    """Covariance matrix of the observations in ``X`` (batched), optionally shrunk towards ``mu I``.

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
    X : array (..., n, p) with observations on ``axis``
        ``axis=-2`` (default) is scikit-learn's (n_samples, n_features) layout; EEG epochs
        (..., channels, times) use ``axis=-1``.
    axis : int
        Axis of the observations (the other of the last two axes holds the features).
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
    """
    xp = compat.array_namespace(X)
    validate.check_float(X, "X", xp)
    validate.check_matrix(X, "X")
    validate.check_in(estimator, ESTIMATORS, "estimator")
    ax = validate.check_axis(axis, X.ndim, "axis")
    if ax not in (X.ndim - 1, X.ndim - 2):
        raise ValueError(f"axis must be one of the last two axes (-1 or -2), got {axis}")
    if shrinkage is not None:
        if estimator != "scm":
            raise ValueError(f"shrinkage={shrinkage} is only for estimator='scm'; {estimator!r} estimates its own")
        shrinkage = validate.check_probability(shrinkage, "shrinkage")
    Xc, dt = _upcast(X, xp)
    if ax == X.ndim - 1:
        Xc = _mT(Xc, xp)
    n, p = Xc.shape[-2], Xc.shape[-1]
    if n == 0 or p == 0:
        raise ValueError(f"X is empty (shape {tuple(X.shape)})")
    validate.check_finite(X, "X", xp)
    if not assume_centered:
        Xc = Xc - xp.mean(Xc, axis=-2, keepdims=True)
    S = _sym(_mT(Xc, xp) @ Xc, xp) / n
    mu = xp.sum(xp.linalg.diagonal(S), axis=-1) / p
    if estimator == "scm":
        rho = xp.zeros_like(mu) + (0.0 if shrinkage is None else shrinkage)
    elif p == 1:
        rho = xp.zeros_like(mu)
    elif estimator == "ledoit_wolf":
        sq = xp.sum(Xc * Xc, axis=-1)                    # ||x_s||^2
        beta_ = xp.sum(sq * sq, axis=-1)                 # sum_s ||x_s||^4
        delta_ = xp.sum(S * S, axis=(-2, -1))            # ||S||_F^2
        beta = (beta_ / n - delta_) / (p * n)
        delta = (delta_ - 2.0 * mu * mu * p + p * mu * mu) / p
        beta = xp.minimum(beta, delta)
        safe = xp.where(delta > 0, delta, xp.ones_like(delta))
        rho = xp.where(beta == 0, xp.zeros_like(beta), beta / safe)
    else:  # oas
        alpha = xp.mean(xp.reshape(S * S, S.shape[:-2] + (p * p,)), axis=-1)
        num = alpha + mu * mu
        den = (n + 1) * (alpha - mu * mu / p)
        safe = xp.where(den == 0, xp.ones_like(den), den)
        rho = xp.where(den == 0, xp.ones_like(den), xp.minimum(num / safe, 1.0))
    r = rho[..., None, None]
    C = (1.0 - r) * S + (r * mu[..., None, None]) * _eye(p, S, xp)
    C = _cast(C, dt, xp)
    return (C, _cast(rho, dt, xp)) if return_shrinkage else C


def augmented_covariance(X, *, order, lag, estimator="scm", shrinkage=None, assume_centered=False):
    """Augmented covariance matrix (ACM) of multichannel signals by time-delay embedding.

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
    xp = compat.array_namespace(X)
    validate.check_float(X, "X", xp)
    validate.check_matrix(X, "X")
    order = validate.check_int(order, "order", low=1)
    lag = validate.check_int(lag, "lag", low=1)
    T = X.shape[-1]
    L = T - order * lag
    if L < 2:
        raise ValueError(f"order * lag = {order * lag} leaves {L} samples of the {T} in X (need at least 2)")
    blocks = [X[..., :, k * lag: k * lag + L] for k in range(order)]
    E = xp.concat(blocks, axis=-2)
    return covariance(E, axis=-1, estimator=estimator, shrinkage=shrinkage, assume_centered=assume_centered)


def partial_correlation(C, *, compositional=False):
    """Partial correlations from a covariance matrix: ``rho_ij = -W_ij / sqrt(W_ii W_jj)`` (diagonal 1),
    ``W = C^{-1}`` the precision (a Cholesky-based solve; corpcor's ``cor2pcor`` convention).

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
    validate.check_float(C, "C", xp)
    validate.check_symmetric(C, "C", xp=xp)
    validate.check_finite(C, "C", xp)
    Cc, dt = _upcast(C, xp)
    Cc = _sym(Cc, xp)
    D = C.shape[-1]
    eye = _eye(D, Cc, xp)
    if compositional:
        J = xp.ones_like(eye) / D
        G = eye - J
        S = _sym(G @ Cc @ G, xp)
        W = _spd_inverse(S + J, "C", xp) - J
    else:
        W = _spd_inverse(Cc, "C", xp)
    d = 1.0 / xp.sqrt(xp.linalg.diagonal(W))
    R = -(d[..., :, None] * W * d[..., None, :])
    R = R * (1.0 - eye) + eye
    return _cast(R, dt, xp)


def _spd_inverse(A, name, xp):
    if compat.is_concrete(A):
        from .sqrtm import _check_pd_host

        _check_pd_host(A, name)
    L = xp.linalg.cholesky(A)
    eye = _eye(A.shape[-1], A, xp)
    Li = xp.linalg.solve(L, eye + 0 * A)
    return _sym(_mT(Li, xp) @ Li, xp)
