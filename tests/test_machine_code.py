"""The GPU kernels compiled to PTX and SASS (no GPU needed): every kernel, float32 and
float64, with and without amsgrad, for sm_80 and sm_90; each property also fails on a
mutant. Skipped only without the compiler wheels (the [gpu-compile] extra, which CI
installs through [test])."""
from __future__ import annotations

import inspect
import itertools
import re
from collections import Counter
from functools import lru_cache

import numpy as np
import pytest

from harness.gpu import machine_code as mc

_REASON = mc.compiler_unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=str(_REASON))

CASES = list(itertools.product(mc.KERNELS, ("float32", "float64"), (False, True), mc.ARCHS))
IDS = [f"{b}-{d}-{'amsgrad' if a else 'adam'}-sm{arch}" for b, d, a, arch in CASES]


@lru_cache(maxsize=None)
def _compiled(backend, dtype, amsgrad, arch):
    ptx = mc.kernel_ptx(backend, dtype, amsgrad, arch)
    return ptx, mc.ptx_to_sass(ptx, arch)


def _bytes_model(amsgrad):
    """Loads p, g, m, v (and vmax); stores p, m, v (and vmax): 28 / 36 bytes per float32
    element, as harness.core.tables' bytes model counts."""
    return (5, 4) if amsgrad else (4, 3)


def _assert_no_f64(ptx):
    found = mc.f64_instructions(ptx)
    assert not found, f"{len(found)} float64 instructions in a float32 kernel: {found[:5]}"


def _assert_ieee(ptx):
    ops = {op for op, _ in mc.instructions(ptx)}
    assert any(op.startswith("sqrt.rn.") for op in ops), "no IEEE sqrt.rn"
    assert any(op.startswith("div.rn.") for op in ops), "no IEEE div.rn"
    approximate = sorted(op for op in ops if ".approx" in op or op.startswith("div.full"))
    assert not approximate, f"approximate arithmetic: {approximate}"
    ftz = sorted(op for op in ops if ".ftz" in op)
    assert not ftz, f"flush-to-zero instructions: {ftz}"


def _assert_machine_limits(sass):
    assert sass.spill_bytes == 0, f"{sass.spill_bytes} bytes of register spills"
    assert sass.registers <= mc.REGISTER_CEILING, \
        f"{sass.registers} registers > {mc.REGISTER_CEILING} (below 50% occupancy)"


@pytest.mark.parametrize("backend,dtype,amsgrad,arch", CASES, ids=IDS)
def test_float32_kernels_hold_no_float64_instruction(backend, dtype, amsgrad, arch):
    ptx, _ = _compiled(backend, dtype, amsgrad, arch)
    if dtype == "float32":
        _assert_no_f64(ptx)
    else:
        assert mc.f64_instructions(ptx), "a float64 kernel with no float64 arithmetic"


@pytest.mark.parametrize("backend,dtype,amsgrad,arch", CASES, ids=IDS)
def test_global_memory_per_element_is_the_bytes_model(backend, dtype, amsgrad, arch):
    ptx, sass = _compiled(backend, dtype, amsgrad, arch)
    assert mc.per_element_memory(ptx) == {_bytes_model(amsgrad)}
    assert sass.per_element_memory() == _bytes_model(amsgrad)


@pytest.mark.parametrize("backend,dtype,amsgrad,arch", CASES, ids=IDS)
def test_ieee_sqrt_and_division_without_flush_to_zero(backend, dtype, amsgrad, arch):
    _assert_ieee(_compiled(backend, dtype, amsgrad, arch)[0])


@pytest.mark.parametrize("backend,dtype,amsgrad,arch", CASES, ids=IDS)
def test_no_spills_and_registers_under_the_ceiling(backend, dtype, amsgrad, arch):
    _assert_machine_limits(_compiled(backend, dtype, amsgrad, arch)[1])


# --- mutants: each assertion above fails on a plausible bug -------------------------------

def _numba_mutant(old: str, new: str, name="adam"):
    """A kernel of _numba_cuda_kernels with one source line changed."""
    from backends.cuda import _numba_cuda_kernels

    source = inspect.getsource(_numba_cuda_kernels)
    assert old in source
    namespace = {"__name__": "backends.cuda._numba_cuda_mutant", "__package__": "backends.cuda"}
    exec(compile(source.replace(old, new), "<mutant>", "exec"), namespace)
    return namespace[name]


