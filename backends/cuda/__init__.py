"""The CUDA backends, one module per registry name (numba_cuda for "numba-cuda", cupy),
their kernels and the shared GPU base (``_gpu``). The only package that imports cupy or
numba.cuda; imported by the registry only when a backend is asked for."""
