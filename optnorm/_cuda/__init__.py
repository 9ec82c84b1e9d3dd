"""CUDA kernels: one ``.cu`` file per domain, loaded with CuPy ``RawModule`` by :mod:`.loader`."""
