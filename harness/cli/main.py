"""``adam-bench``: list backends, check agreement, sweep throughput, report, select, demo.

With no subcommand it runs the tour: backends, a check, and the default sweep, writing
everything to results/ (a few minutes on a 2-core laptop), and ends with a verdict per
subject (harness.summary); --verbose prints the full tables as well.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from . import cli_args

__all__ = ["main"]


def _peers(args) -> bool | list[str]:
    """--no-peers: none; --peers a,b: those; else every peer."""
    return False if args.no_peers else (args.peers or True)


def _print_table(df: pd.DataFrame, title: str = "") -> None:
    if title:
        print(f"\n## {title}\n")
    print(df.to_markdown(index=False) if not df.empty else "(no rows)")


def cmd_backends(args) -> int:
    from backends import list_backends

    from .summary import backends_lines

    listed = list_backends()
    if args.verbose:
        rows = pd.DataFrame([r.__dict__ for r in listed])
        rows["reason"] = rows["reason"].fillna("")
        _print_table(rows, "Backends")
    else:
        print("backends:\n" + "\n".join(backends_lines(listed)))
    return 0


def cmd_check(args) -> int:
    if args.ranks:
        from .sharded_cli import cmd_check as sharded

        return sharded(args)
    return 0 if _check(args).ok else 1


def _check(args):
    """Run the check, write its tables, print what it found; the CheckReport."""
    from tqdm import tqdm

    from .check import run_check
    from .results_io import write_tables
    from .subjects import collect_subjects
    from .summary import check_lines, fit

    subjects = collect_subjects(args.backends, peers=_peers(args), emulated=args.gpu_emulation)
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
    if not report.eight_bit.empty:
        write_tables(report.eight_bit, out.with_name(out.name + "-8bit"))
    if report.int8 is not None:
        write_tables(report.int8, out.with_name(out.name + "-int8"))
    if args.verbose:
        _print_check_tables(report, args.steps)
    print("\n".join(check_lines(report)))
    if not report.eight_bit.empty:
        print(fit(f"  8-bit peers (apart, no verdict): "
                  f"{', '.join(report.eight_bit['subject'].unique())}: {out}-8bit.md"))
    if report.int8 is not None:
        from .int8_agreement import int8_lines

        print("\n".join(int8_lines(report.int8)))
    print(f"tables: {out}.csv/.json/.md, -pairs, -edge-cases, -bad-input, -int8")
    return report


def _print_check_tables(report, steps: int) -> None:
    shown = ["subject", "kind", "dtype", "options", "max_abs_err", "max_rel_err", "max_ulp_err",
             "worst_step", "worst_quantity", "tolerance_ratio", "within_tolerance", "note"]
    _print_table(report.agreement[shown], f"Agreement with the float64 reference ({steps} "
                 "steps; tolerance_ratio <= 1 passes; see harness/tolerances.py)")
    if not report.eight_bit.empty:
        _print_table(report.eight_bit[[c for c in shown if c in report.eight_bit]],
                     "8-bit peers against the float64 reference (no verdict: their moments are "
                     "quantized; tensors under 4096 elements keep float32 moments)")
    pairs = report.pairs
    if not pairs.empty:  # none with one subject
        failed_pairs = pairs[~pairs["within_tolerance"] & (pairs["kind"] == "backend")]
        _print_table(failed_pairs if not failed_pairs.empty else
                     pairs.groupby(["kind", "dtype"])["tolerance_ratio"].max().reset_index(),
                     "Pairwise (worst tolerance ratio per group)" if failed_pairs.empty
                     else "Pairs out of tolerance")
    edge = report.edges.pivot_table(index=["case", "dtype"], columns="subject",
                                    values="passed", aggfunc="all")
    edge = edge.astype("boolean").reset_index()  # blank: an option the peer does not offer
    _print_table(edge, "Edge cases (True = the exact expectation holds)")
    details = report.edges[~report.edges["passed"]]
    if not details.empty:
        _print_table(details[["case", "subject", "dtype", "detail"]], "Edge-case differences")
    bad = report.bad_input[~report.bad_input["passed"].astype(bool)]
    if not bad.empty:
        _print_table(bad, "Bad input not refused properly")
    if report.int8 is not None:
        _print_table(report.int8, "8-bit state (state_dtype='int8') against the quantized "
                     "float64 reference, step by step (codes may differ only at a boundary)")
    if not report.skipped.empty:
        _print_table(report.skipped, "Not run here")


def _sweep_config(args):
    from .sweep import SweepConfig

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
    if args.ranks:
        from .sharded_cli import cmd_bench as sharded

        return sharded(args)
    refusal = cli_args.oversized_sweep(_sweep_config(args), args.allow_large_memory)
    if refusal:
        print(f"adam-bench bench: error: {refusal}", file=sys.stderr)
        return 2
    _bench(args)
    return 0


def _bench(args) -> pd.DataFrame:
    """Run the sweep, write its tables, plot and the table "auto" reads; the sweep's rows."""
    from .plots import plot_throughput
    from .selection import update_user_table
    from .subjects import collect_subjects
    from .summary import bench_lines, verdict_lines
    from .sweep import run_sweep
    from .tables import summary

    subjects = collect_subjects(args.backends, peers=_peers(args))
    df = run_sweep(_sweep_config(args), subjects, args.out, resume=args.resume,
                   show_progress=not args.quiet)
    if args.verbose:
        _print_table(summary(df).drop(columns=["note"]).dropna(subset=["us_per_step"]),
                     "Throughput (median of repeats; fraction_of_roofline = GB/s over the "
                     "same-streams kernel at the same size)")
        skipped = df[df["note"].astype(str).str.startswith("skipped")]
        if not skipped.empty:
            _print_table(skipped[["label", "note"]].drop_duplicates(), "Skipped")
    else:
        print("\n".join(bench_lines(df)))
    _write_versus_numba(df, args)
    if not args.no_plot:
        from .machine import machine_id

        path = plot_throughput(df, Path(args.out).with_suffix(".png"), title=machine_id())
        print(f"plot: {path}")
    print(f"tables: {args.out}.csv/.json/.md")
    print(f"backend=\"auto\" reads {update_user_table(df)}")
    if not args.tour:
        print("\n" + "\n".join(verdict_lines(None, df)))
    return df


