"""The roofline kernels in Numba CUDA (``harness.bench.roofline``'s GPU fallbacks without
CuPy, and the training formats' streams): kernels at module level, so the CUDA
simulator runs them too. Each function takes host arrays, puts them on the device and
returns (step, sync, timer) with a CUDA-event timer."""
from __future__ import annotations

import numpy as np
from numba import cuda

from backends.cpu._numba_low_precision_kernels import stream_element
from backends.cuda.numba_cuda import numba_event_timer

__all__ = ["numba_cuda_roofline", "numba_cuda_int8_roofline", "numba_cuda_format_roofline"]

THREADS = 256


@cuda.jit
def _roofline(p, g, m, v):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = g[i]
        p[i] += gi
        m[i] += gi
        v[i] += gi


@cuda.jit
def _int8_roofline(p, g, mc, vc, ms, vs):
    for b in range(cuda.grid(1), ms.size, cuda.gridsize(1)):
        ms[b] += np.float32(1)
        vs[b] += np.float32(1)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        p[i] += g[i]
        mc[i] += 1
        vc[i] += 1


_stream_element = cuda.jit(device=True, inline=True)(stream_element)


@cuda.jit
def _format_streams(w, g, m, v, extra, out):
    """``roofline_streams`` of the CPU, its element function compiled for the GPU."""
    with_extra, with_out = extra.size == w.size, out.size == w.size
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        _stream_element(w, g, m, v, extra, out, i, with_extra, with_out)


def _launch(kernel, host: tuple, n: int):
    arrays = tuple(cuda.to_device(a) for a in host)
    blocks = min((n + THREADS - 1) // THREADS, 1024) or 1
    return ((lambda: kernel[blocks, THREADS](*arrays)), cuda.synchronize,
            numba_event_timer(cuda))


def numba_cuda_roofline(host: tuple):
    """The roofline over host (p, g, m, v)."""
    return _launch(_roofline, host, host[0].size)


def numba_cuda_int8_roofline(host: tuple):
    """The int8 streams over host (p, g, m codes, v codes, m scales, v scales)."""
    return _launch(_int8_roofline, host, host[0].size)


def numba_cuda_format_roofline(host: tuple):
    """A training format's streams over host (w, g, m, v, extra, out), unsigned bits."""
    return _launch(_format_streams, host, host[0].size)
