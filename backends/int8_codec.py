"""Int8 Adam state (``AdamConfig(state_dtype="int8")``): layout, code maps,
and the NumPy implementation every other backend matches.

Layout. A float32 tensor of at least MIN_INT8_SIZE (4096, bitsandbytes' convention)
elements stores m and v (and amsgrad's running maximum) as uint8 codes of its own shape,
plus one float32 scale per block of BLOCK (256) consecutive elements (the last block may
be shorter): the largest magnitude in the block (absmax). Smaller tensors keep float32
state: a negligible share of the memory, and often biases and norms, whose moments span
the widest ranges. 256-element blocks cost 4/256 bytes of scale per element per moment.

Maps. A code is the top bits of the float32 representation of x = value / absmax
(|x| <= 1), so encoding is an integer add and a shift, and decoding a shift:

- m (signed, E4M3): bit 7 is the sign, bits 0-6 a magnitude k. k = 0 is 0; k in 1..127
  is the float32 with bits (k + 889) << 20: 1.25 * 2**-16 (k = 1) up to 1.0 (k = 127),
  eight values per binade, relative spacing 1/16 to 1/8.
- v (unsigned, E5M3): code c in 0..255 is the float32 with bits (c + 761) << 20:
  1.125 * 2**-32 (c = 0) up to 1.0 (c = 255), eight values per binade. No code is 0.

Rounding is to the nearest map value, ties away from zero: adding half the weight of the
dropped bits (1 << 19 for both maps) to the magnitude's bits and shifting rounds
the mantissa to nearest, ties up, and carries into the next binade exactly when x is past
the midpoint to it. Below its smallest value v goes to c = 0 (the nearest). m flushes to
0 below M_FLUSH = 1.1875 * 2**-16, the midpoint between k = 1 and the E4M3 value under it
(1.125 * 2**-16) that the map leaves out for 0: one unsigned saturation in the kernels,
where the midpoint to 0 (0.625 * 2**-16) cost a 32-bit compare per element, 7% of the
numba step in cache. x is computed as
``value * (1 / absmax)`` in float32 (0 when absmax is 0 or NaN); a NaN in a block makes
its absmax, and so the whole block's state, NaN.

Non-finite blocks. A block whose m absmax is inf or NaN decodes to no number whatever
its codes, and the sign of a NaN is no data: x86 makes inf * 0 a negative NaN and passes
on a NaN operand's sign, GPUs make every NaN positive, and which of two NaN operands an
addition passes on depends on the order the compiler chose. So every m code of such a block is M_NONFINITE_CODE (127), in every
backend, and the bits stay identical (v's code ignores the sign already: 255 for a NaN).

Why v has no 0. The update divides m by sqrt(v) + eps. If v could decode to 0 while
m does not, the step would be lr * m / eps, orders of magnitude beyond Adam's bound of
about lr: Li et al. (NeurIPS 2023) call it the zero-point problem; a decade-style map
reaching 1e-7 of absmax did it 11k times in 500 steps of the digits MLP here. v's map
stops at 1.125 * 2**-32 of absmax, so a v that underflows the map is rounded up, never
to 0, and its sqrt is at least 2**-16 of sqrt(absmax): E5M3 spans the square of m's
2**-16, as v ~ m**2 needs.

Why E4M3 for m. m decays by beta1 = 0.9 each step; with four values per binade (E5M2,
tried first) a 10% change is often rounded away and m lags: after 100 steps of the digits
MLP its decoded m was 45% (relative norm) from a float32-state run fed the same
gradients, and at lr 1e-3 test accuracy was 0.9 points lower. Eight values per binade
halve that error (23%) and match float32 state's accuracy at lr 1e-2 and 1e-3; the range
given up, below 2**-16 of the block's largest m, is what v's floor already caps.

The step per block: decode (code value * scale, float32), the float32 Adam body
(``backends.cpu.numpy._adam_block``: the same body as the fp32 kernels) on the decoded
moments, which also updates p from the new moments before they are encoded, then new
scales (absmax of the new moments) and new codes.
"""
from __future__ import annotations