def _write_versus_numba(df: pd.DataFrame, args) -> None:
    """Each state format's table of step times over numba's in that format (numba[int8]
    for the 8-bit rows), written to OUT-versus-numba and OUT-versus-numba-int8, where
    numba was measured in it."""
    from .results_io import write_tables
    from .summary import versus_lines
    from .tables import state_label, versus

    measured = set(df.loc[df["seconds_median"].notna(), "label"])
    for state in sorted(df["state"].unique(), key=lambda s: s != "full"):
        baseline = state_label("numba", state)
        if baseline not in measured:
            continue
        comparison = versus(df, state=state)
        stem = f"{args.out}-versus-numba" + ("" if state == "full" else f"-{state}")
        write_tables(comparison, stem)
        if args.verbose:
            _print_table(comparison, f"Each subject's step time over {baseline}'s, both over "
                         f"the roofline timed beside them (above 1: slower than {baseline})")
        print("\n".join(versus_lines(comparison, baseline, f"{stem}.md")))


def cmd_report(args) -> int:
    if (args.json is None) == (args.html is None):
        print("adam-bench report: error: give a pytest-benchmark JSON file or --html "
              "[RESULTS_DIR], not both", file=sys.stderr)
        return 2
    if args.html is not None:
        return _html_report(args)
    return _benchmark_report(args)


def _html_report(args) -> int:
    from .html_report import html_report
    from .results_io import atomic_write_text

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
    from .bench_report import benchmark_json_to_table
    from .plots import plot_throughput
    from .results_io import write_tables
    from .tables import summary

    args.out = args.out or "results/pytest-benchmark-report"

    if Path(args.out).with_suffix(".json").resolve() == Path(args.json).resolve():
        print(f"report: --out {args.out} would overwrite {args.json}; choose another --out",
              file=sys.stderr)
        return 2
    df = benchmark_json_to_table(args.json)
    write_tables(df, args.out, markdown=summary(df))
    _print_table(summary(df).drop(columns=["note"], errors="ignore"),
                 f"pytest-benchmark results from {args.json}")
    if not args.no_plot:
        print(f"\nplot: {plot_throughput(df, Path(args.out).with_suffix('.png'))}")
    print(f"tables: {args.out}.csv/.json/.md")
    return 0


