"""Low-precision formats: bfloat16 and float16 params, and the bit-exact roundings to them.

Every kernel computes a low-precision step in float32 and writes its results back with
the functions here, spelled as integer operations on the float32 bits, so NumPy, Numba
and Python give the same bits (llvmlite has no bfloat16 type: the Numba kernels use the
same shifts). ``backends.reference`` models each rounding exactly, in float64.

- Round to nearest even, float32 -> bfloat16: add ``0x7FFF`` plus the lowest kept bit,
  keep the high 16 bits; a NaN keeps its sign and top payload bits and is made quiet.
  float32 -> float16 is IEEE's conversion (NumPy's cast; F16C's ``vcvtps2ph`` in Numba).
- Stochastic rounding, float32 -> bfloat16: add 16 random bits to the 16 dropped bits and
  truncate, so the magnitude goes up with probability (dropped bits) / 2**16: unbiased.
- Elements ``2j`` and ``2j + 1`` of tensor ``k`` at step ``t`` share one hash, ``h =
  lowbias32(lo32(2j) ^ key ^ hi32(2j) * 0x9E3779B9)`` with ``key = stream_key(seed, t,
  k)`` (splitmix64, folded to 32 bits): the even element's random bits are ``h``'s low
  16, the odd element's its high 16 (one hash per pair: half the integer work of one
  per element). A counter-based hash, so the bits depend on (seed, step, tensor,
  element) only, never on threads, chunking or backend.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

__all__ = ["BFLOAT16", "FLOAT16", "FLOAT32", "LOW_PRECISION_DTYPES", "uses_low_precision",
           "moment_dtype", "widen", "round_nearest", "round_stochastic", "bf16_nearest_bits",
           "bf16_stochastic_bits", "stream_key", "seed_stream", "step_stream", "tensor_key",
           "random16", "splitmix64", "lowbias32", "bits_view", "finfo"]

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
FLOAT16 = np.dtype(np.float16)
FLOAT32 = np.dtype(np.float32)
LOW_PRECISION_DTYPES = (BFLOAT16, FLOAT16)
_STATE_DTYPES = {"float32": FLOAT32, "bfloat16": BFLOAT16}
_MASK32, _MASK64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
#: The golden-ratio multiplier that mixes an index's high 32 bits into the hash input.
INDEX_HIGH_MULTIPLIER = 0x9E3779B9
#: ``np.finfo`` for every float dtype, bfloat16 included (NumPy 2.5 refuses ml_dtypes'
#: types; ml_dtypes' finfo answers for NumPy's own too).
finfo = ml_dtypes.finfo


def uses_low_precision(cfg, params, state) -> bool:
    """Whether a step goes through ``backends.low_precision_step``: a low-precision
    option of ``cfg`` (master weights, rounding, float32 or bfloat16 state), or a state
    the float32/float64 step has not validated and bfloat16 or float16 params."""
    if cfg.master_weights or cfg.rounding != "nearest" or cfg.state_dtype in _STATE_DTYPES:
        return True
    if cfg.state_dtype is not None or "validated" in getattr(state, "cache", ()):
        return False
    try:
        arrays = [params] if hasattr(params, "dtype") else list(params)
        return any(getattr(p, "dtype", None) in LOW_PRECISION_DTYPES for p in arrays)
    except TypeError:
        return False


def moment_dtype(param_dtype, cfg) -> np.dtype:
    """The dtype of the moments (and amsgrad's maximum) of a param of ``param_dtype``:
    ``cfg.state_dtype``'s, or with None the weights stepped (float32 master weights, else
    the params)."""
    if cfg.state_dtype in _STATE_DTYPES:
        return _STATE_DTYPES[cfg.state_dtype]
    return FLOAT32 if cfg.master_weights else np.dtype(param_dtype)


def bits_view(a: np.ndarray) -> np.ndarray:
    """A 2-byte array's bits as uint16 (the form kernels and files take bfloat16 in)."""
    return a.view(np.uint16)


