"""Agreement: every stepper against the float64 reference, step by step, and pairwise."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np

from backends import AdamConfig
from backends.reference import reference_step, ReferenceState

from ..core.problems import Problem
from .tolerances import ErrorBounds

__all__ = ["OPTION_SETS", "Trajectory", "Errors", "ReferenceStep", "reference_steps",
           "run_with_reference", "compare", "pairwise"]

#: The option sets every check covers, by the name used in tables and test ids.
OPTION_SETS: dict[str, dict] = {
    "plain": {},
    "l2": {"weight_decay": 0.01},
    "adamw": {"weight_decay": 0.01, "decoupled": True},
    "amsgrad": {"amsgrad": True},
    "maximize": {"maximize": True},
}


@dataclass
class Errors:
    """The worst disagreement seen: absolute, relative, in ULPs, and error/tolerance."""

    max_abs: float = 0.0
    max_rel: float = 0.0
    max_ulp: float = 0.0
    worst_ratio: float = 0.0
    worst_step: int = 0
    worst_quantity: str = ""

    def merge(self, other: "Errors") -> "Errors":
        best = self if self.worst_ratio >= other.worst_ratio else other
        return replace(best, max_abs=max(self.max_abs, other.max_abs),
                       max_rel=max(self.max_rel, other.max_rel),
                       max_ulp=max(self.max_ulp, other.max_ulp))

    @property
    def within_tolerance(self) -> bool:
        return self.worst_ratio <= 1.0


def compare(actual, expected, tolerance, dtype, step: int, quantity: str) -> Errors:
    """Errors of ``actual`` against float64 ``expected``; NaN must match NaN exactly."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.size == 0:
        return Errors(worst_step=step, worst_quantity=quantity)
    nan_mismatch = np.isnan(actual) != np.isnan(expected)
    same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.where(same, 0.0, np.abs(actual - expected))
        diff = np.where(nan_mismatch | np.isnan(diff), np.inf, diff)
        ulp = diff / np.spacing(np.abs(expected).astype(dtype)).astype(np.float64)
        rel = diff / np.where(expected == 0, 1.0, np.abs(expected))
        ratio = diff / tolerance
    worst = lambda x: float(np.max(np.where(same | np.isnan(x), 0.0, x)))
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    return Errors(worst(diff), worst(rel), worst(ulp), worst(ratio), step, quantity)


@dataclass
class Trajectory:
    """Final host params and moments of a stepper, its worst error on the way, and the
    final params' tolerance against the reference (per tensor, per element)."""

    params: list[np.ndarray]
    moments: dict
    errors: Errors
    param_tolerances: list[np.ndarray]


@dataclass(frozen=True)
class ReferenceStep:
    """The reference after one step: per quantity ("p", "exp_avg", "exp_avg_sq" and, with
    amsgrad, "max_exp_avg_sq"), its tensors and each element's tolerance."""

    expected: dict[str, list[np.ndarray]]
    tolerances: dict[str, list[np.ndarray]]


def reference_steps(problem: Problem, cfg: AdamConfig):
    """The float64 reference's steps 1..K of ``problem`` with their tolerances, one
    ReferenceStep each, lazily (``run_check`` keeps them and runs every subject against
    the same steps)."""
    dtype = problem.params[0].dtype if problem.params else np.dtype(np.float32)
    ref_p = [p.astype(np.float64) for p in problem.params]
    ref_s = [ReferenceState.zeros_like(p, cfg.amsgrad) for p in problem.params]
    bounds = [ErrorBounds(p.shape, dtype, cfg) for p in problem.params]
    for t, grads in enumerate(problem.grads, start=1):
        for i, g in enumerate(grads):
            p_before = ref_p[i]
            ref_p[i], ref_s[i] = reference_step(p_before, g, ref_s[i], t, cfg)
            bounds[i].advance(t, p_before, g, ref_p[i], ref_s[i])
        # the bounds' arrays are replaced, never written, by advance: no copies needed
        expected = {"p": list(ref_p), "exp_avg": [s.m for s in ref_s],
                    "exp_avg_sq": [s.v for s in ref_s]}
        tolerances = {"p": [b.p for b in bounds], "exp_avg": [b.m for b in bounds],
                      "exp_avg_sq": [b.v for b in bounds]}
        if cfg.amsgrad:
            expected["max_exp_avg_sq"] = [s.v_max for s in ref_s]
            tolerances["max_exp_avg_sq"] = [b.v_max for b in bounds]
        yield ReferenceStep(expected, tolerances)


def run_with_reference(make_stepper, problem: Problem, cfg: AdamConfig,
                       reference: list[ReferenceStep] | None = None) -> Trajectory:
    """Step ``make_stepper(params, cfg)`` and the reference together; compare after each
    step (``reference``: the problem's ``reference_steps``, when already computed)."""
    stepper = make_stepper(problem.copy_params(), cfg)
    dtype = problem.params[0].dtype if problem.params else np.dtype(np.float32)
    errors = Errors()
    tolerances = [np.zeros(p.shape) for p in problem.params]
    steps = reference if reference is not None else reference_steps(problem, cfg)
    for t, (grads, ref) in enumerate(zip(problem.grads, steps), start=1):
        stepper.step(stepper.prepare(grads))
        errors = errors.merge(_step_errors(stepper, ref, dtype, t))
        tolerances = ref.tolerances["p"]
    return Trajectory(stepper.params(), stepper.moments(), errors, tolerances)


def _step_errors(stepper, ref: ReferenceStep, dtype, t) -> Errors:
    actual = {"p": stepper.params(), **stepper.moments()}
    flat = lambda arrays: np.concatenate([np.ravel(a) for a in arrays] or [np.empty(0)])
    errors = Errors()
    for quantity, expected in ref.expected.items():  # every tensor at once: one call
        errors = errors.merge(compare(flat(actual[quantity]), flat(expected),
                                      flat(ref.tolerances[quantity]), dtype, t, quantity))
    return errors


def pairwise(trajectories: dict[str, Trajectory], dtype, steps: int):
    """(label_a, label_b, Errors) for every pair: final params, within the sum of the two
    tolerances (a triangle through the reference: each may be off by its own)."""
    rows = []
    for (a, ta), (b, tb) in itertools.combinations(trajectories.items(), 2):
        errors = Errors()
        for pa, pb, tol_a, tol_b in zip(ta.params, tb.params, ta.param_tolerances,
                                        tb.param_tolerances):
            errors = errors.merge(compare(pa, pb, tol_a + tol_b, dtype, steps, "p"))
        rows.append((a, b, errors))
    return rows
