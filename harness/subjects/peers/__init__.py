"""The Adams users pick instead of ours, as harness subjects: one adapter module per peer.

Every adapter module defines ``STEPPER`` (a Stepper class made as ``STEPPER(params, cfg,
**options)``) and may define ``build()``, a one-time native build done when the peer is
collected (DeepSpeed's C++ op). Adapters import their library at module level and are
imported here only when collected, so the harness runs without any of them: a peer whose
module cannot be imported or built becomes a subject with ``make=None`` and the reason,
install command included, and the run goes on. ``CUDA_PEERS`` are the peers that step
CUDA tensors (torch's foreach and fused Adam): a GPU sweep's rivals, which a module offers
by defining ``cuda_unavailable_reason()`` (None where it can run on the GPU).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass

from ..subject import Subject

__all__ = ["Peer", "PEERS", "CUDA_PEERS", "PEERS_INSTALL", "peer_labels", "collect_peers",
           "load_peer", "describe_failure"]

#: What installs every peer's library.
PEERS_INSTALL = "pip install -e '.[peers]'"


@dataclass(frozen=True)
class Peer:
    """A peer's row label, its adapter module, the libraries it imports and what installs
    them.

    ``state`` is the state format the peer always keeps: "full" (moments in the params'
    dtype), or "int8" for int8 moments. An "int8" peer is shown against the
    reference apart from the verdict and benchmarked in the int8 state rows."""

    label: str
    module: str
    requires: tuple[str, ...]
    install: str = PEERS_INSTALL
    state: str = "full"
    options: tuple[tuple[str, object], ...] = ()
    device: str = "cpu"


_TORCH = ("torch",)

PEERS: tuple[Peer, ...] = (
    Peer("torch-forloop", "harness.subjects.peers.torch_adam", _TORCH,
         options=(("implementation", "forloop"),)),
    Peer("torch-foreach", "harness.subjects.peers.torch_adam", _TORCH,
         options=(("implementation", "foreach"),)),
    Peer("torch-fused", "harness.subjects.peers.torch_adam", _TORCH,
         options=(("implementation", "fused"),)),
    Peer("torch-compile", "harness.subjects.peers.torch_compile", _TORCH),
    # ours, through torch.optim (backends.torch), measured the way the torch peers are
    Peer("numba (torch.optim)", "harness.subjects.peers.torch_optim_adapter", _TORCH,
         install="pip install -e '.[torch]'"),
    Peer("numba (torch.optim) new grads", "harness.subjects.peers.torch_optim_adapter", _TORCH,
         install="pip install -e '.[torch]'", options=(("grads", "new"),)),
    Peer("deepspeed-cpu-adam", "harness.subjects.peers.deepspeed_cpu_adam", ("torch", "deepspeed")),
    Peer("optax", "harness.subjects.peers.optax_adam", ("jax", "optax")),
    Peer("bnb-adam8bit", "harness.subjects.peers.bnb_adam8bit", ("torch", "bitsandbytes"),
         state="int8"),
    Peer("torchao-adamw8bit", "harness.subjects.peers.torchao_adamw8bit", ("torch", "torchao"),
         state="int8"),
)

#: torch.optim.Adam on CUDA tensors: the GPU sweep's rivals (``adam-bench gpu-report``).
CUDA_PEERS: tuple[Peer, ...] = tuple(
    Peer(label, "harness.subjects.peers.torch_adam", _TORCH, device="cuda",
         options=(("implementation", implementation), ("device", "cuda")))
    for label, implementation in (("torch-foreach", "foreach"), ("torch-fused", "fused")))


def peer_labels() -> list[str]:
    """Every peer's row label, runnable here or not."""
    return [peer.label for peer in PEERS]


def load_peer(peer: Peer) -> Subject:
    """Import (and build) one peer; on any failure a subject that says why, not an error."""
    try:
        module = importlib.import_module(peer.module)
        start = time.perf_counter()
        getattr(module, "build", lambda: None)()
        build_seconds = time.perf_counter() - start
        stepper_cls = module.STEPPER
        no_gpu = module.cuda_unavailable_reason() if peer.device == "cuda" else None
    except Exception as exc:  # a broken optional library must not stop the run
        reason = f"unavailable: {describe_failure(exc)} ({peer.install})"
        return Subject(peer.label, "peer", peer.device, None, reason, state=peer.state)
    if no_gpu:
        return Subject(peer.label, "peer", peer.device, None, f"unavailable: {no_gpu}",
                       state=peer.state)
    options = dict(peer.options)
    return Subject(peer.label, "peer", peer.device,
                   lambda params, cfg: stepper_cls(params, cfg, **options),
                   state=peer.state, build_seconds=build_seconds)


def collect_peers(labels: list[str] | None = None, device: str = "cpu") -> list[Subject]:
    """Subjects for these peer labels (default: every peer) on ``device`` ("cpu": PEERS,
    "cuda": CUDA_PEERS), in that order."""
    known = peer_labels()
    unknown = sorted(set(labels or ()) - set(known))
    if unknown:
        raise ValueError(f"Unknown peer(s) {', '.join(unknown)}; known peers: {', '.join(known)}")
    return [load_peer(peer) for peer in (CUDA_PEERS if device == "cuda" else PEERS)
            if labels is None or peer.label in labels]


def describe_failure(exc: BaseException) -> str:
    """"ExceptionType: first line of its message", for a one-line row."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no message'}"
