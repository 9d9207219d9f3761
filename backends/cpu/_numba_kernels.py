"""Numba CPU kernels: one element-wise Adam body, two drivers (serial and parallel), and
the roofline.

``adam_flat`` steps one contiguous tensor; ``adam_table`` steps any number of tensors in
one call from a table of buffer addresses, cut into chunks of about CHUNK elements (small
tensors share a chunk, large ones span several), so threads get equal work. Both take
the hyperparameters as a float64 array and the step number, and compute the step's
constants once, in double, before the loop (``backends.scalars.step_constants``, the same
function the other backends call), then cast them to the array dtype so float32 math
stays float32.

Every inner loop is vectorized by LLVM (vsqrtps, vdivps): the element body takes and
returns scalars (passing arrays into it leaves reference counting calls in the loop, and
LLVM does not vectorize loops with calls), and the numpy error model drops the
division-by-zero check (an early exit). Where LLVM cannot prove the buffers apart it
checks at run time.
All kernels are compiled eagerly for float32 and float64 (cache=True): compilation is
never part of a step.
"""
from __future__ import annotations

import math
import types as pytypes
from contextlib import contextmanager

import numpy as np
from numba import carray, njit, prange, types
from numba.extending import intrinsic

from ..scalars import adam_moments, step_constants

__all__ = ["adam_flat", "adam_flat_serial", "adam_table", "adam_table_serial",
           "roofline_flat", "compile_all", "packed_table", "table_layout", "HYPER_FIELDS"]

FLOAT_TYPES = (types.float32, types.float64)
#: Elements per chunk of the table kernel: large enough to amortize the per-chunk work,
#: small enough that the threads' equal shares of chunks are equal shares of work.
CHUNK = 1 << 15
#: AdamConfig fields in the order of the kernels' float64 ``hyper`` argument.
HYPER_FIELDS = ("lr", "beta1", "beta2", "eps", "weight_decay", "decoupled", "maximize",
                "amsgrad")
KERNEL_OPTIONS = {"cache": True, "error_model": "numpy"}


@intrinsic
def _pointer(typingctx, address, like):
    """An int64 address as a typed pointer (``like``, a scalar or an array, gives the
    element type)."""
    element = like.dtype if isinstance(like, types.Array) else like
    signature = types.CPointer(element)(address, like)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return signature, codegen


step_constants_jit = njit(inline="always", cache=True)(step_constants)


@njit(cache=True)  # not inlined in Numba's IR: parfor array analysis trips on the tuple
def _constants(hyper, t, like):
    """(constants cast to ``like``'s dtype, use_l2, amsgrad) of step ``t``."""
    lr, beta1, beta2, eps, weight_decay, decoupled, maximize, amsgrad = (
        hyper[0], hyper[1], hyper[2], hyper[3], hyper[4], hyper[5] != 0, hyper[6] != 0,
        hyper[7] != 0)
    sign, l2, decay, beta1, omb1, beta2, omb2, step_size, inv_sqrt_bc2, eps = \
        step_constants_jit(lr, beta1, beta2, eps, weight_decay, decoupled, maximize, t)
    cast = like.dtype.type
    constants = (cast(sign), cast(l2), cast(decay), cast(beta1), cast(omb1), cast(beta2),
                 cast(omb2), cast(step_size), cast(inv_sqrt_bc2), cast(eps))
    return constants, weight_decay != 0 and not decoupled, amsgrad


_moments = njit(inline="always", cache=True)(adam_moments)


@njit(inline="always", cache=True)
def _adam_element(p, g, m, v, vmax, constants, use_l2, amsgrad):
    """The body of backends.scalars for one element: new (p, m, v, vmax)."""
    sign, l2, decay, beta1, omb1, beta2, omb2, step_size, inv_sqrt_bc2, eps = constants
    p, m, v = _moments(p, g, m, v, sign, l2, decay, beta1, omb1, beta2, omb2, use_l2)
    # np.maximum keeps NaN from either side and, unlike a branch, vectorizes
    vmax = np.maximum(vmax, v) if amsgrad else v
    return p - step_size * m / (math.sqrt(vmax) * inv_sqrt_bc2 + eps), m, v, vmax


