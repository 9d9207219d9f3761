"""Interchangeable Adam backends behind one interface (see README.md and DESIGN.md)."""
from .base import Backend, BackendUnavailable
from .config import AdamConfig
from .optimizer import Adam
from .registry import BackendInfo, backend_names, get_backend, list_backends
from .state import AdamState

__all__ = ["Adam", "AdamConfig", "AdamState", "Backend", "BackendInfo", "BackendUnavailable",
           "backend_names", "get_backend", "list_backends"]
