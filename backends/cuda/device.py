"""What other packages need of the CUDA libraries, so that only backends/cuda imports cupy
or numba.cuda: the device's name for result tables ("" when the library is missing or sees
no device), and a device array over another library's CUDA memory."""
from __future__ import annotations

__all__ = ["cupy_device_name", "numba_device_name", "device_array_view"]


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


def device_array_view(obj, array_type):
    """An array of ``array_type`` (CuPy's ndarray or Numba's device array) over the memory
    of ``obj`` (anything with ``__cuda_array_interface__``), no copy; None for another
    array type."""
    library = array_type.__module__.split(".")[0]
    if library == "cupy":
        import cupy

        return cupy.asarray(obj)
    if library == "numba":
        from numba import cuda

        return cuda.as_cuda_array(obj)
    return None