def _adam_flat(p, g, m, v, vmax, hyper, t):
    """One contiguous tensor (1-D views); ``vmax`` is only read and written with amsgrad."""
    constants, use_l2, amsgrad = _constants(hyper, t, p)
    for i in prange(p.size):
        p[i], m[i], v[i], vmax_i = _adam_element(p[i], g[i], m[i], v[i],
                                                 vmax[i] if amsgrad else v[i],
                                                 constants, use_l2, amsgrad)
        if amsgrad:
            vmax[i] = vmax_i


def _adam_table(table, like, hyper, t):
    """Many tensors in one call, described by one int64 array (see ``table_layout``):
    per tensor the addresses of (p, g, m, v, vmax) (its five columns) and its size; per chunk c (one
    parallel task) a run of segments, segment k covering elements start:stop of a tensor.
    ``like`` is any array of the tensors' dtype (only its type is used).
    """
    constants, use_l2, amsgrad = _constants(hyper, t, like)
    eps = constants[9]
    addresses, sizes, chunk_bounds, seg_tensor, seg_start, seg_stop = table_layout(table)
    for c in prange(chunk_bounds.size - 1):
        for k in range(chunk_bounds[c], chunk_bounds[c + 1]):
            tensor, s, e = seg_tensor[k], seg_start[k], seg_stop[k]
            n = sizes[tensor]
            # slices indexed from 0: indexing the whole tensor from s runs 4x slower here
            p = carray(_pointer(addresses[tensor, 0], eps), n)[s:e]
            g = carray(_pointer(addresses[tensor, 1], eps), n)[s:e]
            m = carray(_pointer(addresses[tensor, 2], eps), n)[s:e]
            v = carray(_pointer(addresses[tensor, 3], eps), n)[s:e]
            vmax = carray(_pointer(addresses[tensor, 4], eps), n)[s:e]
            for i in range(e - s):
                p[i], m[i], v[i], vmax_i = _adam_element(p[i], g[i], m[i], v[i],
                                                         vmax[i] if amsgrad else v[i],
                                                         constants, use_l2, amsgrad)
                if amsgrad:
                    vmax[i] = vmax_i


@njit(inline="always", cache=True)
def table_layout(table):
    """Views into a packed table: [tensors, columns, chunks, segments | per tensor
    ``columns`` int64 fields, the arrays' addresses first (tensors x columns) | sizes |
    chunk_bounds (chunks + 1) | seg_tensor | seg_start | seg_stop]."""
    tensors, columns, chunks, segments = table[0], table[1], table[2], table[3]
    at = 4
    addresses = table[at:at + columns * tensors].reshape((tensors, columns))
    at += columns * tensors
    sizes = table[at:at + tensors]
    at += tensors
    chunk_bounds = table[at:at + chunks + 1]
    at += chunks + 1
    seg_tensor = table[at:at + segments]
    seg_start = table[at + segments:at + 2 * segments]
    seg_stop = table[at + 2 * segments:at + 3 * segments]
    return addresses, sizes, chunk_bounds, seg_tensor, seg_start, seg_stop


