"""The float64 reference: Adam spelled out step by step, the oracle for tests and harness.

Kingma & Ba, Algorithm 1, with torch.optim.Adam's options. For step t (counting from 1)
and gradient g of parameters p::

    0. g = -g if maximize;  g = g + weight_decay * p if L2;  p = p * (1 - lr * weight_decay) if AdamW
    1. m = beta1 * m + (1 - beta1) * g                 first moment (momentum)
    2. v = beta2 * v + (1 - beta2) * g * g             second moment (uncentred variance)
    3. m_hat = m / (1 - beta1**t)                      bias corrections: m and v start at 0
       v_hat = v / (1 - beta2**t)                      (amsgrad: v_max = max(v_max, v) is corrected)
    4. p = p - lr * m_hat / (sqrt(v_hat) + eps)        eps outside the square root, as in the paper

Everything is computed in float64 on new arrays; nothing passed in is modified.
NaN or Inf in g propagate as IEEE arithmetic says: they are not errors.

int8 state (``state_dtype="int8"``, see ``backends.int8_codec``): ``reference_step_int8``
decodes (map value of each code times its block's scale), runs the step above on the
decoded moments, then encodes each new moment: scale = the block's largest
magnitude, code = the nearest map value to value / scale (ties away from zero; m is 0 below
``M_FLUSH``; every m code of a block with an inf or NaN scale is ``M_NONFINITE_CODE``),
looked up in the maps as numbers (``M_VALUES``, ``V_VALUES``), not by the kernels' bit
tricks.

Low precision (bfloat16/float16 params, float32 or bfloat16 state, see
``backends.formats``): ``reference_step_low_precision`` runs the step above on the stored
values (the master copy with master weights), then rounds each stored result from float64
straight to its format, as exact arithmetic says (``to_grid``): moments and the master
copy to nearest even; params to nearest even, or stochastically (up when the remainder, in
units of the format's spacing, plus random / 2**16 reaches 1), or with Kahan's
compensation (x = result + compensation; params = nearest(x); compensation =
nearest(x - params)). The kernels do this in float32 with integer tricks: their bits agree
with these except where float32's rounding of the result moves it across a boundary.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import AdamConfig
from .formats import BFLOAT16, FLOAT16, FLOAT32, finfo
from .int8_codec import BLOCK, M_FLUSH, M_NONFINITE_CODE, M_VALUES, V_VALUES

__all__ = ["ReferenceState", "reference_step", "reference_run", "Int8Moment",
           "reference_step_int8", "nearest_code", "decode", "LowPrecisionState",
           "reference_step_low_precision", "to_grid"]


@dataclass
class ReferenceState:
    """Float64 moments of one tensor; ``v_max`` is None unless amsgrad."""

    m: np.ndarray
    v: np.ndarray
    v_max: np.ndarray | None

    @classmethod
    def zeros_like(cls, p: np.ndarray, amsgrad: bool) -> "ReferenceState":
        zeros = np.zeros(np.shape(p), dtype=np.float64)
        return cls(zeros.copy(), zeros.copy(), zeros.copy() if amsgrad else None)


def reference_step(p, g, state: ReferenceState, t: int, cfg: AdamConfig):
    """One Adam step of one tensor at step ``t``; returns (new float64 p, new ReferenceState)."""
    with np.errstate(all="ignore"):  # overflow, NaN and Inf follow IEEE, silently
        return _step(np.asarray(p, dtype=np.float64), np.asarray(g, dtype=np.float64), state,
                     t, cfg)


def _step(p, g, state, t, cfg):
    if cfg.maximize:
        g = -g
    if cfg.weight_decay != 0 and not cfg.decoupled:
        g = g + cfg.weight_decay * p
    if cfg.decoupled:
        p = p * (1.0 - cfg.lr * cfg.weight_decay)

    m = cfg.beta1 * state.m + (1.0 - cfg.beta1) * g
    v = cfg.beta2 * state.v + (1.0 - cfg.beta2) * g * g
    v_max = np.maximum(state.v_max, v) if cfg.amsgrad else None

    m_hat = m / (1.0 - cfg.beta1**t)
    v_hat = (v_max if cfg.amsgrad else v) / (1.0 - cfg.beta2**t)

    p = p - cfg.lr * m_hat / (np.sqrt(v_hat) + cfg.eps)
    return p, ReferenceState(m, v, v_max)


def reference_run(params, grad_steps, cfg: AdamConfig, states=None, first_step: int = 1):
    """Step every tensor through ``grad_steps`` (a list, per step, of per-tensor gradients).

    Returns (float64 params, list of ReferenceState). ``states`` resumes from given moments.
    """
    params = [np.asarray(p, dtype=np.float64) for p in params]
    if states is None:
        states = [ReferenceState.zeros_like(p, cfg.amsgrad) for p in params]
    for offset, grads in enumerate(grad_steps):
        t = first_step + offset
        for i, g in enumerate(grads):
            params[i], states[i] = reference_step(params[i], g, states[i], t, cfg)
    return params, states


@dataclass
class Int8Moment:
    """One int8 moment of one tensor: codes, float64 block scales, and (after a
    reference step) ``x``, the float64 value / scale each code was chosen for."""

    codes: np.ndarray
    scales: np.ndarray
    x: np.ndarray | None = None


def _map(signed: bool) -> np.ndarray:
    """The 256 float64 values codes stand for: m's sign-magnitude map or v's."""
    return np.concatenate((M_VALUES, -M_VALUES)) if signed else V_VALUES


def decode(q: Int8Moment, signed: bool) -> np.ndarray:
    """float64 values: each code's map value times its block's scale."""
    codes = np.asarray(q.codes).reshape(-1)
    scales = np.repeat(np.asarray(q.scales, dtype=np.float64), BLOCK)[:codes.size]
    return (_map(signed)[codes] * scales).reshape(np.shape(q.codes))


def nearest_code(x: np.ndarray, signed: bool) -> np.ndarray:
    """uint8 codes of the map values nearest to float64 ``x``, ties away from zero; m is
    0 below ``M_FLUSH``."""
    magnitudes = M_VALUES if signed else V_VALUES
    a = np.abs(x)
    hi = np.clip(np.searchsorted(magnitudes, a, side="left"), 1, magnitudes.size - 1)
    lo = hi - 1
    nearer_hi = (a - magnitudes[lo]) >= (magnitudes[hi] - a)
    k = np.where(nearer_hi, hi, lo)
    if signed:
        k = np.where(a < M_FLUSH, 0, k) + 128 * np.signbit(x)
    return k.astype(np.uint8)


def _encode(values, signed: bool) -> Int8Moment:
    flat = values.reshape(-1)
    padded = np.zeros(-(-flat.size // BLOCK) * BLOCK)
    padded[:flat.size] = np.abs(flat)
    scales = padded.reshape(-1, BLOCK).max(axis=1)
    per_element = np.repeat(scales, BLOCK)[:flat.size]
    with np.errstate(all="ignore"):
        x = np.where(per_element > 0, flat / per_element, 0.0)
    codes = nearest_code(x, signed)
    if signed:
        codes[~np.isfinite(per_element)] = M_NONFINITE_CODE
    return Int8Moment(codes.reshape(values.shape), scales, x.reshape(values.shape))


def reference_step_int8(p, g, m: Int8Moment, v: Int8Moment,
                        v_max: Int8Moment | None, t: int, cfg: AdamConfig):
    """One Adam step of one tensor with int8 state; returns (new float64 p, m, v, v_max)
    as Int8Moments (``v_max`` None unless amsgrad)."""
    moments = ReferenceState(decode(m, True), decode(v, False),
                             None if v_max is None else decode(v_max, False))
    p, new = reference_step(p, g, moments, t, cfg)
    return (p, _encode(new.m, True), _encode(new.v, False),
            None if new.v_max is None else _encode(new.v_max, False))


#: (significant bits, exponent of the smallest spacing, largest finite value) per format.
_GRIDS = {BFLOAT16: (8, -133, float(finfo(BFLOAT16).max)),
          FLOAT16: (11, -24, 65504.0),
          FLOAT32: (24, -149, float(np.finfo(np.float32).max))}


def to_grid(x, dtype, random=None) -> np.ndarray:
    """float64 ``x`` rounded to ``dtype``'s values (as float64): to nearest even, or with
    ``random`` (integers below 2**16) stochastically: away from zero exactly when
    remainder / spacing + random / 2**16 >= 1. Beyond the largest finite value: inf."""
    digits, smallest, largest = _GRIDS[np.dtype(dtype)]
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        _, exponent = np.frexp(x)
        spacing = np.ldexp(1.0, np.maximum(exponent - digits, smallest))
        units = np.abs(x) / spacing  # exact: a power-of-two scaling
        if random is None:
            kept = np.rint(units)  # half to even
        else:
            low = np.floor(units)
            kept = low + ((units - low) + np.asarray(random) / 65536.0 >= 1.0)
        out = np.copysign(kept * spacing, x)
        out = np.where(np.abs(out) > largest, np.copysign(np.inf, x), out)
    return np.where(np.isfinite(x), out, x)


@dataclass
class LowPrecisionState:
    """Float64 values of one tensor's stored state: moments (already on their format's
    grid), the master copy or None, the Kahan compensation or None."""

    moments: ReferenceState
    master: np.ndarray | None = None
    compensation: np.ndarray | None = None


def reference_step_low_precision(p, g, state: LowPrecisionState, t: int, cfg: AdamConfig,
                                 param_dtype, state_dtype, random=None):
    """One step of one low-precision tensor; returns (new params, new LowPrecisionState),
    float64 values on their formats' grids. ``random``: the element's 16 random bits
    (``formats.random16``) with ``rounding="stochastic"``."""
    weights = state.master if cfg.master_weights else p
    q, moments = reference_step(weights, g, state.moments, t, cfg)
    stored = ReferenceState(*(None if a is None else to_grid(a, state_dtype)
                              for a in (moments.m, moments.v, moments.v_max)))
    if cfg.master_weights:
        master = to_grid(q, FLOAT32)
        return to_grid(master, param_dtype), LowPrecisionState(stored, master=master)
    if cfg.rounding == "kahan":
        x = q + state.compensation
        new_p = to_grid(x, param_dtype)
        with np.errstate(invalid="ignore"):
            return new_p, LowPrecisionState(stored, compensation=to_grid(x - new_p,
                                                                          param_dtype))
    return to_grid(q, param_dtype, random if cfg.rounding == "stochastic" else None), \
        LowPrecisionState(stored)
