"""What the harness runs: our available backends, the GPU kernels' arithmetic emulated
on the CPU, and the peers (harness.subjects.peers)."""
from __future__ import annotations

from backends import BackendUnavailable, backend_names, get_backend

from .emulated_gpu import EMULATED, EmulatedGpuStepper
from .peers import collect_peers
from .subject import Subject, backend_subject

__all__ = ["collect_subjects"]


def collect_subjects(backends: list[str] | None = None, peers: bool | list[str] = True,
                     device: str | None = None, emulated: bool = False) -> list[Subject]:
    """Subjects for these backend names (None: all registered; []: none) on ``device``
    (None: any), then the peers that run on ``device`` (CPU peers when None): all of them
    with ``peers=True``, these labels with a list, none with False; with
    ``emulated``, also the GPU kernels' arithmetic emulated on the CPU
    (harness.subjects.emulated_gpu), judged like our backends.

    Each backend is constructed once here (kernels compiled), outside any timing; each
    peer's adapter is imported (and its native op built) here too.
    """
    subjects = []
    for name in backend_names() if backends is None else backends:
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
    if peers:
        subjects += collect_peers(None if peers is True else peers, device or "cpu")
    return subjects
