"""Sigmoid attention: element-wise sigmoid scores instead of a row softmax."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..._lib import compat
from ..._lib.api import public, vjp
from ..._lib.roles import Bool, Mask, Positive, Scalar
from ..._lib.typing import Array
from .._common import sigmoid
from ._common import QKV, QKVMeta, finish_grads, mT, prepare_qkv, qkv_example, tril


class SigmoidAttentionRes(NamedTuple):
    qc: Any
    kc: Any
    vc: Any
    p: Any
    scale: float
    meta: QKVMeta


def _example(rng, dtype):
    (q, k, v), _ = qkv_example(rng, dtype)
    return (q, k, v, rng.random((2, 5, 4)) < 0.7), {}


@public(**QKV, mask=Mask(min_ndim=2), bias=Scalar(optional=True), scale=Positive(optional=True), causal=Bool(),
        example=_example)
def sigmoid_attention(q: Array, k: Array, v: Array, mask: Array | None = None, *, bias: float | None = None,
                      scale: float | None = None, causal: bool = False) -> Array:
    r"""Sigmoid attention: ``O = sigmoid(scale q k^T + bias) v`` with no row normalisation.

    .. math::

        O = \sigma\bigl(s\, Q K^\top + b\bigr)\, V, \qquad \sigma(t) = \frac{1}{1 + e^{-t}},

    with masked entries of :math:`\sigma(\cdot)` set to 0.

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
    return sigmoid_attention_fwd(q, k, v, mask, bias=bias, scale=scale, causal=causal)[0]


def sigmoid_attention_fwd(q, k, v, mask=None, *, bias=None, scale=None, causal=False):
    xp = compat.array_namespace(q, k, v, mask)
    qc, kc, vc, meta = prepare_qkv(q, k, v, xp)
    n, m, d = qc.shape[-2], kc.shape[-2], qc.shape[-1]
    if mask is not None:
        try:
            np.broadcast_shapes(tuple(mask.shape), tuple(qc.shape[:-1]) + (m,))
        except ValueError:
            raise ValueError(f"mask has shape {tuple(mask.shape)}, which does not broadcast to the scores' shape "
                             f"{tuple(qc.shape[:-1]) + (m,)}") from None
    b = -math.log(m) if bias is None else float(bias)
    sc = 1.0 / math.sqrt(d) if scale is None else float(scale)
    p = sigmoid(xp.matmul(qc, mT(kc, xp)) * sc + b, xp)
    keep = None if mask is None else compat.cast(mask, p.dtype, xp)
    if causal:
        tri = tril(n, m, p.dtype, p, xp)
        keep = tri if keep is None else keep * tri
    if keep is not None:
        p = p * keep
    o = xp.matmul(p, vc)
    return compat.cast(o, meta.dtype, xp), SigmoidAttentionRes(qc, kc, vc, p, sc, meta)


def sigmoid_attention_bwd(res: SigmoidAttentionRes, dy):
    qc, kc, vc, p, sc = res.qc, res.kc, res.vc, res.p, res.scale
    xp = compat.array_namespace(p)
    g = compat.cast(dy, p.dtype, xp)
    dv = xp.matmul(mT(p, xp), g)
    dp = xp.matmul(g, mT(vc, xp))
    ds = dp * p * (1.0 - p)          # masked entries have p = 0, so ds = 0 there
    dq = xp.matmul(ds, kc) * sc
    dk = xp.matmul(mT(ds, xp), qc) * sc
    return finish_grads(res.meta, (dq, dk, dv), xp) + (None,)


vjp(sigmoid_attention, sigmoid_attention_fwd, sigmoid_attention_bwd, nondiff_argnums=(3,), validate=True)
