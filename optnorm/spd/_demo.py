"""SPD showcase: the Bures-Wasserstein geodesic between two covariance ellipses, Riemannian batch normalization
aligning EEG-like sessions, and the minimum-distance-to-mean (MDM) and tangent-space classifiers on EEG-like trials
next to pyRiemann's.

EEG-like data: C channels from a stable vector autoregressive model of order 2,
``x_t = A1 x_{t-1} + A2 x_{t-2} + e_t``, ``e_t ~ N(0, I)``, ``A1 = 0.5 R(theta)``-type rotations scaled per channel
pair and ``A2 = -0.2 I`` (spectral peak, damped), observed through a session-specific mixing ``y_t = S_s x_t``
(``S_s = exp(0.4 Z_s)``, Z_s a random symmetric matrix: electrode impedance/placement changes between sessions);
two classes differ by the gain of the first two sources (x1.6, "event-related synchronisation").
Per-trial covariances (OAS shrinkage) are normalized per session by :func:`riemannian_batch_norm`.

Classification: one session, 2 classes, trials of C = 6 channels (the gain of the first two sources differs by
x1.2, a weaker effect than above), a train/test split; MDM with AIRM class means (:func:`airm`,
:func:`nearest_mean`) and tangent-space features at the AIRM mean (:func:`tangent_space`) with a logistic
regression (scikit-learn), each next to pyRiemann's ``MDM`` / ``TangentSpace`` when pyRiemann is installed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _ellipse(ax, C, color, lw=1.5, label=None):
    w, U = np.linalg.eigh(C)
    th = np.linspace(0, 2 * np.pi, 100)
    pts = U @ (np.sqrt(w)[:, None] * np.stack([np.cos(th), np.sin(th)]))
    ax.plot(pts[0], pts[1], color=color, lw=lw, label=label)


def _var2(rng, n_trials, C, T, session_mix, cls, gain_factor=1.6):
    A1 = np.zeros((C, C))
    for i in range(0, C - 1, 2):
        th = 0.3 + 0.15 * i
        A1[i:i + 2, i:i + 2] = 0.9 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    if C % 2:
        A1[-1, -1] = 0.5
    A2 = -0.2 * np.eye(C)
    gain = np.ones(C)
    if cls == 1:
        gain[:2] = gain_factor
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
        ax.set_xlabel("x1 (1-sigma ellipse, arbitrary units)")
        ax.set_ylabel("x2 (arbitrary units)")
    axes[0].legend(fontsize=8, loc="upper left", title="position t")
    fig.suptitle("Covariance ellipses from A (t = 0) to B (t = 1)")
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
        ax.set_xlabel("principal axis 1 of the BW tangent vectors at I (a.u.)")
        ax.set_ylabel("principal axis 2 (a.u.)")
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle("EEG-like VAR(2) trials: session shift removed by Riemannian batch normalization")
    fig.tight_layout()
    fig.savefig(outdir / "spd_rbn_sessions.png", dpi=110)
    plt.close(fig)
    lines += _mdm_section(outdir, quick, plt)
    lines.append("plots: spd_bw_geodesic.png, spd_rbn_sessions.png, spd_mdm.png")
    return lines


GAIN = 1.2          # class-1 gain of the first two sources in the classification data


def _mdm_section(outdir, quick, plt) -> list[str]:
    """MDM and tangent space + logistic regression on EEG-like trials, next to pyRiemann's."""
    from . import airm, covariance, nearest_mean, tangent_space

    rng = np.random.default_rng(1)
    C, T = 6, (150 if quick else 250)        # the VAR(2) model above is stable up to 6 channels
    n_per = 30 if quick else 80
    Z = rng.standard_normal((C, C)) * 0.4
    w, U = np.linalg.eigh((Z + Z.T) / 2)
    mix = (U * np.exp(w)) @ U.T
    X = np.concatenate([_var2(rng, n_per, C, T, mix, 0, GAIN), _var2(rng, n_per, C, T, mix, 1, GAIN)])
    y = np.r_[np.zeros(n_per, int), np.ones(n_per, int)]
    perm = rng.permutation(len(y))
    X, y = X[perm], y[perm]
    covs = covariance(X, layout="channels_times", estimator="oas")     # (trials, channels, times): pyRiemann's
    n_train = len(y) // 2
    Ctr, ytr, Cte, yte = covs[:n_train], y[:n_train], covs[n_train:], y[n_train:]
    # --- MDM in three lines
    g = airm()
    means = np.stack([g.mean(Ctr[ytr == c]).mean for c in (0, 1)])
    pred = nearest_mean(Cte, means)
    acc = {"optnorm MDM": float(np.mean(pred == yte))}
    # --- tangent space at the training mean + logistic regression
    ref = g.mean(Ctr).mean
    Ttr, Tte = tangent_space(Ctr, ref), tangent_space(Cte, ref)
    lines = [f"MDM / tangent space on EEG-like trials ({C} channels, {T} samples, {n_train} train / "
             f"{len(y) - n_train} test, 2 classes):"]
    try:
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(max_iter=1000).fit(Ttr, ytr)
        acc["optnorm TS + LR"] = float(clf.score(Tte, yte))
    except ImportError:
        lines.append("  (scikit-learn not installed: no tangent-space classifier)")
    try:
        from pyriemann.classification import MDM
        from pyriemann.tangentspace import TangentSpace

        acc["pyRiemann MDM"] = float(MDM(metric="riemann").fit(Ctr, ytr).score(Cte, yte))
        if "optnorm TS + LR" in acc:
            ts = TangentSpace(metric="riemann").fit(Ctr)
            acc["pyRiemann TS + LR"] = float(LogisticRegression(max_iter=1000).fit(ts.transform(Ctr), ytr).score(
                ts.transform(Cte), yte))
    except ImportError:
        lines.append("  (pyRiemann not installed: no side-by-side)")
    lines.append("  accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    # --- figure: test trials in the tangent space, and the accuracies
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [1.3, 1]})
    F = Tte - Ttr.mean(0)
    _, _, Vt = np.linalg.svd(Ttr - Ttr.mean(0), full_matrices=False)
    P = F @ Vt[:2].T
    for c, mk in ((0, "o"), (1, "^")):
        ok = (yte == c) & (pred == yte)
        bad = (yte == c) & (pred != yte)
        axes[0].scatter(P[ok, 0], P[ok, 1], marker=mk, s=22, color=f"C{c}", label=f"class {c}, MDM correct")
        axes[0].scatter(P[bad, 0], P[bad, 1], marker=mk, s=40, facecolors="none", edgecolors="k",
                        label=f"class {c}, MDM wrong")
    axes[0].set_title("Test trials in the tangent space at the AIRM mean")
    axes[0].set_xlabel("principal axis 1 of the tangent vectors (a.u.)")
    axes[0].set_ylabel("principal axis 2 (a.u.)")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    names = list(acc)
    colors = ["C2" if k.startswith("optnorm") else "C7" for k in names]
    axes[1].barh(names, [acc[k] for k in names], color=colors)
    for i, k in enumerate(names):
        axes[1].text(acc[k] + 0.01, i, f"{acc[k]:.3f}", va="center", fontsize=9)
    axes[1].axvline(0.5, color="k", lw=0.8, ls="--")
    axes[1].set_xlim(0, 1.1)
    axes[1].set_xlabel("test accuracy (fraction correct; dashed: chance)")
    axes[1].set_title("optnorm (green) next to pyRiemann (grey)")
    axes[1].invert_yaxis()
    fig.suptitle("Minimum distance to mean and tangent space + logistic regression, EEG-like VAR(2) trials")
    fig.tight_layout()
    fig.savefig(Path(outdir) / "spd_mdm.png", dpi=110)
    plt.close(fig)
    return lines
