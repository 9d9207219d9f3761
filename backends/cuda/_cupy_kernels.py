"""The CuPy backend's kernel: CUDA C compiled by NVRTC without flush-to-zero.

CuPy appends ``-ftz=true`` to every kernel it compiles (ElementwiseKernel, RawKernel,
RawModule), after the caller's options, and NVRTC obeys the last ``-ftz`` it is given: no
CuPy kernel object can keep subnormals. So the backend compiles this source itself, with
IEEE division and square root and without FTZ, and launches the cubin through CuPy. The
body is the C spelling of the element-wise update every backend shares (backends.scalars),
in a grid-stride loop like the Numba CUDA kernel. The int8 state kernel and the
low-precision kernels (one template, an instantiation per combination of formats,
amsgrad and rounding: ``LowPrecisionVariant``) round every operation on its own instead,
as the NumPy backend does. ``compile_kernel`` and its siblings need only NVRTC (no GPU,
no driver), so CI compiles exactly what a GPU runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..formats import BFLOAT16, moment_dtype

__all__ = ["NVRTC_OPTIONS", "INT8_NVRTC_OPTIONS", "INT8_THREADS", "kernel_name",
           "kernel_source", "compile_kernel", "int8_kernel_name", "int8_kernel_source",
           "compile_int8_kernel", "ROUNDED_ELEMENT", "LOW_PRECISION_ROUNDING",
           "LOW_PRECISION_NVRTC_OPTIONS", "LowPrecisionVariant", "low_precision_variant",
           "step_variants", "low_precision_common_source", "low_precision_wrapper",
           "low_precision_kernel_source", "compile_low_precision_kernel"]

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


#: backends.scalars' element update with every operation rounded on its own (``__f*_rn``,
#: which no compiler fuses): the float32 values of the NumPy backend, bit for bit. The
#: int8 and low-precision kernels share it.
ROUNDED_ELEMENT = r"""
// p (decayed), m and v stepped with grad g
__device__ __forceinline__ void rounded_moments(
        float& p, float g, float& m, float& v, float sign, float l2, float decay, float beta1,
        float one_minus_beta1, float beta2, float one_minus_beta2, bool use_l2) {
    g = __fmul_rn(sign, g);
    if (use_l2) g = __fadd_rn(g, __fmul_rn(l2, p));
    p = __fmul_rn(decay, p);
    m = __fadd_rn(__fmul_rn(beta1, m), __fmul_rn(one_minus_beta1, g));
    v = __fadd_rn(__fmul_rn(beta2, v), __fmul_rn(__fmul_rn(one_minus_beta2, g), g));
}
// amsgrad's running maximum of v: a NaN from either side wins, as np.maximum
__device__ __forceinline__ float running_max(float vmax, float v) {
    return (v > vmax || v != v) ? v : vmax;
}
// the new p from the decayed p, m and v (or its running maximum)
__device__ __forceinline__ float rounded_update(float p, float m, float v, float step_size,
                                                float inv_sqrt_bc2, float eps) {
    return __fsub_rn(p, __fdiv_rn(__fmul_rn(step_size, m),
                                  __fadd_rn(__fmul_rn(__fsqrt_rn(v), inv_sqrt_bc2), eps)));
}
"""

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
            float pi = p[i];
            float mi = __fmul_rn(decode_m(mc[i]), m_scale);
            float vi = __fmul_rn(decode_v(vc[i]), v_scale);
            rounded_moments(pi, g[i], mi, vi, sign, l2, decay, beta1, one_minus_beta1, beta2,
                            one_minus_beta2, use_l2);
            fresh[0][j] = mi;
            fresh[1][j] = vi;
            top[0] = max(top[0], magnitude(mi));
            top[1] = max(top[1], magnitude(vi));
            AMSGRAD_MAX
            p[i] = rounded_update(pi, mi, vi, step_size, inv_sqrt_bc2, eps);
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
    "AMSGRAD_MAX": ("float xi = running_max(__fmul_rn(decode_v(xc[i]), x_scale), vi); "
                    "fresh[2][j] = xi; top[2] = max(top[2], magnitude(xi)); vi = xi;"),
    "AMSGRAD_WRITE_SCALE": "xs[b] = __uint_as_float(best[2][0]);",
    "AMSGRAD_ENCODE": "xc[start + j] = encode_v(__fmul_rn(fresh[2][j], inverse[2]));",
}


#: CUDA C of backends.formats' roundings to bfloat16 and its counter hash, as integer
#: operations on the float32 bits (the same spelling as NumPy's, so the same bits): round
#: to nearest even and stochastic rounding (a NaN keeps its sign and top bits, made quiet),
#: and ``random16``, element ``i``'s half of lowbias32 of its pair under ``key``.
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
    unsigned int odd = (unsigned int)i & 1u;
    unsigned int x = ((unsigned int)i ^ odd) ^ key ^ ((unsigned int)(i >> 32) * 0x9E3779B9u);
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    return ((x ^ (x >> 16)) >> (odd << 4)) & 0xFFFFu;
}
"""


