"""The torch adapter's ops trace under ``torch.compile(fullgraph=True)`` without a graph break (issue #18): they
run as ``torch.library.custom_op``s with optnorm's VJP registered as their autograd formula."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ont = pytest.importorskip("optnorm.torch")


def _model(name):
    def f(x, w, b):
        if name == "layer_norm":
            y = ont.layer_norm(x, w, b, eps=1e-5)
        elif name == "rms_norm":
            y = ont.rms_norm(x, w, eps=1e-6)
        elif name == "softmax":
            y = ont.softmax(x * w, axis=-1)
        else:
            y = ont.log_softmax(x + b, axis=-1)
        return (y * torch.linspace(-1, 1, x.shape[-1], dtype=x.dtype)).sum()
    return f


@pytest.mark.parametrize("name", ["layer_norm", "rms_norm", "softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fullgraph_matches_eager(name, dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 33, dtype=dtype, generator=gen).requires_grad_()
    w = torch.randn(33, dtype=dtype, generator=gen).requires_grad_()
    b = torch.randn(33, dtype=dtype, generator=gen).requires_grad_()
    f = _model(name)
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")   # raises on any graph break
    y = compiled(x, w, b)
    got = torch.autograd.grad(y, (x, w, b), allow_unused=True)
    y0 = f(x, w, b)
    want = torch.autograd.grad(y0, (x, w, b), allow_unused=True)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(y.detach().numpy(), y0.detach().numpy(), rtol=tol, atol=tol)
    for g, h in zip(got, want):
        if h is None:
            assert g is None or not g.abs().any()
        else:
            np.testing.assert_allclose(g.numpy(), h.numpy(), rtol=tol * 10, atol=tol * 10)


def test_fullgraph_inside_a_module_with_torch_ops():
    lin = torch.nn.Linear(16, 16, dtype=torch.float64)
    w = torch.ones(16, dtype=torch.float64, requires_grad=True)

    def f(x):
        return ont.softmax(ont.rms_norm(lin(x), w, eps=1e-6), axis=-1)[:, 0].sum()

    x = torch.randn(4, 16, dtype=torch.float64)
    torch._dynamo.reset()
    y = torch.compile(f, fullgraph=True, backend="aot_eager")(x)
    y.backward()
    gw = w.grad.clone()
    w.grad = None
    f(x).backward()
    np.testing.assert_allclose(gw.numpy(), w.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_fullgraph_without_grad():
    x = torch.randn(3, 4, dtype=torch.float64)
    torch._dynamo.reset()
    f = torch.compile(lambda x: ont.softmax(x, axis=-1), fullgraph=True, backend="aot_eager")
    np.testing.assert_allclose(f(x).numpy(), torch.softmax(x, -1).numpy(), rtol=1e-13)
