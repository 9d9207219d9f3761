"""The CuPy backend's low-precision step on the CPU: CupyBackend itself over NumPy arrays
(a stand-in for the part of CuPy it calls), its kernels compiled by NVRTC for sm_90 as on
a GPU, and each low-precision launch run by the kernel's CUDA C built with g++
(tests/cuda_c_on_cpu.py; every variant the cases of tests/low_precision_cases.py launch,
compiled once into one library). It must give the NumPy backend's bits for params and
every state field, three steps with a per-step lr, grads of the params' dtype and
float32: the backend's arrays, variant choice, argument order and types, and the
kernel's logic. Three thread blocks of four threads run one after another, so the
grid-stride loop takes each element once. Each property has a mutant of the source that
breaks it. What only a GPU shows (NVRTC's code, launch) is tests/test_machine_code.py's
and tests/test_gpu_low_precision.py's."""
from __future__ import annotations

import ctypes
import sys
import types

import numpy as np
import pytest
from low_precision_cases import FORMATS, stepped_bits

import cuda_c_on_cpu
from backends import AdamConfig, formats, get_backend
from backends.cuda import _cupy_kernels as kernels
from backends.cuda.cupy import CupyBackend
from backends.scalars import StepScalars

pytestmark = cuda_c_on_cpu.needs_compiler
pytest.importorskip("cuda.bindings.nvrtc", reason="NVRTC (the [gpu-compile] extra) compiles "
                    "the backend's kernels")

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


def _driver(variant, prefix: str) -> str:
    return _DRIVER.format(name=prefix + variant.name, p=variant.params, g=variant.grads,
                          m=variant.moments, grid=_GRID, threads=_THREADS)


def _part(common: str, variants, prefix: str = "") -> str:
    """``common`` with the kernel and driver of each of ``variants``, their C names
    prefixed by ``prefix`` and, with one, in a namespace of their own (so the parts of
    several mutants build as one library)."""
    body = common + "".join(kernels.low_precision_wrapper(v).replace(v.name, prefix + v.name)
                            + _driver(v, prefix) for v in variants)
    return f"namespace {prefix}part {{\n{body}\n}}\n" if prefix else body


class _CpuKernels:
    """CuPy's module loading as the backend uses it, on the CPU: a low-precision kernel is
    the C++ build's ``run_<prefix><name>`` of ``library`` (read at each launch, so a test
    can swap in a mutant's), any other kernel a launch that does nothing (the warm-up's)."""

    def __init__(self, library):
        self.library = library
        self.prefix = ""  # of the C names in library
        self.launched = set()

    def module(self):
        kernels = self

        class Module:
            def load(self, cubin: bytes):
                assert cubin[:4] == b"\x7fELF", "NVRTC gave no cubin"

            def get_function(self, name: str):
                if not name.startswith("adam_lp_"):
                    return lambda grid, block, args: None
                return lambda grid, block, args: kernels.launch(name, args)

        return Module()

    def launch(self, name: str, args: tuple) -> None:
        """Step with CupyBackend's arguments: seven MemoryPointers (here a NumPy array's
        ``.data``) or None, the key, ten float32 scalars, use_l2, n."""
        self.launched.add(name)
        pointers = [None if a is None else np.frombuffer(a, np.uint8).ctypes.data
                    for a in args[:7]]
        key, scalars, (use_l2, n) = args[7], np.array(args[8:18], np.float32), args[18:]
        assert (type(key), type(use_l2), type(n)) == (np.uint32, np.bool_, np.int64)
        assert all(type(x) is np.float32 for x in args[8:18])
        getattr(self.library, f"run_{self.prefix}{name}")(
            *(ctypes.c_void_p(a) for a in pointers), ctypes.c_uint(key),
            scalars.ctypes.data_as(ctypes.c_void_p), ctypes.c_bool(use_l2),
            ctypes.c_longlong(n))


def _fake_cupy(kernels_on_cpu: _CpuKernels):
    """The part of CuPy CupyBackend calls, over NumPy arrays."""
    stream = types.SimpleNamespace(synchronize=lambda: None)
    cuda = types.SimpleNamespace(
        Device=lambda: types.SimpleNamespace(compute_capability="90"),
        function=types.SimpleNamespace(Module=kernels_on_cpu.module),
        get_current_stream=lambda: stream)
    return types.SimpleNamespace(ndarray=np.ndarray, asarray=np.asarray, empty=np.empty,
                                 cuda=cuda)


@pytest.fixture(scope="module")
def kernels_on_cpu(tmp_path_factory) -> _CpuKernels:
    stem = tmp_path_factory.mktemp("cupy_low_precision") / "kernels"
    return _CpuKernels(cuda_c_on_cpu.load(
        _part(kernels.low_precision_common_source(), _variants()), stem))


