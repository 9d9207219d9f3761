"""Backend "cupy": one fused CUDA C kernel per step, launched through CuPy.

The kernel (backends.cuda._cupy_kernels) is the C spelling of the element-wise update every
backend shares (backends.scalars), compiled by NVRTC without flush-to-zero (CuPy's own
kernel classes always add ``-ftz=true``) for this GPU's architecture; the step's scalars
are passed as arguments, so nothing is recompiled between steps and no device memory is
allocated. int8 state (``state_dtype="int8"``) has a kernel of its own in the same module,
and so has each combination of low-precision formats (``backends.low_precision_step``):
those are compiled when a state is made for them, or else on the step that first needs
them, and cached on the backend. CuPy before v14 has no bfloat16 arrays: a bfloat16 array
is a bfloat16 view of uint16 device memory (CuPy views and copies reinterpret bytes; no
CuPy kernel runs on it), which ``to_numpy`` returns as ml_dtypes.bfloat16.
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..config import AdamConfig
from ..formats import BFLOAT16, uses_low_precision
from ..scalars import StepScalars
from ..validation import FLOAT_DTYPES, as_list
from . import _cupy_kernels
from ._gpu import MAX_INT8_GRID, GpuBackend

__all__ = ["CupyBackend", "cupy_event_timer"]

THREADS_PER_BLOCK = 256


class CupyBackend(GpuBackend):
    """Device-resident Adam through CuPy; one launch per step."""

    name = "cupy"
    supports_int8_state = True
    supports_low_precision = True

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import cupy
        except ImportError as exc:
            return f"cupy is not installed ({exc}); pip install -e '.[cuda12]' or '.[cuda13]'"
        try:
            from cuda.bindings import nvrtc  # noqa: F401  (compiles the kernel)
        except ImportError as exc:
            return (f"NVRTC's Python bindings are not installed ({exc}); "
                    "pip install -e '.[cuda12]' or '.[cuda13]'")
        try:
            if cupy.cuda.runtime.getDeviceCount() < 1:
                return "no CUDA device found by cupy"
        except Exception as exc:  # CUDARuntimeError and friends: report which
            return f"CUDA runtime error: {exc}"
        return None

    def __init__(self):
        import cupy

        self._cupy = cupy
        self.array_type = cupy.ndarray
        start = time.perf_counter()
        self._arch = cupy.cuda.Device().compute_capability
        self._kernels = {}  # a Function keeps its Module loaded
        for dtype in FLOAT_DTYPES:
            for amsgrad in (False, True):
                self._kernels[dtype, amsgrad] = self._load(
                    _cupy_kernels.compile_kernel(dtype, amsgrad, self._arch),
                    _cupy_kernels.kernel_name(dtype, amsgrad))
        for amsgrad in (False, True):
            self._kernels["int8", amsgrad] = self._load(
                _cupy_kernels.compile_int8_kernel(amsgrad, self._arch),
                _cupy_kernels.int8_kernel_name(amsgrad))
        self.compile_seconds = time.perf_counter() - start + self._timed_warm_up()

    def _load(self, cubin: bytes, name: str):
        """The kernel ``name`` of ``cubin``, loaded on the current device."""
        module = self._cupy.cuda.function.Module()
        module.load(cubin)
        return module.get_function(name)

    def compile_count(self) -> int:
        """Kernels compiled so far (a timed step must leave it unchanged)."""
        return len(self._kernels)

    def asarray(self, a):
        if isinstance(a, np.ndarray) and a.dtype == BFLOAT16:  # CuPy before v14 makes no
            return self._cupy.asarray(a.view(np.uint16)).view(BFLOAT16)  # bfloat16 array
        return self._cupy.asarray(a)

    def empty(self, n, dtype):
        if np.dtype(dtype) == BFLOAT16:
            return self._cupy.empty(n, dtype=np.uint16).view(BFLOAT16)
        return self._cupy.empty(n, dtype=dtype)

    def init_state(self, params, cfg=None):
        """``Backend.init_state``, and for low-precision params the kernels their steps
        will launch compiled now (``compile_seconds``), not in a step."""
        state = super().init_state(params, cfg)
        cfg, params = cfg or AdamConfig(), as_list(params, "params")
        if uses_low_precision(cfg, params, None):
            start = time.perf_counter()
            for dtype in dict.fromkeys(np.dtype(p.dtype) for p in params):
                for variant in _cupy_kernels.step_variants(dtype, cfg):
                    self._low_precision_kernel(variant)
            self.compile_seconds += time.perf_counter() - start
        return state

    def synchronize(self) -> None:
        self._cupy.cuda.get_current_stream().synchronize()

    def _is_writeable(self, x) -> bool:
        return True

    def address(self, a) -> int:
        return a.data.ptr

    def span(self, first, n):
        return self._cupy.ndarray((n,), dtype=first.dtype, memptr=first.data)

    def event_timer(self):
        return cupy_event_timer(self._cupy)

    def _launch(self, p, g, m, v, vmax, scalars, dtype):
        n = p.size
        if n == 0:
            return
        blocks = min(math.ceil(n / THREADS_PER_BLOCK), 1024)
        arrays = (p, g, m, v) if vmax is None else (p, g, m, v, vmax)
        pointers = tuple(a.data for a in arrays)  # MemoryPointer: passed as a device pointer
        args = tuple(dtype.type(x) for x in scalars.floats())
        kernel = self._kernels[dtype, vmax is not None]
        kernel((blocks,), (THREADS_PER_BLOCK,),
               (*pointers, *args, np.bool_(scalars.use_l2), np.int64(n)))

    def _launch_int8(self, p, g, moments, scalars):
        (mc, ms), (vc, vs), vmax = moments
        arrays = (p, g, mc, ms, vc, vs) + (() if vmax is None else vmax)
        args = tuple(np.float32(x) for x in scalars.floats())
        kernel = self._kernels["int8", vmax is not None]
        kernel((min(ms.size, MAX_INT8_GRID),), (_cupy_kernels.INT8_THREADS,),
               (*(a.data for a in arrays), *args, np.bool_(scalars.use_l2), np.int64(p.size)))

    def _low_precision_kernel(self, variant):
        """The loaded kernel of a low-precision variant, compiled on first use."""
        kernel = self._kernels.get(variant)
        if kernel is None:
            kernel = self._kernels[variant] = self._load(
                _cupy_kernels.compile_low_precision_kernel(variant, self._arch), variant.name)
        return kernel

    def _update_low_precision(self, p, g, m, v, vmax, master, compensation, cfg, t, key,
                              lr=None) -> None:
        variant = _cupy_kernels.low_precision_variant(p, g, m, vmax, master, compensation, key)
        scalars = StepScalars.for_step(cfg, t, lr)
        blocks = min(math.ceil(p.size / THREADS_PER_BLOCK), 1024)
        pointers = (None if a is None else a.data  # None: a NULL pointer
                    for a in (p, g, m, v, vmax, master, compensation))
        self._low_precision_kernel(variant)(
            (blocks,), (THREADS_PER_BLOCK,),
            (*pointers, np.uint32(key or 0), *(np.float32(x) for x in scalars.floats()),
             np.bool_(scalars.use_l2), np.int64(p.size)))


def cupy_event_timer(cupy):
    """GpuBackend.event_timer with CuPy's events, on its current stream."""
    begin, end = cupy.cuda.Event(), cupy.cuda.Event()

    def stop() -> float:
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(begin, end) / 1e3

    return begin.record, stop