def _cupy_mutant_ptx(dtype="float32", amsgrad=False, old=None, new=None, options=None):
    from backends.cuda import _cupy_kernels

    source = _cupy_kernels.kernel_source(dtype, amsgrad)
    if old is not None:
        assert old in source
        source = source.replace(old, new)
    return _cupy_kernels.compile_kernel(dtype, amsgrad, "90", "ptx",
                                        options or _cupy_kernels.NVRTC_OPTIONS,
                                        source).decode()


def test_mutant_a_python_float_literal_makes_float64_instructions():
    kernel = _numba_mutant("inv_sqrt_bc2), eps))", "inv_sqrt_bc2), eps * 1.0))")
    ptx = mc.numba_ptx(kernel, "float32", False, "90")
    assert len(mc.f64_instructions(ptx)) > 10
    with pytest.raises(AssertionError, match="float64 instructions"):
        _assert_no_f64(ptx)


def test_mutant_rereading_p_after_the_stores_is_an_extra_load():
    """(In the L2 copy p is read twice; without L2 the first read is dead.)"""
    ptx = _cupy_mutant_ptx(old="p[i] = pi - ", new="p[i] = decay * p[i] - ")
    assert (5, 3) in mc.per_element_memory(ptx)
    assert mc.ptx_to_sass(ptx, "90").per_element_memory()[0] > 4
    kernel = _numba_mutant("p[i] = _fused_update(pi, mi, vi,",
                           "p[i] = _fused_update(decay * p[i], mi, vi,")
    assert (5, 3) in mc.per_element_memory(mc.numba_ptx(kernel, "float32", False, "90"))


def test_mutant_cupys_default_ftz_is_found():
    from backends.cuda import _cupy_kernels

    ptx = _cupy_mutant_ptx(options=(*_cupy_kernels.NVRTC_OPTIONS, "-ftz=true"))
    with pytest.raises(AssertionError, match="flush-to-zero"):
        _assert_ieee(ptx)


def test_mutant_fast_math_is_found():
    from backends.cuda import _numba_cuda_kernels

    ptx = mc.numba_ptx(_numba_cuda_kernels.adam, "float32", False, "90", fastmath=True)
    with pytest.raises(AssertionError, match="approximate|flush-to-zero|IEEE"):
        _assert_ieee(ptx)


def test_mutant_spills_and_too_many_registers_are_found():
    ptx, _ = _compiled("cupy", "float64", True, "90")
    with pytest.raises(AssertionError, match="spills"):
        _assert_machine_limits(mc.ptx_to_sass(ptx, "90", ["-maxrregcount=16"]))
    with pytest.raises(AssertionError, match="registers >"):
        _assert_machine_limits(mc.ptx_to_sass(ptx, "90", ["-Xptxas=-O0"]))


# --- the emulated GPU subjects follow the compiled operation order ------------------------

def _emulated_ops(dtype, amsgrad, use_l2):
    from backends import AdamConfig
    from backends.scalars import StepScalars
    from harness.subjects.emulated_gpu import CountingOps, gpu_element_update

    cfg = AdamConfig(weight_decay=0.1 if use_l2 else 0.0, amsgrad=amsgrad)
    ops = CountingOps()
    x = np.ones(3, dtype)
    gpu_element_update(ops, x, x, x, x, x if amsgrad else None, StepScalars.for_step(cfg, 1),
                       np.dtype(dtype))
    return dict(ops.counts)


@pytest.mark.parametrize("backend,dtype,amsgrad,arch", CASES, ids=IDS)
def test_emulation_performs_the_kernels_operations(backend, dtype, amsgrad, arch):
    """Each element copy in the PTX (with and without L2) has exactly the emulation's
    FMAs, multiplies, divisions and square roots."""
    ptx, _ = _compiled(backend, dtype, amsgrad, arch)
    compiled = {tuple(sorted(mc.element_ops(body).items())) for body in mc.element_bodies(ptx)}
    emulated = {tuple(sorted(_emulated_ops(dtype, amsgrad, l2).items())) for l2 in (False, True)}
    assert compiled == emulated


