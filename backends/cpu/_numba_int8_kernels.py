"""Numba CPU kernels for int8 state (``backends.int8_codec``): the Adam step and its
roofline.

Threads take chunks of CHUNK_BLOCKS blocks. Per block, one vectorized loop decodes the
codes, runs the float32 Adam body shared with the fp32 kernels, writes p, keeps the new
moments in a block-sized scratch and takes their absmax as the maximum of their magnitude
bits (a NaN's exceed every number's, as in NumPy's max over the bits); a second loop per
moment encodes the scratch. Every operation is the one ``int8_codec.step_blocks_numpy``
makes, so the bits agree. Measured here at 2^24 float32 (2 threads): fusing the absmax
into the first loop took the step from 0.64 to 0.79 of the int8 roofline; per-block
carrays instead of slices (no reference counting per 256 elements) from 0.45 to 0.64.
The step is compute-bound (about 55 vector instructions per 16 elements against the fp32
step's 20); in cache on one thread, 16-bit lanes for the codes and a loop without the
multiplications by maximize's sign and the decay factor took it from 0.70 to 0.61 ns per
element (the fp32 step: 0.34). Tried and dropped: encoding the previous block inside the
next block's loop (0.79 ns: runtime alias checks per block), one encoding loop for m and
v, 16-bit lanes for decoding, wider blocks (4096: 0.65 ns).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, njit, prange, types
from numba.extending import intrinsic

from ..int8_codec import (BLOCK, M_BIAS, M_HALF, M_NONFINITE_CODE, M_SHIFT, V_BIAS, V_HALF,
                          V_SHIFT)
from ._numba_kernels import (KERNEL_OPTIONS, _adam_element, _constants, _pointer,
                             _serial_twin)

__all__ = ["adam_int8", "adam_int8_serial", "roofline_int8", "compile_all", "CHUNK_BLOCKS"]

#: Blocks per parallel task (16384 elements): its scratch stays in L2.
CHUNK_BLOCKS = 64


_I8, _I16, _I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
#: Where the float32 sign bit lands once m's bits are shifted right by M_SHIFT.
_M_SIGN = 31 - M_SHIFT
#: The bits of float32 inf (a larger magnitude is a NaN) and m's code of such blocks.
_INF_BITS = np.uint32(0x7F800000)
_M_NONFINITE = np.uint8(M_NONFINITE_CODE)


def _const(kind: ir.IntType, value: int) -> ir.Constant:
    return ir.Constant(kind, value)


def _unsigned_clamp(builder, x, low, high):
    """Unsigned ``x`` clamped to [low, high] (both of x's type)."""
    x = builder.select(builder.icmp_unsigned(">", x, low), x, low)
    return builder.select(builder.icmp_unsigned("<", x, high), x, high)


# The codes' integer work is written in LLVM IR: Numba would widen every uint32 operation
# to int64. After the rounding add and shift the bits left fit 16-bit lanes, which hold
# twice as many elements per vector register: encoding m that way took the numba step
# from 0.70 to 0.61 ns per element on one thread in cache.
@intrinsic
def _encode_m(typingctx, x):
    """float32 x -> m code (int8_codec.encode_m on one value)."""
    def codegen(context, builder, sig, args):
        bits = builder.bitcast(args[0], _I32)
        # the sign at bit _M_SIGN, the rounded exponent and 3 mantissa bits below it
        kept = builder.lshr(builder.add(bits, _const(_I32, M_HALF)), _const(_I32, M_SHIFT))
        kept = builder.trunc(kept, _I16)
        magnitude = builder.and_(kept, _const(_I16, (1 << _M_SIGN) - 1))
        k = builder.sub(_unsigned_clamp(builder, magnitude, _const(_I16, M_BIAS),
                                        _const(_I16, M_BIAS + 127)), _const(_I16, M_BIAS))
        sign = builder.and_(builder.lshr(kept, _const(_I16, _M_SIGN - 7)), _const(_I16, 0x80))
        return builder.trunc(builder.or_(sign, k), _I8)

    return types.uint8(types.float32), codegen


@intrinsic
def _encode_v(typingctx, x):
    """float32 x -> v code (int8_codec.encode_v on one value; x >= +0 or NaN, so the
    sign bit, set only on a NaN, clamps to 255 as the magnitude would)."""
    def codegen(context, builder, sig, args):
        bits = builder.bitcast(args[0], _I32)
        kept = builder.lshr(builder.add(bits, _const(_I32, V_HALF)), _const(_I32, V_SHIFT))
        kept = builder.trunc(kept, _I16)
        c = builder.sub(_unsigned_clamp(builder, kept, _const(_I16, V_BIAS),
                                        _const(_I16, V_BIAS + 255)), _const(_I16, V_BIAS))
        return builder.trunc(c, _I8)

    return types.uint8(types.float32), codegen


@intrinsic
def _decode_m(typingctx, code):
    """m code -> float32 map value (int8_codec.decode_m on one code)."""
    def codegen(context, builder, sig, args):
        high = builder.shl(builder.zext(args[0], _I32), _const(_I32, 24))  # sign at bit 31
        bits = builder.or_(builder.and_(high, _const(_I32, -1 << 31)),
                           builder.and_(builder.lshr(high, _const(_I32, _M_SIGN - 7)),
                                        _const(_I32, 127 << M_SHIFT)))
        biased = builder.add(bits, _const(_I32, M_BIAS << M_SHIFT))
        zero = builder.icmp_unsigned("==", builder.and_(args[0], _const(_I8, 127)),
                                     _const(_I8, 0))
        return builder.bitcast(builder.select(zero, bits, biased), ir.FloatType())

    return types.float32(types.uint8), codegen


@intrinsic
def _decode_v(typingctx, code):
    """v code -> float32 map value (int8_codec.decode_v on one code)."""
    def codegen(context, builder, sig, args):
        c = builder.zext(args[0], _I32)
        bits = builder.shl(builder.add(c, _const(_I32, V_BIAS)), _const(_I32, V_SHIFT))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.uint8), codegen


