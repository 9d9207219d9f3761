"""Numba CPU kernels: one element-wise Adam body, two parallel drivers, and the roofline.

``adam_flat`` steps one contiguous tensor; its loop is vectorized (Numba tells LLVM the
arrays of a parallel loop do not alias). ``adam_table`` steps any number of tensors in one
call from a table of buffer addresses, cut into chunks of about equal size (small tensors
share a chunk, large ones span several), so threads get equal work; LLVM cannot prove
those buffers apart, so its inner loop stays scalar (in cache that costs speed; out of
cache memory is the limit either way). All are compiled eagerly for float32 and float64
(cache=True): compilation is never part of a step.
"""
from __future__ import annotations

import math

import numpy as np
from numba import carray, njit, prange, types
from numba.extending import intrinsic

__all__ = ["adam_flat", "adam_flat_serial", "adam_table", "adam_table_serial", "address",
           "roofline_flat", "compile_all"]

FLOAT_TYPES = (types.float32, types.float64)


@intrinsic
def _pointer(typingctx, address, like):
    """An int64 address as a typed pointer (``like`` gives the element type)."""
    signature = types.CPointer(like)(address, like)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return signature, codegen


@njit(inline="always", cache=True)
def _adam_element(i, p, g, m, v, vmax, sign, l2, decay, beta1, one_minus_beta1, beta2,
                  one_minus_beta2, step_size, inv_sqrt_bc2, eps, use_l2, amsgrad):
    """The kernel body (see backends.scalars) for element ``i``, in place."""
    gi = sign * g[i]
    pi = p[i]
    if use_l2:
        gi = gi + l2 * pi
    pi = decay * pi
    mi = beta1 * m[i] + one_minus_beta1 * gi
    vi = beta2 * v[i] + (one_minus_beta2 * gi) * gi
    m[i] = mi
    v[i] = vi
    if amsgrad:  # np.maximum keeps NaN from either side and, unlike a branch, vectorizes
        vi = np.maximum(vmax[i], vi)
        vmax[i] = vi
    p[i] = pi - step_size * mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps)


def _adam_flat(p, g, m, v, vmax, scalars, use_l2, amsgrad):
    """One contiguous tensor (1-D views). With parallel=True Numba hands the loop body to
    LLVM with its arrays marked non-aliasing, so it is vectorized (vsqrtps, vdivps)."""
    sign, l2, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, \
        inv_sqrt_bc2, eps = _unpack(scalars)
    for i in prange(p.size):
        _adam_element(i, p, g, m, v, vmax, sign, l2, decay, beta1, one_minus_beta1, beta2,
                      one_minus_beta2, step_size, inv_sqrt_bc2, eps, use_l2, amsgrad)


@njit(inline="always", cache=True)
def _unpack(s):
    return s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9]


def _adam_table(table, scalars, use_l2, amsgrad):
    """Many tensors in one call, described by one int64 array (see ``table_layout``):
    per tensor t the addresses of (p, g, m, v, vmax) and its size; per chunk c (one
    parallel task) a run of segments, segment k covering elements start:stop of a tensor.
    """
    sign, l2, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, \
        inv_sqrt_bc2, eps = _unpack(scalars)
    addresses, sizes, chunk_bounds, seg_tensor, seg_start, seg_stop = table_layout(table)
    for c in prange(chunk_bounds.size - 1):
        for k in range(chunk_bounds[c], chunk_bounds[c + 1]):
            t = seg_tensor[k]
            n = sizes[t]
            s = seg_start[k]
            e = seg_stop[k]
            # slices indexed from 0: indexing the whole tensor from s runs 4x slower here
            p = carray(_pointer(addresses[t, 0], eps), n)[s:e]
            g = carray(_pointer(addresses[t, 1], eps), n)[s:e]
            m = carray(_pointer(addresses[t, 2], eps), n)[s:e]
            v = carray(_pointer(addresses[t, 3], eps), n)[s:e]
            vmax = carray(_pointer(addresses[t, 4], eps), n)[s:e]
            for i in range(e - s):
                _adam_element(i, p, g, m, v, vmax, sign, l2, decay, beta1, one_minus_beta1,
                              beta2, one_minus_beta2, step_size, inv_sqrt_bc2, eps, use_l2,
                              amsgrad)


@njit(inline="always", cache=True)
def table_layout(table):
    """Views into a packed table: [tensors, chunks, segments | addresses (tensors x 5) |
    sizes | chunk_bounds (chunks + 1) | seg_tensor | seg_start | seg_stop]."""
    tensors, chunks, segments = table[0], table[1], table[2]
    at = 3
    addresses = table[at:at + 5 * tensors].reshape((tensors, 5))
    at += 5 * tensors
    sizes = table[at:at + tensors]
    at += tensors
    chunk_bounds = table[at:at + chunks + 1]
    at += chunks + 1
    seg_tensor = table[at:at + segments]
    seg_start = table[at + segments:at + 2 * segments]
    seg_stop = table[at + 2 * segments:at + 3 * segments]
    return addresses, sizes, chunk_bounds, seg_tensor, seg_start, seg_stop


#: The parallel drivers, and serial twins for work too small to pay for waking threads.
adam_flat = njit(parallel=True, cache=True)(_adam_flat)
adam_flat_serial = njit(cache=True)(_adam_flat)
adam_table = njit(parallel=True, cache=True)(_adam_table)
adam_table_serial = njit(cache=True)(_adam_table)


@njit(cache=True)
def address(a):
    """The address of a contiguous array's first element (faster than ``a.ctypes.data``)."""
    return a.ctypes.data


@njit(parallel=True, cache=True)
def roofline_flat(p, g, m, v):
    """The ceiling: Adam's streams (read p, g, m, v; write p, m, v), trivial arithmetic."""
    for i in prange(p.size):
        gi = g[i]
        p[i] = p[i] + gi
        m[i] = m[i] + gi
        v[i] = v[i] + gi


def _signatures():
    flat, table, roof, addr = [], [], [], []
    index = types.int64[::1]
    for f in FLOAT_TYPES:
        arr = f[::1]
        tail = (arr, types.boolean, types.boolean)
        table.append((index,) + tail)
        flat.append((arr,) * 5 + tail)
        roof.append((arr,) * 4)
        addr.extend((types.Array(f, ndim, "C"),) for ndim in range(5))
    return {adam_flat: flat, adam_flat_serial: flat, adam_table: table,
            adam_table_serial: table, roofline_flat: roof, address: addr}


SIGNATURES = _signatures()


def compile_all() -> float:
    """Compile (or load from cache) every kernel for float32 and float64; returns seconds."""
    import time

    start = time.perf_counter()
    for kernel, sigs in SIGNATURES.items():
        for sig in sigs:
            kernel.compile(sig)
    return time.perf_counter() - start