def packed_table(sizes, columns: int, chunk: int, block: int | None = None) -> tuple:
    """(packed, its ``table_layout`` views) for tensors of ``sizes`` with ``columns``
    fields each (zeros, for the caller to fill): chunks of ``chunk`` elements (the last
    one shorter) made of segments of tensors in order; with ``block``, no segment crosses
    a multiple of ``block`` elements of its tensor."""
    bounds, segments = [0], []
    room = chunk
    for t, n in enumerate(sizes):
        s = 0
        while s < n:
            take = min(n - s, room, block - s % block if block else n)
            segments.append((t, s, s + take))
            s += take
            room -= take
            if room == 0:
                bounds.append(len(segments))
                room = chunk
    if bounds[-1] != len(segments):
        bounds.append(len(segments))
    n_tensors, n_seg = len(sizes), len(segments)
    packed = np.zeros(4 + (columns + 1) * n_tensors + len(bounds) + 3 * n_seg, np.int64)
    packed[:4] = (n_tensors, columns, len(bounds) - 1, n_seg)
    views = table_layout.py_func(packed)
    addresses, table_sizes, chunk_bounds, seg_tensor, seg_start, seg_stop = views
    table_sizes[:] = sizes
    chunk_bounds[:] = bounds
    if segments:
        seg_tensor[:], seg_start[:], seg_stop[:] = zip(*segments)
    return packed, views


def _serial_twin(fn):
    """A copy of ``fn`` named ``<name>_serial``. Numba's on-disk cache files a compiled
    function under its qualified name and signature, not its options, so a serial and a
    parallel build of one Python function would each load whichever was compiled first."""
    twin = pytypes.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial")
    twin.__qualname__ = fn.__qualname__ + "_serial"
    twin.__doc__ = fn.__doc__
    return twin


#: The parallel drivers, and serial twins for work too small to pay for waking threads.
adam_flat = njit(parallel=True, **KERNEL_OPTIONS)(_adam_flat)
adam_flat_serial = njit(**KERNEL_OPTIONS)(_serial_twin(_adam_flat))
adam_table = njit(parallel=True, **KERNEL_OPTIONS)(_adam_table)
adam_table_serial = njit(**KERNEL_OPTIONS)(_serial_twin(_adam_table))


@njit(parallel=True, **KERNEL_OPTIONS)
def roofline_flat(p, g, m, v):
    """The ceiling: Adam's streams (read p, g, m, v; write p, m, v), trivial arithmetic."""
    for i in prange(p.size):
        gi = g[i]
        p[i] = p[i] + gi
        m[i] = m[i] + gi
        v[i] = v[i] + gi


def _signatures():
    flat, table, roof = [], [], []
    hyper, step = types.float64[::1], types.int64
    for f in FLOAT_TYPES:
        arr = f[::1]
        table.append((types.int64[::1], arr, hyper, step))
        flat.append((arr,) * 5 + (hyper, step))
        roof.append((arr,) * 4)
    return {adam_flat: flat, adam_flat_serial: flat, adam_table: table,
            adam_table_serial: table, roofline_flat: roof}


SIGNATURES = _signatures()


#: LLVM's interleave count for the table kernels' loops. Its cost model picks 1 for a
#: loop that checks aliasing at run time; 4 independent vector chains hide the latency of
#: vsqrtps/vdivps and bring the table kernel level with adam_flat in cache (measured).
TABLE_INTERLEAVE = 4


def compile_all() -> float:
    """Compile (or load from cache) every kernel for float32 and float64; returns seconds."""
    import time

    start = time.perf_counter()
    for kernel, sigs in SIGNATURES.items():
        interleave = TABLE_INTERLEAVE if kernel in (adam_table, adam_table_serial) else 0
        with _llvm_interleave(interleave):
            for sig in sigs:
                kernel.compile(sig)
    return time.perf_counter() - start


def _llvm_interleave(count: int):
    """LLVM's -force-vector-interleave for what compiles inside (0: its cost model's
    choice, the default, which is restored after)."""
    return _llvm_option("-force-vector-interleave", count)


@contextmanager
def _llvm_option(option: str, count: int):
    """An LLVM ``option=count`` (a -force-vector-* count) for what compiles inside; 0,
    the cost model's choice and the default, is restored after."""
    import llvmlite.binding as llvm

    if count:
        llvm.set_option("", f"{option}={count}")
    try:
        yield
    finally:
        if count:
            llvm.set_option("", f"{option}=0")
