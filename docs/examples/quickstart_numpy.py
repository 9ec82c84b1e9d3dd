"""Quick start on NumPy: one call per domain."""
import numpy as np

import optnorm

rng = np.random.default_rng(0)

# normalization: float32 in, float32 out (Numba kernel), stable for huge logits
logits = (rng.standard_normal((4, 10)) * 1e3).astype(np.float32)
p = optnorm.norm.softmax(logits, axis=-1, method="online")
loss = optnorm.norm.cross_entropy(logits, np.array([1, 2, 3, 4]), label_smoothing=0.1, z_loss=1e-4)
print("softmax rows sum to", p.sum(axis=-1), "loss", float(loss))

# optimal transport between two point clouds
X = rng.standard_normal((2000, 3))
Y = rng.standard_normal((2000, 3)) + 1.0
print("SW2 (control-variate estimator)", optnorm.ot.sliced_wasserstein(X, Y, n_projections=256,
                                                                       estimator="upper_cv", seed=0))

# SPD geometry: Bures-Wasserstein distance between covariance matrices
A = np.cov(rng.standard_normal((3, 50)))
print("BW distance to the identity", optnorm.spd.bw_distance(A, np.eye(3)))

# optimizers: a functional AdamW step
opt = optnorm.optim.adamw(lr=1e-3, weight_decay=1e-2)
params = {"w": rng.standard_normal((5, 3))}
state = opt.init(params)
params, state = opt.step(params, {"w": np.ones((5, 3))}, state)
