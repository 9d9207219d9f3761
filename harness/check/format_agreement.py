"""Low-precision formats (bf16/fp16 params, master weights, stochastic and Kahan rounding,
bf16 state): every backend that steps them against the float64 reference that models each
rounding exactly (``backends.reference.reference_step_low_precision``), bit for bit against
each other, and stochastic rounding's mean against the value it rounds.

The kernels compute in float32 and round once to the format; the reference rounds its
float64 result once. So every stored param lies within one spacing of its format of the
reference's and almost all (FORMAT_EXACT) equal it; moments within MOMENT_SPACINGS spacings
(cancellation in m). Backends that step a format must give the first one's bits.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from backends import AdamConfig
from backends.formats import finfo, moment_dtype, random16, stream_key
from backends.reference import LowPrecisionState, ReferenceState, reference_step_low_precision

from ..core.formats import FORMATS

__all__ = ["format_agreement", "stochastic_rounding_bias", "FORMAT_EXACT", "MOMENT_SPACINGS",
           "BIAS_ALPHA"]

#: Fewest params equal to the reference's (the rest are one spacing off, where float32's
#: rounding of the step moved a value across a rounding boundary).
FORMAT_EXACT = 0.97
#: Moments' tolerance in spacings of their format, of |reference| plus the gradients' scale.
MOMENT_SPACINGS = 4
#: Stochastic rounding's two-sided t-test: p below this fails (about 1e-5 false failures
#: per check for its 8 values).
BIAS_ALPHA = 1e-6
_LR = 1e-2


def _problem(fmt, n: int, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    shapes = [(n,), (3, 5)]
    params = [rng.standard_normal(s).astype(np.float32).astype(fmt.dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32).astype(fmt.dtype) for s in shapes]
             for _ in range(steps)]
    return params, grads


def _stored(backend, params, state) -> list[tuple]:
    """(params, LowPrecisionState) ``backend`` holds for each tensor, as float64 values."""
    wide = lambda arrays, i: (None if arrays is None or arrays[i] is None
                              else np.asarray(backend.to_numpy(arrays[i])).astype(np.float64))
    return [(wide(params, i), LowPrecisionState(
        ReferenceState(wide(state.exp_avg, i), wide(state.exp_avg_sq, i),
                       wide(state.max_exp_avg_sq, i)),
        master=wide(getattr(state, "master_params", None), i),
        compensation=wide(getattr(state, "compensation", None), i)))
        for i in range(len(params))]


def _spacing(x: np.ndarray, dtype) -> np.ndarray:
    return np.abs(x) * 2.0 ** -finfo(dtype).nmant + 1e-30


def _bits(arrays) -> list[bytes]:
    return [np.ascontiguousarray(a).tobytes() for a in arrays]


def format_agreement(backends: list, n: int = 2000, steps: int = 4,
                     seed: int = 0) -> pd.DataFrame:
    """One row per (low-precision format, backend): params' and moments' errors in spacings
    of their formats and the fraction of params equal to the reference's, each step from
    the backend's own stored state (errors never compound), and whether the backend gives
    the first backend's bits (params and every state field) after all steps."""
    rows = []
    for fmt in (f for f in FORMATS.values() if f.low_precision):
        cfg = fmt.config(lr=_LR, seed=seed)
        params0, grads = _problem(fmt, n, steps, seed)
        first_bits = None
        for backend in backends:
            row = {"subject": backend.name, "format": fmt.name, "steps": steps}
            if not backend.supports_low_precision:
                rows.append(row | {"note": f"not supported by {backend.name}"})
                continue
            params = [backend.asarray(a.copy()) for a in params0]
            state = backend.init_state(params, cfg)
            worst = {"param_spacings": 0.0, "param_exact_fraction": 1.0, "moment_spacings": 0.0}
            for t, g in enumerate(grads, start=1):
                before = _stored(backend, params, state)
                backend.step(params, [backend.asarray(a) for a in g], state, cfg)
                after = _stored(backend, params, state)
                errors = _errors(before, after, g, t, cfg, fmt.dtype)
                worst = {key: (min if key == "param_exact_fraction" else max)(worst[key], value)
                         for key, value in errors.items()}
            row.update(worst)
            bits = _bits(a for arrays in (params, state.exp_avg, state.exp_avg_sq,
                                          getattr(state, "master_params", None) or (),
                                          getattr(state, "compensation", None) or ())
                         for a in map(backend.to_numpy, arrays))
            first_bits = bits if first_bits is None else first_bits
            row["bits_equal_first"] = bits == first_bits
            row["within_tolerance"] = bool(row["param_spacings"] <= 1
                                           and row["param_exact_fraction"] >= FORMAT_EXACT
                                           and row["moment_spacings"] <= MOMENT_SPACINGS
                                           and row["bits_equal_first"])
            rows.append(row | {"note": ""})
    columns = ["subject", "format", "steps", "param_spacings", "param_exact_fraction",
               "moment_spacings", "bits_equal_first", "within_tolerance", "note"]
    df = pd.DataFrame(rows, columns=columns)
    df["within_tolerance"] = df["within_tolerance"].astype("boolean")
    return df


