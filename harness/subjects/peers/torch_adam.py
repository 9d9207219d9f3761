"""PyTorch's Adam as a peer: its for-loop, foreach and fused implementations.

AdamW is used for ``decoupled=True``; every other option maps one to one onto
torch.optim.Adam's keyword of the same meaning.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from backends import AdamConfig

from ...core.steppers import Stepper

__all__ = ["IMPLEMENTATIONS", "TorchStepper", "STEPPER", "cuda_unavailable_reason",
           "torch_adam"]

#: torch.optim.Adam's keyword flags per implementation.
IMPLEMENTATIONS = {"forloop": {"foreach": False}, "foreach": {"foreach": True},
                   "fused": {"fused": True}}


def torch_adam(tensors: list, cfg: AdamConfig, **flags) -> torch.optim.Optimizer:
    """torch.optim.Adam (AdamW when decoupled) over ``tensors`` with ``cfg``'s options."""
    cls = torch.optim.AdamW if cfg.decoupled else torch.optim.Adam
    return cls(tensors, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
               weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad, maximize=cfg.maximize,
               **flags)


def cuda_unavailable_reason() -> str | None:
    """None when torch can step CUDA tensors here, else why not."""
    if not torch.cuda.is_available():
        return "torch sees no CUDA device (a CPU build of torch, or no GPU)"
    return None


class TorchStepper(Stepper):
    """torch.optim.Adam / AdamW on tensors of ``device``: on the CPU they share memory
    with NumPy arrays; on "cuda" they are device copies, and a step is timed to the end
    of its kernels (``sync``)."""

    kind = "peer"
    device = "cpu"

    def __init__(self, params: list[np.ndarray], cfg: AdamConfig, implementation: str = "fused",
                 device: str = "cpu"):
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {tuple(IMPLEMENTATIONS)}, "
                             f"got {implementation!r}")
        self.device = device
        self._opt = torch_adam(self._hold(params, f"torch-{implementation}"), cfg,
                               **IMPLEMENTATIONS[implementation])

    def _hold(self, params: list[np.ndarray], label: str) -> list:
        """Copy ``params`` into tensors this stepper owns (on the CPU NumPy shares their
        memory)."""
        self.label = label
        self.threads = torch.get_num_threads() if self.device == "cpu" else None
        self._tensors = self._tensors_of([np.array(p, copy=True) for p in params])
        return self._tensors

    def _tensors_of(self, arrays: list[np.ndarray]) -> list:
        """``arrays`` as tensors on this stepper's device (on the CPU, sharing memory)."""
        return [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]

    def prepare(self, grads):
        return self._tensors_of(grads)

    def step(self, prepared) -> None:
        for t, g in zip(self._tensors, prepared):
            t.grad = g
        self._opt.step()

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def params(self):
        return [t.detach().cpu().numpy() for t in self._tensors]

    def moments(self):
        out = {"exp_avg": [], "exp_avg_sq": [], "max_exp_avg_sq": []}
        for t in self._tensors:
            state = self._opt.state[t]
            for key in out:
                if key in state:
                    out[key].append(state[key].cpu().numpy())
        if not out["max_exp_avg_sq"]:
            out["max_exp_avg_sq"] = None
        return out

    def state_nbytes(self) -> int:
        """Bytes of the storage behind every tensor in the optimizer's state: an int8
        moment (a tensor subclass such as torchao's OptimState8bit) counts its inner
        codes, scales and map; a storage shared by several entries (bitsandbytes' and
        torchao's code maps) counts once."""
        storages = {}

        def visit(value):
            if is_traceable_wrapper_subclass(value):
                for name in value.__tensor_flatten__()[0]:
                    visit(getattr(value, name))
            elif isinstance(value, torch.Tensor):
                storage = value.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()

        for state in self._opt.state.values():
            for value in state.values():
                visit(value)
        return sum(storages.values())


STEPPER = TorchStepper
