"""TrAct: the first-layer weight update that makes pre-activations, not weights, trainable."""
from __future__ import annotations

from .._lib.typing import Array
from .._lib import compat
from .._lib.api import public
from .._lib.roles import Choice, Float, Positive



@public(grad_out=Float("... b m"), inputs=Float("... b n"), lam=Positive(), method=Choice(("auto", "primal", "dual")))
def tract_precondition(grad_out: Array, inputs: Array, *, lam: float = 0.1, method: str = "auto") -> Array:
    r"""TrAct weight update ΔW for a first layer y = a Wᵀ (+ b), from the output gradient.

    With a = ``inputs`` (b × n, leading axes flattened) and g = ``grad_out`` = ∂L/∂y (b × m):

    ::

        primal (n ≤ b):  ΔW = gᵀ a (aᵀa/b + λ I_n)⁻¹
        dual   (b < n):  ΔW = gᵀ (a aᵀ/b + λ I_b)⁻¹ a

    (equal by the push-through identity; the official code writes the dual as
    gᵀ (I − (1/λ) A (A/λ + I)⁻¹) a / λ with A = a aᵀ/b).  It is the closed-form minimiser of
    a proximal step on the pre-activations: the update moves y = a Wᵀ as a gradient step on y
    would, regularised by λ, so the first layer learns at a speed independent of the input
    scale (pixel values).  Use ΔW in place of the weight gradient with any optimizer; the
    bias gradient is unchanged.  Both forms solve one SPD system (n × n or b × b).  For a
    convolution pass unfolded patches (im2col) as ``inputs``.

    Petersen, Sutter, Borgelt, Huh, Kuehne, Sun, Deussen, "TrAct: Making First-layer
    Pre-Activations Trainable" (NeurIPS 2024); official code ``torch_tract``.

    Parameters
    ----------
    grad_out : array (..., m)
    inputs : array (..., n)
        Same leading shape as ``grad_out``.
    lam : float > 0
        λ (0.1 in the paper).
    method : {"auto", "primal", "dual"}
        ``"auto"`` picks primal when n <= b (as the official code: dual when b < n).

    Returns
    -------
    array (m, n) in the inputs' dtype: the update for W (same layout as torch's Linear.weight).

    .. math::
        \Delta W = g^\top a\,\bigl(a^\top a/b + \lambda I\bigr)^{-1} = g^\top\bigl(aa^\top/b + \lambda I\bigr)^{-1}a


    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a, g = rng.standard_normal((30, 8)), rng.standard_normal((30, 5))
    >>> np.allclose(tract_precondition(g, a, method="primal"), tract_precondition(g, a, method="dual"))
    True
    """
    xp = compat.array_namespace(grad_out, inputs)
    if tuple(inputs.shape[:-1]) != tuple(grad_out.shape[:-1]):
        raise ValueError(f"tract_precondition: grad_out has leading shape {tuple(grad_out.shape[:-1])}, expected "
                         f"{tuple(inputs.shape[:-1])} like inputs")
    n, m = inputs.shape[-1], grad_out.shape[-1]
    dt = compat.compute_dtype(inputs, xp)
    a = xp.reshape(compat.cast(inputs, dt, xp), (-1, n))
    g = xp.reshape(compat.cast(grad_out, dt, xp), (-1, m))
    b = a.shape[0]
    if method == "auto":
        method = "dual" if b < n else "primal"
    # a^T a / b overflows for entries near the dtype's range: with s = max(1, max|a|), solve with a / s and
    # lam / s^2 (the same system divided by s^2) and divide the result by s
    s = xp.max(xp.abs(a))
    s = xp.where(s > 1, s, xp.ones_like(s))
    a = a / s
    lam_s = lam / s / s
    if method == "primal":
        G = xp.matmul(xp.matrix_transpose(a), a) / b + lam_s * compat.eye(n, like=a, xp=xp)
        dW = xp.matrix_transpose(_solve(G, xp.matmul(xp.matrix_transpose(a), g), xp))
    else:
        G = xp.matmul(a, xp.matrix_transpose(a)) / b + lam_s * compat.eye(b, like=a, xp=xp)
        dW = xp.matmul(xp.matrix_transpose(_solve(G, g, xp)), a)
    return compat.cast(dW / s, inputs.dtype, xp)


def _solve(G, rhs, xp):
    try:
        return xp.linalg.solve(G, rhs)
    except Exception as exc:  # NumPy's and torch's LinAlgError: the scaled system is singular in floating point
        if "LinAlgError" not in type(exc).__name__:
            raise
        raise ValueError("tract_precondition: a^T a / b + lam I is singular in floating point for these inputs "
                         "(lam is negligible next to |inputs|^2): scale the inputs down or use method='auto'") from None