def widen(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 values of a bfloat16, float16 or float32 array (exact)."""
    if a.dtype == BFLOAT16:
        bits = np.left_shift(bits_view(a), 16, dtype=np.uint32)
        if out is None:
            return bits.view(np.float32)
        out.view(np.uint32)[...] = bits
        return out
    if out is None:
        return a.astype(np.float32)
    out[...] = a
    return out


def bf16_nearest_bits(bits: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bits of float32 ``bits`` (uint32) rounded to nearest even."""
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))))
    return _keep_nan(bits, rounded >> np.uint32(16))


def bf16_stochastic_bits(bits: np.ndarray, random: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bits of float32 ``bits`` (uint32) rounded stochastically with
    ``random`` (uint32 values below 2**16)."""
    return _keep_nan(bits, (bits + random) >> np.uint32(16))


def _keep_nan(bits, high):
    """``high`` as uint16, except where ``bits`` is a NaN: its top bits, made quiet."""
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    quiet = (bits >> np.uint32(16)) | np.uint32(0x40)
    return np.where(nan, quiet, high).astype(np.uint16)


def round_nearest(x: np.ndarray, dtype, out: np.ndarray | None = None) -> np.ndarray:
    """float32 ``x`` rounded to nearest even in ``dtype`` (bfloat16, float16 or float32),
    into ``out`` if given."""
    dtype = np.dtype(dtype)
    if dtype == BFLOAT16:
        bits = bf16_nearest_bits(x.view(np.uint32))
        if out is None:
            return bits.view(BFLOAT16)
        bits_view(out)[...] = bits
        return out
    if out is None:
        return x.astype(dtype)
    out[...] = x
    return out


def round_stochastic(x: np.ndarray, random: np.ndarray, out: np.ndarray | None = None):
    """float32 ``x`` rounded stochastically to bfloat16 with ``random`` (uint32 < 2**16)."""
    bits = bf16_stochastic_bits(x.view(np.uint32), random)
    if out is None:
        return bits.view(BFLOAT16)
    bits_view(out)[...] = bits
    return out


def splitmix64(z: int) -> int:
    """One step of splitmix64's output function (Steele, Lea, Flood 2014) on a 64-bit int."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, step: int, tensor: int) -> int:
    """The 32-bit key of (seed, step, tensor): splitmix64 chained over the three, folded."""
    return tensor_key(step_stream(seed, step), tensor)


def seed_stream(seed: int) -> int:
    """The part of ``stream_key`` that the seed alone fixes (what a kernel that derives
    its keys itself takes, beside the step)."""
    return splitmix64(seed)


def step_stream(seed: int, step: int) -> int:
    """The part of ``stream_key`` that (seed, step) fixes: computed once per step."""
    return splitmix64(seed_stream(seed) ^ step)


def tensor_key(stream: int, tensor: int) -> int:
    """``stream_key`` of tensor ``tensor`` from its step's ``step_stream``."""
    z = splitmix64(stream ^ tensor)
    return (z >> 32) ^ (z & _MASK32)


def lowbias32(x: np.ndarray) -> np.ndarray:
    """Chris Wellons' lowbias32 integer hash, a bijection of uint32 (arrays or scalars)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def random16(key: int, start: int, stop: int) -> np.ndarray:
    """uint32 random values below 2**16 of elements start..stop-1 under ``key``: the low
    half of their pair's hash for even elements, the high half for odd ones."""
    index = np.arange(start, stop, dtype=np.uint64)
    low = (index & np.uint64(_MASK32 - 1)).astype(np.uint32)
    high = (index >> np.uint64(32)).astype(np.uint32)
    odd = (index & np.uint64(1)).astype(np.uint32)
    with np.errstate(over="ignore"):
        mixed = low ^ np.uint32(key) ^ (high * np.uint32(INDEX_HIGH_MULTIPLIER))
        return (lowbias32(mixed) >> (odd << np.uint32(4))) & np.uint32(0xFFFF)
