"""``adam-bench gpu-report``: on a GPU, the GPU tests, the formats, the sweep and the check."""
from __future__ import annotations

import sys

from . import options

__all__ = ["add_parser", "cmd_gpu_report"]


def add_parser(sub) -> None:
    """The ``gpu-report`` subcommand."""
    p = sub.add_parser("gpu-report", help="on a GPU: the GPU tests, the training formats, "
                                          "the GPU sweep (2^12..2^28) and the check, written "
                                          "to results/local/*-<gpu>.*")
    p.add_argument("--stages", type=options.gpu_report_stages,
                   default=["tests", "formats", "sweep", "check"],
                   help="comma-separated stages to run (default: tests,formats,sweep,check)")
    p.add_argument("--sizes", type=options.sizes,
                   help="element counts of the sweep and the formats instead of theirs "
                        "(2^12..2^28:2 and 2^16..2^28:4)")
    p.add_argument("--repeats", type=options.positive_int, default=15,
                   help="timed batches per cell (default 15)")
    p.add_argument("--max-seconds", type=options.positive_float, default=2.0,
                   help="time budget per cell, at least 3 batches run (default 2.0)")
    p.set_defaults(func=cmd_gpu_report)


def cmd_gpu_report(args) -> int:
    from ..gpu.report import gpu_unavailable_reason, run_gpu_report

    reason = gpu_unavailable_reason()
    if reason:
        print(f"gpu-report: needs a GPU; none usable here ({reason})", file=sys.stderr)
        return 1
    return run_gpu_report(repeats=args.repeats, max_seconds=args.max_seconds,
                          stages=tuple(args.stages), sizes=args.sizes)
