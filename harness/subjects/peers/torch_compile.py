"""``torch.compile``d torch.optim.Adam, PyTorch's compiled-optimizer recipe, as a peer.

The step is compiled when the stepper is made, outside any timing: ``compile_seconds``
is that time. Compiling needs a real step (Dynamo traces the optimizer's state), so the
stepper steps once with zero gradients and then puts params and state back in place:
the first step the caller sees is step 1. ``compile_count`` lets the sweep and the
benchmarks assert that no timed step compiles again.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from backends import AdamConfig

from ._dynamo import allow_one_entry_per_optimizer, compiled_graphs
from .torch_adam import TorchStepper, torch_adam

__all__ = ["TorchCompileStepper", "STEPPER"]

_WARMUP_CALLS = 3  # the state is made by the first call; later calls must reuse its code


class TorchCompileStepper(TorchStepper):
    """torch.optim.Adam / AdamW whose ``step`` runs under ``torch.compile``."""

    def __init__(self, params: list[np.ndarray], cfg: AdamConfig):
        allow_one_entry_per_optimizer()
        self._hold(params, "torch-compile")
        self._opt = torch_adam(self._tensors, cfg)
        opt = self._opt

        def step():
            opt.step()

        self._compiled = torch.compile(step)
        start = time.perf_counter()
        self._compile_now()
        self.compile_seconds = time.perf_counter() - start

    def _compile_now(self) -> None:
        """Step with zero gradients until a call compiles nothing, then undo the steps."""
        saved = [t.clone() for t in self._tensors]
        for t in self._tensors:
            t.grad = torch.zeros_like(t)
        for _ in range(_WARMUP_CALLS):
            before = compiled_graphs()
            self._compiled()
            if compiled_graphs() == before:
                break
        with torch.no_grad():
            for t, original in zip(self._tensors, saved):
                t.copy_(original)
                t.grad = None
                for value in self._opt.state[t].values():
                    value.zero_()

    def step(self, prepared) -> None:
        for t, g in zip(self._tensors, prepared):
            t.grad = g
        self._compiled()

    def compile_count(self) -> int:
        return compiled_graphs()


STEPPER = TorchCompileStepper
