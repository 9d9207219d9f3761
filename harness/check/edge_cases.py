"""Edge cases with exact expectations, the same on every backend.

Huge gradients: ``v = beta2*v + ((1-beta2)*g)*g`` overflows the dtype when
``|g| > sqrt(max/(1-beta2))`` (about 5.8e20 in float32, 4.2e155 in float64). Every backend
then stores ``v = inf`` and the element's update is ``m/inf = 0``: the parameter stays
where weight decay leaves it, and stays there while ``v`` is inf. NaN or Inf in a gradient
propagate: the parameter becomes NaN at exactly those positions (Inf gives inf/inf).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from backends import AdamConfig

from ..core.problems import MIXED_SHAPES, Problem, random_problem
from .agreement import run_with_reference

__all__ = ["EdgeCase", "EDGE_CASES", "overflow_threshold", "run_edge_case"]


def overflow_threshold(dtype, cfg: AdamConfig) -> float:
    """|g| above which the second moment overflows to inf in ``dtype``."""
    return float(np.sqrt(float(np.finfo(dtype).max)) / np.sqrt(1.0 - cfg.beta2))


@dataclass(frozen=True)
class EdgeCase:
    """A problem builder, its config, and an exact check of the stepper's final result.

    ``check(problem, params, moments, cfg)`` returns "" when the expectation holds, else why not.
    With ``reference=True`` the case must also agree with the float64 reference.
    """

    name: str
    build: Callable[[np.dtype], Problem]
    cfg: AdamConfig
    check: Callable | None = None
    reference: bool = True


def _problem(dtype, steps=5, seed=7):
    return random_problem(MIXED_SHAPES, dtype, steps, seed)


def _zero_grads(dtype):
    problem = _problem(dtype)
    problem.grads = [[np.zeros_like(g) for g in grads] for grads in problem.grads]
    return problem


def _subnormal_grads(dtype):
    """Gradients of +-tiny/16 (2^-130 in float32): subnormal, and so are the first
    moments they make; flush-to-zero would make those 0."""
    problem = _problem(dtype)
    subnormal = np.finfo(dtype).tiny / 16
    problem.grads = [[(np.sign(g) * subnormal).astype(dtype) for g in grads]
                     for grads in problem.grads]
    return problem


def _huge_grads(dtype):
    problem = _problem(dtype)
    huge = np.asarray(2 * overflow_threshold(dtype, AdamConfig()), dtype=dtype)
    for grads in problem.grads:
        for g in grads:
            g.reshape(-1)[::3] = huge
    return problem


def _nan_inf_grads(dtype):
    problem = _problem(dtype, steps=3)
    for g in problem.grads[1]:
        g.reshape(-1)[::5] = np.nan
        g.reshape(-1)[2::5] = np.inf
    return problem


def _unchanged(problem, params, moments, cfg) -> str:
    bad = [i for i, (p0, p) in enumerate(zip(problem.params, params)) if not np.array_equal(p0, p)]
    return f"params changed in tensors {bad}" if bad else ""


def _zero_moments(problem, params, moments, cfg) -> str:
    why = _unchanged(problem, params, moments, cfg)
    if any(np.any(m != 0) for m in moments["exp_avg"] + moments["exp_avg_sq"]):
        why += " moments are not all zero"
    return why.strip()


def _subnormal_moments_kept(problem, params, moments, cfg) -> str:
    if not any(np.any(m != 0) for m in moments["exp_avg"]):
        return "exp_avg is all zero: subnormals were flushed to zero"
    return ""


def _huge_expected(problem, params, moments, cfg) -> str:
    for i, (p0, p, v) in enumerate(zip(problem.params, params, moments["exp_avg_sq"])):
        hit = np.zeros(p0.size, bool)
        hit[::3] = True
        if not np.all(np.isposinf(v.reshape(-1)[hit])):
            return f"tensor {i}: exp_avg_sq is not inf where |g| overflows"
        if not np.array_equal(p.reshape(-1)[hit], p0.reshape(-1)[hit]):
            return f"tensor {i}: params moved where exp_avg_sq is inf"
    return ""


def _nan_expected(problem, params, moments, cfg) -> str:
    for i, (g, p) in enumerate(zip(problem.grads[1], params)):
        if not np.array_equal(~np.isfinite(g), np.isnan(p)):
            return f"tensor {i}: NaN params are not exactly where the gradient was NaN/Inf"
    return ""


EDGE_CASES = [
    EdgeCase("zero-grad", _zero_grads, AdamConfig(), _zero_moments),
    EdgeCase("lr=0", _problem, AdamConfig(lr=0.0, weight_decay=0.1, decoupled=True), _unchanged),
    EdgeCase("subnormal-grad", _subnormal_grads, AdamConfig(), _subnormal_moments_kept),
    EdgeCase("huge-grad", _huge_grads, AdamConfig(), _huge_expected, reference=False),
    EdgeCase("nan-inf-grad", _nan_inf_grads, AdamConfig(), _nan_expected),
    EdgeCase("beta1=0", _problem, AdamConfig(beta1=0.0)),
    EdgeCase("beta2=0.99999", _problem, AdamConfig(beta2=0.99999)),
    EdgeCase("mixed-sizes-amsgrad-l2", _problem, AdamConfig(amsgrad=True, weight_decay=0.1)),
]


def run_edge_case(case: EdgeCase, make_stepper, dtype) -> tuple[bool, str, object]:
    """(passed, why not, Trajectory) of one stepper on one edge case."""
    problem = case.build(np.dtype(dtype))
    trajectory = run_with_reference(make_stepper, problem, case.cfg)
    why = case.check(problem, trajectory.params, trajectory.moments, case.cfg) \
        if case.check else ""
    if case.reference and not trajectory.errors.within_tolerance:
        why = (why + f" off the reference: {trajectory.errors.worst_quantity} at step "
               f"{trajectory.errors.worst_step}, {trajectory.errors.worst_ratio:.3g}x tolerance")
    return not why.strip(), why.strip(), trajectory