def test_mutant_a_kernel_without_contraction_differs_from_the_emulation():
    ptx = _cupy_mutant_ptx(options=("-ftz=false", "-prec-div=true", "-prec-sqrt=true",
                                    "-fmad=false"))
    compiled = {tuple(sorted(mc.element_ops(b).items())) for b in mc.element_bodies(ptx)}
    assert all(dict(ops).get("fma", 0) == 0 for ops in compiled)
    assert compiled != {tuple(sorted(_emulated_ops("float32", False, l2).items()))
                        for l2 in (False, True)}


def test_sass_reader_counts_only_the_kernels_own_code():
    _, sass = _compiled("numba-cuda", "float32", False, "90")
    assert re.search(r"\.text\.__cuda_sm\w+_div_rn", sass.text), "expected the division slow path"
    ops = sass.kernel_opcodes()
    assert ops["MUFU.RSQ"] > 0 and not any(op.startswith("RET") for op in ops)


# --- int8 state kernels ------------------------------------------------------------------

INT8_CASES = list(itertools.product(mc.KERNELS, (False, True), mc.ARCHS))
INT8_IDS = [f"{b}-int8-{'amsgrad' if a else 'adam'}-sm{arch}" for b, a, arch in INT8_CASES]


@lru_cache(maxsize=None)
def _compiled_int8(backend, amsgrad, arch):
    ptx = mc.int8_kernel_ptx(backend, amsgrad, arch)
    return ptx, mc.ptx_to_sass(ptx, arch)


def _assert_int8_bytes_model(accesses: mc.GlobalAccesses, amsgrad: bool):
    """Per element copy (one square root each): p and g read as 4 bytes, each moment's
    code as 1; p written as 4, each code as 1. Per state block, each moment's float32
    scale read and written once. 16 bytes per element (18 with amsgrad) plus 8 (12)
    per 256-element block, as harness.core.tables' bytes model counts."""
    codes, e = (3 if amsgrad else 2), accesses.elements
    assert e > 0, "no element body found (no square root)"
    assert dict(accesses.loads) == {4: 2 * e + codes, 1: codes * e}, \
        f"loads by bytes {dict(accesses.loads)} for {e} element copies"
    stores = dict(accesses.stores)
    assert stores.keys() == {4, 1} and stores[4] == e + codes, \
        f"stores by bytes {stores} for {e} element copies"
    assert stores[1] % codes == 0, f"{stores[1]} code stores for {codes} moments"


def _assert_no_contraction(ptx):
    """Every float32 multiply, add and subtract rounds on its own (``.rn``: ptxas never
    fuses those), and there is no FMA: the CPU backends' operations, bit for bit."""
    ops = [op for op, _ in mc.instructions(ptx) if op.endswith(".f32")]
    fused = [op for op in ops if op.startswith("fma")]
    loose = [op for op in ops if op.split(".")[0] in ("mul", "add", "sub") and ".rn" not in op]
    assert not fused and not loose, f"contractible arithmetic: {fused + loose}"


@pytest.mark.parametrize("backend,amsgrad,arch", INT8_CASES, ids=INT8_IDS)
def test_int8_kernels_hold_no_float64_and_no_contraction(backend, amsgrad, arch):
    ptx, _ = _compiled_int8(backend, amsgrad, arch)
    _assert_no_f64(ptx)
    _assert_no_contraction(ptx)
    _assert_ieee(ptx)


@pytest.mark.parametrize("backend,amsgrad,arch", INT8_CASES, ids=INT8_IDS)
def test_int8_global_memory_is_the_bytes_model(backend, amsgrad, arch):
    ptx, sass = _compiled_int8(backend, amsgrad, arch)
    _assert_int8_bytes_model(mc.ptx_accesses(ptx), amsgrad)
    _assert_int8_bytes_model(sass.accesses(), amsgrad)


@pytest.mark.parametrize("backend,amsgrad,arch", INT8_CASES, ids=INT8_IDS)
def test_int8_no_spills_and_registers_under_the_ceiling(backend, amsgrad, arch):
    _assert_machine_limits(_compiled_int8(backend, amsgrad, arch)[1])


