"""Backend "python": the update in plain Python over memoryviews, no NumPy in the loop.

It computes each element in double precision with the ``math`` module and rounds once on
store, then continues from the stored moments, so float32 state means what it means in
the compiled kernels (a second moment that overflows float32 is stored, and used, as inf).
"""
from __future__ import annotations

import math
import struct

from .. import blockwise as bw
from ..base import Backend
from ..scalars import StepScalars

__all__ = ["PythonBackend"]


class PythonBackend(Backend):
    """Readable and slow: the scalar loop that every fused kernel mirrors."""

    name = "python"
    device = "cpu"
    supports_int8_state = True

    def _update(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t, dtype,
                cache, lr=None):
        scalars = StepScalars.for_step(cfg, t, lr)
        for i in range(len(params)):
            vmax = None if max_exp_avg_sq is None else _view(max_exp_avg_sq[i])
            _adam_loop(_view(params[i]), _view(grads[i]), _view(exp_avg[i]),
                       _view(exp_avg_sq[i]), vmax, scalars)


    def _update_quantized(self, p, g, moments, cfg, t, lr=None) -> None:
        scalars = StepScalars.for_step(cfg, t, lr)
        p, g = memoryview(p), memoryview(g)
        views = [None if pair is None else (memoryview(pair[0]), memoryview(pair[1]))
                 for pair in moments]
        for b in range(bw.n_blocks(len(p))):
            _quantized_block(p, g, views, b * bw.BLOCK, min(len(p), (b + 1) * bw.BLOCK), b,
                             scalars)


def _quantized_block(p, g, moments, start, stop, b, s) -> None:
    """One block of ``blockwise``'s step: dequantize, the double-precision body of
    ``_adam_loop``, then absmax and nearest codes of each new moment (rounded to float32
    first, as the kernels hold them)."""
    (mc, ms), (vc, vs), vmax = moments
    new = ([], [], [])
    for i in range(start, stop):
        gi = s.sign * g[i]
        pi = p[i]
        if s.use_l2:
            gi = s.l2 * pi + gi
        pi = s.decay * pi
        mi = _f32(s.beta1 * _decode(mc[i], ms[b], True) + s.one_minus_beta1 * gi)
        vi = _f32(s.beta2 * _decode(vc[i], vs[b], False) + (s.one_minus_beta2 * gi) * gi)
        used = vi
        if vmax is not None:
            used = max(_decode(vmax[0][i], vmax[1][b], False), vi)
            new[2].append(used)
        new[0].append(mi)
        new[1].append(vi)
        _store(p, i, pi - s.step_size * mi / (math.sqrt(used) * s.inv_sqrt_bc2 + s.eps))
    for pair, values, signed in zip(moments, new, (True, False, False)):
        if pair is None:
            continue
        codes, scales = pair
        # a NaN wins, as in the kernels' maximum of magnitude bits (max() would skip it)
        scales[b] = math.nan if any(map(math.isnan, values)) else max(map(abs, values))
        inverse = _f32(1.0 / scales[b]) if scales[b] > 0 else 0.0
        nonfinite = signed and not math.isfinite(scales[b])
        for i, value in zip(range(start, stop), values):
            codes[i] = bw.M_NONFINITE_CODE if nonfinite else _encode(_f32(value * inverse),
                                                                       signed)


def _f32(x: float) -> float:
    """x rounded to float32 (inf where it overflows, as in C)."""
    try:
        return struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def _decode(code: int, scale: float, signed: bool) -> float:
    if signed:
        return math.copysign(bw.M_VALUES[code & 127], -1.0 if code & 128 else 1.0) * scale
    return bw.V_VALUES[code] * scale


def _encode(x: float, signed: bool) -> int:
    """The float32 x's code: ``blockwise.quantize_m`` / ``quantize_v`` on one value."""
    bits = struct.unpack("I", struct.pack("f", x))[0]
    u = bits & 0x7FFFFFFF
    if not signed:
        return max(0, min(255, ((u + bw.V_HALF) >> bw.V_SHIFT) - bw.V_BIAS))
    k = max(0, min(127, ((u + bw.M_HALF) >> bw.M_SHIFT) - bw.M_BIAS))
    return (bits >> 31) << 7 | k


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
