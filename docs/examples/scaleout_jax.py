"""A row-sharded JAX array keeps its sharding through optnorm's JAX adapters under jit."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import optnorm.jax as onj

devices = np.array(jax.devices())
mesh = Mesh(devices, ("rows",))
x = jax.device_put(jnp.ones((8 * len(devices), 128)), NamedSharding(mesh, P("rows", None)))
y = jax.jit(lambda a: onj.rms_norm(a, jnp.ones(128)))(x)
print("output sharding", y.sharding)
