"""The step of many small low-precision tensors on numba: one table-kernel call per
format against one kernel call per tensor, and the float32 table step of the same shapes.

The variants alternate within every round (so a busy machine slows them alike); each
result is the median over rounds of a round's mean time per step. Run it alone on the
machine: ``python -m harness.bench.many_tensors``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from backends import AdamConfig
from backends.cpu.numba import NumbaBackend
from backends.formats import BFLOAT16

__all__ = ["PerTensorNumba", "many_tensor_times", "main"]

#: (name, config options) of the bf16 formats timed.
FORMATS = (("bf16", {}), ("bf16-sr", {"rounding": "stochastic", "seed": 1}),
           ("bf16-master", {"master_weights": True}))


class PerTensorNumba(NumbaBackend):
    """numba stepping each low-precision tensor in a call of its own (the path before
    the table kernel)."""

    def _low_precision_plan(self, tensors: list, cfg):
        return super()._low_precision_plan(tensors, cfg, grouped=False)


def _stepper(backend, dtype, options, tensors, size):
    """A function that runs one step of ``tensors`` separate arrays of ``size`` elements."""
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(size).astype(dtype) for _ in range(tensors)]
    grads = [(rng.standard_normal(size) * 1e-3).astype(dtype) for _ in range(tensors)]
    cfg = AdamConfig(lr=1e-4, **options)
    state = backend.init_state(params, cfg)
    return lambda: backend.step(params, grads, state, cfg)


def many_tensor_times(tensors=148, size=400, rounds=41, steps=50) -> dict:
    """{variant: median us per step}: each format per tensor and as a table, and fp32."""
    table, per_tensor = NumbaBackend(), PerTensorNumba()
    variants = {"fp32 table": _stepper(table, np.float32, {}, tensors, size)}
    for name, options in FORMATS:
        variants[f"{name} per tensor"] = _stepper(per_tensor, BFLOAT16, options, tensors, size)
        variants[f"{name} table"] = _stepper(table, BFLOAT16, options, tensors, size)
    times: dict = {name: [] for name in variants}
    for step in variants.values():  # compile, plan and warm up outside the rounds
        for _ in range(steps):
            step()
    for _ in range(rounds):
        for name, step in variants.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[name].append((time.perf_counter() - start) / steps * 1e6)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=148)
    parser.add_argument("--size", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    times = many_tensor_times(args.tensors, args.size, args.rounds, args.steps)
    for name, us in times.items():
        print(f"{name:22s} {us:8.1f} us/step")


if __name__ == "__main__":
    main()
