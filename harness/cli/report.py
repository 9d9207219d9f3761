"""``adam-bench report``: a pytest-benchmark JSON file as the sweep's tables and plot."""
from __future__ import annotations

import sys
from pathlib import Path

from .summary import print_table

__all__ = ["add_parser", "cmd_report"]


def add_parser(sub) -> None:
    """The ``report`` subcommand."""
    p = sub.add_parser("report", help="turn a pytest-benchmark --benchmark-json file into the "
                                      "sweep's tables and plot; --html: one page from a "
                                      "results folder")
    p.add_argument("json", nargs="?", help="file written by pytest --benchmark-json=FILE")
    p.add_argument("--html", nargs="?", const="results/local", metavar="RESULTS_DIR",
                   help="write one self-contained HTML page (plots, tables, verdicts, "
                        "metadata) of the tables in RESULTS_DIR (default results/local)")
    p.add_argument("--out", help="path stem (default results/local/pytest-benchmark-report); "
                                 "with --html the page (default RESULTS_DIR/report.html)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    if (args.json is None) == (args.html is None):
        print("adam-bench report: error: give a pytest-benchmark JSON file or --html "
              "[RESULTS_DIR], not both", file=sys.stderr)
        return 2
    if args.html is not None:
        return _html_report(args)
    return _benchmark_report(args)


def _html_report(args) -> int:
    from ..core.results_io import atomic_write_text
    from .html_report import html_report

    try:
        page = html_report(args.html)
    except ValueError as exc:
        print(f"adam-bench report: error: {exc}", file=sys.stderr)
        return 2
    path = Path(args.out or Path(args.html) / "report.html")
    atomic_write_text(path, page)
    print(f"report: {path} ({len(page) / 2**20:.1f} MiB, self-contained)")
    return 0


def _benchmark_report(args) -> int:
    from ..bench.report import benchmark_json_to_table
    from ..core.plots import plot_throughput
    from ..core.results_io import write_tables
    from ..core.tables import summary

    args.out = args.out or "results/local/pytest-benchmark-report"

    if Path(args.out).with_suffix(".json").resolve() == Path(args.json).resolve():
        print(f"report: --out {args.out} would overwrite {args.json}; choose another --out",
              file=sys.stderr)
        return 2
    df = benchmark_json_to_table(args.json)
    write_tables(df, args.out, markdown=summary(df))
    print_table(summary(df).drop(columns=["note"], errors="ignore"),
                 f"pytest-benchmark results from {args.json}")
    if not args.no_plot:
        print(f"\nplot: {plot_throughput(df, Path(args.out).with_suffix('.png'))}")
    print(f"tables: {args.out}.csv/.json/.md")
    return 0
