"""Timing steps: warm-up apart, batches long enough for the clock, median and spread.

GPU work is asynchronous, so every timed batch ends with ``sync()`` (the device finished)
before the host clock is read; on the CPU ``sync`` does nothing. A GPU step may bring a
device timer (CUDA events): its batches are then timed by the GPU's own clock. Several steps can be
timed together, batch by batch in turn, so that a machine whose bandwidth drifts (other
tenants, clocks) affects them alike: the roofline is timed that way beside each kernel.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Timing", "time_interleaved", "format_repeats", "parse_repeats"]


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


def format_repeats(seconds) -> str:
    """Per-repeat seconds as one table cell, "1.2345e-05 1.2401e-05 ...": what a later
    ``adam-bench compare`` needs for its confidence interval and test (7 digits: far
    finer than any two repeats agree)."""
    return " ".join(f"{float(t):.7g}" for t in seconds)


def parse_repeats(text) -> np.ndarray:
    """``format_repeats``'s cell back as float64 seconds; empty for a missing cell."""
    if not isinstance(text, str) or not text.strip():
        return np.empty(0)
    return np.array([float(t) for t in text.split()])


#: (step, sync) or (step, sync, timer); a timer is None or (start, stop): ``start()``
#: records a device event, ``stop()`` records another, waits for it and returns the
#: seconds between the two (GpuBackend.event_timer).
Step = tuple


def _warm_and_calibrate(step, sync, min_batch_seconds) -> tuple[float, int]:
    start = time.perf_counter()
    step()
    sync()
    warmup = time.perf_counter() - start
    t0 = time.perf_counter()
    step()
    sync()
    one = max(time.perf_counter() - t0, 1e-7)
    return warmup, max(1, int(min_batch_seconds / one))


def _time_batch(step, sync, timer, batch: int) -> float:
    """Seconds for ``batch`` steps: by the device timer when there is one, else by the
    host clock after ``sync``."""
    if timer is not None:
        start, stop = timer
        start()
        for _ in range(batch):
            step()
        return stop()
    t0 = time.perf_counter()
    for _ in range(batch):
        step()
    sync()
    return time.perf_counter() - t0


def time_interleaved(steps: list[Step], repeats: int = 15, max_seconds: float = 2.0,
                     min_batch_seconds: float = 0.01) -> list[Timing]:
    """Time each (step, sync): one warm-up call each (compilation, first touch), then up
    to ``repeats`` rounds of one batch per step, stopping early (after at least 3 rounds)
    once ``max_seconds`` have passed. Each batch follows one untimed step, so a step
    whose data fits in cache is timed warm whatever ran before it."""
    prepared = [_warm_and_calibrate(step, sync, min_batch_seconds) for step, sync, *_ in steps]
    deadline = time.perf_counter() + max_seconds
    per_step: list[list[float]] = [[] for _ in steps]
    for round_ in range(max(repeats, 1)):
        for (step, sync, *timer), (_, batch), out in zip(steps, prepared, per_step):
            step()  # untimed: the steps timed in turn evict each other's data from cache
            sync()
            out.append(_time_batch(step, sync, timer[0] if timer else None, batch) / batch)
        if round_ >= 2 and time.perf_counter() > deadline:
            break
    return [Timing(warmup, batch, tuple(times))
            for (warmup, batch), times in zip(prepared, per_step)]
