"""The backend registry: names to classes, imported only when asked for.

Importing ``backends`` imports none of numba, cupy or the CUDA driver; ``list_backends``
and ``get_backend`` do, for the backends they look at.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from .base import Backend, BackendUnavailable

__all__ = ["BackendInfo", "get_backend", "list_backends", "backend_names"]

#: name -> (module, class, device); the order is the built-in preference, slowest first.
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "python": ("backends.python_backend", "PythonBackend", "cpu"),
    "numpy": ("backends.numpy_backend", "NumpyBackend", "cpu"),
    "numba": ("backends.numba_cpu", "NumbaBackend", "cpu"),
    "numba-cuda": ("backends.numba_cuda", "NumbaCudaBackend", "cuda"),
    "cupy": ("backends.cupy_backend", "CupyBackend", "cuda"),
}


@dataclass(frozen=True)
class BackendInfo:
    """One row of ``list_backends()``."""

    name: str
    device: str
    available: bool
    reason: str | None


def backend_names() -> list[str]:
    """Every registered name, in the built-in preference order (slowest first)."""
    return list(_REGISTRY)


def _backend_class(name: str) -> type[Backend]:
    if name not in _REGISTRY:
        raise ValueError(f"Unknown backend {name!r}; known backends: {', '.join(_REGISTRY)}")
    module, cls, _ = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def _unavailable_reason(name: str) -> str | None:
    try:
        return _backend_class(name).unavailable_reason()
    except ImportError as exc:
        return f"import failed: {exc}"


def list_backends() -> list[BackendInfo]:
    """Every registered backend, with whether it can run here and why not."""
    rows = []
    for name, (_, _, device) in _REGISTRY.items():
        reason = _unavailable_reason(name)
        rows.append(BackendInfo(name, device, reason is None, reason))
    return rows


def get_backend(name: str, **options) -> Backend:
    """A ready backend (kernels compiled); unknown name -> ValueError, unusable -> BackendUnavailable."""
    cls = _backend_class(name)
    reason = cls.unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"backend {name!r} is unavailable here: {reason}")
    return cls(**options)
