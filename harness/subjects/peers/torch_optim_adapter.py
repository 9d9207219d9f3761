"""Our torch.optim adapter (``backends.torch.Adam`` on the Numba backend) measured as the
peers are: a torch.optim.Optimizer over CPU tensors, driven through ``.grad`` and
``step()``.

Two ways a training loop hands it gradients: ``zero_grad(set_to_none=False)`` keeps the
same gradient tensors every step (``grads="kept"``: assigned once, as autograd would
accumulate into them), while the default ``set_to_none=True`` brings new ones every step
(``grads="new"``: two sets of gradient tensors alternate, assigned before each step, so
every step sees tensors other than the last step's, as the torch peers' steps assign
theirs).
"""
from __future__ import annotations

import numpy as np
import torch

from backends import AdamConfig
from backends.torch import Adam, AdamW

from .torch_adam import TorchStepper

__all__ = ["TorchOptimStepper", "STEPPER", "GRADS"]

#: The two ways gradients arrive, as the peer options name them.
GRADS = ("kept", "new")


class TorchOptimStepper(TorchStepper):
    """backends.torch.Adam / AdamW with ``backend`` over CPU tensors of their own."""

    def __init__(self, params: list[np.ndarray], cfg: AdamConfig, grads: str = "kept",
                 backend: str = "numba"):
        if grads not in GRADS:
            raise ValueError(f"grads must be one of {GRADS}, got {grads!r}")
        self.grads = grads
        label = f"{backend} (torch.optim)" + (" new grads" if grads == "new" else "")
        cls = AdamW if cfg.decoupled else Adam
        self._opt = cls(self._hold(params, label), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                        eps=cfg.eps, weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad,
                        maximize=cfg.maximize, backend=backend)
        self.compile_seconds = getattr(self._opt.backend, "compile_seconds", 0.0)
        self._turn = 0

    def prepare(self, grads):
        first = super().prepare(grads)
        if self.grads == "kept":
            for t, g in zip(self._tensors, first):
                t.grad = g
            return None
        return first, [g.clone() for g in first]

    def step(self, prepared) -> None:
        if prepared is not None:
            self._turn ^= 1
            for t, g in zip(self._tensors, prepared[self._turn]):
                t.grad = g
        self._opt.step()


STEPPER = TorchOptimStepper
