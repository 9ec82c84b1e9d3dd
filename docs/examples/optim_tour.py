"""A tour of optnorm.optim: one least-squares problem, many update rules, all through init / step / step_."""
import numpy as np

import optnorm.optim as oo

rng = np.random.default_rng(0)
n, d_in, d_out = 256, 32, 16
Xtr = rng.standard_normal((n, d_in))
W_true = rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)
Ytr = Xtr @ W_true.T + 0.5 + 0.01 * rng.standard_normal((n, d_out))


def loss_and_grads(params):
    """Mean squared error of y = x W^T + b and its gradient tree (same structure as params)."""
    R = Xtr @ params["W"].T + params["b"] - Ytr
    return float((R ** 2).mean()), {"W": 2 * R.T @ Xtr / R.size, "b": 2 * R.sum(0) / R.size}


def train(opt, steps=100, inplace=False):
    params = {"W": np.zeros((d_out, d_in)), "b": np.zeros(d_out)}
    state = opt.init(params)
    for _ in range(steps):
        _, grads = loss_and_grads(params)
        if inplace:
            state = opt.step_(params, grads, state)             # overwrites params and state buffers
        else:
            params, state = opt.step(params, grads, state)      # pure: new arrays
    return loss_and_grads(params)[0]


fallback = oo.adamw(lr=3e-2)                                     # for the 1-D bias of matrix rules
rules = {
    "sgd (nesterov)": oo.sgd(lr=0.2, momentum=0.9, nesterov=True),
    "adam": oo.adam(lr=3e-2),
    "adamw (step_)": oo.adamw(lr=3e-2, weight_decay=1e-4),
    "lion": oo.lion(lr=1e-2),
    "muon": oo.muon(lr=3e-2, weight_decay=0.0, fallback=fallback),
    "swan": oo.swan(lr=3e-2, fallback=fallback),
    "sinkgd": oo.sinkgd(lr=3e-2, fallback=fallback),
    "dct_lowrank(adam)": oo.dct_lowrank(oo.adam(lr=3e-2), rank=8),
    "adamw, cosine lr": oo.adamw(lr=lambda t: 3e-2 * 0.5 * (1 + np.cos(np.pi * t / 100)), weight_decay=0.0),
}
print(f"initial loss {loss_and_grads({'W': np.zeros((d_out, d_in)), 'b': np.zeros(d_out)})[0]:.4f}")
for name, opt in rules.items():
    print(f"{name:18s} loss after 100 steps: {train(opt, inplace='step_' in name):.5f}")

# --- non-finite gradients: raise (default) or skip the step
opt = oo.adam(lr=1e-2, nan_policy="skip")
p = np.ones(3)
st = opt.init(p)
p2, st = opt.step(p, np.array([np.nan, 1.0, 1.0]), st)
print("nan_policy='skip' left params unchanged:", np.array_equal(p, p2))

# --- building blocks
G = rng.standard_normal((16, 32))
O = oo.newton_schulz_orthogonalize(G)
print("Newton-Schulz singular values in", np.round(np.linalg.svd(O, compute_uv=False)[[0, -1]], 3))
print("spectral_scale((256, 64)) =", oo.spectral_scale((256, 64)))
B = rng.standard_normal((10, 10))
H = B @ B.T                                         # a "Hessian" seen only through products H v
tr = oo.hutchinson_trace(lambda v: H @ v, np.zeros(10), n_samples=500, tol=1e-3, seed=0)
print(f"Hutchinson trace {tr.trace:.2f} (exact {np.trace(H):.2f}) from {tr.n_iter} probes, converged={tr.converged}")

# --- TrAct: first-layer update that ignores the input scale (pixels in [0, 255])
a = rng.uniform(0, 255, (64, 48))                  # inputs (batch, n)
g = rng.standard_normal((64, 8))                   # dL/dy (batch, m)
dW = oo.tract_precondition(g, a, lam=0.1)
print("TrAct update", dW.shape, "vs plain gradient norm ratio", round(float(np.linalg.norm(dW) / np.linalg.norm(g.T @ a)), 6))
