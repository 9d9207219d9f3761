"""The CUDA device's name for result tables, read through CuPy or numba.cuda ("" when the
library is missing or sees no device): the harness names the GPU without importing either."""
from __future__ import annotations

__all__ = ["cupy_device_name", "numba_device_name"]


def cupy_device_name() -> str:
    """The first CUDA device's name via CuPy when it is installed and sees one, else ""."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception:  # no cupy, no driver, no device: all mean "no GPU to name"
        return ""


def numba_device_name() -> str:
    """The current device's name through numba.cuda (raises where there is none)."""
    from numba import cuda

    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)
