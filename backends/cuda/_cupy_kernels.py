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

__all__ = ["NVRTC_OPTIONS", "INT8_NVRTC_OPTIONS", "INT8_THREADS", "kernel_name",
           "kernel_source", "compile_kernel", "int8_kernel_name", "int8_kernel_source",
           "compile_int8_kernel", "LOW_PRECISION_ROUNDING"]

#: IEEE-rounded division and square root, no flush-to-zero; FMA contraction stays on
#: (as in every CUDA compiler's default), which the emulated GPU subjects model.
NVRTC_OPTIONS = ("-ftz=false", "-prec-div=true", "-prec-sqrt=true", "-fmad=true")

#: The int8 kernel's options: contraction off too, so every multiply and add rounds on
#: its own as on the CPU (the source also spells them __fmul_rn/__fadd_rn, which no
#: compiler fuses): its codes are decisions on the NumPy backend's exact float32 values.
INT8_NVRTC_OPTIONS = ("-ftz=false", "-prec-div=true", "-prec-sqrt=true", "-fmad=false")
#: Threads per block of the int8 kernel: one warp per 256-element state block.
INT8_THREADS = 32

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
    source = kernel_source(dtype, amsgrad) if source is None else source
    return _nvrtc(source, kernel_name(dtype, amsgrad), arch, target, options)


_INT8_SOURCE = r"""
#define BLOCK {block}
#define THREADS {threads}
#define MAGNITUDE 0x7FFFFFFFu
// backends.int8_codec's maps on one value: decode_m, decode_v, encode_m, encode_v
__device__ __forceinline__ float decode_m(unsigned int c) {{
    unsigned int k = c & 127u;
    float magnitude = k ? __uint_as_float((k + {m_bias}u) << {m_shift}) : 0.0f;
    return (c & 128u) ? -magnitude : magnitude;
}}
__device__ __forceinline__ float decode_v(unsigned int c) {{
    return __uint_as_float((c + {v_bias}u) << {v_shift});
}}
__device__ __forceinline__ unsigned char encode_m(float x) {{
    unsigned int bits = __float_as_uint(x);
    unsigned int u = bits & MAGNITUDE;
    int k = (int)((u + {m_half}u) >> {m_shift}) - {m_bias};
    k = k < 0 ? 0 : (k > 127 ? 127 : k);
    return (unsigned char)(((bits >> 31) << 7) | (unsigned int)k);
}}
__device__ __forceinline__ unsigned char encode_v(float x) {{
    int c = (int)(((__float_as_uint(x) & MAGNITUDE) + {v_half}u) >> {v_shift}) - {v_bias};
    return (unsigned char)(c < 0 ? 0 : (c > 255 ? 255 : c));
}}
__device__ __forceinline__ unsigned int magnitude(float x) {{
    return __float_as_uint(x) & MAGNITUDE;
}}
extern "C" __global__ void {name}(
        float* p, const float* g, unsigned char* mc, float* ms, unsigned char* vc, float* vs,
        {x_params}float sign, float l2, float decay, float beta1, float one_minus_beta1,
        float beta2, float one_minus_beta2, float step_size, float inv_sqrt_bc2, float eps,
        bool use_l2, long long n) {{
    __shared__ float fresh[MOMENTS][BLOCK];
    __shared__ unsigned int best[MOMENTS][THREADS];
    __shared__ float inverse[MOMENTS];
    const int lane = threadIdx.x;
    const long long blocks = (n + BLOCK - 1) / BLOCK;
    for (long long b = blockIdx.x; b < blocks; b += gridDim.x) {{
        const long long start = b * BLOCK;
        const int size = n - start < BLOCK ? (int)(n - start) : BLOCK;
        const float m_scale = ms[b], v_scale = vs[b];
        unsigned int top[MOMENTS];
        for (int k = 0; k < MOMENTS; ++k) top[k] = 0u;
        AMSGRAD_READ_SCALE
        for (int j = lane; j < size; j += THREADS) {{
            const long long i = start + j;
            float gi = __fmul_rn(sign, g[i]);
            float pi = p[i];
            if (use_l2) gi = __fadd_rn(gi, __fmul_rn(l2, pi));
            pi = __fmul_rn(decay, pi);
            float mi = __fadd_rn(__fmul_rn(beta1, __fmul_rn(decode_m(mc[i]), m_scale)),
                                 __fmul_rn(one_minus_beta1, gi));
            float vi = __fadd_rn(__fmul_rn(beta2, __fmul_rn(decode_v(vc[i]), v_scale)),
                                 __fmul_rn(__fmul_rn(one_minus_beta2, gi), gi));
            fresh[0][j] = mi;
            fresh[1][j] = vi;
            top[0] = max(top[0], magnitude(mi));
            top[1] = max(top[1], magnitude(vi));
            AMSGRAD_MAX
            p[i] = __fsub_rn(pi, __fdiv_rn(__fmul_rn(step_size, mi),
                             __fadd_rn(__fmul_rn(__fsqrt_rn(vi), inv_sqrt_bc2), eps)));
        }}
        for (int k = 0; k < MOMENTS; ++k) best[k][lane] = top[k];
        for (int half = THREADS / 2; half > 0; half /= 2) {{
            __syncthreads();
            if (lane < half)
                for (int k = 0; k < MOMENTS; ++k)
                    best[k][lane] = max(best[k][lane], best[k][lane + half]);
        }}
        __syncthreads();
        if (lane == 0) {{
            for (int k = 0; k < MOMENTS; ++k) {{
                float scale = __uint_as_float(best[k][0]);
                inverse[k] = scale > 0.0f ? __fdiv_rn(1.0f, scale) : 0.0f;
            }}
            ms[b] = __uint_as_float(best[0][0]);
            vs[b] = __uint_as_float(best[1][0]);
            AMSGRAD_WRITE_SCALE
            if (best[0][0] >= 0x7F800000u)  // m's absmax inf or NaN: its m values become +NaN,
                for (int j = 0; j < size; ++j)  // whose code (times inverse 0) is {m_nonfinite}
                    fresh[0][j] = __uint_as_float(0x7FC00000u);  // (one lane, rare)
        }}
        __syncthreads();
        for (int j = lane; j < size; j += THREADS) {{
            mc[start + j] = encode_m(__fmul_rn(fresh[0][j], inverse[0]));
            vc[start + j] = encode_v(__fmul_rn(fresh[1][j], inverse[1]));
            AMSGRAD_ENCODE
        }}
        __syncthreads();  // the next block's moments overwrite fresh
    }}
}}
"""
_INT8_AMSGRAD = {
    "AMSGRAD_READ_SCALE": "const float x_scale = xs[b];",
    "AMSGRAD_MAX": ("float xi = __fmul_rn(decode_v(xc[i]), x_scale); "
                    "if (vi > xi || vi != vi) xi = vi; "
                    "fresh[2][j] = xi; top[2] = max(top[2], magnitude(xi)); vi = xi;"),
    "AMSGRAD_WRITE_SCALE": "xs[b] = __uint_as_float(best[2][0]);",
    "AMSGRAD_ENCODE": "xc[start + j] = encode_v(__fmul_rn(fresh[2][j], inverse[2]));",
}


