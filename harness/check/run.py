"""``adam-bench check``: agreement of every subject with the reference, pairwise, on edge
cases, (CPU backends) refusal of bad input, and the low-precision formats (the CPU backends
and the GPU backends that run here). Our backends (plugins included) and the emulated GPU
kernels decide the verdict; the peers' rows are shown beside them, and the
int8 peers' errors in a block of their own (full-precision tolerances do not apply to
int8 moments). An option or dtype a peer does not offer is a row that says so
(``note``), never a run of something else under its name. ``harness.testing`` runs the
same code for one backend inside a pytest test."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from backends import AdamConfig

from ..core.problems import MIXED_SHAPES, random_problem
from ..core.steppers import UnsupportedOption
from ..subjects import Subject
from ..subjects.peers import describe_failure
from .agreement import OPTION_SETS, Errors, pairwise, reference_steps, run_with_reference
from .bad_input import BAD_INPUT_CASES, run_bad_input_case
from .edge_cases import EDGE_CASES, run_edge_case
from .format_agreement import format_agreement, stochastic_rounding_bias
from .int8_agreement import SIMULATED, int8_agreement, simulated_int8_agreement

__all__ = ["CheckReport", "run_check", "OURS", "EIGHT_BIT_EXTRA_SHAPES"]

#: Subject kinds that decide the verdict.
OURS = ("backend", "emulated")
#: Added to the int8 peers' problems: a tensor that both keep int8 moments for
#: (bitsandbytes from 4096 elements, torchao from 4096 in multiples of 256).
EIGHT_BIT_EXTRA_SHAPES = [(64, 128)]


@dataclass
class CheckReport:
    agreement: pd.DataFrame
    pairs: pd.DataFrame
    edges: pd.DataFrame
    skipped: pd.DataFrame
    bad_input: pd.DataFrame
    int8_peers: pd.DataFrame = field(default_factory=pd.DataFrame)
    int8: pd.DataFrame | None = None  # int8 state vs the int8 reference
    formats: pd.DataFrame | None = None  # bf16/fp16 formats vs the rounding reference
    rounding_bias: pd.DataFrame | None = None  # stochastic rounding's mean

    @property
    def ok(self) -> bool:
        """True when every backend of ours (and emulated GPU kernel) is within tolerance
        everywhere."""
        return not self.failures()

    def failures(self) -> list[str]:
        """One line per failed row of ours (peers are not judged), worst first."""
        ours = lambda df: df[df["kind"].isin(OURS)]
        failed = lambda df, column: df[~df[column].astype(bool)]
        lines = []
        for r in failed(ours(self.agreement), "within_tolerance").sort_values(
                "tolerance_ratio", ascending=False).itertuples():
            lines.append(f"{r.subject} {r.dtype} {r.options}: {r.worst_quantity} off the float64 "
                         f"reference by {r.tolerance_ratio:.3g}x its tolerance at step "
                         f"{r.worst_step} (max abs err {r.max_abs_err:.3g})")
        for r in failed(ours(self.pairs), "within_tolerance").itertuples():
            lines.append(f"{r.subject} vs {r.other} {r.dtype} {r.options}: final params differ "
                         f"by {r.tolerance_ratio:.3g}x the sum of their tolerances")
        for r in failed(ours(self.edges), "passed").itertuples():
            lines.append(f"{r.subject} {r.dtype} edge case {r.case}: {r.detail}")
        for r in failed(self.bad_input, "passed").itertuples():
            lines.append(f"{r.subject} bad input {r.case}: {r.detail}")
        judged = self.int8.dropna(subset=["within_tolerance"]) if self.int8 is not None else None
        for r in ([] if judged is None else failed(judged, "within_tolerance").itertuples()):
            lines.append(f"{r.subject} int8 state {r.options}: {r.codes_off_boundary} codes off "
                         f"a decision boundary, scale error {r.max_scale_rel_err:.3g}, params "
                         f"{r.param_tolerance_ratio:.3g}x their tolerance")
        judged = self.formats.dropna(subset=["within_tolerance"]) \
            if self.formats is not None else None
        for r in ([] if judged is None else failed(judged, "within_tolerance").itertuples()):
            lines.append(f"{r.subject} format {r.format}: params {r.param_spacings:.3g} spacings "
                         f"off the reference ({r.param_exact_fraction:.3f} exact), moments "
                         f"{r.moment_spacings:.3g}, same bits as the first backend: "
                         f"{r.bits_equal_first}")
        bias = self.rounding_bias if self.rounding_bias is not None else pd.DataFrame()
        for r in ([] if bias.empty else failed(bias, "unbiased").itertuples()):
            lines.append(f"{r.subject} stochastic rounding biased: p = {r.min_p_value:.3g}, "
                         f"{r.max_bias_spacings:.3g} spacings")
        return lines


def _error_columns(errors) -> dict:
    return {"max_abs_err": errors.max_abs, "max_rel_err": errors.max_rel,
            "max_ulp_err": errors.max_ulp, "worst_step": errors.worst_step,
            "worst_quantity": errors.worst_quantity, "tolerance_ratio": errors.worst_ratio,
            "within_tolerance": errors.within_tolerance}


def run_check(subjects: list[Subject], dtypes=("float32", "float64"), steps: int = 100,
              seed: int = 0, shapes=MIXED_SHAPES, progress=None, options=tuple(OPTION_SETS),
              edge_cases=EDGE_CASES, bad_input=BAD_INPUT_CASES) -> CheckReport:
    """Run every runnable subject on every dtype x option set, the edge cases, and the
    bad-input cases (backends on the CPU)."""
    runnable = [s for s in subjects if s.make is not None]
    skipped = pd.DataFrame([{"subject": s.label, "kind": s.kind, "reason": s.reason}
                            for s in subjects if s.make is None],
                           columns=["subject", "kind", "reason"])
    rows, pair_rows, edge_rows, int8_peer_rows = [], [], [], []
    kinds = {s.label: s.kind for s in runnable}
    for dtype in dtypes:
        for option_name in options:
            cfg = AdamConfig(**OPTION_SETS[option_name])
            problems, references = _problems(runnable, shapes, dtype, steps, seed, cfg)
            trajectories = {}
            for subject in runnable:
                full = subject.state == "full"
                row = {"subject": subject.label, "kind": subject.kind, "dtype": dtype,
                       "options": option_name, "steps": steps, "note": ""}
                try:
                    trajectory = run_with_reference(subject.make, problems[full], cfg,
                                                    references[full])
                except UnsupportedOption as exc:
                    row["note"] = f"not supported: {exc}"
                except Exception as exc:  # a peer's library failing: shown, the run goes on
                    if subject.kind in OURS:
                        raise
                    row["note"] = f"failed: {describe_failure(exc)}"
                else:
                    row.update(_error_columns(trajectory.errors))
                    if full:
                        trajectories[subject.label] = trajectory
                    else:
                        row.pop("within_tolerance")
                (rows if full else int8_peer_rows).append(row)
                if progress:
                    progress()
            for a, b, errors in pairwise(trajectories, np.dtype(dtype), steps):
                kind = "backend" if kinds[a] in OURS and kinds[b] in OURS else "peer"
                pair_rows.append({"subject": a, "other": b, "kind": kind, "dtype": dtype,
                                  "options": option_name, **_error_columns(errors)})
        for case in edge_cases:
            for subject in runnable:
                if subject.state != "full":
                    continue
                try:
                    passed, why, _ = run_edge_case(case, subject.make, dtype)
                except UnsupportedOption:
                    continue
                except Exception as exc:
                    if subject.kind in OURS:
                        raise
                    passed, why = False, f"failed: {describe_failure(exc)}"
                edge_rows.append({"case": case.name, "subject": subject.label,
                                  "kind": subject.kind, "dtype": dtype, "passed": passed,
                                  "detail": why})
    bad_rows = [{"case": case.name, "subject": s.label, "passed": not why, "detail": why}
                for s in runnable if s.backend is not None and s.device == "cpu"
                for case in bad_input for why in [run_bad_input_case(case, s.backend)]]
    agreement = pd.DataFrame(rows, columns=_AGREEMENT_COLUMNS)
    # missing where a peer does not offer an option
    agreement["within_tolerance"] = agreement["within_tolerance"].astype("boolean")
    ours = [s.label for s in subjects if s.kind == "backend"]
    int8 = int8_agreement(ours, seed=seed) if "float32" in dtypes and ours else None
    simulated = [name for name in SIMULATED if f"{name} (emulated)" in kinds]
    if int8 is not None and simulated:
        int8 = pd.concat([int8, *(simulated_int8_agreement(name, seed=seed)
                                  for name in simulated)], ignore_index=True)
    # the CPU backends (a row saying so where one lacks the formats) and the GPU backends
    # that step them, where they run
    low_precision = [s.backend for s in subjects if s.kind == "backend"
                     and s.backend is not None
                     and (s.device == "cpu" or s.backend.supports_low_precision)]
    formats = format_agreement(low_precision, seed=seed) \
        if "float32" in dtypes and low_precision else None
    bias = stochastic_rounding_bias(low_precision) if formats is not None else None
    return CheckReport(agreement, pd.DataFrame(pair_rows, columns=_PAIR_COLUMNS),
                       pd.DataFrame(edge_rows, columns=_EDGE_COLUMNS), skipped,
                       pd.DataFrame(bad_rows, columns=["case", "subject", "passed", "detail"]),
                       pd.DataFrame(int8_peer_rows, columns=_INT8_PEER_COLUMNS), int8,
                       formats, bias)


def _problems(runnable, shapes, dtype, steps, seed, cfg) -> tuple[dict, dict]:
    """By "full state or not" (the int8 peers' problem adds a tensor they encode): the
    problem of the subjects of that kind, and its reference steps computed once where
    several subjects share them (None: each run computes its own, as they come)."""
    users = Counter(s.state == "full" for s in runnable)
    problems = {full: random_problem(list(shapes) + ([] if full else EIGHT_BIT_EXTRA_SHAPES),
                                     dtype, steps, seed) for full in users}
    references = {full: list(reference_steps(problems[full], cfg)) if count > 1 else None
                  for full, count in users.items()}
    return problems, references


_ERROR_COLUMNS = list(_error_columns(Errors()))
_AGREEMENT_COLUMNS = ["subject", "kind", "dtype", "options", "steps", *_ERROR_COLUMNS, "note"]
_INT8_PEER_COLUMNS = [c for c in _AGREEMENT_COLUMNS if c != "within_tolerance"]
_PAIR_COLUMNS = ["subject", "other", "kind", "dtype", "options", *_ERROR_COLUMNS]
_EDGE_COLUMNS = ["case", "subject", "kind", "dtype", "passed", "detail"]
