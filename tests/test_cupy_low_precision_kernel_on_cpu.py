"""The CuPy backend's low-precision kernel source, run on the CPU (tests/cuda_c_on_cpu.py):
every variant a case of tests/low_precision_cases.py launches, compiled once into one
library, steps inside the NumPy backend's own low-precision step (its checks, plan, keys
and per-step lr) in place of NumPy's kernel, and must give the NumPy backend's bits for
params and every state field, three steps, with grads of the params' dtype and float32.
Three thread blocks of four threads run one after another, so the grid-stride loop takes
each element once. Each property has a mutant of the source that breaks it. What only a
GPU shows (NVRTC's code, launch) is tests/test_machine_code.py's and
tests/test_gpu_low_precision.py's."""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
from low_precision_cases import FORMATS, stepped_bits

import cuda_c_on_cpu
from backends import AdamConfig, get_backend
from backends.cpu.numpy import NumpyBackend
from backends.cuda import _cupy_kernels as kernels
from backends.cuda._gpu import GpuBackend
from backends.scalars import StepScalars

pytestmark = cuda_c_on_cpu.needs_compiler

_GRID, _THREADS = 3, 4
_SIZES = (1000 + 37, 300, 1)
_DRIVER = r"""
extern "C" void run_{name}(void* p, void* g, void* m, void* v, void* vmax, float* master,
                           void* compensation, unsigned key, const float* c, bool use_l2,
                           long long n) {{
    gridDim.x = {grid};
    blockDim.x = {threads};
    for (unsigned b = 0; b < gridDim.x; ++b)
        for (unsigned t = 0; t < blockDim.x; ++t) {{
            blockIdx.x = b;
            threadIdx.x = t;
            {name}(({p}::bits*)p, (const {g}::bits*)g, ({m}::bits*)m, ({m}::bits*)v,
                   ({m}::bits*)vmax, master, ({p}::bits*)compensation, key, c[0], c[1],
                   c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], use_l2, n);
        }}
}}
"""


def _variants() -> list:
    """Every variant the cases launch, in a fixed order."""
    found = {}
    for _, dtype, options in FORMATS:
        for variant in kernels.step_variants(dtype, AdamConfig(**options)):
            found[variant.name] = variant
    return [found[name] for name in sorted(found)]


def _driver(variant) -> str:
    return _DRIVER.format(name=variant.name, p=variant.params, g=variant.grads,
                          m=variant.moments, grid=_GRID, threads=_THREADS)


def _library(common: str, stem: Path, variants) -> ctypes.CDLL:
    """``common`` with the kernel and driver of each of ``variants``, compiled once."""
    return cuda_c_on_cpu.load(common + "".join(kernels.low_precision_wrapper(v) + _driver(v)
                                               for v in variants), stem)


class _KernelOnCpu(NumpyBackend):
    """The NumPy backend whose low-precision step launches the CuPy kernel's C++ build
    with CupyBackend's arguments (bfloat16 as uint16 views, NULL where unused)."""

    name = "cupy-kernel-on-cpu"
    _low_precision_arrays = GpuBackend._low_precision_arrays

    def __init__(self, library):
        super().__init__(threads=1)
        self.library = library
        self.launched = set()

    def _update_low_precision(self, p, g, m, v, vmax, master, compensation, cfg, t, key,
                              lr=None):
        variant = kernels.low_precision_variant(p, g, m, vmax, master, compensation, key)
        self.launched.add(variant.name)
        scalars = StepScalars.for_step(cfg, t, lr)
        c = np.array(scalars.floats(), np.float32)
        pointers = (None if a is None else a.ctypes.data_as(ctypes.c_void_p)
                    for a in (p, g, m, v, vmax, master, compensation))
        getattr(self.library, f"run_{variant.name}")(
            *pointers, ctypes.c_uint(key or 0), c.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_bool(scalars.use_l2), ctypes.c_longlong(p.size))


@pytest.fixture(scope="module")
def kernel_on_cpu(tmp_path_factory) -> _KernelOnCpu:
    stem = tmp_path_factory.mktemp("cupy_low_precision") / "kernels"
    return _KernelOnCpu(_library(kernels.low_precision_common_source(), stem, _variants()))


