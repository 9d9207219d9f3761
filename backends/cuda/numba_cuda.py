"""Backend "numba-cuda": a grid-stride CUDA kernel written with Numba.

The kernel body is the same element-wise update as every other backend (backends.scalars);
int8 state (``state_dtype="int8"``) has a kernel of its own (backends.cuda._numba_cuda_kernels).
With NUMBA_ENABLE_CUDASIM=1 set before numba is imported it runs under Numba's CUDA
simulator, which is how CI checks its logic on machines without a GPU.
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..formats import BFLOAT16
from ..scalars import StepScalars
from ._gpu import MAX_INT8_GRID, GpuBackend

__all__ = ["NumbaCudaBackend", "numba_event_timer", "low_precision_launch"]

THREADS_PER_BLOCK = 256


def _simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


class NumbaCudaBackend(GpuBackend):
    """Device-resident Adam through ``numba.cuda``; one launch per step."""

    name = "numba-cuda"
    supports_int8_state = True
    supports_low_precision = True

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            from numba import cuda
        except ImportError as exc:
            return f"numba-cuda is not installed ({exc}); pip install -e '.[cuda12]'"
        try:
            if not cuda.is_available():
                return "no CUDA device or driver found by numba.cuda"
        except Exception as exc:  # the driver can fail in many ways; report which
            return f"CUDA driver error: {exc}"
        return None

    def __init__(self):
        from numba import cuda

        from . import _numba_cuda_kernels

        self._cuda = cuda
        self._kernels = _numba_cuda_kernels
        self.simulated = _simulated()
        self.array_type = _device_array_type(cuda)
        self.compile_seconds = self._timed_warm_up()

    def asarray(self, a):
        a = np.ascontiguousarray(a)
        if a.dtype == BFLOAT16:  # the buffer protocol has no bfloat16: copy its bits
            return self._cuda.to_device(a.view(np.uint16)).view(BFLOAT16)
        return self._cuda.to_device(a)

    def empty(self, n, dtype):
        if np.dtype(dtype) == BFLOAT16:
            return self._cuda.device_array(n, dtype=np.uint16).view(BFLOAT16)
        return self._cuda.device_array(n, dtype=dtype)

    def synchronize(self) -> None:
        self._cuda.synchronize()

    def _is_writeable(self, x) -> bool:
        return True

    def _is_contiguous(self, x) -> bool:
        return bool(x.is_c_contiguous())

    def address(self, a) -> int:
        if self.simulated:
            return a.__array_interface__["data"][0]
        return a.__cuda_array_interface__["data"][0]

    def span(self, first, n):
        if self.simulated:
            import ctypes

            from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

            buffer = (ctypes.c_byte * (n * first.dtype.itemsize)).from_address(self.address(first))
            return FakeCUDAArray(np.frombuffer(buffer, dtype=first.dtype))
        interface = {"shape": (n,), "typestr": first.dtype.str, "strides": None,
                     "data": (self.address(first), False), "version": 3}
        return self._cuda.from_cuda_array_interface(interface, owner=first, sync=False)

    def event_timer(self):
        return numba_event_timer(self._cuda)

    def _launch(self, p, g, m, v, vmax, scalars, dtype):
        n = p.size
        if n == 0:
            return
        blocks = min(math.ceil(n / THREADS_PER_BLOCK), 1024)
        args = tuple(dtype.type(x) for x in scalars.floats())
        kernel = self._kernels.adam_amsgrad if vmax is not None else self._kernels.adam
        extra = (vmax,) if vmax is not None else ()
        kernel[blocks, THREADS_PER_BLOCK](p, g, m, v, *extra, *args, scalars.use_l2)

    def _launch_int8(self, p, g, moments, scalars):
        (mc, ms), (vc, vs), vmax = moments
        args = tuple(np.float32(x) for x in scalars.floats())
        kernels = self._kernels
        kernel, extra = ((kernels.adam_int8, ()) if vmax is None
                         else (kernels.adam_int8_amsgrad, vmax))
        kernel[min(ms.size, MAX_INT8_GRID), kernels.INT8_THREADS](
            p, g, mc, ms, vc, vs, *extra, *args, scalars.use_l2)

    def _update_low_precision(self, p, g, m, v, vmax, master, compensation, cfg, t, key,
                              lr=None) -> None:
        kernel, arguments = low_precision_launch(
            self._kernels, (p, g, m, v, vmax, master, compensation), key,
            StepScalars.for_step(cfg, t, lr))
        kernel[min(math.ceil(p.size / THREADS_PER_BLOCK), 1024), THREADS_PER_BLOCK](*arguments)


def low_precision_launch(kernels, tensors, key, scalars) -> tuple:
    """(kernel, arguments) of one low-precision launch: the kernel
    (``kernels.low_precision_kernel``) specialized for the formats of ``tensors`` (p, g,
    m, v, vmax, master, compensation; bfloat16 as uint16 bits, None where unused) and the
    rounding they and ``key`` (None without stochastic rounding) imply, and its arguments
    with ``scalars``' floats. An unused array is passed as p, which that kernel never
    touches in its place."""
    p, g, m, v, vmax, master, compensation = tensors
    rounding = (kernels.LP_MASTER if master is not None else
                kernels.LP_KAHAN if compensation is not None else
                kernels.LP_STOCHASTIC if key is not None else kernels.LP_NEAREST)
    kernel = kernels.low_precision_kernel(*(bool(a.dtype == np.uint16) for a in (p, g, m)),
                                          rounding, vmax is not None)
    arrays = tuple(p if a is None else a for a in tensors)
    return kernel, (*arrays, key or 0, *(np.float32(x) for x in scalars.floats()),
                    scalars.use_l2)


def numba_event_timer(cuda):
    """GpuBackend.event_timer with numba.cuda's events, on the default stream (where the
    kernels launch); None under the CUDA simulator, which has no device clock (the host
    clock times it)."""
    if _simulated():
        return None
    begin, end = cuda.event(timing=True), cuda.event(timing=True)

    def stop() -> float:
        end.record()
        end.synchronize()
        return cuda.event_elapsed_time(begin, end) / 1e3

    return begin.record, stop


def _device_array_type(cuda):
    if _simulated():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    return DeviceNDArray
