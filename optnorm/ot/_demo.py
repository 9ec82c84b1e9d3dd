"""Showcase of optnorm.ot: a sliced-Wasserstein gradient flow, estimator variances, Sinkhorn vs SNS convergence,
NWD against IoU for boxes, a point-cloud flow with the debiased Sinkhorn divergence (against the biased OT_eps),
and entropic barycenters.

Run with ``python -m optnorm demo ot [--quick]``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _two_moons(n, rng):
    t = rng.random(n) * np.pi
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(t), 1 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    return np.stack([x, y], 1) + 0.06 * rng.standard_normal((n, 2))


def _flow(X0, Y, estimator, steps, L, lr):
    from .._lib import ops

    op = ops.get("ot.sliced_wasserstein")          # the op's fwd/bwd pair (what the torch/JAX adapters run)

    X = X0.copy()
    n, d = X.shape
    snaps, values = [X.copy()], []
    for k in range(steps):
        val, res = op.fwd(X, Y, n_projections=L, estimator=estimator, seed=k, squared=True)
        gX, _, _, _ = op.bwd(res, np.array(1.0))
        X = X - lr * (n * d / 2.0) * gX            # the SW_2^2 gradient is ~ 2/(n d) (x - its transport image)
        values.append(float(val))
        if (k + 1) % max(1, steps // 4) == 0:
            snaps.append(X.copy())
    return X, snaps, values


def _iou(b1, b2):
    x1 = np.maximum(b1[..., 0], b2[..., 0])
    y1 = np.maximum(b1[..., 1], b2[..., 1])
    x2 = np.minimum(b1[..., 2], b2[..., 2])
    y2 = np.minimum(b1[..., 3], b2[..., 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    a1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    a2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    return inter / (a1 + a2 - inter)


def _boxes_showcase(outdir: Path, quick: bool) -> list[str]:
    """NWD against IoU as two boxes move apart (why NWD suits tiny objects)."""
    import time

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from optnorm.ot import normalized_wasserstein_boxes

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    shifts = np.linspace(0, 40, 161)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    lines = ["box size  shift  IoU     NWD(C=12.8)"]
    for size, col in ((6, "C0"), (12, "C1"), (48, "C2")):
        ref = np.array([0.0, 0.0, size, size])
        moved = np.stack([ref + np.array([s, 0, s, 0]) for s in shifts])
        iou = _iou(ref[None], moved)
        nwd = normalized_wasserstein_boxes(np.broadcast_to(ref, moved.shape), moved)
        ax[0].plot(shifts, iou, "--", color=col, label=f"IoU, {size}px box")
        if size == 6:  # a pure shift moves only the means: NWD is the same curve for every box size
            ax[0].plot(shifts, nwd, "-", color="k", lw=2, label="NWD, any box size (pure shift)")
        for s in (2.0, 8.0, 20.0):
            i = int(np.argmin(abs(shifts - s)))
            lines.append(f"{size:8d}  {s:5.1f}  {iou[i]:.3f}   {nwd[i]:.3f}")
    ax[0].set_xlabel("horizontal shift (px)")
    ax[0].set_ylabel("similarity")
    ax[0].set_title("IoU drops to 0 once boxes stop overlapping; NWD keeps a gradient")
    ax[0].legend(fontsize=7)
    # pairwise similarity of random tiny boxes: the assignment view
    rng = np.random.default_rng(0)
    n = 256 if quick else 2048
    c = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(2, 12, (n, 2))
    b = np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)
    t0 = time.perf_counter()
    S = normalized_wasserstein_boxes(b, b, pairwise=True)
    dt = time.perf_counter() - t0
    iou_mat = _iou(b[:, None], b[None])
    off = ~np.eye(n, dtype=bool)
    ax[1].hist(S[off], bins=60, alpha=0.6, label="NWD")
    ax[1].hist(iou_mat[off], bins=60, alpha=0.6, label="IoU")
    ax[1].set_yscale("log")
    ax[1].set_title(f"{n}x{n} pairs of tiny boxes: share of pairs with IoU = 0: "
                    f"{np.mean(iou_mat[off] == 0):.1%}", fontsize=9)
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(outdir / "ot_boxes_nwd_vs_iou.png", dpi=110)
    plt.close(fig)
    lines.append(f"pairwise NWD {n}x{n} float32: {dt * 1e3:.1f} ms (first call includes compilation)")
    lines.append(f"pairs with IoU = 0: {np.mean(iou_mat[off] == 0):.1%}; with NWD < 1e-3: {np.mean(S[off] < 1e-3):.1%}")
    return lines


def _divergence_flow(X0, Y, debias, steps, reg, lr):
    """Gradient flow of X on S_eps(X, Y) (debias=True) or OT_eps(X, Y) (False), through the op's fwd/bwd."""
    from .._lib import ops

    op = ops.get("ot.sinkhorn_divergence")
    X = X0.copy()
    n = X.shape[0]
    values = []
    for _ in range(steps):
        val, res = op.fwd(X, Y, reg=reg, debias=debias, tol=1e-6)
        gX = op.bwd(res, np.array(1.0))[0]
        X = X - lr * n * gX                        # the gradient is ~ (x - its transport image) / n
        values.append(float(val))
    return X, values


