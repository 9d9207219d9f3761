"""The GPU kernels' arithmetic emulated on the CPU: its FMA is exact, and the emulated
subjects pass the same tolerances as every backend, edge cases included."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from backends import AdamConfig
from harness.check.agreement import OPTION_SETS, run_with_reference
from harness.check.edge_cases import EDGE_CASES, run_edge_case
from harness.subjects.emulated_gpu import EMULATED, EmulatedGpuStepper, fma
from harness.core.problems import MIXED_SHAPES, random_problem


def _exact_fma(a, b, c, dtype):
    """a*b + c in exact rationals, rounded once to ``dtype`` (to nearest, ties to even;
    float32 through the 24-bit significand and exponent by hand, not via float64)."""
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    if dtype == np.float64:
        return float(exact)
    if exact == 0:
        return 0.0
    sign, magnitude = (-1 if exact < 0 else 1), abs(exact)
    exponent = max(magnitude.numerator.bit_length() - magnitude.denominator.bit_length(), -126)
    while Fraction(2) ** exponent > magnitude:
        exponent -= 1
    while Fraction(2) ** (exponent + 1) <= magnitude:
        exponent += 1
    exponent = max(exponent, -126)
    scaled = magnitude / Fraction(2) ** (exponent - 23)
    whole, rest = divmod(scaled.numerator, scaled.denominator)
    if 2 * rest > scaled.denominator or (2 * rest == scaled.denominator and whole % 2):
        whole += 1
    return sign * float(whole * Fraction(2) ** (exponent - 23))


def test_float32_fma_is_rounded_once_where_double_rounding_would_err():
    a = np.float32(2.0**-12 * (1 + 2.0**-23))
    b = np.float32(2.0**-12 * (1 - 2.0**-23))
    c = np.float32(1 + 2.0**-23)
    # exact: 1 + 3*2^-24 - 2^-70, just below the float32 midpoint 1 + 3*2^-24
    assert fma(a, b, c)[0] == np.float32(1 + 2.0**-23) == _exact_fma(a, b, c, np.float32)
    naive = np.float32(np.float64(a) * np.float64(b) + np.float64(c))
    assert naive == np.float32(1 + 2.0**-22), "float64 then float32 rounds twice (the mutant)"


def test_float64_fma_is_rounded_once_where_a_rounded_product_would_err():
    a = np.float64(2.0**-26 * (1 + 2.0**-52))
    b = np.float64(2.0**-27 * (1 - 2.0**-52))
    c = np.float64(1 + 2.0**-52)
    # exact: 1 + 2^-52 + 2^-53 - 2^-157, just below the midpoint 1 + 3*2^-53
    assert fma(a, b, c)[0] == 1 + 2.0**-52 == _exact_fma(a, b, c, np.float64)
    assert a * b + c == 1 + 2.0**-51, "the product rounded first (the mutant)"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fma_matches_exact_rationals(dtype):
    rng = np.random.default_rng(3)
    n = 3000
    a = rng.standard_normal(n).astype(dtype)
    b = (rng.standard_normal(n) * 10.0 ** rng.integers(-20, 20, n)).astype(dtype)
    c = (-(a.astype(np.float64) * b) * (1 + rng.standard_normal(n) * 1e-6)).astype(dtype)
    c[::5] = (rng.standard_normal(n)[::5] * 1e-30).astype(dtype)
    tiny = np.finfo(dtype).smallest_subnormal
    a[::7], b[::7], c[::7] = np.float32(1e-3), dtype(3 * tiny), dtype(tiny)  # subnormal results
    got = fma(a, b, c)
    assert got.dtype == dtype
    want = np.array([_exact_fma(x, y, z, dtype) for x, y, z in zip(a, b, c)], dtype)
    assert np.array_equal(got, want), np.flatnonzero(got != want)[:5]


def test_fma_propagates_inf_and_nan():
    got = fma(np.float32([np.inf, 1, np.nan]), np.float32([1, 2, 1]), np.float32([1, np.inf, 0]))
    assert np.isposinf(got[0]) and np.isposinf(got[1]) and np.isnan(got[2])


@pytest.mark.parametrize("backend", EMULATED)
@pytest.mark.parametrize("options", list(OPTION_SETS), ids=list(OPTION_SETS))
def test_emulated_gpu_agrees_with_the_reference(backend, options, dtype):
    cfg = AdamConfig(**OPTION_SETS[options])
    problem = random_problem(MIXED_SHAPES, dtype, steps=50, seed=4)
    trajectory = run_with_reference(lambda p, c: EmulatedGpuStepper(backend, p, c), problem, cfg)
    assert trajectory.errors.within_tolerance, trajectory.errors


@pytest.mark.parametrize("case", EDGE_CASES, ids=[c.name for c in EDGE_CASES])
def test_emulated_gpu_edge_cases(case, dtype):
    """Among them: subnormal gradients through the GPU's FMAs, without flush-to-zero."""
    passed, why, _ = run_edge_case(case, lambda p, c: EmulatedGpuStepper("cupy", p, c), dtype)
    assert passed, why


class _FlushToZeroOps:
    """The mutant: the emulated kernel with every operand and result flushed to zero when
    subnormal, as CuPy's default -ftz=true compiles it."""

    @staticmethod
    def _flush(x):
        x = np.asarray(x)
        return np.where(np.abs(x) < np.finfo(x.dtype).tiny, x.dtype.type(0), x)

    @classmethod
    def fma(cls, a, b, c):
        return cls._flush(fma(cls._flush(a), cls._flush(b), cls._flush(c)))

    @classmethod
    def mul(cls, a, b):
        return cls._flush(np.multiply(cls._flush(a), cls._flush(b)))

    @classmethod
    def div(cls, a, b):
        return cls._flush(np.divide(cls._flush(a), cls._flush(b)))

    @classmethod
    def sqrt(cls, a):
        return cls._flush(np.sqrt(cls._flush(a)))


def test_mutant_flush_to_zero_fails_the_subnormal_case(dtype, monkeypatch):
    import harness.subjects.emulated_gpu as emulated

    monkeypatch.setattr(emulated, "_NumpyOps", _FlushToZeroOps)
    case = next(c for c in EDGE_CASES if c.name == "subnormal-grad")
    passed, why, _ = run_edge_case(case, lambda p, c: EmulatedGpuStepper("cupy", p, c), dtype)
    assert not passed and "flushed to zero" in why
