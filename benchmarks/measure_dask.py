"""Measured Dask run quoted in docs/scaleout.rst: LocalCluster (2 worker processes) vs the in-memory NumPy path."""
import time, numpy as np, dask.array as da, distributed, optnorm
if __name__ == "__main__":
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40)
    client = distributed.Client(cluster)
    x = np.random.default_rng(0).standard_normal((400_000, 256)).astype(np.float32)
    dx = da.from_array(x, chunks=(50_000, 256)).persist(); distributed.wait(dx)
    optnorm.norm.softmax(x[:10])
    optnorm.norm.softmax(dx).sum().compute()  # warm up workers (Numba compile in each)
    t = time.perf_counter(); ref = optnorm.norm.softmax(x); t_mem = time.perf_counter() - t
    t = time.perf_counter(); got = optnorm.norm.softmax(dx).compute(); t_dask = time.perf_counter() - t
    print(f"softmax 400000x256 f32: in-memory {t_mem*1e3:.0f} ms, Dask LocalCluster(2 procs) {t_dask*1e3:.0f} ms, max abs diff {np.abs(got-ref).max():.1e}")
    rng = np.random.default_rng(1); a = rng.standard_normal((20_000, 16, 20)); A = a @ a.transpose(0, 2, 1) / 20 + 0.1 * np.eye(16)
    B = A[::-1].copy(); dA, dB = da.from_array(A, chunks=(5000, 16, 16)).persist(), da.from_array(B, chunks=(5000, 16, 16)).persist()
    optnorm.spd.bw_distance(dA, dB).compute()
    t = time.perf_counter(); r = optnorm.spd.bw_distance(A, B); t_mem = time.perf_counter() - t
    t = time.perf_counter(); g = optnorm.spd.bw_distance(dA, dB).compute(); t_dask = time.perf_counter() - t
    print(f"bw_distance 20000 pairs 16x16: in-memory {t_mem*1e3:.0f} ms, Dask LocalCluster(2 procs) {t_dask*1e3:.0f} ms, max rel diff {np.max(np.abs(g-r)/r):.1e}")
    client.close(); cluster.close()
