"""Numba CPU kernels for low-precision params and state (``backends.formats``).

One driver, ``adam_low_precision`` (and its serial twin), specialized by Numba on its
argument types (and ``adam_bf16_pairs`` for the all-bfloat16 case): bfloat16 arrays
come in as ``uint16`` views, float16 as ``int16`` views (so the two 2-byte formats are
two types), float32 as themselves; ``master``, ``compensation`` and the stochastic
rounding's ``seed`` are None when not used, and Numba prunes those branches at compile
time. With a seed, each kernel derives its hash key from it and the step
(``segment_key``). The element body is the float32 kernels' (``_numba_kernels``), so the
arithmetic gives the float32 kernels' bits; loads and stores convert with integer shifts
(bfloat16: llvmlite has no bfloat16 arithmetic, and LLVM turns a ``bfloat`` truncation
into a library call here) or F16C's conversions (float16, ``fptrunc``/``fpext``). Every
loop vectorizes. Kernels compile on first use for each combination of types
(cache=True).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, njit, prange, types
from numba.extending import intrinsic, overload

from ..formats import INDEX_HIGH_MULTIPLIER
from ._numba_kernels import (KERNEL_OPTIONS, _adam_element, _pointer, _serial_twin,
                             step_constants_jit)

__all__ = ["adam_low_precision", "adam_low_precision_serial", "adam_bf16_pairs",
           "adam_bf16_pairs_serial", "in_pairs", "step_element", "roofline_streams",
           "compiled_for", "BLOCK", "segment_key", "rounding_key"]


@intrinsic
def _f32_from_bits(typingctx, bits):
    """uint32 bits -> float32."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@intrinsic
def _bits_of_f32(typingctx, x):
    """float32 -> its uint32 bits."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def _f16_to_f32(typingctx, bits):
    """int16 float16 bits -> float32 (exact)."""
    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.int16), codegen


@intrinsic
def _f32_to_f16(typingctx, x):
    """float32 -> int16 float16 bits, rounded to nearest even (IEEE)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.int16(types.float32), codegen


_U16 = np.uint32(16)
#: float32 bits: a NaN's quiet bit, the lowest bit bfloat16 keeps, the half it keeps.
_QUIET_BIT, _KEPT_LSB, _HIGH_HALF = np.uint32(0x400000), np.uint32(0x10000), \
    np.uint32(0xFFFF0000)
_LOW_HALF = np.uint32(0xFFFF)


@njit(cache=True)
def _bf16_sum(x, addend):
    """float32 ``x``'s bits plus a rounding addend, whose high half is the bfloat16 bits
    (``formats.bf16_nearest_bits``); a NaN gets the quiet bit instead, so it keeps its
    sign and top bits. The NaN test is a float compare and the choice a select, so the
    loops vectorize; LLVM inlines it (Numba's own inlining of the conditional trips its
    SSA checks)."""
    u = np.uint32
    bits = _bits_of_f32(x)
    return u(bits | _QUIET_BIT) if x != x else u(bits + addend)


@njit(cache=True)
def _nearest_sum(x):
    """``_bf16_sum`` rounding to nearest even: 0x7FFF, or 0x8000 when the lowest kept bit
    is set (a test and a select: one instruction fewer than adding that bit shifted down)."""
    u = np.uint32
    return _bf16_sum(x, u(0x8000) if _bits_of_f32(x) & _KEPT_LSB else u(0x7FFF))


@njit(inline="always", cache=True)
def _bf16(total):
    """The bfloat16 bits (uint16) in the high half of a ``_bf16_sum``."""
    return np.uint16(np.uint32(total) >> _U16)


def widen(x):
    """float32 value of one stored element (float32, bfloat16 bits, float16 bits)."""


@overload(widen, inline="always")
def _widen(x):
    if x == types.float32:
        return lambda x: x
    if x == types.uint16:
        return lambda x: _f32_from_bits(np.uint32(np.uint32(x) << _U16))
    if x == types.int16:
        return lambda x: _f16_to_f32(x)
    return None


def nearest(x, a):
    """float32 ``x`` rounded to nearest even in the format of array ``a``'s elements."""


@overload(nearest, inline="always")
def _nearest(x, a):
    if a.dtype == types.float32:
        return lambda x, a: x
    if a.dtype == types.uint16:
        return lambda x, a: _bf16(_nearest_sum(x))
    if a.dtype == types.int16:
        return lambda x, a: _f32_to_f16(x)
    return None


#: Elements per kernel call: within a block of one high index word the hash's input is
#: ``lo32(i) ^ block_key`` with ``block_key = key ^ hi32(i) * INDEX_HIGH_MULTIPLIER``
#: (``formats.random16``'s), so the element loop needs no 64-bit lanes.
BLOCK = 1 << 32


