"""torch adapters: every registered op as a ``torch.autograd.Function``, every optimizer as ``torch.optim.Optimizer``.

>>> import torch, optnorm.torch as ont
>>> x = torch.randn(4, 10, dtype=torch.float64, requires_grad=True)
>>> y = ont.softmax(x, axis=-1)          # an autograd op; y.sum().backward() works
>>> opt = ont.optim.AdamW(model.parameters(), lr=1e-3)   # doctest: +SKIP

Ops are generated from :mod:`optnorm._lib.ops`; nothing here is written per op.
The forward and the VJP run optnorm's own code on the tensors (generic Array-API
path), so ``gradcheck`` tests optnorm's VJP, not torch's autograd.  Double
backward is not supported (the VJP is itself not recorded).
"""
from __future__ import annotations

import sys

import torch

from ._lib import ops as _ops

__all__ = ["apply", "op", "optim"]


def _is_tensor(v):
    return isinstance(v, torch.Tensor)


class _OpFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, op, opts, *arrays):
        y, res = op.fwd(*arrays, **opts)
        ctx.op = op
        ctx.res = res
        ctx.multi = isinstance(y, tuple)
        outs = y if ctx.multi else (y,)
        nondiff = [o for o in outs if _is_tensor(o) and not o.dtype.is_floating_point]
        if nondiff:
            ctx.mark_non_differentiable(*nondiff)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *dys):
        dy = tuple(dys) if ctx.multi else dys[0]
        grads = ctx.op.bwd(ctx.res, dy)
        return (None, None, *grads)


def apply(op_or_name, *args, **kwargs):
    """Run a registered op (Op or name) on torch tensors with optnorm's VJP attached."""
    op_ = _ops.get(op_or_name) if isinstance(op_or_name, str) else op_or_name
    arrays, opts = op_.split(args, kwargs)
    if not any(_is_tensor(a) and a.requires_grad for a in arrays):
        return op_.fn(*arrays, **opts)
    return _OpFunction.apply(op_, opts, *arrays)


op, __getattr__, __dir__ = _ops.adapter_namespace(__name__, apply)

# the torch.optim wrappers: ``optnorm.torch.optim.AdamW`` and ``from optnorm.torch.optim import AdamW``
from .optim import _torch as optim  # noqa: E402

sys.modules[f"{__name__}.optim"] = optim
