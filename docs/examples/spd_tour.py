"""A tour of optnorm.spd: covariances, matrix roots, three distances, BW geometry, Riemannian batch norm,
projections and Gaussian class models (Mahalanobis scores)."""
import numpy as np

import optnorm.spd as spd

rng = np.random.default_rng(0)

# --- a batch of 8 covariance matrices (4 channels, 50 samples each), Ledoit-Wolf shrunk
signals = rng.standard_normal((8, 50, 4)) @ rng.standard_normal((4, 4))      # (batch, samples, channels)
C, rho = spd.covariance(signals, estimator="ledoit_wolf", return_shrinkage=True)
print("covariances", C.shape, "Ledoit-Wolf shrinkage", np.round(rho, 3))

# --- matrix square roots: exact (eigh) and GEMM-only (Newton-Schulz), same answer
A, B = C[0], C[1]
R = spd.sqrtm(A)
R_ns = spd.sqrtm(A, method="newton_schulz", n_iter=30)
print("sqrtm(A)^2 == A:", np.allclose(R @ R, A), "| eigh vs newton_schulz:", float(np.abs(R - R_ns).max()))
print("invsqrtm(A) A invsqrtm(A) == I:", np.allclose(spd.invsqrtm(A) @ A @ spd.invsqrtm(A), np.eye(4)))

# --- three Riemannian distances between the same pair
for name, fn in (("Bures-Wasserstein", spd.bw_distance), ("affine-invariant", spd.airm_distance),
                 ("log-Euclidean", spd.lem_distance)):
    print(f"{name:18s} d(A, B) = {float(fn(A, B)):.4f}")

# --- the BW metric object: geodesic midpoint and barycenter of the batch
bw = spd.bures_wasserstein()
mid = bw.geodesic(A, B, 0.5)
print("midpoint is equidistant:", np.isclose(float(bw.distance(A, mid)), float(bw.distance(mid, B))))
bary = bw.mean(C, tol=1e-10)
print(f"BW barycenter: {bary.n_iter} fixed-point iterations, converged={bary.converged}")

# --- Riemannian batch normalization (functional: output and new running state), under three metrics.
# After normalization the batch is centred at bias = I with unit dispersion; for "bw" the centring goes through
# GBWBN's eigenbasis transport (not exact parallel transport), so the new BW barycenter is only close to I.
for metric in ("bw", "airm", "lem"):
    Y, state = spd.riemannian_batch_norm(C, metric=metric, training=True, mean_iter=5)
    G, var = spd.rbn_statistics(Y, metric=metric, mean_iter=20)
    print(f"RBN[{metric:4s}]: |mean - I|_max = {float(np.abs(G - np.eye(4)).max()):.1e}, variance {float(var):.3f}")
Y_eval, _ = spd.riemannian_batch_norm(C, state, metric="lem", training=False)   # running statistics

# --- projections and the smoothed BW loss
S = rng.standard_normal((4, 4))
P = spd.project_psd(S + S.T, eps=1e-3)
print("project_psd: smallest eigenvalue", round(float(np.linalg.eigvalsh(P).min()), 4))
W = rng.standard_normal((4, 2))                               # rank-2 model covariance W W^T
print("bw_loss(W W^T, A, smoothing=1e-3) =", round(float(spd.bw_loss(W @ W.T, A, smoothing=1e-3)), 4))

# --- Gaussian class models: fit, then score new samples by Mahalanobis distance (OOD / anomaly score)
feats = np.concatenate([rng.standard_normal((100, 3)), rng.standard_normal((100, 3)) + 3.0])
labels = np.repeat([0, 1], 100)
fit = spd.gaussian_fit(feats, labels, tied=True, shrinkage=0.01)
test = np.array([[0.0, 0.0, 0.0], [3.0, 3.0, 3.0], [10.0, -10.0, 5.0]])
d = spd.mahalanobis(test[:, None, :], fit.means, precision=fit.precision)   # (3 samples, 2 classes)
print("min Mahalanobis distance per test point:", d.min(axis=1).round(2))
