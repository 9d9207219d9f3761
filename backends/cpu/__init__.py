"""The CPU backends, one module per registry name (python, numpy, numba), each with its
private kernels beside it. Imported by the registry only when a backend is asked for."""
