"""Numba CPU kernels for 8-bit state (``backends.blockwise``): the Adam step and its
roofline.

Threads take chunks of CHUNK_BLOCKS blocks. Per block, one vectorized pass decodes the
codes (integer shifts of the code, reinterpreted as float32 bits), runs the float32 Adam
body shared with the fp32 kernels, writes p, keeps the new moments in a chunk-local
scratch and takes their absmax as the maximum of their magnitude bits (a NaN wins, as
in NumPy's max); a second pass encodes the scratch (integer add and shift). Every
operation is the one ``blockwise.step_blocks_numpy`` makes, so the bits agree.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from ._numba_kernels import KERNEL_OPTIONS, _adam_element, _constants, _serial_twin
from .blockwise import (BLOCK, M_BIAS, M_HALF, M_HALF_MIN_BITS, M_SHIFT, V_BIAS, V_HALF,
                        V_SHIFT)

__all__ = ["adam_int8", "adam_int8_serial", "roofline_int8", "compile_all", "CHUNK_BLOCKS"]

#: Blocks per parallel task (16384 elements): its scratch stays in L2.
CHUNK_BLOCKS = 64


@intrinsic
def _bits(typingctx, x):
    """float32 -> its IEEE bits as uint32."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def _from_bits(typingctx, u):
    """An integer's low 32 bits as a float32."""
    def codegen(context, builder, sig, args):
        value = args[0]
        if value.type.width > 32:
            value = builder.trunc(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(u), codegen


@njit(inline="always", cache=True)
def _decode_m(code):
    c = np.uint32(code)
    k = c & 127
    magnitude = ((k + M_BIAS) << M_SHIFT) * (k != 0)
    return _from_bits(((c >> 7) << 31) | magnitude)


@njit(inline="always", cache=True)
def _decode_v(code):
    return _from_bits((np.uint32(code) + V_BIAS) << V_SHIFT)


@njit(inline="always", cache=True)
def _encode_m(x):
    bits = _bits(x)
    u = bits & 0x7FFFFFFF
    k = min(((u + M_HALF) >> M_SHIFT) - M_BIAS, 127)
    k = np.int64(u >= M_HALF_MIN_BITS) if k < 1 else k
    return np.uint8(((bits >> 31) << 7) | k)


@njit(inline="always", cache=True)
def _encode_v(x):
    c = ((_bits(x) & 0x7FFFFFFF) + V_HALF) >> V_SHIFT
    return np.uint8(max(min(np.int64(c) - V_BIAS, 255), 0))


@njit(inline="always", cache=True)
def _inverse(absmax_bits):
    scale = _from_bits(absmax_bits)
    return scale, (np.float32(1) / scale if scale > 0 else np.float32(0))


def _adam_int8(p, g, mc, ms, vc, vs, xc, xs, hyper, t):
    """One quantized tensor (1-D views; ``xc``, ``xs`` the amsgrad maximum's codes and
    scales, only read and written with amsgrad)."""
    constants, use_l2, amsgrad = _constants(hyper, t, p)
    n = p.size
    blocks = (n + BLOCK - 1) // BLOCK
    chunks = (blocks + CHUNK_BLOCKS - 1) // CHUNK_BLOCKS
    for chunk in prange(chunks):
        m_new = np.empty(CHUNK_BLOCKS * BLOCK, np.float32)
        v_new = np.empty(CHUNK_BLOCKS * BLOCK, np.float32)
        x_new = np.empty(CHUNK_BLOCKS * BLOCK if amsgrad else 0, np.float32)
        for b in range(chunk * CHUNK_BLOCKS, min(blocks, (chunk + 1) * CHUNK_BLOCKS)):
            start = b * BLOCK
            size = min(BLOCK, n - start)
            at = start - chunk * CHUNK_BLOCKS * BLOCK
            m_scale, v_scale = ms[b], vs[b]
            x_scale = xs[b] if amsgrad else v_scale
            m_max = v_max = x_max = np.uint32(0)
            for j in range(size):
                i = start + j
                x_old = _decode_v(xc[i] if amsgrad else vc[i]) * x_scale
                p[i], m_i, v_i, x_i = _adam_element(
                    p[i], g[i], _decode_m(mc[i]) * m_scale, _decode_v(vc[i]) * v_scale,
                    x_old, constants, use_l2, amsgrad)
                m_new[at + j] = m_i
                v_new[at + j] = v_i
                m_max = max(m_max, _bits(m_i) & 0x7FFFFFFF)
                v_max = max(v_max, _bits(v_i) & 0x7FFFFFFF)
                if amsgrad:
                    x_new[at + j] = x_i
                    x_max = max(x_max, _bits(x_i) & 0x7FFFFFFF)
            ms[b], m_inv = _inverse(m_max)
            vs[b], v_inv = _inverse(v_max)
            for j in range(size):
                mc[start + j] = _encode_m(m_new[at + j] * m_inv)
                vc[start + j] = _encode_v(v_new[at + j] * v_inv)
            if amsgrad:
                xs[b], x_inv = _inverse(x_max)
                for j in range(size):
                    xc[start + j] = _encode_v(x_new[at + j] * x_inv)


adam_int8 = njit(parallel=True, **KERNEL_OPTIONS)(_adam_int8)
adam_int8_serial = njit(**KERNEL_OPTIONS)(_serial_twin(_adam_int8))


@njit(parallel=True, **KERNEL_OPTIONS)
def roofline_int8(p, g, mc, vc, ms, vs):
    """The ceiling of the 8-bit step: its streams (read p, g, m and v codes and scales;
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
    """Compile (or load from cache) the 8-bit kernels for float32; returns seconds."""
    import time

    start = time.perf_counter()
    f32, u8 = types.float32[::1], types.uint8[::1]
    step = (f32, f32, u8, f32, u8, f32, u8, f32, types.float64[::1], types.int64)
    adam_int8.compile(step)
    adam_int8_serial.compile(step)
    roofline_int8.compile((f32, f32, u8, u8, f32, f32))
    return time.perf_counter() - start