#: The low-precision kernel's options: the int8 kernel's (every multiply, add, subtract,
#: division and square root rounds on its own, spelled ``__f*_rn`` too), so its float32
#: values are the NumPy backend's bit for bit before they are rounded to their formats.
LOW_PRECISION_NVRTC_OPTIONS = INT8_NVRTC_OPTIONS

_LOW_PRECISION_SOURCE = r"""
#ifdef __CUDACC__
// float16 <-> float32 as IEEE's conversions (round to nearest even, subnormals kept)
__device__ __forceinline__ float f16_widen(unsigned short h) {
    float x;
    asm("cvt.f32.f16 %0, %1;" : "=f"(x) : "h"(h));
    return x;
}
__device__ __forceinline__ unsigned short f16_nearest(float x) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
}
#endif
// A stored format: its element type, its float32 value, float32 rounded to nearest even
struct bf16 {
    typedef unsigned short bits;
    static __device__ __forceinline__ float widen(bits b) {
        return __uint_as_float((unsigned int)b << 16);
    }
    static __device__ __forceinline__ bits nearest(float x) { return bf16_nearest(x); }
};
struct f16 {
    typedef unsigned short bits;
    static __device__ __forceinline__ float widen(bits b) { return f16_widen(b); }
    static __device__ __forceinline__ bits nearest(float x) { return f16_nearest(x); }
};
struct f32 {
    typedef float bits;
    static __device__ __forceinline__ float widen(bits x) { return x; }
    static __device__ __forceinline__ bits nearest(float x) { return x; }
};
enum Rounding { NEAREST, STOCHASTIC, KAHAN, MASTER };

// One tensor (backends.low_precision_step): the float32 step (ROUNDED_ELEMENT), then each
// result rounded to its format as backends.formats does. vmax, master and compensation
// are touched only when used.
template <class P, class G, class M, bool AMSGRAD, int ROUNDING>
__device__ __forceinline__ void adam_low_precision(
        typename P::bits* p, const typename G::bits* g, typename M::bits* m,
        typename M::bits* v, typename M::bits* vmax, float* master,
        typename P::bits* compensation, unsigned int key, float sign, float l2, float decay,
        float beta1, float one_minus_beta1, float beta2, float one_minus_beta2,
        float step_size, float inv_sqrt_bc2, float eps, bool use_l2, long long n) {
    long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float w = ROUNDING == MASTER ? master[i] : P::widen(p[i]);
        float mi = M::widen(m[i]), vi = M::widen(v[i]);
        rounded_moments(w, G::widen(g[i]), mi, vi, sign, l2, decay, beta1, one_minus_beta1,
                        beta2, one_minus_beta2, use_l2);
        m[i] = M::nearest(mi);
        v[i] = M::nearest(vi);
        if (AMSGRAD) {
            vi = running_max(M::widen(vmax[i]), vi);
            vmax[i] = M::nearest(vi);
        }
        w = rounded_update(w, mi, vi, step_size, inv_sqrt_bc2, eps);
        if (ROUNDING == MASTER) {
            master[i] = w;
            p[i] = P::nearest(w);
        } else if (ROUNDING == KAHAN) {
            float x = __fadd_rn(w, P::widen(compensation[i]));
            typename P::bits rounded = P::nearest(x);
            p[i] = rounded;
            compensation[i] = P::nearest(__fsub_rn(x, P::widen(rounded)));
        } else if (ROUNDING == STOCHASTIC) {
            p[i] = bf16_stochastic(w, random16(key, (unsigned long long)i));
        } else {
            p[i] = P::nearest(w);
        }
    }
}
"""

