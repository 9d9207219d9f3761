"""Numba CUDA kernels: the element-wise Adam body in a grid-stride loop (``adam``,
``adam_amsgrad``), the step of int8 state (``adam_int8``, ``adam_int8_amsgrad``) and of
low-precision params and state (``low_precision_kernel``, one kernel per combination of
formats and options).

One element body (``element_with``) serves both, spelled with explicit multiply, add and
subtract so it compiles two ways: with plain operators NVVM contracts multiply-adds into
FMAs (the float32/float64 kernels; ``harness.subjects.emulated_gpu`` models exactly that), with
IEEE round-to-nearest intrinsics (``mul.rn``/``add.rn``/``sub.rn``, which no compiler
fuses) every operation rounds on its own, as on the CPU, so the int8 kernel gives the
NumPy and Numba CPU backends' bits: its codes are decisions on exact float32 values.

The int8 kernel runs one warp (INT8_THREADS) per 256-element state block, in a
grid-stride loop over blocks. Each lane takes every 32nd element (coalesced): decodes its
codes, runs the body, writes p and keeps the new moments in shared memory. The warp takes
each moment's absmax as the maximum of the magnitude bits (a NaN's exceed every number's,
as on the CPU) by a tree reduction in shared memory; lane 0 writes the scales and
1 / absmax (0 when absmax is 0 or NaN, as ``int8_codec.inverse_scales``); the lanes encode
with integer operations on the float32 bits (``backends.int8_codec``'s constants). One
warp per block: the reduction waits on no other warp, and the CUDA simulator (a Python
thread per GPU thread) runs 8x fewer threads than with a thread per element. Under the
simulator the intrinsics are NumPy float32 operations, which round each operation the
same way.
"""
from __future__ import annotations

import functools
import math
import os

import numpy as np
from numba import cuda

from ..formats import INDEX_HIGH_MULTIPLIER
from ..int8_codec import BLOCK, M_BIAS, M_HALF, M_SHIFT, V_BIAS, V_HALF, V_SHIFT
from ..scalars import moments_with

__all__ = ["adam", "adam_amsgrad", "adam_int8", "adam_int8_amsgrad", "element_with",
           "INT8_THREADS", "INT8_LAUNCH_BOUNDS", "low_precision_kernel", "LP_NEAREST",
           "LP_STOCHASTIC", "LP_KAHAN", "LP_MASTER"]

#: Threads per block of the int8 kernel: one warp per state block, each lane taking every
#: 32nd element (coalesced), so the block's reductions never wait on other warps.
INT8_THREADS = 32
#: (threads per block, blocks per SM) the int8 kernels promise ptxas: 32 resident blocks
#: of one warp (1024 threads per SM) cap registers at 64 (harness.gpu.machine_code's ceiling).
INT8_LAUNCH_BOUNDS = (INT8_THREADS, 32)
#: How ``low_precision_kernel`` writes p: round to nearest, stochastically, with Kahan's
#: compensation, or from float32 master weights.
LP_NEAREST, LP_STOCHASTIC, LP_KAHAN, LP_MASTER = 0, 1, 2, 3
_SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"
_ZERO, _ONE = np.float32(0), np.float32(1)
_MAGNITUDE = 0x7FFFFFFF
_INF_BITS = 0x7F800000  # a larger magnitude is a NaN
_POSITIVE_NAN = np.float32(np.nan)  # bits 0x7FC00000: code 127, M_NONFINITE_CODE


def _device(fn):
    return cuda.jit(device=True, inline=True)(fn)


def _times(a, b):
    return a * b


def _plus(a, b):
    return a + b


def _minus(a, b):
    return a - b


if _SIMULATED:  # NumPy float32 scalars: each operation rounds once, and views are bit casts
    _mul_rn, _add_rn, _sub_rn = _times, _plus, _minus

    def _bits(x):
        """float32 -> its bits as a signed 32-bit integer."""
        return int(np.float32(x).view(np.int32))

    def _from_bits(u):
        """Signed 32-bit integer bits -> float32."""
        return np.int32(u).view(np.float32)
else:
    from numba.cuda import libdevice

    _mul_rn, _add_rn, _sub_rn = libdevice.fmul_rn, libdevice.fadd_rn, libdevice.fsub_rn
    _bits = libdevice.float_as_int

    @_device
    def _from_bits(u):
        return libdevice.int_as_float(np.int32(u))


