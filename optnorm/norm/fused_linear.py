"""Fused linear layer + cross-entropy: the loss of ``x @ weight.T + bias`` without the (N, V) logits."""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._lib import compat
from .._lib.api import public, vjp
from .._lib.dispatch import Dispatcher, numpy_float
from .._lib.roles import Choice, Float, Int, Labels, NonNegative, Probability
from .._lib.typing import Array
from ._common import REDUCTIONS


def _generic_chunks(x2, w, b, t, g, *, eps, zc, ignore_index, rows, grad, need_sum, xp):
    """Row chunks of logits: (lse, zt, zsum, dx, dw, db) of the rows (gradients weighted per row by ``g``)."""
    N, V = x2.shape[0], w.shape[0]
    classes = compat.arange(V, like=x2, dtype=xp.int64)
    wt = xp.matrix_transpose(w)
    lses, zts, zsums, dxs = [], [], [], []
    dw = db = None
    for r0 in range(0, N, rows):
        r1 = min(N, r0 + rows)
        xc = x2[r0:r1, :]
        z = xp.matmul(xc, wt)
        if b is not None:
            z = z + b
        m = xp.max(z, axis=-1, keepdims=True)
        lse = m + xp.log(xp.sum(xp.exp(z - m), axis=-1, keepdims=True))
        tc = t[r0:r1]
        onehot = xp.astype(xp.where(tc == ignore_index, xp.zeros_like(tc), tc), xp.int64)[:, None] == classes
        lses.append(lse[:, 0])
        zts.append(xp.sum(xp.where(onehot, z, xp.zeros_like(z)), axis=-1))
        if need_sum:
            zsums.append(xp.sum(z, axis=-1))
        if grad:
            gr = g[r0:r1][:, None]
            dz = gr * ((1.0 + 2.0 * zc * lse) * xp.exp(z - lse) - eps / V) - \
                gr * (1.0 - eps) * xp.astype(onehot, z.dtype)
            dxs.append(xp.matmul(dz, w))
            gw = xp.matmul(xp.matrix_transpose(dz), xc)
            dw = gw if dw is None else dw + gw
            if b is not None:
                gb = xp.sum(dz, axis=0)
                db = gb if db is None else db + gb
    cat = (lambda a: xp.concat(a, axis=0) if len(a) > 1 else a[0])
    return (cat(lses), cat(zts), cat(zsums) if need_sum else None, cat(dxs) if grad else None, dw, db)


_chunks = Dispatcher("norm.linear_cross_entropy", serves="norm.linear_cross_entropy")
_chunks.generic(_generic_chunks)


@_chunks.numba(when=lambda x2, w, b, t, g, **kw: numpy_float(x2, w, b) and compat.all_numpy(t))
def _numba_chunks(x2, w, b, t, g, *, eps, zc, ignore_index, rows, grad, need_sum, xp):
    from .._numba import norm_losses as nb

    t0 = np.where(t == ignore_index, -1, t).astype(np.int64)
    gg = np.ascontiguousarray(g, dtype=x2.dtype) if g is not None else np.zeros(x2.shape[0], x2.dtype)
    return nb.linear_cross_entropy_chunks(np.ascontiguousarray(x2), np.ascontiguousarray(w),
                                          None if b is None else np.ascontiguousarray(b), t0, gg, eps=eps, zc=zc,
                                          rows=rows, grad=grad, need_sum=need_sum)


class LinearCrossEntropyRes(NamedTuple):
    """Residuals: the gradients computed during the forward ("mean"/"sum"), or what the backward of "none"
    recomputes them from."""
    dx: Any
    dw: Any
    db: Any
    x: Any
    weight: Any
    bias: Any
    target: Any
    valid: Any
    opts: dict


def _example(rng, dtype):
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    w = rng.standard_normal((6, 4)).astype(dtype)
    t = rng.integers(0, 6, size=(2, 3))
    return (x, w, t, (0.1 * rng.standard_normal(6)).astype(dtype)), {}


def _rows(n, h, v, chunk_size):
    from .._numba.norm_losses import default_rows

    return int(chunk_size) if chunk_size is not None else default_rows(n, h, v)


def _prepare(x, weight, target, bias, ignore_index, xp):
    if tuple(target.shape) != tuple(x.shape[:-1]):
        raise ValueError(f"linear_cross_entropy: target has shape {tuple(target.shape)}, expected "
                         f"{tuple(x.shape[:-1])} (one class index per row of x)")
    ct = compat.compute_dtype(x, xp)
    h = x.shape[-1]
    x2 = xp.reshape(compat.cast(x, ct, xp), (-1, h))
    t = xp.reshape(target, (-1,))
    valid = t != ignore_index
    return ct, x2, compat.cast(weight, ct, xp), compat.cast(bias, ct, xp), t, valid


