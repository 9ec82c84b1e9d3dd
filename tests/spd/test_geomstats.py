"""optnorm's SPD metrics against geomstats 2.8 (``SPDAffineMetric``, ``SPDLogEuclideanMetric``,
``SPDBuresWassersteinMetric``, ``FrechetMean``).

geomstats 2.8 needs numpy<2.4, which optnorm's environment does not have, so geomstats runs in its own virtual
environment: set ``OPTNORM_GEOMSTATS_PYTHON`` to that environment's Python (``python -m venv gs && gs/bin/pip
install geomstats "numpy<2.4"``); the test writes the inputs to an ``.npz``, runs geomstats there in a subprocess and
compares.  Without the variable the test is skipped, with that reason.
"""
from __future__ import annotations

import os
import subprocess
import textwrap

import numpy as np
import pytest

import optnorm.spd as spd
from optnorm.testing import assert_close

from .helpers import random_spd

GS_PYTHON = os.environ.get("OPTNORM_GEOMSTATS_PYTHON")

_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from geomstats.geometry.spd_matrices import (SPDMatrices, SPDAffineMetric, SPDLogEuclideanMetric,
                                                 SPDBuresWassersteinMetric)
    from geomstats.learning.frechet_mean import FrechetMean
    z = np.load(sys.argv[1])
    A, B, X = z["A"], z["B"], z["X"]
    out = {}
    for name, metric in (("airm", SPDAffineMetric), ("lem", SPDLogEuclideanMetric),
                         ("bw", SPDBuresWassersteinMetric)):
        sp = SPDMatrices(A.shape[-1], equip=False)
        sp.equip_with_metric(metric)
        g = sp.metric
        out[name + "_dist"] = np.array([g.dist(a, b) for a, b in zip(A, B)])
        out[name + "_log"] = np.stack([g.log(b, a) for a, b in zip(A, B)])
        V = out[name + "_log"]
        out[name + "_exp"] = np.stack([g.exp(v, a) for v, a in zip(V, A)])
        out[name + "_inner"] = np.array([g.inner_product(v, v, a) for v, a in zip(V, A)])
        if name != "bw":
            out[name + "_transport"] = np.stack([g.parallel_transport(v, a, end_point=b) for v, a, b in zip(V, A, B)])
            fm = FrechetMean(sp)
            fm.set(epsilon=1e-13, max_iter=2000)        # the defaults stop at ~1e-3 (gradient descent, 1e-4)
            out[name + "_mean"] = fm.fit(X).estimate_
    np.savez(sys.argv[2], **out)
""")


@pytest.mark.skipif(GS_PYTHON is None, reason="geomstats 2.8 needs numpy<2.4: set OPTNORM_GEOMSTATS_PYTHON to the "
                                              "Python of a separate environment with geomstats to run this oracle")
def test_metrics_match_geomstats(rng, tmp_path):
    A, B = random_spd(rng, (4,), 4), random_spd(rng, (4,), 4)
    X = random_spd(rng, (6,), 4)
    np.savez(tmp_path / "in.npz", A=A, B=B, X=X)
    (tmp_path / "gs.py").write_text(_SCRIPT)
    proc = subprocess.run([GS_PYTHON, str(tmp_path / "gs.py"), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = np.load(tmp_path / "out.npz")
    for name, g in (("airm", spd.airm()), ("lem", spd.lem()), ("bw", spd.bures_wasserstein())):
        V = g.log(A, B)
        assert_close(g.distance(A, B), ref[name + "_dist"], rtol=1e-9)
        assert_close(V, ref[name + "_log"], rtol=1e-8, atol=1e-10)
        assert_close(g.exp(A, V), ref[name + "_exp"], rtol=1e-8, atol=1e-10)
        assert_close(g.inner(A, V, V), ref[name + "_inner"], rtol=1e-8)
        if name != "bw":
            assert_close(g.parallel_transport(V, A, B), ref[name + "_transport"], rtol=1e-7, atol=1e-9)
            # geomstats' gradient descent stops ~1e-6 short of the mean even at epsilon 1e-13 (ours matches
            # pyRiemann's mean_riemann to 1e-10: test_metrics.py)
            assert_close(g.mean(X, tol=1e-12).mean, ref[name + "_mean"], rtol=1e-5)
