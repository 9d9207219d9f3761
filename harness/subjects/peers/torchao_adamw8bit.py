"""torchao's AdamW8bit (Adam8bit for torch's L2 option) on the CPU as a peer.

Only tensors of at least 4096 elements whose size is a multiple of the block (256) get
int8 state (one float32 scale per block of 256); the others keep float32 m and v. Each
tensor's step is a ``torch.compile``d function specialized to its shape: a throwaway
optimizer over zero tensors of the same shapes compiles them when the stepper is made
(``compile_seconds``), so no timed step compiles (``compile_count``). The step computes
in float32, so float64 params are rounded every step; maximize is not offered, nor
amsgrad (its compiled step fails on int8 state).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torchao.optim import Adam8bit, AdamW8bit

from backends import AdamConfig

from ...core.steppers import UnsupportedOption
from ._dynamo import allow_one_entry_per_optimizer, compiled_graphs
from .torch_adam import TorchStepper

__all__ = ["TorchaoStepper", "STEPPER"]


class TorchaoStepper(TorchStepper):
    """torchao.optim.AdamW8bit (Adam8bit when not decoupled) over CPU tensors."""

    def __init__(self, params: list[np.ndarray], cfg: AdamConfig):
        if cfg.maximize:
            raise UnsupportedOption("maximize: torchao's AdamW8bit has no such option")
        if cfg.amsgrad:
            raise UnsupportedOption("amsgrad: torchao 0.18's step fails to compile on int8 "
                                    "state (torch.maximum of an OptimState8bit)")
        allow_one_entry_per_optimizer()
        self._hold(params, "torchao-adamw8bit")
        self._opt = self._optimizer(self._tensors, cfg)
        start = time.perf_counter()
        throwaway = [torch.zeros_like(t) for t in self._tensors]
        for t in throwaway:
            t.grad = torch.zeros_like(t)
        self._optimizer(throwaway, cfg).step()
        self.compile_seconds = time.perf_counter() - start

    @staticmethod
    def _optimizer(tensors, cfg: AdamConfig):
        cls = AdamW8bit if cfg.decoupled else Adam8bit
        return cls(tensors, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                   weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad)

    def moments(self):
        out = {"exp_avg": [], "exp_avg_sq": [], "max_exp_avg_sq": []}
        for t in self._tensors:
            for key, value in self._opt.state[t].items():
                if key in out:
                    dense = value.dequantize() if hasattr(value, "dequantize") else value
                    out[key].append(dense.double().numpy())
        if not out["max_exp_avg_sq"]:
            out["max_exp_avg_sq"] = None
        return out

    def compile_count(self) -> int:
        return compiled_graphs()


STEPPER = TorchaoStepper
