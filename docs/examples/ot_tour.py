"""A tour of optnorm.ot: exact, entropic, 1-D, Gaussian and sliced transport, boxes and assignment."""
import numpy as np

import optnorm.ot as ot

rng = np.random.default_rng(0)

# --- two small point clouds and their squared-Euclidean cost
X = rng.standard_normal((60, 2))
Y = rng.standard_normal((80, 2)) * 0.5 + np.array([2.0, 0.0])
a, b = np.full(60, 1 / 60), np.full(80, 1 / 80)
M = ((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)

exact = ot.emd(a, b, M)                                   # HiGHS LP on the host
print(f"exact OT cost {float(exact.cost):.4f} (plan {exact.plan.shape}, mass {exact.plan.sum():.3f})")

res = ot.sinkhorn(a, b, M, 0.05)                          # log-domain Sinkhorn, reg = 0.05
print(f"sinkhorn: cost {float(res.cost):.4f}, {res.n_iter} iterations, converged={res.converged}")

sns = ot.sinkhorn_newton_sparse(a, b, M, 0.05)            # Sinkhorn warm start + sparse Newton
print(f"sinkhorn_newton_sparse: cost {float(sns.cost):.4f}, {sns.n_iter} iterations")

# --- closed forms: 1-D and Gaussian
u, v = rng.standard_normal(500), rng.standard_normal(700) + 1.0
print(f"W1 in 1-D {float(ot.wasserstein_1d(u, v, p=1)):.4f}, W2 {float(ot.wasserstein_1d(u, v, p=2)):.4f}")
C1, C2 = np.cov(X.T), np.cov(Y.T)
print(f"Gaussian W2 between the fitted Gaussians {float(ot.gaussian_wasserstein(X.mean(0), C1, Y.mean(0), C2)):.4f}")

# --- sliced Wasserstein in 3-D: four estimators of the same quantity, with their standard errors
P = rng.standard_normal((2000, 3))
Q = rng.standard_normal((2000, 3)) @ np.diag([1.0, 2.0, 0.5]) + 0.3
for est in ("mc", "qmc", "lower_cv", "upper_cv"):
    sw, std = ot.sliced_wasserstein(P, Q, n_projections=128, estimator=est, seed=0, return_std=True)
    print(f"SW2 [{est:8s}] {float(sw):.4f} +- {float(std):.4f}")
print(f"max-sliced W2 {float(ot.max_sliced_wasserstein(P, Q, seed=0)):.4f}")

# --- bounding boxes as Gaussians: Wasserstein distance and NWD similarity (tiny-object detection)
pred = np.array([[10.0, 10.0, 14.0, 14.0], [30.0, 30.0, 36.0, 34.0]])   # xyxy
gt = np.array([[11.0, 10.0, 15.0, 14.0], [50.0, 50.0, 54.0, 54.0]])
print("box W2:", ot.box_wasserstein(pred, gt).round(3), " NWD:", ot.normalized_wasserstein_boxes(pred, gt).round(3))

# --- assignment: Hungarian matching of boxes by 1 - NWD, and its soft Sinkhorn relaxation
cost = 1.0 - ot.normalized_wasserstein_boxes(pred, gt, pairwise=True)
match = ot.linear_assignment(cost)
print("matching perm", match.perm, "total cost", np.round(float(match.cost), 3))
soft = ot.sinkhorn_normalize(-cost, tau=0.1, n_iter=50)
print("doubly-stochastic relaxation:\n", soft.round(3))
