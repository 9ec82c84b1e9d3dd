"""A tour of optnorm.norm: a tiny transformer-style forward pass on NumPy arrays.

Stable softmax and losses, normalization layers with explicit running statistics,
linear-time attention variants and a top-k mixture-of-experts gate.
"""
import numpy as np

import optnorm.norm as nn

rng = np.random.default_rng(0)
N, T, D, C = 4, 16, 32, 10            # batch, tokens, features, classes

# --- softmax family: huge logits do not overflow; fully masked rows follow a policy
logits = (rng.standard_normal((N, C)) * 1e4).astype(np.float32)
for method in ("safe", "online", "two_pass"):
    p = nn.softmax(logits, method=method)
    print(f"softmax[{method:8s}] row sums {p.sum(axis=-1).round(6)}")
masked = np.full((2, 5), -np.inf, np.float32)
masked[0, :2] = 0.0                   # row 1 fully masked
print("masked_row='nan' :", nn.softmax(masked)[1])
print("masked_row='zero':", nn.softmax(masked, masked_row="zero")[1])

# --- cross-entropy with torch semantics (classes on axis 1), label smoothing, PaLM z-loss
target = np.array([1, 3, -100, 7])    # -100 = ignore_index
ce = nn.cross_entropy(logits / 1e3, target, label_smoothing=0.1, z_loss=1e-4)
print("cross_entropy (1 ignored row):", float(ce))

# --- normalization layers
x = rng.standard_normal((N, T, D)).astype(np.float32)
gamma, beta = np.ones(D, np.float32), np.zeros(D, np.float32)
h = nn.layer_norm(x, gamma, beta)                      # over the last axis, biased variance
r = nn.rms_norm(x, gamma)                              # eps=None -> finfo(float32).eps
print("layer_norm mean/std:", float(h.mean()), float(h.std()))
print("rms_norm rms:", float(np.sqrt((r ** 2).mean(axis=-1)).mean()))

img = rng.standard_normal((8, 6, 5, 5))                # (N, C, H, W)
rm, rv = np.zeros(6), np.ones(6)
y, rm, rv = nn.batch_norm(img, rm, rv, training=True, momentum=0.1)   # returns new running stats
print("batch_norm running_mean[:3]:", rm[:3].round(4))
yi = nn.instance_norm(img)
yg = nn.group_norm(img, num_groups=3)
print("instance/group norm shapes:", yi.shape, yg.shape)

# --- attention: softmax-free variants, all linear (or sigmoid) in the sequence length
q, k, v = (rng.standard_normal((N, T, D)) for _ in range(3))
outs = {
    "sigmoid": nn.sigmoid_attention(q, k, v, causal=True),
    "linear": nn.linear_attention(q, k, v, causal=True),
    "inline": nn.inline_attention(q, k, v, causal=True),
    "favor+": nn.favor_attention(q, k, v, num_features=64, seed=0),
}
for name, o in outs.items():
    print(f"{name:8s} attention out {o.shape}, |O| = {np.linalg.norm(o):.3f}")

# --- mixture-of-experts gate: top-2 of 8 experts
router_logits = rng.standard_normal((T, 8))
gates = nn.topk_softmax(router_logits, k=2)
print("top-2 gate: nonzeros per token", (gates > 0).sum(axis=-1)[:5], "sums", gates.sum(axis=-1)[:3])

# --- metric learning: ArcFace-style cosine softmax with an angular margin
emb, W = rng.standard_normal((N, D)), rng.standard_normal((C, D))   # features (N, D), class weights (C, D)
labels = np.array([0, 1, 2, 3])
for mt in ("additive", "angular"):
    loss = nn.cosine_softmax_loss(emb, W, labels, scale=30.0, margin=0.2, margin_type=mt)
    print(f"cosine_softmax_loss[{mt}]: {float(loss):.4f}")

# --- continual learning (AdaB2N): task-balanced batch statistics
task_ids = np.array([0, 0, 0, 0, 0, 0, 1, 1])          # replay batch dominated by task 0
w = nn.task_balanced_weights(task_ids, num_tasks=2)
eta = nn.adab2n_momentum(10, 0.1, 0.5)
y, rm, rv = nn.batch_norm(img, rm, rv, sample_weight=w, momentum=float(eta))
print("task-balanced weights:", np.round(w, 3), "AdaB2N momentum at step 10:", round(float(eta), 4))
