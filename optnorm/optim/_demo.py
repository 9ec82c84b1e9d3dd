"""Showcase: loss curves of optnorm's optimizers training a small MLP on scikit-learn's bundled digits."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _data():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    tr, te = idx[:1400], idx[1400:]
    return X[tr], y[tr], X[te], y[te]


def _init(rng, hidden=64):
    return {"W1": rng.standard_normal((hidden, 64)) / 8.0, "b1": np.zeros(hidden),
            "W2": rng.standard_normal((10, hidden)) / np.sqrt(hidden), "b2": np.zeros(10)}


def _forward(p, X):
    H = np.tanh(X @ p["W1"].T + p["b1"])
    Z = H @ p["W2"].T + p["b2"]
    return H, Z


def loss_grad(p, X, y):
    """Mean cross-entropy of the MLP and its gradient (manual backprop, float64)."""
    H, Z = _forward(p, X)
    Z = Z - Z.max(1, keepdims=True)
    P = np.exp(Z)
    P /= P.sum(1, keepdims=True)
    n = len(y)
    loss = -np.mean(np.log(P[np.arange(n), y]))
    D = P.copy()
    D[np.arange(n), y] -= 1.0
    D /= n
    dH = (D @ p["W2"]) * (1 - H * H)
    return loss, {"W2": D.T @ H, "b2": D.sum(0), "W1": dH.T @ X, "b1": dH.sum(0)}


def _accuracy(p, X, y):
    return float(np.mean(_forward(p, X)[1].argmax(1) == y))


def _rules():
    """Two groups: the standard rules (torch.optim / optax have them) and optnorm's own."""
    import optnorm.optim as oo

    fb = oo.adamw(lr=1e-2, weight_decay=0.0)
    standard = {
        "sgd (momentum 0.9)": (oo.sgd(lr=0.2, momentum=0.9), False),
        "adamw": (oo.adamw(lr=1e-2), False),
        "clip 1.0 + adamw": (oo.chain(oo.clip_by_global_norm(1.0), oo.adamw(lr=1e-2)), False),
        "rmsprop": (oo.rmsprop(lr=2e-3), False),
        "adagrad": (oo.adagrad(lr=5e-2), False),
        "adadelta": (oo.adadelta(lr=1.0), False),
        "adamax": (oo.adamax(lr=1e-2), False),
        "nadam": (oo.nadam(lr=1e-2), False),
        "radam": (oo.radam(lr=1e-2), False),
        "adafactor": (oo.adafactor(lr=1e-2), False),
        "lamb": (oo.lamb(lr=1e-2), False),
        "lars": (oo.lars(lr=1.0, trust_coefficient=0.01), False),
        "lion": (oo.lion(lr=2e-3), False),
        "schedule-free adamw": (oo.schedule_free_adamw(lr=1e-2), False),
        "soap": (oo.soap(lr=1e-2, weight_decay=0.0), False),
    }
    own = {
        "adamw (reference)": (oo.adamw(lr=1e-2), False),
        "adamp": (oo.adamp(lr=1e-2), False),
        "fadam": (oo.fadam(lr=1e-2, weight_decay=0.0), False),
        "muon": (oo.muon(lr=0.05, weight_decay=0.0, fallback=fb), False),
        "normuon": (oo.normuon(lr=0.05, fallback=fb), False),
        "hybrid_auon": (oo.hybrid_auon(lr=0.05, fallback=fb), False),
        "conda": (oo.conda(lr=1e-2, update_proj_gap=20, fallback=fb), False),
        "swan": (oo.swan(lr=1e-2, fallback=fb), False),
        "sinkgd": (oo.sinkgd(lr=1e-2, fallback=fb), False),
        "dct_lowrank (adam, r=8)": (oo.dct_lowrank(oo.adam(lr=1e-2), rank=8), False),
        "adahessian": (oo.adahessian(lr=0.1), True),
    }
    return {"standard rules (torch.optim / optax)": standard, "optnorm's own rules": own}


def _train(rule, needs_hvp, data, steps, batch):
    Xtr, ytr, Xte, yte = data
    rng = np.random.default_rng(0)
    p = _init(rng)
    st = rule.init(p)
    losses = []
    t0 = time.perf_counter()
    for k in range(steps):
        sel = rng.choice(len(ytr), batch, replace=False)
        Xb, yb = Xtr[sel], ytr[sel]
        loss, g = loss_grad(p, Xb, yb)
        losses.append(loss)
        kw = {}
        if needs_hvp:
            def hvp(v, p=p, Xb=Xb, yb=yb, h=1e-4):
                gp = loss_grad({k: p[k] + h * v[k] for k in p}, Xb, yb)[1]
                gm = loss_grad({k: p[k] - h * v[k] for k in p}, Xb, yb)[1]
                return {k: (gp[k] - gm[k]) / (2 * h) for k in p}
            kw["hvp"] = hvp
        p, st = rule.step(p, g, st, **kw)
    ms = (time.perf_counter() - t0) / steps * 1e3
    pe = rule.eval_params(p, st)            # the schedule-free average (the parameters themselves for the others)
    return losses, loss_grad(pe, Xtr, ytr)[0], _accuracy(pe, Xte, yte), ms


def showcase(outdir: Path, quick: bool) -> list[str]:
    import sys

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    data = _data()
    steps = 12 if quick else 300
    batch = 128 if quick else 256
    groups = _rules()
    total = sum(len(g) for g in groups.values())
    lines = [f"MLP 64-64-10 on sklearn digits (1400 train / 397 test), {steps} steps, batch {batch}",
             f"{'optimizer':36s} {'final loss':>10s} {'test acc':>9s} {'ms/step':>8s}"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 7.2), sharey=True)
    t_start, done = time.perf_counter(), 0
    for ax, (title, rules) in zip(axes, groups.items()):
        colors = getattr(plt.get_cmap("tab10"), "colors")
        for i, (name, (rule, needs_hvp)) in enumerate(rules.items()):
            losses, final, acc, ms = _train(rule, needs_hvp, data, steps, batch)
            done += 1
            el = time.perf_counter() - t_start
            print(f"  optim demo: {done}/{total} {name} ({el:.0f} s, about {el / done * (total - done):.0f} s left)",
                  file=sys.stderr, flush=True)
            lines.append(f"{name:36s} {final:10.4f} {acc:9.3f} {ms:8.2f}")
            w = max(1, steps // 30)
            sm = np.convolve(losses, np.ones(w) / w, mode="valid")
            ax.plot(np.arange(len(sm)) + w - 1, sm, label=name, color=colors[i % 10],
                    linestyle=("-", "--", ":")[i // 10], linewidth=1.6)
        ax.set_yscale("log")
        ax.set_xlabel("step (iterations)")
        ax.set_title(title)
        ax.legend(fontsize=8.5, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
        ax.grid(True, which="both", alpha=0.25)
    axes[0].set_ylabel("minibatch cross-entropy (nats, moving average)")
    fig.suptitle(f"optnorm.optim training an MLP 64-64-10 on sklearn digits ({steps} steps, batch {batch})")
    fig.tight_layout()
    path = outdir / "optim_digits_loss.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    lines.append(f"plot: {path.name}")
    return lines
