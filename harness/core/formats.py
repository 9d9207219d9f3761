"""Training formats: the named combinations of params, grads, state and rounding that
``adam-bench bench --format`` and ``demo --format`` take, and their bytes model.

A step reads the grads, every state field and (without master weights) the params, and
writes the params and every state field, so bytes per element follow from the dtypes
(``backends.low_precision_step.tensor_layout``): fp32 28, pure bf16 14, bf16 params with
float32 state 22, bf16 with Kahan 18, mixed bf16/fp16 (master weights, float32 state,
2-byte grads) 28.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backends import AdamConfig
from backends.formats import BFLOAT16, FLOAT32

__all__ = ["Format", "FORMATS", "format_names", "get_format"]


@dataclass(frozen=True)
class Format:
    """params (and grads) dtype and the AdamConfig options of one training format."""

    name: str
    dtype: np.dtype
    options: dict = field(default_factory=dict)
    description: str = ""

    def config(self, **hyper) -> AdamConfig:
        return AdamConfig(**hyper, **self.options)

    @property
    def low_precision(self) -> bool:
        return self.dtype != FLOAT32 or bool(self.options)

    def bytes_per_element(self) -> int:
        """Bytes a step moves per element: reads (grads, state, params unless master
        weights) plus writes (params, state)."""
        from backends.low_precision_step import tensor_layout

        cfg = self.config()
        state = sum(np.dtype(d).itemsize for d in tensor_layout(self.dtype, cfg).values())
        p = self.dtype.itemsize
        return p + state + (0 if cfg.master_weights else p) + state + p  # g + reads, writes


FORMATS = {f.name: f for f in [
    Format("fp32", FLOAT32, {}, "float32 params, grads and state"),
    Format("bf16", BFLOAT16, {"state_dtype": "bfloat16"},
           "bfloat16 params, grads and state, rounded to nearest"),
    Format("bf16-fp32-state", BFLOAT16, {"state_dtype": "float32"},
           "bfloat16 params and grads, float32 state, params rounded to nearest"),
    Format("bf16-sr", BFLOAT16, {"state_dtype": "bfloat16", "rounding": "stochastic"},
           "bfloat16 everything, params rounded stochastically"),
    Format("bf16-kahan", BFLOAT16, {"state_dtype": "bfloat16", "rounding": "kahan"},
           "bfloat16 everything plus a bfloat16 Kahan compensation"),
    Format("bf16-master", BFLOAT16, {"master_weights": True},
           "bfloat16 params and grads, float32 master weights and state"),
    Format("fp16-master", np.dtype(np.float16), {"master_weights": True},
           "float16 params and grads, float32 master weights and state"),
]}


def format_names() -> list[str]:
    return list(FORMATS)


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r} (expected one of {', '.join(FORMATS)})")
    return FORMATS[name]