@intrinsic
def _max_magnitude_bits(typingctx, best, x):
    """max(best, bits of |x|) as uint32 (a NaN's bits exceed every number's)."""
    def codegen(context, builder, sig, args):
        u = builder.and_(builder.bitcast(args[1], _I32), _const(_I32, 0x7FFFFFFF))
        return builder.select(builder.icmp_unsigned(">", u, args[0]), u, args[0])

    return types.uint32(types.uint32, types.float32), codegen


@intrinsic
def _from_bits(typingctx, u):
    """uint32 bits as a float32."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@njit(inline="always", cache=True)
def _inverse(absmax_bits):
    scale = _from_bits(absmax_bits)
    return scale, (np.float32(1) / scale if scale > 0 else np.float32(0))


def _adam_int8(p, g, mc, ms, vc, vs, xc, xs, hyper, t):
    """One int8 tensor (1-D views; ``xc``, ``xs`` the amsgrad maximum's codes and
    scales, only written with amsgrad)."""
    constants, use_l2, amsgrad = _constants(hyper, t, p)
    f32, u8 = constants[9], np.uint8(0)
    plain = constants[0] == 1 and constants[2] == 1 and not use_l2
    n = p.size
    blocks = (n + BLOCK - 1) // BLOCK
    chunks = (blocks + CHUNK_BLOCKS - 1) // CHUNK_BLOCKS
    addresses = (p.ctypes.data, g.ctypes.data, mc.ctypes.data, vc.ctypes.data,
                 xc.ctypes.data)
    for chunk in prange(chunks):
        m_new = np.empty(BLOCK, np.float32)
        v_new = np.empty(BLOCK, np.float32)
        x_new = np.empty(BLOCK, np.float32)
        for b in range(chunk * CHUNK_BLOCKS, min(blocks, (chunk + 1) * CHUNK_BLOCKS)):
            start = b * BLOCK
            size = min(BLOCK, n - start)
            # each block's arrays from 0, so loops vectorize (see _numba_kernels._adam_table),
            # as carrays: slices of p would cost reference counting per 256 elements
            pb = carray(_pointer(addresses[0] + 4 * start, f32), size)
            gb = carray(_pointer(addresses[1] + 4 * start, f32), size)
            mb = carray(_pointer(addresses[2] + start, u8), size)
            vb = carray(_pointer(addresses[3] + start, u8), size)
            xb = carray(_pointer(addresses[4] + start, u8), size)
            x_scale = xs[b] if amsgrad else vs[b]
            if plain:
                m_max, v_max, x_max = _block_update(
                    pb, gb, mb, ms[b], vb, vs[b], xb, x_scale, m_new, v_new, x_new,
                    _without_sign_and_decay(constants), False, amsgrad)
            else:
                m_max, v_max, x_max = _block_update(
                    pb, gb, mb, ms[b], vb, vs[b], xb, x_scale, m_new, v_new, x_new,
                    constants, use_l2, amsgrad)
            ms[b] = _encode_block(m_new, mb, m_max, True)
            vs[b] = _encode_block(v_new, vb, v_max, False)
            if amsgrad:
                xs[b] = _encode_block(x_new, xb, x_max, False)


@njit(inline="always", cache=True)
def _without_sign_and_decay(constants):
    """``constants`` with sign and decay the literal 1 and l2 0 they equal without
    maximize and weight decay: the loop given them multiplies by neither (one
    multiplication per element fewer each; x * 1 is x, so the bits are the same)."""
    one, zero = np.float32(1), np.float32(0)
    return (one, zero, one) + constants[3:]


@njit(inline="always", cache=True)
def _block_update(p, g, mc, m_scale, vc, v_scale, xc, x_scale, m_new, v_new, x_new,
                  constants, use_l2, amsgrad):
    """Decode, the float32 Adam body, p written and the new moments kept, with
    the bits of their absmax (two loops, so the common one does no amsgrad work)."""
    m_max = v_max = x_max = np.uint32(0)
    if amsgrad:
        for j in range(p.size):
            p[j], m, v, x = _adam_element(
                p[j], g[j], _decode_m(mc[j]) * m_scale, _decode_v(vc[j]) * v_scale,
                _decode_v(xc[j]) * x_scale, constants, use_l2, True)
            m_new[j], v_new[j], x_new[j] = m, v, x
            m_max = _max_magnitude_bits(m_max, m)
            v_max = _max_magnitude_bits(v_max, v)
            x_max = _max_magnitude_bits(x_max, x)
    else:
        for j in range(p.size):
            p[j], m, v, _ = _adam_element(
                p[j], g[j], _decode_m(mc[j]) * m_scale, _decode_v(vc[j]) * v_scale,
                np.float32(0), constants, use_l2, False)
            m_new[j], v_new[j] = m, v
            m_max = _max_magnitude_bits(m_max, m)
            v_max = _max_magnitude_bits(v_max, v)
    return m_max, v_max, x_max


@njit(inline="always", cache=True)
def _encode_block(values, codes, absmax_bits, signed):
    """``codes`` of ``values[:codes.size]`` against their absmax; returns the absmax.
    m's codes of a block whose absmax is inf or NaN are all M_NONFINITE_CODE."""
    scale, inverse = _inverse(absmax_bits)
    if signed and absmax_bits >= _INF_BITS:
        for j in range(codes.size):
            codes[j] = _M_NONFINITE
    elif signed:
        for j in range(codes.size):
            codes[j] = _encode_m(values[j] * inverse)
    else:
        for j in range(codes.size):
            codes[j] = _encode_v(values[j] * inverse)
    return scale


