"""The GPU kernels as machine code, on a machine without a GPU.

Compiles each GPU kernel exactly as its backend does (Numba CUDA: ``compile_ptx`` of the
kernel with the argument types the backend launches with; CuPy: the backend's own NVRTC
call), turns PTX into SASS with nvJitLink (registers, spills) and nvdisasm, and reads
what the tests assert: float64 instructions, global loads and stores per element, IEEE
square root and division, flush-to-zero, and the floating-point operations of one
element, with the multiply-adds the assembler fuses counted as FMAs; for the int8 state
and low-precision kernels, global accesses by width (``ptx_accesses``, ``Sass.accesses``).

Needs the ``[gpu-compile]`` extra (NVVM, NVRTC, nvJitLink, nvdisasm as wheels); no driver.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ARCHS", "KERNELS", "compiler_unavailable_reason", "kernel_ptx", "numba_ptx",
           "int8_kernel_ptx", "numba_int8_ptx", "numba_low_precision_ptx",
           "cupy_low_precision_ptx", "Sass", "ptx_to_sass", "instructions", "f64_instructions",
           "element_bodies", "element_ops", "per_element_memory", "GlobalAccesses",
           "ptx_accesses", "REGISTER_CEILING"]

#: The architectures every kernel is compiled for: A100 (sm_80) and H100 (sm_90).
ARCHS = ("80", "90")
#: The backends with GPU kernels.
KERNELS = ("numba-cuda", "cupy")
#: At most 64 registers per thread keeps 1024 threads (32 warps, half of the 2048 an
#: sm_80/sm_90 SM holds: 65536 registers / 64) resident per SM. Each thread has 4-5
#: independent loads in flight, so 1024 threads keep 16-40 KB of loads in flight per SM,
#: about what HBM's bandwidth x latency needs (3.35 TB/s x ~600 ns / 132 SMs = 15 KB).
REGISTER_CEILING = 64


def compiler_unavailable_reason() -> str | None:
    """None when NVVM, NVRTC, nvJitLink and nvdisasm are all importable here."""
    try:
        from cuda.bindings import nvjitlink, nvrtc
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()  # loads libnvvm
        _nvdisasm()
        err, *_ = nvrtc.nvrtcVersion()
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            return f"NVRTC unavailable: {err}"
        nvjitlink.version()
    except Exception as exc:  # a missing wheel shows up in many ways; report which
        return (f"CUDA compiler wheels missing ({type(exc).__name__}: {exc}); "
                "pip install -e '.[gpu-compile]'")
    return None


def _nvdisasm() -> Path:
    """The nvdisasm of the CUDA 13 wheels, else a CUDA toolkit's on the PATH (a GPU
    machine with its own toolkit and no such wheel)."""
    import nvidia.cu13

    path = Path(nvidia.cu13.__path__[0]) / "bin" / "nvdisasm"
    if path.exists():
        return path
    found = shutil.which("nvdisasm")
    if found is None:
        raise FileNotFoundError(f"{path}, and none on the PATH (pip install "
                                "nvidia-cuda-nvdisasm)")
    return Path(found)


def numba_ptx(kernel, dtype, amsgrad: bool, arch: str, fastmath: bool = False) -> str:
    """PTX of a Numba CUDA kernel function (a ``cuda.jit`` dispatcher or its py_func) for
    the argument types NumbaCudaBackend._launch passes: 1-D C-contiguous arrays, ten
    scalars of the array dtype, and a bool."""
    from numba import cuda, types

    element = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    array = element[::1]
    signature = (array,) * (5 if amsgrad else 4) + (element,) * 10 + (types.boolean,)
    function = getattr(kernel, "py_func", kernel)
    ptx, _ = cuda.compile_ptx(function, signature, cc=(int(arch[0]), int(arch[1:])),
                              fastmath=fastmath)
    return ptx


def kernel_ptx(backend: str, dtype, amsgrad: bool, arch: str) -> str:
    """PTX of the kernel ``backend`` launches for ``dtype`` and ``amsgrad``."""
    if backend == "numba-cuda":
        from backends.cuda import _numba_cuda_kernels as kernels

        return numba_ptx(kernels.adam_amsgrad if amsgrad else kernels.adam, dtype, amsgrad,
                         arch)
    from backends.cuda import _cupy_kernels

    return _cupy_kernels.compile_kernel(dtype, amsgrad, arch, target="ptx").decode()


def numba_int8_ptx(kernel, amsgrad: bool, arch: str, fastmath: bool = False) -> str:
    """PTX of a Numba CUDA int8 state kernel (a ``cuda.jit`` dispatcher, compiled with
    its launch bounds) for the argument types NumbaCudaBackend._launch_int8 passes:
    float32 p and g, uint8 codes and float32 scales per moment, ten float32 scalars and a
    bool."""
    from numba import cuda, types

    f32, codes = types.float32[::1], types.uint8[::1]
    signature = ((f32, f32) + (codes, f32) * (3 if amsgrad else 2) + (types.float32,) * 10
                 + (types.boolean,))
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(int(arch[0]), int(arch[1:])),
                              fastmath=fastmath,
                              launch_bounds=kernel.targetoptions.get("launch_bounds"))
    return ptx


def numba_low_precision_ptx(param_dtype, grad_dtype, cfg, arch: str,
                            kernels=None) -> str:
    """PTX of the Numba CUDA low-precision kernel NumbaCudaBackend launches for params and
    grads of these dtypes under ``cfg`` (state fields: ``low_precision_step.tensor_layout``):
    kernel and argument types come from the backend's own ``low_precision_launch`` on
    one-element host arrays (bfloat16 as uint16 bits, as the backend's plan passes them).
    ``kernels``: the kernels module, or a mutant of it."""
    from numba import cuda

    from backends.cuda import _numba_cuda_kernels
    from backends.cuda.numba_cuda import low_precision_launch
    from backends.formats import BFLOAT16
    from backends.low_precision_step import tensor_layout
    from backends.scalars import StepScalars

    layout = tensor_layout(param_dtype, cfg)
    stored = lambda dtype: np.zeros(1, np.uint16 if dtype == BFLOAT16 else dtype)
    tensors = (stored(param_dtype), stored(grad_dtype),
               *(stored(layout[name]) if name in layout else None
                 for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "master_params",
                              "compensation")))
    kernel, arguments = low_precision_launch(
        kernels or _numba_cuda_kernels, tensors, 0 if cfg.rounding == "stochastic" else None,
        StepScalars.for_step(cfg, 1))
    signature = tuple(kernel.typeof_pyval(a) for a in arguments)
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(int(arch[0]), int(arch[1:])))
    return ptx


def cupy_low_precision_ptx(variant, arch: str) -> str:
    """PTX of the CuPy low-precision kernel of ``variant``
    (``backends.cuda._cupy_kernels.LowPrecisionVariant``)."""
    from backends.cuda import _cupy_kernels

    return _cupy_kernels.compile_low_precision_kernel(variant, arch, target="ptx").decode()


def int8_kernel_ptx(backend: str, amsgrad: bool, arch: str) -> str:
    """PTX of the int8 state kernel ``backend`` launches."""
    if backend == "numba-cuda":
        from backends.cuda import _numba_cuda_kernels as kernels

        return numba_int8_ptx(kernels.adam_int8_amsgrad if amsgrad else kernels.adam_int8,
                              amsgrad, arch)
    from backends.cuda import _cupy_kernels

    return _cupy_kernels.compile_int8_kernel(amsgrad, arch, target="ptx").decode()


@dataclass(frozen=True)
class GlobalAccesses:
    """A kernel's global loads and stores counted by bytes per access, beside the copies
    of the element body (one square root each) that compilers unroll loops into."""

    elements: int
    loads: Counter
    stores: Counter


_PTX_BYTES = {"f32": 4, "u32": 4, "s32": 4, "b32": 4, "f64": 8, "u64": 8, "s64": 8,
              "b64": 8, "u8": 1, "s8": 1, "b8": 1, "u16": 2, "s16": 2, "b16": 2}


def ptx_accesses(ptx: str) -> GlobalAccesses:
    """``GlobalAccesses`` of a PTX kernel (``ld.global``/``st.global``; a vector access
    of k lanes counts k times the lane's bytes)."""
    loads, stores = Counter(), Counter()
    elements = 0
    for op, _ in instructions(ptx):
        parts = op.split(".")
        elements += op.startswith("sqrt.")
        if op.startswith(("ld.global", "st.global")):
            lanes = next((int(p[1:]) for p in parts if re.fullmatch(r"v\d", p)), 1)
            size = lanes * _PTX_BYTES.get(parts[-1], 0)
            (loads if op.startswith("ld") else stores)[size] += 1
    return GlobalAccesses(elements, loads, stores)


@dataclass(frozen=True)
class Sass:
    """What ptxas made of a PTX module: registers and spill bytes of its kernel (from
    nvJitLink's verbose log) and the disassembly."""

    registers: int
    spill_bytes: int
    text: str

    def kernel_opcodes(self) -> Counter:
        """Opcode counts in the kernel's own code (the ``.text`` of the entry function,
        not the shared slow paths of division and square root)."""
        counts: Counter = Counter()
        in_kernel = False
        for line in self.text.splitlines():
            if line.startswith("//-----"):
                in_kernel = ".text.__cuda" not in line
            match = _SASS_LINE.match(line)
            if in_kernel and match:
                counts[match.group(1)] += 1
        return counts

    def per_element_memory(self) -> tuple[float, float]:
        """(global loads, global stores) per element: LDG and STG over the square
        roots (one MUFU.RSQ per element's copy; MUFU.RSQ64H in float64)."""
        ops = self.kernel_opcodes()
        total = lambda prefix: sum(n for op, n in ops.items() if op.startswith(prefix))
        roots = total("MUFU.RSQ")
        return total("LDG") / roots, total("STG") / roots

    def accesses(self) -> GlobalAccesses:
        """``GlobalAccesses`` of the kernel's own code (LDG/STG by width: no suffix is 4
        bytes, .U8/.S8 1, .U16/.S16 2, .64 8, .128 16; elements: MUFU.RSQ)."""
        loads, stores = Counter(), Counter()
        ops = self.kernel_opcodes()
        for op, n in ops.items():
            if op.startswith(("LDG", "STG")):
                parts = op.split(".")
                size = next((int(p.lstrip("US")) // 8 for p in parts
                             if p in ("U8", "S8", "U16", "S16", "64", "128")), 4)
                (loads if op.startswith("LDG") else stores)[size] += n
        return GlobalAccesses(ops["MUFU.RSQ"], loads, stores)


_SASS_LINE = re.compile(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)")


def ptx_to_sass(ptx: str, arch: str, options=()) -> Sass:
    """Assemble ``ptx`` for sm_``arch`` with nvJitLink and disassemble it with nvdisasm;
    ``options`` are extra nvJitLink options (a mutant test limits registers that way)."""
    from cuda.bindings import nvjitlink

    handle = nvjitlink.create(2 + len(options), [f"-arch=sm_{arch}", "-verbose", *options])
    try:
        data = ptx.encode()
        nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "adam.ptx")
        nvjitlink.complete(handle)
        log = bytearray(nvjitlink.get_info_log_size(handle))
        nvjitlink.get_info_log(handle, log)
        cubin = bytearray(nvjitlink.get_linked_cubin_size(handle))
        nvjitlink.get_linked_cubin(handle, cubin)
    finally:
        nvjitlink.destroy(handle)
    log_text = log.decode(errors="replace")
    registers = max(int(r) for r in re.findall(r"[Uu]sed (\d+) registers", log_text))
    spills = sum(int(s) for s in re.findall(r"(\d+) bytes spill (?:stores|loads)", log_text))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "adam.cubin"
        path.write_bytes(bytes(cubin))
        text = subprocess.run([str(_nvdisasm()), "-c", str(path)], check=True,
                              capture_output=True, text=True).stdout
    return Sass(registers, spills, text)


_PTX_INSTRUCTION = re.compile(r"^\s*(?:@!?%p\d+\s+)?([a-z][\w.]*)\s*(.*?);", re.M)


def instructions(ptx: str) -> list[tuple[str, list[str]]]:
    """(opcode, operands) of every PTX instruction, in order."""
    return [(op, [a.strip() for a in args.split(",")] if args else [])
            for op, args in _PTX_INSTRUCTION.findall(ptx)]


def f64_instructions(ptx: str) -> list[str]:
    """Opcodes that compute in or convert to or from float64."""
    return [op for op, _ in instructions(ptx) if ".f64" in op]


def element_bodies(ptx: str) -> list[list[tuple[str, list[str]]]]:
    """The copies of one element's update in the kernel (loops are unrolled and
    versioned, e.g. per value of use_l2): each ends with the first global store after
    a division, the parameter's."""
    bodies, current, divided = [], [], False
    for op, args in instructions(ptx):
        current.append((op, args))
        divided = divided or op.startswith("div.rn")
        if divided and op.startswith("st.global"):
            bodies.append(current)
            current, divided = [], False
    return bodies


def per_element_memory(ptx: str) -> set[tuple[int, int]]:
    """The distinct (global loads, global stores) of the element bodies."""
    return {(sum(op.startswith("ld.global") for op, _ in body),
             sum(op.startswith("st.global") for op, _ in body))
            for body in element_bodies(ptx)}


def element_ops(body) -> Counter:
    """Floating-point operations of one element body as the GPU executes them: ``fma``,
    ``mul``, ``add`` (add or sub), ``div``, ``sqrt``. A ``mul`` without rounding
    modifier whose only use is an ``add``/``sub`` without one is fused by ptxas into one
    FMA (PTX permits it; ``.rn`` forbids it), so the pair counts as one ``fma``."""
    floats = [(op.split(".")[0], op, args) for op, args in body
              if op.endswith((".f32", ".f64")) and op.split(".")[0] in
              ("fma", "mul", "add", "sub", "div", "sqrt")]
    unrounded_mul = {args[0] for kind, op, args in floats if kind == "mul" and ".rn" not in op}
    uses = Counter(a for _, _, args in floats for a in args[1:])
    fused = {}  # add/sub destination -> the mul destination it absorbs
    for kind, op, args in floats:
        if kind in ("add", "sub") and ".rn" not in op:
            absorbed = [a for a in args[1:] if a in unrounded_mul and uses[a] == 1]
            if absorbed:
                fused[args[0]] = absorbed[0]
    counts: Counter = Counter()
    for kind, _, args in floats:
        if kind in ("add", "sub"):
            counts["fma" if args[0] in fused else "add"] += 1
        elif args[0] not in fused.values():
            counts[kind] += 1
    return counts
