"""Backend "python": the update in plain Python over memoryviews, no NumPy in the loop.

It computes each element in double precision with the ``math`` module and rounds once on
store, then continues from the stored moments, so float32 state means what it means in
the compiled kernels (a second moment that overflows float32 is stored, and used, as inf).
"""
from __future__ import annotations

import math
import struct

import numpy as np

from .. import int8_codec as codec
from ..base import Backend
from ..formats import BFLOAT16, FLOAT32, random16
from ..scalars import StepScalars

__all__ = ["PythonBackend"]


class PythonBackend(Backend):
    """Readable and slow: the scalar loop that every fused kernel mirrors."""

    name = "python"
    device = "cpu"
    supports_int8_state = True
    supports_low_precision = True

    def _update(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t, dtype,
                cache, lr=None):
        scalars = StepScalars.for_step(cfg, t, lr)
        for i in range(len(params)):
            vmax = None if max_exp_avg_sq is None else _view(max_exp_avg_sq[i])
            _adam_loop(_view(params[i]), _view(grads[i]), _view(exp_avg[i]),
                       _view(exp_avg_sq[i]), vmax, scalars)

    def _update_low_precision(self, p, g, m, v, vmax, master, compensation, cfg, t,
                              key, lr=None) -> None:
        """Every operation of the float32 kernels' body in double, rounded to float32
        after each one (exactly float32's result: double has more than 2 * 24 + 2 bits),
        then ``formats``' roundings on the integer bits."""
        s = StepScalars.for_step(cfg, t, lr)
        c = [_f32(x) for x in s.floats()]
        random = random16(key, 0, p.size).tolist() if key is not None else None
        loads = [_Format(a) if a is not None else None
                 for a in (p, g, m, v, vmax, master, compensation)]
        fp, fg, fm, fv, fx, fw, fc = loads
        for i in range(p.size):
            w = fw.load(i) if fw is not None else fp.load(i)
            w, mi, vi, xi = _f32_element(w, fg.load(i), fm.load(i), fv.load(i),
                                         fx.load(i) if fx is not None else None, c,
                                         s.use_l2)
            fm.store_nearest(i, mi)
            fv.store_nearest(i, vi)
            if fx is not None:
                fx.store_nearest(i, xi)
            if fw is not None:
                fw.store_nearest(i, w)
                fp.store_nearest(i, w)
            elif fc is not None:
                x = _f32(w + fc.load(i))
                fp.store_nearest(i, x)
                fc.store_nearest(i, _f32(x - fp.load(i)))
            elif random is not None:
                fp.store_bits(i, _bf16_bits(_f32_bits(w), random[i]))
            else:
                fp.store_nearest(i, w)

    def _update_int8(self, p, g, moments, cfg, t, lr=None) -> None:
        scalars = StepScalars.for_step(cfg, t, lr)
        p, g = memoryview(p), memoryview(g)
        views = [None if pair is None else (memoryview(pair[0]), memoryview(pair[1]))
                 for pair in moments]
        for b in range(codec.n_blocks(len(p))):
            _int8_block(p, g, views, b * codec.BLOCK, min(len(p), (b + 1) * codec.BLOCK), b,
                             scalars)


def _int8_block(p, g, moments, start, stop, b, s) -> None:
    """One block of ``int8_codec``'s step: decode, the double-precision body of
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
            codes[i] = codec.M_NONFINITE_CODE if nonfinite else _encode(_f32(value * inverse),
                                                                       signed)


def _f32(x: float) -> float:
    """x rounded to float32 (inf where it overflows, as in C)."""
    try:
        return struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def _decode(code: int, scale: float, signed: bool) -> float:
    if signed:
        return math.copysign(codec.M_VALUES[code & 127], -1.0 if code & 128 else 1.0) * scale
    return codec.V_VALUES[code] * scale


def _encode(x: float, signed: bool) -> int:
    """The float32 x's code: ``int8_codec.encode_m`` / ``encode_v`` on one value."""
    bits = struct.unpack("I", struct.pack("f", x))[0]
    u = bits & 0x7FFFFFFF
    if not signed:
        return max(0, min(255, ((u + codec.V_HALF) >> codec.V_SHIFT) - codec.V_BIAS))
    k = max(0, min(127, ((u + codec.M_HALF) >> codec.M_SHIFT) - codec.M_BIAS))
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


def _f32_element(p, g, m, v, vmax, c, use_l2):
    """The kernels' body (``backends.scalars``) in float32, one rounding per operation:
    (new weight, m, v, vmax)."""
    sign, l2, decay, beta1, omb1, beta2, omb2, step_size, inv_sqrt_bc2, eps = c
    g = _f32(sign * g)
    if use_l2:
        g = _f32(_f32(l2 * p) + g)
    p = _f32(decay * p)
    m = _f32(_f32(beta1 * m) + _f32(omb1 * g))
    v = _f32(_f32(beta2 * v) + _f32(_f32(omb2 * g) * g))
    used = v
    if vmax is not None:
        used = vmax = vmax if vmax != vmax else (v if v != v or v > vmax else vmax)
    denominator = _f32(_f32(_f32(math.sqrt(used)) * inv_sqrt_bc2) + eps)
    return _f32(p - _f32(_f32(step_size * m) / denominator)), m, v, vmax


def _f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def _bf16_bits(bits: int, addend: int) -> int:
    """bfloat16 bits of float32 ``bits`` plus the rounding's ``addend``, high half; a NaN
    keeps its sign and top bits, made quiet (as ``formats.bf16_nearest_bits``)."""
    if (bits & 0x7FFFFFFF) > 0x7F800000:
        return bits >> 16 | 0x40
    return (bits + addend) >> 16


class _Format:
    """Loads (float32 values) and rounded stores of one 1-D bfloat16, float16 or float32
    array, through a memoryview of its bits."""

    def __init__(self, a):
        self.dtype = a.dtype
        self.bits = memoryview(a.view(np.uint32 if a.dtype == FLOAT32 else np.uint16))

    def load(self, i) -> float:
        b = self.bits[i]
        if self.dtype == FLOAT32:
            return struct.unpack("<f", struct.pack("<I", b))[0]
        if self.dtype == BFLOAT16:
            return struct.unpack("<f", struct.pack("<I", b << 16))[0]
        return struct.unpack("<e", struct.pack("<H", b))[0]

    def store_bits(self, i, bits) -> None:
        self.bits[i] = bits

    def store_nearest(self, i, x: float) -> None:
        """x (a float32 value) rounded to nearest even in this array's format."""
        bits = _f32_bits(x)
        if self.dtype == FLOAT32:
            self.bits[i] = bits
        elif self.dtype == BFLOAT16:
            self.bits[i] = _bf16_bits(bits, 0x7FFF + (bits >> 16 & 1))
        else:
            self.bits[i] = _f16_bits(x)


def _f16_bits(x: float) -> int:
    """float16 bits of x rounded to nearest even (inf beyond float16's range)."""
    try:
        return struct.unpack("<H", struct.pack("<e", x))[0]
    except OverflowError:
        return 0xFC00 if x < 0 else 0x7C00
