"""Numba kernels over contiguous NumPy buffers, each with a plain NumPy/Python reference twin
(`*_reference`) in the same module that the tests compare it with on random inputs."""
