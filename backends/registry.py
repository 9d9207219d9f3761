"""The backend registry: built-in backends, plugins, and the names that reach them.

Three sources, in this order: the built-ins (imported only when asked for), backends
registered at run time with ``register_backend``, and plugins installed as packages that
declare an entry point in the group ``adam_backends.backends``::

    [project.entry-points."adam_backends.backends"]
    mine = "my_package.my_module:MyBackend"

A plugin is imported only when it is listed or asked for. One that fails to import, or
is not a Backend, or fails to construct, is reported as unavailable with the reason; it
never breaks a run. No plugin can take a built-in's name, and a name taken by one source
is refused to the next unless ``register_backend(..., replace=True)`` says so.

Importing ``backends`` imports none of numba, cupy, the CUDA driver or any plugin.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import sys
import warnings
from dataclasses import dataclass
from typing import Callable

from .base import Backend, BackendUnavailable

__all__ = ["BackendInfo", "ENTRY_POINT_GROUP", "PluginWarning", "backend_names",
           "get_backend", "list_backends", "register_backend", "unregister_backend"]

#: The entry-point group a plugin package declares its backends in.
ENTRY_POINT_GROUP = "adam_backends.backends"

#: name -> (module, class, device); the order is the built-in preference, slowest first.
_BUILT_IN: dict[str, tuple[str, str, str]] = {
    "python": ("backends.cpu.python", "PythonBackend", "cpu"),
    "numpy": ("backends.cpu.numpy", "NumpyBackend", "cpu"),
    "numba": ("backends.cpu.numba", "NumbaBackend", "cpu"),
    "numba-cuda": ("backends.cuda.numba_cuda", "NumbaCudaBackend", "cuda"),
    "cupy": ("backends.cuda.cupy", "CupyBackend", "cuda"),
}

#: name -> class or factory, from register_backend (a replaced built-in lands here too).
_REGISTERED: dict[str, Callable[..., Backend]] = {}


class PluginWarning(UserWarning):
    """An installed plugin that was refused (its name is taken); the message says which."""


@dataclass(frozen=True)
class BackendInfo:
    """One row of ``list_backends()``; ``origin`` is "built-in", "registered" or
    "plugin <distribution>"."""

    name: str
    device: str
    available: bool
    reason: str | None
    origin: str = "built-in"


@dataclass(frozen=True)
class _Source:
    """Where a name's backend comes from: ``load()`` gives its class or factory."""

    name: str
    origin: str
    load: Callable[[], Callable[..., Backend]]