def _divergence_showcase(outdir: Path, quick: bool, rng) -> list[str]:
    import matplotlib.pyplot as plt

    n = 250 if quick else 600
    steps = 30 if quick else 80
    reg = 0.05
    X0 = 0.3 * rng.standard_normal((n, 2)) + np.array([0.5, 2.0])
    Y = _two_moons(n, rng)
    t0 = time.perf_counter()
    Xs, vs = _divergence_flow(X0, Y, True, steps, reg, lr=0.5)
    Xb, vb = _divergence_flow(X0, Y, False, steps, reg, lr=0.5)
    dt = time.perf_counter() - t0
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.6))
    for a_, X, title in ((ax[0], Xs, "debiased S_eps (sinkhorn_divergence)"),
                         (ax[1], Xb, "biased OT_eps (debias=False)")):
        a_.scatter(Y[:, 0], Y[:, 1], s=6, c="lightgray", label="target (two moons)")
        a_.scatter(X0[:, 0], X0[:, 1], s=4, c="tab:orange", alpha=0.3, label="start")
        a_.scatter(X[:, 0], X[:, 1], s=6, c="tab:blue", label=f"after {steps} steps")
        a_.set_title(f"{title}, eps = {reg}")
        a_.set_xlabel("x (arbitrary units)")
        a_.set_ylabel("y (arbitrary units)")
        a_.set_aspect("equal")
        a_.legend(loc="upper right", fontsize=8)
    spread = lambda Z: float(np.sqrt(((Z - Z.mean(0)) ** 2).sum(1).mean()))  # noqa: E731
    ax[2].plot(vs, label="S_eps(X_t, Y) along the debiased flow")
    ax[2].plot(vb, label="OT_eps(X_t, Y) along the biased flow")
    ax[2].set_yscale("symlog", linthresh=1e-4)
    ax[2].set_xlabel("flow step")
    ax[2].set_ylabel("loss value (squared distance units)")
    ax[2].set_title(f"RMS spread: target {spread(Y):.3f}, debiased {spread(Xs):.3f}, biased {spread(Xb):.3f}")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(outdir / "ot_divergence_flow.png", dpi=80)
    plt.close(fig)
    return [f"Sinkhorn-divergence flow (n={n}, eps={reg}, {steps} steps, {dt:.1f} s both): RMS spread of the "
            f"target {spread(Y):.3f}, debiased flow {spread(Xs):.3f}, biased OT_eps flow {spread(Xb):.3f} "
            f"(it shrinks towards the blob the entropic bias prefers)"]


