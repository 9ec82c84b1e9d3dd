"""TrAct: the first-layer weight update that makes pre-activations, not weights, trainable."""
from __future__ import annotations

from .._lib import compat, validate

__all__ = ["tract_precondition"]


def _as(xp, a, dt):
    return a if a is None or a.dtype == dt else xp.astype(a, dt)


def tract_precondition(grad_out, inputs, *, lam=0.1, method="auto"):
    """TrAct weight update ΔW for a first layer y = a Wᵀ (+ b), from the output gradient.

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

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a, g = rng.standard_normal((30, 8)), rng.standard_normal((30, 5))
    >>> np.allclose(tract_precondition(g, a, method="primal"), tract_precondition(g, a, method="dual"))
    True
    """
    xp = validate.check_same_namespace(grad_out=grad_out, inputs=inputs)
    validate.check_float(grad_out, "grad_out", xp)
    validate.check_float(inputs, "inputs", xp)
    if inputs.ndim < 2 or grad_out.ndim < 2:
        raise ValueError(f"inputs and grad_out must have shape (..., n) and (..., m) with a batch axis, got "
                         f"{tuple(inputs.shape)} and {tuple(grad_out.shape)}")
    if tuple(inputs.shape[:-1]) != tuple(grad_out.shape[:-1]):
        raise ValueError(f"grad_out has leading shape {tuple(grad_out.shape[:-1])}, expected "
                         f"{tuple(inputs.shape[:-1])} like inputs")
    lam = validate.check_positive(lam, "lam")
    validate.check_in(method, ("auto", "primal", "dual"), "method")
    n, m = inputs.shape[-1], grad_out.shape[-1]
    dt = compat.compute_dtype(inputs, xp)
    a = xp.reshape(_as(xp, inputs, dt), (-1, n))
    g = xp.reshape(_as(xp, grad_out, dt), (-1, m))
    b = a.shape[0]
    if method == "auto":
        method = "dual" if b < n else "primal"
    if method == "primal":
        G = xp.matmul(xp.matrix_transpose(a), a) / b + lam * xp.eye(n, dtype=dt)
        dW = xp.matrix_transpose(xp.linalg.solve(G, xp.matmul(xp.matrix_transpose(a), g)))
    else:
        G = xp.matmul(a, xp.matrix_transpose(a)) / b + lam * xp.eye(b, dtype=dt)
        dW = xp.matmul(xp.matrix_transpose(xp.linalg.solve(G, g)), a)
    return _as(xp, dW, inputs.dtype)
