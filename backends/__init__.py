"""Interchangeable Adam backends behind one interface (see README.md and docs/design.md)."""
from .base import Backend, BackendUnavailable
from .config import AdamConfig
from .optimizer import Adam, AutoFallbackWarning
from .registry import (BackendInfo, backend_names, get_backend, list_backends,
                       register_backend, unregister_backend)
from .state import AdamState

__all__ = ["Adam", "AdamConfig", "AdamState", "AutoFallbackWarning", "Backend", "BackendInfo",
           "BackendUnavailable", "backend_names", "get_backend", "list_backends",
           "register_backend", "unregister_backend"]