def _barycenter_showcase(outdir: Path, quick: bool) -> list[str]:
    import matplotlib.pyplot as plt

    from . import barycenter

    nb = 150 if quick else 300
    x = np.linspace(0, 1, nb)
    bump = lambda m, s: np.exp(-(x - m) ** 2 / (2 * s ** 2))  # noqa: E731
    A = np.stack([bump(0.15, 0.03), 0.6 * bump(0.45, 0.02) + 0.4 * bump(0.6, 0.02), bump(0.85, 0.06)]) + 1e-12
    A /= A.sum(1, keepdims=True)
    M = (x[:, None] - x[None]) ** 2
    fig, ax = plt.subplots(figsize=(9, 4.6))
    for k in range(3):
        ax.plot(x, A[k], color="gray", lw=1, label="inputs" if k == 0 else None)
    ax.plot(x, A.mean(0), "k:", lw=1.2, label="Euclidean average")
    out = []
    for reg, c in ((2e-3, "tab:orange"), (2e-4, "tab:blue")):
        r = barycenter(A, M, reg=reg, max_iter=5000, return_result=True)
        ax.plot(x, r.barycenter, color=c, lw=2, label=f"entropic barycenter, reg = {reg:g} ({r.n_iter} it)")
        out.append(f"reg={reg:g}: {r.n_iter} it, mean {float(x @ r.barycenter):.3f}")
    ax.set_xlabel("position x (arbitrary units)")
    ax.set_ylabel("mass per bin")
    ax.set_title(f"Wasserstein barycenter of 3 histograms ({nb} bins): mass moves, not averages")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(outdir / "ot_barycenter.png", dpi=80)
    plt.close(fig)
    return [f"barycenter of 3 histograms on {nb} bins: " + "; ".join(out) + f" (input means' average "
            f"{float((A @ x).mean()):.3f})"]


