"""Helpers shared by the attention modules: query/key/value preparation and gradients, causal masks, the
linear-attention core (non-causal and chunked causal) and its feature maps, and the roles of q, k, v."""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..._lib import compat
from ..._lib.roles import Float
from ..._lib.vjp import unbroadcast

# queries (..., n, d), keys (..., m, d), values (..., m, e): the roles check the named dims and batch broadcast
QKV = dict(q=Float("... n d"), k=Float("... m d"), v=Float("... m e"))


def qkv_example(rng, dtype, n=5, m=4, d=3, e=2, batch=(2,), **kw):
    return tuple(rng.standard_normal(batch + s).astype(dtype) for s in ((n, d), (m, d), (m, e))), kw


class QKVMeta(NamedTuple):
    shapes: tuple
    dtypes: tuple
    dtype: Any          # result dtype


def check_causal(q, k, causal):
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(f"causal=True needs as many queries as keys (q and k of the same length), got q with "
                         f"{q.shape[-2]} and k with {k.shape[-2]} tokens")


def prepare_qkv(q, k, v, xp):
    """q, k, v in the compute dtype with their batch dims broadcast, and what the VJP needs to undo that."""
    dt = xp.result_type(q.dtype, k.dtype, v.dtype)
    cdt = xp.float64 if dt == xp.float64 else xp.float32
    batch = np.broadcast_shapes(tuple(q.shape[:-2]), tuple(k.shape[:-2]), tuple(v.shape[:-2]))
    out = [xp.broadcast_to(compat.cast(a, cdt, xp), batch + tuple(a.shape[-2:])) for a in (q, k, v)]
    meta = QKVMeta((tuple(q.shape), tuple(k.shape), tuple(v.shape)), (q.dtype, k.dtype, v.dtype), dt)
    return out[0], out[1], out[2], meta


def finish_grads(meta: QKVMeta, grads, xp):
    return tuple(compat.cast(unbroadcast(g, s, xp), d, xp) for g, s, d in zip(grads, meta.shapes, meta.dtypes))


def mT(a, xp):
    return xp.matrix_transpose(a)


def tril(n, m, dtype, like, xp):
    """Lower-triangular (n, m) 0/1 mask (j <= i) on ``like``'s device."""
    i = compat.arange(n, like=like)[:, None]
    j = compat.arange(m, like=like)[None, :]
    return compat.cast(i >= j, dtype, xp)


# ---------------------------------------------------------------------------------------------- linear attention core
def la_core_fwd(a, b, v, *, causal, eps, chunk, xp):
    """O_i = sum_j (a_i . b_j) v_j / (sum_j a_i . b_j + eps), j over all keys or j <= i (chunked)."""
    if not causal:
        S = xp.matmul(mT(b, xp), v)
        z = xp.sum(b, axis=-2)
        num = xp.matmul(a, S)
        den = xp.sum(a * z[..., None, :], axis=-1) + eps
        return num / den[..., None], den
    n = a.shape[-2]
    batch = tuple(a.shape[:-2])
    d, dv = a.shape[-1], v.shape[-1]
    S = compat.zeros(batch + (d, dv), like=a)
    z = compat.zeros(batch + (d,), like=a)
    outs, dens = [], []
    for s0 in range(0, n, chunk):
        s1 = min(n, s0 + chunk)
        ac, bc, vc = a[..., s0:s1, :], b[..., s0:s1, :], v[..., s0:s1, :]
        A = xp.matmul(ac, mT(bc, xp)) * tril(s1 - s0, s1 - s0, a.dtype, a, xp)
        num = xp.matmul(A, vc) + xp.matmul(ac, S)
        den = xp.sum(A, axis=-1) + xp.sum(ac * z[..., None, :], axis=-1) + eps
        outs.append(num / den[..., None])
        dens.append(den)
        S = S + xp.matmul(mT(bc, xp), vc)
        z = z + xp.sum(bc, axis=-2)
    return xp.concat(outs, axis=-2), xp.concat(dens, axis=-1)


def la_core_bwd(a, b, v, o, den, g, *, causal, chunk, xp):
    dnum = g / den[..., None]
    dden = -xp.sum(g * o, axis=-1) / den
    if not causal:
        S = xp.matmul(mT(b, xp), v)
        z = xp.sum(b, axis=-2)
        da = xp.matmul(dnum, mT(S, xp)) + dden[..., None] * z[..., None, :]
        R = xp.matmul(mT(a, xp), dnum)
        r = xp.sum(a * dden[..., None], axis=-2)
        db = xp.matmul(v, mT(R, xp)) + r[..., None, :]
        dv = xp.matmul(b, R)
        return da, db, dv
    n = a.shape[-2]
    batch = tuple(a.shape[:-2])
    d, dvn = a.shape[-1], v.shape[-1]
    bounds = [(s0, min(n, s0 + chunk)) for s0 in range(0, n, chunk)]
    S = compat.zeros(batch + (d, dvn), like=a)
    z = compat.zeros(batch + (d,), like=a)
    das = []
    for s0, s1 in bounds:
        bc, vc = b[..., s0:s1, :], v[..., s0:s1, :]
        dn, dd = dnum[..., s0:s1, :], dden[..., s0:s1]
        W = (xp.matmul(dn, mT(vc, xp)) + dd[..., None]) * tril(s1 - s0, s1 - s0, a.dtype, a, xp)
        das.append(xp.matmul(W, bc) + xp.matmul(dn, mT(S, xp)) + dd[..., None] * z[..., None, :])
        S = S + xp.matmul(mT(bc, xp), vc)
        z = z + xp.sum(bc, axis=-2)
    R = compat.zeros(batch + (d, dvn), like=a)
    r = compat.zeros(batch + (d,), like=a)
    dbs, dvs = [], []
    for s0, s1 in reversed(bounds):
        ac, bc, vc = a[..., s0:s1, :], b[..., s0:s1, :], v[..., s0:s1, :]
        dn, dd = dnum[..., s0:s1, :], dden[..., s0:s1]
        tri = tril(s1 - s0, s1 - s0, a.dtype, a, xp)
        W = (xp.matmul(dn, mT(vc, xp)) + dd[..., None]) * tri
        A = xp.matmul(ac, mT(bc, xp)) * tri
        dbs.append(xp.matmul(mT(W, xp), ac) + xp.matmul(vc, mT(R, xp)) + r[..., None, :])
        dvs.append(xp.matmul(mT(A, xp), dn) + xp.matmul(bc, R))
        R = R + xp.matmul(mT(ac, xp), dn)
        r = r + xp.sum(ac * dd[..., None], axis=-2)
    return xp.concat(das, axis=-2), xp.concat(dbs[::-1], axis=-2), xp.concat(dvs[::-1], axis=-2)


def feat(x, kind, xp):
    """Feature map of linear attention: elu(x) + 1 or relu(x)."""
    if kind == "elu1":
        return xp.where(x > 0, x + 1.0, xp.exp(xp.minimum(x, 0.0)))
    return xp.where(x > 0, x, xp.zeros_like(x))


def feat_grad(x, kind, xp):
    if kind == "elu1":
        return xp.where(x > 0, xp.ones_like(x), xp.exp(xp.minimum(x, 0.0)))
    return compat.cast(x > 0, x.dtype, xp)


def cumsum(x, axis, xp):
    return xp.cumulative_sum(x, axis=axis)


def revcumsum(x, axis, xp):
    return xp.flip(xp.cumulative_sum(xp.flip(x, axis=axis), axis=axis), axis=axis)
