"""The CuPy backend's kernel: CUDA C compiled by NVRTC without flush-to-zero.

CuPy appends ``-ftz=true`` to every kernel it compiles (ElementwiseKernel, RawKernel,
RawModule), after the caller's options, and NVRTC obeys the last ``-ftz`` it is given: no
CuPy kernel object can keep subnormals. So the backend compiles this source itself, with
IEEE division and square root and without FTZ, and launches the cubin through CuPy. The
body is the C spelling of the element-wise update every backend shares (backends.scalars),
in a grid-stride loop like the Numba CUDA kernel. ``compile_kernel`` needs only NVRTC (no
GPU, no driver), so CI compiles exactly what a GPU runs.
"""
from __future__ import annotations

import numpy as np

__all__ = ["NVRTC_OPTIONS", "kernel_name", "kernel_source", "compile_kernel"]

#: IEEE-rounded division and square root, no flush-to-zero; FMA contraction stays on
#: (as in every CUDA compiler's default), which the emulated GPU subjects model.
NVRTC_OPTIONS = ("-ftz=false", "-prec-div=true", "-prec-sqrt=true", "-fmad=true")

_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

_SOURCE = r"""
typedef {ctype} T;
extern "C" __global__ void {name}(
        T* p, const T* g, T* m, T* v, {vmax_param}
        T sign, T l2, T decay, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2,
        T step_size, T inv_sqrt_bc2, T eps, bool use_l2, long long n) {{
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {{
        T gi = sign * g[i];
        T pi = p[i];
        if (use_l2) gi = gi + l2 * pi;
        pi = decay * pi;
        T mi = beta1 * m[i] + one_minus_beta1 * gi;
        T vi = beta2 * v[i] + (one_minus_beta2 * gi) * gi;
        m[i] = mi;
        v[i] = vi;
        {amsgrad}
        p[i] = pi - step_size * mi / (sqrt(vi) * inv_sqrt_bc2 + eps);
    }}
}}
"""
_AMSGRAD = "T vm = vmax[i]; if (vi > vm || vi != vi) vm = vi; vmax[i] = vm; vi = vm;"


def kernel_name(dtype, amsgrad: bool) -> str:
    return f"adam_{_TYPES[np.dtype(dtype)]}{'_amsgrad' if amsgrad else ''}"


def kernel_source(dtype, amsgrad: bool) -> str:
    """The CUDA C of one kernel variant; arguments: p, g, m, v, [vmax,] the ten scalars of
    ``StepScalars.floats()``, use_l2, n."""
    return _SOURCE.format(ctype=_TYPES[np.dtype(dtype)], name=kernel_name(dtype, amsgrad),
                          vmax_param="T* vmax," if amsgrad else "",
                          amsgrad=_AMSGRAD if amsgrad else "")


def compile_kernel(dtype, amsgrad: bool, arch: str, target: str = "cubin",
                   options=NVRTC_OPTIONS, source: str | None = None) -> bytes:
    """NVRTC output (``target`` "cubin" or "ptx") of one variant for ``arch`` ("90" for
    sm_90). ``source`` replaces the kernel's own (tests compile mutants that way)."""
    from cuda.bindings import nvrtc

    source = kernel_source(dtype, amsgrad) if source is None else source
    arch_flag = f"-arch={'sm' if target == 'cubin' else 'compute'}_{arch}"
    flags = [o.encode() for o in (*options, arch_flag)]
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), b"adam.cu", 0, [], [])
    _check(nvrtc, err, "nvrtcCreateProgram")
    try:
        err, = nvrtc.nvrtcCompileProgram(prog, len(flags), flags)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            _, size = nvrtc.nvrtcGetProgramLogSize(prog)
            log = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, log)
            raise RuntimeError(f"NVRTC failed to compile {kernel_name(dtype, amsgrad)}:\n"
                               f"{log.decode(errors='replace').rstrip(chr(0))}")
        get_size, get = ((nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN) if target == "cubin"
                         else (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX))
        err, size = get_size(prog)
        _check(nvrtc, err, get_size.__name__)
        out = b" " * size
        err, = get(prog, out)
        _check(nvrtc, err, get.__name__)
        return out.rstrip(b"\0") if target == "ptx" else out
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _check(nvrtc, err, what: str) -> None:
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"{what} failed: {err}")
