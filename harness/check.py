"""``adam-bench check``: agreement of every subject with the reference, pairwise, and on
edge cases. Our backends and the emulated GPU kernels decide the verdict; torch's rows
are shown beside them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from backends import AdamConfig

from .agreement import OPTION_SETS, pairwise, run_with_reference
from .edge_cases import EDGE_CASES, run_edge_case
from .problems import MIXED_SHAPES, random_problem
from .subjects import Subject

__all__ = ["CheckReport", "run_check", "OURS"]

#: Subject kinds that decide the verdict.
OURS = ("backend", "emulated")


@dataclass
class CheckReport:
    agreement: pd.DataFrame
    pairs: pd.DataFrame
    edges: pd.DataFrame
    skipped: pd.DataFrame

    @property
    def ok(self) -> bool:
        """True when every backend of ours (and emulated GPU kernel) is within tolerance
        everywhere."""
        ours = lambda df: df[df["kind"].isin(OURS)]
        return bool(ours(self.agreement)["within_tolerance"].all()
                    and ours(self.pairs)["within_tolerance"].all()
                    and ours(self.edges)["passed"].all())


def _error_columns(errors) -> dict:
    return {"max_abs_err": errors.max_abs, "max_rel_err": errors.max_rel,
            "max_ulp_err": errors.max_ulp, "worst_step": errors.worst_step,
            "worst_quantity": errors.worst_quantity, "tolerance_ratio": errors.worst_ratio,
            "within_tolerance": errors.within_tolerance}


def run_check(subjects: list[Subject], dtypes=("float32", "float64"), steps: int = 100,
              seed: int = 0, shapes=MIXED_SHAPES, progress=None) -> CheckReport:
    """Run every runnable subject on every dtype x option set, then the edge cases."""
    runnable = [s for s in subjects if s.make is not None]
    skipped = pd.DataFrame([{"subject": s.label, "kind": s.kind, "reason": s.reason}
                            for s in subjects if s.make is None],
                           columns=["subject", "kind", "reason"])
    rows, pair_rows, edge_rows = [], [], []
    kinds = {s.label: s.kind for s in runnable}
    for dtype in dtypes:
        for option_name, options in OPTION_SETS.items():
            cfg = AdamConfig(**options)
            problem = random_problem(shapes, dtype, steps, seed)
            trajectories = {}
            for subject in runnable:
                trajectory = run_with_reference(subject.make, problem, cfg)
                trajectories[subject.label] = trajectory
                rows.append({"subject": subject.label, "kind": subject.kind, "dtype": dtype,
                             "options": option_name, "steps": steps,
                             **_error_columns(trajectory.errors)})
                if progress:
                    progress()
            for a, b, errors in pairwise(trajectories, np.dtype(dtype), steps):
                kind = "backend" if kinds[a] in OURS and kinds[b] in OURS else "peer"
                pair_rows.append({"subject": a, "other": b, "kind": kind, "dtype": dtype,
                                  "options": option_name, **_error_columns(errors)})
        for case in EDGE_CASES:
            for subject in runnable:
                passed, why, _ = run_edge_case(case, subject.make, dtype)
                edge_rows.append({"case": case.name, "subject": subject.label,
                                  "kind": subject.kind, "dtype": dtype, "passed": passed,
                                  "detail": why})
    return CheckReport(pd.DataFrame(rows), pd.DataFrame(pair_rows), pd.DataFrame(edge_rows),
                       skipped)
