"""What the two GPU backends share: device-resident state and one launch per step.

``init_state`` puts all moments of a step in one device allocation (views into it), and
``_update`` launches once over the whole span when the params, grads and moments of the
step each lie back to back in memory (as ``flatten`` arranges); otherwise it launches once
per tensor. That plan is made when the arrays change, not every step (nor for a new
config). Device memory is allocated only in ``init_state``, never in a step.
"""
from __future__ import annotations

import operator
import time

import numpy as np

from ..base import Backend
from ..formats import BFLOAT16
from ..memory import first_of_contiguous
from ..scalars import StepScalars
from ..validation import FLOAT_DTYPES

__all__ = ["GpuBackend", "MAX_INT8_GRID"]

#: Most thread blocks of an int8 state launch (one warp each, looping over the state
#: blocks beyond): 32 resident per SM on an H100's 132 SMs is 4224.
MAX_INT8_GRID = 8192


class GpuBackend(Backend):
    """Subclasses provide ``empty``, ``address``, ``span`` and ``_launch``."""

    device = "cuda"

    def address(self, a) -> int:
        """Device address of a's first element."""
        raise NotImplementedError

    def span(self, first, n: int):
        """A 1-D device array of n elements starting at ``first``'s first element."""
        raise NotImplementedError

    def _launch(self, p, g, m, v, vmax, scalars, dtype) -> None:
        """One kernel launch over 1-D arrays (``vmax`` is None unless amsgrad)."""
        raise NotImplementedError

    def _launch_int8(self, p, g, moments, scalars) -> None:
        """One launch of the int8 kernel over one float32 tensor with int8 state (1-D ``p``,
        ``g``; ``moments`` as in ``Backend._update_int8``)."""
        raise NotImplementedError

    def event_timer(self):
        """(start, stop) timing device work with CUDA events: ``start()`` records one,
        ``stop()`` records another, waits for it and returns the seconds between them as
        the GPU measured them. None where there are no events (the CUDA simulator)."""
        raise NotImplementedError

    def _timed_warm_up(self) -> float:
        """Compile every kernel variant (int8 state's too) with one tiny launch each;
        returns seconds."""
        from ..config import AdamConfig

        start = time.perf_counter()
        for dtype in FLOAT_DTYPES:
            for amsgrad in (False, True):
                arrays = [self.asarray(np.ones(1, dtype)) for _ in range(5)]
                scalars = StepScalars.for_step(AdamConfig(amsgrad=amsgrad), 1)
                self._launch(*arrays[:4], arrays[4] if amsgrad else None, scalars, dtype)
        for amsgrad in (False, True):
            p, g = (self.asarray(np.ones(1, np.float32)) for _ in range(2))
            pairs = [(self.asarray(np.zeros(1, np.uint8)), self.asarray(np.zeros(1, np.float32)))
                     for _ in range(3)]
            self._launch_int8(p, g, (*pairs[:2], pairs[2] if amsgrad else None),
                                   StepScalars.for_step(AdamConfig(amsgrad=amsgrad), 1))
        self.synchronize()
        return time.perf_counter() - start

    def _update(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t, dtype,
                cache, lr=None):
        columns = [params, grads, exp_avg, exp_avg_sq]
        if max_exp_avg_sq is not None:
            columns.append(max_exp_avg_sq)
        sources = cache["validated"]["columns"][:len(columns)]
        plan = cache.get((GpuBackend, dtype))
        if (plan is None or len(plan[0]) != len(sources)
                or any(map(operator.is_not, plan[0], sources))):
            plan = cache[(GpuBackend, dtype)] = (sources, self._launches(columns))
        scalars = StepScalars.for_step(cfg, t, lr)
        for p, g, m, v, *vmax in plan[1]:
            self._launch(p, g, m, v, vmax[0] if vmax else None, scalars, dtype)

    def _low_precision_array(self, a):
        """A bfloat16 array as its uint16 bits (the kernels' form), made once per plan."""
        return a.view(np.uint16) if a.dtype == BFLOAT16 else a

    def _update_int8(self, p, g, moments, cfg, t, lr=None) -> None:
        if p.size:
            self._launch_int8(p, g, moments, StepScalars.for_step(cfg, t, lr))

    def _launches(self, columns) -> list[tuple]:
        """The 1-D arrays of each launch: one launch over whole spans when every column
        lies back to back, else one per tensor. Kept until some column's arrays change
        (the validation's column lists, see Backend._validate; a new config, e.g. a learning
        rate schedule's, keeps it), so a step reads no addresses."""
        spans = [self._as_span(arrays) for arrays in columns]
        if all(s is not None for s in spans):
            return [tuple(spans)]
        return [tuple(arrays[i].reshape(-1) for arrays in columns)
                for i in range(len(columns[0]))]

    def _as_span(self, arrays):
        """One 1-D array over all of ``arrays`` if they lie back to back, else None."""
        if len(arrays) == 1:
            return arrays[0].reshape(-1)
        sizes = [int(a.size) for a in arrays]
        first = first_of_contiguous([self.address(a) for a in arrays], sizes,
                                    arrays[0].dtype.itemsize)
        return None if first is None else self.span(arrays[first], sum(sizes))