def cmd_compare(args) -> int:
    from .compare import compare_runs, load_run

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


def cmd_select(args) -> int:
    from backends.auto import choose_backend

    from .results_io import read_table
    from .workloads import model_workload

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


def cmd_demo(args) -> int:
    if args.ranks:
        from .sharded_cli import cmd_demo as sharded

        return sharded(args)
    from .demo import run_demo

    if args.state == "int8":
        return _demo_int8(args)
    if args.torch:
        return _demo_torch(args)
    result = run_demo(steps=args.steps, out_stem=args.out, include_peers=not args.no_peers)
    _print_table(result.summary, f"Digits MLP trained with Adam on every CPU backend "
                                 f"({args.steps} full-batch steps, same seed)")
    print(f"\nplot: {result.plot}\ntables: {args.out}.csv/.json/.md")
    return 0 if result.ok else 1


def cmd_gpu_report(args) -> int:
    from .gpu_report import gpu_unavailable_reason, run_gpu_report

    reason = gpu_unavailable_reason()
    if reason:
        print(f"gpu-report: needs a GPU; none usable here ({reason})", file=sys.stderr)
        return 1
    return run_gpu_report(repeats=args.repeats, max_seconds=args.max_seconds)


def _demo_torch(args) -> int:
    from .torch_demo import run_torch_demo

    out = args.out if args.out != "results/demo-digits" else "results/demo-digits-torch"
    result = run_torch_demo(steps=args.steps, out_stem=out)
    _print_table(result.summary, f"Digits MLP in torch (autograd), our torch.optim Adam and "
                                 f"torch.optim.Adam ({args.steps} full-batch steps, same seed)")
    print(f"\nplot: {result.plot}\ntables: {out}.csv/.json/.md")
    return 0 if result.ok else 1


def _demo_int8(args) -> int:
    from .int8_demo import run_int8_demo

    out = args.out if args.out != "results/demo-digits" else "results/demo-digits-int8"
    summary, _ = run_int8_demo(steps=args.steps, out_stem=out)
    _print_table(summary, f"Digits MLP, numba backend, float32 state and 8-bit state "
                          f"({args.steps} full-batch steps, same seed)")
    print(f"\nplot: {out}.png\ntables: {out}.csv/.json/.md")
    return 0


#: The tour's own options for its steps: a sweep of flat tensors with fewer, shorter
#: repeats than ``bench``'s defaults, so a first run takes about a minute
#: (``adam-bench bench`` measures everything).
TOUR_OPTIONS = {"bench": ["--models", "none", "--repeats", "7", "--max-seconds", "0.3"]}


def cmd_tour(args) -> int:
    from .summary import verdict_lines

    def step_args(name: str):
        step = build_parser().parse_args([name] + args.tour_options.get(name, []))
        step.verbose, step.tour, step.gpu_emulation = args.verbose, True, args.gpu_emulation
        step.no_peers = step.no_peers or args.no_peers
        return step

    print("# adam-bench: backends, agreement check, throughput sweep (tables in results/)")
    cmd_backends(args)
    report = _check(step_args("check"))
    df = _bench(step_args("bench")) if report.ok else None
    print()
    print("\n".join(verdict_lines(report, df)))
    return 0 if report.ok else 1


RANKS_HELP = ("sharded Adam (ZeRO-1) on this many MPI ranks, e.g. 2 or 1,2: launches mpiexec "
              "(pip install -e '.[mpi]')")


def _cmd_plan(args) -> int:
    from .sharded_cli import cmd_plan

    return cmd_plan(args)


