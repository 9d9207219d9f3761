"""The CuPy backend's low-precision CUDA C helpers, run on the CPU (tests/cuda_c_on_cpu.py):
the roundings to bfloat16 and the counter hash of ``_cupy_kernels.LOW_PRECISION_ROUNDING``
give ``backends.formats``' bits on values that reach every branch (ties, carries into the
exponent, overflow to inf, subnormals, NaNs of both signs with and without the quiet bit)
and on indices above 2**32. Each property has a mutant of the source that breaks it."""
from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import cuda_c_on_cpu
from backends import formats
from backends.cuda import _cupy_kernels

pytestmark = cuda_c_on_cpu.needs_compiler

_DRIVER = r"""
extern "C" void nearest(const float* x, unsigned short* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = bf16_nearest(x[i]);
}
extern "C" void stochastic(const float* x, const unsigned* r, unsigned short* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = bf16_stochastic(x[i], r[i]);
}
extern "C" void hash(unsigned key, const unsigned long long* index, unsigned* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = random16(key, index[i]);
}
"""
_KEY = formats.stream_key(seed=7, step=3, tensor=2)


@lru_cache(maxsize=None)
def _library(source: str, tmp_dir: str) -> ctypes.CDLL:
    stem = Path(tmp_dir) / f"rounding_{abs(hash(source))}"
    return cuda_c_on_cpu.load(source + _DRIVER, stem)


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cuda_c_rounding"))


def _edge_bits() -> np.ndarray:
    """float32 bits at every rounding branch, plus random ones."""
    edges = np.array([0x00000000, 0x80000000, 0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001,
                      0x3FFF8000, 0x7F7F8000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000,
                      0x7F800001, 0xFF800001, 0x7FC00000, 0xFFFFFFFF, 0x7F80FFFF, 0x00008000,
                      0x00018000, 0x007FFFFF, 0x80000001], dtype=np.uint32)
    random = np.random.default_rng(0).integers(0, 2**32, 2000, dtype=np.uint32)
    return np.concatenate([edges, random])


def _pointer(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def _nearest(source, tmp_dir, bits):
    out = np.empty(bits.size, np.uint16)
    x = bits.view(np.float32)
    _library(source, tmp_dir).nearest(_pointer(x), _pointer(out), ctypes.c_longlong(bits.size))
    return out


def _stochastic(source, tmp_dir, bits, random):
    out = np.empty(bits.size, np.uint16)
    x = bits.view(np.float32)
    _library(source, tmp_dir).stochastic(_pointer(x), _pointer(random), _pointer(out),
                                         ctypes.c_longlong(bits.size))
    return out


def _hash(source, tmp_dir, index):
    out = np.empty(index.size, np.uint32)
    _library(source, tmp_dir).hash(ctypes.c_uint(_KEY), _pointer(index), _pointer(out),
                                   ctypes.c_longlong(index.size))
    return out


_INDEX = np.concatenate([np.arange(0, 300), np.arange(2**32 - 100, 2**32 + 100),
                         np.arange(2**40, 2**40 + 50)]).astype(np.uint64)


def _expected_hash(index):
    return np.concatenate([formats.random16(_KEY, int(i), int(i) + 1) for i in index])


_SOURCE = _cupy_kernels.LOW_PRECISION_ROUNDING
_MUTANTS = {
    "no_tie_to_even": _SOURCE.replace("(0x7FFFu + ((bits >> 16) & 1u))", "0x8000u"),
    "nan_not_kept": _SOURCE.replace("> 0x7F800000u", "> 0xFFFFFFFFu"),
    "nan_not_quiet": _SOURCE.replace("| 0x40u", "| 0x0u"),
    "hash_no_high_word": _SOURCE.replace("((unsigned int)(i >> 32) * 0x9E3779B9u)", "0u"),
    "hash_one_round": _SOURCE.replace("x *= 0x846CA68Bu;", ""),
}


def test_source_rounds_and_hashes_as_formats(tmp_dir):
    bits = _edge_bits()
    random = formats.random16(_KEY, 0, bits.size)
    np.testing.assert_array_equal(_nearest(_SOURCE, tmp_dir, bits),
                                  formats.bf16_nearest_bits(bits))
    np.testing.assert_array_equal(_stochastic(_SOURCE, tmp_dir, bits, random),
                                  formats.bf16_stochastic_bits(bits, random))
    np.testing.assert_array_equal(_hash(_SOURCE, tmp_dir, _INDEX), _expected_hash(_INDEX))


@pytest.mark.parametrize("mutant", sorted(_MUTANTS))
def test_each_mutant_is_caught(mutant, tmp_dir):
    source = _MUTANTS[mutant]
    assert source != _SOURCE, f"mutant {mutant} changed nothing"
    bits = _edge_bits()
    random = formats.random16(_KEY, 0, bits.size)
    same = (np.array_equal(_nearest(source, tmp_dir, bits), formats.bf16_nearest_bits(bits))
            and np.array_equal(_stochastic(source, tmp_dir, bits, random),
                               formats.bf16_stochastic_bits(bits, random))
            and np.array_equal(_hash(source, tmp_dir, _INDEX), _expected_hash(_INDEX)))
    assert not same, f"mutant {mutant} gave formats' bits"
