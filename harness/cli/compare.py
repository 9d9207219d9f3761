"""``adam-bench compare BASE NEW``: per cell the NEW/BASE time ratio with its interval and
p-value; ``--fail-above`` gates a regression."""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from . import options

__all__ = ["add_parser", "cmd_compare"]


def add_parser(sub) -> None:
    """The ``compare`` subcommand."""
    p = sub.add_parser("compare", help="two bench tables (or pytest-benchmark JSONs): each "
                                       "cell's NEW/BASE time ratio, interval and test; "
                                       "--fail-above gates a regression")
    p.add_argument("base", help="the baseline: a bench table (.csv/.json) or a "
                                "pytest-benchmark --benchmark-json file")
    p.add_argument("new", help="the run to judge, in either format")
    p.add_argument("--fail-above", type=options.positive_float, metavar="RATIO",
                   help="exit 1 if a cell is significantly slower than RATIO (e.g. 1.10)")
    p.add_argument("--confidence", type=options.fraction, default=0.95,
                   help="of the interval; a change needs p < 1 - this (default 0.95)")
    p.add_argument("--per-roofline", action="store_true",
                   help="each repeat over the roofline's of the same round: the machine's "
                        "bandwidth drift between the runs cancels (bench tables)")
    p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="every cell, not only the changed ones")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from ..bench.compare import compare_runs, load_run

    try:
        base, new = load_run(args.base), load_run(args.new)
        result = compare_runs(base, new, confidence=args.confidence,
                              per_roofline=args.per_roofline)
    except ValueError as exc:
        print(f"adam-bench compare: error: {exc}", file=sys.stderr)
        return 2
    if result.cells.empty:
        print(f"adam-bench compare: error: {args.base} and {args.new} have no measured cell "
              "in common", file=sys.stderr)
        return 2
    print("\n".join(_compare_lines(result, args)))
    if args.fail_above is None:
        return 0
    slower = result.slower(args.fail_above)
    if slower.empty:
        print(f"gate: PASS (no cell significantly slower than {args.fail_above:g}x)")
        return 0
    print(f"gate: FAIL ({len(slower)} cells significantly slower than {args.fail_above:g}x)")
    print("\n".join(f"  slower: {_cell_name(r)}: {_ratio_text(r)}"
                    for r in slower.to_dict("records")))
    return 1


def _cell_name(cell: dict) -> str:
    from .summary import size_name

    options = " amsgrad" if cell["amsgrad"] else ""
    state = "" if cell["state"] == "full" else f"[{cell['state']}]"
    return (f"{cell['label']}{state} {cell['workload']} {size_name(int(cell['elements']))} "
            f"{cell['dtype']}{options}")


def _ratio_text(cell: dict) -> str:
    if pd.isna(cell["p_value"]):
        return f"{cell['ratio']:.3f}x (one repeat a side: no interval, no test)"
    if cell["ci_high"] == float("inf"):
        return f"{cell['ratio']:.3f}x ({cell['repeats']} repeats: too few for the interval)"
    return (f"{cell['ratio']:.3f}x [{cell['ci_low']:.3f}, {cell['ci_high']:.3f}], "
            f"p={cell['p_value']:.2g}")


def _compare_lines(result, args) -> list[str]:
    """Counts, how the runs differ, and the changed cells (every cell with --verbose)."""
    from .summary import fit

    cells = result.cells
    changes = cells["change"].value_counts()
    what = "time over the roofline's" if args.per_roofline else "step time"
    lines = [f"compare: {len(cells)} cells in both runs: {changes.get('slower', 0)} slower, "
             f"{changes.get('faster', 0)} faster, {int((cells['change'] == '').sum())} "
             "unchanged",
             fit(f"  NEW/BASE {what}, Hodges-Lehmann ratio and {args.confidence:.0%} interval;"
                 f" changed: interval excludes 1 and Mann-Whitney p < {1 - args.confidence:.2g}")]
    if result.only_base or result.only_new:
        lines.append(f"  cells in one run only: {result.only_base} in BASE, "
                     f"{result.only_new} in NEW")
    lines += [fit(f"  runs differ: {field}: {a} -> {b}") for field, a, b in result.differences]
    shown = cells if args.verbose else cells[cells["change"] != ""]
    lines += [fit(f"  {row['change'] or 'same':<6} {_cell_name(row)}: {_ratio_text(row)}")
              for row in shown.sort_values("ratio", ascending=False).to_dict("records")]
    return lines
