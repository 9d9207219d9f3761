"""Who measured: CPU, cores, threads, library versions and GPU name, for every result row."""
from __future__ import annotations

import functools
import importlib.metadata
import os
import platform

__all__ = ["machine_info", "machine_id"]

_LIBRARIES = ("numpy", "numba", "numba-cuda", "cupy-cuda12x", "cupy-cuda13x", "torch", "pandas")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _gpu_name() -> str:
    """The first CUDA device's name via CuPy when it is installed and sees one, else ""."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception:  # no cupy, no driver, no device: all mean "no GPU to name"
        return ""


@functools.lru_cache(maxsize=1)
def machine_info() -> dict:
    """Flat metadata dict, one column each in result tables."""
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "numba_threads": int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1)),
        "python": platform.python_version(),
        "gpu": _gpu_name(),
    }
    info.update({f"v_{name.replace('-', '_')}": _version(name) for name in _LIBRARIES})
    return info


def machine_id() -> str:
    """A short key for "this machine": CPU model, cores and GPU name."""
    info = machine_info()
    return f"{info['cpu']} x{info['cores']}" + (f" + {info['gpu']}" if info["gpu"] else "")
