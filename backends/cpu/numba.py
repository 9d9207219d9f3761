"""Backend "numba": one fused, single-pass, parallel Numba kernel per step.

A single tensor, or a list of views that lie back to back in memory (``flatten`` makes
them), goes to ``adam_flat`` (vectorized). Any other list of tensors goes to
``adam_table`` in one call: a table of buffer addresses (kept while the same arrays come
back, so a training loop pays for it once) and a list of equal-sized chunks, so threads
get equal work however the sizes are spread. Small steps run on the calling thread
(waking the pool costs more than it saves). The kernels compute the
step's constants themselves, once per call (see _numba_kernels).
"""
from __future__ import annotations

import functools

import numpy as np

from .._array_headers import data_addresses
from ..base import Backend
from ..formats import seed_stream
from ..memory import first_of_contiguous

__all__ = ["NumbaBackend", "SERIAL_MAX", "INT8_SERIAL_MAX"]

#: Up to this many elements, one tensor is stepped on the calling thread.
SERIAL_MAX = 1 << 13
#: The same for int8 state, whose step does twice the work per element: measured here,
#: 2 threads took 13.8 us against 11.3 serial at 2^14 elements, 12.5 against 21.6 at 2^15.
INT8_SERIAL_MAX = 1 << 14


class NumbaBackend(Backend):
    """Fused Numba CPU kernels; ``threads`` defaults to NUMBA_NUM_THREADS (all cores)."""

    name = "numba"
    device = "cpu"
    supports_int8_state = True
    supports_low_precision = True

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import numba  # noqa: F401
        except ImportError as exc:
            return f"numba is not installed ({exc})"
        return None

    def __init__(self, threads: int | None = None):
        import numba

        from . import _numba_int8_kernels, _numba_kernels

        limit = numba.config.NUMBA_NUM_THREADS
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or not 1 <= threads <= limit):
            raise ValueError(f"threads must be an int in 1..{limit} (NUMBA_NUM_THREADS), "
                             f"got {threads!r}")
        self.threads = threads or limit
        self._numba = numba
        self._kernels = _numba_kernels
        self._all_threads = limit
        self._last_hyper = (None, None, None)
        self._lr_index = _numba_kernels.HYPER_FIELDS.index("lr")
        self._int8_kernels = _numba_int8_kernels
        self._low_precision_compiled: set = set()
        self._lp = None
        self.compile_seconds = _numba_kernels.compile_all() + _numba_int8_kernels.compile_all()

    def _options(self) -> dict:
        return {"threads": self.threads}

    def _update(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t, dtype,
                cache, lr=None):
        table = cache.get((_AddressTable, dtype))
        if table is None or table.key is not cache["validated"]["key"]:
            table = self._table(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, dtype,
                                cache)
        self._run(table.kernel, table.arguments, t, cfg, table.parallel, lr)

    def _update_int8(self, p, g, moments, cfg, t, lr=None) -> None:
        (m_codes, m_scales), (v_codes, v_scales), vmax = moments
        vmax_codes, vmax_scales = vmax if vmax is not None else (v_codes, v_scales)
        parallel = p.size > INT8_SERIAL_MAX
        kernel = self._int8_kernels.adam_int8 if parallel else \
            self._int8_kernels.adam_int8_serial
        self._run(kernel, (p, g, m_codes, m_scales, v_codes, v_scales, vmax_codes,
                           vmax_scales), t, cfg, parallel, lr)

    def _low_precision_array(self, a):
        """The kernels' view (``_typed``), made once per plan, not every step."""
        return _typed(a)

    def _low_precision_plan(self, tensors: list, cfg, grouped: bool = True):
        """Address tables of the tensors, one per format of several tensors
        (``_numba_low_precision_table``), made and compiled once per plan; not
        ``grouped``, a kernel call per tensor."""
        from ._numba_low_precision_table import LowPrecisionTables

        return LowPrecisionTables(tensors, cfg.rounding == "stochastic", SERIAL_MAX, grouped)

    def _low_precision_new_grads(self, plan, tensors: list, cfg):
        """The plan's tables pointed at the new grads (nothing else is made again)."""
        plan.point_grads(tensors)
        return plan

    def _update_low_precision_plan(self, plan, cfg, t, lr=None) -> None:
        """One kernel call per format: its table's, or a lone tensor's own. With
        stochastic rounding every kernel derives its keys from the seed's stream and
        ``t`` (``segment_key``): no key is computed in Python per step."""
        seed = _seed_bits(cfg.seed) if cfg.rounding == "stochastic" else None
        for kernel, arguments, parallel in plan.tables:
            self._run(kernel, arguments, t, cfg, parallel, lr, seed)
        for index, tensors in plan.lone:
            self._update_lone(*tensors, cfg, t, seed, index, lr)

    def _update_lone(self, p, g, m, v, vmax, master, compensation, cfg, t, seed, index,
                     lr) -> None:
        """Step ``t`` of tensor ``index`` of the step in a kernel call of its own (1-D
        arrays of ``_typed``); ``seed`` is ``_seed_bits`` or None."""
        lp = self._low_precision_kernels()
        parallel = p.size > SERIAL_MAX
        if lp.in_pairs(p, g, m, master):  # arrays: _low_precision_arrays' views
            kernel = lp.adam_bf16_pairs if parallel else lp.adam_bf16_pairs_serial
            arguments = (p, g, m, v, vmax, compensation)
        else:
            kernel = lp.adam_low_precision if parallel else lp.adam_low_precision_serial
            arguments = (p, g, m, v, vmax, master, compensation)
        # the argument types: master is float32 and compensation has p's dtype if present
        kind = (parallel, seed is None, p.dtype, g.dtype, m.dtype, vmax is None,
                master is None, compensation is None)
        if kind not in self._low_precision_compiled:  # once per combination of types
            lp.compiled_for(kernel, arguments + (np.zeros(8), t, seed, index, 0))
            self._low_precision_compiled.add(kind)
        for start, part in _blocks(arguments, lp.BLOCK):
            self._run(kernel, part, t, cfg, parallel, lr, seed, index, start)

    def _low_precision_kernels(self):
        """backends.cpu._numba_low_precision_kernels, imported on first use."""
        if self._lp is None:
            from . import _numba_low_precision_kernels

            self._lp = _numba_low_precision_kernels
        return self._lp

    def _run(self, kernel, arguments, t, cfg, parallel, lr, *after) -> None:
        """``kernel(*arguments, hyper, t, *after)`` at learning rate ``lr`` (None:
        cfg.lr)."""
        last_cfg, last_lr, hyper = self._last_hyper
        if last_cfg is not cfg or last_lr != lr:
            hyper = self._hyper(cfg, lr)
        self.launch(kernel, arguments, hyper, t, parallel, *after)

    def launch(self, kernel, arguments, hyper, t, parallel, *after) -> None:
        """``kernel(*arguments, hyper, t, *after)`` on ``threads`` threads when
        ``parallel``; ``hyper`` is the kernels' float64 array (``HYPER_FIELDS`` order).
        The torch.optim adapter calls this with its own address tables (backends.torch)."""
        if self.threads == self._all_threads or not parallel:
            kernel(*arguments, hyper, t, *after)
            return
        previous = self._numba.get_num_threads()
        self._numba.set_num_threads(self.threads)
        try:
            kernel(*arguments, hyper, t, *after)
        finally:
            self._numba.set_num_threads(previous)

    def _hyper(self, cfg, lr) -> np.ndarray:
        """The kernels' float64 hyperparameter array for ``cfg`` at ``lr`` (None: cfg.lr),
        kept as the last one: a new lr under the same config copies it and sets lr (a new
        array, never one a kernel on another thread may be reading)."""
        last_cfg, _, last = self._last_hyper
        if last_cfg is cfg:
            hyper = last.copy()
        else:
            hyper = np.array([float(getattr(cfg, name)) for name in self._kernels.HYPER_FIELDS],
                             dtype=np.float64)
        hyper[self._lr_index] = cfg.lr if lr is None else lr
        self._last_hyper = (cfg, lr, hyper)
        return hyper

    def _table(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, dtype, cache):
        """The address table of these arrays, pointed at them again (see
        Backend._validate for the column lists it compares)."""
        seen = cache["validated"]
        table = cache.get((_AddressTable, dtype))
        sources = seen["columns"]
        if max_exp_avg_sq is None:  # the kernels never touch vmax then; any valid address
            max_exp_avg_sq, sources = exp_avg_sq, sources[:4] + sources[3:4]
        if table is None or table.sources[0] is not sources[0]:
            table = cache[(_AddressTable, dtype)] = _AddressTable(
                [int(a.size) for a in params], dtype, self._kernels)
        table.refresh((params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq), sources)
        table.choose_kernel(self._kernels)
        table.key = seen["key"]
        return table