def register_backend(name: str, cls_or_factory: Callable[..., Backend], *,
                     replace: bool = False) -> None:
    """Make ``name`` reach ``cls_or_factory`` (a Backend subclass, or a callable taking
    ``get_backend``'s options and returning a Backend) in this process.

    A name that is already a built-in, registered or installed plugin raises ValueError
    unless ``replace=True``.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"backend name must be a non-empty string without surrounding "
                         f"spaces, got {name!r}")
    if not callable(cls_or_factory):
        raise TypeError(f"cls_or_factory must be a Backend subclass or a callable returning "
                        f"a Backend, got {type(cls_or_factory).__name__}")
    if not replace and name in _sources():
        raise ValueError(f"backend name {name!r} is taken by the "
                         f"{_sources()[name].origin} backend; pass replace=True to override "
                         "it in this process")
    _REGISTERED[name] = cls_or_factory


def unregister_backend(name: str) -> None:
    """Undo ``register_backend(name, ...)``; a replaced built-in comes back."""
    if name not in _REGISTERED:
        raise ValueError(f"backend {name!r} was not registered with register_backend")
    del _REGISTERED[name]


def _entry_points() -> list:
    """Installed entry points of our group (read from package metadata, nothing imported),
    cached per ``sys.path``."""
    return _entry_points_on(tuple(sys.path))


_ENTRY_POINT_CACHE: dict[tuple, list] = {}


def _entry_points_on(path: tuple) -> list:
    if path not in _ENTRY_POINT_CACHE:
        found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        _ENTRY_POINT_CACHE.clear()
        _ENTRY_POINT_CACHE[path] = sorted(found, key=lambda ep: ep.name)
    return _ENTRY_POINT_CACHE[path]


def _built_in_loader(name: str):
    module, cls, _ = _BUILT_IN[name]
    return lambda: getattr(importlib.import_module(module), cls)


def _sources() -> dict[str, _Source]:
    """Every name in order: built-ins, registered, then installed plugins by name."""
    sources = {name: _Source(name, "built-in", _built_in_loader(name)) for name in _BUILT_IN}
    for name, target in _REGISTERED.items():
        sources[name] = _Source(name, "registered", lambda target=target: target)
    for ep in _entry_points():
        dist = getattr(ep.dist, "name", None) or "?"
        if ep.name in sources:
            warnings.warn(f"plugin {ep.name!r} from {dist} ({ep.value}) refused: the name is "
                          f"taken by the {sources[ep.name].origin} backend",
                          PluginWarning, stacklevel=1)
            continue
        sources[ep.name] = _Source(ep.name, f"plugin {dist}", ep.load)
    return sources


def backend_names() -> list[str]:
    """Every name: built-ins in preference order (slowest first), registered, plugins."""
    return list(_sources())


def _source(name: str) -> _Source:
    sources = _sources()
    if name not in sources:
        raise ValueError(f"Unknown backend {name!r}; known backends: {', '.join(sources)}")
    return sources[name]


def _load(source: _Source) -> Callable[..., Backend]:
    """The class or factory, or BackendUnavailable saying why it cannot be had."""
    try:
        target = source.load()
    except ImportError as exc:
        raise BackendUnavailable(f"import failed: {exc}") from exc
    except Exception as exc:  # a plugin's module may raise anything at import
        raise BackendUnavailable(f"{source.origin} failed to load: "
                                 f"{type(exc).__name__}: {exc}") from exc
    if isinstance(target, type) and not issubclass(target, Backend):
        raise BackendUnavailable(f"{source.origin} gives {target.__qualname__}, which is not a "
                                 "subclass of backends.Backend")
    if not callable(target):
        raise BackendUnavailable(f"{source.origin} gives a {type(target).__name__}, not a "
                                 "Backend subclass or factory")
    return target


def _unavailable_reason(target) -> str | None:
    check = getattr(target, "unavailable_reason", None)
    if check is None:
        return None
    try:
        return check()
    except Exception as exc:  # a plugin's own check must not break the listing
        return f"unavailable_reason() raised {type(exc).__name__}: {exc}"


def list_backends() -> list[BackendInfo]:
    """Every backend, with its device, whether it can run here and why not.

    A plugin (or registered backend) is imported here, and constructed once per process
    with no options to learn whether it can be; one that cannot be imported has device "?".
    """
    rows = []
    for name, source in _sources().items():
        try:
            target = _load(source)
        except BackendUnavailable as exc:
            device = _BUILT_IN[name][2] if source.origin == "built-in" else "?"
            rows.append(BackendInfo(name, device, False, str(exc), source.origin))
            continue
        device = getattr(target, "device", None) or "?"
        reason = _unavailable_reason(target)
        if reason is None and source.origin != "built-in":
            reason = _construction_failure(source, target)
        rows.append(BackendInfo(name, device, reason is None, reason, source.origin))
    return rows


def get_backend(name: str, **options) -> Backend:
    """A ready backend (kernels compiled) named ``name``.

    Unknown name: ValueError. A backend that cannot run here, or a plugin that fails to
    import or to construct: BackendUnavailable with the reason. The instance's ``name``
    is the name it was asked for by.
    """
    source = _source(name)
    target = _load(source)
    reason = _unavailable_reason(target)
    if reason is not None:
        raise BackendUnavailable(f"backend {name!r} is unavailable here: {reason}")
    return _make(source, target, options)


def _make(source: _Source, target, options: dict) -> Backend:
    if source.origin == "built-in":
        backend = target(**options)
    else:
        try:
            backend = target(**options)
        except Exception as exc:  # a plugin's constructor may raise anything
            raise BackendUnavailable(f"backend {source.name!r} ({source.origin}) failed to "
                                     f"construct: {type(exc).__name__}: {exc}") from exc
    if not isinstance(backend, Backend):
        raise BackendUnavailable(f"backend {source.name!r} ({source.origin}) made a "
                                 f"{type(backend).__name__}, not a backends.Backend")
    if backend.name != source.name:
        backend.name = source.name
    return backend


#: name -> (the class or factory tried, why it could not be constructed or None)
_CONSTRUCTED: dict[str, tuple[object, str | None]] = {}


def _construction_failure(source: _Source, target) -> str | None:
    """Why ``target()`` does not make a Backend (tried once per process and target)."""
    tried, reason = _CONSTRUCTED.get(source.name, (None, None))
    if tried is not target:
        try:
            _make(source, target, {})
            reason = None
        except BackendUnavailable as exc:
            reason = str(exc)
        _CONSTRUCTED[source.name] = (target, reason)
    return reason
