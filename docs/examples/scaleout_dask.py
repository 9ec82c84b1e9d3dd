"""Row softmax and BW distances on Dask arrays: lazy, blockwise, NumPy/Numba path inside each chunk."""
import dask.array as da
import numpy as np

import optnorm

x = da.random.default_rng(0).standard_normal((100_000, 256), chunks=(10_000, 256)).astype(np.float32)
p = optnorm.norm.softmax(x, axis=-1)          # a lazy Dask array
print("row sums", p.sum(axis=-1)[:3].compute())

rng = np.random.default_rng(1)
a = rng.standard_normal((2_000, 8, 12))
A = da.from_array(a @ a.transpose(0, 2, 1) / 12 + 0.1 * np.eye(8), chunks=(500, 8, 8))
d = optnorm.spd.bw_distance(A, A[::-1])        # 2000 distances, four chunks
print("mean BW distance", d.mean().compute())