def _loss(lse, zt, zsum, valid, *, eps, zc, reduction, v, shape, dtype, xp):
    per = (1.0 - eps) * (lse - zt)
    if eps:
        per = per + eps * (lse - zsum / v)
    if zc:
        per = per + zc * lse * lse
    per = xp.where(valid, per, xp.zeros_like(per))
    if reduction == "none":
        return compat.cast(xp.reshape(per, shape), dtype, xp)
    tot = xp.sum(per)
    if reduction == "mean":
        tot = tot / xp.sum(xp.astype(valid, per.dtype))
    return compat.cast(tot, dtype, xp)


@public(x=Float("... h"), weight=Float("v h"), target=Labels(classes="v", ignore="ignore_index"),
        bias=Float("v", optional=True), ignore_index=Int(), label_smoothing=Probability(), z_loss=NonNegative(),
        reduction=Choice(REDUCTIONS), chunk_size=Int(1, None, optional=True), example=_example)
def linear_cross_entropy(x: Array, weight: Array, target: Array, bias: Array | None = None, *,
                         ignore_index: int = -100, label_smoothing: float = 0.0, z_loss: float = 0.0,
                         reduction: str = "mean", chunk_size: int | None = None) -> Array:
    r"""Cross-entropy of the logits ``x @ weight.T + bias`` without forming them: chunks of rows, fused gradients.

    With logits :math:`z_n = W x_n + b` (V classes), :math:`\mathrm{LSE}_n = \log\sum_j e^{z_{nj}}`, smoothing
    :math:`\varepsilon` and z-loss coefficient :math:`c`, each row not equal to ``ignore_index`` contributes

    .. math::
        \ell_n = (1-\varepsilon)(\mathrm{LSE}_n - z_{n,t_n}) + \varepsilon\Big(\mathrm{LSE}_n - \frac1V\sum_j z_{nj}\Big)
                 + c\,\mathrm{LSE}_n^2,

    and ``reduction="mean"`` divides the sum by the number of rows not ignored.  This equals
    ``F.cross_entropy(x @ weight.T + bias, target, ignore_index=..., label_smoothing=...)`` plus the PaLM
    z-loss (Chowdhery et al. 2022) as :func:`cross_entropy` defines it, but the (N, V) logits never exist:
    rows are processed in chunks of ``chunk_size`` (default: a power of two near :math:`N / \lceil V/H \rceil`,
    Liger-Kernel's rule, so a chunk of logits is about the size of ``x``), and when a gradient is needed the
    forward pass computes it chunk by chunk (Hsu et al., "Liger Kernel: Efficient Triton Kernels for LLM
    Training", 2024):

    .. math::
        \frac{\partial \ell_n}{\partial z_n} = (1 + 2c\,\mathrm{LSE}_n)\,\mathrm{softmax}(z_n)
            - \frac{\varepsilon}{V} - (1-\varepsilon)\,e_{t_n}, \quad
        dx_n = W^\top \partial_{z_n}\ell, \quad dW \mathrel{+}= \partial_z\ell^\top x, \quad db \mathrel{+}= \textstyle\sum_n \partial_{z_n}\ell.

    Peak extra memory is one chunk of logits plus the gradients of ``x``, ``weight`` and ``bias`` (accumulated
    in place), instead of the logits, their softmax and its gradient.  The backward only scales the stored
    gradients by the incoming scalar; ``reduction="none"`` (whose per-row cotangents are not known in the
    forward) recomputes the chunks in the backward instead.  NumPy float32/float64 inputs run the GEMMs in
    BLAS (the weight gradient accumulated by a ``beta = 1`` GEMM, no temporary) and the row work in a Numba
    kernel; other libraries run the same chunks in Array-API operations.

    Parameters
    ----------
    x : array, shape (..., H)
        Hidden states (rows).
    weight : array, shape (V, H)
        Output projection (the classifier / LM head), torch's ``nn.Linear`` layout.
    target : int array, shape (...)
        Class index per row, in [0, V) or ``ignore_index``.
    bias : array, shape (V,), optional
        Output bias.
    ignore_index : int
        Target value whose rows contribute nothing (no loss, no gradient, not counted by "mean").
    label_smoothing : float in [0, 1]
        :math:`\varepsilon`, as torch's ``label_smoothing``.
    z_loss : float >= 0
        :math:`c`, the coefficient of :math:`\mathrm{LSE}^2` (PaLM uses 1e-4).
    reduction : {"mean", "sum", "none"}
        Combination of the row losses ("none": shape of ``target``, 0 for ignored rows).
    chunk_size : int, optional
        Rows per chunk.

    Returns
    -------
    array
        The loss in ``x``'s dtype: a scalar, or one per row for ``reduction="none"``.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.norm import linear_cross_entropy, cross_entropy
    >>> r = np.random.default_rng(0)
    >>> x, w, t = r.standard_normal((8, 4)), r.standard_normal((10, 4)), r.integers(0, 10, 8)
    >>> bool(np.isclose(linear_cross_entropy(x, w, t, chunk_size=3), cross_entropy(x @ w.T, t)))
    True
    """
    xp = compat.array_namespace(x, weight, target, bias)
    ct, x2, w, b, t, valid = _prepare(x, weight, target, bias, ignore_index, xp)
    eps, zc = float(label_smoothing), float(z_loss)
    lse, zt, zsum, *_ = _chunks(x2, w, b, t, None, eps=eps, zc=zc, ignore_index=ignore_index,
                                rows=_rows(x2.shape[0], x2.shape[1], w.shape[0], chunk_size), grad=False,
                                need_sum=bool(eps), xp=xp)
    return _loss(lse, zt, zsum, valid, eps=eps, zc=zc, reduction=reduction, v=w.shape[0],
                 shape=tuple(target.shape), dtype=x.dtype, xp=xp)