_LOW_PRECISION_WRAPPER = r"""
extern "C" __global__ void {name}(
        {p}::bits* p, const {g}::bits* g, {m}::bits* m, {m}::bits* v, {m}::bits* vmax,
        float* master, {p}::bits* compensation, unsigned int key, float sign, float l2,
        float decay, float beta1, float one_minus_beta1, float beta2, float one_minus_beta2,
        float step_size, float inv_sqrt_bc2, float eps, bool use_l2, long long n) {{
    adam_low_precision<{p}, {g}, {m}, {amsgrad}, {rounding}>(
        p, g, m, v, vmax, master, compensation, key, sign, l2, decay, beta1, one_minus_beta1,
        beta2, one_minus_beta2, step_size, inv_sqrt_bc2, eps, use_l2, n);
}}
"""
#: The kernels' format of each dtype (bfloat16 arrays come as their uint16 bits).
_LOW_PRECISION_FORMATS = {np.dtype(np.uint16): "bf16", BFLOAT16: "bf16",
                          np.dtype(np.float16): "f16", np.dtype(np.float32): "f32"}


@dataclass(frozen=True)
class LowPrecisionVariant:
    """One specialized low-precision kernel: the formats of p, g and the moments ("bf16",
    "f16", "f32"), amsgrad, and how p is written (nearest, stochastic, kahan or master),
    so each kernel loads and stores only what its format's bytes model counts."""

    params: str
    grads: str
    moments: str
    amsgrad: bool
    rounding: str

    @property
    def name(self) -> str:
        return (f"adam_lp_p{self.params}_g{self.grads}_m{self.moments}_{self.rounding}"
                f"{'_amsgrad' if self.amsgrad else ''}")


def low_precision_variant(p, g, m, vmax, master, compensation, key) -> LowPrecisionVariant:
    """The variant stepping one tensor's arrays (None where unused, as
    ``Backend._update_low_precision`` gets them): master weights, Kahan, stochastic (a
    key) or nearest."""
    rounding = ("master" if master is not None else "kahan" if compensation is not None
                else "stochastic" if key is not None else "nearest")
    formats = (_LOW_PRECISION_FORMATS[np.dtype(a.dtype)] for a in (p, g, m))
    return LowPrecisionVariant(*formats, vmax is not None, rounding)


def step_variants(param_dtype, cfg) -> list[LowPrecisionVariant]:
    """The variants a low-precision step of ``param_dtype`` params under ``cfg`` may
    launch: grads of the params' dtype or float32."""
    params = _LOW_PRECISION_FORMATS[np.dtype(param_dtype)]
    moments = _LOW_PRECISION_FORMATS[moment_dtype(param_dtype, cfg)]
    rounding = "master" if cfg.master_weights else cfg.rounding
    return [LowPrecisionVariant(params, grads, moments, cfg.amsgrad, rounding)
            for grads in dict.fromkeys((params, "f32"))]


def low_precision_common_source() -> str:
    """The CUDA C every low-precision variant shares: ``ROUNDED_ELEMENT``,
    ``LOW_PRECISION_ROUNDING``, the formats and the templated step (float16's conversions
    are PTX; a host build defines ``f16_widen`` and ``f16_nearest`` itself)."""
    return ROUNDED_ELEMENT + LOW_PRECISION_ROUNDING + _LOW_PRECISION_SOURCE


def low_precision_wrapper(variant: LowPrecisionVariant) -> str:
    """The ``extern "C"`` kernel of one variant; arguments: p, g, m, v, vmax, master,
    compensation (device pointers, NULL where unused), the key (uint32), the ten float32
    scalars of ``StepScalars.floats()``, use_l2, n."""
    return _LOW_PRECISION_WRAPPER.format(
        name=variant.name, p=variant.params, g=variant.grads, m=variant.moments,
        amsgrad="true" if variant.amsgrad else "false",
        rounding=variant.rounding.upper())


def low_precision_kernel_source(variant: LowPrecisionVariant) -> str:
    """The CUDA C NVRTC compiles for one variant: one instantiation of the step."""
    return low_precision_common_source() + low_precision_wrapper(variant)


def compile_low_precision_kernel(variant: LowPrecisionVariant, arch: str,
                                 target: str = "cubin",
                                 options=LOW_PRECISION_NVRTC_OPTIONS,
                                 source: str | None = None) -> bytes:
    """``compile_kernel`` for one low-precision variant."""
    source = low_precision_kernel_source(variant) if source is None else source
    return _nvrtc(source, variant.name, arch, target, options)


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
    return f"#define MOMENTS {3 if amsgrad else 2}\n" + ROUNDED_ELEMENT + source


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