def _cupy_int8_mutant_ptx(amsgrad=False, old=None, new=None, options=None):
    from backends.cuda import _cupy_kernels

    source = _cupy_kernels.int8_kernel_source(amsgrad)
    if old is not None:
        assert old in source
        source = source.replace(old, new)
    return _cupy_kernels.compile_int8_kernel(amsgrad, "90", "ptx",
                                             options or _cupy_kernels.INT8_NVRTC_OPTIONS,
                                             source).decode()


def test_int8_mutant_a_python_float_literal_makes_float64_instructions():
    kernel = _numba_mutant("_ONE / scale if", "1.0 / scale if", name="adam_int8")
    with pytest.raises(AssertionError, match="float64 instructions"):
        _assert_no_f64(mc.numba_int8_ptx(kernel, False, "90"))


def test_int8_mutant_contracting_arithmetic_is_found():
    kernel = _numba_mutant("element_with(_mul_rn, _add_rn, _sub_rn)",
                           "element_with(_device(_times), _device(_plus), _device(_minus))",
                           name="adam_int8")
    with pytest.raises(AssertionError, match="contractible"):
        _assert_no_contraction(mc.numba_int8_ptx(kernel, False, "90"))
    ptx = _cupy_int8_mutant_ptx(old=_ROUNDED_M, new=_PLAIN_M,
                                options=_cupy_kernels_module().NVRTC_OPTIONS)
    with pytest.raises(AssertionError, match="contractible"):
        _assert_no_contraction(ptx)


#: The first moment's line of the CuPy kernels' shared element body, and a plain spelling
#: that compilers contract (with -fmad=true) into an FMA.
_ROUNDED_M = "m = __fadd_rn(__fmul_rn(beta1, m), __fmul_rn(one_minus_beta1, g));"
_PLAIN_M = "m = beta1 * m + one_minus_beta1 * g;"


def _cupy_kernels_module():
    from backends.cuda import _cupy_kernels

    return _cupy_kernels


def test_int8_mutant_an_extra_load_breaks_the_bytes_model():
    kernel = _numba_mutant("            new[0, j] = m\n",
                           "            new[0, j] = _add_rn(m, _mul_rn(g[i], _ZERO))\n",
                           name="adam_int8")
    with pytest.raises(AssertionError, match="loads by bytes"):
        _assert_int8_bytes_model(mc.ptx_accesses(mc.numba_int8_ptx(kernel, False, "90")),
                                 False)
    ptx = _cupy_int8_mutant_ptx(old="encode_v(__fmul_rn(fresh[1][j], inverse[1]))",
                                new="encode_v(__fmul_rn(fresh[1][j], inverse[1]) + g[j] * 0.0f)")
    with pytest.raises(AssertionError, match="loads by bytes"):
        _assert_int8_bytes_model(mc.ptx_to_sass(ptx, "90").accesses(), False)


def test_int8_mutant_flush_to_zero_and_spills_are_found():
    from backends.cuda import _cupy_kernels

    ptx = _cupy_int8_mutant_ptx(options=(*_cupy_kernels.INT8_NVRTC_OPTIONS, "-ftz=true"))
    with pytest.raises(AssertionError, match="flush-to-zero"):
        _assert_ieee(ptx)
    ptx, _ = _compiled_int8("cupy", True, "90")
    with pytest.raises(AssertionError, match="spills"):
        _assert_machine_limits(mc.ptx_to_sass(ptx, "90", ["-maxrregcount=16"]))


# --- the Numba CUDA low-precision kernel ------------------------------------------------

def _low_precision_formats():
    """Every training format of the bytes model that steps through the low-precision
    kernel, plus three combinations no format names: amsgrad (its maximum read and
    written), float16 Kahan, float32 params with bfloat16 state."""
    from backends.formats import BFLOAT16, FLOAT16, FLOAT32
    from harness.core.formats import FORMATS, Format

    extra = [Format("bf16-amsgrad", BFLOAT16, {"state_dtype": "bfloat16", "amsgrad": True}),
             Format("fp16-kahan", FLOAT16, {"rounding": "kahan"}),
             Format("fp32-bf16-state", FLOAT32, {"state_dtype": "bfloat16"})]
    return {f.name: f for f in [*FORMATS.values(), *extra] if f.low_precision}