def _first_difference(backend, dtype, options, grad_dtype) -> str | None:
    """Where ``backend``'s bits first differ from the NumPy backend's, or None."""
    expected, found = (stepped_bits(b, dtype, options, grad_dtype, _SIZES)
                       for b in (get_backend("numpy"), backend))
    for i, (a, b) in enumerate(zip(found, expected)):
        if not np.array_equal(a, b):
            k = int(np.flatnonzero(a != b)[0])
            return f"array {i} element {k}: {a[k]:#x} != numpy's {b[k]:#x}"
    return None


@pytest.mark.parametrize("grads", ["params", "float32"])
@pytest.mark.parametrize("name, dtype, options", FORMATS, ids=[f[0] for f in FORMATS])
def test_cupy_low_precision_source_gives_numpys_bits(kernel_on_cpu, name, dtype, options,
                                                     grads):
    grad_dtype = np.float32 if grads == "float32" else dtype
    kernel_on_cpu.launched.clear()
    assert _first_difference(kernel_on_cpu, dtype, options, grad_dtype) is None
    expected = {v.name for v in kernels.step_variants(dtype, AdamConfig(**options))
                if v.grads == ("f32" if grads == "float32" else v.params)}
    assert kernel_on_cpu.launched == expected


#: (mutant, the case it breaks): a plausible bug in each part of the kernel.
_MUTANTS = {
    "rounding_addend_without_the_odd_bit": (("(0x7FFFu + ((bits >> 16) & 1u))", "0x8000u"),
                                            "bf16"),
    "stochastic_bits_of_the_low_half": (("return (x ^ (x >> 16)) >> 16;",
                                         "return (x ^ (x >> 16)) & 0xFFFFu;"), "bf16-sr"),
    "stochastic_key_ignored": (("unsigned int x = (unsigned int)i ^ key ^",
                                "unsigned int x = (unsigned int)i ^"), "bf16-sr"),
    "kahan_compensation_dropped": (("float x = __fadd_rn(w, P::widen(compensation[i]));",
                                    "float x = w;"), "bf16-kahan"),
    "master_not_written": (("master[i] = w;", ""), "bf16-master"),
    "moments_stored_unrounded_in_bf16": (("return __uint_as_float((unsigned int)b << 16);",
                                          "return __uint_as_float((unsigned int)b << 15);"),
                                         "bf16-bf16state"),
    "amsgrad_maximum_ignores_v": (("if (vi > xi || vi != vi) xi = vi;", ""),
                                  "fp32-bf16state"),
    "l2_term_dropped": (("if (use_l2) gi = __fadd_rn(gi, __fmul_rn(l2, w));", ""),
                        "fp32-bf16state"),
    "decoupled_decay_dropped": (("w = __fmul_rn(decay, w);", ""), "bf16-kahan"),
    "maximize_ignored": (("float gi = __fmul_rn(sign, G::widen(g[i]));",
                          "float gi = G::widen(g[i]);"), "bf16-bf16state"),
    "float16_truncated": (("static __device__ __forceinline__ bits nearest(float x) "
                           "{ return f16_nearest(x); }",
                           "static __device__ __forceinline__ bits nearest(float x) "
                           "{ return f16_nearest(x) & 0xFFF0u; }"), "fp16-kahan"),
}
_CASES = {f[0]: f for f in FORMATS}


@pytest.mark.parametrize("mutant", sorted(_MUTANTS))
def test_each_mutant_is_caught(mutant, tmp_path):
    """Each mutant builds only its case's kernel (grads of the params' dtype)."""
    (old, new), case = _MUTANTS[mutant]
    common = kernels.low_precision_common_source()
    assert common.count(old) == 1, f"mutant {mutant}: its line is not in the source once"
    _, dtype, options = _CASES[case]
    variants = kernels.step_variants(dtype, AdamConfig(**options))[:1]
    library = _library(common.replace(old, new), tmp_path / mutant, variants)
    assert _first_difference(_KernelOnCpu(library), dtype, options, dtype) is not None, \
        f"mutant {mutant} gave numpy's bits"
