"""What the harness runs: our available backends and, when torch is there, its peers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from backends import Backend, BackendUnavailable, backend_names, get_backend

from .emulated_gpu import EMULATED, EmulatedGpuStepper
from .peers import PEER_IMPLEMENTATIONS, TorchStepper, torch_unavailable_reason
from .steppers import BackendStepper

__all__ = ["Subject", "backend_subject", "collect_subjects"]


@dataclass
class Subject:
    """A named way to make Steppers; ``make`` is None when it can't run (``reason`` says why)."""

    label: str
    kind: str
    device: str
    make: Callable | None
    reason: str | None = None
    backend: Backend | None = None


def backend_subject(backend: Backend) -> Subject:
    """The subject of one of our (or a plugin's) backends, already constructed."""
    return Subject(backend.name, "backend", backend.device,
                   lambda params, cfg, **layout: BackendStepper(backend, params, cfg, **layout),
                   backend=backend)


def collect_subjects(backends: list[str] | None = None, peers: bool = True,
                     device: str | None = None, emulated: bool = False) -> list[Subject]:
    """Subjects for these backend names (default: all registered) and torch's three Adams;
    with ``emulated``, also the GPU kernels' arithmetic emulated on the CPU
    (harness.emulated_gpu), judged like our backends.

    Each backend is constructed once here (kernels compiled), outside any timing.
    """
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
        reason = torch_unavailable_reason()
        for impl in PEER_IMPLEMENTATIONS:
            make = None if reason else (lambda params, cfg, i=impl: TorchStepper(i, params, cfg))
            subjects.append(Subject(f"torch-{impl}", "peer", "cpu", make, reason))
    return subjects
