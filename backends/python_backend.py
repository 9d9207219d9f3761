"""Backend "python": the update in plain Python over memoryviews, no NumPy in the loop.

It computes each element in double precision with the ``math`` module and rounds once on
store, then continues from the stored moments, so float32 state means what it means in
the compiled kernels (a second moment that overflows float32 is stored, and used, as inf).
"""
from __future__ import annotations

import math

from .base import Backend
from .scalars import StepScalars

__all__ = ["PythonBackend"]


class PythonBackend(Backend):
    """Readable and slow: the scalar loop that every fused kernel mirrors."""

    name = "python"
    device = "cpu"

    def _update(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t, dtype,
                cache):
        scalars = StepScalars.for_step(cfg, t)
        for i in range(len(params)):
            vmax = None if max_exp_avg_sq is None else _view(max_exp_avg_sq[i])
            _adam_loop(_view(params[i]), _view(grads[i]), _view(exp_avg[i]),
                       _view(exp_avg_sq[i]), vmax, scalars)


def _view(a) -> memoryview:
    return memoryview(a.reshape(-1))


def _store(buf: memoryview, i: int, x: float) -> None:
    """buf[i] = x rounded to the buffer's type; a float32 overflow stores inf, as in C."""
    try:
        buf[i] = x
    except OverflowError:
        buf[i] = math.copysign(math.inf, x)


def _adam_loop(p, g, m, v, vmax, s) -> None:
    sqrt = math.sqrt
    for i in range(len(p)):
        gi = s.sign * g[i]
        pi = p[i]
        if s.use_l2:
            gi = s.l2 * pi + gi  # this operand order, as LLVM compiles it: the same NaN wins
        pi = s.decay * pi
        _store(m, i, s.beta1 * m[i] + s.one_minus_beta1 * gi)
        _store(v, i, s.beta2 * v[i] + (s.one_minus_beta2 * gi) * gi)
        mi, vi = m[i], v[i]
        if vmax is not None:
            if vi > vmax[i] or vi != vi:
                vmax[i] = vi
            vi = vmax[i]
        _store(p, i, pi - s.step_size * mi / (sqrt(vi) * s.inv_sqrt_bc2 + s.eps))