#: CUDA C of backends.formats' roundings to bfloat16 and its counter hash, as integer
#: operations on the float32 bits (the same spelling as NumPy's, so the same bits): round
#: to nearest even and stochastic rounding (a NaN keeps its sign and top bits, made quiet),
#: and ``random16``, the high 16 bits of lowbias32 of element ``i`` under ``key``.
LOW_PRECISION_ROUNDING = r"""
__device__ __forceinline__ unsigned short bf16_keep_nan(unsigned int bits, unsigned int high) {
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return (unsigned short)((bits >> 16) | 0x40u);
    return (unsigned short)high;
}
__device__ __forceinline__ unsigned short bf16_nearest(float x) {
    unsigned int bits = __float_as_uint(x);
    return bf16_keep_nan(bits, (bits + (0x7FFFu + ((bits >> 16) & 1u))) >> 16);
}
__device__ __forceinline__ unsigned short bf16_stochastic(float x, unsigned int random) {
    unsigned int bits = __float_as_uint(x);
    return bf16_keep_nan(bits, (bits + random) >> 16);
}
__device__ __forceinline__ unsigned int random16(unsigned int key, unsigned long long i) {
    unsigned int x = (unsigned int)i ^ key ^ ((unsigned int)(i >> 32) * 0x9E3779B9u);
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    return (x ^ (x >> 16)) >> 16;
}
"""


def int8_kernel_name(amsgrad: bool) -> str:
    return f"adam_int8{'_amsgrad' if amsgrad else ''}"


def int8_kernel_source(amsgrad: bool) -> str:
    """The CUDA C of the int8 state kernel (see backends.int8_codec; one warp per
    256-element block, the same steps as backends.cuda._numba_cuda_kernels' int8 kernel);
    arguments: p, g, m codes, m scales, v codes, v scales, [max codes, max scales,] the
    ten float32 scalars of ``StepScalars.floats()``, use_l2, n. The maps' constants come
    from ``backends.int8_codec``."""
    from .. import int8_codec as codec

    source = _INT8_SOURCE.format(
        block=codec.BLOCK, threads=INT8_THREADS, m_bias=codec.M_BIAS, m_shift=codec.M_SHIFT,
        m_half=codec.M_HALF, m_nonfinite=codec.M_NONFINITE_CODE, v_bias=codec.V_BIAS,
        v_shift=codec.V_SHIFT, v_half=codec.V_HALF, name=int8_kernel_name(amsgrad),
        x_params="unsigned char* xc, float* xs, " if amsgrad else "")
    for marker, code in _INT8_AMSGRAD.items():
        source = source.replace(marker, code if amsgrad else "")
    return f"#define MOMENTS {3 if amsgrad else 2}\n" + source


def compile_int8_kernel(amsgrad: bool, arch: str, target: str = "cubin",
                        options=INT8_NVRTC_OPTIONS, source: str | None = None) -> bytes:
    """``compile_kernel`` for the int8 state kernel."""
    source = int8_kernel_source(amsgrad) if source is None else source
    return _nvrtc(source, int8_kernel_name(amsgrad), arch, target, options)


def _nvrtc(source: str, name: str, arch: str, target: str, options) -> bytes:
    from cuda.bindings import nvrtc

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
            raise RuntimeError(f"NVRTC failed to compile {name}:\n"
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