def showcase(outdir: Path, quick: bool = False) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import sinkhorn, sinkhorn_newton_sparse, sliced_wasserstein

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    files = []

    # 1. gradient flow of a Gaussian blob onto two moons, driven by SW_2^2 (optnorm's VJP)
    n = 300 if quick else 1500
    steps = 60 if quick else 200
    X0 = 0.3 * rng.standard_normal((n, 2)) + np.array([0.5, 2.0])
    Y = _two_moons(n, rng)
    flows = {}
    for est in ("mc", "lower_cv"):
        t0 = time.perf_counter()
        flows[est] = _flow(X0, Y, est, steps, L=32, lr=0.5)
        flows[est] = (*flows[est], time.perf_counter() - t0)
    fig, axes = plt.subplots(1, len(flows["mc"][1]) + 1, figsize=(3.6 * (len(flows["mc"][1]) + 1), 4.2))
    for i, S in enumerate(flows["mc"][1]):
        axes[i].scatter(Y[:, 0], Y[:, 1], s=2, c="tab:orange", alpha=0.4, label="target Y (two moons)")
        axes[i].scatter(S[:, 0], S[:, 1], s=2, c="tab:blue", label="moving cloud X_t")
        axes[i].set_title(f"step {i * max(1, steps // 4)}")
        axes[i].set_aspect("equal")
        axes[i].set_xlim(-1.5, 2.5)
        axes[i].set_ylim(-1.0, 3.2)                  # one frame for every step, so the motion is visible
        axes[i].set_xlabel("x (arbitrary units)")
    axes[0].set_ylabel("y (arbitrary units)")
    axes[0].legend(loc="upper right", fontsize=7, markerscale=4)
    ax = axes[-1]
    for est, (_, _, vals, _) in flows.items():
        ax.semilogy(vals, label=f"estimator {est}")
    ax.set_xlabel("step")
    ax.set_ylabel(r"$\widehat{SW}_2^2(X_t, Y)$ (squared units)")
    ax.set_title("loss along the flow")
    ax.legend()
    fig.suptitle(f"Sliced-Wasserstein gradient flow: the blue cloud, a Gaussian blob at step 0, descends "
                 f"SW_2^2 ({n} points, 32 directions per step, optnorm's VJP) and moves down onto the orange "
                 f"two-moons target", fontsize=10)
    fig.tight_layout()
    p = outdir / "ot_sw_flow.png"
    fig.savefig(p, dpi=80)
    plt.close(fig)
    files.append(p.name)
    for est, (Xf, _, vals, dt) in flows.items():
        final = float(sliced_wasserstein(Xf, Y, n_projections=512, seed=123))
        lines.append(f"SW flow ({est:8s}, L=32, {steps} steps): SW_2 {np.sqrt(vals[0]):.3f} -> {final:.4f} "
                     f"in {dt:.2f} s")

    # 2. estimator variances against L
    d = 8
    Xg = rng.standard_normal((500, d)) * np.linspace(0.3, 2.5, d)
    Yg = rng.standard_normal((500, d)) @ (0.5 * rng.standard_normal((d, d))) + 0.8
    Ls = [8, 32, 128] if quick else [8, 16, 32, 64, 128, 256]
    reps = 30 if quick else 100
    var: dict = {e: [] for e in ("mc", "qmc", "lower_cv", "upper_cv")}
    for L in Ls:
        for e in var:
            vals = [float(sliced_wasserstein(Xg, Yg, n_projections=L, estimator=e, seed=s, squared=True))
                    for s in range(reps)]
            var[e].append(np.var(vals))
    fig, ax = plt.subplots(figsize=(5, 4))
    for e, v in var.items():
        ax.loglog(Ls, v, "o-", label=e)
    ax.set_xlabel("L (directions)")
    ax.set_ylabel(r"variance of $\widehat{SW}_2^2$")
    ax.set_title(f"Gaussian-like clouds, d={d}")
    ax.legend()
    fig.tight_layout()
    p = outdir / "ot_sw_variance.png"
    fig.savefig(p, dpi=80)
    plt.close(fig)
    files.append(p.name)
    for e in ("qmc", "lower_cv", "upper_cv"):
        ratios = [m / v for m, v in zip(var["mc"], var[e])]
        lines.append(f"variance MC / {e:8s}: " + ", ".join(f"L={L}: {r:.1f}x" for L, r in zip(Ls, ratios)))

    # 3. Sinkhorn vs SNS convergence
    m = 300 if quick else 1000
    reg = 0.005
    x, y = rng.random((m, 2)), rng.random((m, 2))
    M = ((x[:, None] - y[None]) ** 2).sum(-1)
    a = np.full(m, 1.0 / m)
    t0 = time.perf_counter()
    rs = sinkhorn(a, a, M, reg, tol=1e-10, max_iter=20000, check_every=1)
    ts = time.perf_counter() - t0
    t0 = time.perf_counter()
    rn = sinkhorn_newton_sparse(a, a, M, reg, tol=1e-10, n_sinkhorn=20)
    tn = time.perf_counter() - t0
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.semilogy(np.arange(1, len(rs.errors) + 1), rs.errors, label=f"log-Sinkhorn ({rs.n_iter} it, {ts:.2f} s)")
    newton = rn.errors[-(rn.n_iter - 20) - 1:] if rn.n_iter > 20 else rn.errors
    ax.semilogy(np.arange(20, 20 + len(newton)), newton, "o-",
                label=f"SNS ({rn.n_iter} it, {tn:.2f} s)")
    ax.axvline(20, color="gray", ls=":", lw=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("L1 marginal error")
    ax.set_title(f"n = {m}, reg = {reg}")
    ax.legend()
    fig.tight_layout()
    p = outdir / "ot_sinkhorn_vs_sns.png"
    fig.savefig(p, dpi=80)
    plt.close(fig)
    files.append(p.name)
    lines.append(f"Sinkhorn vs SNS (n={m}, reg={reg}, tol 1e-10): {rs.n_iter} vs {rn.n_iter} iterations "
                 f"({rs.n_iter / max(rn.n_iter, 1):.1f}x fewer), {ts:.2f} s vs {tn:.2f} s, "
                 f"max |f_sinkhorn - f_sns| (centred) = {np.max(np.abs(rs.f - rs.f.mean() - rn.f + rn.f.mean())):.1e}")
    # 4. boxes: NWD against IoU
    lines += _boxes_showcase(outdir, quick)
    files.append("ot_boxes_nwd_vs_iou.png")
    # 5. point-cloud flow with the debiased Sinkhorn divergence against the biased OT_eps
    lines += _divergence_showcase(outdir, quick, rng)
    files.append("ot_divergence_flow.png")
    # 6. entropic barycenters of histograms
    lines += _barycenter_showcase(outdir, quick)
    files.append("ot_barycenter.png")
    lines.append("plots: " + ", ".join(files))
    return lines
