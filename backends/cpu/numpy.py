"""Backend "numpy": in-place, allocation-free and cache-blocked NumPy.

Naive NumPy Adam makes one pass over memory per operation (about a dozen). Here every
tensor is processed in chunks small enough that a chunk of p, g, m, v and two scratch
buffers stay in cache, so the dozen operations hit cache and a step costs close to one
pass over memory. Large steps are shared among worker threads. Scratch buffers are
allocated once per dtype (and for low-precision steps) and thread (the caller's or a
worker's), then reused: optimizers that share one backend instance from several threads
never share scratch.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..base import Backend
from ..formats import FLOAT32, random16, round_nearest, round_stochastic, widen
from ..int8_codec import BLOCK, n_blocks, step_blocks_numpy
from ..scalars import StepScalars

__all__ = ["NumpyBackend"]

#: Bytes of each array a chunk covers: 6 such blocks (p, g, m, v, 2 scratch) fit in L2.
CHUNK_BYTES = 64 * 1024
#: With several threads chunks are this many times larger: between ufuncs a thread needs
#: the GIL, and fewer, longer ufuncs contend less for it (measured here at 2^24 float32,
#: 2 threads: 64 KB chunks 4.6 GB/s, 512 KB 14 GB/s; one thread, 64 KB: 8.1 GB/s).
PARALLEL_CHUNK_FACTOR = 8
#: Below this many elements a step runs on the calling thread (waking workers costs more).
PARALLEL_MIN_ELEMENTS = 1 << 18


class NumpyBackend(Backend):
    """Fused-by-blocking NumPy Adam; the same element-wise body as every kernel.

    NumPy releases the GIL inside ufuncs, so large steps are split over ``threads``
    worker threads (default: all cores), each with its own scratch buffers.
    """

    name = "numpy"
    device = "cpu"
    supports_int8_state = True
    supports_low_precision = True

    def __init__(self, chunk_bytes: int = CHUNK_BYTES, threads: int | None = None):
        if chunk_bytes < 64:
            raise ValueError(f"chunk_bytes must be >= 64, got {chunk_bytes}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        self.chunk_bytes = chunk_bytes
        self.threads = threads or os.cpu_count() or 1
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._thread_scratch = threading.local()

    def _options(self) -> dict:
        return {"chunk_bytes": self.chunk_bytes, "threads": self.threads}

    def _scratch_for(self, dtype) -> tuple[np.ndarray, np.ndarray]:
        """Two scratch buffers of ``dtype`` owned by the calling thread."""
        buffers = self._thread_scratch.__dict__
        if dtype not in buffers:
            n = self.chunk_bytes * PARALLEL_CHUNK_FACTOR // dtype.itemsize
            buffers[dtype] = (np.empty(n, dtype), np.empty(n, dtype))
        return buffers[dtype]

    def _update(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t, dtype,
                cache, lr=None):
        c = _cast(StepScalars.for_step(cfg, t, lr), dtype)
        columns = [params, grads, exp_avg, exp_avg_sq]
        if max_exp_avg_sq is not None:
            columns.append(max_exp_avg_sq)
        tensors = [[a.reshape(-1) for a in arrays] for arrays in zip(*columns)]
        total = sum(flat[0].size for flat in tensors)
        parallel = self.threads > 1 and total >= PARALLEL_MIN_ELEMENTS
        chunk = self.chunk_bytes * (PARALLEL_CHUNK_FACTOR if parallel else 1) // dtype.itemsize
        blocks = [(i, s, min(s + chunk, flat[0].size))
                  for i, flat in enumerate(tensors) for s in range(0, flat[0].size, chunk)]
        self._share(blocks, parallel, lambda share: self._run_blocks(
            tensors, share, self._scratch_for(dtype), c))

    def _share(self, work: list, parallel: bool, run) -> None:
        """``run(share)`` for shares of ``work`` (a list), one per worker thread when
        ``parallel`` (the calling thread takes the first), else all on the calling thread."""
        workers = min(self.threads, len(work)) if parallel else 1
        if workers <= 1:
            run(work)
            return
        shares = [[work[i] for i in idx] for idx in
                  np.array_split(np.arange(len(work)), workers)]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="adam-numpy")
        futures = [self._pool.submit(run, share) for share in shares[1:]]
        run(shares[0])
        for future in futures:
            future.result()

    def _update_int8(self, p, g, moments, cfg, t, lr=None) -> None:
        """int8 state, on the calling thread, in chunks of whole blocks of about
        ``chunk_bytes`` of params (``int8_codec.step_blocks_numpy`` on each)."""
        c = _cast(StepScalars.for_step(cfg, t, lr), p.dtype)
        chunk = max(BLOCK, self.chunk_bytes // p.itemsize // BLOCK * BLOCK)
        for start in range(0, p.size, chunk):
            stop = min(start + chunk, p.size)
            blocks = slice(start // BLOCK, n_blocks(stop))
            part = [None if pair is None else (pair[0][start:stop], pair[1][blocks])
                    for pair in moments]
            step_blocks_numpy(p[start:stop], g[start:stop], part, c, _adam_block)

    def _update_low_precision(self, p, g, m, v, vmax, master, compensation, cfg, t,
                              key, lr=None) -> None:
        """Low-precision params or state in chunks of ``chunk_bytes`` of float32 (times
        PARALLEL_CHUNK_FACTOR on several threads, as ``_update``): each chunk widened to
        float32 scratch, stepped by ``_adam_block`` and written back with ``formats``'
        roundings. Stochastic rounding's bits depend on the element index only, so any
        split gives the same bits."""
        c = _cast(StepScalars.for_step(cfg, t, lr), FLOAT32)
        parallel = self.threads > 1 and p.size >= PARALLEL_MIN_ELEMENTS
        chunk = max(1, self.chunk_bytes * (PARALLEL_CHUNK_FACTOR if parallel else 1) // 4)
        spans = [(s, min(s + chunk, p.size)) for s in range(0, p.size, chunk)]
        arrays = (p, g, m, v, vmax, master, compensation)
        self._share(spans, parallel, lambda share: _low_precision_spans(
            arrays, share, self._low_precision_scratch(chunk), c, key))

    def _low_precision_scratch(self, chunk: int) -> np.ndarray:
        """Seven float32 rows of at least ``chunk`` elements owned by the calling thread."""
        buffers = self._thread_scratch.__dict__
        if buffers.get("low_precision", np.empty((7, 0))).shape[1] < chunk:
            buffers["low_precision"] = np.empty((7, chunk), np.float32)
        return buffers["low_precision"]

    @staticmethod
    def _run_blocks(tensors, blocks, scratch, c) -> None:
        scratch_a, scratch_b = scratch
        with np.errstate(all="ignore"):  # NaN/Inf propagate as in every kernel, silently
            for i, start, stop in blocks:
                views = [a[start:stop] for a in tensors[i]]
                _adam_block(*views[:4], views[4] if len(views) == 5 else None,
                            scratch_a[: stop - start], scratch_b[: stop - start], c)


def _cast(scalars, dtype) -> dict:
    """The step's scalars in the array dtype, so float32 math stays float32."""
    names = ("sign", "l2", "decay", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2",
             "step_size", "inv_sqrt_bc2", "eps")
    c = {k: dtype.type(getattr(scalars, k)) for k in names}
    c["use_l2"] = scalars.use_l2
    return c


