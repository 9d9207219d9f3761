"""AdamState: the optimizer's memory as a plain record that moves between backends."""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .formats import BFLOAT16

__all__ = ["AdamState", "DerivedCache", "to_host", "checked_step", "MAX_STEP", "ARRAY_FIELDS"]

_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
_SCALES = tuple(f"{name}_scale" for name in _MOMENTS)
#: Per-tensor buffers of low-precision params (None lists unless used).
_LOW_PRECISION = ("master_params", "compensation")
#: Every array-list field of AdamState, in field order.
ARRAY_FIELDS = _MOMENTS + _SCALES + _LOW_PRECISION
#: The largest step count a state may hold: the next step, MAX_STEP + 1, still fits the
#: kernels' int64.
MAX_STEP = 2**63 - 2


def to_host(x) -> np.ndarray:
    """Any backend array (NumPy, CuPy, Numba device array) as a host NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "copy_to_host"):  # a Numba device array: bfloat16 crosses as its bits
        if x.dtype == BFLOAT16:   # (the buffer protocol has no bfloat16)
            return x.view(np.uint16).copy_to_host().view(BFLOAT16)
        return x.copy_to_host()
    if hasattr(x, "get"):
        return x.get()
    return np.asarray(x)


def checked_step(step, what: str = "state.step") -> int:
    """``step`` as a Python int in 0..MAX_STEP (any integer type, not bool or float), so
    every backend counts the same way: no wrap-around of small integer types, no float
    truncated."""
    if type(step) is not int:
        if isinstance(step, (bool, np.bool_)):
            raise ValueError(f"{what} must be an int in 0..2**63-2, got {step!r}")
        try:
            step = operator.index(step)
        except TypeError:
            raise ValueError(f"{what} must be an int in 0..2**63-2, got {step!r}") from None
    if not 0 <= step <= MAX_STEP:
        raise ValueError(f"{what} must be an int in 0..2**63-2, got {step!r}")
    return step


class DerivedCache(dict):
    """A dict of data derived from particular array objects (their ids, addresses,
    headers): any copy of it, shallow, deep or pickled, is empty, because a copy of such
    data would describe arrays it does not hold."""

    def __reduce__(self):
        return type(self), ()

    def __copy__(self):
        return type(self)()

    def __deepcopy__(self, memo):
        return type(self)()


@dataclass
class AdamState:
    """Step count and per-tensor moments, arrays of the backend's type.

    ``step`` is 0 before the first update; ``max_exp_avg_sq`` is None unless amsgrad.
    With int8 state (``AdamConfig(state_dtype="int8")``, see ``backends.int8_codec``) a
    int8 tensor's moment entry holds its uint8 codes and the matching ``*_scale``
    entry its float32 per-block scales; the scale entry is None for a tensor whose state is
    full precision, and the ``*_scale`` lists are None when no tensor has int8 state.
    With low-precision params (``backends.formats``) ``master_params`` holds the float32
    master copies (``AdamConfig(master_weights=True)``) and ``compensation`` the Kahan
    compensation, in the params' dtype (``rounding="kahan"``); both are None otherwise.
    ``cache`` holds backend-private data derived from these very arrays (checks passed,
    address tables): it is never saved, copied or pickled, so a copy of a state (deepcopy,
    pickle, ``copy.copy``, ``dataclasses.replace``) starts with an empty cache and is
    checked afresh at its first step.
    """

    step: int
    exp_avg: list
    exp_avg_sq: list
    max_exp_avg_sq: list | None = None
    exp_avg_scale: list | None = None
    exp_avg_sq_scale: list | None = None
    max_exp_avg_sq_scale: list | None = None
    master_params: list | None = None
    compensation: list | None = None
    cache: dict[str, Any] = field(default_factory=DerivedCache, init=False, repr=False,
                                  compare=False)

    def __getstate__(self) -> dict:
        """For copy and pickle: the fields, with a new empty cache (not a shared one)."""
        return {**self.__dict__, "cache": DerivedCache()}

    def to_dict(self) -> dict:
        """Host NumPy copies: {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}, and
        with int8 state their "*_scale" lists (None entries for full-precision tensors),
        with low-precision params "master_params" or "compensation" when used."""
        out = {"step": checked_step(self.step)}
        for name in ARRAY_FIELDS:
            arrays = getattr(self, name)
            if arrays is None and name not in _MOMENTS:
                continue
            out[name] = None if arrays is None else [
                None if a is None else np.array(to_host(a)) for a in arrays]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "AdamState":
        """A state of host NumPy arrays (copies) from ``to_dict`` output; second moments
        and int8 scales must not be negative (NaN is allowed: NaN gradients make it): a
        negative scale would flip m's sign, or make v negative and params NaN."""
        if not isinstance(d, dict):
            raise ValueError(f"state dict must be a dict, got {type(d).__name__}")
        missing = [k for k in ("step", "exp_avg", "exp_avg_sq") if k not in d]
        if missing:
            raise ValueError(f"state dict lacks {missing}")
        step = checked_step(d["step"], "state dict step")
        moments = {}
        for name in ARRAY_FIELDS:
            arrays = d.get(name)
            moments[name] = None if arrays is None else [
                None if a is None and name in _SCALES else np.array(a, copy=True)
                for a in arrays]
        if moments["exp_avg"] is None or moments["exp_avg_sq"] is None:
            raise ValueError("state dict has no exp_avg or exp_avg_sq arrays")
        if len(moments["exp_avg"]) != len(moments["exp_avg_sq"]):
            raise ValueError("state dict exp_avg and exp_avg_sq differ in length")
        never_negative = {"exp_avg_sq": "a second moment", "max_exp_avg_sq": "a second moment",
                          **{name: "an int8 block's scale" for name in _SCALES}}
        for name, what in never_negative.items():
            for i, a in enumerate(moments[name] or ()):
                real = a is not None and (a.dtype.kind == "f" or a.dtype == BFLOAT16)
                if real and np.any(a < 0):
                    raise ValueError(f"state dict {name}[{i}] holds negative values; "
                                     f"{what} is never negative")
        return cls(step=step, **moments)
