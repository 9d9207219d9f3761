"""AdamState: the optimizer's memory as a plain record that moves between backends."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["AdamState", "to_host"]

_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def to_host(x) -> np.ndarray:
    """Any backend array (NumPy, CuPy, Numba device array) as a host NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "copy_to_host"):
        return x.copy_to_host()
    if hasattr(x, "get"):
        return x.get()
    return np.asarray(x)


@dataclass
class AdamState:
    """Step count and per-tensor moments, arrays of the backend's type.

    ``step`` is 0 before the first update; ``max_exp_avg_sq`` is None unless amsgrad.
    ``cache`` holds backend-private derived data (pointer tables); it is never saved.
    """

    step: int
    exp_avg: list
    exp_avg_sq: list
    max_exp_avg_sq: list | None = None
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict:
        """Host NumPy copies: {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}."""
        out = {"step": int(self.step)}
        for name in _MOMENTS:
            arrays = getattr(self, name)
            out[name] = None if arrays is None else [np.array(to_host(a)) for a in arrays]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "AdamState":
        """A state of host NumPy arrays (copies) from ``to_dict`` output."""
        missing = [k for k in ("step", "exp_avg", "exp_avg_sq") if k not in d]
        if missing:
            raise ValueError(f"state dict lacks {missing}")
        step = d["step"]
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"state dict step must be an int >= 0, got {step!r}")
        moments = {}
        for name in _MOMENTS:
            arrays = d.get(name)
            moments[name] = None if arrays is None else [np.array(a, copy=True) for a in arrays]
        if moments["exp_avg"] is None or moments["exp_avg_sq"] is None:
            raise ValueError("state dict has no exp_avg or exp_avg_sq arrays")
        if len(moments["exp_avg"]) != len(moments["exp_avg_sq"]):
            raise ValueError("state dict exp_avg and exp_avg_sq differ in length")
        return cls(step=int(step), **moments)
