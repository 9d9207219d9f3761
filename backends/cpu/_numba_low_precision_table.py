"""One Numba kernel call for many low-precision tensors of one format.

``adam_low_precision_table`` is ``_numba_low_precision_kernels.adam_low_precision`` over
a packed table (``_numba_kernels.table_layout``): per tensor the addresses of (p, g, m,
v, vmax, master, compensation) and its index in the step, per chunk (one parallel task)
a run of segments of tensors; chunks hold equal numbers of elements, so threads get
equal work however the sizes are spread. Each element is stepped by the per-tensor
kernels' code, so the bits are the same: ``step_element``, or for all-bfloat16 formats
``pair_run`` on the pairs of the tensor's elements (2j, 2j + 1: they share a hash), an
element a chunk cuts from its pair by ``step_element``. Segments never cross a hash
block (``BLOCK``):
element ``s + i`` of a tensor hashes ``lo32(s + i)`` under the key of its block, which
the kernel derives from the seed's ``formats.seed_stream`` and the step once per segment
(``segment_key``), so no key is computed in Python per step.

``LowPrecisionTables`` groups a step's tensors by format (the dtypes of every array and
which ones are there): a format with several tensors becomes one table, stepped in one
call; a lone tensor keeps the per-tensor kernel, as a lone float32 tensor keeps
``adam_flat``, and so does an all-bfloat16 one above ``serial_max`` (``adam_bf16_pairs``
stepped it faster than the table's element loop did).
"""
from __future__ import annotations

import numpy as np
from numba import carray, njit, prange, types
from numba.extending import overload

from .._array_headers import data_addresses
from ._numba_kernels import (KERNEL_OPTIONS, _pointer, _serial_twin,
                             packed_table, table_layout)
from ._numba_low_precision_kernels import (BLOCK, _constants32, compiled_for, in_pairs,
                                           pair_run, rounding_key, step_element)

__all__ = ["adam_low_precision_table", "adam_low_precision_table_serial",
           "LowPrecisionTables", "CHUNK"]

#: Most elements per chunk: a few chunks per thread on small models, each long enough to
#: amortize its segments' set-up.
CHUNK = 1 << 13
#: Columns of a tensor's row: the seven arrays' addresses, then its index in the step.
_ARRAYS, _INDEX = 7, 7


def _segment(address, like, n, s, e):
    """Elements s:e of the tensor of ``n`` elements at ``address`` with ``like``'s
    element type (None when ``like`` is None: an array the format does not have)."""


@overload(_segment, inline="always")
def _segment_overload(address, like, n, s, e):
    if isinstance(like, types.NoneType):
        return lambda address, like, n, s, e: None
    # slices indexed from 0: indexing the whole tensor from s runs 4x slower (adam_table)
    return lambda address, like, n, s, e: carray(_pointer(address, like), n)[s:e]


def _segment_step(p, g, m, v, vmax, master, compensation, constants, use_l2, key, s):
    """Every element of a segment (1-D arrays from element ``s`` of their tensor)."""


@overload(_segment_step)
def _segment_step_overload(p, g, m, v, vmax, master, compensation, constants, use_l2, key,
                           s):
    if not (isinstance(master, types.NoneType)
            and p.dtype == g.dtype == m.dtype == types.uint16):
        def elements(p, g, m, v, vmax, master, compensation, constants, use_l2, key, s):
            for i in range(p.size):
                step_element(p, g, m, v, vmax, master, compensation, constants, use_l2,
                             key, i, s + i)
        return elements

    def pairs(p, g, m, v, vmax, master, compensation, constants, use_l2, key, s):
        # all bfloat16: in pairs of the tensor's elements (2j, 2j + 1), which share a hash,
        # as adam_bf16_pairs steps them; an element without its pair here, one at a time
        lead = s % 2
        if lead and p.size:
            step_element(p, g, m, v, vmax, master, compensation, constants, use_l2, key,
                         0, s)
        n = (p.size - lead) // 2
        pair_run(p, g, m, v, vmax, compensation, constants, use_l2, key, lead, n, s + lead)
        last = lead + 2 * n
        if last < p.size:
            step_element(p, g, m, v, vmax, master, compensation, constants, use_l2, key,
                         last, s + last)
    return pairs


