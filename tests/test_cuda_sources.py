"""Every CUDA source compiles with ``nvcc -ptx``, each declared name expression instantiated (CPU-only CI).

The runtime behaviour of the kernels is tested in each domain's tests on the
``cupy`` backend, which needs a GPU; this check needs only the compiler.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from optnorm._cuda import loader

NVCC = shutil.which("nvcc")
SOURCES = loader.sources()


def test_sources_declare_their_kernels():
    for domain, path in SOURCES.items():
        assert loader.name_expressions(domain), f"{path.name} declares no '// optnorm-kernel:' expression"


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH: CUDA sources are not compile-checked")
@pytest.mark.parametrize("domain", sorted(SOURCES) or ["<none>"])
def test_nvcc_compiles(domain, tmp_path):
    if domain == "<none>":
        pytest.skip("no .cu sources in optnorm/_cuda yet")
    src = SOURCES[domain]
    exprs = loader.name_expressions(domain)
    wrapper = tmp_path / f"check_{domain}.cu"
    body = "\n".join(f"    (void)&{e};" for e in exprs)
    # the text NVRTC gets: the source with its shared headers inlined by the loader
    wrapper.write_text(f'{loader.source_text(domain)}\nvoid optnorm_instantiate_all() {{\n{body}\n}}\n')
    cmd = [NVCC, "-ptx", *loader.OPTIONS, "-o", str(tmp_path / f"{domain}.ptx"), str(wrapper)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"nvcc failed for {src.name}:\n{proc.stderr[-4000:]}"
