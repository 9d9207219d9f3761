"""``adam-bench check``: agreement with the float64 reference, pairs, edge cases, bad
input and int8 state (``run_check`` in ``run``, the parts beside it)."""
from .run import EIGHT_BIT_EXTRA_SHAPES, OURS, CheckReport, run_check

__all__ = ["CheckReport", "run_check", "OURS", "EIGHT_BIT_EXTRA_SHAPES"]