def build_parser() -> argparse.ArgumentParser:
    parser = cli_args.Parser(
        prog="adam-bench",
        description="Check and measure interchangeable Adam backends. With no subcommand: "
                    "list backends, run the agreement check, then the default throughput "
                    "sweep (a few minutes), writing tables and plots to results/.")
    parser.set_defaults(func=cmd_tour, tour=False, tour_options=TOUR_OPTIONS)
    parser.add_argument("--verbose", action="store_true",
                        help="print the full Markdown tables, not only the verdicts")
    parser.add_argument("--no-peers", action="store_true",
                        help="leave the peers out of the check and the sweep")
    parser.add_argument("--gpu-emulation", action="store_true",
                        help="the check also judges the GPU kernels emulated and simulated on "
                             "the CPU (a few minutes more)")
    verbose = {"action": "store_true", "default": argparse.SUPPRESS,
               "help": "print the full Markdown tables (they are always in the files)"}
    sub = parser.add_subparsers(title="subcommands")

    p = sub.add_parser("backends", help="list backends, their device, and why any is unavailable")
    p.add_argument("--verbose", **verbose)
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser("check", help="agreement with the float64 reference, pairwise, edge cases,"
                                     " bad input;"
                                     " exits 1 if any of our backends is out of tolerance")
    p.add_argument("--steps", type=cli_args.positive_int, default=100,
                   help="Adam steps per problem (default 100)")
    p.add_argument("--backends", type=cli_args.backend_names,
                   help="comma-separated backend names (default: all)")
    p.add_argument("--dtypes", type=cli_args.dtypes, default="float32,float64",
                   help="default: float32,float64")
    p.add_argument("--seed", type=cli_args.non_negative_int, default=0,
                   help="problem seed (default 0)")
    p.add_argument("--no-peers", action="store_true", help="leave out the peers' rows")
    p.add_argument("--peers", type=cli_args.peer_names,
                   help="comma-separated peer labels (default: all; see README)")
    p.add_argument("--gpu-emulation", action="store_true", default=argparse.SUPPRESS,
                   help="also judge the GPU kernels' arithmetic emulated on the CPU and "
                        "numba-cuda's 8-bit kernel under the CUDA simulator (a few minutes)")
    p.add_argument("--out", default="results/check", help="table path stem (default results/check)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", **verbose)
    p.add_argument("--ranks", type=cli_args.ranks, help=RANKS_HELP)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("bench", help="throughput sweep over backends x dtypes x sizes, with the "
                                     "roofline measured in the same run")
    p.add_argument("--sizes", type=cli_args.sizes,
                   help='flat tensor sizes: "2^10..2^24:2" (default), "4096,2^20"')
    p.add_argument("--backends", type=cli_args.backend_names,
                   help="comma-separated backend names (default: all)")
    p.add_argument("--dtypes", type=cli_args.dtypes, default="float32", help="default: float32")
    p.add_argument("--amsgrad", action="store_true", help="also measure amsgrad (36 B/element)")
    p.add_argument("--models", type=cli_args.model_names,
                   default="gpt2-small,bert-base,resnet50",
                   help='model-shaped workloads, or "none" (default: all three)')
    p.add_argument("--model-elements", type=cli_args.positive_int, default=2**20,
                   help="shrink each model to about this many elements (default 2^20)")
    p.add_argument("--scale", type=cli_args.scale,
                   help="shrink models by this factor instead (1 = full)")
    p.add_argument("--repeats", type=cli_args.positive_int, default=15,
                   help="timed batches per cell (default 15)")
    p.add_argument("--max-seconds", type=cli_args.positive_float, default=1.0,
                   help="time budget per cell, at least 3 batches run (default 1.0)")
    p.add_argument("--python-max-size", type=cli_args.non_negative_int, default=2**16,
                   help="skip pure Python above this many elements (default 65536)")
    p.add_argument("--no-peers", action="store_true", help="leave out the peers' rows")
    p.add_argument("--peers", type=cli_args.peer_names,
                   help="comma-separated peer labels (default: all; see README)")
    p.add_argument("--state", choices=["int8"],
                   help="also measure 8-bit state (float32; rows labelled NAME[int8])")
    p.add_argument("--resume", action="store_true", help="skip cells already in OUT.csv")
    p.add_argument("--allow-large-memory", action="store_true",
                   help="run a sweep whose largest cell needs more memory than is available")
    p.add_argument("--out", default="results/bench", help="path stem (default results/bench)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", **verbose)
    p.add_argument("--ranks", type=cli_args.ranks, help=RANKS_HELP)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="turn a pytest-benchmark --benchmark-json file into the "
                                      "sweep's tables and plot; --html: one page from a "
                                      "results folder")
    p.add_argument("json", nargs="?", help="file written by pytest --benchmark-json=FILE")
    p.add_argument("--html", nargs="?", const="results", metavar="RESULTS_DIR",
                   help="write one self-contained HTML page (plots, tables, verdicts, "
                        "metadata) of the tables in RESULTS_DIR (default results)")
    p.add_argument("--out", help="path stem (default results/pytest-benchmark-report); "
                                 "with --html the page (default RESULTS_DIR/report.html)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="two bench tables (or pytest-benchmark JSONs): each "
                                       "cell's NEW/BASE time ratio, interval and test; "
                                       "--fail-above gates a regression")
    p.add_argument("base", help="the baseline: a bench table (.csv/.json) or a "
                                "pytest-benchmark --benchmark-json file")
    p.add_argument("new", help="the run to judge, in either format")
    p.add_argument("--fail-above", type=cli_args.positive_float, metavar="RATIO",
                   help="exit 1 if a cell is significantly slower than RATIO (e.g. 1.10)")
    p.add_argument("--confidence", type=cli_args.fraction, default=0.95,
                   help="of the interval; a change needs p < 1 - this (default 0.95)")
    p.add_argument("--per-roofline", action="store_true",
                   help="each repeat over the roofline's of the same round: the machine's "
                        "bandwidth drift between the runs cancels (bench tables)")
    p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="every cell, not only the changed ones")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("select", help="the fastest available backend for a workload, from the "
                                      "table backend=\"auto\" reads (or --results)")
    p.add_argument("--sizes", type=cli_args.sizes, help='tensor sizes, e.g. "1000,2^20"')
    p.add_argument("--model", type=cli_args.model_name,
                   help="a model-shaped workload: gpt2-small, bert-base, resnet50")
    p.add_argument("--scale", type=cli_args.scale, help="shrink the model by this factor")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amsgrad", action="store_true")
    p.add_argument("--results", help="a bench table (CSV/JSON) to choose from")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("demo", help="train an MLP on scikit-learn's digits with every CPU "
                                    "backend from one seed; plot the loss curves")
    p.add_argument("--steps", type=cli_args.positive_int, default=200,
                   help="full-batch steps (default 200)")
    p.add_argument("--no-peers", action="store_true", help="leave out torch's Adam")
    p.add_argument("--out", default="results/demo-digits", help="path stem")
    p.add_argument("--ranks", type=cli_args.ranks, help=RANKS_HELP)
    p.add_argument("--state", choices=["int8"], help="instead: float32 state beside 8-bit "
                   "state (default out results/demo-digits-int8)")
    p.add_argument("--torch", action="store_true", help="instead: the MLP as a torch model "
                   "trained with backends.torch.Adam and torch.optim.Adam (default out "
                   "results/demo-digits-torch)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("gpu-report", help="on a GPU: the GPU tests, check and the GPU sweep "
                                          "(2^12..2^28), written to results/*-<gpu>.*")
    p.add_argument("--repeats", type=cli_args.positive_int, default=15,
                   help="timed batches per cell (default 15)")
    p.add_argument("--max-seconds", type=cli_args.positive_float, default=2.0,
                   help="time budget per cell, at least 3 batches run (default 2.0)")
    p.set_defaults(func=cmd_gpu_report)

    p = sub.add_parser("plan", help="sharded Adam on paper: per-rank memory and step time for "
                                    "N ranks on a given link, from the measured sharded bench")
    p.add_argument("--params", type=cli_args.positive_floats, default="124e6,7e9,70e9",
                   help="model sizes (default: 124e6,7e9,70e9: GPT-2, 7B, 70B)")
    p.add_argument("--ranks", type=cli_args.ranks, default="8,64,512",
                   help="rank counts (default 8,64,512)")
    p.add_argument("--link-gbps", type=cli_args.positive_float, default=100.0,
                   help="link bandwidth per rank, gigabits/s (default 100)")
    p.add_argument("--latency-us", type=cli_args.non_negative_float, default=10.0,
                   help="latency per message, microseconds (default 10)")
    p.add_argument("--results", default="results/bench-sharded.csv",
                   help="the sharded bench table (adam-bench bench --ranks 1,2)")
    p.add_argument("--out", default="results/plan", help="path stem (default results/plan)")
    p.set_defaults(func=_cmd_plan)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