LOW_PRECISION_FORMATS = _low_precision_formats()
#: Every format for sm_90; for sm_80 the two with the most streams (as the cupy cases).
LOW_PRECISION_CASES = [(name, arch) for name in LOW_PRECISION_FORMATS for arch in mc.ARCHS
                       if arch == "90" or name in ("bf16-kahan", "bf16-master")]
LOW_PRECISION_IDS = [f"{name}-sm{arch}" for name, arch in LOW_PRECISION_CASES]


@lru_cache(maxsize=None)
def _compiled_low_precision(name, arch):
    fmt = LOW_PRECISION_FORMATS[name]
    ptx = mc.numba_low_precision_ptx(fmt.dtype, fmt.dtype, fmt.config(), arch)
    return ptx, mc.ptx_to_sass(ptx, arch)


def _assert_bytes_per_element(accesses: mc.GlobalAccesses, nbytes: int):
    """Global bytes loaded and stored per element copy (one square root each) equal the
    bytes model's ``nbytes``."""
    e = accesses.elements
    assert e > 0, "no element body found (no square root)"
    moved = sum(size * n for counts in (accesses.loads, accesses.stores)
                for size, n in counts.items())
    assert moved == nbytes * e, (
        f"{moved / e:g} bytes per element (loads by bytes {dict(accesses.loads)}, stores "
        f"{dict(accesses.stores)} for {e} element copies); the bytes model says {nbytes}")


@pytest.mark.parametrize("name,arch", LOW_PRECISION_CASES, ids=LOW_PRECISION_IDS)
def test_low_precision_kernel_is_ieee_float32_within_the_machine_limits(name, arch):
    ptx, sass = _compiled_low_precision(name, arch)
    _assert_no_f64(ptx)
    _assert_no_contraction(ptx)
    _assert_ieee(ptx)
    _assert_machine_limits(sass)


@pytest.mark.parametrize("name,arch", LOW_PRECISION_CASES, ids=LOW_PRECISION_IDS)
def test_low_precision_global_memory_is_the_formats_bytes_model(name, arch):
    """Each format's kernel moves its bytes model (harness.core.formats) per element:
    the options are constants of the kernel, so no other format's accesses remain."""
    ptx, sass = _compiled_low_precision(name, arch)
    nbytes = LOW_PRECISION_FORMATS[name].bytes_per_element()
    _assert_bytes_per_element(mc.ptx_accesses(ptx), nbytes)
    _assert_bytes_per_element(sass.accesses(), nbytes)


def _low_precision_mutant(old: str, new: str):
    """The kernels module with one source line of the low-precision kernel changed."""
    from types import SimpleNamespace

    from backends.cuda import _numba_cuda_kernels

    return SimpleNamespace(**{**vars(_numba_cuda_kernels), "low_precision_kernel":
                              _numba_mutant(old, new, "low_precision_kernel")})


def _mutant_ptx(name, old, new):
    from harness.core.formats import FORMATS

    fmt = FORMATS[name]
    return mc.numba_low_precision_ptx(fmt.dtype, fmt.dtype, fmt.config(), "90",
                                      _low_precision_mutant(old, new))


def test_low_precision_mutants_float64_and_contraction_are_found():
    ptx = _mutant_ptx("bf16-kahan", "_sub_rn(x, rounded)", "_sub_rn(x, rounded) + 1e-300")
    with pytest.raises(AssertionError, match="float64 instructions"):
        _assert_no_f64(ptx)
    ptx = _mutant_ptx("bf16-kahan", "_add_rn(w, _widen(compensation[i], p_bf16))",
                      "w + _widen(compensation[i], p_bf16)")
    with pytest.raises(AssertionError, match="contractible"):
        _assert_no_contraction(ptx)


