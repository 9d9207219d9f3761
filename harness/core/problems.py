"""Seeded Adam problems: starting parameters and a gradient for every step, reproducible."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Problem", "random_problem", "MIXED_SHAPES"]

#: Many tensors of mixed sizes, empty and single-element ones included.
MIXED_SHAPES = [(0,), (1,), (3,), (17, 5), (64, 33), (1000,), (4, 5, 6), (5000,)]


@dataclass
class Problem:
    """Parameters at step 0 and the gradients of steps 1..K (host NumPy arrays)."""

    params: list[np.ndarray]
    grads: list[list[np.ndarray]]

    @property
    def steps(self) -> int:
        return len(self.grads)

    def copy_params(self) -> list[np.ndarray]:
        return [p.copy() for p in self.params]


def random_problem(shapes, dtype, steps: int, seed: int = 0, grad_scale: float = 1.0) -> Problem:
    """Normal parameters and gradients; gradients are scaled per tensor (0.01x to 100x)
    so that the second moments differ by orders of magnitude, as in real models."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    scales = [grad_scale * 10.0 ** rng.uniform(-2, 2) for _ in shapes]
    grads = [[(scale * rng.standard_normal(s)).astype(dtype) for s, scale in zip(shapes, scales)]
             for _ in range(steps)]
    return Problem(params, grads)
