"""One subject of the harness: a named way to make Steppers (one of our backends, an
emulated GPU kernel or a peer), and the subject of a backend."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from backends import Backend

from ..core.steppers import BackendStepper

__all__ = ["Subject", "backend_subject"]


@dataclass
class Subject:
    """A named way to make Steppers; ``make`` is None when it can't run (``reason`` says why).

    ``state`` is "int8" for peers whose moments are always int8 (judged apart, without a
    verdict, and benchmarked in the int8 state rows), "full" for every other subject
    (ours keep the state format ``AdamConfig.state_dtype`` asks for); ``build_seconds`` is a one-time native build done when the subject was made.
    """

    label: str
    kind: str
    device: str
    make: Callable | None
    reason: str | None = None
    backend: Backend | None = None
    state: str = "full"
    build_seconds: float = 0.0


def backend_subject(backend: Backend) -> Subject:
    """The subject of one of our (or a plugin's) backends, already constructed."""
    return Subject(backend.name, "backend", backend.device,
                   lambda params, cfg, **layout: BackendStepper(backend, params, cfg, **layout),
                   backend=backend)
