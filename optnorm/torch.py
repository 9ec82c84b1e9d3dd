"""torch adapters: every registered op as a ``torch.autograd.Function``, every optimizer as ``torch.optim.Optimizer``.

>>> import torch, optnorm.torch as ont
>>> x = torch.randn(4, 10, dtype=torch.float64, requires_grad=True)
>>> y = ont.softmax(x, axis=-1)          # an autograd op; y.sum().backward() works
>>> opt = ont.optim.AdamW(model.parameters(), lr=1e-3)   # doctest: +SKIP

Ops are generated from :mod:`optnorm._lib.ops`; nothing here is written per op.
The forward and the VJP run optnorm's own code on the tensors (generic Array-API
path), so ``gradcheck`` tests optnorm's VJP, not torch's autograd.  Double
backward is not supported (the VJP is itself not recorded).

Under ``torch.compile`` an op with one output runs as a ``torch.library.custom_op`` (``optnorm::<domain>_<name>``,
its VJP ``optnorm::<domain>_<name>_vjp``) registered on first use, so ``fullgraph=True`` traces through it
without a graph break; the graph sees an opaque op whose output shape comes from one eager call on zeros
of the input shapes at trace time, and whose backward recomputes the forward's residuals.
"""
from __future__ import annotations

import sys
from typing import Optional

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


# ----------------------------------------------------------------------------- torch.compile: custom ops
_CUSTOM: dict[str, object] = {}      # op name -> its registered custom op


def _opts_key(op_, opts: dict) -> str:
    """The options of a compiled call as a string the graph can carry (Python literals only)."""
    return repr(sorted(opts.items()))


def _opts(key: str) -> dict:
    import ast

    try:
        return dict(ast.literal_eval(key))
    except (ValueError, SyntaxError) as e:
        raise TypeError(f"under torch.compile, optnorm ops take options that are Python literals (numbers, "
                        f"strings, None, tuples), got {key}") from e


def _plain(v):
    return v.detach() if _is_tensor(v) else v


def _custom_op(op_):
    """The (cached) custom op running ``op_`` and its VJP, with autograd registered between them."""
    if op_.name in _CUSTOM:
        return _CUSTOM[op_.name]
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    lib = "optnorm::" + op_.name.replace(".", "_")

    def fwd_impl(arrays: list[Optional[torch.Tensor]], key: str) -> torch.Tensor:
        y = op_.fn(*[_plain(a) for a in arrays], **_opts(key))
        if not _is_tensor(y):
            raise TypeError(f"{op_.name} returns {type(y).__name__}; under torch.compile optnorm runs ops with "
                            f"one tensor output")
        return y.clone() if any(y is a for a in arrays) else y

    def vjp_impl(arrays: list[Optional[torch.Tensor]], dy: torch.Tensor, key: str) -> list[torch.Tensor]:
        plain = [_plain(a) for a in arrays]
        _, res = op_.fwd(*plain, **_opts(key))
        grads = op_.bwd(res, dy)
        return [torch.zeros_like(a) if g is None else g.to(a.dtype) for a, g in zip(plain, grads) if a is not None]

    fwd = torch.library.custom_op(lib, fwd_impl, mutates_args=())
    vjp = torch.library.custom_op(lib + "_vjp", vjp_impl, mutates_args=())

    @fwd.register_fake
    def _(arrays, key):
        with unset_fake_temporarily():      # one eager call on zeros of the same shapes gives the output's
            zeros = [None if a is None else torch.zeros(a.shape, dtype=a.dtype) for a in arrays]
            y = op_.fn(*zeros, **_opts(key))
        ref = next(a for a in arrays if a is not None)
        return ref.new_empty(tuple(y.shape), dtype=y.dtype)

    @vjp.register_fake
    def _(arrays, dy, key):
        return [torch.empty_like(a) for a in arrays if a is not None]

    def setup_context(ctx, inputs, output):
        arrays, key = inputs
        ctx.present = [a is not None for a in arrays]
        ctx.key = key
        ctx.save_for_backward(*[a for a in arrays if a is not None])

    def backward(ctx, dy):
        saved = iter(ctx.saved_tensors)
        arrays = [next(saved) if here else None for here in ctx.present]
        grads = iter(vjp(arrays, dy, ctx.key))
        return [next(grads) if here else None for here in ctx.present], None

    fwd.register_autograd(backward, setup_context=setup_context)
    _CUSTOM[op_.name] = fwd
    return fwd


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


def apply(op_or_name, *args, **kwargs):
    """Run a registered op (Op or name) on torch tensors with optnorm's VJP attached."""
    op_ = _ops.get(op_or_name) if isinstance(op_or_name, str) else op_or_name
    if _compiling():
        arrays, opts = op_.split_plain(args, kwargs)
        if op_.name in _CUSTOM and all(a is None or _is_tensor(a) for a in arrays):
            return _CUSTOM[op_.name](list(arrays), _opts_key(op_, opts))
    arrays, opts = op_.split(args, kwargs)
    if not any(_is_tensor(a) and a.requires_grad for a in arrays):
        return op_.fn(*arrays, **opts)
    return _OpFunction.apply(op_, opts, *arrays)


op, __getattr__, __dir__ = _ops.adapter_namespace(__name__, apply)
for _o in _ops.all_ops().values():   # registered before any tracing (torch.compile cannot trace the registration)
    _custom_op(_o)

# the torch.optim wrappers: ``optnorm.torch.optim.AdamW`` and ``from optnorm.torch.optim import AdamW``
from .optim import _torch as optim  # noqa: E402

sys.modules[f"{__name__}.optim"] = optim
