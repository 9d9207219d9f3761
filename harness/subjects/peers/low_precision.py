"""The peers in the training formats users run them in (``adam-bench bench --format``).

Each peer steps one torch tensor in the format of ours it is measured against, holding
the same bytes per element:

| format | peer | params, grads, state |
|---|---|---|
| bf16 | torch fused, torch foreach | bf16 (torch keeps the moments in the params' dtype) |
| bf16 | DeepSpeedCPUAdam, `fp32_optimizer_states=False` | bf16 |
| bf16-fp32-state | DeepSpeedCPUAdam (its default) | bf16 params and grads, fp32 moments |
| bf16-sr | torchao `_AdamW(bf16_stochastic_round=True)` | bf16 |
| bf16-kahan | torch-optimi `Adam(kahan_sum=True)` | bf16, bf16 compensation |

On a GPU (``device="cuda"``) the torch peers step CUDA tensors; the others are CPU
optimizers and are left out there. Every peer runs torch.optim.Adam's step (no weight
decay, betas 0.9/0.999, eps 1e-8). A peer whose library is missing or fails is a row with
the reason, not an error.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import PEERS_INSTALL, describe_failure

__all__ = ["FormatPeer", "FORMAT_PEERS", "format_peers", "peer_step"]

_HYPER = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}


def _torch(**flags):
    import torch

    return lambda tensors: torch.optim.Adam(tensors, **_HYPER, **flags)


def _deepspeed(fp32_state: bool):
    def make(tensors):
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(tensors, adamw_mode=False, fp32_optimizer_states=fp32_state,
                                **_HYPER)
    return make


def _torchao_sr(tensors):
    from torchao.optim import _AdamW

    return _AdamW(tensors, bf16_stochastic_round=True, **_HYPER)


def _optimi_kahan(tensors):
    from optimi import Adam

    return Adam(tensors, kahan_sum=True, **_HYPER)


@dataclass(frozen=True)
class FormatPeer:
    """A peer's row label, the format it is measured in, its optimizer factory and the
    devices its tensors can live on."""

    label: str
    format: str
    make: Callable
    install: str = PEERS_INSTALL
    devices: tuple[str, ...] = ("cpu",)


FORMAT_PEERS: tuple[FormatPeer, ...] = (
    FormatPeer("torch-fused", "bf16", _torch(fused=True), devices=("cpu", "cuda")),
    FormatPeer("torch-foreach", "bf16", _torch(foreach=True), devices=("cpu", "cuda")),
    FormatPeer("deepspeed-cpu-adam", "bf16", _deepspeed(fp32_state=False)),
    FormatPeer("deepspeed-cpu-adam", "bf16-fp32-state", _deepspeed(fp32_state=True)),
    FormatPeer("torchao-adamw-sr", "bf16-sr", _torchao_sr),
    FormatPeer("optimi-kahan", "bf16-kahan", _optimi_kahan),
)


def format_peers(fmt: str, device: str = "cpu") -> list[FormatPeer]:
    """The peers measured in format ``fmt`` on ``device`` (none for most mixed formats)."""
    return [peer for peer in FORMAT_PEERS if peer.format == fmt and device in peer.devices]


def peer_step(peer: FormatPeer, n: int, seed: int = 0, device: str = "cpu"):
    """(step, sync) of ``peer`` stepping one bfloat16 tensor of ``n`` elements with a
    bfloat16 gradient on ``device``, or a one-line reason (str) why it cannot run here."""
    try:
        torch = importlib.import_module("torch")
        if device == "cuda" and not torch.cuda.is_available():
            return "unavailable: torch sees no CUDA device (a CPU build of torch, or no GPU)"
        rng = np.random.default_rng(seed)

        def tensor(scale):
            values = torch.from_numpy((rng.standard_normal(n) * scale).astype(np.float32))
            return values.to(device=device, dtype=torch.bfloat16)

        param = tensor(1.0)
        param.grad = tensor(1e-3)
        opt = peer.make([param])
        opt.step()  # state allocated and kernels compiled outside the timing
    except Exception as exc:  # a missing or broken optional library must not stop the run
        return f"unavailable: {describe_failure(exc)} ({peer.install})"
    return opt.step, (torch.cuda.synchronize if device == "cuda" else (lambda: None))
