"""Weight reparameterisations applied in the forward pass (``W -> W_eff``), each a registered op with its VJP.

``weight_conditioning``: diagonal equilibration of a weight matrix (Saratchandran,
Wang, Lucey, ECCV 2024).

Weight Compander (Cakaj, Mehnert, Yang, IJCNN 2023, arXiv:2306.16993) is not
implemented: the exact form of its elementwise function could not be read from
the paper for this release, and optnorm does not ship a guessed formula.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .._lib.typing import Array
from .._lib import compat
from .._lib.api import public, vjp
from .._lib.roles import Axis, Choice, Float, Positive
from ._common import stable_norm

_MODES = ("row", "column")


class WeightConditioningResiduals(NamedTuple):
    y: Any              # the conditioned weight in the compute dtype
    n: Any              # the unit norms (keepdims)
    d: Any              # the floored norms the weight was divided by
    red: tuple          # the reduced axes
    eps: float


def _reduced(weight, mode, axis):
    others = tuple(a for a in range(weight.ndim) if a != axis)
    return others if mode == "row" else (axis,)


def _forward(weight, xp, red, eps):
    wc = compat.cast(weight, compat.compute_dtype(weight, xp), xp)
    n = stable_norm(wc, xp, axis=red, keepdims=True)       # no overflow for entries near the dtype's range
    d = xp.maximum(n, xp.full_like(n, eps))
    return wc / d, n, d


@public(weight=Float(min_ndim=2), mode=Choice(_MODES), axis=Axis("weight"), eps=Positive())
def weight_conditioning(weight: Array, *, mode: str = "row", axis: int = 0, eps: float = 1e-12) -> Array:
    r"""Weight conditioning by diagonal equilibration: ``W_eff = D W`` with ``D = diag(1 / |W_i|_2)``.

    "Weight Conditioning for Smooth Optimization of Neural Networks",
    H. Saratchandran, T. X. Wang, S. Lucey, ECCV 2024 (arXiv:2409.03424).
    The weight matrix is multiplied by a diagonal preconditioner that scales every
    row to unit Euclidean norm (row equilibration).  By van der Sluis' theorem
    (1969) this is within a factor ``sqrt(m)`` of the best diagonal scaling for the
    condition number, so it narrows the gap between the smallest and largest
    singular values of ``W``.  Applied in the forward pass (like weight
    normalisation); ``W`` stays the trained parameter.

    .. math::

        (W_\text{eff})_{i\cdot} = \frac{W_{i\cdot}}{\max(\lVert W_{i\cdot}\rVert_2, \varepsilon)}
        \quad(\texttt{mode="row"}),\qquad
        (W_\text{eff})_{\cdot j} = \frac{W_{\cdot j}}{\max(\lVert W_{\cdot j}\rVert_2, \varepsilon)}
        \quad(\texttt{mode="column"}: W D).

    An N-D weight is read as a matrix whose rows are indexed by ``axis`` (the output
    units: ``axis=0`` for torch ``(out, in, *kernel)``, ``axis=-1`` for flax
    ``(*kernel, in, out)``) and whose columns are all other axes flattened.

    Parameters
    ----------
    weight : array, ndim >= 2, floating
        The weight ``W``.
    mode : {"row", "column"}
        ``"row"`` (the equilibration described for the method): every row (output
        unit) gets unit norm; ``"column"``: every column of the matricised weight
        gets unit norm (right diagonal scaling ``W D``).
    axis : int
        The row (output-unit) axis.
    eps : float > 0
        Floor on the norms; a row with norm below ``eps`` is divided by ``eps``.

    Returns
    -------
    array, same shape and dtype as ``weight``
        The conditioned weight.  float16/bfloat16 are computed in float32.

    Notes
    -----
    VJP: with ``y = W / n`` (``n`` the unit's norm), ``dW = (dy - y <y, dy>) / n``;
    for units whose norm is floored, ``dW = dy / eps``.  Registered as
    ``"optim.weight_conditioning"``: differentiable through
    ``optnorm.torch.weight_conditioning`` and ``optnorm.jax.weight_conditioning``.
    The operator was identified from secondary descriptions of the paper (row
    equilibration with van der Sluis' theorem), not from the paper's own text.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.array([[3.0, 4.0], [0.0, 2.0]])
    >>> weight_conditioning(W).tolist()
    [[0.6, 0.8], [0.0, 1.0]]
    >>> weight_conditioning(W, mode="column").tolist()
    [[1.0, 0.8944271909999159], [0.0, 0.4472135954999579]]
    """
    xp = compat.array_namespace(weight)
    y, _, _ = _forward(weight, xp, _reduced(weight, mode, axis), eps)
    return compat.cast(y, weight.dtype, xp)


def _weight_conditioning_fwd(weight, *, mode="row", axis=0, eps=1e-12):
    out = weight_conditioning(weight, mode=mode, axis=axis, eps=eps)        # validates the call
    xp = compat.array_namespace(weight)
    red = _reduced(weight, mode, axis % weight.ndim)
    y, n, d = _forward(weight, xp, red, eps)
    return out, WeightConditioningResiduals(y, n, d, red, eps)


def _weight_conditioning_bwd(res, dy):
    xp = compat.array_namespace(res.y)
    g = compat.cast(dy, res.y.dtype, xp)
    s = xp.sum(g * res.y, axis=res.red, keepdims=True)
    s = xp.where(res.n > res.eps, s, xp.zeros_like(s))
    dw = (g - s * res.y) / res.d
    return (compat.cast(dw, dy.dtype, xp),)


vjp(weight_conditioning, _weight_conditioning_fwd, _weight_conditioning_bwd)
