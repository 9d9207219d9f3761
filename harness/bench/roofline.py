"""The roofline: Adam's memory streams with trivial arithmetic, measured in the same run.

Read p, g, m, v and write p, m, v (``p += g; m += g; v += g``): the same bytes as an Adam
step (docs/design.md, "The bytes model": 28 B per float32 element), so no Adam kernel can beat it by more than
noise, and ``gb_per_s / roofline_gb_per_s`` says how close to the memory limit a kernel is.
CPU: a Numba parallel kernel. GPU: a CuPy elementwise kernel (or Numba CUDA without CuPy);
the training formats' streams on a GPU: Numba CUDA.
With int8 state (state "int8", CPU only) the streams are those of ``backends.int8_codec``:
read and write p, uint8 m and v codes and their per-block float32 scales; read g.
"""
from __future__ import annotations

import numpy as np

__all__ = ["format_roofline", "roofline_arrays", "roofline_step", "roofline_unavailable_reason"]


def roofline_unavailable_reason(device: str) -> str | None:
    """None when a roofline kernel can run on ``device`` here, else why not."""
    from backends import list_backends

    names = {"cpu": ("numba",), "cuda": ("cupy", "numba-cuda")}[device]
    rows = [r for r in list_backends() if r.name in names]
    if any(r.available for r in rows):
        return None
    return "; ".join(f"{r.name}: {r.reason}" for r in rows)


def roofline_arrays(n: int, dtype) -> tuple[np.ndarray, ...]:
    """Host (p, g, m, v) for the roofline: ones, and a zero g, so values never change.

    g is written, not made by np.zeros: untouched pages all map to the OS's one zero page,
    which is read from cache, and the ceiling would count bytes that never came from
    memory (it ran 20% faster that way here)."""
    p, m, v = (np.ones(n, dtype) for _ in range(3))
    return p, np.full(n, 0.0, dtype), m, v


def _cpu(n, dtype):
    from backends.cpu import _numba_kernels

    _numba_kernels.compile_all()
    p, g, m, v = roofline_arrays(n, dtype)
    return (lambda: _numba_kernels.roofline_flat(p, g, m, v)), (lambda: None)


def _gpu(n, dtype):
    from backends.cuda.cupy import cupy_event_timer

    try:
        import cupy
    except ImportError:
        from .gpu_roofline import numba_cuda_roofline

        return numba_cuda_roofline(roofline_arrays(n, dtype))
    kernel = cupy.ElementwiseKernel("T g", "T p, T m, T v", "p += g; m += g; v += g",
                                    "adam_roofline")
    p, g, m, v = (cupy.asarray(a) for a in roofline_arrays(n, dtype))
    stream = cupy.cuda.get_current_stream()
    return (lambda: kernel(g, p, m, v)), stream.synchronize, cupy_event_timer(cupy)


def _cpu_int8(n):
    from backends.cpu import _numba_int8_kernels

    _numba_int8_kernels.compile_all()
    arrays = _int8_arrays(n)
    return (lambda: _numba_int8_kernels.roofline_int8(*arrays)), (lambda: None)


def _int8_arrays(n):
    """Host (p, g, m codes, v codes, m scales, v scales) of the int8 roofline."""
    from backends.int8_codec import n_blocks

    p, g, _, _ = roofline_arrays(n, np.float32)
    return (p, g, np.ones(n, np.uint8), np.ones(n, np.uint8),
            np.ones(n_blocks(n), np.float32), np.ones(n_blocks(n), np.float32))


def _gpu_int8(n):
    """The int8 streams on a GPU (read p, g, codes and scales; write p, codes, scales),
    CuPy's elementwise kernels, or Numba CUDA's where CuPy is missing."""
    try:
        import cupy
    except ImportError:
        from .gpu_roofline import numba_cuda_int8_roofline

        return numba_cuda_int8_roofline(_int8_arrays(n))
    from backends.cuda.cupy import cupy_event_timer

    elements = cupy.ElementwiseKernel("float32 g", "float32 p, uint8 mc, uint8 vc",
                                      "p += g; mc += 1; vc += 1", "adam_roofline_int8")
    scales = cupy.ElementwiseKernel("", "float32 ms, float32 vs", "ms += 1; vs += 1",
                                    "adam_roofline_int8_scales")
    p, g, mc, vc, ms, vs = (cupy.asarray(a) for a in _int8_arrays(n))

    def step():
        elements(g, p, mc, vc)
        scales(ms, vs)

    return step, cupy.cuda.get_current_stream().synchronize, cupy_event_timer(cupy)


def roofline_step(n: int, dtype, device: str = "cpu", state: str = "full"):
    """(step, sync) running the roofline kernel over ``n`` elements of ``dtype``; on a GPU
    (step, sync, timer) with a CUDA-event timer. With state "int8": the int8 streams,
    float32 only."""
    if state == "int8":
        if np.dtype(dtype) != np.float32:
            raise ValueError("the int8 roofline runs for float32 only")
        return _cpu_int8(n) if device == "cpu" else _gpu_int8(n)
    return (_cpu if device == "cpu" else _gpu)(n, np.dtype(dtype))


def format_roofline(fmt, n: int, device: str = "cpu"):
    """(step, sync) of training format ``fmt``'s (``harness.core.formats``) roofline over
    ``n`` elements (bits as unsigned ints); on a GPU (step, sync, timer), Numba CUDA's
    kernel over device arrays."""
    from backends.low_precision_step import tensor_layout

    cfg = fmt.config()
    layout = tensor_layout(fmt.dtype, cfg)
    bits = {2: np.uint16, 4: np.uint32}

    def ones(dtype):
        return np.ones(n, bits[np.dtype(dtype).itemsize])

    none = np.zeros(0, np.uint16)
    w = ones(np.float32) if cfg.master_weights else ones(fmt.dtype)
    g = np.full(n, 0, bits[fmt.dtype.itemsize])  # written: not the OS's shared zero page
    m, v = ones(layout["exp_avg"]), ones(layout["exp_avg_sq"])
    extra = ones(fmt.dtype) if "compensation" in layout else none
    out = ones(fmt.dtype) if cfg.master_weights else none
    if device == "cuda":
        from .gpu_roofline import numba_cuda_format_roofline

        return numba_cuda_format_roofline((w, g, m, v, extra, out))
    from backends.cpu import _numba_low_precision_kernels as lp

    return (lambda: lp.roofline_streams(w, g, m, v, extra, out)), (lambda: None)
