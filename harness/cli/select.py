"""``adam-bench select``: the backend ``backend="auto"`` picks for a workload, and why."""
from __future__ import annotations

import sys

import pandas as pd

from . import options

__all__ = ["add_parser", "cmd_select"]


def add_parser(sub) -> None:
    """The ``select`` subcommand."""
    p = sub.add_parser("select", help="the fastest available backend for a workload, from the "
                                      "table backend=\"auto\" reads (or --results)")
    p.add_argument("--sizes", type=options.sizes, help='tensor sizes, e.g. "1000,2^20"')
    p.add_argument("--model", type=options.model_name,
                   help="a model-shaped workload: gpt2-small, bert-base, resnet50")
    p.add_argument("--scale", type=options.scale, help="shrink the model by this factor")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amsgrad", action="store_true")
    p.add_argument("--results", help="a bench table (CSV/JSON) to choose from")
    p.set_defaults(func=cmd_select)


def cmd_select(args) -> int:
    from backends.auto import choose_backend

    from ..bench.workloads import model_workload
    from ..core.results_io import read_table

    if args.model:
        workload = model_workload(args.model, scale=args.scale)
        sizes = [int(pd.Series(s).prod()) for s in workload.shapes]
    elif args.sizes:
        sizes = args.sizes
    else:
        print("select: give --sizes or --model", file=sys.stderr)
        return 2
    table = read_table(args.results) if args.results else None  # else where "auto" reads
    try:
        choice = choose_backend(sizes, dtype=args.dtype, device=args.device, table=table,
                                amsgrad=args.amsgrad)
    except ValueError as exc:
        print(f"select: {exc}", file=sys.stderr)
        return 2
    print(choice.reason)
    return 0
