"""``adam-bench bench``: the throughput sweep with the roofline timed beside it, its
tables, plot, the tables against numba, and the table ``backend="auto"`` reads."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from . import options
from .summary import print_table

__all__ = ["add_parser", "cmd_bench", "bench_and_print", "sweep_config"]


def add_parser(sub) -> None:
    """The ``bench`` subcommand."""
    p = sub.add_parser("bench", help="throughput sweep over backends x dtypes x sizes, with the "
                                     "roofline measured in the same run")
    p.add_argument("--sizes", type=options.sizes,
                   help='flat tensor sizes: "2^10..2^24:2" (default), "4096,2^20"')
    p.add_argument("--backends", type=options.backend_names,
                   help="comma-separated backend names (default: all)")
    p.add_argument("--dtypes", type=options.dtypes, default="float32", help="default: float32")
    p.add_argument("--amsgrad", action="store_true", help="also measure amsgrad (36 B/element)")
    p.add_argument("--models", type=options.model_names,
                   default="gpt2-small,bert-base,resnet50",
                   help='model-shaped workloads, or "none" (default: all three)')
    p.add_argument("--model-elements", type=options.positive_int, default=2**20,
                   help="shrink each model to about this many elements (default 2^20)")
    p.add_argument("--scale", type=options.scale,
                   help="shrink models by this factor instead (1 = full)")
    p.add_argument("--repeats", type=options.positive_int, default=15,
                   help="timed batches per cell (default 15)")
    p.add_argument("--max-seconds", type=options.positive_float, default=1.0,
                   help="time budget per cell, at least 3 batches run (default 1.0)")
    p.add_argument("--python-max-size", type=options.non_negative_int, default=2**16,
                   help="skip pure Python above this many elements (default 65536)")
    p.add_argument("--no-peers", action="store_true", help="leave out the peers' rows")
    p.add_argument("--peers", type=options.peer_names,
                   help="comma-separated peer labels (default: all; see README)")
    p.add_argument("--format", type=options.format_names,
                   help="instead: training formats, each timed with the fp32 step, its "
                        "own roofline and the peers in it (fp32, bf16, bf16-fp32-state, "
                        "bf16-sr, bf16-kahan, bf16-master, fp16-master; see "
                        "docs/low-precision.md)")
    p.add_argument("--state", choices=["int8"],
                   help="also measure int8 state (float32; rows labelled NAME[int8])")
    p.add_argument("--resume", action="store_true", help="skip cells already in OUT.csv")
    p.add_argument("--allow-large-memory", action="store_true",
                   help="run a sweep whose largest cell needs more memory than is available")
    p.add_argument("--out", default="results/local/bench",
                   help="path stem (default results/local/bench)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", **options.VERBOSE)
    p.add_argument("--ranks", type=options.ranks, help=options.RANKS_HELP)
    p.set_defaults(func=cmd_bench)


def sweep_config(args):
    from ..bench.sweep import SweepConfig

    cfg = SweepConfig()
    if args.sizes:
        cfg.sizes = args.sizes
    cfg.dtypes = args.dtypes
    cfg.amsgrad = args.amsgrad
    cfg.models = args.models
    cfg.scale = args.scale
    cfg.model_elements = args.model_elements
    cfg.repeats = args.repeats
    cfg.max_seconds = args.max_seconds
    cfg.python_max_size = args.python_max_size
    if args.state:
        cfg.states = ["full", args.state]
    return cfg


def cmd_bench(args) -> int:
    if args.format:
        from ..bench.formats import run_format_bench

        run_format_bench(args.format, args.sizes or [2**e for e in range(14, 27, 4)],
                         args.backends or ["numba"], args.out, repeats=args.repeats,
                         max_seconds=args.max_seconds, peers=not args.no_peers)
        print(f"tables: {args.out}.csv/.json/.md")
        return 0
    if args.ranks:
        from .sharded import cmd_bench as sharded

        return sharded(args)
    refusal = options.oversized_sweep(sweep_config(args), args.allow_large_memory)
    if refusal:
        print(f"adam-bench bench: error: {refusal}", file=sys.stderr)
        return 2
    bench_and_print(args)
    return 0


def bench_and_print(args) -> pd.DataFrame:
    """Run the sweep, write its tables, plot and the table "auto" reads; the sweep's rows."""
    from ..bench.selection import update_user_table
    from ..bench.sweep import run_sweep
    from ..core.plots import plot_throughput
    from ..core.tables import summary
    from ..subjects import collect_subjects
    from .summary import bench_lines, verdict_lines

    subjects = collect_subjects(args.backends, peers=options.peers_option(args),
                                device=options.backends_device(args.backends))
    df = run_sweep(sweep_config(args), subjects, args.out, resume=args.resume,
                   show_progress=not args.quiet)
    if args.verbose:
        print_table(summary(df).drop(columns=["note"]).dropna(subset=["us_per_step"]),
                     "Throughput (median of repeats; fraction_of_roofline = GB/s over the "
                     "same-streams kernel at the same size)")
        skipped = df[df["note"].astype(str).str.startswith("skipped")]
        if not skipped.empty:
            print_table(skipped[["label", "note"]].drop_duplicates(), "Skipped")
    else:
        print("\n".join(bench_lines(df)))
    _write_versus_numba(df, args)
    if not args.no_plot:
        from ..core.machine import machine_id

        path = plot_throughput(df, Path(args.out).with_suffix(".png"), title=machine_id())
        print(f"plot: {path}")
    print(f"tables: {args.out}.csv/.json/.md")
    print(f"backend=\"auto\" reads {update_user_table(df)}")
    if not args.tour:
        print("\n" + "\n".join(verdict_lines(None, df)))
    return df


def _write_versus_numba(df: pd.DataFrame, args) -> None:
    """Each state format's table of step times over numba's in that format (numba[int8]
    for the int8 rows), written to OUT-versus-numba and OUT-versus-numba-int8, where
    numba was measured in it."""
    from ..core.results_io import write_tables
    from ..core.tables import state_label, versus
    from .summary import versus_lines

    measured = set(df.loc[df["seconds_median"].notna(), "label"])
    for state in sorted(df["state"].unique(), key=lambda s: s != "full"):
        baseline = state_label("numba", state)
        if baseline not in measured:
            continue
        comparison = versus(df, state=state)
        stem = f"{args.out}-versus-numba" + ("" if state == "full" else f"-{state}")
        write_tables(comparison, stem)
        if args.verbose:
            print_table(comparison, f"Each subject's step time over {baseline}'s, both over "
                         f"the roofline timed beside them (above 1: slower than {baseline})")
        print("\n".join(versus_lines(comparison, baseline, f"{stem}.md")))