def element_with(mul, add, sub):
    """The element body of ``backends.scalars`` (its ``moments_with``) with these
    multiply, add and subtract, as two device functions: ``moments(p, g, m, v, vmax,
    sign, l2, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, use_l2, amsgrad)`` ->
    (decayed p, m, v, vmax), vmax being v's running maximum with amsgrad (a NaN from either side wins, as
    np.maximum) and v without; ``update(p, m, vmax, step_size, inv_sqrt_bc2, eps)`` -> the
    new p. Two functions, so a kernel stores the moments before computing p, and each
    element's PTX ends with p's store (``harness.gpu.machine_code.element_bodies``)."""
    body = _device(moments_with(mul, add))

    def moments(p, g, m, v, vmax, sign, l2, decay, beta1, one_minus_beta1, beta2,
                one_minus_beta2, use_l2, amsgrad):
        p, m, v = body(p, g, m, v, sign, l2, decay, beta1, one_minus_beta1, beta2,
                       one_minus_beta2, use_l2)
        if not amsgrad or v > vmax or v != v:
            vmax = v
        return p, m, v, vmax

    def update(p, m, vmax, step_size, inv_sqrt_bc2, eps):
        return sub(p, mul(step_size, m) / add(mul(math.sqrt(vmax), inv_sqrt_bc2), eps))

    return _device(moments), _device(update)


_fused_moments, _fused_update = element_with(_device(_times), _device(_plus),
                                             _device(_minus))
_rounded_moments, _rounded_update = element_with(_mul_rn, _add_rn, _sub_rn)


@cuda.jit
def adam(p, g, m, v, sign, l2, decay, beta1, one_minus_beta1, beta2, one_minus_beta2,
         step_size, inv_sqrt_bc2, eps, use_l2):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        pi, mi, vi, _ = _fused_moments(p[i], g[i], m[i], v[i], v[i], sign, l2, decay, beta1,
                                       one_minus_beta1, beta2, one_minus_beta2, use_l2, False)
        m[i] = mi
        v[i] = vi
        p[i] = _fused_update(pi, mi, vi, step_size, inv_sqrt_bc2, eps)


@cuda.jit
def adam_amsgrad(p, g, m, v, vmax, sign, l2, decay, beta1, one_minus_beta1, beta2,
                 one_minus_beta2, step_size, inv_sqrt_bc2, eps, use_l2):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        pi, mi, vi, vm = _fused_moments(p[i], g[i], m[i], v[i], vmax[i], sign, l2, decay,
                                        beta1, one_minus_beta1, beta2, one_minus_beta2,
                                        use_l2, True)
        m[i] = mi
        v[i] = vi
        vmax[i] = vm
        p[i] = _fused_update(pi, mi, vm, step_size, inv_sqrt_bc2, eps)


# --- int8 state: int8_codec.encode_m / encode_v / decode_* on one value ---------------

@_device
def _decode_m(code):
    k = int(code) & 127
    magnitude = _from_bits((k + M_BIAS) << M_SHIFT) if k != 0 else _ZERO
    return -magnitude if code >= 128 else magnitude


@_device
def _decode_v(code):
    return _from_bits((int(code) + V_BIAS) << V_SHIFT)


@_device
def _encode_m(x):
    bits = _bits(x)
    u = bits & _MAGNITUDE
    k = min(max(((u + M_HALF) >> M_SHIFT) - M_BIAS, 0), 127)
    return k | 128 if bits < 0 else k


@_device
def _encode_v(x):
    c = (((_bits(x) & _MAGNITUDE) + V_HALF) >> V_SHIFT) - V_BIAS
    return min(max(c, 0), 255)


@_device
def _magnitude_bits(x):
    """The bits of |x| as an int32 (kept 32-bit: the maxima live in registers)."""
    return np.int32(_bits(x) & _MAGNITUDE)


