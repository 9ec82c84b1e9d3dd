"""Showcase of optnorm.ot: a sliced-Wasserstein gradient flow, estimator variances, Sinkhorn vs SNS convergence,
NWD against IoU for boxes.

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
    fig, axes = plt.subplots(1, len(flows["mc"][1]) + 1, figsize=(4 * (len(flows["mc"][1]) + 1), 4))
    for i, S in enumerate(flows["mc"][1]):
        axes[i].scatter(Y[:, 0], Y[:, 1], s=2, c="tab:orange", alpha=0.4)
        axes[i].scatter(S[:, 0], S[:, 1], s=2, c="tab:blue")
        axes[i].set_title(f"step {i * max(1, steps // 4)}")
        axes[i].set_aspect("equal")
    ax = axes[-1]
    for est, (_, _, vals, _) in flows.items():
        ax.semilogy(vals, label=est)
    ax.set_xlabel("step")
    ax.set_ylabel(r"$\widehat{SW}_2^2$")
    ax.legend()
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
    lines.append("plots: " + ", ".join(files))
    return lines
