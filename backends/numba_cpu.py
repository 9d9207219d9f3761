"""Backend "numba": one fused, single-pass, parallel Numba kernel per step.

A single tensor, or a list of views that lie back to back in memory (``flatten`` makes
them), goes to ``adam_flat`` (vectorized). Any other list of tensors goes to
``adam_table`` in one call: a table of buffer addresses (kept while the same arrays come
back, so a training loop pays for it once) and a list of equal-sized chunks, so both
threads get the same work however the sizes are spread. Work of at most one chunk runs on
the calling thread (waking the pool costs more than it saves). Scalars are cast to the array dtype on
the host, so float32 math stays float32 and vectorizes.
"""
from __future__ import annotations

import numpy as np

from .base import Backend, first_of_contiguous

__all__ = ["NumbaBackend", "CHUNK"]

#: Elements per parallel task: large enough to amortize scheduling, small enough to balance.
CHUNK = 1 << 15


class NumbaBackend(Backend):
    """Fused Numba CPU kernels; ``threads`` defaults to NUMBA_NUM_THREADS (all cores)."""

    name = "numba"
    device = "cpu"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import numba  # noqa: F401
        except ImportError as exc:
            return f"numba is not installed ({exc})"
        return None

    def __init__(self, threads: int | None = None):
        import numba

        from . import _numba_kernels

        limit = numba.config.NUMBA_NUM_THREADS
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or not 1 <= threads <= limit):
            raise ValueError(f"threads must be an int in 1..{limit} (NUMBA_NUM_THREADS), "
                             f"got {threads!r}")
        self.threads = threads or limit
        self._numba = numba
        self._kernels = _numba_kernels
        self.compile_seconds = _numba_kernels.compile_all()

    def _update(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, scalars, dtype,
                cache):
        floats = np.array(scalars.floats(), dtype=dtype)
        vmax = max_exp_avg_sq if max_exp_avg_sq is not None else exp_avg_sq
        if self.threads == self._numba.config.NUMBA_NUM_THREADS:
            self._launch(params, grads, exp_avg, exp_avg_sq, vmax, floats, scalars, dtype, cache)
            return
        previous = self._numba.get_num_threads()
        self._numba.set_num_threads(self.threads)
        try:
            self._launch(params, grads, exp_avg, exp_avg_sq, vmax, floats, scalars, dtype, cache)
        finally:
            self._numba.set_num_threads(previous)

    def _launch(self, params, grads, exp_avg, exp_avg_sq, vmax, floats, scalars, dtype, cache):
        k = self._kernels
        if len(params) == 1:
            p = params[0].reshape(-1)
            kernel = k.adam_flat if p.size > CHUNK else k.adam_flat_serial
            kernel(p, grads[0].reshape(-1), exp_avg[0].reshape(-1), exp_avg_sq[0].reshape(-1),
                   vmax[0].reshape(-1), floats, scalars.use_l2, scalars.amsgrad)
            return
        key = ("numba-address-table", dtype, scalars.amsgrad)
        table = cache.get(key)
        if table is None:
            table = cache[key] = _AddressTable([int(a.size) for a in params],
                                               k.table_layout.py_func)
        if table.version != cache["validated"]["version"]:
            table.point_at((params, grads, exp_avg, exp_avg_sq, vmax), k.address)
            table.version = cache["validated"]["version"]
        if table.spans is not None:
            kernel = k.adam_flat if table.total > CHUNK else k.adam_flat_serial
            kernel(*table.spans, floats, scalars.use_l2, scalars.amsgrad)
            return
        kernel = k.adam_table if table.chunks > 1 else k.adam_table_serial
        kernel(table.packed, floats, scalars.use_l2, scalars.amsgrad)


class _AddressTable:
    """The packed int64 table ``adam_table`` reads: buffer addresses of (p, g, m, v, vmax)
    per tensor, sizes, and chunks of about CHUNK elements made of segments of tensors.

    It holds references to the arrays it points into, so they stay alive (and cannot be
    resized) while it does. ``version`` is the validation version it was filled for.
    """

    def __init__(self, sizes: list[int], layout):
        bounds, segments = [0], []
        room = CHUNK
        for t, n in enumerate(sizes):
            s = 0
            while s < n:
                take = min(n - s, room)
                segments.append((t, s, s + take))
                s += take
                room -= take
                if room == 0:
                    bounds.append(len(segments))
                    room = CHUNK
        if bounds[-1] != len(segments):
            bounds.append(len(segments))
        self.chunks = len(bounds) - 1
        n_tensors, n_seg = len(sizes), len(segments)
        self.packed = np.zeros(3 + 6 * n_tensors + len(bounds) + 3 * n_seg, dtype=np.int64)
        self.packed[:3] = (n_tensors, self.chunks, n_seg)
        self.addresses, self.sizes, bounds_view, seg_tensor, seg_start, seg_stop = \
            layout(self.packed)
        self.sizes[:] = sizes
        bounds_view[:] = bounds
        if segments:
            seg_tensor[:], seg_start[:], seg_stop[:] = zip(*segments)
        self.total = int(sum(sizes))
        self.refs: list = []
        self.spans: list | None = None
        self.version = None

    def point_at(self, columns, address) -> None:
        """Fill the addresses of these five lists of arrays, and find out whether each
        list lies back to back in memory (views of a flat buffer, see Backend.flatten)."""
        for col, arrays in enumerate(columns):
            self.addresses[:, col] = [address(a) for a in arrays]
        self.refs = [list(arrays) for arrays in columns]
        self.spans = self._contiguous_spans(columns)

    def _contiguous_spans(self, columns) -> list | None:
        """One 1-D array per column covering all its tensors, or None if any column has
        gaps. The span covers exactly the tensors' own bytes, which ``refs`` keeps alive."""
        itemsize = columns[0][0].dtype.itemsize
        spans = []
        for col, arrays in enumerate(columns):
            first = first_of_contiguous(self.addresses[:, col], self.sizes, itemsize)
            if first is None:
                return None
            spans.append(np.lib.stride_tricks.as_strided(arrays[first].reshape(-1),
                                                         shape=(self.total,),
                                                         strides=(itemsize,)))
        return spans