@_device
def _int8_step(p, g, mc, ms, vc, vs, xc, xs, sign, l2, decay, beta1, one_minus_beta1,
               beta2, one_minus_beta2, step_size, inv_sqrt_bc2, eps, use_l2, amsgrad):
    """The int8 step over 1-D arrays (module docstring), launched with INT8_THREADS (one
    warp) threads per block. ``xc``/``xs`` (amsgrad's maximum) are touched only with
    amsgrad."""
    lane = cuda.threadIdx.x
    new = cuda.shared.array((3, BLOCK), np.float32)
    best = cuda.shared.array((3, INT8_THREADS), np.int32)
    inverse = cuda.shared.array(3, np.float32)
    moments = 3 if amsgrad else 2
    n = p.size
    for b in range(cuda.blockIdx.x, ms.size, cuda.gridDim.x):
        start = b * BLOCK
        size = min(BLOCK, n - start)
        m_scale, v_scale = ms[b], vs[b]
        x_scale = xs[b] if amsgrad else _ZERO
        m_max = v_max = x_max = np.int32(0)
        for j in range(lane, size, INT8_THREADS):
            i = start + j
            x = _mul_rn(_decode_v(xc[i]), x_scale) if amsgrad else _ZERO
            pi, m, v, x = _rounded_moments(
                p[i], g[i], _mul_rn(_decode_m(mc[i]), m_scale),
                _mul_rn(_decode_v(vc[i]), v_scale), x, sign, l2, decay, beta1,
                one_minus_beta1, beta2, one_minus_beta2, use_l2, amsgrad)
            p[i] = _rounded_update(pi, m, x, step_size, inv_sqrt_bc2, eps)
            new[0, j] = m
            new[1, j] = v
            m_max = max(m_max, _magnitude_bits(m))
            v_max = max(v_max, _magnitude_bits(v))
            if amsgrad:
                new[2, j] = x
                x_max = max(x_max, _magnitude_bits(x))
        best[0, lane] = m_max
        best[1, lane] = v_max
        best[2, lane] = x_max
        half = INT8_THREADS // 2
        while half > 0:
            cuda.syncthreads()
            if lane < half:
                for k in range(moments):
                    best[k, lane] = max(best[k, lane], best[k, lane + half])
            half //= 2
        cuda.syncthreads()
        if lane == 0:
            for k in range(moments):
                scale = _from_bits(best[k, 0])
                inverse[k] = _ONE / scale if scale > _ZERO else _ZERO
            ms[b] = _from_bits(best[0, 0])
            vs[b] = _from_bits(best[1, 0])
            if amsgrad:
                xs[b] = _from_bits(best[2, 0])
            if best[0, 0] >= _INF_BITS:  # m's absmax inf or NaN: its m values become +NaN,
                for j in range(size):  # whose code (times inverse 0) is M_NONFINITE_CODE
                    new[0, j] = _POSITIVE_NAN  # (one lane, rare: no register for the rest)
        cuda.syncthreads()
        for j in range(lane, size, INT8_THREADS):
            mc[start + j] = _encode_m(_mul_rn(new[0, j], inverse[0]))
            vc[start + j] = _encode_v(_mul_rn(new[1, j], inverse[1]))
            if amsgrad:
                xc[start + j] = _encode_v(_mul_rn(new[2, j], inverse[2]))
        cuda.syncthreads()  # the next block's moments overwrite ``new``


# the simulator's cuda.jit takes no launch bounds
_int8_kernel = cuda.jit if _SIMULATED else cuda.jit(launch_bounds=INT8_LAUNCH_BOUNDS)


@_int8_kernel
def adam_int8(p, g, mc, ms, vc, vs, sign, l2, decay, beta1, one_minus_beta1, beta2,
              one_minus_beta2, step_size, inv_sqrt_bc2, eps, use_l2):
    _int8_step(p, g, mc, ms, vc, vs, vc, vs, sign, l2, decay, beta1, one_minus_beta1, beta2,
               one_minus_beta2, step_size, inv_sqrt_bc2, eps, use_l2, False)


@_int8_kernel
def adam_int8_amsgrad(p, g, mc, ms, vc, vs, xc, xs, sign, l2, decay, beta1, one_minus_beta1,
                      beta2, one_minus_beta2, step_size, inv_sqrt_bc2, eps, use_l2):
    _int8_step(p, g, mc, ms, vc, vs, xc, xs, sign, l2, decay, beta1, one_minus_beta1, beta2,
               one_minus_beta2, step_size, inv_sqrt_bc2, eps, use_l2, True)


# --- low-precision params and state (backends.formats) ---------------------------------
# bfloat16 arrays come in as uint16 bits (flag ``*_bf16``), float16 and float32 as
# themselves (a float32 store into a float16 array is IEEE's cvt.rn.f16.f32, NumPy's
# cast). Integer arithmetic is masked to 32 bits, so it gives the same bits as Python
# ints (the simulator) and as 64-bit lanes (compiled).

_LOW32 = 0xFFFFFFFF
_HIGH_MULTIPLIER = INDEX_HIGH_MULTIPLIER


@_device
def _widen(x, bf16):
    """float32 value of one stored element (bfloat16 bits when ``bf16``): the bits
    shifted up, as a signed 32-bit integer (``_from_bits``' input)."""
    if bf16:
        u = int(x) << 16
        return _from_bits(u - ((u & 0x80000000) << 1))
    return np.float32(x)


