"""Backend "numpy": in-place, allocation-free and cache-blocked NumPy.

Naive NumPy Adam makes one pass over memory per operation (about a dozen). Here every
tensor is processed in chunks small enough that a chunk of p, g, m, v and two scratch
buffers stay in the core's L2 cache, so the dozen operations hit cache and a step costs
close to one pass over memory. Scratch buffers are allocated once per dtype and reused.
"""
from __future__ import annotations

import numpy as np

from .base import Backend

__all__ = ["NumpyBackend"]

#: Bytes of each array a chunk covers: 6 such blocks (p, g, m, v, 2 scratch) fit in L2.
CHUNK_BYTES = 64 * 1024


class NumpyBackend(Backend):
    """Fused-by-blocking NumPy Adam; the same element-wise body as every kernel."""

    name = "numpy"
    device = "cpu"

    def __init__(self, chunk_bytes: int = CHUNK_BYTES):
        if chunk_bytes < 64:
            raise ValueError(f"chunk_bytes must be >= 64, got {chunk_bytes}")
        self.chunk_bytes = chunk_bytes
        self._scratch: dict[np.dtype, tuple[np.ndarray, np.ndarray]] = {}

    def _scratch_for(self, dtype) -> tuple[np.ndarray, np.ndarray]:
        if dtype not in self._scratch:
            n = self.chunk_bytes // dtype.itemsize
            self._scratch[dtype] = (np.empty(n, dtype), np.empty(n, dtype))
        return self._scratch[dtype]

    def _update(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, scalars, dtype,
                cache):
        c = _cast(scalars, dtype)
        scratch_a, scratch_b = self._scratch_for(dtype)
        chunk = scratch_a.size
        with np.errstate(all="ignore"):  # NaN/Inf propagate as in every kernel, silently
            self._blocks(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, scratch_a,
                         scratch_b, chunk, c)

    @staticmethod
    def _blocks(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, scratch_a, scratch_b,
                chunk, c) -> None:
        for i in range(len(params)):
            arrays = [params[i], grads[i], exp_avg[i], exp_avg_sq[i]]
            if max_exp_avg_sq is not None:
                arrays.append(max_exp_avg_sq[i])
            flat = [a.reshape(-1) for a in arrays]
            n = flat[0].size
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                blocks = [a[start:stop] for a in flat]
                _adam_block(*blocks[:4], blocks[4] if len(blocks) == 5 else None,
                            scratch_a[: stop - start], scratch_b[: stop - start], c)


def _cast(scalars, dtype) -> dict:
    """The step's scalars in the array dtype, so float32 math stays float32."""
    names = ("sign", "l2", "decay", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2",
             "step_size", "inv_sqrt_bc2", "eps")
    c = {k: dtype.type(getattr(scalars, k)) for k in names}
    c["use_l2"] = scalars.use_l2
    return c


def _adam_block(p, g, m, v, vmax, a, b, c) -> None:
    """The kernel body on one cache-sized block; ``a`` and ``b`` are scratch."""
    if c["sign"] < 0:
        np.negative(g, out=a)
        g = a
    if c["use_l2"]:
        np.multiply(p, c["l2"], out=b)
        np.add(g, b, out=a)
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