@pytest.mark.parametrize("name,old,new", [
    ("bf16", "            else:\n                _store(p, i, w, p_bf16)",
     "            else:\n                _store(p, i, _add_rn(w, _mul_rn(_widen(g[i], g_bf16), "
     "_ZERO)), p_bf16)"),
    ("bf16-master", "            if master_weights:\n                w = master[i]",
     "            if master_weights:\n                w = master[i] + _widen(p[i], p_bf16)"),
    ("bf16", "            elif kahan:", "            elif kahan or key == i:"),
], ids=["rereads-g-after-the-stores", "master-reads-p", "rounding-at-run-time"])
def test_low_precision_mutant_accesses_break_the_bytes_model(name, old, new):
    """An extra load (of g after the moments' stores, of p beside the master weights); a
    rounding decided at run time, as in the kernel before its options became constants
    (Kahan's loads and stores stay in the code of every format)."""
    from harness.core.formats import FORMATS

    ptx = _mutant_ptx(name, old, new)
    nbytes = FORMATS[name].bytes_per_element()
    for accesses in (mc.ptx_accesses(ptx), mc.ptx_to_sass(ptx, "90").accesses()):
        with pytest.raises(AssertionError, match="bytes per element"):
            _assert_bytes_per_element(accesses, nbytes)


def test_low_precision_mutant_float32_moments_break_the_bf16_bytes_model():
    """Moments stored as float32 where the format keeps them in bfloat16."""
    from harness.core.formats import FORMATS

    ptx, sass = _compiled_low_precision("bf16-fp32-state", "90")
    for accesses in (mc.ptx_accesses(ptx), sass.accesses()):
        with pytest.raises(AssertionError, match="bytes per element"):
            _assert_bytes_per_element(accesses, FORMATS["bf16"].bytes_per_element())


# --- the CuPy low-precision kernels ------------------------------------------------------

def _low_precision_cases():
    """(case id, variant, params dtype, options, grads dtype): each variant the cases of
    tests/low_precision_cases.py launch, once."""
    from low_precision_cases import FORMATS

    from backends import AdamConfig
    from backends.cuda import _cupy_kernels

    cases = {}
    for name, dtype, options in FORMATS:
        for variant in _cupy_kernels.step_variants(dtype, AdamConfig(**options)):
            grads = np.float32 if variant.grads == "f32" else dtype
            cases.setdefault(variant, (f"{name}-{np.dtype(grads).name}-grads", variant,
                                       dtype, options, grads))
    return list(cases.values())


#: Every variant for sm_90; for sm_80 the ones with the most streams (the machine limits
#: differ little between the two: a second build of each would double the time).
_SM80_CASES = ("bf16-sr-bfloat16-grads", "bf16-kahan-float32-grads",
               "fp16-master-float16-grads", "fp32-bf16state-float32-grads")
CUPY_LOW_PRECISION_CASES = [(*case, arch) for case in _low_precision_cases()
                            for arch in mc.ARCHS if arch == "90" or case[0] in _SM80_CASES]
CUPY_LOW_PRECISION_IDS = [f"{c[0]}-sm{c[-1]}" for c in CUPY_LOW_PRECISION_CASES]


@lru_cache(maxsize=None)
def _compiled_cupy_low_precision(variant, arch):
    ptx = mc.cupy_low_precision_ptx(variant, arch)
    return ptx, mc.ptx_to_sass(ptx, arch)


def _low_precision_bytes_model(dtype, options, grad_dtype) -> tuple[Counter, Counter]:
    """(loads, stores) of one element by bytes per access, from the state layout
    (``low_precision_step.tensor_layout``) as harness.core.formats' bytes model counts:
    reads grads, every state field and the params unless master weights; writes the
    params and every state field."""
    from backends import AdamConfig
    from backends.low_precision_step import tensor_layout

    cfg = AdamConfig(**options)
    state = [np.dtype(d).itemsize for d in tensor_layout(dtype, cfg).values()]
    params = np.dtype(dtype).itemsize
    reads = [np.dtype(grad_dtype).itemsize, *state] + ([] if cfg.master_weights else [params])
    return Counter(reads), Counter([params, *state])


def _assert_low_precision_bytes_model(accesses: mc.GlobalAccesses, model):
    e = accesses.elements
    assert e > 0, "no element body found (no square root)"
    loads, stores = ({size: n * e for size, n in counts.items()} for counts in model)
    assert dict(accesses.loads) == loads, \
        f"loads by bytes {dict(accesses.loads)} for {e} element copies; model {loads}"
    assert dict(accesses.stores) == stores, \
        f"stores by bytes {dict(accesses.stores)} for {e} element copies; model {stores}"


@pytest.mark.parametrize("case,variant,dtype,options,grads,arch", CUPY_LOW_PRECISION_CASES,
                         ids=CUPY_LOW_PRECISION_IDS)
