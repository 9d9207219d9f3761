"""What the harness runs: our available backends and the peers (harness.peers)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from backends import Backend, BackendUnavailable, backend_names, get_backend

from .emulated_gpu import EMULATED, EmulatedGpuStepper
from .steppers import BackendStepper

__all__ = ["Subject", "backend_subject", "collect_subjects"]


@dataclass
class Subject:
    """A named way to make Steppers; ``make`` is None when it can't run (``reason`` says why).

    ``state`` is "int8" for peers whose moments are always 8-bit (judged apart, without a
    verdict, and benchmarked in the 8-bit state rows), "full" for every other subject
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


def collect_subjects(backends: list[str] | None = None, peers: bool | list[str] = True,
                     device: str | None = None, emulated: bool = False) -> list[Subject]:
    """Subjects for these backend names (default: all registered), then the peers: all of
    them with ``peers=True``, these labels with a list, none with False; with
    ``emulated``, also the GPU kernels' arithmetic emulated on the CPU
    (harness.emulated_gpu), judged like our backends.

    Each backend is constructed once here (kernels compiled), outside any timing; each
    peer's adapter is imported (and its native op built) here too.
    """
    from .peers import collect_peers

    subjects = []
    for name in backends or backend_names():
        try:
            backend = get_backend(name)
        except BackendUnavailable as exc:
            subjects.append(Subject(name, "backend", "?", None, str(exc)))
            continue
        if device and backend.device != device:
            continue
        subjects.append(backend_subject(backend))
    if emulated and device in (None, "cpu"):
        for name in EMULATED:
            subjects.append(Subject(f"{name} (emulated)", "emulated", "cpu",
                                    lambda params, cfg, n=name: EmulatedGpuStepper(n, params,
                                                                                   cfg)))
    if peers and device in (None, "cpu"):
        subjects += collect_peers(None if peers is True else peers)
    return subjects
