"""PyTorch's Adam as a peer: its for-loop, foreach and fused implementations.

torch is optional (the ``[peers]`` extra). AdamW is used for ``decoupled=True``; every
other option maps one to one onto torch.optim.Adam's keyword of the same meaning.
"""
from __future__ import annotations

import numpy as np

from backends import AdamConfig

from .steppers import Stepper

__all__ = ["PEER_IMPLEMENTATIONS", "TorchStepper", "torch_unavailable_reason", "peer_labels"]

PEER_IMPLEMENTATIONS = ("forloop", "foreach", "fused")


def torch_unavailable_reason() -> str | None:
    """None when torch imports, else why not (with the install command)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed (pip install -e '.[peers]')"
    return None


def peer_labels() -> list[str]:
    """Row labels of the peers runnable here ([] without torch)."""
    if torch_unavailable_reason() is not None:
        return []
    return [f"torch-{impl}" for impl in PEER_IMPLEMENTATIONS]


class TorchStepper(Stepper):
    """torch.optim.Adam / AdamW on CPU tensors that share memory with NumPy arrays."""

    kind = "peer"
    device = "cpu"

    def __init__(self, implementation: str, params: list[np.ndarray], cfg: AdamConfig):
        import torch

        if implementation not in PEER_IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {PEER_IMPLEMENTATIONS}, "
                             f"got {implementation!r}")
        self.label = f"torch-{implementation}"
        self.threads = torch.get_num_threads()
        self._torch = torch
        self._tensors = [torch.from_numpy(np.array(p, copy=True)) for p in params]
        flags = {"forloop": {"foreach": False}, "foreach": {"foreach": True},
                 "fused": {"fused": True}}[implementation]
        cls = torch.optim.AdamW if cfg.decoupled else torch.optim.Adam
        self._opt = cls(self._tensors, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                        weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad,
                        maximize=cfg.maximize, **flags)

    def prepare(self, grads):
        return [self._torch.from_numpy(np.ascontiguousarray(g)) for g in grads]

    def step(self, prepared) -> None:
        for t, g in zip(self._tensors, prepared):
            t.grad = g
        self._opt.step()

    def params(self):
        return [t.detach().numpy() for t in self._tensors]

    def moments(self):
        out = {"exp_avg": [], "exp_avg_sq": [], "max_exp_avg_sq": []}
        for t in self._tensors:
            state = self._opt.state[t]
            for key in out:
                if key in state:
                    out[key].append(state[key].numpy())
        if not out["max_exp_avg_sq"]:
            out["max_exp_avg_sq"] = None
        return out
