"""optnorm's update rules as optax transformations (optnorm.jax.optax), under jax.jit."""
import jax
import jax.numpy as jnp
import optax

import optnorm.jax as onj

key = jax.random.PRNGKey(0)
X = jax.random.normal(key, (128, 8))
w_true = jnp.arange(8.0)
y = X @ w_true


def loss(params):
    return jnp.mean((X @ params["w"] + params["b"] - y) ** 2)


# optnorm keywords (lr, betas, ...), not optax's (learning_rate, b1); lr may be a schedule of the step count
tx = onj.optax.lion(lr=lambda t: 0.2 * 0.985 ** t)
params = {"w": jnp.zeros(8), "b": jnp.zeros(())}
state = tx.init(params)


@jax.jit
def train_step(params, state):
    grads = jax.grad(loss)(params)
    updates, state = tx.update(grads, state, params)    # params are required
    return optax.apply_updates(params, updates), state


for _ in range(200):
    params, state = train_step(params, state)
print(f"loss after 200 Lion steps: {float(loss(params)):.5f}")
print("w:", jnp.round(params["w"], 2))
