"""What the validation remembers of each NumPy array, read in one compiled call.

A training loop passes the same array objects every step, so the checks of a step are
remembered by object identity. What identity cannot see is an array changed in place:
its dtype or shape set, its writeable flag cleared. Each array's header (the fields of
NumPy's ``PyArrayObject``: data address, dtype object, flags, shape) is read here for
every array in one Numba call, a few nanoseconds per array, and compared with the header
recorded when the array was checked; any difference sends the step back through every
check. The field offsets come from NumPy's public struct layout and are verified at
import against ``__array_interface__``; where they do not match, the same table is built
in Python (correct, slower).
"""
from __future__ import annotations

import functools

import numpy as np

from ._array_fields import ALIGNED, C_CONTIGUOUS, WRITEABLE
from .memory import data_address

__all__ = ["HEADER_FIELDS", "read_headers", "headers_match", "unchanged_check",
           "data_addresses"]

#: Columns of a header table row.
HEADER_FIELDS = ("data", "dtype", "flags", "ndim", "size", "shape")


def _shape_hash(shape) -> int:
    h = 0
    for n in shape:
        h = (h * 1000003 + n) & 0xFFFFFFFFFFFFFFFF
    return h - (1 << 64) if h >= 1 << 63 else h


def _python_headers(arrays) -> np.ndarray:
    """The header table built from Python attributes (the reference for the compiled one)."""
    table = np.empty((len(arrays), len(HEADER_FIELDS)), dtype=np.int64)
    for i, a in enumerate(arrays):
        flags = ((C_CONTIGUOUS if a.flags.c_contiguous else 0)
                 | (ALIGNED if a.flags.aligned else 0)
                 | (WRITEABLE if a.flags.writeable else 0))
        table[i] = (a.__array_interface__["data"][0], id(a.dtype), flags, a.ndim, a.size,
                    _shape_hash(a.shape))
    return table


def _compiled():
    """(read, match) compiled with Numba (from its on-disk cache after the first run)."""
    from . import _header_kernels

    return _header_kernels.read, _header_kernels.match


def _verified():
    """The compiled pair if it reads what Python reads for a varied set of arrays."""
    try:
        from numba.core.errors import NumbaError
    except ImportError:
        return None
    samples = _samples()
    objects = np.array([id(a) for a in samples], dtype=np.int64)
    table = np.empty((len(samples), len(HEADER_FIELDS)), dtype=np.int64)
    try:
        read, match = _compiled()
        read(objects, table)
    except NumbaError:
        return None
    if not np.array_equal(table, _python_headers(samples)) or not match(objects, table):
        return None
    return read, match


def _samples() -> list:
    """Arrays that differ in every header field the table holds."""
    samples = [np.zeros(3, np.float32), np.zeros((2, 3, 4)), np.zeros(0, np.float32),
               np.ones((5, 2), np.float32)[::2], np.zeros(()), np.zeros((4, 4))[1]]
    samples[2].flags.writeable = False
    return samples


_COMPILED = None


def _pair():
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = _verified() or False
    return _COMPILED


def read_headers(arrays) -> tuple[np.ndarray, np.ndarray]:
    """(object ids, header table) of ``arrays`` (exact NumPy arrays, kept alive by the
    caller for as long as it uses the ids)."""
    objects = np.fromiter(map(id, arrays), dtype=np.int64, count=len(arrays))
    pair = _pair()
    if not pair:
        return objects, _python_headers(arrays)
    table = np.empty((len(arrays), len(HEADER_FIELDS)), dtype=np.int64)
    pair[0](objects, table)
    return objects, table


def headers_match(objects: np.ndarray, expected: np.ndarray, arrays) -> bool:
    """Whether the arrays (ids ``objects``, the same objects as ``arrays``) still have the
    headers ``expected``."""
    pair = _pair()
    if not pair:
        return np.array_equal(_python_headers(arrays), expected)
    return pair[1](objects, expected)


def unchanged_check(objects: np.ndarray, expected: np.ndarray, arrays):
    """A call with no arguments saying whether ``arrays`` still have the headers
    ``expected``: the compiled reader itself where it works (the fast path pays one
    dispatch), else ``headers_match``."""
    pair = _pair()
    if pair:
        return functools.partial(pair[1], objects, expected)
    return functools.partial(headers_match, objects, expected, arrays)


def data_addresses(arrays) -> np.ndarray:
    """int64 first-element addresses of ``arrays`` (any array types): read in the one
    compiled call when all are exact NumPy arrays, else one ``data_address`` each (whose
    ``__array_interface__`` builds a dict: about 1 us an array)."""
    arrays = list(arrays)
    if _pair() and all(type(a) is np.ndarray for a in arrays):
        return read_headers(arrays)[1][:, 0].copy()
    return np.fromiter(map(data_address, arrays), dtype=np.int64, count=len(arrays))
