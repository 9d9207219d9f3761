"""Where a step's arrays lie in memory: data addresses, overlapping byte ranges, tensors
back to back, and one flat buffer per dtype with a view per tensor (how ``Backend``
lays out state, so a kernel can step many tensors as one).
"""
from __future__ import annotations

import weakref

import numpy as np

__all__ = ["data_address", "first_overlap", "first_of_contiguous", "weak_references",
           "group_by_dtype", "split_views", "flatten", "zero_views", "to_backend"]


def data_address(a) -> int:
    """Address of ``a``'s first element (a NumPy or CUDA array)."""
    interface = getattr(a, "__cuda_array_interface__", None) or a.__array_interface__
    return int(interface["data"][0])


def first_overlap(starts, stops, written):
    """Indices (i, j) of two byte ranges [start, stop) that overlap, at least one of them
    written, or None. Ranges sorted by start: a range overlaps an earlier one exactly when
    it starts before the largest stop so far (of the written ones, for a read-only one)."""
    nonempty = np.flatnonzero(stops > starts)
    order = nonempty[np.argsort(starts[nonempty], kind="stable")]
    s, e, w = starts[order], stops[order], written[order]
    lowest = np.iinfo(np.int64).min
    before_all = np.maximum.accumulate(np.concatenate(([lowest], e[:-1])))
    before_written = np.maximum.accumulate(np.concatenate(([lowest], np.where(w, e, lowest)[:-1])))
    clash = np.flatnonzero(s < np.where(w, before_all, before_written))
    if clash.size == 0:
        return None
    k = clash[0]
    earlier = np.flatnonzero((e[:k] > s[k]) & (w[:k] | w[k]))
    return int(order[earlier[0]]), int(order[k])


def first_of_contiguous(starts, sizes, itemsize: int) -> int | None:
    """Index of the first non-empty tensor when the non-empty tensors (first-element
    addresses ``starts``, element counts ``sizes``) lie back to back in memory, else None.
    Empty tensors are skipped: their address can be anything."""
    starts = np.asarray(starts, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    nonempty = np.flatnonzero(sizes)
    if nonempty.size == 0:
        return None
    starts, sizes = starts[nonempty], sizes[nonempty]
    if np.any(starts[1:] != starts[:-1] + sizes[:-1] * itemsize):
        return None
    return int(nonempty[0])


def weak_references(arrays) -> list:
    """Weak references to NumPy arrays: NumPy refuses to resize an array that has one,
    even with ``refcheck=False``, so a remembered address cannot be freed under us."""
    return [weakref.ref(a) for a in arrays if isinstance(a, np.ndarray)]


def group_by_dtype(params) -> dict:
    """{dtype: indices of the tensors of that dtype}, in order."""
    groups: dict = {}
    for i, p in enumerate(params):
        groups.setdefault(p.dtype, []).append(i)
    return groups


def split_views(flat, shapes) -> list:
    """A view of ``flat`` per shape, back to back from its start."""
    views, start = [], 0
    for shape in shapes:
        n = int(np.prod(shape, dtype=np.int64))
        views.append(flat[start:start + n].reshape(shape))
        start += n
    return views


def flatten(backend, arrays) -> tuple:
    """``Backend.flatten``: (flat buffer of ``backend``'s type, a view per array)."""
    arrays = [np.asarray(a) for a in arrays]
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) > 1:
        raise TypeError(f"flatten needs arrays of one dtype, got {sorted(map(str, dtypes))}")
    if not arrays:
        return backend.asarray(np.zeros(0, dtype=np.float32)), []
    flat = backend.asarray(np.concatenate([a.reshape(-1) for a in arrays]))
    return flat, split_views(flat, [a.shape for a in arrays])


def zero_views(backend, params) -> list:
    """A zero array of ``backend``'s type per param, views of one buffer per dtype."""
    views = [None] * len(params)
    for dtype, idx in group_by_dtype(params).items():
        flat = backend.empty(sum(int(params[i].size) for i in idx), dtype)
        flat[:] = 0
        for i, view in zip(idx, split_views(flat, [params[i].shape for i in idx])):
            views[i] = view
    return views


def to_backend(backend, arrays) -> list | None:
    """Host arrays (None entries allowed) as ``backend``'s arrays: views of one buffer
    when they are all of one dtype."""
    if arrays is None:
        return None
    if any(a is None for a in arrays) or len({a.dtype for a in arrays}) > 1:
        return [None if a is None else backend.asarray(a) for a in arrays]
    return flatten(backend, arrays)[1]