def _cupy_backend(kernels_on_cpu: _CpuKernels) -> CupyBackend:
    """The cupy backend itself, its kernels compiled by NVRTC as on a GPU, its
    low-precision launches run by the C++ build."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "cupy", _fake_cupy(kernels_on_cpu))
        return CupyBackend()


@pytest.fixture(scope="module")
def cupy_on_cpu(kernels_on_cpu) -> CupyBackend:
    return _cupy_backend(kernels_on_cpu)


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
def test_cupy_low_precision_step_gives_numpys_bits(cupy_on_cpu, kernels_on_cpu, name, dtype,
                                                   options, grads):
    grad_dtype = np.float32 if grads == "float32" else dtype
    kernels_on_cpu.launched.clear()
    assert _first_difference(cupy_on_cpu, dtype, options, grad_dtype) is None
    expected = {v.name for v in kernels.step_variants(dtype, AdamConfig(**options))
                if v.grads == ("f32" if grads == "float32" else v.params)}
    assert kernels_on_cpu.launched == expected


def test_init_state_compiles_the_variants_so_no_step_does(kernels_on_cpu):
    """A format's kernels are compiled by init_state (into compile_seconds), so its steps
    compile nothing; a new backend, so no earlier test compiled them."""
    backend = _cupy_backend(kernels_on_cpu)
    cfg = AdamConfig(rounding="kahan", state_dtype="float32")
    params = [backend.asarray(np.ones(5, np.float16))]
    before, seconds = backend.compile_count(), backend.compile_seconds
    state = backend.init_state(params, cfg)
    assert backend.compile_count() == before + 2  # grads of float16 and float32
    assert backend.compile_seconds > seconds
    for grads in (np.float16, np.float32):
        backend.step(params, [backend.asarray(np.ones(5, grads))], state, cfg)
    assert backend.compile_count() == before + 2


#: (mutant, the case it breaks): a plausible bug in each part of the kernel.
_MUTANTS = {
    "rounding_addend_without_the_odd_bit": (("(0x7FFFu + ((bits >> 16) & 1u))", "0x8000u"),
                                            "bf16"),
    "stochastic_bits_of_one_half": (("return ((x ^ (x >> 16)) >> (odd << 4)) & 0xFFFFu;",
                                     "return (x ^ (x >> 16)) & 0xFFFFu;"), "bf16-sr"),
    "stochastic_hash_of_the_odd_index": (("((unsigned int)i ^ odd) ^ key", "(unsigned int)i ^ key"),
                                         "bf16-sr"),
    "stochastic_key_ignored": (("((unsigned int)i ^ odd) ^ key ^", "((unsigned int)i ^ odd) ^"),
                               "bf16-sr"),
    "kahan_compensation_dropped": (("float x = __fadd_rn(w, P::widen(compensation[i]));",
                                    "float x = w;"), "bf16-kahan"),
    "master_not_written": (("master[i] = w;", ""), "bf16-master"),
    "moments_stored_unrounded_in_bf16": (("return __uint_as_float((unsigned int)b << 16);",
                                          "return __uint_as_float((unsigned int)b << 15);"),
                                         "bf16-bf16state"),
    "amsgrad_maximum_ignores_v": (("return (v > vmax || v != v) ? v : vmax;",
                                   "return vmax;"), "fp32-bf16state"),
    "l2_term_dropped": (("if (use_l2) g = __fadd_rn(g, __fmul_rn(l2, p));", ""),
                        "fp32-bf16state"),
    "decoupled_decay_dropped": (("p = __fmul_rn(decay, p);", ""), "bf16-kahan"),
    "maximize_ignored": (("g = __fmul_rn(sign, g);", ""), "bf16-bf16state"),
    "float16_truncated": (("static __device__ __forceinline__ bits nearest(float x) "
                           "{ return f16_nearest(x); }",
                           "static __device__ __forceinline__ bits nearest(float x) "
                           "{ return f16_nearest(x) & 0xFFF0u; }"), "fp16-kahan"),
}
_CASES = {f[0]: f for f in FORMATS}



def _mutant_variants(mutant: str) -> list:
    """The kernel of the case a mutant breaks (grads of the params' dtype)."""
    _, dtype, options = _CASES[_MUTANTS[mutant][1]]
    return kernels.step_variants(dtype, AdamConfig(**options))[:1]


@pytest.fixture(scope="module")
def mutants_on_cpu(tmp_path_factory) -> ctypes.CDLL:
    """Every mutant's kernel, built as one library (one compiler run)."""
    common = kernels.low_precision_common_source()
    parts = (_part(common.replace(*_MUTANTS[name][0]), _mutant_variants(name), f"{name}_")
             for name in sorted(_MUTANTS))
    return cuda_c_on_cpu.load("".join(parts),
                              tmp_path_factory.mktemp("cupy_low_precision") / "mutants")


@pytest.mark.parametrize("mutant", sorted(_MUTANTS))
def test_each_mutant_is_caught(mutant, cupy_on_cpu, kernels_on_cpu, mutants_on_cpu):
    (old, _), case = _MUTANTS[mutant]
    count = kernels.low_precision_common_source().count(old)
    assert count == 1, f"mutant {mutant}: its line is in the source {count} times"
    _, dtype, options = _CASES[case]
    original = kernels_on_cpu.library
    kernels_on_cpu.library, kernels_on_cpu.prefix = mutants_on_cpu, f"{mutant}_"
    try:
        difference = _first_difference(cupy_on_cpu, dtype, options, dtype)
    finally:
        kernels_on_cpu.library, kernels_on_cpu.prefix = original, ""
    assert difference is not None, f"mutant {mutant} gave numpy's bits"


# --- stochastic rounding above element 2**32 ----------------------------------------------

_DRIVER_AT = r"""
extern "C" void run_at_{name}(void* p, const void* g, void* m, void* v, unsigned key,
                              const float* c, long long first, long long k) {{
    // elements first .. first + k - 1 of a tensor of first + k, each by the thread that
    // owns it (a stride beyond the end: one element per call); the arrays hold those k
    // elements, so the pointers passed start first elements before them (never read there)
    blockDim.x = {threads};
    gridDim.x = 0x80000000u;
    for (long long i = first; i < first + k; ++i) {{
        blockIdx.x = (unsigned)(i / blockDim.x);
        threadIdx.x = (unsigned)(i % blockDim.x);
        {name}(({p}::bits*)p - first, (const {g}::bits*)g - first, ({m}::bits*)m - first,
               ({m}::bits*)v - first, nullptr, nullptr, nullptr, key, c[0], c[1], c[2], c[3],
               c[4], c[5], c[6], c[7], c[8], c[9], false, first + k);
    }}
}}
"""
_INDEX_MUTANT = ("random16(key, (unsigned long long)i)", "random16(key, (unsigned int)i)")
_SR_CASE = _CASES["bf16-sr"]


@pytest.fixture(scope="module")
def indexed_on_cpu(tmp_path_factory) -> ctypes.CDLL:
    """bf16-sr's kernel with the driver above, as it is and with the element's index cut
    to 32 bits (prefix ``index_mutant_``)."""
    variant = kernels.step_variants(_SR_CASE[1], AdamConfig(**_SR_CASE[2]))[0]
    common = kernels.low_precision_common_source()

    def part(source, prefix):
        name = prefix + variant.name
        return _part(source, [variant], prefix) + (
            f"namespace {prefix}part {{\n" if prefix else "") + _DRIVER_AT.format(
            name=name, p=variant.params, g=variant.grads, m=variant.moments,
            threads=_THREADS) + ("}\n" if prefix else "")

    return cuda_c_on_cpu.load(part(common, "") + part(common.replace(*_INDEX_MUTANT),
                                                      "index_mutant_"),
                              tmp_path_factory.mktemp("cupy_low_precision") / "indexed")


def _stochastic_at(library, prefix: str, first: int, k: int = 16) -> np.ndarray:
    """bf16 bits of params first .. first + k - 1 of a huge tensor after one stochastic
    step, and the NumPy backend's float32 result of that step (its master weights)."""
    _, dtype, options = _SR_CASE
    rng = np.random.default_rng(first % 1000)
    p = rng.standard_normal(k).astype(dtype)
    g = rng.standard_normal(k).astype(dtype)
    m, v = np.zeros(k, dtype), np.zeros(k, dtype)
    cfg = AdamConfig(lr=1e-2, **options)
    key = formats.stream_key(cfg.seed, 1, 0)
    c = np.array(StepScalars.for_step(cfg, 1).floats(), np.float32)
    found = p.copy()
    getattr(library, f"run_at_{prefix}{kernels.step_variants(dtype, cfg)[0].name}")(
        *(a.ctypes.data_as(ctypes.c_void_p) for a in (found, g, m, v)), ctypes.c_uint(key),
        c.ctypes.data_as(ctypes.c_void_p), ctypes.c_longlong(first), ctypes.c_longlong(k))
    numpy = get_backend("numpy")
    master_cfg = AdamConfig(lr=1e-2, master_weights=True, state_dtype="bfloat16")
    state = numpy.init_state([p.copy()], master_cfg)
    numpy.step([p.copy()], [g], state, master_cfg)
    w = state.master_params[0]
    expected = formats.bf16_stochastic_bits(w.view(np.uint32), formats.random16(key, first,
                                                                                first + k))
    return found.view(np.uint16), expected


@pytest.mark.parametrize("first", [2**32 - 8, 2**33 + 3])
def test_stochastic_bits_of_elements_above_2_to_the_32(indexed_on_cpu, first):
    """The kernel hashes each element's 64-bit index (formats.random16's high-word rule);
    a kernel that cuts the index to 32 bits gives other bits there."""
    found, expected = _stochastic_at(indexed_on_cpu, "", first)
    np.testing.assert_array_equal(found, expected)
    cut, expected = _stochastic_at(indexed_on_cpu, "index_mutant_", first)
    beyond = np.arange(first, first + found.size) >= 2**32
    assert not np.array_equal(cut[beyond], expected[beyond])
