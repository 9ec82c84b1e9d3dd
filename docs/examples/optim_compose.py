"""Composing rules: gradient clipping, accumulation, EMA and Lookahead around any rule; schedules as lr."""
import numpy as np

import optnorm.optim as oo

rng = np.random.default_rng(0)
A = rng.standard_normal((40, 10))
b = rng.standard_normal(40)


def grad(x, rows):
    return A[rows].T @ (A[rows] @ x - b[rows]) / len(rows)


# clip the gradient's global norm, accumulate 4 micro-batches, then a RAdam step with a warmup-cosine schedule,
# and keep an EMA of the parameters for evaluation
rule = oo.ema(oo.chain(oo.clip_by_global_norm(5.0),
                       oo.accumulate(oo.radam(lr=oo.warmup_cosine(0.0, 0.05, 20, 400)), every=4)), decay=0.98)
x = np.zeros(10)
state = rule.init(x)
for k in range(1600):
    x, state = rule.step(x, grad(x, rng.choice(40, 8, replace=False)), state)
x_eval = rule.eval_params(x, state)
ref = np.linalg.lstsq(A, b, rcond=None)[0]
print(f"distance to least squares: last iterate {np.linalg.norm(x - ref):.4f}, EMA {np.linalg.norm(x_eval - ref):.4f}")

# the schedules are plain functions of the step, the same values as optax's
s = oo.one_cycle(100, peak_value=1.0)
print("one-cycle lr at steps 0, 30, 100:", [round(s(k), 6) for k in (0, 30, 100)])