@njit(inline="always", cache=True)
def pair_random(key, i):
    """lowbias32 of ``lo32(i) ^ block_key`` in uint32 throughout (Numba widens integer
    arithmetic to 64 bits unless told): the random bits of the pair of elements from
    even ``i`` of a block, the low half the even element's, the high half the odd one's
    (``formats.random16``)."""
    u = np.uint32
    x = u(u(i) ^ key)
    x = u(x ^ (x >> _U16))
    x = u(x * u(0x7FEB352D))
    x = u(x ^ (x >> u(15)))
    x = u(x * u(0x846CA68B))
    return u(x ^ (x >> _U16))


@njit(inline="always", cache=True)
def random16(key, i):
    """The 16 random bits of element ``i`` of a block under its ``block_key``: its half
    of its pair's ``pair_random``."""
    u = np.uint32
    odd = u(u(i) & u(1))
    return u(u(pair_random(key, u(u(i) ^ odd)) >> u(odd << u(4))) & _LOW_HALF)


@njit(inline="always", cache=True)
def _splitmix64(z):
    """``formats.splitmix64`` in uint64 arithmetic (Numba turns mixed signed and unsigned
    into floats)."""
    u = np.uint64
    z = u(z + u(0x9E3779B97F4A7C15))
    z = u(u(z ^ u(z >> u(30))) * u(0xBF58476D1CE4E5B9))
    z = u(u(z ^ u(z >> u(27))) * u(0x94D049BB133111EB))
    return u(z ^ u(z >> u(31)))


