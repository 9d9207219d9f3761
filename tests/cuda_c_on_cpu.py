"""CUDA C kernel source run on the CPU: the host C++ compiler with a small shim (one
std::thread per GPU thread, a std::barrier for __syncthreads, the _rn intrinsics as plain
IEEE float operations, float16's PTX conversions as _Float16's, -ffp-contract=off), so
the CuPy backend's kernels' logic is checked bit for bit without a GPU. Shared by the
tests of each CuPy kernel source."""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

CXX = shutil.which("g++") or shutil.which("c++")
#: Marks a test module that needs the host compiler.
needs_compiler = pytest.mark.skipif(CXX is None, reason="no host C++ compiler (g++ or c++)")

SHIM = r"""
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>
struct Dim { unsigned x = 0, y = 0, z = 0; };
static thread_local Dim threadIdx;
static Dim blockIdx, blockDim, gridDim;
static std::barrier<>* block_barrier;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
static inline void __syncthreads() { block_barrier->arrive_and_wait(); }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return std::sqrt(a); }
static inline unsigned __float_as_uint(float x) { unsigned u; std::memcpy(&u, &x, 4); return u; }
static inline float __uint_as_float(unsigned u) { float x; std::memcpy(&x, &u, 4); return x; }
static inline float f16_widen(unsigned short h) { _Float16 x; std::memcpy(&x, &h, 2); return x; }
static inline unsigned short f16_nearest(float x) {
    _Float16 h = (_Float16)x; unsigned short u; std::memcpy(&u, &h, 2); return u;
}
using std::max;
"""


def load(source: str, stem: Path) -> ctypes.CDLL:
    """``SHIM + source`` compiled into ``stem``.so (contraction off, as the kernels' NVRTC
    options) and loaded."""
    cpp = stem.with_suffix(".cpp")
    cpp.write_text(SHIM + source)
    library = stem.with_suffix(".so")
    subprocess.run([CXX, "-std=c++20", "-O1", "-ffp-contract=off", "-shared", "-fPIC",
                    "-pthread", str(cpp), "-o", str(library)], check=True,
                   capture_output=True, text=True)
    return ctypes.CDLL(str(library))
