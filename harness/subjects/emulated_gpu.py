"""The GPU kernels' arithmetic on the CPU: each operation in the order the compiled
kernel performs it, with its fused multiply-adds rounded once.

Both GPU kernels (Numba CUDA and CuPy) compile to the same per-element sequence (read
from their PTX, checked by tests/test_machine_code.py against ``element_ops``)::

    g  = sign * g
    g  = fma(l2, p, g)                       if use_l2
    m  = fma(beta1, m, one_minus_beta1 * g)
    v  = fma(beta2, v, g * (one_minus_beta2 * g))
    vu = max(vmax, v) (NaN wins)             if amsgrad
    q  = (step_size * m) / fma(sqrt(vu), inv_sqrt_bc2, eps)
    p  = fma(decay, p, -q)                   (ptxas fuses PTX's mul.f32 + sub.f32)

Exact FMA. float32: a*b is exact in float64 (24+24 bits); the sum's float64 rounding
is made round-to-odd (TwoSum gives the exact error; an even result with a nonzero error
moves one ulp towards it), and rounding a round-to-odd value with 53 >= 24 + 2 bits to
float32 is the correct rounding of the exact sum (Boldo & Melquiond, IEEE TC 57(4),
2008), also into float32's subnormals. float64: their algorithm with Dekker's exact
product: a*b = uh + ul, c + uh = th + tl, v = odd(tl + ul), fma = th + v; exact unless
a*b is below 2^-969, where ul underflows (possible only in the subnormal edge case).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from backends import AdamConfig
from backends.scalars import StepScalars

from ..core.steppers import Stepper

__all__ = ["fma", "gpu_element_update", "CountingOps", "EmulatedGpuStepper", "EMULATED"]

#: The emulated subjects: the backends whose kernels this module reproduces.
EMULATED = ("numba-cuda", "cupy")


def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _add_round_to_odd(a, b):
    """a + b in float64 rounded to odd: exact, or the neighbour with an odd last bit."""
    s, err = _two_sum(a, b)
    inexact = np.isfinite(err) & (err != 0) & ((s.view(np.int64) & 1) == 0)
    return np.where(inexact, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)


def _split(a):
    hi = a * 134217729.0  # 2^27 + 1: Veltkamp's split into two 26-bit halves
    hi = hi - (hi - a)
    return hi, a - hi


def _two_product(a, b):
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def fma(a, b, c):
    """a * b + c rounded once, elementwise, in the inputs' dtype (float32 or float64)."""
    a, b, c = np.broadcast_arrays(*np.atleast_1d(a, b, c))
    dtype = np.result_type(a, b, c)
    with np.errstate(all="ignore"):
        if dtype == np.float32:
            product = a.astype(np.float64) * b.astype(np.float64)
            exact = _add_round_to_odd(product, c.astype(np.float64))
            return np.where(np.isfinite(exact), exact, product + c).astype(np.float32)
        uh, ul = _two_product(a, b)
        th, tl = _two_sum(c, uh)
        result = th + _add_round_to_odd(tl, ul)
        return np.where(np.isfinite(result) & np.isfinite(uh), result, a * b + c)


class _NumpyOps:
    """The kernels' operations on arrays of one dtype (each rounds once)."""

    fma = staticmethod(fma)
    mul = staticmethod(np.multiply)
    div = staticmethod(np.divide)
    sqrt = staticmethod(np.sqrt)


class CountingOps(_NumpyOps):
    """The same operations, counted: the tests compare these counts with the PTX's."""

    def __init__(self):
        self.counts: Counter = Counter()

    def __getattribute__(self, name):
        if name in ("fma", "mul", "div", "sqrt"):
            object.__getattribute__(self, "counts")[name] += 1
        return object.__getattribute__(self, name)


def gpu_element_update(ops, p, g, m, v, vmax, s: StepScalars, dtype):
    """(p, m, v, vmax) after one step, in the GPU kernels' order (module docstring)."""
    c = [dtype.type(x) for x in s.floats()]
    sign, l2, decay, beta1, omb1, beta2, omb2, step_size, inv_sqrt_bc2, eps = c
    with np.errstate(all="ignore"):
        g = ops.mul(sign, g)
        if s.use_l2:
            g = ops.fma(l2, p, g)
        m = ops.fma(beta1, m, ops.mul(omb1, g))
        v = ops.fma(beta2, v, ops.mul(g, ops.mul(omb2, g)))
        used = v
        if vmax is not None:
            vmax = used = np.where((v > vmax) | np.isnan(v), v, vmax)
        q = ops.div(ops.mul(step_size, m), ops.fma(ops.sqrt(used), inv_sqrt_bc2, eps))
        p = ops.fma(decay, p, -q)
    return p, m, v, vmax


class EmulatedGpuStepper(Stepper):
    """A Stepper computing what ``backend``'s GPU kernel computes, on host arrays (one
    flat array per quantity, as a GPU step over ``flatten``'s buffer)."""

    kind = "emulated"
    device = "cpu"

    def __init__(self, backend: str, params, cfg: AdamConfig):
        self.label = f"{backend} (emulated)"
        self.cfg = cfg
        self.shapes = [p.shape for p in params]
        self.dtype = np.result_type(*params) if params else np.dtype(np.float32)
        self.p = np.concatenate([p.reshape(-1) for p in params]).astype(self.dtype)
        self.m = np.zeros_like(self.p)
        self.v = np.zeros_like(self.p)
        self.vmax = np.zeros_like(self.p) if cfg.amsgrad else None
        self.t = 0

    def prepare(self, grads):
        return np.concatenate([g.reshape(-1) for g in grads]).astype(self.dtype)

    def step(self, prepared) -> None:
        self.t += 1
        scalars = StepScalars.for_step(self.cfg, self.t)
        self.p, self.m, self.v, self.vmax = gpu_element_update(
            _NumpyOps, self.p, prepared, self.m, self.v, self.vmax, scalars, self.dtype)

    def _split(self, flat):
        sizes = np.cumsum([int(np.prod(s)) for s in self.shapes])[:-1]
        return [a.reshape(s).copy() for a, s in zip(np.split(flat, sizes), self.shapes)]

    def params(self):
        return self._split(self.p)

    def moments(self):
        return {"exp_avg": self._split(self.m), "exp_avg_sq": self._split(self.v),
                "max_exp_avg_sq": None if self.vmax is None else self._split(self.vmax)}