def _errors(before, after, grads, t: int, cfg, dtype) -> dict:
    """One step's worst param error (in spacings of the params' format), the fraction of
    params equal to the reference's, and the worst moment error (in spacings of the
    state's format, of |reference| plus the gradient's scale)."""
    param_ratio, exact, count, moment_ratio = 0.0, 0, 0, 0.0
    for i, ((p, stored), (got, got_state)) in enumerate(zip(before, after)):
        random = (random16(stream_key(cfg.seed, t, i), 0, p.size).reshape(p.shape)
                  if cfg.rounding == "stochastic" else None)
        g = grads[i].astype(np.float64)
        state_dtype = moment_dtype(dtype, cfg)
        want, ref = reference_step_low_precision(p, g, stored, t, cfg, dtype, state_dtype,
                                                 random)
        with np.errstate(invalid="ignore"):
            param_ratio = max(param_ratio, float(np.max(np.abs(got - want)
                                                        / _spacing(want, dtype), initial=0)))
        exact += int(np.count_nonzero(got == want))
        count += got.size
        for got_m, want_m, scale in ((got_state.moments.m, ref.moments.m, 0.1 * np.abs(g)),
                                     (got_state.moments.v, ref.moments.v, 0.001 * g * g)):
            spacing = (np.abs(want_m) + scale) * 2.0 ** -finfo(state_dtype).nmant + 1e-30
            moment_ratio = max(moment_ratio, float(np.max(np.abs(got_m - want_m) / spacing,
                                                          initial=0)))
    return {"param_spacings": param_ratio, "param_exact_fraction": exact / max(count, 1),
            "moment_spacings": moment_ratio}


def stochastic_rounding_bias(backends: list, seeds: int = 16, n: int = 2048) -> pd.DataFrame:
    """Per backend: bfloat16 params of 1.0 stepped once by updates of 0.1-0.9 of a spacing
    (below it nearest rounding never moves them), with ``seeds`` seeds of ``n`` elements
    each; the mean of the rounded params against the float64 step's value, a t-test per
    update size. Unbiased when every p-value is above BIAS_ALPHA."""
    spacing = 2.0 ** -8  # bfloat16's spacing in [0.5, 1), where the params move
    fractions = (0.1, 0.3, 0.5, 0.9)
    rows = []
    for backend in backends:
        if not backend.supports_low_precision:
            continue
        worst_p, worst_bias = 1.0, 0.0
        for fraction in fractions:
            lr = fraction * spacing
            samples = []
            for seed in range(seeds):
                cfg = AdamConfig(lr=lr, rounding="stochastic", seed=seed,
                                 state_dtype="bfloat16")
                p = [backend.asarray(np.ones(n, FORMATS["bf16"].dtype))]
                backend.step(p, [backend.asarray(np.ones(n, FORMATS["bf16"].dtype))],
                             backend.init_state(p, cfg), cfg)
                samples.append(np.asarray(backend.to_numpy(p[0])).astype(np.float64))
            samples = np.concatenate(samples)
            target = 1.0 - lr / (1.0 + 1e-8)  # step 1: m_hat / (sqrt(v_hat) + eps), g = 1
            worst_p = min(worst_p, float(stats.ttest_1samp(samples, target).pvalue))
            worst_bias = max(worst_bias, abs(float(samples.mean()) - target) / spacing)
        rows.append({"subject": backend.name, "samples": seeds * n * len(fractions),
                     "min_p_value": worst_p, "max_bias_spacings": worst_bias,
                     "unbiased": worst_p > BIAS_ALPHA})
    return pd.DataFrame(rows, columns=["subject", "samples", "min_p_value",
                                       "max_bias_spacings", "unbiased"])
