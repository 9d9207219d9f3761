"""Who measured: CPU, cores, memory, threads, library versions, GPU name and the
project's git commit, for every result row (and every results file: harness.core.results_io)."""
from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from backends.cuda.device import cupy_device_name

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




def _memory_gib() -> float | None:
    """Total physical memory in GiB (Linux MemTotal, else sysconf), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        return round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _git_commit() -> str:
    """The commit of the checkout this harness runs from, "+dirty" when it has changes
    to tracked files; "" outside a git checkout (an installed wheel)."""
    root = Path(__file__).resolve().parent

    def git(*args) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("+dirty" if dirty else "")


@functools.lru_cache(maxsize=1)
def machine_info() -> dict:
    """Flat metadata dict, one column each in result tables."""
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "numba_threads": int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1)),
        "python": platform.python_version(),
        "gpu": cupy_device_name(),
    }
    info.update({f"v_{name.replace('-', '_')}": _version(name) for name in _LIBRARIES})
    info["git_commit"] = _git_commit()
    return info



def machine_id() -> str:
    """A short key for "this machine": CPU model, cores and GPU name."""
    info = machine_info()
    return f"{info['cpu']} x{info['cores']}" + (f" + {info['gpu']}" if info["gpu"] else "")
