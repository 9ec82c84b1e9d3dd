"""optnorm's update rules as optax transformations (optnorm.jax.optax), under jax.jit."""
import jax
import jax.numpy as jnp
import optax

import optnorm.jax as onj
import optnorm.optim as oo

key = jax.random.PRNGKey(0)
X = jax.random.normal(key, (128, 8))
W_true = jnp.arange(24.0).reshape(8, 3) / 10
Y = X @ W_true


def loss(params):
    return jnp.mean((X @ params["w"] + params["b"] - Y) ** 2)


# optax's argument names work (learning_rate, b1, b2, eps, weight_decay, mask), and so do optnorm's (lr, betas);
# the usual split: Muon for the matrices, AdamW for everything else, with optax.partition
labels = {"w": "muon", "b": "adamw"}
tx = optax.partition({"muon": onj.optax.muon(learning_rate=oo.warmup_cosine(0.0, 0.05, 10, 300)),
                      "adamw": onj.optax.adamw(learning_rate=1e-2, b1=0.9, weight_decay=0.0)}, labels)
params = {"w": jnp.zeros((8, 3)), "b": jnp.zeros(3)}
state = tx.init(params)


@jax.jit
def train_step(params, state):
    grads = jax.grad(loss)(params)
    updates, state = tx.update(grads, state, params)    # params are required
    return optax.apply_updates(params, updates), state


for _ in range(300):
    params, state = train_step(params, state)             # compiled once
print(f"loss after 300 Muon/AdamW steps: {float(loss(params)):.5f}")

# any hyperparameter may be injected (and changed between steps) with optax.inject_hyperparams
inj = optax.inject_hyperparams(onj.optax.radam)(learning_rate=1e-2, b2=0.99)
p, s = jnp.zeros(8), None
s = inj.init(p)
for _ in range(3):
    u, s = jax.jit(inj.update)(jnp.ones(8), s, p)
    p = optax.apply_updates(p, u)
print("radam learning rate held in the state:", float(s.hyperparams["learning_rate"]))
