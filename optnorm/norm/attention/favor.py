"""Random features of the softmax kernel (Performer's FAVOR+, simplex random features) and FAVOR+ attention."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..._lib import compat
from ..._lib.api import public, vjp
from ..._lib.roles import Bool, Choice, Float, Int, Positive, Seed
from ..._lib.vjp import unbroadcast
from ..._lib.typing import Array, Seed as SeedT
from ._common import QKV, check_causal, cumsum, mT, qkv_example, revcumsum

_COUPLINGS = ("iid", "orthogonal", "simplex")


def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _haar(rng, d):
    """Haar-random orthogonal d x d matrix (QR of a Gaussian with the sign of R's diagonal fixed)."""
    qm, r = np.linalg.qr(rng.standard_normal((d, d)))
    return qm * np.sign(np.diag(r))[None, :]


@public(d=Int(1), num_features=Int(1), coupling=Choice(_COUPLINGS), seed=Seed(),
        example=lambda rng, dtype: ((4, 8), {"seed": 0}))
def random_projection(d: int, num_features: int, *, coupling: str = "simplex", seed: SeedT = None) -> Array:
    r"""The (num_features, d) Gaussian-marginal projection W used by :func:`random_features` (float64 NumPy).

    Each row :math:`w_i` has the :math:`\mathcal N(0, I_d)` marginal; rows come in blocks of d,
    :math:`w_i = \rho_i\, u_i` with independent norms :math:`\rho_i \sim \chi_d` and directions :math:`u_i`
    coupled as

    - ``"iid"``: independent Gaussian rows;
    - ``"orthogonal"``: Haar-random orthonormal directions, :math:`u_i^\top u_j = 0` (ORF, FAVOR+);
    - ``"simplex"``: the d unit vertices of a regular simplex, :math:`u_i^\top u_j = -1/(d - 1)`, rotated by
      one Haar-random orthogonal matrix per block (SimRF).

    The simplex vertices are the normalised rows of :math:`I - \mathbb 1 \mathbb 1^\top / d`; any rotation of
    them is the same coupling once the Haar rotation is applied.  Choromanski et al., "Rethinking Attention
    with Performers" (ICLR 2021); Reid, Choromanski, Likhosherstov, Weller, "Simplex Random Features"
    (ICML 2023).

    Parameters
    ----------
    d : int >= 1
        Dimension of the inputs (columns of W); ``"simplex"`` needs d >= 2.
    num_features : int >= 1
        m, the number of rows (blocks of d rows are coupled; the last block is truncated).
    coupling : {"iid", "orthogonal", "simplex"}
        How the rows of a block are coupled (see above).
    seed : int, numpy Generator or None
        Random source; an int gives a reproducible projection.

    Returns
    -------
    numpy.ndarray (num_features, d)
        float64 projection W.

    Examples
    --------
    >>> import numpy as np
    >>> W = random_projection(4, 8, coupling="simplex", seed=0)
    >>> W.shape
    (8, 4)
    >>> u = W[:4] / np.linalg.norm(W[:4], axis=1, keepdims=True)
    >>> np.round(u @ u.T, 4)[0]
    array([ 1.    , -0.3333, -0.3333, -0.3333])
    """
    m = num_features
    rng = _rng(seed)
    if coupling == "iid":
        return rng.standard_normal((m, d))
    if coupling == "simplex" and d < 2:
        raise ValueError("coupling='simplex' needs a feature dimension d >= 2")
    blocks = []
    for _ in range(-(-m // d)):
        norms = np.linalg.norm(rng.standard_normal((d, d)), axis=1)
        rot = _haar(rng, d)
        if coupling == "orthogonal":
            dirs = rot
        else:
            e = np.eye(d) - 1.0 / d
            dirs = (e / np.linalg.norm(e, axis=1, keepdims=True)) @ rot.T
        blocks.append(norms[:, None] * dirs)
    return np.concatenate(blocks, 0)[:m]


def _features(xs, W, xp, stab=None):
    """Positive features exp(W x - |x|^2/2 - c)/sqrt(m): ``stab=None`` c = 0; ``"row"`` c = the row max (the
    row-constant |x|^2/2 then cancels and is not formed); ``"all"`` c = the max over all rows of one batch
    element, exponents formed in units of u = max(1, |x|) (as (u (u e)) with e the exponent over u^2), so
    |x|^2 never overflows."""
    m = W.shape[0]
    if stab == "row":
        e = xp.matmul(xs, mT(W, xp))
        return xp.exp(e - xp.max(e, axis=-1, keepdims=True)) / math.sqrt(m)
    if stab == "all":
        u = xp.maximum(xp.max(xp.abs(xs)), compat.full((), 1.0, like=xs))
        xu = xs / u
        e = xp.matmul(xu, mT(W, xp)) / u - 0.5 * xp.sum(xu * xu, axis=-1, keepdims=True)
        with np.errstate(over="ignore"):   # u (u (e - max)) -> -inf is intended: the feature underflows to 0
            return xp.exp(u * (u * (e - xp.max(e, axis=(-2, -1), keepdims=True)))) / math.sqrt(m)
    e = xp.matmul(xs, mT(W, xp)) - 0.5 * xp.sum(xs * xs, axis=-1, keepdims=True)
    return xp.exp(e) / math.sqrt(m)


def _rf_example(rng, dtype):
    return (rng.standard_normal((3, 4)).astype(dtype),), {"num_features": 8, "seed": 0}


@public(x=Float("... d"), num_features=Int(1), kind=Choice(("positive", "trig")), coupling=Choice(_COUPLINGS),
        seed=Seed(), scale=Positive(optional=True), example=_rf_example)
def random_features(x: Array, *, num_features: int, kind: str = "positive", coupling: str = "simplex",
                    seed: SeedT = None, scale: float | None = None) -> Array:
    r"""Random features φ with E[φ(x)ᵀφ(y)] = exp(xᵀy) (the softmax kernel).

    .. math::

        \mathbb E\bigl[\varphi(x)^\top \varphi(y)\bigr] = \exp(x^\top y)

    - ``kind="positive"`` (FAVOR+):
      :math:`\varphi(x) = \frac{e^{-\lVert x \rVert^2/2}}{\sqrt m}\,\bigl[e^{w_i^\top x}\bigr]_{i \le m}`,
      strictly positive, so attention weights estimated with it stay positive;
    - ``kind="trig"``:
      :math:`\varphi(x) = \frac{e^{\lVert x \rVert^2/2}}{\sqrt m}\,\bigl[\cos(w_i^\top x), \sin(w_i^\top x)\bigr]_{i \le m}`
      (2m features).

    The wᵢ come from :func:`random_projection` with the chosen ``coupling``; the same ``seed``
    gives the same projection, so features of queries and keys must be drawn with one seed.
    Simplex coupling gives the lowest estimator variance of the three for positive features.

    Choromanski et al., "Rethinking Attention with Performers" (ICLR 2021); Reid, Choromanski,
    Likhosherstov, Weller, "Simplex Random Features" (ICML 2023).

    Parameters
    ----------
    x : array (..., d)
    num_features : int
        m (rows of the projection; blocks of d are coupled).
    kind : {"positive", "trig"}
    coupling : {"iid", "orthogonal", "simplex"}
    seed : int, numpy Generator or None
    scale : float, optional
        x is multiplied by it first (d^(−1/4) for softmax attention).

    Returns
    -------
    array (..., m) (or (..., 2m) for ``"trig"``) in x's library and dtype.  Trig features of inputs so large
    that ``exp(|x|^2 / 2)`` overflows the dtype have no finite value: ``ValueError``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([0.3, -0.2, 0.1, 0.4])
    >>> phi = random_features(np.stack([x, x]), num_features=4096, seed=0)
    >>> abs(float(phi[0] @ phi[1]) - float(np.exp(x @ x))) < 0.02
    True
    """
    xp = compat.array_namespace(x)
    d = x.shape[-1]
    W = random_projection(d, num_features, coupling=coupling, seed=seed)
    dt = compat.compute_dtype(x, xp)
    Wx = compat.cast(compat.from_numpy_like(W, x), dt, xp)
    xs = compat.cast(x, dt, xp)
    if scale is not None:
        xs = float(scale) * xs
    if kind == "positive":
        phi = _features(xs, Wx, xp)
    else:
        u = xp.matmul(xs, mT(Wx, xp))
        amp = xp.exp(0.5 * xp.sum(xs * xs, axis=-1, keepdims=True)) / math.sqrt(W.shape[0])
        if compat.is_concrete(amp) and not bool(xp.all(xp.isfinite(amp))) and bool(xp.all(xp.isfinite(xs))):
            raise ValueError("x is too large for trig random features: exp(|x|^2 / 2) overflows "
                             f"{str(dt).rsplit('.', 1)[-1]} (use kind='positive', or scale x)")
        phi = xp.concat([amp * xp.cos(u), amp * xp.sin(u)], axis=-1)
    return compat.cast(phi, x.dtype, xp)


# ---------------------------------------------------------------- FAVOR+ attention
class FavorRes(NamedTuple):
    causal: bool
    qs: Any
    ks: Any
    vc: Any
    W: Any
    A: Any
    B: Any
    M: tuple
    o: Any
    den: Any
    s: float
    shapes: tuple


def _favor_example(rng, dtype):
    return qkv_example(rng, dtype, n=5, m=5, num_features=8, seed=0)


@public(**QKV, num_features=Int(1), coupling=Choice(_COUPLINGS), seed=Seed(), causal=Bool(),
        scale=Positive(optional=True), example=_favor_example)
def favor_attention(q: Array, k: Array, v: Array, *, num_features: int, coupling: str = "simplex", seed: SeedT = None,
                    causal: bool = False, scale: float | None = None) -> Array:
    r"""FAVOR+ linear attention: softmax attention estimated with positive random features.

    .. math::

        O = D^{-1}\, \varphi(Q)\,\bigl(\varphi(K)^\top V\bigr), \qquad
        D = \mathrm{diag}\bigl(\varphi(Q)\, \varphi(K)^\top \mathbb 1\bigr),

    with φ = :func:`random_features` (positive) applied to s·q and s·k, s = d^(−1/4) (default),
    so φ(q)ᵀφ(k) estimates exp(qᵀk/√d).  Stabilisers (a per-row maximum for φ(Q), one per batch element
    for φ(K)) are subtracted inside the exponentials; they cancel in D⁻¹ exactly.  The exponents are formed
    in units of the largest ``|s k|`` (and without the row-constant ``|q|²/2``, which cancels), so inputs
    up to the dtype's range give finite results.  ``causal=True``
    uses prefix sums (O(n m d_v) memory).  Linear in the sequence length.  The VJP is analytic
    (features included; the projection is a constant of the seed).

    Choromanski et al., "Rethinking Attention with Performers" (ICLR 2021); Reid et al.,
    "Simplex Random Features" (ICML 2023).

    Parameters
    ----------
    q : array (..., n_q, d)
    k : array (..., n, d)
    v : array (..., n, d_v)
    num_features : int
    coupling : {"iid", "orthogonal", "simplex"}
    seed : int, numpy Generator or None
        One projection for q and k, reproducible for an int.
    causal : bool
    scale : float, optional
        s (default d^(−1/4)).

    Returns
    -------
    array (..., n_q, d_v)

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(0)
    >>> q, k, v = r.standard_normal((2, 5, 4)), r.standard_normal((2, 6, 4)), r.standard_normal((2, 6, 3))
    >>> favor_attention(q, k, v, num_features=16, seed=0).shape
    (2, 5, 3)
    """

    return favor_attention_fwd(q, k, v, num_features=num_features, coupling=coupling, seed=seed, causal=causal,
                               scale=scale)[0]


def favor_attention_fwd(q, k, v, *, num_features, coupling="simplex", seed=None, causal=False, scale=None):
    xp = compat.array_namespace(q, k, v)
    check_causal(q, k, causal)
    d = q.shape[-1]
    s = d ** -0.25 if scale is None else float(scale)
    if isinstance(seed, (np.random.Generator, np.random.SeedSequence)):
        raise TypeError("favor_attention: seed must be an int or None (a Generator would give q and k different "
                        "projections across calls)")
    W = random_projection(d, num_features, coupling=coupling, seed=seed)
    dt = compat.compute_dtype(q, xp)
    Wx = compat.cast(compat.from_numpy_like(W, q), dt, xp)
    qs, ks, vc = s * compat.cast(q, dt, xp), s * compat.cast(k, dt, xp), compat.cast(v, dt, xp)
    A = _features(qs, Wx, xp, "row")
    B = _features(ks, Wx, xp, "all")
    if not causal:
        KV = xp.matmul(mT(B, xp), vc)  # (..., m, dv)
        z = xp.sum(B, axis=-2)  # (..., m)
        num = xp.matmul(A, KV)
        den = xp.sum(A * z[..., None, :], axis=-1, keepdims=True)
        M = (KV, z)
    else:
        S = cumsum(B[..., :, :, None] * vc[..., :, None, :], -3, xp)  # (..., n, m, dv)
        z = cumsum(B, -2, xp)
        num = xp.matmul(A[..., :, None, :], S)[..., 0, :]
        den = xp.sum(A * z, axis=-1, keepdims=True)
        M = (S, z)
    o = num / den
    shapes = (tuple(q.shape), tuple(k.shape), tuple(v.shape), q.dtype, k.dtype, v.dtype)
    return compat.cast(o, q.dtype, xp), FavorRes(causal, qs, ks, vc, Wx, A, B, M, o, den, s, shapes)


def _features_bwd(xs, W, phi, dphi, xp):
    du = dphi * phi
    return xp.matmul(du, W) - xp.sum(du, axis=-1, keepdims=True) * xs


def favor_attention_bwd(res: FavorRes, dy):
    causal, qs, ks, vc, W, A, B, M, o, den, s = res[:11]
    sq, sk, sv, dtq, dtk, dtv = res.shapes
    xp = compat.array_namespace(qs)
    g = compat.cast(dy, qs.dtype, xp)
    dnum = g / den
    dden = -xp.sum(g * o, axis=-1, keepdims=True) / den
    if not causal:
        KV, z = M
        dA = xp.matmul(dnum, mT(KV, xp)) + dden * z[..., None, :]
        dKV = xp.matmul(mT(A, xp), dnum)
        dz = xp.sum(dden * A, axis=-2)
        dB = xp.matmul(vc, mT(dKV, xp)) + dz[..., None, :]
        dv = xp.matmul(B, dKV)
    else:
        S, z = M
        dA = xp.matmul(S, dnum[..., :, :, None])[..., 0] + dden * z
        R = revcumsum(A[..., :, :, None] * dnum[..., :, None, :], -3, xp)  # (..., n, m, dv)
        dB = xp.matmul(R, vc[..., :, :, None])[..., 0] + revcumsum(dden * A, -2, xp)
        dv = xp.matmul(mT(R, xp), B[..., :, :, None])[..., 0]
    dq = s * xp.matmul(dA * A, W)           # A has no |q|^2/2 term (it cancels in O; so does its gradient)
    dk = s * _features_bwd(ks, W, B, dB, xp)
    return (compat.cast(unbroadcast(dq, sq, xp), dtq, xp), compat.cast(unbroadcast(dk, sk, xp), dtk, xp),
            compat.cast(unbroadcast(dv, sv, xp), dtv, xp))


vjp(favor_attention, favor_attention_fwd, favor_attention_bwd, validate=True)