@_device
def _bf16_bits(x, addend):
    """bfloat16 bits of float32 ``x`` plus a rounding addend to its low half; a NaN keeps
    its sign and top bits, made quiet (``formats.bf16_nearest_bits``)."""
    u = _bits(x) & _LOW32
    if (u & _MAGNITUDE) > _INF_BITS:
        return ((u >> 16) | 0x40) & 0xFFFF
    return ((u + addend) >> 16) & 0xFFFF


@_device
def _bf16_nearest(x):
    """bfloat16 bits of float32 ``x`` rounded to nearest even."""
    return _bf16_bits(x, 0x7FFF + ((_bits(x) >> 16) & 1))


@_device
def _store(a, i, x, bf16):
    """``a[i]`` = float32 ``x`` rounded to nearest even: bfloat16 bits when ``bf16``, else
    the store's conversion (float16's IEEE cvt.rn, or none). A store, not a returned
    value: Numba would unify an integer and a float32 result to float64."""
    if bf16:
        a[i] = _bf16_nearest(x)
    else:
        a[i] = x


@_device
def _random16(key, i):
    """``formats.random16`` of element ``i`` under the tensor's ``key``: its half of
    lowbias32 of its pair's even index (the low half for even ``i``)."""
    odd = i & 1
    x = (((i ^ odd) & _LOW32) ^ key ^ (((i >> 32) * _HIGH_MULTIPLIER) & _LOW32)) & _LOW32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _LOW32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _LOW32
    return ((x ^ (x >> 16)) >> (odd * 16)) & 0xFFFF


@_device
def _kahan(p, compensation, i, x, bf16):
    """``p[i]`` = float32 ``x`` rounded to nearest even in p's format (bfloat16 bits when
    ``bf16``, else float16: Kahan's params are never float32), ``compensation[i]`` = what
    that dropped, rounded the same way. The rounded value is kept in registers, not read
    back from p."""
    if bf16:
        bits = _bf16_nearest(x)
        p[i] = bits
        rounded = _widen(bits, bf16)
    else:
        half = np.float16(x)
        p[i] = half
        rounded = np.float32(half)
    _store(compensation, i, _sub_rn(x, rounded), bf16)


@functools.lru_cache(maxsize=None)
def low_precision_kernel(p_bf16: bool, g_bf16: bool, m_bf16: bool, rounding: int,
                         amsgrad: bool):
    """The low-precision kernel for one combination of formats and options, made (and
    cached) on first use: bfloat16 params, grads, moments (``*_bf16``), the ``rounding``
    of p (LP_NEAREST, LP_STOCHASTIC, LP_KAHAN, LP_MASTER: master weights, p rounded to
    nearest) and ``amsgrad`` are constants of the closure, so Numba prunes every other
    branch at compile time and the PTX loads and stores exactly this format's arrays
    (tests/test_machine_code.py checks each format's bytes per element)."""
    master_weights, kahan = rounding == LP_MASTER, rounding == LP_KAHAN
    stochastic = rounding == LP_STOCHASTIC

    @cuda.jit
    def adam_low_precision(p, g, m, v, vmax, master, compensation, key, sign, l2, decay,
                           beta1, one_minus_beta1, beta2, one_minus_beta2, step_size,
                           inv_sqrt_bc2, eps, use_l2):
        """One low-precision tensor (1-D arrays, ``backends.low_precision_step``) in a
        grid-stride loop; ``vmax``, ``master``, ``compensation`` and ``key``
        (formats.stream_key) are touched only when the options use them."""
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            if master_weights:
                w = master[i]
            else:
                w = _widen(p[i], p_bf16)
            vi = _widen(v[i], m_bf16)
            if amsgrad:
                xi = _widen(vmax[i], m_bf16)
            else:
                xi = vi
            w, mi, vi, xi = _rounded_moments(w, _widen(g[i], g_bf16), _widen(m[i], m_bf16),
                                             vi, xi, sign, l2, decay, beta1, one_minus_beta1,
                                             beta2, one_minus_beta2, use_l2, amsgrad)
            _store(m, i, mi, m_bf16)
            _store(v, i, vi, m_bf16)
            if amsgrad:
                _store(vmax, i, xi, m_bf16)
            w = _rounded_update(w, mi, xi, step_size, inv_sqrt_bc2, eps)
            if master_weights:
                master[i] = w
                _store(p, i, w, p_bf16)
            elif kahan:
                _kahan(p, compensation, i, _add_rn(w, _widen(compensation[i], p_bf16)),
                       p_bf16)
            elif stochastic:
                p[i] = _bf16_bits(w, _random16(key, i))
            else:
                _store(p, i, w, p_bf16)

    return adam_low_precision
