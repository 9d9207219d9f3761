"""``adam-bench check``: agreement with the float64 reference, pairs, edge cases, bad
input and int8 state; exit status 1 when one of our backends is out of tolerance."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import options
from .summary import print_table

__all__ = ["add_parser", "cmd_check", "check_and_print"]


def add_parser(sub) -> None:
    """The ``check`` subcommand."""
    p = sub.add_parser("check", help="agreement with the float64 reference, pairwise, edge cases,"
                                     " bad input;"
                                     " exits 1 if any of our backends is out of tolerance")
    p.add_argument("--steps", type=options.positive_int, default=100,
                   help="Adam steps per problem (default 100)")
    p.add_argument("--backends", type=options.backend_names,
                   help="comma-separated backend names (default: all)")
    p.add_argument("--dtypes", type=options.dtypes, default="float32,float64",
                   help="default: float32,float64")
    p.add_argument("--seed", type=options.non_negative_int, default=0,
                   help="problem seed (default 0)")
    p.add_argument("--no-peers", action="store_true", help="leave out the peers' rows")
    p.add_argument("--peers", type=options.peer_names,
                   help="comma-separated peer labels (default: all; see docs/peers.md)")
    p.add_argument("--gpu-emulation", action="store_true", default=argparse.SUPPRESS,
                   help="also judge the GPU kernels' arithmetic emulated on the CPU and "
                        "numba-cuda's int8 kernel under the CUDA simulator (a few minutes)")
    p.add_argument("--out", default="results/local/check",
                   help="table path stem (default results/local/check)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", **options.VERBOSE)
    p.add_argument("--ranks", type=options.ranks, help=options.RANKS_HELP)
    p.set_defaults(func=cmd_check)


def cmd_check(args) -> int:
    if args.ranks:
        from .sharded import cmd_check as sharded

        return sharded(args)
    return 0 if check_and_print(args).ok else 1


def check_and_print(args):
    """Run the check, write its tables, print what it found; the CheckReport."""
    from tqdm import tqdm

    from ..check import run_check
    from ..core.results_io import write_tables
    from ..subjects import collect_subjects
    from .summary import check_lines, fit

    subjects = collect_subjects(args.backends, peers=options.peers_option(args), emulated=args.gpu_emulation)
    dtypes = args.dtypes
    runnable = sum(s.make is not None for s in subjects)
    with tqdm(total=runnable * len(dtypes) * 5, desc="adam-bench check", unit="run",
              disable=args.quiet) as bar:
        report = run_check(subjects, dtypes=dtypes, steps=args.steps, seed=args.seed,
                           progress=bar.update)
    out = Path(args.out)
    write_tables(report.agreement, out)
    write_tables(report.pairs, out.with_name(out.name + "-pairs"))
    write_tables(report.edges, out.with_name(out.name + "-edge-cases"))
    write_tables(report.bad_input, out.with_name(out.name + "-bad-input"))
    if not report.int8_peers.empty:
        write_tables(report.int8_peers, out.with_name(out.name + "-int8-peers"))
    if report.int8 is not None:
        write_tables(report.int8, out.with_name(out.name + "-int8"))
    if report.formats is not None:
        write_tables(report.formats, out.with_name(out.name + "-formats"))
        write_tables(report.rounding_bias, out.with_name(out.name + "-rounding-bias"))
    if args.verbose:
        _print_check_tables(report, args.steps)
    print("\n".join(check_lines(report)))
    if not report.int8_peers.empty:
        print(fit(f"  int8 peers (apart, no verdict): "
                  f"{', '.join(report.int8_peers['subject'].unique())}: {out}-int8-peers.md"))
    if report.int8 is not None:
        from .summary import int8_lines

        print("\n".join(int8_lines(report.int8)))
    if report.formats is not None:
        from .summary import format_lines

        print("\n".join(format_lines(report.formats, report.rounding_bias)))
    print(f"tables: {out}.csv/.json/.md and {out.name}-*: pairs, edge cases, bad input, "
          "int8, formats")
    return report


def _print_check_tables(report, steps: int) -> None:
    shown = ["subject", "kind", "dtype", "options", "max_abs_err", "max_rel_err", "max_ulp_err",
             "worst_step", "worst_quantity", "tolerance_ratio", "within_tolerance", "note"]
    print_table(report.agreement[shown], f"Agreement with the float64 reference ({steps} "
                 "steps; tolerance_ratio <= 1 passes; see harness/check/tolerances.py)")
    if not report.int8_peers.empty:
        print_table(report.int8_peers[[c for c in shown if c in report.int8_peers]],
                     "int8 peers against the float64 reference (no verdict: their moments are "
                     "int8 codes; tensors under 4096 elements keep float32 moments)")
    pairs = report.pairs
    if not pairs.empty:  # none with one subject
        failed_pairs = pairs[~pairs["within_tolerance"] & (pairs["kind"] == "backend")]
        print_table(failed_pairs if not failed_pairs.empty else
                     pairs.groupby(["kind", "dtype"])["tolerance_ratio"].max().reset_index(),
                     "Pairwise (worst tolerance ratio per group)" if failed_pairs.empty
                     else "Pairs out of tolerance")
    edge = report.edges.pivot_table(index=["case", "dtype"], columns="subject",
                                    values="passed", aggfunc="all")
    edge = edge.astype("boolean").reset_index()  # blank: an option the peer does not offer
    print_table(edge, "Edge cases (True = the exact expectation holds)")
    details = report.edges[~report.edges["passed"]]
    if not details.empty:
        print_table(details[["case", "subject", "dtype", "detail"]], "Edge-case differences")
    bad = report.bad_input[~report.bad_input["passed"].astype(bool)]
    if not bad.empty:
        print_table(bad, "Bad input not refused properly")
    if report.int8 is not None:
        print_table(report.int8, "int8 state (state_dtype='int8') against the int8 "
                     "float64 reference, step by step (codes may differ only at a boundary)")
    if report.formats is not None:
        print_table(report.formats, "Low-precision formats against the float64 reference "
                    "that models each rounding, step by step (harness/check/format_agreement.py)")
        print_table(report.rounding_bias, "Stochastic rounding's mean (t-test per update size)")
    if not report.skipped.empty:
        print_table(report.skipped, "Not run here")
