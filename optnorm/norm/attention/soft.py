"""SOFT attention (Gaussian kernel, Nystrom approximation) and the Newton-Schulz pseudo-inverse it uses."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..._lib import compat
from ..._lib.api import public, vjp
from ..._lib.roles import Choice, Float, Int, NonNegative
from ..._lib.vjp import unbroadcast
from ..._lib.typing import Array
from ._common import QKVMeta, finish_grads, mT, prepare_qkv


# ---------------------------------------------------------------------------------------------- Newton-Schulz pinv
class NewtonSchulzState(NamedTuple):
    """The iteration on Pt = P / c (c = max |P| per matrix): V = Vt / c."""
    Pt: Any
    c: Any
    E: Any
    alpha: Any
    rows: Any
    cols: Any
    ninf: Any
    n1: Any
    hist: Any        # the iterates Vt (grad="unrolled"), else None


def _ns_core(A, iters, reg, keep, xp):
    """(V, residual, state) for P = A + reg I: Newton-Schulz on P / max|P| (scale-equivariant), rescaled."""
    n = A.shape[-1]
    I = compat.eye(n, like=A)
    P = A + reg * I
    c = xp.max(xp.max(xp.abs(P), axis=-1), axis=-1)
    c = xp.where(c > 0, c, xp.ones_like(c))
    Pt = P / c[..., None, None]
    absP = xp.abs(Pt)
    rows = xp.sum(absP, axis=-1)
    cols = xp.sum(absP, axis=-2)
    ninf = xp.max(rows, axis=-1)
    n1 = xp.max(cols, axis=-1)
    prod = n1 * ninf                       # in [1, n^2] unless P = 0
    prod = xp.where(prod > 0, prod, xp.ones_like(prod))
    alpha = 1.8 / prod
    Vt = alpha[..., None, None] * mT(Pt, xp)
    hist = [Vt] if keep else None
    for _ in range(iters):
        Vt = 2.0 * Vt - xp.matmul(xp.matmul(Vt, Pt), Vt)
        if keep:
            hist.append(Vt)
    E = xp.matmul(Vt, Pt) - I
    resid = xp.sqrt(xp.sum(xp.sum(E * E, axis=-1), axis=-1))
    V = Vt / c[..., None, None]
    return V, resid, NewtonSchulzState(Pt, c, E, alpha, rows, cols, ninf, n1, None if hist is None else tuple(hist))


def _ns_bwd_core(V, resid, st: NewtonSchulzState, grad, gV, gr, xp):
    """Cotangent of A (compute dtype) from cotangents of V and of the residual."""
    c = st.c[..., None, None]
    if grad == "implicit":
        # gradient of an exact inverse: dP = -V^T gV V^T (SOFT's "theoretical gradient"); the residual is treated
        # as a diagnostic with zero gradient.
        Vt = mT(V * c, xp)
        return -xp.matmul(xp.matmul(Vt, gV / c), Vt) / c
    # unrolled: exact VJP of the iterations on Pt, the residual and the step-size choice; V = Vt / c and Pt = P / c
    # hold for every c > 0 (scale equivariance), so c is a constant here: dP = dPt / c, gVt = gV / c
    Pt, E = st.Pt, st.E
    gV = gV / c
    safe = xp.where(resid > 0, resid, xp.ones_like(resid))
    if gr is not None:
        En = E / safe[..., None, None]
        gV = gV + xp.matmul(gr[..., None, None] * En, mT(Pt, xp))
        dP = xp.matmul(mT(V * c, xp), gr[..., None, None] * En)
    else:
        dP = xp.zeros_like(Pt)
    hist = st.hist
    G = gV
    for t in range(len(hist) - 1, 0, -1):
        Vk = hist[t - 1]
        VP = xp.matmul(Vk, Pt)
        PV = xp.matmul(Pt, Vk)
        dP = dP - xp.matmul(xp.matmul(mT(Vk, xp), G), mT(Vk, xp))
        G = 2.0 * G - xp.matmul(G, mT(PV, xp)) - xp.matmul(mT(VP, xp), G)
    alpha = st.alpha
    # Vt0 = alpha Pt^T
    dP = dP + alpha[..., None, None] * mT(G, xp)
    dalpha = xp.sum(xp.sum(G * mT(Pt, xp), axis=-1), axis=-1)
    # alpha = 1.8 / (||Pt||_1 ||Pt||_inf): subgradient through the max row / column sums (ties share)
    rows, cols, ninf, n1 = st.rows, st.cols, st.ninf, st.n1
    rmask = compat.cast(rows == ninf[..., None], Pt.dtype, xp)
    cmask = compat.cast(cols == n1[..., None], Pt.dtype, xp)
    rmask = rmask / xp.sum(rmask, axis=-1, keepdims=True)
    cmask = cmask / xp.sum(cmask, axis=-1, keepdims=True)
    da_ninf = -alpha / xp.where(ninf > 0, ninf, xp.ones_like(ninf)) * dalpha
    da_n1 = -alpha / xp.where(n1 > 0, n1, xp.ones_like(n1)) * dalpha
    dP = dP + xp.sign(Pt) * (da_ninf[..., None, None] * rmask[..., :, None]
                             + da_n1[..., None, None] * cmask[..., None, :])
    return dP / c


class NewtonSchulzRes(NamedTuple):
    V: Any
    resid: Any
    st: NewtonSchulzState
    grad: str
    dtype: Any


@public(A=Float("... m m"), iters=Int(0), reg=NonNegative(), grad=Choice(("implicit", "unrolled")))
def newton_schulz_pinv(A: Array, *, iters: int = 20, reg: float = 0.01, grad: str = "implicit") -> tuple[Array, Array]:
    r"""Newton-Schulz (Newton-Raphson) iteration for the (regularised) inverse / pseudo-inverse, with its residual.

    With :math:`P = A + \lambda I` (:math:`\lambda` = ``reg``), for ``iters`` steps:

    .. math::

        V_0 = \alpha P^\top, \qquad \alpha = \frac{1.8}{\lVert P \rVert_1 \lVert P \rVert_\infty}, \qquad
        V_{t+1} = 2 V_t - V_t P V_t.

    For the symmetric non-negative kernel matrices of SOFT,
    ``alpha`` is the official ``0.9 * 2 / (max row sum)^2`` (of the regularised matrix) and ``reg = 0.01``,
    ``iters = 20`` are its defaults (``fudan-zvg/SOFT``, ``SOFT/kernel/inverse.py``);
    ``||P||_1 ||P||_inf >= sigma_max(P)^2`` makes the start convergent for any matrix (the norms of ``A`` alone
    do not when ``reg`` dominates: ``A = 1e-30 I`` diverged).  The iteration runs on ``P / max|P|`` and the
    result is scaled back (Newton-Schulz is scale-equivariant), so ``A`` of any magnitude the dtype holds works.
    With ``reg = 0`` the iteration converges to the Moore-Penrose pseudo-inverse, but for a singular ``A``
    rounding errors in its null space double at every step once converged (measured: a
    rank-2 5x5 matrix is accurate to 1e-12 after 20 steps and off by O(1) after 60), so keep ``reg > 0`` or stop
    early there.

    Returns ``(V, residual)`` with ``residual = ||V P - I||_F`` per matrix: **check it**.  Convergence is
    quadratic only once ``||I - V P|| < 1``; for ill-conditioned ``P`` (clustered landmarks) 20 steps are far from
    converged.

    VJP (``grad``):

    - ``"implicit"`` (SOFT's): ``dA = -V^T G V^T``, the gradient of an exact inverse, computed once.  It is the
      gradient of the forward only when the iteration has converged; the residual gets no gradient.
    - ``"unrolled"``: the exact VJP of the ``iters`` steps as computed (including the residual and the step size
      ``alpha``; stores every iterate).

    Lu et al. (2021), "SOFT: Softmax-free Transformer with Linear Complexity"; Schulz (1933), Ben-Israel (1965).

    Parameters
    ----------
    A : array (..., m, m)
    iters : int >= 0
    reg : float >= 0
    grad : {"implicit", "unrolled"}

    Returns
    -------
    V : array (..., m, m)
    residual : array (...)

    Examples
    --------
    >>> import numpy as np
    >>> A = np.array([[2.0, 0.5], [0.5, 1.0]])
    >>> V, res = newton_schulz_pinv(A, iters=30, reg=0.0)
    >>> np.allclose(V, np.linalg.inv(A)), float(res) < 1e-12
    (True, True)
    """
    return newton_schulz_pinv_fwd(A, iters=iters, reg=reg, grad=grad)[0]


def newton_schulz_pinv_fwd(A, *, iters=20, reg=0.01, grad="implicit"):
    xp = compat.array_namespace(A)
    Ac = compat.cast(A, compat.compute_dtype(A, xp), xp)
    V, resid, st = _ns_core(Ac, iters, float(reg), grad == "unrolled", xp)
    return (compat.cast(V, A.dtype, xp), compat.cast(resid, A.dtype, xp)), NewtonSchulzRes(V, resid, st, grad, A.dtype)


def newton_schulz_pinv_bwd(res: NewtonSchulzRes, dy):
    V = res.V
    xp = compat.array_namespace(V)
    gV, gr = dy
    gV = xp.zeros_like(V) if gV is None else compat.cast(gV, V.dtype, xp)
    gr = None if gr is None else compat.cast(gr, V.dtype, xp)
    return (compat.cast(_ns_bwd_core(V, res.resid, res.st, res.grad, gV, gr, xp), res.dtype, xp),)


vjp(newton_schulz_pinv, newton_schulz_pinv_fwd, newton_schulz_pinv_bwd, validate=True)


# ---------------------------------------------------------------------------------------------- SOFT
def _gauss(x, y, s, c, xp):
    """exp(-s ||x_i - y_j||^2) with the squared distance by the Gram expansion (clamped at 0, as SOFT) of x / c and
    y / c: c = max(1, |x|, |y|) keeps the squares finite, and s c^2 d^2 is formed as (s c)(c d^2)."""
    xs, ys = x / c, y / c
    d2 = xp.sum(xs * xs, axis=-1)[..., :, None] + xp.sum(ys * ys, axis=-1)[..., None, :] \
        - 2.0 * xp.matmul(xs, mT(ys, xp))
    with np.errstate(over="ignore"):       # -(s c)(c d^2) -> -inf is intended: the kernel underflows to 0
        return xp.exp(-(s * c) * (c * xp.maximum(d2, 0.0)))


def _gauss_bwd(x, y, K, G, s, xp):
    H = G * K
    dx = -2.0 * s * (xp.sum(H, axis=-1)[..., None] * x - xp.matmul(H, y))
    dy = 2.0 * s * (xp.matmul(mT(H, xp), x) - xp.sum(H, axis=-2)[..., None] * y)
    return dx, dy


class SoftAttentionRes(NamedTuple):
    qc: Any
    vc: Any
    L: Any
    B: Any
    C: Any
    W: Any
    resid: Any
    st: NewtonSchulzState
    T: Any
    U: Any
    s: float
    seg: Any
    grad: str
    meta: QKVMeta
    lmeta: Any


def _soft_example(rng, dtype):
    return (rng.standard_normal((2, 6, 3)).astype(dtype), rng.standard_normal((2, 6, 2)).astype(dtype)), \
        {"num_landmarks": 3}


@public(q=Float("... n d"), v=Float("... n e"), landmarks=Float("... l d", optional=True),
        num_landmarks=Int(1, optional=True), iters=Int(0), reg=NonNegative(), grad=Choice(("implicit", "unrolled")),
        example=_soft_example)
def soft_attention(q: Array, v: Array, landmarks: Array | None = None, *, num_landmarks: int | None = None,
                   iters: int = 20, reg: float = 0.01, grad: str = "implicit") -> Array:
    r"""SOFT attention: Gaussian-kernel attention with a Nystrom low-rank approximation (Q = K shared).

    .. math::

        \kappa(x, y) = \exp\Bigl(-\frac{\lVert x - y \rVert^2}{2\sqrt d}\Bigr), \qquad
        O = \kappa(Q, L)\, \kappa(L, L)^{+}\, \kappa(L, Q)\, V


    with landmarks ``L`` given (``landmarks``, e.g. the paper's learned conv + LayerNorm + GELU pooling computed
    by the caller) or the average of ``num_landmarks`` contiguous segments of ``Q``, and the pseudo-inverse by
    :func:`newton_schulz_pinv` (``iters``, ``reg``, ``grad`` as there; SOFT's defaults 20, 0.01, "implicit").
    Memory and time are linear in the sequence length n (``n x m`` kernel blocks).  Lu, Yao, Zhang, Zhu, Xu, Gao,
    Xiang & Zhang (2021), "SOFT: Softmax-free Transformer with Linear Complexity" (``fudan-zvg/SOFT``).  The
    optional depth-wise convolution on V is not part of this function.

    Parameters
    ----------
    q : array (..., n, d)
        Queries, also the keys.
    v : array (..., n, dv)
    landmarks : array (..., m, d), optional
        In the units of ``q`` (the same kernel is applied to both).
    num_landmarks : int, optional
        Used when ``landmarks`` is None; must divide n.
    iters, reg, grad
        Passed to the Newton-Schulz pseudo-inverse.

    Returns
    -------
    array (..., n, dv)

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(0)
    >>> soft_attention(r.standard_normal((8, 4)), r.standard_normal((8, 3)), num_landmarks=4).shape
    (8, 3)
    """
    return soft_attention_fwd(q, v, landmarks, num_landmarks=num_landmarks, iters=iters, reg=reg, grad=grad)[0]


def soft_attention_fwd(q, v, landmarks=None, *, num_landmarks=None, iters=20, reg=0.01, grad="implicit"):
    xp = compat.array_namespace(q, v, landmarks)
    qc, _, vc, meta = prepare_qkv(q, q, v, xp)
    n, d = qc.shape[-2], qc.shape[-1]
    s = 1.0 / (2.0 * math.sqrt(d))
    if landmarks is not None:
        L = xp.broadcast_to(compat.cast(landmarks, qc.dtype, xp), tuple(qc.shape[:-2]) + tuple(landmarks.shape[-2:]))
        seg = None
    else:
        if num_landmarks is None:
            raise ValueError("num_landmarks is required when landmarks is not given")
        m = num_landmarks
        if n % m:
            raise ValueError(f"num_landmarks={m} must divide the sequence length {n} (average pooling)")
        seg = n // m
        L = xp.mean(xp.reshape(qc, tuple(qc.shape[:-2]) + (m, seg, d)), axis=-2)
    c = xp.maximum(xp.maximum(xp.max(xp.abs(qc)), xp.max(xp.abs(L))), compat.full((), 1.0, like=qc))
    B = _gauss(qc, L, s, c, xp)                    # (..., n, m)
    C = _gauss(L, L, s, c, xp)                     # (..., m, m)
    W, resid, st = _ns_core(C, iters, float(reg), grad == "unrolled", xp)
    T = xp.matmul(mT(B, xp), vc)                   # (..., m, dv)
    U = xp.matmul(W, T)
    o = xp.matmul(B, U)
    res = SoftAttentionRes(qc, vc, L, B, C, W, resid, st, T, U, s, seg, grad, meta,
                           None if landmarks is None else (tuple(landmarks.shape), landmarks.dtype))
    return compat.cast(o, meta.dtype, xp), res


def soft_attention_bwd(res: SoftAttentionRes, dy):
    qc, vc, L, B, C, W, s = res.qc, res.vc, res.L, res.B, res.C, res.W, res.s
    xp = compat.array_namespace(B)
    g = compat.cast(dy, B.dtype, xp)
    dB = xp.matmul(g, mT(res.U, xp))
    dU = xp.matmul(mT(B, xp), g)
    dW = xp.matmul(dU, mT(res.T, xp))
    dT = xp.matmul(mT(W, xp), dU)
    dB = dB + xp.matmul(vc, mT(dT, xp))
    dv = xp.matmul(B, dT)
    dC = _ns_bwd_core(W, res.resid, res.st, res.grad, dW, None, xp)
    dq, dL1 = _gauss_bwd(qc, L, B, dB, s, xp)
    dLa, dLb = _gauss_bwd(L, L, C, dC, s, xp)
    dL = dL1 + dLa + dLb
    if res.seg is None:
        dlm = compat.cast(unbroadcast(dL, res.lmeta[0], xp), res.lmeta[1], xp)
    else:
        m, d, seg = dL.shape[-2], dL.shape[-1], res.seg
        up = xp.broadcast_to(dL[..., :, None, :] / seg, tuple(dL.shape[:-2]) + (m, seg, d))
        dq = dq + xp.reshape(up, tuple(qc.shape))
        dlm = None
    (dq_, _, dv_) = finish_grads(res.meta, (dq, xp.zeros_like(dq), dv), xp)
    return dq_, dv_, dlm


vjp(soft_attention, soft_attention_fwd, soft_attention_bwd, validate=True)
