"""Attention without softmax: sigmoid attention, linear attention (Katharopoulos), SOFT (Gaussian kernel + Nystrom +
Newton-Schulz pseudo-inverse), NaLa (norm-aware linear attention) and MALA (magnitude-aware linear attention).

Inputs are batched ``(..., n, d)``; batch dimensions broadcast.  The linear variants never build an ``n x n``
matrix: non-causal forms keep a ``d x d_v`` state, causal linear attention runs in chunks (a ``chunk x chunk``
masked product within a chunk, the carried state across chunks), so memory stays linear in the sequence length.
"""
from __future__ import annotations

import math

from .._lib.vjp import unbroadcast
from .._lib import compat, ops, validate

__all__ = ["sigmoid_attention", "linear_attention", "newton_schulz_pinv", "soft_attention", "nala_attention",
           "mala_attention"]


# ---------------------------------------------------------------------------------------------- helpers
def _as(xp, a, dt):
    return None if a is None else (a if a.dtype == dt else xp.astype(a, dt))


def _mT(xp, a):
    return xp.matrix_transpose(a)


def _qkv(q, k, v, *, need_same_n=False, names=("q", "k", "v")):
    """Validate (..., n, d), (..., m, d), (..., m, dv); broadcast batch dims; cast to the compute dtype."""
    arrs = dict(zip(names, (q, k, v)))
    xp = validate.check_same_namespace(**arrs)
    for nm, a in arrs.items():
        validate.check_float(a, nm)
        if a.ndim < 2:
            raise ValueError(f"{nm} must have shape (..., seq, features), got {tuple(a.shape)}")
        validate.check_nonempty(a, nm)
    nq, nk, nv = names
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{nq} (shape {tuple(q.shape)}) and {nk} (shape {tuple(k.shape)}) must have the same "
                         "feature size (last axis)")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{nk} (shape {tuple(k.shape)}) and {nv} (shape {tuple(v.shape)}) must have the same "
                         "sequence length (axis -2)")
    if need_same_n and q.shape[-2] != k.shape[-2]:
        raise ValueError(f"causal attention needs {nq} and {nk} of the same length, got {q.shape[-2]} and "
                         f"{k.shape[-2]}")
    b1 = validate.check_broadcastable(nq, q.shape[:-2], nk, k.shape[:-2])
    batch = validate.check_broadcastable(f"{nq}/{nk}", b1, nv, v.shape[:-2])
    dt = xp.result_type(q.dtype, k.dtype, v.dtype)
    cdt = xp.float64 if dt == xp.float64 else xp.float32
    out = []
    for a in (q, k, v):
        a = _as(xp, a, cdt)
        out.append(xp.broadcast_to(a, batch + tuple(a.shape[-2:])))
    meta = dict(shapes=(tuple(q.shape), tuple(k.shape), tuple(v.shape)), dts=(q.dtype, k.dtype, v.dtype), dt=dt)
    return xp, out[0], out[1], out[2], meta


def _finish_grads(xp, meta, grads):
    return tuple(_as(xp, unbroadcast(g, s, xp), d) for g, s, d in zip(grads, meta["shapes"], meta["dts"]))


def _tril(xp, n, m, dtype, device_like):
    i = xp.arange(n)[:, None]
    j = xp.arange(m)[None, :]
    return _as(xp, i >= j, dtype)