def _low_precision_spans(arrays, spans, scratch, c, key) -> None:
    """Step elements s:e of one low-precision tensor for each (s, e) of ``spans``:
    ``arrays`` are (p, g, m, v, vmax, master, compensation), None where not used."""
    p, g, m, v, vmax, master, compensation = arrays
    with np.errstate(all="ignore"):
        for s, e in spans:
            w, gw, mw, vw, xw, a, b = (row[:e - s] for row in scratch)
            w = master[s:e] if master is not None else widen(p[s:e], out=w)
            gw = _widened(g[s:e], gw)
            mw, vw = _widened(m[s:e], mw), _widened(v[s:e], vw)
            xw = None if vmax is None else _widened(vmax[s:e], xw)
            _adam_block(w, gw, mw, vw, xw, a, b, c)
            for stored, value in ((m, mw), (v, vw), (vmax, xw)):
                if stored is not None and stored.dtype != FLOAT32:
                    round_nearest(value, stored.dtype, out=stored[s:e])
            if compensation is not None:
                x = np.add(w, widen(compensation[s:e], out=a), out=a)
                round_nearest(x, p.dtype, out=p[s:e])
                np.subtract(x, widen(p[s:e], out=b), out=b)
                round_nearest(b, p.dtype, out=compensation[s:e])
            elif key is not None:
                round_stochastic(w, random16(key, s, e), out=p[s:e])
            else:
                round_nearest(w, p.dtype, out=p[s:e])


def _widened(a, scratch):
    """``a`` itself if float32 (stepped in place), else its float32 values in scratch."""
    return a if a.dtype == FLOAT32 else widen(a, out=scratch)


def _adam_block(p, g, m, v, vmax, a, b, c) -> None:
    """The kernel body on one cache-sized block; ``a`` and ``b`` are scratch."""
    if c["sign"] < 0:  # a multiply, as the kernels do: np.negative flips a NaN's sign bit
        np.multiply(g, c["sign"], out=a)
        g = a
    if c["use_l2"]:
        np.multiply(p, c["l2"], out=b)
        np.add(b, g, out=a)  # l2*p + g: the operand order LLVM gives the Numba kernel
        g = a
    if c["decay"] != 1:
        np.multiply(p, c["decay"], out=p)
    np.multiply(m, c["beta1"], out=m)
    np.multiply(g, c["one_minus_beta1"], out=b)
    np.add(m, b, out=m)
    np.multiply(v, c["beta2"], out=v)
    np.multiply(g, c["one_minus_beta2"], out=b)
    np.multiply(b, g, out=b)
    np.add(v, b, out=v)
    if vmax is not None:
        np.maximum(vmax, v, out=vmax)
        v = vmax
    np.sqrt(v, out=b)
    np.multiply(b, c["inv_sqrt_bc2"], out=b)
    np.add(b, c["eps"], out=b)
    np.multiply(m, c["step_size"], out=a)
    np.divide(a, b, out=a)
    np.subtract(p, a, out=p)