def _blocks(arguments, size):
    """(first element, the arrays' elements from it) for blocks of ``size`` elements:
    the arguments themselves when they fit in one (as in practice)."""
    n = arguments[0].size
    if n <= size:
        yield 0, arguments
        return
    for start in range(0, n, size):
        yield start, tuple(None if a is None else a[start:start + size] for a in arguments)


@functools.lru_cache(maxsize=64)
def _seed_bits(seed: int) -> np.uint64:
    """The kernels' stochastic-rounding argument for ``seed``: its ``seed_stream``."""
    return np.uint64(seed_stream(seed))


def _typed(a: np.ndarray) -> np.ndarray:
    """The array the low-precision kernels take: bfloat16 as uint16 bits, float16 as
    int16 bits (two types, so Numba compiles each format's conversions), float32 as is."""
    if a.dtype == np.float32:
        return a
    return a.view(np.int16 if a.dtype == np.float16 else np.uint16)


class _AddressTable:
    """The packed int64 table ``adam_table`` reads: buffer addresses of (p, g, m, v, vmax)
    per tensor, sizes, and chunks of about ``kernels.CHUNK`` elements made of segments of
    tensors;
    and, when every column lies back to back in memory, one 1-D span per column for
    ``adam_flat`` instead.

    It holds references to the arrays it points into, so they stay alive while it does.
    ``sources`` are the validation's column lists it was filled from.
    """

    def __init__(self, sizes: list[int], dtype, kernels):
        self.packed, views = kernels.packed_table(sizes, 5, kernels.CHUNK)
        self.addresses, self.sizes, bounds = views[:3]
        self.chunks = bounds.size - 1
        self.total = int(sum(sizes))
        self.like = np.empty(0, dtype)
        self.key = None
        self.sources: list = [None] * 5
        self.refs: list = [None] * 5
        self.column_spans: list = [None] * 5
        self.spans: list | None = None

    def refresh(self, columns, sources) -> None:
        """Point each column whose arrays changed (its column list is not the one it was
        filled from) at its new arrays, and see whether each lies back to back in memory
        (views of a flat buffer, see Backend.flatten)."""
        changed = False
        for col, arrays in enumerate(columns):
            if self.sources[col] is not sources[col]:
                self.addresses[:, col] = data_addresses(arrays)
                self.refs[col] = list(arrays)
                self.column_spans[col] = self._span(col, arrays)
                self.sources[col] = sources[col]
                changed = True
        if changed:
            whole = all(span is not None for span in self.column_spans)
            self.spans = list(self.column_spans) if whole else None

    def choose_kernel(self, kernels) -> None:
        """Set ``kernel``, its leading ``arguments`` (hyper and t follow) and whether it is
        ``parallel``: one contiguous span per column goes to adam_flat, anything else to
        adam_table, on the calling thread when the work is too small to pay for waking
        threads."""
        if self.spans is not None:
            self.parallel = self.total > SERIAL_MAX
            self.kernel = kernels.adam_flat if self.parallel else kernels.adam_flat_serial
            self.arguments = tuple(self.spans)
        else:
            self.parallel = self.chunks > 1
            self.kernel = kernels.adam_table if self.parallel else kernels.adam_table_serial
            self.arguments = (self.packed, self.like)

    def _span(self, col, arrays):
        """One 1-D array covering all of a column's tensors, or None if it has gaps. The
        span covers exactly the tensors' own bytes, which ``refs`` keeps alive."""
        if len(arrays) == 1:
            return arrays[0].reshape(-1)
        itemsize = self.like.itemsize
        first = first_of_contiguous(self.addresses[:, col], self.sizes, itemsize)
        if first is None:
            return None
        return np.lib.stride_tricks.as_strided(arrays[first].reshape(-1),
                                               shape=(self.total,), strides=(itemsize,))
