"""Weight reparameterisations applied in the forward pass (``W -> W_eff``), each a registered op with its VJP.

``weight_conditioning``: diagonal equilibration of a weight matrix (Saratchandran,
Wang, Lucey, ECCV 2024).

Weight Compander (Cakaj, Mehnert, Yang, IJCNN 2023, arXiv:2306.16993) is not
implemented: the exact form of its elementwise function could not be read from
the paper for this release, and optnorm does not ship a guessed formula.
"""
from __future__ import annotations

from .._lib import compat, ops, validate
from .base import cast

__all__ = ["weight_conditioning"]

_MODES = ("row", "column")


def _check(weight, mode, axis, eps):
    validate.check_float(weight, "weight")
    validate.check_matrix(weight, "weight")
    validate.check_nonempty(weight, "weight")
    validate.check_in(mode, _MODES, "mode")
    axis = validate.check_axis(axis, weight.ndim, "axis")
    eps = validate.check_positive(eps, "eps")
    xp = compat.array_namespace(weight)
    others = tuple(a for a in range(weight.ndim) if a != axis)
    red = others if mode == "row" else (axis,)
    return xp, red, eps


def _forward(weight, xp, red, eps):
    wc = cast(weight, compat.compute_dtype(weight, xp), xp)
    n = xp.linalg.vector_norm(wc, axis=red, keepdims=True)
    d = xp.maximum(n, xp.full_like(n, eps))
    y = wc / d
    return y, n, d


def weight_conditioning(weight, *, mode: str = "row", axis: int = 0, eps: float = 1e-12):
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
    xp, red, eps = _check(weight, mode, axis, eps)
    y, _, _ = _forward(weight, xp, red, eps)
    return cast(y, weight.dtype, xp)


def _weight_conditioning_fwd(weight, *, mode="row", axis=0, eps=1e-12):
    xp, red, eps = _check(weight, mode, axis, eps)
    y, n, d = _forward(weight, xp, red, eps)
    return cast(y, weight.dtype, xp), (y, n, d, red, eps)


def _weight_conditioning_bwd(res, dy):
    y, n, d, red, eps = res
    xp = compat.array_namespace(y)
    g = cast(dy, y.dtype, xp)
    s = xp.sum(g * y, axis=red, keepdims=True)
    s = xp.where(n > eps, s, xp.zeros_like(s))
    dw = (g - s * y) / d
    return (cast(dw, dy.dtype, xp),)


ops.register("optim.weight_conditioning", weight_conditioning, _weight_conditioning_fwd, _weight_conditioning_bwd)
