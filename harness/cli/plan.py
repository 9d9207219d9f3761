"""``adam-bench plan``: sharded Adam on paper, per-rank memory and step time for N ranks
on a given link, from the measured sharded bench."""
from __future__ import annotations

import sys

from ..core.results_io import read_table, write_tables
from . import options
from .summary import print_table

__all__ = ["add_parser", "cmd_plan"]


def add_parser(sub) -> None:
    """The ``plan`` subcommand."""
    p = sub.add_parser("plan", help="sharded Adam on paper: per-rank memory and step time for "
                                    "N ranks on a given link, from the measured sharded bench")
    p.add_argument("--params", type=options.positive_floats, default="124e6,7e9,70e9",
                   help="model sizes (default: 124e6,7e9,70e9: GPT-2, 7B, 70B)")
    p.add_argument("--ranks", type=options.ranks, default="8,64,512",
                   help="rank counts (default 8,64,512)")
    p.add_argument("--link-gbps", type=options.positive_float, default=100.0,
                   help="link bandwidth per rank, gigabits/s (default 100)")
    p.add_argument("--latency-us", type=options.non_negative_float, default=10.0,
                   help="latency per message, microseconds (default 10)")
    p.add_argument("--results", default="results/bench/sharded-1-2-ranks.csv",
                   help="the sharded bench table (adam-bench bench --ranks 1,2)")
    p.add_argument("--out", default="results/local/plan",
                   help="path stem (default results/local/plan)")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args) -> int:
    from ..sharded.plan import model_check, plan_table

    try:
        table = read_table(args.results)
        check = model_check(table)
        plan = plan_table(args.params, args.ranks, args.link_gbps, args.latency_us, table)
    except (OSError, ValueError, KeyError) as exc:
        print(f"plan: {exc}", file=sys.stderr)
        return 2
    print_table(check.round(3), f"The model against the measured runs ({args.results})")
    print_table(plan.round(3), f"Predicted per rank, float32, {args.link_gbps:g} Gb/s link, "
                         f"{args.latency_us:g} us latency")
    write_tables(plan, args.out)
    print(f"\ntables: {args.out}.csv/.json/.md")
    return 0
