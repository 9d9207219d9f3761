"""``adam-bench check/bench/demo --ranks``: sharded Adam on MPI ranks.

Each command launches ``harness.sharded.worker`` under ``mpiexec`` once per rank count
(or runs in place when adam-bench itself was started by mpiexec), then prints and writes
the rows as every other command does.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from ..core.results_io import write_tables
from .summary import print_table

__all__ = ["cmd_check", "cmd_bench", "cmd_demo", "plot_sharded"]


def _launch(args, job: str, options: list[str]) -> pd.DataFrame | None:
    from ..sharded.mpi_launch import MPIUnavailable, mpi_world_size, run_ranks

    try:
        rows = [r for n in args.ranks for r in run_ranks(n, job, options)]
    except (ValueError, MPIUnavailable, RuntimeError) as exc:
        print(f"{job}: {exc}", file=sys.stderr)
        return None
    if mpi_world_size() is not None and not rows:  # not rank 0 of an in-place run
        return pd.DataFrame()
    return pd.DataFrame(rows)


def cmd_check(args) -> int:
    df = _launch(args, "check", ["--backend", ",".join(args.backends or ["numba"]),
                                 "--dtypes", ",".join(args.dtypes),
                                 "--steps", str(args.steps), "--seed", str(args.seed)])
    if df is None:
        return 2
    if df.empty:
        return 0
    out = Path(f"{args.out}-sharded")
    write_tables(df, out)
    print_table(df, "Sharded Adam vs the single-process step on the averaged gradient "
              "(2 ranks: bit for bit; more: within the reduction's rounding)")
    ok = bool(df["passed"].all())
    print(f"\ncheck --ranks: {'PASS' if ok else 'FAIL'}. Tables: {out}.csv/.json/.md")
    return 0 if ok else 1


def cmd_bench(args) -> int:
    sizes = args.sizes or [2**20, 2**22, 2**24]
    df = _launch(args, "bench", ["--backend", ",".join(args.backends or ["numba"]),
                                 "--dtypes", args.dtypes[0],
                                 "--sizes", ",".join(map(str, sizes)),
                                 "--repeats", str(args.repeats)])
    if df is None:
        return 2
    if df.empty:
        return 0
    from ..core.machine import machine_id

    out = Path(args.out if args.out != "results/local/bench"
               else "results/local/bench-sharded")
    shown = ["ranks", "elements", "reduce_scatter_us", "update_us", "all_gather_us", "total_us",
             "single_process_us", "total_over_single", "reduce_scatter_gb_per_s",
             "all_gather_gb_per_s", "comm_gb_per_s", "memcpy_gb_per_s", "comm_over_memcpy",
             "machine_memcpy_gb_per_s", "comm_over_machine_memcpy", "state_bytes_per_rank"]
    df["machine"] = machine_id()
    write_tables(df, out, markdown=df[shown].round(3))
    print_table(df[shown].round(3), "Sharded Adam per step (medians; GB/s = bytes each rank sent; "
                              "single process and memcpy timed in turn, same run)")
    if not args.no_plot:
        print(f"\nplot: {plot_sharded(df, out.with_suffix('.png'), machine_id())}")
    print(f"tables: {out}.csv/.json/.md")
    return 0


def cmd_demo(args) -> int:
    df = _launch(args, "demo", ["--steps", str(args.steps)])
    if df is None:
        return 2
    if df.empty:
        return 0
    out = Path(args.out if args.out != "results/local/demo-digits"
               else "results/local/demo-sharded")
    write_tables(df, out)
    print_table(df, f"Digits MLP, data-parallel with sharded Adam ({args.steps} steps)")
    same = bool(df["params_equal_bits"].fillna(True).all())
    print(f"\nsharded == one process, bit for bit: {same}. Tables: {out}.csv/.json/.md")
    return 0 if same else 1


def plot_sharded(df: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Left: microseconds per step for each rank count, its phases and the
    single-process step; right: GB/s of each collective and of memcpy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for ranks, group in df.sort_values("elements").groupby("ranks"):
        left.plot(group["elements"], group["total_us"], "-o", label=f"{ranks} ranks: step")
        if ranks > 1:
            for phase in ("reduce_scatter", "update", "all_gather"):
                left.plot(group["elements"], group[f"{phase}_us"], ":", marker=".",
                          label=f"{ranks} ranks: {phase}")
            for what in ("reduce_scatter", "all_gather", "comm"):
                right.plot(group["elements"], group[f"{what}_gb_per_s"], "-o",
                           label=f"{ranks} ranks: {what}")
    first = df.sort_values("elements").drop_duplicates("elements")
    left.plot(first["elements"], first["single_process_us"], "k--", lw=2, label="one process")
    right.plot(first["elements"], first["memcpy_gb_per_s"], "k--", lw=2, label="memcpy")
    for ax, ylabel in ((left, "microseconds per step"), (right, "GB/s (bytes each rank sent)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("elements")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
