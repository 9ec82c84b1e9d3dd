"""Shared test problems: an elementwise quadratic with a fixed noise sequence (bitwise identical across backends)."""
from __future__ import annotations

import numpy as np


class Quadratic:
    """``g = d * (p - q) + noise_k``: elementwise, so every backend computes the same float32 gradients."""

    def __init__(self, shapes, seed=0, dtype=np.float32, steps=100):
        rng = np.random.default_rng(seed)
        self.shapes = shapes
        self.p0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
        self.q = [rng.standard_normal(s).astype(dtype) for s in shapes]
        self.d = [rng.uniform(0.1, 2.0, s).astype(dtype) for s in shapes]
        self.noise = [[(0.1 * rng.standard_normal(s)).astype(dtype) for s in shapes] for _ in range(steps)]

    def grads(self, ps, k, conv):
        return [conv(d) * (p - conv(q)) + conv(n) for p, d, q, n in zip(ps, self.d, self.q, self.noise[k])]
