"""A test kit for any Adam backend, ours or a plugin's: ``adam-bench check`` as pytest helpers.

    from harness.testing import assert_agrees_with_reference, assert_refuses_bad_input

    def test_my_backend():
        assert_agrees_with_reference("mine")      # a registered name or a Backend instance
        assert_refuses_bad_input("mine")

Each helper runs the same code as ``adam-bench check`` (``harness.check.run_check``) and
raises AssertionError listing every failure, worst first: the subject, dtype, option set,
step and quantity of the worst error and its size against the tolerance, like
``numpy.testing``. The report is returned for tests that want to look further.
"""
from __future__ import annotations

from backends import Backend, get_backend

from .check import CheckReport, run_check
from .check.agreement import OPTION_SETS
from .check.bad_input import BAD_INPUT_CASES
from .check.edge_cases import EDGE_CASES
from .core.problems import MIXED_SHAPES
from .subjects import backend_subject

__all__ = ["assert_agrees_with_reference", "assert_refuses_bad_input"]


def _backend(backend: Backend | str) -> Backend:
    return get_backend(backend) if isinstance(backend, str) else backend


def _by_name(names, known: dict, what: str) -> list:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {', '.join(known)}")
    return [known[n] for n in names]


def _raise_failures(report: CheckReport, backend: Backend, what: str) -> CheckReport:
    failures = report.failures()
    if failures:
        shown = "\n".join(f"  {line}" for line in failures[:20])
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        raise AssertionError(f"backend {backend.name!r} {what} ({len(failures)} failures):\n"
                             f"{shown}{more}")
    return report


def assert_agrees_with_reference(backend: Backend | str, *, dtypes=("float32", "float64"),
                                 options=tuple(OPTION_SETS), steps: int = 100, seed: int = 0,
                                 shapes=MIXED_SHAPES, edge_cases: bool = True) -> CheckReport:
    """Step ``backend`` and the float64 reference together on seeded problems of mixed
    tensor sizes, for every dtype x option set (names of ``harness.check.agreement.OPTION_SETS``:
    plain, l2, adamw, amsgrad, maximize), comparing params and every state entry after each
    step; then the edge cases of ``harness.check.edge_cases`` (exact expectations: NaN/Inf
    gradients, overflowing ones, lr=0, ...) unless ``edge_cases=False``."""
    backend = _backend(backend)
    _by_name(options, OPTION_SETS, "option sets")
    report = run_check([backend_subject(backend)], dtypes=dtypes, steps=steps, seed=seed,
                       shapes=shapes, options=options,
                       edge_cases=EDGE_CASES if edge_cases else [], bad_input=[])
    return _raise_failures(report, backend, "disagrees with the float64 reference")


def assert_refuses_bad_input(backend: Backend | str, cases=None) -> CheckReport:
    """Every bad input of ``harness.check.bad_input`` (or the ``cases`` named) is refused with the
    expected error, before any array changes. For CPU backends (the cases use NumPy)."""
    backend = _backend(backend)
    if backend.device != "cpu":
        raise ValueError(f"the bad-input cases use NumPy arrays: backend {backend.name!r} runs "
                         f"on {backend.device!r}")
    known = {case.name: case for case in BAD_INPUT_CASES}
    chosen = BAD_INPUT_CASES if cases is None else _by_name(cases, known, "bad-input cases")
    report = run_check([backend_subject(backend)], dtypes=(), options=(), edge_cases=[],
                       bad_input=chosen)
    return _raise_failures(report, backend, "mishandles bad input")
