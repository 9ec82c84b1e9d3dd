"""Quick start through the JAX adapter: custom_vjp ops under jit, and an optax transformation."""
import jax
import jax.numpy as jnp
import optax

import optnorm.jax as onj

x = jnp.linspace(-3.0, 3.0, 12).reshape(3, 4)
g = jax.jit(jax.grad(lambda a: onj.log_softmax(a, axis=-1)[:, 0].sum()))(x)
print("gradient of log_softmax", g)

params = {"w": jnp.zeros((4,))}
tx = onj.optax.adamw(lr=1e-2)
state = tx.init(params)
grads = {"w": jnp.ones((4,))}
updates, state = jax.jit(tx.update)(grads, state, params)
params = optax.apply_updates(params, updates)
print("params after one step", params["w"])