adam_int8 = njit(parallel=True, **KERNEL_OPTIONS)(_adam_int8)
adam_int8_serial = njit(**KERNEL_OPTIONS)(_serial_twin(_adam_int8))


@njit(parallel=True, **KERNEL_OPTIONS)
def roofline_int8(p, g, mc, vc, ms, vs):
    """The ceiling of the int8 step: its streams (read p, g, m and v codes and scales;
    write p, codes and scales), trivial arithmetic."""
    for b in prange(ms.size):
        ms[b] = ms[b] + np.float32(1)
        vs[b] = vs[b] + np.float32(1)
    for i in prange(p.size):
        gi = g[i]
        p[i] = p[i] + gi
        mc[i] = mc[i] + np.uint8(1)
        vc[i] = vc[i] + np.uint8(1)


def compile_all() -> float:
    """Compile (or load from cache) the int8 kernels for float32; returns seconds."""
    import time

    start = time.perf_counter()
    f32, u8 = types.float32[::1], types.uint8[::1]
    step = (f32, f32, u8, f32, u8, f32, u8, f32, types.float64[::1], types.int64)
    adam_int8.compile(step)
    adam_int8_serial.compile(step)
    roofline_int8.compile((f32, f32, u8, u8, f32, f32))
    return time.perf_counter() - start