import numpy as np

from .state import AdamState

__all__ = ["BLOCK", "MIN_INT8_SIZE", "M_FLUSH", "M_VALUES", "V_VALUES", "has_int8_state",
           "n_blocks", "encode_m", "encode_v", "decode_m", "decode_v",
           "block_absmax", "inverse_scales", "init_int8_state", "step_blocks_numpy",
           "INT8_MOMENTS", "SCALE_NAMES", "M_NONFINITE_CODE"]

BLOCK = 256
MIN_INT8_SIZE = 4096
INT8_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
SCALE_NAMES = tuple(f"{name}_scale" for name in INT8_MOMENTS)

#: m's map: bias of the 11 kept bits (exponent and 3 mantissa bits), rounding half
#: (1 << 19), and the magnitude below which m is 0.
M_SHIFT, M_BIAS, M_HALF, M_FLUSH = 20, 889, 1 << 19, 1.1875 * 2.0**-16
#: Every m code of a block whose absmax is inf or NaN (see "Non-finite blocks").
M_NONFINITE_CODE = 127
#: v's map: bias of the 11 kept bits (exponent and 3 mantissa bits), rounding half.
V_SHIFT, V_BIAS, V_HALF = 20, 761, 1 << 19
_MAGNITUDE = np.uint32(0x7FFFFFFF)


def _minifloat_values(mantissa_bits: int, first_exponent: int, first_mantissa: int,
                      count: int) -> np.ndarray:
    """``count`` float64 values 2**e * (1 + j / 2**mantissa_bits), ascending from
    exponent ``first_exponent`` and mantissa ``first_mantissa`` (the maps, spelled as
    numbers, independently of the bit tricks)."""
    per_binade = 1 << mantissa_bits
    j = np.arange(count) + first_mantissa
    exponent = first_exponent + j // per_binade
    return np.ldexp(1.0 + (j % per_binade) / per_binade, exponent)


#: The 128 magnitudes of m (index k; k = 0 is 0) and the 256 values of v (index c),
#: in float64, ascending, as fractions of the block's absmax.
M_VALUES = np.concatenate(([0.0], _minifloat_values(3, -16, 2, 127)))
V_VALUES = _minifloat_values(3, -32, 1, 256)


def has_int8_state(param) -> bool:
    """Whether ``param``'s state is int8 under state_dtype="int8" (else float32)."""
    return int(param.size) >= MIN_INT8_SIZE


