"""``adam-bench``: list backends, check agreement, sweep throughput, report, select, demo.

With no subcommand it runs the tour: backends, a check, and the default sweep, writing
everything to results/local/ (a few minutes on a 2-core laptop), and ends with a verdict per
subject (harness.cli.summary); --verbose prints the full tables as well."""
from __future__ import annotations

import argparse
import sys

from . import backends, bench, check, compare, demo, gpu_report, plan, report, select
from .options import Parser
from .tour import TOUR_OPTIONS, cmd_tour

__all__ = ["build_parser", "main", "COMMANDS"]


#: Every subcommand, in the order ``adam-bench --help`` lists them.
COMMANDS = (backends, check, bench, report, compare, select, demo, gpu_report, plan)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="adam-bench",
        description="Check and measure interchangeable Adam backends. With no subcommand: "
                    "list backends, run the agreement check, then the default throughput "
                    "sweep (a few minutes), writing tables and plots to results/local/.")
    parser.set_defaults(func=cmd_tour, tour=False, tour_options=TOUR_OPTIONS)
    parser.add_argument("--verbose", action="store_true",
                        help="print the full Markdown tables, not only the verdicts")
    parser.add_argument("--no-peers", action="store_true",
                        help="leave the peers out of the check and the sweep")
    parser.add_argument("--gpu-emulation", action="store_true",
                        help="the check also judges the GPU kernels emulated and simulated on "
                             "the CPU (a few minutes more)")
    sub = parser.add_subparsers(title="subcommands")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
