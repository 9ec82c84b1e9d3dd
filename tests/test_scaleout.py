"""Scale-out: Dask arrays run blockwise on a LocalCluster (processes) and match the in-memory result;
JAX sharded arrays keep their sharding through the JAX adapters under jit (2 host devices)."""
from __future__ import annotations

import numpy as np
import pytest

import optnorm
from optnorm.testing import assert_close

da = pytest.importorskip("dask.array", reason="dask is not installed (pip install optnorm[dask])")
distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=40)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _spd_batch(rng, n, d):
    a = rng.standard_normal((n, d, d + 3))
    return a @ np.swapaxes(a, -1, -2) / (d + 3) + 0.1 * np.eye(d)


def test_dask_row_ops_blockwise(client, rng):
    x = rng.standard_normal((4000, 96)).astype(np.float32)
    w = rng.standard_normal(96).astype(np.float32)
    dx = da.from_array(x, chunks=(1000, 96))
    for fn, args, kw in [(optnorm.norm.softmax, (), {"axis": -1}),
                         (optnorm.norm.log_softmax, (), {"axis": -1}),
                         (optnorm.norm.rms_norm, (w,), {}),
                         (optnorm.norm.layer_norm, (w,), {})]:
        lazy = fn(dx, *args, **kw)
        assert isinstance(lazy, da.Array), f"{fn.__name__} did not stay lazy on a Dask array"
        got = lazy.compute()
        assert_close(got, fn(x, *args, **kw), rtol=1e-6, atol=1e-6, err_msg=fn.__name__)


def test_dask_softmax_axis0_rechunks(client, rng):
    x = rng.standard_normal((64, 300))
    dx = da.from_array(x, chunks=(16, 100))  # the reduced axis is split: Dask must rechunk it
    assert_close(optnorm.norm.softmax(dx, axis=0).compute(), optnorm.norm.softmax(x, axis=0), rtol=1e-12)


def test_dask_bw_distances_blockwise(client, rng):
    A, B = _spd_batch(rng, 600, 8), _spd_batch(rng, 600, 8)
    dA, dB = da.from_array(A, chunks=(150, 8, 8)), da.from_array(B, chunks=(150, 8, 8))
    got = optnorm.spd.bw_distance(dA, dB)
    assert isinstance(got, da.Array)
    assert_close(got.compute(), optnorm.spd.bw_distance(A, B), rtol=1e-10)


def test_dask_sliced_wasserstein_over_pairs(client, rng):
    X = rng.standard_normal((8, 200, 3))
    Y = rng.standard_normal((8, 200, 3)) + 0.5
    dX, dY = da.from_array(X, chunks=(2, 200, 3)), da.from_array(Y, chunks=(2, 200, 3))
    got = optnorm.ot.sliced_wasserstein(dX, dY, n_projections=64, seed=3)
    assert isinstance(got, da.Array)
    want = np.array([optnorm.ot.sliced_wasserstein(X[i], Y[i], n_projections=64, seed=3) for i in range(8)])
    assert_close(got.compute(), want, rtol=1e-10)


def test_dask_optimizer_step_per_shard(client, rng):
    p = rng.standard_normal((4000, 50))
    g = rng.standard_normal((4000, 50))
    opt = optnorm.optim.adamw(lr=1e-2, weight_decay=0.1)
    dp, dg = da.from_array(p, chunks=(1000, 50)), da.from_array(g, chunks=(1000, 50))
    new_dp, _ = opt.step(dp, dg, opt.init(dp))
    new_p, _ = opt.step(p, g, opt.init(p))
    assert isinstance(new_dp, da.Array)
    assert_close(new_dp.compute(), new_p, rtol=1e-12)


def test_jax_sharding_kept_under_jit():
    jax = pytest.importorskip("jax")
    if jax.device_count() < 2:
        pytest.skip("needs 2 JAX devices (XLA_FLAGS=--xla_force_host_platform_device_count=2 before jax import)")
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    import optnorm.jax as onj

    mesh = Mesh(np.array(jax.devices()[:2]), ("rows",))
    sharding = NamedSharding(mesh, P("rows", None))
    x = jax.device_put(jnp.asarray(np.random.default_rng(0).standard_normal((64, 32))), sharding)
    w = jnp.ones(32)
    for f in (lambda a: onj.softmax(a, axis=-1), lambda a: onj.rms_norm(a, w), lambda a: onj.layer_norm(a, w)):
        y = jax.jit(f)(x)
        assert y.sharding.is_equivalent_to(sharding, y.ndim), f"sharding lost: {y.sharding}"
        g = jax.jit(jax.grad(lambda a: f(a).sum()))(x)
        assert g.sharding.is_equivalent_to(sharding, g.ndim)
