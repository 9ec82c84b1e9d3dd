"""SPD showcase: the Bures-Wasserstein geodesic between two covariance ellipses, and Riemannian batch
normalization aligning EEG-like sessions.

EEG-like data: C channels from a stable vector autoregressive model of order 2,
``x_t = A1 x_{t-1} + A2 x_{t-2} + e_t``, ``e_t ~ N(0, I)``, ``A1 = 0.5 R(theta)``-type rotations scaled per channel
pair and ``A2 = -0.2 I`` (spectral peak, damped), observed through a session-specific mixing ``y_t = S_s x_t``
(``S_s = exp(0.4 Z_s)``, Z_s a random symmetric matrix: electrode impedance/placement changes between sessions);
two classes differ by the gain of the first two sources (x1.6, "event-related synchronisation").
Per-trial covariances (OAS shrinkage) are normalized per session by :func:`riemannian_batch_norm`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _ellipse(ax, C, color, lw=1.5, label=None):
    w, U = np.linalg.eigh(C)
    th = np.linspace(0, 2 * np.pi, 100)
    pts = U @ (np.sqrt(w)[:, None] * np.stack([np.cos(th), np.sin(th)]))
    ax.plot(pts[0], pts[1], color=color, lw=lw, label=label)


def _var2(rng, n_trials, C, T, session_mix, cls):
    A1 = np.zeros((C, C))
    for i in range(0, C - 1, 2):
        th = 0.3 + 0.15 * i
        A1[i:i + 2, i:i + 2] = 0.9 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    if C % 2:
        A1[-1, -1] = 0.5
    A2 = -0.2 * np.eye(C)
    gain = np.ones(C)
    if cls == 1:
        gain[:2] = 1.6
    out = np.empty((n_trials, C, T))
    for k in range(n_trials):
        x = np.zeros((T + 50, C))
        e = rng.standard_normal((T + 50, C)) * gain
        for t in range(2, T + 50):
            x[t] = A1 @ x[t - 1] + A2 @ x[t - 2] + e[t]
        out[k] = (session_mix @ x[50:].T)
    return out


def showcase(outdir: Path, quick: bool) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import bures_wasserstein, bw_distance, covariance, riemannian_batch_norm

    outdir = Path(outdir)
    lines = []
    # ---------------------------------------------------------- 1. geodesic between two ellipses
    A = np.array([[4.0, 1.2], [1.2, 0.6]])
    B = np.array([[0.5, -0.3], [-0.3, 3.0]])
    bw = bures_wasserstein()
    ts = np.linspace(0, 1, 7)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    cmap = plt.get_cmap("viridis")
    for t in ts:
        _ellipse(axes[0], np.asarray(bw.geodesic(A, B, float(t))), cmap(t), label=f"t={t:.2f}")
        _ellipse(axes[1], (1 - t) * A + t * B, cmap(t))
    axes[0].set_title("Bures-Wasserstein geodesic (= W2 between Gaussians)")
    axes[1].set_title("Euclidean interpolation (1-t)A + tB")
    for ax in axes:
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(outdir / "spd_bw_geodesic.png", dpi=110)
    plt.close(fig)
    d = float(bw_distance(A, B))
    mids = [float(bw_distance(A, np.asarray(bw.geodesic(A, B, float(t))))) for t in (0.25, 0.5, 0.75)]
    lines.append(f"BW geodesic A->B: d(A,B) = {d:.4f}; d(A, g(t)) / d(A,B) at t=.25,.5,.75: "
                 + ", ".join(f"{m / d:.4f}" for m in mids) + " (constant speed)")

    # ---------------------------------------------------------- 2. RBN on EEG-like sessions
    rng = np.random.default_rng(0)
    C, T = 6, (200 if quick else 500)
    n_per = 10 if quick else 40
    sessions = []
    for s in range(3):
        Z = rng.standard_normal((C, C)) * 0.4
        Z = (Z + Z.T) / 2
        w, U = np.linalg.eigh(Z)
        mix = (U * np.exp(w)) @ U.T
        X0 = _var2(rng, n_per, C, T, mix, 0)
        X1 = _var2(rng, n_per, C, T, mix, 1)
        covs = covariance(np.concatenate([X0, X1]), layout="channels_times", estimator="oas")
        sessions.append((covs, np.r_[np.zeros(n_per), np.ones(n_per)]))
    normed = {}
    for metric in ("bw", "airm"):
        out = []
        for covs, _ in sessions:
            Y, _ = riemannian_batch_norm(covs, metric=metric, mean_iter=5)
            out.append(np.asarray(Y))
        normed[metric] = out

    def spread(groups, dist):
        means = [bures_wasserstein().mean(g).mean for g in groups]
        grand = bures_wasserstein().mean(np.stack(means)).mean
        return float(np.mean([dist(m, grand) for m in means]))

    before = spread([c for c, _ in sessions], bw_distance)
    lines.append(f"RBN on EEG-like VAR(2) sessions ({len(sessions)} sessions x {2 * n_per} trials, {C} channels):")
    lines.append(f"  mean BW distance of session means to the grand mean: before {before:.3f}, "
                 f"after bw-RBN {spread(normed['bw'], bw_distance):.3f}, after airm-RBN "
                 f"{spread(normed['airm'], bw_distance):.3f}")
    # class separation (AIRM distance between class means, relative to within-class spread) after RBN
    def separation(groups, labels):
        Xall = np.concatenate(groups)
        y = np.concatenate(labels)
        m0 = bures_wasserstein().mean(Xall[y == 0]).mean
        m1 = bures_wasserstein().mean(Xall[y == 1]).mean
        within = np.mean([float(bw_distance(x, m0 if yy == 0 else m1)) for x, yy in zip(Xall, y)])
        return float(bw_distance(m0, m1)) / within

    labels = [lab for _, lab in sessions]
    lines.append(f"  class separation d(m0, m1) / within-class spread: before "
                 f"{separation([c for c, _ in sessions], labels):.3f}, after bw-RBN "
                 f"{separation(normed['bw'], labels):.3f}")

    # 2-D view: tangent vectors at I (BW log, upper triangle) projected on two principal axes
    def embed(groups):
        V = [2 * (np.asarray(bures_wasserstein().log(np.broadcast_to(np.eye(C), g.shape), g))) for g in groups]
        iu = np.triu_indices(C)
        F = np.concatenate([v[:, iu[0], iu[1]] for v in V])
        F = F - F.mean(0)
        _, _, Vt = np.linalg.svd(F, full_matrices=False)
        P = F @ Vt[:2].T
        return np.split(P, np.cumsum([len(g) for g in groups])[:-1])

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.3))
    for ax, (title, groups) in zip(axes, [("raw covariances", [c for c, _ in sessions]),
                                          ("after RBN (BW)", normed["bw"]), ("after RBN (AIRM)", normed["airm"])]):
        for s, (P, lab) in enumerate(zip(embed(groups), labels)):
            for cl, mk in ((0, "o"), (1, "^")):
                ax.scatter(P[lab == cl, 0], P[lab == cl, 1], s=14, marker=mk, color=f"C{s}", alpha=0.7,
                           label=f"session {s}, class {cl}")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.suptitle("EEG-like VAR(2) trials: session shift removed by Riemannian batch normalization")
    fig.tight_layout()
    fig.savefig(outdir / "spd_rbn_sessions.png", dpi=110)
    plt.close(fig)
    lines.append("plots: spd_bw_geodesic.png, spd_rbn_sessions.png")
    return lines