def _sigmoid(xp, s):
    e = xp.exp(-xp.abs(s))
    return xp.where(s >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# ---------------------------------------------------------------------------------------------- sigmoid attention
def _sig_fwd(q, k, v, mask=None, *, bias=None, scale=None, causal=False):
    xp, qc, kc, vc, meta = _qkv(q, k, v, need_same_n=False)
    n, m, d = qc.shape[-2], kc.shape[-2], qc.shape[-1]
    b = -math.log(m) if bias is None else float(bias)
    if not math.isfinite(b):
        raise ValueError(f"bias must be finite, got {bias}")
    sc = 1.0 / math.sqrt(d) if scale is None else validate.check_positive(scale, "scale")
    s = xp.matmul(qc, _mT(xp, kc)) * sc + b
    p = _sigmoid(xp, s)
    keep = None
    if mask is not None:
        validate.check_same_namespace(q=q, mask=mask)
        if mask.dtype != xp.bool:
            raise TypeError(f"mask must be a boolean array (True = attend), got {mask.dtype}")
        validate.check_broadcastable("mask", mask.shape, "scores", p.shape)
        keep = _as(xp, mask, p.dtype)
    if causal:
        tri = _tril(xp, n, m, p.dtype, p)
        keep = tri if keep is None else keep * tri
    if keep is not None:
        p = p * keep
    o = xp.matmul(p, vc)
    return _as(xp, o, meta["dt"]), (xp, qc, kc, vc, p, sc, meta, None if mask is None else tuple(mask.shape))


def sigmoid_attention(q, k, v, mask=None, *, bias=None, scale=None, causal=False):
    r"""Sigmoid attention: ``O = sigmoid(scale q k^T + bias) v`` with no row normalisation.

    ``bias`` defaults to ``-log(m)`` (m = key length), the paper's recommendation that makes each row sum to
    about 1 at initialisation; ``scale`` defaults to ``1/sqrt(d)``.  Masked entries (``mask`` False, or above the
    diagonal with ``causal=True``, top-left aligned) get weight exactly 0, so fully masked rows give 0 (no NaN).
    Ramapuram et al. (2024), "Theory, Analysis, and Best Practices for Sigmoid Self-Attention"
    (``apple/ml-sigmoid-attention``; its code defaults the bias to 0 and sets it per config).  Quadratic in
    memory (the weight matrix is built).

    Parameters
    ----------
    q : array (..., n, d)
    k : array (..., m, d)
    v : array (..., m, dv)
    mask : bool array broadcastable to (..., n, m), optional
        True where attention is allowed.
    bias : float, optional
    scale : float, optional
    causal : bool

    Returns
    -------
    array (..., n, dv)

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(0)
    >>> sigmoid_attention(r.standard_normal((2, 5, 4)), r.standard_normal((2, 5, 4)), r.standard_normal((2, 5, 3))).shape
    (2, 5, 3)
    """
    return _sig_fwd(q, k, v, mask, bias=bias, scale=scale, causal=causal)[0]


def sigmoid_attention_fwd(q, k, v, mask=None, *, bias=None, scale=None, causal=False):
    return _sig_fwd(q, k, v, mask, bias=bias, scale=scale, causal=causal)


def sigmoid_attention_bwd(res, dy):
    xp, qc, kc, vc, p, sc, meta, mshape = res
    g = _as(xp, dy, p.dtype)
    dv = xp.matmul(_mT(xp, p), g)
    dp = xp.matmul(g, _mT(xp, vc))
    ds = dp * p * (1.0 - p)          # masked entries have p = 0, so ds = 0 there
    dq = xp.matmul(ds, kc) * sc
    dk = xp.matmul(_mT(xp, ds), qc) * sc
    return _finish_grads(xp, meta, (dq, dk, dv)) + (None,)


ops.register("norm.sigmoid_attention", sigmoid_attention, sigmoid_attention_fwd, sigmoid_attention_bwd,
             nondiff_argnums=(3,))


# ---------------------------------------------------------------------------------------------- linear attention core
def _la_core_fwd(xp, a, b, v, *, causal, eps, chunk):
    """O_i = sum_j (a_i . b_j) v_j / (sum_j a_i . b_j + eps), j over all keys or j <= i (chunked)."""
    if not causal:
        S = xp.matmul(_mT(xp, b), v)
        z = xp.sum(b, axis=-2)
        num = xp.matmul(a, S)
        den = xp.sum(a * z[..., None, :], axis=-1) + eps
        return num / den[..., None], den
    n = a.shape[-2]
    batch = tuple(a.shape[:-2])
    d, dv = a.shape[-1], v.shape[-1]
    S = xp.zeros(batch + (d, dv), dtype=a.dtype)
    z = xp.zeros(batch + (d,), dtype=a.dtype)
    outs, dens = [], []
    for s0 in range(0, n, chunk):
        s1 = min(n, s0 + chunk)
        ac, bc, vc = a[..., s0:s1, :], b[..., s0:s1, :], v[..., s0:s1, :]
        A = xp.matmul(ac, _mT(xp, bc)) * _tril(xp, s1 - s0, s1 - s0, a.dtype, a)
        num = xp.matmul(A, vc) + xp.matmul(ac, S)
        den = xp.sum(A, axis=-1) + xp.sum(ac * z[..., None, :], axis=-1) + eps
        outs.append(num / den[..., None])
        dens.append(den)
        S = S + xp.matmul(_mT(xp, bc), vc)
        z = z + xp.sum(bc, axis=-2)
    return xp.concat(outs, axis=-2), xp.concat(dens, axis=-1)


def _la_core_bwd(xp, a, b, v, o, den, g, *, causal, chunk):
    dnum = g / den[..., None]
    dden = -xp.sum(g * o, axis=-1) / den
    if not causal:
        S = xp.matmul(_mT(xp, b), v)
        z = xp.sum(b, axis=-2)
        da = xp.matmul(dnum, _mT(xp, S)) + dden[..., None] * z[..., None, :]
        R = xp.matmul(_mT(xp, a), dnum)
        r = xp.sum(a * dden[..., None], axis=-2)
        db = xp.matmul(v, _mT(xp, R)) + r[..., None, :]
        dv = xp.matmul(b, R)
        return da, db, dv
    n = a.shape[-2]
    batch = tuple(a.shape[:-2])
    d, dvn = a.shape[-1], v.shape[-1]
    bounds = [(s0, min(n, s0 + chunk)) for s0 in range(0, n, chunk)]
    S = xp.zeros(batch + (d, dvn), dtype=a.dtype)
    z = xp.zeros(batch + (d,), dtype=a.dtype)
    das = []
    for s0, s1 in bounds:
        ac, bc, vc = a[..., s0:s1, :], b[..., s0:s1, :], v[..., s0:s1, :]
        dn, dd = dnum[..., s0:s1, :], dden[..., s0:s1]
        W = (xp.matmul(dn, _mT(xp, vc)) + dd[..., None]) * _tril(xp, s1 - s0, s1 - s0, a.dtype, a)
        das.append(xp.matmul(W, bc) + xp.matmul(dn, _mT(xp, S)) + dd[..., None] * z[..., None, :])
        S = S + xp.matmul(_mT(xp, bc), vc)
        z = z + xp.sum(bc, axis=-2)
    R = xp.zeros(batch + (d, dvn), dtype=a.dtype)
    r = xp.zeros(batch + (d,), dtype=a.dtype)
    dbs, dvs = [], []
    for s0, s1 in reversed(bounds):
        ac, bc, vc = a[..., s0:s1, :], b[..., s0:s1, :], v[..., s0:s1, :]
        dn, dd = dnum[..., s0:s1, :], dden[..., s0:s1]
        tri = _tril(xp, s1 - s0, s1 - s0, a.dtype, a)
        W = (xp.matmul(dn, _mT(xp, vc)) + dd[..., None]) * tri
        A = xp.matmul(ac, _mT(xp, bc)) * tri
        dbs.append(xp.matmul(_mT(xp, W), ac) + xp.matmul(vc, _mT(xp, R)) + r[..., None, :])
        dvs.append(xp.matmul(_mT(xp, A), dn) + xp.matmul(bc, R))
        R = R + xp.matmul(_mT(xp, ac), dn)
        r = r + xp.sum(ac * dd[..., None], axis=-2)
    return xp.concat(das, axis=-2), xp.concat(dbs[::-1], axis=-2), xp.concat(dvs[::-1], axis=-2)


def _feat(xp, x, kind):
    if kind == "elu1":
        return xp.where(x > 0, x + 1.0, xp.exp(xp.minimum(x, 0.0)))
    return xp.where(x > 0, x, xp.zeros_like(x))


def _feat_grad(xp, x, kind):
    if kind == "elu1":
        return xp.where(x > 0, xp.ones_like(x), xp.exp(xp.minimum(x, 0.0)))
    return _as(xp, x > 0, x.dtype)


# ---------------------------------------------------------------------------------------------- linear attention
def _lin_fwd(q, k, v, *, feature_map="elu1", causal=False, eps=1e-6, chunk_size=64):
    xp, qc, kc, vc, meta = _qkv(q, k, v, need_same_n=causal)
    validate.check_in(feature_map, ("elu1", "relu"), "feature_map")
    validate.check_nonnegative(eps, "eps")
    ch = validate.check_int(chunk_size, "chunk_size", low=1)
    a, b = _feat(xp, qc, feature_map), _feat(xp, kc, feature_map)
    o, den = _la_core_fwd(xp, a, b, vc, causal=causal, eps=eps, chunk=ch)
    return _as(xp, o, meta["dt"]), (xp, qc, kc, vc, a, b, o, den, feature_map, causal, ch, meta)


def linear_attention(q, k, v, *, feature_map="elu1", causal=False, eps=1e-6, chunk_size=64):
    r"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs").

    ``O_i = phi(q_i)^T S / (phi(q_i)^T z + eps)`` with ``S = sum_j phi(k_j) v_j^T`` and ``z = sum_j phi(k_j)``
    (``j <= i`` when causal), ``phi(x) = elu(x) + 1`` (``feature_map="elu1"``) or ``relu``.  Memory is
    ``O(n (d + d_v) + d d_v)``: causal attention runs over chunks of ``chunk_size`` (a masked product inside a
    chunk, the running state across chunks), in the forward and in the VJP (which recomputes the states rather
    than storing one per position).

    Parameters
    ----------
    q : array (..., n, d)
    k : array (..., m, d)
    v : array (..., m, dv)
    feature_map : {"elu1", "relu"}
    causal : bool
        Requires n == m.
    eps : float >= 0
        Added to the denominator (1e-6).
    chunk_size : int

    Returns
    -------
    array (..., n, dv)

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(0)
    >>> q, k, v = r.standard_normal((3, 6, 4)), r.standard_normal((3, 6, 4)), r.standard_normal((3, 6, 2))
    >>> linear_attention(q, k, v, causal=True).shape
    (3, 6, 2)
    """
    return _lin_fwd(q, k, v, feature_map=feature_map, causal=causal, eps=eps, chunk_size=chunk_size)[0]


def linear_attention_fwd(q, k, v, *, feature_map="elu1", causal=False, eps=1e-6, chunk_size=64):
    return _lin_fwd(q, k, v, feature_map=feature_map, causal=causal, eps=eps, chunk_size=chunk_size)


def linear_attention_bwd(res, dy):
    xp, qc, kc, vc, a, b, o, den, fm, causal, ch, meta = res
    g = _as(xp, dy, o.dtype)
    da, db, dv = _la_core_bwd(xp, a, b, vc, o, den, g, causal=causal, chunk=ch)
    return _finish_grads(xp, meta, (da * _feat_grad(xp, qc, fm), db * _feat_grad(xp, kc, fm), dv))


ops.register("norm.linear_attention", linear_attention, linear_attention_fwd, linear_attention_bwd)


# ---------------------------------------------------------------------------------------------- Newton-Schulz pinv
def _eye(xp, n, dtype, like):
    return xp.eye(n, dtype=dtype)


def _ns_core(xp, A, iters, reg, keep):
    n = A.shape[-1]
    I = _eye(xp, n, A.dtype, A)
    P = A + reg * I
    absA = xp.abs(A)
    rows = xp.sum(absA, axis=-1)
    cols = xp.sum(absA, axis=-2)
    ninf = xp.max(rows, axis=-1)
    n1 = xp.max(cols, axis=-1)
    prod = n1 * ninf
    prod = xp.where(prod > 0, prod, xp.ones_like(prod))
    alpha = 1.8 / prod
    V = alpha[..., None, None] * _mT(xp, P)
    hist = [V] if keep else None
    for _ in range(iters):
        V = 2.0 * V - xp.matmul(xp.matmul(V, P), V)
        if keep:
            hist.append(V)
    E = xp.matmul(V, P) - I
    resid = xp.sqrt(xp.sum(xp.sum(E * E, axis=-1), axis=-1))
    return V, resid, dict(P=P, I=I, E=E, alpha=alpha, rows=rows, cols=cols, ninf=ninf, n1=n1, hist=hist)


def _ns_fwd(A, *, iters=20, reg=0.01, grad="implicit"):
    validate.check_float(A, "A")
    validate.check_square(A, "A")
    validate.check_nonempty(A, "A")
    it = validate.check_int(iters, "iters", low=0)
    rg = validate.check_nonnegative(reg, "reg")
    validate.check_in(grad, ("implicit", "unrolled"), "grad")
    xp = compat.array_namespace(A)
    Ac = _as(xp, A, compat.compute_dtype(A, xp))
    V, resid, st = _ns_core(xp, Ac, it, rg, grad == "unrolled")
    return (_as(xp, V, A.dtype), _as(xp, resid, A.dtype)), (xp, Ac, V, resid, st, grad, A.dtype)


def _ns_bwd_core(xp, Ac, V, resid, st, grad, gV, gr):
    """Cotangent of A (compute dtype) from cotangents of V and of the residual."""
    P, I, E = st["P"], st["I"], st["E"]
    if grad == "implicit":
        # gradient of an exact inverse: dP = -V^T gV V^T (SOFT's "theoretical gradient"); the residual is treated
        # as a diagnostic with zero gradient.
        Vt = _mT(xp, V)
        return -xp.matmul(xp.matmul(Vt, gV), Vt)
    # unrolled: exact VJP of the iterations, the residual and the step-size choice
    safe = xp.where(resid > 0, resid, xp.ones_like(resid))
    if gr is not None:
        En = E / safe[..., None, None]
        gV = gV + xp.matmul(gr[..., None, None] * En, _mT(xp, P))
        dP = xp.matmul(_mT(xp, V), gr[..., None, None] * En)
    else:
        dP = xp.zeros_like(P)
    hist = st["hist"]
    G = gV
    for t in range(len(hist) - 1, 0, -1):
        Vt = hist[t - 1]
        VP = xp.matmul(Vt, P)
        PV = xp.matmul(P, Vt)
        dP = dP - xp.matmul(xp.matmul(_mT(xp, Vt), G), _mT(xp, Vt))
        G = 2.0 * G - xp.matmul(G, _mT(xp, PV)) - xp.matmul(_mT(xp, VP), G)
    alpha = st["alpha"]
    # V0 = alpha P^T
    dP = dP + alpha[..., None, None] * _mT(xp, G)
    dalpha = xp.sum(xp.sum(G * _mT(xp, P), axis=-1), axis=-1)
    # alpha = 1.8 / (||A||_1 ||A||_inf): subgradient through the max row / column sums (ties share)
    rows, cols, ninf, n1 = st["rows"], st["cols"], st["ninf"], st["n1"]
    rmask = _as(xp, rows == ninf[..., None], Ac.dtype)
    cmask = _as(xp, cols == n1[..., None], Ac.dtype)
    rmask = rmask / xp.sum(rmask, axis=-1, keepdims=True)
    cmask = cmask / xp.sum(cmask, axis=-1, keepdims=True)
    sgn = xp.sign(Ac)
    da_ninf = -alpha / xp.where(ninf > 0, ninf, xp.ones_like(ninf)) * dalpha
    da_n1 = -alpha / xp.where(n1 > 0, n1, xp.ones_like(n1)) * dalpha
    dA = dP + sgn * (da_ninf[..., None, None] * rmask[..., :, None] + da_n1[..., None, None] * cmask[..., None, :])
    return dA


def newton_schulz_pinv(A, *, iters=20, reg=0.01, grad="implicit"):
    r"""Newton-Schulz (Newton-Raphson) iteration for the (regularised) inverse / pseudo-inverse, with its residual.

    With ``P = A + reg I``: ``V_0 = alpha P^T``, ``alpha = 1.8 / (||A||_1 ||A||_inf)`` and
    ``V_{t+1} = 2 V_t - V_t P V_t`` for ``iters`` steps.  For the symmetric non-negative kernel matrices of SOFT,
    ``alpha`` is exactly the official ``0.9 * 2 / (max row sum)^2`` and ``reg = 0.01``, ``iters = 20`` are its
    defaults (``fudan-zvg/SOFT``, ``SOFT/kernel/inverse.py``); ``||A||_1 ||A||_inf >= sigma_max^2`` makes the start
    convergent for any matrix.  With ``reg = 0`` the iteration converges to the Moore-Penrose pseudo-inverse,
    but for a singular ``A`` rounding errors in its null space double at every step once converged (measured: a
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
    return _ns_fwd(A, iters=iters, reg=reg, grad=grad)[0]


def newton_schulz_pinv_fwd(A, *, iters=20, reg=0.01, grad="implicit"):
    return _ns_fwd(A, iters=iters, reg=reg, grad=grad)


def newton_schulz_pinv_bwd(res, dy):
    xp, Ac, V, resid, st, grad, dt = res
    gV, gr = dy
    gV = xp.zeros_like(V) if gV is None else _as(xp, gV, V.dtype)
    gr = None if gr is None else _as(xp, gr, V.dtype)
    return (_as(xp, _ns_bwd_core(xp, Ac, V, resid, st, grad, gV, gr), dt),)


ops.register("norm.newton_schulz_pinv", newton_schulz_pinv, newton_schulz_pinv_fwd, newton_schulz_pinv_bwd)


# ---------------------------------------------------------------------------------------------- SOFT
def _gauss(xp, x, y, s):
    """exp(-s ||x_i - y_j||^2), the squared distance by the Gram expansion clamped at 0 (as SOFT)."""
    d2 = xp.sum(x * x, axis=-1)[..., :, None] + xp.sum(y * y, axis=-1)[..., None, :] - 2.0 * xp.matmul(x, _mT(xp, y))
    return xp.exp(-s * xp.maximum(d2, 0.0))


def _gauss_bwd(xp, x, y, K, G, s):
    H = G * K
    dx = -2.0 * s * (xp.sum(H, axis=-1)[..., None] * x - xp.matmul(H, y))
    dy = 2.0 * s * (xp.matmul(_mT(xp, H), x) - xp.sum(H, axis=-2)[..., None] * y)
    return dx, dy


def _soft_fwd(q, v, landmarks=None, *, num_landmarks=None, iters=20, reg=0.01, grad="implicit"):
    xp = validate.check_same_namespace(q=q, v=v, landmarks=landmarks)
    xp, qc, _, vc, meta = _qkv(q, q, v, names=("q", "q", "v"))
    n, d = qc.shape[-2], qc.shape[-1]
    it = validate.check_int(iters, "iters", low=0)
    rg = validate.check_nonnegative(reg, "reg")
    validate.check_in(grad, ("implicit", "unrolled"), "grad")
    s = 1.0 / (2.0 * math.sqrt(d))
    if landmarks is not None:
        validate.check_float(landmarks, "landmarks")
        if landmarks.ndim < 2 or landmarks.shape[-1] != d:
            raise ValueError(f"landmarks must have shape (..., m, {d}), got {tuple(landmarks.shape)}")
        validate.check_broadcastable("landmarks", landmarks.shape[:-2], "q", qc.shape[:-2])
        L = xp.broadcast_to(_as(xp, landmarks, qc.dtype), tuple(qc.shape[:-2]) + tuple(landmarks.shape[-2:]))
        seg = None
    else:
        if num_landmarks is None:
            raise ValueError("num_landmarks is required when landmarks is not given")
        m = validate.check_int(num_landmarks, "num_landmarks", low=1)
        if n % m:
            raise ValueError(f"num_landmarks={m} must divide the sequence length {n} (average pooling)")
        seg = n // m
        L = xp.mean(xp.reshape(qc, tuple(qc.shape[:-2]) + (m, seg, d)), axis=-2)
    B = _gauss(xp, qc, L, s)                       # (..., n, m)
    C = _gauss(xp, L, L, s)                        # (..., m, m)
    W, resid, st = _ns_core(xp, C, it, rg, grad == "unrolled")
    T = xp.matmul(_mT(xp, B), vc)                  # (..., m, dv)
    U = xp.matmul(W, T)
    o = xp.matmul(B, U)
    res = (xp, qc, vc, L, B, C, W, resid, st, T, U, s, seg, grad, meta,
           None if landmarks is None else (tuple(landmarks.shape), landmarks.dtype))
    return _as(xp, o, meta["dt"]), res


def soft_attention(q, v, landmarks=None, *, num_landmarks=None, iters=20, reg=0.01, grad="implicit"):
    r"""SOFT attention: Gaussian-kernel attention with a Nystrom low-rank approximation (Q = K shared).

    ::

        kappa(x, y) = exp(-||x - y||^2 / (2 sqrt(d)))
        O = kappa(Q, L) pinv(kappa(L, L)) kappa(L, Q) V

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
    return _soft_fwd(q, v, landmarks, num_landmarks=num_landmarks, iters=iters, reg=reg, grad=grad)[0]


def soft_attention_fwd(q, v, landmarks=None, *, num_landmarks=None, iters=20, reg=0.01, grad="implicit"):
    return _soft_fwd(q, v, landmarks, num_landmarks=num_landmarks, iters=iters, reg=reg, grad=grad)


def soft_attention_bwd(res, dy):
    xp, qc, vc, L, B, C, W, resid, st, T, U, s, seg, grad, meta, lmeta = res
    g = _as(xp, dy, B.dtype)
    dB = xp.matmul(g, _mT(xp, U))
    dU = xp.matmul(_mT(xp, B), g)
    dW = xp.matmul(dU, _mT(xp, T))
    dT = xp.matmul(_mT(xp, W), dU)
    dB = dB + xp.matmul(vc, _mT(xp, dT))
    dv = xp.matmul(B, dT)
    dC = _ns_bwd_core(xp, C, W, resid, st, grad, dW, None)
    dq, dL1 = _gauss_bwd(xp, qc, L, B, dB, s)
    dLa, dLb = _gauss_bwd(xp, L, L, C, dC, s)
    dL = dL1 + dLa + dLb
    if seg is None:
        dlm = _as(xp, unbroadcast(dL, lmeta[0], xp), lmeta[1])
    else:
        m, d = dL.shape[-2], dL.shape[-1]
        up = xp.broadcast_to(dL[..., :, None, :] / seg, tuple(dL.shape[:-2]) + (m, seg, d))
        dq = dq + xp.reshape(up, tuple(qc.shape))
        dlm = None
    (dq_, _, dv_) = _finish_grads(xp, meta, (dq, xp.zeros_like(dq), dv))
    return dq_, dv_, dlm


ops.register("norm.soft_attention", soft_attention, soft_attention_fwd, soft_attention_bwd)


# ---------------------------------------------------------------------------------------------- NaLa
def _nala_fwd(q, k, v, *, causal=False, eps=1e-6, norm_eps=1e-6, chunk_size=64):
    xp, qc, kc, vc, meta = _qkv(q, k, v, need_same_n=causal)
    validate.check_nonnegative(eps, "eps")
    validate.check_positive(norm_eps, "norm_eps")
    ch = validate.check_int(chunk_size, "chunk_size", low=1)
    N = kc.shape[-2]
    qn = xp.sqrt(xp.sum(qc * qc, axis=-1, keepdims=True))
    th = xp.tanh(qn)
    p = 3.0 * (0.5 + th)
    nn = qn + norm_eps
    u = qc / nn
    t = xp.abs(u)
    tp = xp.where(t > 0, xp.exp(p * xp.log(xp.where(t > 0, t, xp.ones_like(t)))), xp.zeros_like(t))
    pos = u > 0
    z0 = xp.zeros_like(tp)
    a = xp.concat([xp.where(pos, tp, z0), xp.where(u < 0, tp, z0)], axis=-1)
    kk = kc * kc * kc
    zk = xp.zeros_like(kk)
    b = xp.concat([xp.maximum(kk, zk), xp.maximum(-kk, zk)], axis=-1) / N
    o, den = _la_core_fwd(xp, a, b, vc, causal=causal, eps=eps, chunk=ch)
    res = (xp, qc, kc, vc, a, b, o, den, qn, th, p, nn, t, tp, pos, N, causal, ch, meta)
    return _as(xp, o, meta["dt"]), res


def nala_attention(q, k, v, *, causal=False, eps=1e-6, norm_eps=1e-6, chunk_size=64):
    r"""NaLa: norm-aware linear attention (NaLaFormer), without RoPE.

    Per query, with ``||q||`` its L2 norm and the norm-aware power ``p = 3 (0.5 + tanh ||q||)`` in (1.5, 4.5)::

        phi(q) = [relu(q / ||q||)^p, relu(-q / ||q||)^p]            (2d features)
        phi(k) = [relu(k^3), relu(-k^3)]
        O_i = (phi(q_i) . (1/N) sum_j phi(k_j) v_j^T) / (phi(q_i) . mean_j phi(k_j) + eps)

    so sign halves pair (q+ with k+, q- with k-) and the query norm sets the sharpness.  From the official code
    (``ZacharyMeng/NaLaFormer``, ``NormAwareLinearAttn``), with two documented differences: RoPE (applied there
    to the numerator only) is **omitted**, so rows sum exactly to 1 (up to eps); ``norm_eps`` is added to
    ``||q||`` (the code divides by ``||q||`` and gives 0/0 for a zero query).  LePE, the gate and the
    projections are outside this function.  ``causal=True`` restricts j <= i (the 1/N factor stays N = n).
    Meng et al. (ICML 2026), "Norm x Direction: Restoring the Missing Query Norm in Vision Linear Attention"
    (NaLaFormer).

    Parameters
    ----------
    q : array (..., n, d)
    k : array (..., m, d)
    v : array (..., m, dv)
    causal : bool
    eps : float >= 0
        Denominator epsilon (1e-6, as the code).
    norm_eps : float > 0
    chunk_size : int
        Chunk length of the causal form.

    Returns
    -------
    array (..., n, dv)

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(0)
    >>> nala_attention(r.standard_normal((5, 4)), r.standard_normal((5, 4)), r.standard_normal((5, 2))).shape
    (5, 2)
    """
    return _nala_fwd(q, k, v, causal=causal, eps=eps, norm_eps=norm_eps, chunk_size=chunk_size)[0]


def nala_attention_fwd(q, k, v, *, causal=False, eps=1e-6, norm_eps=1e-6, chunk_size=64):
    return _nala_fwd(q, k, v, causal=causal, eps=eps, norm_eps=norm_eps, chunk_size=chunk_size)


def nala_attention_bwd(res, dy):
    xp, qc, kc, vc, a, b, o, den, qn, th, p, nn, t, tp, pos, N, causal, ch, meta = res
    g = _as(xp, dy, o.dtype)
    da, db, dv = _la_core_bwd(xp, a, b, vc, o, den, g, causal=causal, chunk=ch)
    d = qc.shape[-1]
    da1, da2 = da[..., :d], da[..., d:]
    neg = qc < 0
    z0 = xp.zeros_like(da1)
    ga = xp.where(pos, da1, xp.where(neg, da2, z0))          # cotangent of t^p per element
    tsafe = xp.where(t > 0, t, xp.ones_like(t))
    dt_ = xp.where(t > 0, ga * p * tp / tsafe, z0)             # d/dt of t^p = p t^(p-1)
    dp = xp.sum(xp.where(t > 0, ga * tp * xp.log(tsafe), z0), axis=-1, keepdims=True)
    sgn = xp.sign(qc)
    qs = xp.where(qn > 0, qn, xp.ones_like(qn))
    # t = |q| / (||q|| + norm_eps);  p = 3 (0.5 + tanh ||q||)
    dq = sgn * dt_ / nn
    dq = dq - xp.sum(dt_ * xp.abs(qc), axis=-1, keepdims=True) / (nn * nn) * qc / qs
    dq = dq + dp * 3.0 * (1.0 - th * th) * qc / qs
    kk = kc * kc * kc
    db = db / N
    dkk = xp.where(kk > 0, db[..., :d], xp.where(kk < 0, -db[..., d:], xp.zeros_like(kk)))
    dk = 3.0 * kc * kc * dkk
    return _finish_grads(xp, meta, (dq, dk, dv))


ops.register("norm.nala_attention", nala_attention, nala_attention_fwd, nala_attention_bwd)


# ---------------------------------------------------------------------------------------------- MALA
def _mala_fwd(q, k, v, *, scale=None, eps=1e-6):
    xp, qc, kc, vc, meta = _qkv(q, k, v)
    validate.check_nonnegative(eps, "eps")
    d = qc.shape[-1]
    N = kc.shape[-2]
    s = 1.0 / math.sqrt(d) if scale is None else validate.check_positive(scale, "scale")
    a = _feat(xp, qc, "elu1")
    b = _feat(xp, kc, "elu1")
    S = xp.matmul(_mT(xp, b), vc) * (s / N)
    z = xp.sum(b, axis=-2) * (s / N)
    num = xp.matmul(a, S)
    zi = xp.sum(a * z[..., None, :], axis=-1)[..., None]       # (..., n, 1)
    vbar = xp.mean(vc, axis=-2)[..., None, :]
    c = 1.0 + 1.0 / (zi + eps)
    o = c * num - zi * vbar
    res = (xp, qc, kc, vc, a, b, S, z, num, zi, vbar, c, s, N, eps, meta)
    return _as(xp, o, meta["dt"]), res


def mala_attention(q, k, v, *, scale=None, eps=1e-6):
    r"""MALA: magnitude-aware linear attention (Fan et al., ICCV 2025, "Rectifying Magnitude Neglect in Linear
    Attention"), without RoPE.

    With ``phi = elu + 1``, ``s = scale`` (default ``d^{-1/2}``) and N keys::

        z_i = s phi(q_i) . mean_j phi(k_j)
        O_i = (1 + 1 / (z_i + eps)) sum_j (s / N) (phi(q_i) . phi(k_j)) v_j  -  z_i mean_j v_j

    The implied weights sum to exactly 1 per query and can be negative; scaling q changes the split between the
    two terms, so the query magnitude matters (unlike plain linear attention).  From the official code
    (``qhfan/MALA``, ``AddLinearAttention``); its RoPE on the numerator, LePE, gate and projections are outside
    this function.  Memory linear in the sequence length.

    Parameters
    ----------
    q : array (..., n, d)
    k : array (..., m, d)
    v : array (..., m, dv)
    scale : float, optional
    eps : float >= 0

    Returns
    -------
    array (..., n, dv)

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(0)
    >>> mala_attention(r.standard_normal((5, 4)), r.standard_normal((6, 4)), r.standard_normal((6, 2))).shape
    (5, 2)
    """
    return _mala_fwd(q, k, v, scale=scale, eps=eps)[0]


def mala_attention_fwd(q, k, v, *, scale=None, eps=1e-6):
    return _mala_fwd(q, k, v, scale=scale, eps=eps)


def mala_attention_bwd(res, dy):
    xp, qc, kc, vc, a, b, S, z, num, zi, vbar, c, s, N, eps, meta = res
    g = _as(xp, dy, num.dtype)
    dnum = c * g
    dzi = -xp.sum(g * num, axis=-1, keepdims=True) / ((zi + eps) * (zi + eps)) - xp.sum(g * vbar, axis=-1,
                                                                                        keepdims=True)
    dvbar = -xp.sum(zi * g, axis=-2)                            # (..., dv)
    da = xp.matmul(dnum, _mT(xp, S)) + dzi * z[..., None, :]
    dS = xp.matmul(_mT(xp, a), dnum)
    dz = xp.sum(a * dzi, axis=-2)
    db = (xp.matmul(vc, _mT(xp, dS)) + dz[..., None, :]) * (s / N)
    dv = xp.matmul(b, dS) * (s / N) + dvbar[..., None, :] / N
    return _finish_grads(xp, meta, (da * _feat_grad(xp, qc, "elu1"), db * _feat_grad(xp, kc, "elu1"), dv))


ops.register("norm.mala_attention", mala_attention, mala_attention_fwd, mala_attention_bwd)
