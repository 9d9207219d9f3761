"""``adam-bench`` with no subcommand: the backends, a check, then the default sweep,
ending with a verdict per subject."""
from __future__ import annotations

from . import bench, check
from .options import Parser
from .backends import cmd_backends

__all__ = ["cmd_tour", "STEPS", "TOUR_OPTIONS"]


#: The tour's steps, each parsed with its own subcommand's options.
STEPS = {"check": check, "bench": bench}

#: The tour's own options for its steps: a sweep of flat tensors with fewer, shorter
#: repeats than ``bench``'s defaults, so a first run takes about a minute
#: (``adam-bench bench`` measures everything).
TOUR_OPTIONS = {"bench": ["--models", "none", "--repeats", "7", "--max-seconds", "0.3"]}


def cmd_tour(args) -> int:
    from .summary import verdict_lines

    def step_args(name: str):
        parser = Parser(prog="adam-bench")
        STEPS[name].add_parser(parser.add_subparsers())
        step = parser.parse_args([name] + args.tour_options.get(name, []))
        step.verbose, step.tour, step.gpu_emulation = args.verbose, True, args.gpu_emulation
        step.no_peers = step.no_peers or args.no_peers
        return step

    print("# adam-bench: backends, agreement check, throughput sweep (tables in results/local/)")
    cmd_backends(args)
    report = check.check_and_print(step_args("check"))
    df = bench.bench_and_print(step_args("bench")) if report.ok else None
    print()
    print("\n".join(verdict_lines(report, df)))
    return 0 if report.ok else 1
