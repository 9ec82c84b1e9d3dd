"""Softmax (scaled dot-product) attention with torch's semantics, computed blockwise from the row log-sum-exp."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..._lib import compat
from ..._lib.api import public, vjp
from ..._lib.dispatch import Dispatcher, numpy_float
from ..._lib.roles import Bool, Float, Mask, Scalar, Seed, UnitInterval
from ..._lib.typing import Array
from ..._lib.typing import Seed as SeedT
from ..._lib.vjp import unbroadcast

# key chunk of the generic path: the scores it forms are (batch, L, _CHUNK), never (batch, L, S)
_CHUNK = 512
_CUDA_MAX_DIM = 256  # OPTNORM_SDPA_MAX_DIM of norm.cu: per-thread accumulators of the head dimensions


# ---------------------------------------------------------------------------------------------- geometry
class Geometry(NamedTuple):
    """Shapes of one call: the broadcast output batch, grouped-query heads, and the index maps of the pairs."""
    full: tuple         # output batch shape (N, ..., Hq)
    L: int
    S: int
    E: int
    Ev: int
    groups: int         # query heads per key head (1 without enable_gqa)
    qmap: Any           # (P,) query head of each output pair (NumPy int64)
    kvmap: Any          # (P,) key/value head of each output pair


def _geometry(q, k, v, mask, enable_gqa) -> Geometry:
    L, E = q.shape[-2], q.shape[-1]
    S, Ev = k.shape[-2], v.shape[-1]
    if k.shape[-1] != E:
        raise ValueError(f"scaled_dot_product_attention: k has head dimension {k.shape[-1]} (its last axis) but q "
                         f"has {E}: queries and keys must have the same embedding size")
    if tuple(v.shape[:-1]) != tuple(k.shape[:-1]):
        raise ValueError(f"scaled_dot_product_attention: v has shape {tuple(v.shape)}, expected {tuple(k.shape[:-1])} "
                         f"+ (Ev,) (one value per key of k, same batch dimensions)")
    qb, kb = tuple(q.shape[:-2]), tuple(k.shape[:-2])
    groups = 1
    kb_virtual = kb
    if enable_gqa:
        if len(qb) < 1 or len(kb) < 1:
            raise ValueError("scaled_dot_product_attention: enable_gqa=True needs q and k with a head axis (shape "
                             "(..., heads, length, dim))")
        hq, hk = qb[-1], kb[-1]
        if hq % hk:
            raise ValueError(f"scaled_dot_product_attention: k has {hk} heads (axis -3) and q has {hq}: with "
                             f"enable_gqa=True the query heads must be a multiple of the key heads")
        groups = hq // hk
        kb_virtual = kb[:-1] + (hq,)
    try:
        full = tuple(np.broadcast_shapes(qb, kb_virtual))
    except ValueError:
        hint = "" if enable_gqa else " (grouped-query heads need enable_gqa=True)"
        raise ValueError(f"scaled_dot_product_attention: the batch dimensions of k {kb} do not broadcast with those "
                         f"of q {qb}{hint}") from None
    if mask is not None:
        if not (compat.is_floating(mask) or compat.dtype_name(mask.dtype) == "bool"):
            raise TypeError(f"scaled_dot_product_attention: mask must be boolean (True = attend) or floating "
                            f"(added to the scores), got {compat.dtype_name(mask.dtype)}")
        want = full + (L, S)
        try:
            ok = tuple(np.broadcast_shapes(tuple(mask.shape), want)) == want
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"scaled_dot_product_attention: mask has shape {tuple(mask.shape)}, which does not "
                             f"broadcast to the scores' shape {want} (batch..., L, S)")
    nq = math.prod(qb)
    qidx = np.broadcast_to(np.arange(nq, dtype=np.int64).reshape(qb), full).reshape(-1)
    kidx = np.arange(math.prod(kb), dtype=np.int64).reshape(kb)
    if groups > 1:
        kidx = np.repeat(kidx, groups, axis=-1)
    kidx = np.broadcast_to(kidx, full).reshape(-1)
    return Geometry(full, L, S, E, Ev, groups, qidx, kidx)


def _seed_of(seed, dropout_p) -> int:
    """A 32-bit seed for the dropout hash (drawn once per forward when ``seed`` is None)."""
    if dropout_p == 0:
        return 0
    if seed is None:
        return int(np.random.default_rng().integers(0, 2 ** 32))
    if isinstance(seed, (np.random.Generator, np.random.SeedSequence)):
        g = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return int(g.integers(0, 2 ** 32))
    return int(seed) % (2 ** 32)


def _keep(geo: Geometry, j0, j1, seed, p, like, xp):
    """Dropout scale Z / (1 - p) of keys j0..j1 for every pair and query, shape full + (L, j1 - j0)."""
    from ..._numba.attention import dropout_keep

    P = len(geo.qmap)
    pairs = np.arange(P, dtype=np.int64).reshape(geo.full + (1, 1))
    rows = np.arange(geo.L, dtype=np.int64)[:, None]
    cols = np.arange(j0, j1, dtype=np.int64)[None, :]
    dt = np.float64 if compat.dtype_name(like.dtype) == "float64" else np.float32
    z = dropout_keep(seed, pairs, rows, cols, p).astype(dt) / np.asarray(1.0 - p, dtype=dt)
    return compat.from_numpy_like(z, like)


# ---------------------------------------------------------------------------------------------- generic path
def _expand_kv(a, geo: Geometry, xp):
    if geo.groups == 1:
        return a
    idx = compat.arange(a.shape[-3], like=a, dtype=xp.int64)
    idx = xp.reshape(xp.broadcast_to(idx[:, None], (a.shape[-3], geo.groups)), (-1,))
    return xp.take(a, idx, axis=a.ndim - 3)


def _chunk_scores(qs, kc, madd, geo, j0, j1, causal, xp):
    """scale q k_j^T (+ mask) for keys j0..j1, -inf where masked."""
    s = xp.matmul(qs, xp.matrix_transpose(kc[..., j0:j1, :]))
    if madd is not None:
        s = s + madd[..., j0:j1]
    if causal:
        i = compat.arange(geo.L, like=s, dtype=xp.int64)[:, None]
        j = compat.arange(j1 - j0, like=s, dtype=xp.int64)[None, :] + j0
        s = xp.where(j > i, xp.full_like(s, -math.inf), s)
    return s


def _additive(mask, ct, xp):
    if mask is None:
        return None
    if compat.dtype_name(mask.dtype) == "bool":
        z = xp.zeros(mask.shape, dtype=ct, device=compat.device(mask))
        return xp.where(mask, z, xp.full_like(z, -math.inf))
    return compat.cast(mask, ct, xp)


def _fwd_generic(q, k, v, mask, *, geo, scale, causal, dropout_p, seed, xp):
    ct = compat.compute_dtype(q, xp)
    qs = compat.cast(q, ct, xp) * scale
    kc = _expand_kv(compat.cast(k, ct, xp), geo, xp)
    vc = _expand_kv(compat.cast(v, ct, xp), geo, xp)
    madd = _additive(mask, ct, xp)
    m = l = acc = None
    for j0 in range(0, geo.S, _CHUNK):
        j1 = min(geo.S, j0 + _CHUNK)
        if causal and j0 > geo.L - 1:
            break
        s = _chunk_scores(qs, kc, madd, geo, j0, j1, causal, xp)
        bm = xp.max(s, axis=-1, keepdims=True)
        mn = bm if m is None else xp.maximum(m, bm)
        mn0 = xp.where(mn == -math.inf, xp.zeros_like(mn), mn)
        e = xp.exp(s - mn0)
        ed = e * _keep(geo, j0, j1, seed, dropout_p, e, xp) if dropout_p else e
        pv = xp.matmul(ed, vc[..., j0:j1, :])
        if m is None:
            l, acc = xp.sum(e, axis=-1, keepdims=True), pv
        else:
            alpha = xp.exp(m - mn0)
            l = l * alpha + xp.sum(e, axis=-1, keepdims=True)
            acc = acc * alpha + pv
        m = mn
    dead = m == -math.inf
    l1 = xp.where(dead, xp.ones_like(l), l)
    o = xp.where(dead, xp.zeros_like(acc), acc / l1)
    lse = xp.where(dead, xp.full_like(m, -math.inf), m + xp.log(l1))[..., 0]
    return o, lse


def _bwd_generic(q, k, v, mask, o, lse, do, dlse, *, geo, scale, causal, dropout_p, seed, xp):
    ct = o.dtype
    qs = compat.cast(q, ct, xp) * scale
    kc = _expand_kv(compat.cast(k, ct, xp), geo, xp)
    vc = _expand_kv(compat.cast(v, ct, xp), geo, xp)
    madd = _additive(mask, ct, xp)
    D = xp.sum(do * o, axis=-1, keepdims=True)
    if dlse is not None:
        D = D - dlse[..., None]
    dead = (lse == -math.inf)[..., None]
    lse0 = xp.where(dead, xp.zeros_like(lse[..., None]), lse[..., None])
    dq = None
    dks, dvs = [], []
    for j0 in range(0, geo.S, _CHUNK):
        j1 = min(geo.S, j0 + _CHUNK)
        if causal and j0 > geo.L - 1:
            dks.append(xp.zeros(geo.full + (geo.S - j0, geo.E), dtype=ct, device=compat.device(o)))
            dvs.append(xp.zeros(geo.full + (geo.S - j0, geo.Ev), dtype=ct, device=compat.device(o)))
            break
        s = _chunk_scores(qs, kc, madd, geo, j0, j1, causal, xp)
        pr = xp.where(dead, xp.zeros_like(s), xp.exp(s - lse0))
        dp = xp.matmul(do, xp.matrix_transpose(vc[..., j0:j1, :]))
        if dropout_p:
            z = _keep(geo, j0, j1, seed, dropout_p, pr, xp)
            dvs.append(xp.matmul(xp.matrix_transpose(pr * z), do))
            dp = dp * z
        else:
            dvs.append(xp.matmul(xp.matrix_transpose(pr), do))
        ds = pr * (dp - D)
        g = xp.matmul(ds, kc[..., j0:j1, :])
        dq = g if dq is None else dq + g
        dks.append(xp.matmul(xp.matrix_transpose(ds), qs))
    dk = xp.concat(dks, axis=-2) if len(dks) > 1 else dks[0]
    dv = xp.concat(dvs, axis=-2) if len(dvs) > 1 else dvs[0]
    return _reduce_grads(geo, q, k, v, dq * scale, dk, dv, xp)


def _reduce_grads(geo: Geometry, q, k, v, dq, dk, dv, xp):
    """Per-pair gradients (output batch) back to the shapes of q, k, v (sum over broadcast and GQA groups)."""
    if geo.groups > 1:
        for name in ("dk", "dv"):
            g = dk if name == "dk" else dv
            g = xp.sum(xp.reshape(g, geo.full[:-1] + (geo.full[-1] // geo.groups, geo.groups) + tuple(g.shape[-2:])),
                       axis=len(geo.full))
            if name == "dk":
                dk = g
            else:
                dv = g
    return (unbroadcast(dq, tuple(q.shape), xp), unbroadcast(dk, tuple(k.shape), xp),
            unbroadcast(dv, tuple(v.shape), xp))


_fwd = Dispatcher("norm.sdpa_fwd", serves="norm.scaled_dot_product_attention")
_fwd.generic(_fwd_generic)
_bwd = Dispatcher("norm.sdpa_bwd", serves="norm.scaled_dot_product_attention")
_bwd.generic(_bwd_generic)


def _numba_ok(q, k, v, mask, *rest, **kw):
    return numpy_float(q, k, v) and compat.all_numpy(mask)


@_fwd.numba(when=_numba_ok)
def _fwd_numba(q, k, v, mask, *, geo, scale, causal, dropout_p, seed, xp):
    from ..._numba import attention as nb

    lay = nb.Layout(q, k, v, mask, full=geo.full, qmap=geo.qmap, kvmap=geo.kvmap, scale=scale, causal=causal)
    o, lse = nb.sdpa_fwd(lay, dropout_p=dropout_p, seed=seed)
    return o.reshape(geo.full + (geo.L, geo.Ev)), lse.reshape(geo.full + (geo.L,))


def _pairs_to_heads(g, idx, n):
    """Sum per-pair gradients (P, T, d) into ``n`` heads by the index map ``idx``."""
    if len(idx) == n and np.array_equal(idx, np.arange(n)):
        return g
    out = np.zeros((n,) + g.shape[1:], g.dtype)
    np.add.at(out, idx, g)
    return out


@_bwd.numba(when=_numba_ok)
def _bwd_numba(q, k, v, mask, o, lse, do, dlse, *, geo, scale, causal, dropout_p, seed, xp):
    from ..._numba import attention as nb

    lay = nb.Layout(q, k, v, mask, full=geo.full, qmap=geo.qmap, kvmap=geo.kvmap, scale=scale, causal=causal)
    P = len(geo.qmap)
    do2 = np.ascontiguousarray(do, dtype=o.dtype).reshape(P, geo.L, geo.Ev)
    dl2 = None if dlse is None else np.asarray(dlse, dtype=o.dtype).reshape(P, geo.L)
    dq, dk, dv = nb.sdpa_bwd(lay, o.reshape(P, geo.L, geo.Ev), lse.reshape(P, geo.L), do2, dl2,
                             dropout_p=dropout_p, seed=seed, scale=scale)
    nq = math.prod(q.shape[:-2])
    nk = math.prod(k.shape[:-2])
    return (_pairs_to_heads(dq, geo.qmap, nq).reshape(q.shape), _pairs_to_heads(dk, geo.kvmap, nk).reshape(k.shape),
            _pairs_to_heads(dv, geo.kvmap, nk).reshape(v.shape))


def _cuda_ok(q, k, v, mask, *rest, **kw):
    return all(str(a.dtype) in ("float32", "float64") for a in (q, k, v)) and q.dtype == k.dtype == v.dtype and \
        max(q.shape[-1], v.shape[-1]) <= _CUDA_MAX_DIM


def _dropout_consts(dropout_p, dtype):
    from ..._numba.attention import threshold

    return np.uint32(threshold(dropout_p)), dtype.type(1.0 / (1.0 - dropout_p))


@_fwd.cuda(when=_cuda_ok)
def _fwd_cuda(q, k, v, mask, *, geo, scale, causal, dropout_p, seed, xp):
    import cupy

    from ..._cuda import launch

    P = len(geo.qmap)
    madd, moff, msl, mss = _cuda_mask(mask, geo, q.dtype)
    o = cupy.empty((P, geo.L, geo.Ev), q.dtype)
    lse = cupy.empty((P, geo.L), q.dtype)
    args = (cupy.ascontiguousarray(q), cupy.ascontiguousarray(k), cupy.ascontiguousarray(v),
            cupy.asarray(geo.qmap), cupy.asarray(geo.kvmap), madd, moff, np.int64(msl), np.int64(mss),
            np.int32(mask is not None), o, lse, P, geo.L, geo.S, geo.E, geo.Ev, q.dtype.type(scale), np.int32(causal),
            *_dropout_consts(dropout_p, q.dtype), np.uint32(seed))
    launch.elementwise("norm", "sdpa_fwd_rows", q.dtype, P * geo.L, args, block=128)
    return o.reshape(geo.full + (geo.L, geo.Ev)), lse.reshape(geo.full + (geo.L,))


def _cuda_mask(mask, geo, dtype):
    import cupy

    if mask is None:
        return cupy.zeros(1, dtype), cupy.zeros(len(geo.qmap), np.int64), 0, 0
    add = cupy.where(mask, dtype.type(0), dtype.type(-np.inf)) if mask.dtype == np.bool_ else mask.astype(dtype)
    add = cupy.ascontiguousarray(add)
    idx = np.arange(add.size, dtype=np.int64).reshape(add.shape)
    view = np.broadcast_to(idx, geo.full + (geo.L, geo.S))
    st = [s // 8 for s in view.strides]
    return add.reshape(-1), cupy.asarray(np.ascontiguousarray(view[..., 0, 0]).reshape(-1)), st[-2], st[-1]


@_bwd.cuda(when=_cuda_ok)
def _bwd_cuda(q, k, v, mask, o, lse, do, dlse, *, geo, scale, causal, dropout_p, seed, xp):
    import cupy

    from ..._cuda import launch

    P = len(geo.qmap)
    dt = q.dtype
    madd, moff, msl, mss = _cuda_mask(mask, geo, dt)
    do2 = cupy.ascontiguousarray(do.astype(dt, copy=False)).reshape(P, geo.L, geo.Ev)
    dd = cupy.sum(do2 * o.reshape(P, geo.L, geo.Ev), axis=-1)
    if dlse is not None:
        dd = dd - dlse.reshape(P, geo.L).astype(dt)
    dd = cupy.ascontiguousarray(dd)
    dqp = cupy.empty((P, geo.L, geo.E), dt)
    dkp = cupy.empty((P, geo.S, geo.E), dt)
    dvp = cupy.empty((P, geo.S, geo.Ev), dt)
    common = (cupy.ascontiguousarray(q), cupy.ascontiguousarray(k), cupy.ascontiguousarray(v),
              cupy.asarray(geo.qmap), cupy.asarray(geo.kvmap), madd, moff, np.int64(msl), np.int64(mss),
              np.int32(mask is not None), cupy.ascontiguousarray(lse.reshape(P, geo.L)), dd, do2, P, geo.L, geo.S,
              geo.E, geo.Ev, dt.type(scale), np.int32(causal), *_dropout_consts(dropout_p, dt), np.uint32(seed))
    launch.elementwise("norm", "sdpa_bwd_dq_rows", dt, P * geo.L, common + (dqp,), block=128)
    launch.elementwise("norm", "sdpa_bwd_dkv_rows", dt, P * geo.S, common + (dkp, dvp), block=128)
    nq = math.prod(q.shape[:-2])
    nk = math.prod(k.shape[:-2])

    def heads(g, idx, n):
        if len(idx) == n and np.array_equal(idx, np.arange(n)):
            return g
        out = cupy.zeros((n,) + g.shape[1:], g.dtype)
        cupy.add.at(out, cupy.asarray(idx), g)
        return out

    return (heads(dqp, geo.qmap, nq).reshape(q.shape), heads(dkp, geo.kvmap, nk).reshape(k.shape),
            heads(dvp, geo.kvmap, nk).reshape(v.shape))


# ---------------------------------------------------------------------------------------------- public
def _example(rng, dtype):
    q = rng.standard_normal((2, 2, 5, 3)).astype(dtype)
    k = rng.standard_normal((2, 2, 4, 3)).astype(dtype)
    v = rng.standard_normal((2, 2, 4, 2)).astype(dtype)
    mask = rng.random((5, 4)) < 0.7
    mask[:, 0] = True
    return (q, k, v, mask), {}


class SdpaRes(NamedTuple):
    """Residuals: the inputs, the output and row log-sum-exp (compute dtype, output batch) and the options."""
    q: Any
    k: Any
    v: Any
    mask: Any
    o: Any
    lse: Any
    geo: Geometry
    scale: float
    causal: bool
    dropout_p: float
    seed: int
    return_lse: bool
    dtype: Any


@public(q=Float("... l e"), k=Float(min_ndim=2), v=Float(min_ndim=2), mask=Mask(additive=True), causal=Bool(),
        scale=Scalar(optional=True), dropout_p=UnitInterval(), seed=Seed(), enable_gqa=Bool(), return_lse=Bool(),
        example=_example)
def scaled_dot_product_attention(q: Array, k: Array, v: Array, mask: Array | None = None, *, causal: bool = False,
                                 scale: float | None = None, dropout_p: float = 0.0, seed: SeedT = None,
                                 enable_gqa: bool = False, return_lse: bool = False) -> Array | tuple[Array, Array]:
    r"""Softmax attention :math:`O = \mathrm{softmax}(s\,QK^\top + B)\,V`, computed blockwise (flash attention).

    With scale :math:`s` (default :math:`1/\sqrt{E}`) and bias :math:`B` (the additive mask; a boolean mask
    gives :math:`B_{ij} = 0` where True, :math:`-\infty` where False; ``causal`` adds :math:`-\infty` for
    :math:`j > i`):

    .. math::
        O_i = \sum_j \frac{e^{S_{ij}}}{\sum_{j'} e^{S_{ij'}}} V_j, \qquad S = s\,QK^\top + B, \qquad
        \mathrm{LSE}_i = \log \sum_j e^{S_{ij}}.

    The scores are never formed whole: keys are visited in blocks with the online (max, sum) update
    (Milakov & Gimelshein 2018), so memory is :math:`O((L + S) d)` per head instead of :math:`O(LS)`, and the
    backward recomputes :math:`P = e^{S - \mathrm{LSE}}` block by block from the saved log-sum-exp
    (Dao et al., "FlashAttention", NeurIPS 2022; Dao, "FlashAttention-2", 2023):
    :math:`dV = P^\top dO`, :math:`dS = P \odot (dO\,V^\top - D)`, :math:`D_i = \sum_d dO_{id} O_{id}`,
    :math:`dQ = s\,dS\,K`, :math:`dK = s\,dS^\top Q`.  NumPy float32/float64 inputs run a Numba kernel
    (256 x 512 tiles, GEMMs by BLAS, work items on ``numba.get_num_threads()`` threads), CuPy inputs a CUDA
    kernel, other libraries the same algorithm in Array-API operations over key chunks of 512.

    Semantics are those of ``torch.nn.functional.scaled_dot_product_attention`` (``mask`` is its
    ``attn_mask``, ``causal`` its ``is_causal``), with these differences:

    ===========================  ==========================================  ==========================================
    case                         torch                                        optnorm
    ===========================  ==========================================  ==========================================
    ``mask`` and ``causal``      refused                                      both applied
    fully masked row             0 (math backend), NaN on some backends      0, zero gradient, LSE = -inf
    dropout                      torch's RNG                                  a counter-based hash of ``seed``: the
                                                                              backward regenerates it, nothing stored
    gradient of a float mask     returned                                     none (the mask is a constant)
    log-sum-exp                  not returned                                 ``return_lse=True``
    ===========================  ==========================================  ==========================================

    Parameters
    ----------
    q : array, shape (N, ..., Hq, L, E)
        Queries.
    k : array, shape (N, ..., H, S, E)
        Keys; their batch dimensions broadcast with those of ``q`` (with ``enable_gqa``, H divides Hq).
    v : array, shape (N, ..., H, S, Ev)
        Values, one per key.
    mask : array, optional
        Boolean (True = attend) or floating (added to the scores) mask broadcastable to (N, ..., Hq, L, S).
    causal : bool
        Mask keys after each query (:math:`j > i`, top-left aligned as torch's ``is_causal``; with L != S
        query i sees keys 0..i).
    scale : float, optional
        Score scale :math:`s`; default :math:`1/\sqrt{E}`.
    dropout_p : float in [0, 1)
        Dropout on the attention weights (applied whenever > 0; scaled by :math:`1/(1-p)`).
    seed : int or numpy.random.Generator, optional
        Seed of the dropout mask (a fresh one per call when None).
    enable_gqa : bool
        Grouped-query attention: query head h reads key/value head :math:`\lfloor h H / H_q \rfloor`
        (torch's ``repeat_interleave``).
    return_lse : bool
        Also return the row log-sum-exp :math:`\mathrm{LSE}` (shape (N, ..., Hq, L), float32 for float32
        and narrower inputs), which the backward uses; it is differentiable too.

    Returns
    -------
    array or (array, array)
        The output (N, ..., Hq, L, Ev) in the inputs' dtype, and the log-sum-exp when ``return_lse``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import scaled_dot_product_attention
    >>> r = np.random.default_rng(0)
    >>> q, k, v = (r.standard_normal((2, 4, 16, 8), dtype=np.float32) for _ in range(3))
    >>> scaled_dot_product_attention(q, k, v, causal=True).shape
    (2, 4, 16, 8)
    """
    y, _ = scaled_dot_product_attention_fwd(q, k, v, mask, causal=causal, scale=scale, dropout_p=dropout_p,
                                            seed=seed, enable_gqa=enable_gqa, return_lse=return_lse)
    return y


def scaled_dot_product_attention_fwd(q, k, v, mask=None, *, causal=False, scale=None, dropout_p=0.0, seed=None,
                                     enable_gqa=False, return_lse=False):
    xp = compat.array_namespace(q, k, v, mask)
    geo = _geometry(q, k, v, mask, enable_gqa)
    sc = 1.0 / math.sqrt(geo.E) if scale is None else float(scale)
    sd = _seed_of(seed, dropout_p)
    dt = xp.result_type(q.dtype, k.dtype, v.dtype)
    o, lse = _fwd(q, k, v, mask, geo=geo, scale=sc, causal=bool(causal), dropout_p=float(dropout_p), seed=sd, xp=xp)
    y = compat.cast(o, dt, xp)
    res = SdpaRes(q, k, v, mask, o, lse, geo, sc, bool(causal), float(dropout_p), sd, bool(return_lse), dt)
    return ((y, lse) if return_lse else y), res


def scaled_dot_product_attention_bwd(res: SdpaRes, dy):
    dout, dlse = dy if res.return_lse else (dy, None)
    o = res.o
    xp = compat.array_namespace(o)
    do = compat.cast(dout, o.dtype, xp)
    dl = None if dlse is None else compat.cast(dlse, o.dtype, xp)
    geo = res.geo
    q, k, v = res.q, res.k, res.v
    if res.dtype != q.dtype or q.dtype != k.dtype or k.dtype != v.dtype or q.dtype != o.dtype:
        q, k, v = (compat.cast(a, o.dtype, xp) for a in (q, k, v))
    grads = _bwd(q, k, v, res.mask, o, res.lse, do, dl, geo=geo, scale=res.scale, causal=res.causal,
                 dropout_p=res.dropout_p, seed=res.seed, xp=xp)
    dq, dk, dv = grads
    return (compat.cast(dq, res.q.dtype, xp), compat.cast(dk, res.k.dtype, xp), compat.cast(dv, res.v.dtype, xp),
            None)


vjp(scaled_dot_product_attention, scaled_dot_product_attention_fwd, scaled_dot_product_attention_bwd,
    nondiff_argnums=(3,), validate=True)
