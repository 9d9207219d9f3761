"""The digits demo with int8 state (``adam-bench demo --state int8``): the same training
with float32 state and with state_dtype="int8", side by side.

Reported per run: test accuracy, final loss, the largest parameter change of any step
in units of lr (Adam keeps it about 1; the zero-point failure of int8 state makes it
orders of magnitude larger), and the optimizer state's bytes. A shadow int8 optimizer
fed the float32 run's gradients gives the relative error of its decoded m and v
after ``compare_at`` steps (same gradients, so it is the encoding's own error).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from backends import Adam
from backends.int8_codec import BLOCK, decode_m, decode_v, has_int8_state

from ..core.results_io import write_tables
from . import plot_losses, train

__all__ = ["run_int8_demo", "StepWatcher", "decoded_moments"]


class StepWatcher:
    """An Adam whose ``step`` also records the largest |change| of any param, in lr."""

    def __init__(self, params, **config):
        self.opt = Adam(params, **config)
        self.worst_step_over_lr = 0.0
        self.steps = 0

    def step(self, grads) -> None:
        before = [p.astype(np.float64) for p in self.opt.params]
        self.opt.step(grads)
        change = max(float(np.max(np.abs(p - b))) for p, b in zip(self.opt.params, before))
        self.worst_step_over_lr = max(self.worst_step_over_lr, change / self.opt.config.lr)
        self.steps += 1


def decoded_moments(state, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(m, v) of tensor ``i`` of an int8 state as float32 values."""
    def values(codes, scales, decode):
        flat = decode(np.asarray(codes).reshape(-1))
        return flat * np.repeat(np.asarray(scales), BLOCK)[:flat.size]

    return (values(state.exp_avg[i], state.exp_avg_scale[i], decode_m),
            values(state.exp_avg_sq[i], state.exp_avg_sq_scale[i], decode_v))


def _state_bytes(state) -> int:
    arrays = state.exp_avg + state.exp_avg_sq + [
        s for s in (state.exp_avg_scale or []) + (state.exp_avg_sq_scale or []) if s is not None]
    return int(sum(a.nbytes for a in arrays))


def run_int8_demo(steps: int = 200, lr: float = 1e-2, seed: int = 0, backend: str = "numba",
                  compare_at: int = 100, out_stem=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, losses): one row per state format; writes tables and a plot of both loss
    curves to ``out_stem`` when given."""
    shadow = {}

    class WithShadow(StepWatcher):
        """The float32 run, stepping an int8 shadow with the same gradients."""

        def __init__(self, params, **config):
            super().__init__(params, **config)
            shadow["params"] = [p.copy() for p in params]
            shadow["opt"] = Adam(shadow["params"], backend=backend, lr=lr, state_dtype="int8")

        def step(self, grads):
            super().step(grads)
            if self.steps <= compare_at:
                shadow["opt"].step(grads)
            if self.steps == compare_at:
                shadow["error"] = _moment_errors(self.opt.state, shadow["opt"].state)

    runs = {"float32 state": WithShadow, "int8 state": StepWatcher}
    curves, rows = {}, []
    for label, kind in runs.items():
        state_dtype = "int8" if kind is StepWatcher else None
        watcher = {}

        def make(params, kind=kind, state_dtype=state_dtype):
            watcher["w"] = kind(params, backend=backend, lr=lr, state_dtype=state_dtype)
            return watcher["w"]

        losses, acc, _, seconds = train(make, steps, seed)
        curves[label] = losses
        rows.append({"state": label, "final_loss": losses[-1], "test_accuracy": acc,
                     "worst_step_over_lr": watcher["w"].worst_step_over_lr,
                     "state_bytes": _state_bytes(watcher["w"].opt.state),
                     "train_seconds": seconds})
    summary = pd.DataFrame(rows)
    summary["m_rel_err_at_compare"] = [shadow["error"][0], np.nan]
    summary["v_rel_err_at_compare"] = [shadow["error"][1], np.nan]
    losses_df = pd.DataFrame(curves).rename_axis("step").reset_index()
    if out_stem is not None:
        write_tables(summary, out_stem)
        write_tables(losses_df, Path(f"{out_stem}-losses"))
        plot_losses(losses_df, Path(out_stem).with_suffix(".png"),
              title="Digits MLP: float32 state and int8 state")
    return summary, losses_df


def _moment_errors(full_state, int8_state) -> tuple[float, float]:
    """Relative error (norm of difference over norm) of the int8 state's decoded m
    and v against float32 state, over the tensors with int8 state."""
    errors = {"m": [0.0, 0.0], "v": [0.0, 0.0]}
    for i, m in enumerate(full_state.exp_avg):
        if not has_int8_state(m):
            continue
        m_q, v_q = decoded_moments(int8_state, i)
        for key, exact, approx in (("m", m, m_q), ("v", full_state.exp_avg_sq[i], v_q)):
            exact = np.asarray(exact, dtype=np.float64).reshape(-1)
            errors[key][0] += float(np.sum((approx - exact) ** 2))
            errors[key][1] += float(np.sum(exact ** 2))
    return tuple(float(np.sqrt(num / den)) for num, den in errors.values())