def linear_cross_entropy_fwd(x, weight, target, bias=None, *, ignore_index=-100, label_smoothing=0.0, z_loss=0.0,
                             reduction="mean", chunk_size=None):
    xp = compat.array_namespace(x, weight, target, bias)
    ct, x2, w, b, t, valid = _prepare(x, weight, target, bias, ignore_index, xp)
    eps, zc = float(label_smoothing), float(z_loss)
    rows = _rows(x2.shape[0], x2.shape[1], w.shape[0], chunk_size)
    opts = dict(eps=eps, zc=zc, ignore_index=ignore_index, rows=rows, reduction=reduction)
    fused = reduction != "none"
    g = None
    if fused:
        vf = xp.astype(valid, ct)
        if reduction == "mean":
            nv = xp.sum(vf)
            g = vf / xp.where(nv > 0, nv, xp.ones_like(nv))
        else:
            g = vf
    lse, zt, zsum, dx, dw, db = _chunks(x2, w, b, t, g, eps=eps, zc=zc, ignore_index=ignore_index, rows=rows,
                                        grad=fused, need_sum=bool(eps), xp=xp)
    loss = _loss(lse, zt, zsum, valid, eps=eps, zc=zc, reduction=reduction, v=w.shape[0],
                 shape=tuple(target.shape), dtype=x.dtype, xp=xp)
    keep = (None, None, None, None) if fused else (x, weight, bias, target)
    return loss, LinearCrossEntropyRes(dx, dw, db, *keep, valid, opts | {"shape": tuple(x.shape),
                                                                          "dtypes": (x.dtype, weight.dtype,
                                                                                     None if bias is None
                                                                                     else bias.dtype)})


def linear_cross_entropy_bwd(res: LinearCrossEntropyRes, dy):
    o = res.opts
    dtypes = o["dtypes"]
    if res.dx is not None or o["reduction"] != "none":
        xp = compat.array_namespace(res.dx)
        s = compat.cast(dy, res.dx.dtype, xp)
        scaled = compat.is_concrete(dy) and float(compat.to_numpy(dy)) == 1.0
        dx, dw, db = (res.dx, res.dw, res.db) if scaled else \
            (res.dx * s, res.dw * s, None if res.db is None else res.db * s)
    else:
        xp = compat.array_namespace(res.x)
        ct, x2, w, b, t, valid = _prepare(res.x, res.weight, res.target, res.bias, o["ignore_index"], xp)
        g = xp.where(valid, xp.reshape(compat.cast(dy, ct, xp), (-1,)), xp.zeros(valid.shape, dtype=ct,
                                                                                   device=compat.device(x2)))
        _, _, _, dx, dw, db = _chunks(x2, w, b, t, g, eps=o["eps"], zc=o["zc"], ignore_index=o["ignore_index"],
                                      rows=o["rows"], grad=True, need_sum=False, xp=xp)
    dx = compat.cast(xp.reshape(dx, o["shape"]), dtypes[0], xp)
    return dx, compat.cast(dw, dtypes[1], xp), None, (None if db is None else compat.cast(db, dtypes[2], xp))


vjp(linear_cross_entropy, linear_cross_entropy_fwd, linear_cross_entropy_bwd, nondiff_argnums=(2,), validate=True)