def _adam_low_precision_table(table, p_like, g_like, m_like, v_like, vmax_like,
                              master_like, compensation_like, hyper, t, seed):
    """Every tensor of a table of one format (see the module docstring); the ``*_like``
    arrays give each column's element type (``adam_low_precision``'s argument types),
    None for a column the format lacks; ``seed`` (uint64) is ``formats.seed_stream``
    with stochastic rounding, else None."""
    constants, use_l2, _ = _constants32(hyper, t)
    rows, sizes, chunk_bounds, seg_tensor, seg_start, seg_stop = table_layout(table)
    for c in prange(chunk_bounds.size - 1):
        for k in range(chunk_bounds[c], chunk_bounds[c + 1]):
            tensor, s, e = seg_tensor[k], seg_start[k], seg_stop[k]
            n, row = sizes[tensor], rows[tensor]
            p = _segment(row[0], p_like, n, s, e)
            g = _segment(row[1], g_like, n, s, e)
            m = _segment(row[2], m_like, n, s, e)
            v = _segment(row[3], v_like, n, s, e)
            vmax = _segment(row[4], vmax_like, n, s, e)
            master = _segment(row[5], master_like, n, s, e)
            compensation = _segment(row[6], compensation_like, n, s, e)
            key = rounding_key(seed, t, row[_INDEX], s)
            _segment_step(p, g, m, v, vmax, master, compensation, constants, use_l2, key,
                          s)


adam_low_precision_table = njit(parallel=True, **KERNEL_OPTIONS)(_adam_low_precision_table)
adam_low_precision_table_serial = njit(**KERNEL_OPTIONS)(
    _serial_twin(_adam_low_precision_table))


class LowPrecisionTables:
    """A step's tensors, [(index, arrays of ``_typed``)] of one plan, grouped by format:
    ``tables`` (kernel, leading arguments, parallel) of the formats with several tensors,
    ``lone`` (index, arrays) of the others. It holds the arrays its tables point into.
    Kernels are compiled (or loaded from cache) here, once per plan, not in a step.
    ``serial_max`` is the backend's threshold (``backends.cpu.numba.SERIAL_MAX``): a table
    of at most that many elements runs on the calling thread in one chunk. Not
    ``grouped``, every tensor is lone (the path before the table kernel, for comparing)."""

    def __init__(self, tensors: list, stochastic: bool, serial_max: int,
                 grouped: bool = True):
        formats: dict = {}
        alone = []
        for position, (index, arrays) in enumerate(tensors):
            p, g, m, _, _, master, _ = arrays
            if not grouped or (p.size > serial_max and in_pairs(p, g, m, master)):
                alone.append(position)  # faster in pairs than in the table
                continue
            kind = tuple(None if a is None else a.dtype for a in arrays)
            formats.setdefault(kind, []).append(position)
        self.tensors = tensors
        members = [group for group in formats.values() if len(group) > 1]
        self.tables, self._rows = [], []
        for group in members:
            kernel, arguments, parallel, rows = _table([tensors[k] for k in group], stochastic,
                                                    serial_max)
            self.tables.append((kernel, arguments, parallel))
            self._rows.append((group, rows))
        self._lone = alone + [group[0] for group in formats.values() if len(group) == 1]
        self.lone = [tensors[k] for k in self._lone]

    def point_grads(self, tensors: list) -> None:
        """Take ``tensors``, the same as the plan's but for their grads: the tables'
        grad addresses and the lone tensors' arrays follow them."""
        for group, rows in self._rows:
            rows[:, 1] = data_addresses([tensors[k][1][1] for k in group])
        self.tensors = tensors
        self.lone = [tensors[k] for k in self._lone]


def _table(group: list, stochastic: bool, serial_max: int) -> tuple:
    """(kernel, arguments before hyper, parallel, the table's rows) stepping ``group``'s
    tensors."""
    sizes = [int(arrays[0].size) for _, arrays in group]
    total = sum(sizes)
    parallel = total > serial_max
    chunk = -(-total // -(-total // CHUNK)) if parallel else total  # equal chunks
    packed, views = packed_table(sizes, _ARRAYS + 1, chunk, BLOCK)
    rows = views[0]
    for column in range(_ARRAYS):
        if group[0][1][column] is not None:  # one format: every tensor has it or none
            rows[:, column] = data_addresses([arrays[column] for _, arrays in group])
    rows[:, _INDEX] = [index for index, _ in group]
    likes = tuple(None if a is None else a[:0] for a in group[0][1])
    kernel = adam_low_precision_table if parallel else adam_low_precision_table_serial
    seed = np.uint64(0) if stochastic else None
    compiled_for(kernel, (packed,) + likes + (np.zeros(8), 1, seed))
    return kernel, (packed,) + likes, parallel, rows