@njit(inline="always", cache=True)
def segment_key(seed, t, index, start):
    """The hash's key of the elements of tensor ``index`` from ``start`` to the end of
    their block at step ``t``, from the seed's ``formats.seed_stream``: the block_key of
    ``formats.stream_key(seed, t, index)`` and block ``start // BLOCK``."""
    u = np.uint64
    z = _splitmix64(u(_splitmix64(u(u(seed) ^ u(t))) ^ u(index)))
    key = np.uint32(u(z >> u(32)) ^ u(z & u(0xFFFFFFFF)))
    block = np.uint32(start // BLOCK)
    return np.uint32(key ^ np.uint32(block * np.uint32(INDEX_HIGH_MULTIPLIER)))


def rounding_key(seed, t, index, start):
    """``segment_key``, or None without stochastic rounding (``seed`` None)."""


@overload(rounding_key, inline="always")
def _rounding_key(seed, t, index, start):
    if isinstance(seed, types.NoneType):
        return lambda seed, t, index, start: None
    return lambda seed, t, index, start: segment_key(seed, t, index, start)


@njit(cache=True)
def _constants32(hyper, t):
    """The step's constants in float32, use_l2, amsgrad (``_numba_kernels._constants``)."""
    sign, l2, decay, beta1, omb1, beta2, omb2, step_size, inv_sqrt_bc2, eps = \
        step_constants_jit(hyper[0], hyper[1], hyper[2], hyper[3], hyper[4], hyper[5] != 0,
                           hyper[6] != 0, t)
    f = np.float32
    return ((f(sign), f(l2), f(decay), f(beta1), f(omb1), f(beta2), f(omb2), f(step_size),
             f(inv_sqrt_bc2), f(eps)), hyper[4] != 0 and hyper[5] == 0, hyper[7] != 0)


@njit(cache=True)
def step_element(p, g, m, v, vmax, master, compensation, constants, use_l2, key, i, j):
    """Adam on element ``i`` of 1-D arrays (see ``_adam_low_precision``), the stochastic
    rounding's hash taken at ``j`` (the element's index in its tensor). Compiled per
    argument types, so None arrays prune their branches; LLVM inlines it into the loops
    (Numba's own inlining would type the branches of arrays that are None)."""
    if master is not None:
        w = master[i]
    else:
        w = widen(p[i])
    vi = widen(v[i])
    if vmax is not None:
        xi = widen(vmax[i])
    else:
        xi = vi
    w, mi, vi, xi = _adam_element(w, widen(g[i]), widen(m[i]), vi, xi, constants, use_l2,
                                  vmax is not None)
    m[i] = nearest(mi, m)
    v[i] = nearest(vi, v)
    if vmax is not None:
        vmax[i] = nearest(xi, vmax)
    if master is not None:
        master[i] = w
        p[i] = nearest(w, p)
    elif compensation is not None:
        x = w + widen(compensation[i])
        rounded = nearest(x, p)
        p[i] = rounded
        compensation[i] = nearest(x - widen(rounded), compensation)
    elif key is not None:
        p[i] = _bf16(_bf16_sum(w, random16(key, j)))
    else:
        p[i] = nearest(w, p)


def _adam_low_precision(p, g, m, v, vmax, master, compensation, hyper, t, seed, index,
                        start):
    """One tensor (1-D arrays, see the module docstring) of at most ``BLOCK`` elements,
    ``start`` the first one's index in tensor ``index`` of the step; ``vmax`` is amsgrad's
    maximum or None (never ``v`` itself: an alias that LLVM's run-time check would send
    down the scalar loop); ``seed`` (uint64) is ``formats.seed_stream`` with stochastic
    rounding, else None."""
    constants, use_l2, _ = _constants32(hyper, t)
    key = rounding_key(seed, t, index, start)
    for i in prange(p.size):
        step_element(p, g, m, v, vmax, master, compensation, constants, use_l2, key, i, i)


adam_low_precision = njit(parallel=True, **KERNEL_OPTIONS)(_adam_low_precision)
adam_low_precision_serial = njit(**KERNEL_OPTIONS)(_serial_twin(_adam_low_precision))


@njit(inline="always", cache=True)
def _low(word):
    """float32 value of the bfloat16 in the low half of a uint32 (the even element)."""
    return _f32_from_bits(np.uint32(word << _U16))


@njit(inline="always", cache=True)
def _high(word):
    """float32 value of the bfloat16 in the high half of a uint32 (the odd element)."""
    return _f32_from_bits(np.uint32(word & _HIGH_HALF))


@njit(inline="always", cache=True)
def _pack(even, odd):
    """The uint32 of two bfloat16s, the high halves of ``_bf16_sum``s: on little-endian
    machines the even element is the low half."""
    u = np.uint32
    return u(u(odd & _HIGH_HALF) | u(even >> _U16))


@njit(inline="always", cache=True)
def _pair_step(pw, gw, mw, vw, xw, cw, constants, use_l2, amsgrad, kahan, key, i):
    """Adam on elements i and i + 1 (i even) given as uint32 pairs of bfloat16s: new
    (p, m, v, vmax, compensation) pairs, the bits of ``_adam_low_precision``'s. ``xw``
    and ``cw`` are vmax's and the compensation's pairs (unused without amsgrad, Kahan)."""
    u = np.uint32
    w0, m0, v0, x0 = _adam_element(_low(pw), _low(gw), _low(mw), _low(vw), _low(xw),
                                   constants, use_l2, amsgrad)
    w1, m1, v1, x1 = _adam_element(_high(pw), _high(gw), _high(mw), _high(vw), _high(xw),
                                   constants, use_l2, amsgrad)
    if kahan:
        w0, w1 = w0 + _low(cw), w1 + _high(cw)
    if key is not None:
        random = pair_random(key, i)
        p0, p1 = _bf16_sum(w0, u(random & _LOW_HALF)), _bf16_sum(w1, u(random >> _U16))
    else:
        p0, p1 = _nearest_sum(w0), _nearest_sum(w1)
    c0 = _nearest_sum(w0 - _f32_from_bits(u(p0 & _HIGH_HALF)))
    c1 = _nearest_sum(w1 - _f32_from_bits(u(p1 & _HIGH_HALF)))
    return (_pack(p0, p1), _pack(_nearest_sum(m0), _nearest_sum(m1)),
            _pack(_nearest_sum(v0), _nearest_sum(v1)), _pack(_nearest_sum(x0), _nearest_sum(x1)),
            _pack(c0, c1))


#: Pairs of elements per parallel task of ``adam_bf16_pairs``.
PAIR_CHUNK = 1 << 12


@njit(inline="always", cache=True)
def _pairs(a, offset, n):
    """``n`` pairs of a uint16 array from element ``offset`` as uint32s, the same memory,
    indexed from 0. (Made outside the parallel loop, from a pointer or a ``view``, Numba's
    parfors drop the loop's writes to it; indexing a whole array from an offset is
    slower.)"""
    return carray(_pointer(a.ctypes.data + 2 * offset, np.uint32(0)), n)


def in_pairs(p, g, m, master) -> bool:
    """Whether a tensor's kernel arrays (``_typed`` views) go to ``adam_bf16_pairs``: p,
    g and the state all bfloat16, no master weights."""
    return master is None and p.dtype == g.dtype == m.dtype == np.uint16


@njit(cache=True)
def pair_run(p, g, m, v, vmax, compensation, constants, use_l2, key, offset, n, at):
    """``n`` pairs of elements of all-bfloat16 arrays (uint16 views) from element
    ``offset``, the first one element ``at`` of its hash block (even: a pair shares its
    first element's hash). A function of its own whose arguments include ``key``, so
    Numba prunes the branches of a None key (it cannot for a local variable); ``vmax``
    and ``compensation`` likewise."""
    u = np.uint32
    p2, g2, m2, v2 = (_pairs(p, offset, n), _pairs(g, offset, n), _pairs(m, offset, n),
                      _pairs(v, offset, n))
    x2 = v2 if vmax is None else _pairs(vmax, offset, n)  # read, unused, if absent
    c2 = v2 if compensation is None else _pairs(compensation, offset, n)
    at = u(at)  # a uint32 counter: the loop's int64 one costs 64-bit lanes
    for i in range(n):
        p2[i], m2[i], v2[i], xw, cw = _pair_step(
            p2[i], g2[i], m2[i], v2[i], x2[i], c2[i], constants, use_l2,
            vmax is not None, compensation is not None, key, at)
        at = u(at + u(2))
        if vmax is not None:
            x2[i] = xw
        if compensation is not None:
            c2[i] = cw


def _adam_bf16_pairs(p, g, m, v, vmax, compensation, hyper, t, seed, index, start):
    """``_adam_low_precision`` when p, g and the state are all bfloat16 (uint16 views) and
    there are no master weights: two elements are loaded and stored as one uint32, so
    widening is a shift or a mask and narrowing a mask and an or, not LLVM's lane-crossing
    zero-extends and truncations (a third fewer instructions per element); the pairs go
    in tasks of PAIR_CHUNK; an odd last element goes through ``step_element``."""
    constants, use_l2, _ = _constants32(hyper, t)
    key = rounding_key(seed, t, index, start)
    n_pairs = p.size // 2
    for c in prange((n_pairs + PAIR_CHUNK - 1) // PAIR_CHUNK):
        first = c * PAIR_CHUNK
        pair_run(p, g, m, v, vmax, compensation, constants, use_l2, key, 2 * first,
                 min(PAIR_CHUNK, n_pairs - first), 2 * first)
    if p.size % 2:
        last = p.size - 1
        step_element(p, g, m, v, vmax, None, compensation, constants, use_l2, key, last,
                     last)


adam_bf16_pairs = njit(parallel=True, **KERNEL_OPTIONS)(_adam_bf16_pairs)
adam_bf16_pairs_serial = njit(**KERNEL_OPTIONS)(_serial_twin(_adam_bf16_pairs))


def stream_element(w, g, m, v, extra, out, i, with_extra, with_out):
    """Element ``i`` of ``roofline_streams``: plain Python, compiled here and as a CUDA
    device function by the GPU's format roofline (``harness.bench.gpu_roofline``)."""
    x = g[i]
    w[i] = w[i] + x
    m[i] = m[i] + x
    v[i] = v[i] + x
    if with_extra:
        extra[i] = extra[i] + x
    if with_out:
        out[i] = w[i]


_stream_element = njit(**KERNEL_OPTIONS)(stream_element)


@njit(parallel=True, **KERNEL_OPTIONS)
def roofline_streams(w, g, m, v, extra, out):
    """The ceiling of a format: its streams with trivial integer arithmetic on the bits
    (every array an unsigned view of its element size): read g, read and write the
    weights ``w``, m, v and ``extra`` (Kahan's compensation), write ``out`` (the params
    written from master weights); ``extra`` and ``out`` of length 0 are not there."""
    with_extra, with_out = extra.size == w.size, out.size == w.size
    for i in prange(w.size):
        _stream_element(w, g, m, v, extra, out, i, with_extra, with_out)


#: LLVM's vector width and interleave for the low-precision kernels: 16 float32 lanes,
#: two vectors in flight, ran 4-14% faster than the cost model's own choice on every
#: format, in cache, on this project's machine (docs/low-precision.md, "Speed").
VECTOR_WIDTH, VECTOR_INTERLEAVE = 16, 2


def compiled_for(kernel, arguments):
    """``kernel``, compiled (or loaded from cache) for these arguments' types with LLVM
    vectorizing at VECTOR_WIDTH x VECTOR_INTERLEAVE; a dispatcher keeps each compiled
    signature."""
    from numba import typeof

    signature = tuple(typeof(a) for a in arguments)
    if signature not in kernel.overloads:
        from ._numba_kernels import _llvm_option

        with _llvm_option("-force-vector-width", VECTOR_WIDTH), \
                _llvm_option("-force-vector-interleave", VECTOR_INTERLEAVE):
            kernel.compile(signature)
    return kernel
