"""Timing a step: warm-up apart, batches long enough for the clock, median and spread.

GPU work is asynchronous, so every timed batch ends with ``sync()`` (the device finished)
before the host clock is read; on the CPU ``sync`` does nothing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Timing", "time_step"]


@dataclass(frozen=True)
class Timing:
    """Seconds per step over repeated batches, and the untimed first call."""

    warmup_seconds: float
    steps_per_repeat: int
    per_step: tuple[float, ...]

    @property
    def median(self) -> float:
        return float(np.median(self.per_step))

    @property
    def best(self) -> float:
        return float(np.min(self.per_step))

    @property
    def spread(self) -> float:
        """Interquartile range over the median: 0.05 means repeats agree within about 5%."""
        q1, q3 = np.percentile(self.per_step, [25, 75])
        return float((q3 - q1) / self.median) if self.median > 0 else 0.0


def time_step(step: Callable[[], None], sync: Callable[[], None] = lambda: None,
              repeats: int = 15, max_seconds: float = 2.0, min_batch_seconds: float = 0.01
              ) -> Timing:
    """Time ``step``: one warm-up call (compilation, first-touch allocation), then up to
    ``repeats`` batches of equal length, stopping early (after at least 3) past
    ``max_seconds``."""
    start = time.perf_counter()
    step()
    sync()
    warmup = time.perf_counter() - start
    t0 = time.perf_counter()
    step()
    sync()
    one = max(time.perf_counter() - t0, 1e-7)
    batch = max(1, int(min_batch_seconds / one))
    deadline = time.perf_counter() + max_seconds
    per_step = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        for _ in range(batch):
            step()
        sync()
        per_step.append((time.perf_counter() - t0) / batch)
        if len(per_step) >= 3 and time.perf_counter() > deadline:
            break
    return Timing(warmup, batch, tuple(per_step))