def test_cupy_low_precision_kernels_are_ieee_float32_within_the_machine_limits(
        case, variant, dtype, options, grads, arch):
    ptx, sass = _compiled_cupy_low_precision(variant, arch)
    _assert_no_f64(ptx)
    _assert_no_contraction(ptx)
    _assert_ieee(ptx)
    _assert_machine_limits(sass)


@pytest.mark.parametrize("case,variant,dtype,options,grads,arch", CUPY_LOW_PRECISION_CASES,
                         ids=CUPY_LOW_PRECISION_IDS)
def test_cupy_low_precision_memory_is_the_bytes_model(case, variant, dtype, options, grads,
                                                      arch):
    ptx, sass = _compiled_cupy_low_precision(variant, arch)
    model = _low_precision_bytes_model(dtype, options, grads)
    _assert_low_precision_bytes_model(mc.ptx_accesses(ptx), model)
    _assert_low_precision_bytes_model(sass.accesses(), model)


def _cupy_low_precision_mutant_ptx(case: str, old=None, new=None, options=None):
    """PTX of case ``case``'s kernel (an id of CUPY_LOW_PRECISION_CASES without the arch)
    for sm_90, with one source change or other NVRTC options."""
    from backends.cuda import _cupy_kernels

    variant = next(c[1] for c in CUPY_LOW_PRECISION_CASES if c[0] == case)
    source = _cupy_kernels.low_precision_kernel_source(variant)
    if old is not None:
        assert source.count(old) == 1
        source = source.replace(old, new)
    return _cupy_kernels.compile_low_precision_kernel(
        variant, "90", "ptx", options or _cupy_kernels.LOW_PRECISION_NVRTC_OPTIONS,
        source).decode()


def test_cupy_low_precision_mutants_are_found():
    """A double literal, flush-to-zero, contracting arithmetic, and a grad read again
    after the moments' stores (they may alias it, so the load stays): an extra load."""
    from backends.cuda import _cupy_kernels

    widened = "float mi = M::widen(m[i]), vi"
    with pytest.raises(AssertionError, match="float64 instructions"):
        _assert_no_f64(_cupy_low_precision_mutant_ptx(
            "bf16-bfloat16-grads", widened, widened.replace("]),", "]) + 1e-300,")))
    ftz = (*_cupy_kernels.LOW_PRECISION_NVRTC_OPTIONS, "-ftz=true")
    with pytest.raises(AssertionError, match="flush-to-zero"):
        _assert_ieee(_cupy_low_precision_mutant_ptx("fp16-float16-grads", options=ftz))
    with pytest.raises(AssertionError, match="contractible"):
        _assert_no_contraction(_cupy_low_precision_mutant_ptx(
            "bf16-kahan-bfloat16-grads", _ROUNDED_M, _PLAIN_M,
            options=_cupy_kernels.NVRTC_OPTIONS))
    ptx = _cupy_low_precision_mutant_ptx(
        "bf16-master-bfloat16-grads", "master[i] = w;",
        "master[i] = __fadd_rn(w, __fmul_rn(0.0f, G::widen(g[i])));")
    case = next(c for c in CUPY_LOW_PRECISION_CASES if c[0] == "bf16-master-bfloat16-grads")
    with pytest.raises(AssertionError, match="loads by bytes"):
        _assert_low_precision_bytes_model(mc.ptx_to_sass(ptx, "90").accesses(),
                                          _low_precision_bytes_model(*case[2:5]))


def test_nvdisasm_is_the_wheels_else_a_toolkits_on_the_path(monkeypatch, tmp_path):
    """A GPU machine with its own CUDA toolkit and no nvdisasm wheel (as the H200 of
    docs/gpu.md) still disassembles: the PATH's nvdisasm; with neither, the error names
    the wheel."""
    from pathlib import Path

    wheel = mc._nvdisasm()
    assert wheel.name == "nvdisasm" and wheel.exists()
    toolkit = tmp_path / "nvdisasm"
    toolkit.write_text("#!/bin/sh\n")
    toolkit.chmod(0o755)
    monkeypatch.setattr(Path, "exists", lambda self: self != wheel and Path.is_file(self))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert mc._nvdisasm() == toolkit
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="nvidia-cuda-nvdisasm"):
        mc._nvdisasm()