def n_blocks(size: int) -> int:
    """Scales per moment of a tensor of ``size`` elements."""
    return -(-int(size) // BLOCK)


def encode_m(x: np.ndarray) -> np.ndarray:
    """float32 x (|x| <= 1) -> m codes (uint8): the nearest map value, ties away from 0
    (0 below M_FLUSH)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    u = bits & _MAGNITUDE
    k = np.clip(((u + np.uint32(M_HALF)) >> np.uint32(M_SHIFT)).astype(np.int32) - M_BIAS,
                0, 127)
    return (((bits >> np.uint32(31)).astype(np.int32) << 7) | k).astype(np.uint8)


def encode_v(x: np.ndarray) -> np.ndarray:
    """float32 x (0 <= x <= 1) -> v codes (uint8): the nearest map value, ties up."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32) & _MAGNITUDE
    c = ((u + np.uint32(V_HALF)) >> np.uint32(V_SHIFT)).astype(np.int32) - V_BIAS
    return np.clip(c, 0, 255).astype(np.uint8)


def decode_m(codes: np.ndarray) -> np.ndarray:
    """m codes -> float32 map values (fractions of absmax)."""
    c = codes.astype(np.uint32)
    k = c & np.uint32(127)
    magnitude = np.where(k != 0, (k + np.uint32(M_BIAS)) << np.uint32(M_SHIFT), 0)
    return ((c >> np.uint32(7)) << np.uint32(31) | magnitude.astype(np.uint32)).view(np.float32)


def decode_v(codes: np.ndarray) -> np.ndarray:
    """v codes -> float32 map values (fractions of absmax), never 0."""
    return ((codes.astype(np.uint32) + np.uint32(V_BIAS)) << np.uint32(V_SHIFT)).view(np.float32)


def block_absmax(x: np.ndarray) -> np.ndarray:
    """float32 absmax of each BLOCK-element block of 1-D float32 ``x`` (the last may be
    shorter): the largest magnitude bits, so a NaN wins, as in every kernel."""
    u = x.view(np.uint32) & _MAGNITUDE
    full = (x.size // BLOCK) * BLOCK
    out = np.empty(n_blocks(x.size), dtype=np.uint32)
    out[: full // BLOCK] = u[:full].reshape(-1, BLOCK).max(axis=1, initial=0)
    if full < x.size:
        out[-1] = u[full:].max()
    return out.view(np.float32)


def inverse_scales(scales: np.ndarray) -> np.ndarray:
    """float32 1 / absmax, 0 where absmax is 0 or NaN (the block's x are then 0 or NaN)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = np.float32(1) / scales
    return np.where(scales > 0, inverse, np.float32(0)).astype(np.float32)


def _per_element(scales: np.ndarray, size: int) -> np.ndarray:
    return np.repeat(scales, BLOCK)[:size]


def init_int8_state(backend, params, amsgrad: bool) -> AdamState:
    """Zero int8 state for float32 ``params``: codes and scales for the tensors
    ``has_int8_state`` picks, float32 moments for the others (scale entries None)."""
    def moment(zero_code):
        codes, scales = [], []
        for p in params:
            if has_int8_state(p):
                host = np.full(p.shape, zero_code, dtype=np.uint8)
                codes.append(backend.asarray(host))
                scales.append(backend.asarray(np.zeros(n_blocks(p.size), np.float32)))
            else:
                codes.append(backend.asarray(np.zeros(p.shape, np.float32)))
                scales.append(None)
        return codes, scales

    m, m_scale = moment(0)
    v, v_scale = moment(0)
    vmax, vmax_scale = moment(0) if amsgrad else (None, None)
    return AdamState(step=0, exp_avg=m, exp_avg_sq=v, max_exp_avg_sq=vmax,
                     exp_avg_scale=m_scale, exp_avg_sq_scale=v_scale,
                     max_exp_avg_sq_scale=vmax_scale)


def step_blocks_numpy(p, g, moments, c, adam_block) -> None:
    """One step of an int8 1-D float32 tensor, in place. ``moments`` holds (codes,
    scales) for m, v and, with amsgrad, the running maximum; ``c`` the float32 step
    scalars and ``adam_block(p, g, m, v, vmax, a, b, c)`` the float32 body."""
    (m_codes, m_scales), (v_codes, v_scales), vmax_pair = moments
    n = p.size
    m = decode_m(m_codes) * _per_element(m_scales, n)
    v = decode_v(v_codes) * _per_element(v_scales, n)
    vmax = None
    if vmax_pair is not None:
        vmax = decode_v(vmax_pair[0]) * _per_element(vmax_pair[1], n)
    a, b = np.empty_like(p), np.empty_like(p)
    with np.errstate(all="ignore"):
        adam_block(p, g, m, v, vmax, a, b, c)
        for pair, new, encode in ((moments[0], m, encode_m), (moments[1], v, encode_v),
                                    (vmax_pair, vmax, encode_v)):
            if pair is None:
                continue
            codes, scales = pair
            scales[:] = block_absmax(new)
            codes[:] = encode(new * _per_element(inverse_scales(scales), n))
    nonfinite = ~np.isfinite(m_scales)
    if nonfinite.any():
        m_codes[_per_element(nonfinite, n)] = M_NONFINITE_CODE
