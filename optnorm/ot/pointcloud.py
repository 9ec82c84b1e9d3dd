"""A lazy cost between point clouds: what :func:`sinkhorn` and :func:`sinkhorn_unbalanced` take instead of ``M``.

``sinkhorn(a, b, PointCloud(X, Y), reg=0.05)`` solves the same problem as ``sinkhorn(a, b, dist(X, Y), reg=0.05)``
without ever forming the n x m cost: every Sinkhorn half-step is a block-wise online log-sum-exp over costs
computed on the fly (Numba kernels for NumPy clouds, CUDA kernels for CuPy clouds, row chunks in the generic
Array-API body).  Memory is O((n + m) d) instead of O(n m): the GeomLoss "online" backend without KeOps, and
POT's ``empirical_sinkhorn(..., isLazy=True)``.
"""
from __future__ import annotations

from typing import Any

from .._lib import compat
from .._lib.api import check_arguments, public_class
from .._lib.roles import Choice, Float, Positive
from .._lib.typing import Array
from . import _common as cm
from . import _lazy
from .dist import METRICS, dist

_ROLES = dict(X=Float("... n d", finite=True), Y=Float("... m d", finite=True, optional=True),
              metric=Choice(METRICS), p=Positive(), w=Float("d", finite=True, optional=True, sign="nonnegative"))


@public_class
class PointCloud:
    r"""The cost :math:`C_{ij} = c(x_i, y_j)` between two point clouds, evaluated lazily (never stored).

    Pass it where a cost matrix ``M`` goes: ``sinkhorn(a, b, PointCloud(X, Y), reg=0.05)``,
    ``sinkhorn_unbalanced(a, b, PointCloud(X, Y, metric="euclidean"), reg=0.05, reg_m=1.0)``.  The costs are
    those of :func:`optnorm.ot.dist` (same ``metric``, ``p``, ``w``; the default is the squared Euclidean
    distance :math:`\sum_k (x_{ik} - y_{jk})^2`, as in POT), recomputed block by block in every half-step:
    each Sinkhorn update is the online log-sum-exp

    .. math::

        f_i = \varepsilon\log a_i - \varepsilon\log\sum_j \exp\big((g_j - c(x_i, y_j))/\varepsilon\big),

    with memory :math:`O((n + m)d)` ("Interpolating between Optimal Transport and MMD using Sinkhorn
    Divergences", Feydy et al., AISTATS 2019, and its online backend; Cuturi, NeurIPS 2013, for the iteration).
    The result's ``plan()`` materialises the n x m plan; ``cost``, ``objective`` and the marginal errors are
    computed block-wise.

    Parameters
    ----------
    X : array, shape (..., n, d)
    Y : array, shape (..., m, d), optional
        Default ``X``.  Leading axes (one batch axis for the solvers) broadcast against those of ``X``.
    metric : {"sqeuclidean", "euclidean", "cityblock", "minkowski", "cosine", "correlation"}
    p : float, default 2
        Minkowski exponent.
    w : array, shape (d,), optional
        Non-negative feature weights (as in :func:`optnorm.ot.dist`).

    Attributes
    ----------
    X, Y : arrays
        The clouds as given.
    metric : str
    p : float
    w : array or None
    shape : tuple
        ``(..., n, m)``, the shape of the cost matrix it stands for.
    dtype
        The clouds' dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from optnorm.ot import PointCloud, dist, sinkhorn
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.random((300, 2)), rng.random((200, 2))
    >>> lazy = sinkhorn(None, None, PointCloud(X, Y), reg=0.05)
    >>> dense = sinkhorn(None, None, dist(X, Y), reg=0.05)
    >>> bool(np.allclose(lazy.f, dense.f) and np.isclose(lazy.cost, dense.cost))
    True
    """
    _optnorm_cloud = True

    def __init__(self, X: Array, Y: Array | None = None, *, metric: str = "sqeuclidean", p: float = 2.0,
                 w: Array | None = None):
        v = check_arguments("PointCloud", _ROLES, X=X, Y=Y, metric=metric, p=p, w=w)
        self.X = v["X"]
        self.Y = v["X"] if v["Y"] is None else v["Y"]
        self.metric, self.p, self.w = v["metric"], float(v["p"]), v["w"]
        if self.w is not None and self.metric in ("cosine", "correlation"):
            raise ValueError(f"PointCloud: w (feature weights) does not apply to the {self.metric} metric")
        if self.X.dtype != self.Y.dtype:
            raise TypeError(f"PointCloud: X has dtype {compat.dtype_name(self.X.dtype)} but Y has "
                            f"{compat.dtype_name(self.Y.dtype)}: they must match")
        import numpy as np

        batch = tuple(np.broadcast_shapes(tuple(self.X.shape[:-2]), tuple(self.Y.shape[:-2])))
        self.shape = batch + (int(self.X.shape[-2]), int(self.Y.shape[-2]))
        self.dtype = self.X.dtype

    def lazy(self, dtype: Any = None) -> Any:
        """The prepared lazy cost (batch axes flattened) in ``dtype`` (default: the clouds')."""
        xp = compat.array_namespace(self.X, self.Y)
        dt = self.dtype if dtype is None else dtype
        _, _, cost, _ = _lazy.prepare(self.X, self.Y, self.metric, self.p, self.w, dt, xp, cm.pow2_scale)
        if cost.cscale == float("inf"):
            raise ValueError(f"PointCloud: the {self.metric} costs of X and Y overflow "
                             f"{compat.dtype_name(dt)}: rescale the clouds")
        return cost

    def matrix(self) -> Array:
        """The dense cost matrix, :func:`optnorm.ot.dist` of the clouds (n x m memory)."""
        return dist(self.X, self.Y, metric=self.metric, p=self.p, w=self.w)

    def __repr__(self) -> str:
        return (f"PointCloud(X={cm_format(self.X)}, Y={cm_format(self.Y)}, metric={self.metric!r}"
                + (f", p={self.p:g}" if self.metric == "minkowski" else "") + ")")


def cm_format(x) -> str:
    from .._lib.solver import format_value

    return format_value(x)
