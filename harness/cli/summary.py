"""What ``adam-bench`` prints by default: a few lines per step and a verdict per subject,
within 100 columns. The full tables go to the files (and to the terminal with --verbose).
"""
from __future__ import annotations

import math
import textwrap

import pandas as pd

from ..check import CheckReport
from ..subjects.peers import PEERS_INSTALL

__all__ = ["WIDTH", "backends_lines", "check_lines", "bench_lines", "versus_lines",
           "verdict_lines", "fit", "size_name"]

#: Columns of the terminal every line fits.
WIDTH = 100


def fit(line: str, width: int = WIDTH) -> str:
    """``line`` cut to ``width`` characters, with "..." where it was cut."""
    return line if len(line) <= width else line[:width - 3] + "..."


def backends_lines(rows) -> list[str]:
    """Lines for the backends (rows of ``list_backends()``): name, device, origin, and
    "ready" or why not, a long reason wrapped under itself."""
    width = max([len(r.name) for r in rows] + [4])
    lines = []
    for r in rows:
        head = f"  {r.name:<{width}}  {r.device:<4}  {r.origin:<10}  "
        lines += textwrap.wrap(head + ("ready" if r.available else f"unavailable: {r.reason}"),
                               WIDTH, subsequent_indent=" " * len(head))
    return lines


def check_lines(report: CheckReport, limit: int = 8) -> list[str]:
    """What ``check`` found, in a few lines: the verdict, counts, the first failures, and
    where the peers differ."""
    failures = report.failures()
    subjects = report.agreement["subject"].nunique()
    lines = [f"check: {'PASS' if report.ok else 'FAIL'} (our backends; peers are shown, "
             "not judged)",
             f"  {subjects} subjects, {len(report.agreement) // max(subjects, 1)} runs each "
             f"against the float64 reference; {len(report.pairs)} pairs; "
             f"{report.edges['case'].nunique()} edge cases; "
             f"{report.bad_input['case'].nunique()} bad inputs"]
    skipped = report.skipped
    peers = skipped[skipped["kind"] == "peer"]
    lines += [f"  not run: {r.subject} ({r.reason})"
              for r in skipped[skipped["kind"] != "peer"].itertuples()]
    if not peers.empty:  # one line: the names if they fit, else how many
        named = f"  peers not installed: {', '.join(peers['subject'])} ({PEERS_INSTALL})"
        lines.append(named if len(named) <= WIDTH else f"  {len(peers)} peers not installed "
                     f"({PEERS_INSTALL}; --verbose: which, and why)")
    lines += [f"  {line}" for line in failures[:limit]]
    if len(failures) > limit:
        lines.append(f"  ... {len(failures) - limit} more (--verbose, or the tables)")
    peer = lambda df, column: df[(df["kind"] == "peer")  # missing: an option not offered
                                 & ~df[column].fillna(True).astype(bool)]
    differ: dict[str, set] = {}
    for r in peer(report.edges, "passed").itertuples():
        differ.setdefault(f"edge case {r.case}", set()).add(r.subject)
    for r in peer(report.agreement, "within_tolerance").itertuples():
        differ.setdefault(f"{r.dtype} {r.options}", set()).add(r.subject)
    lines += [f"  peers differing on {where}: {', '.join(sorted(who))}"
              for where, who in differ.items()]
    return [fit(line) for line in lines]


def bench_lines(df: pd.DataFrame) -> list[str]:
    """One line: how many cells were measured and which subjects were skipped, and why."""
    measured = df["seconds_median"].notna()
    lines = [f"bench: {int(measured.sum())} cells measured, "
             f"{df.loc[measured, 'label'].nunique()} subjects incl. the roofline"]
    skipped = df.loc[~df["label"].isin(df.loc[measured, "label"]), "label"].unique()
    if len(skipped):
        lines.append(f"  not measured: {', '.join(skipped)} (the note column says why)")
    return [fit(line) for line in lines]


def versus_lines(comparison: pd.DataFrame, baseline: str, path: str) -> list[str]:
    """Where the table against ``baseline`` is (harness.core.tables.versus), and each other
    label's smallest ratio over the flat sizes: how much slower than ``baseline`` it is
    at its best (above 1: slower)."""
    flat = comparison[comparison["workload"] == "flat"]
    suffix = f" / {baseline}"
    smallest = {c[:-len(suffix)]: flat[c].min() for c in flat.columns if c.endswith(suffix)}
    lines = [f"against {baseline}: {path}"]
    if smallest:
        lines.append(fit(f"  smallest time over {baseline}'s, flat sizes: " + ", ".join(
            f"{label} {_number(ratio)}" for label, ratio in smallest.items())))
    return lines


def _sizes_to_show(flat: pd.DataFrame, count: int = 3) -> list[int]:
    """Up to ``count`` sizes spread over the sweep's (powers of two first: the other flat
    sizes are the model workloads' companions)."""
    sizes = sorted(int(n) for n in flat["elements"].unique())
    sizes = [n for n in sizes if n > 0 and n & (n - 1) == 0] or sizes
    if len(sizes) <= count:
        return [int(n) for n in sizes]
    return [int(sizes[round(i * (len(sizes) - 1) / (count - 1))]) for i in range(count)]


def size_name(n: int) -> str:
    """2^k for a power of two, else the number."""
    exponent = math.log2(n) if n > 0 else 0.5
    return f"2^{int(exponent)}" if exponent.is_integer() else str(n)


def _number(x) -> str:
    """At most five characters: 0.93, 12.5, 3625, >1e5."""
    if x is None or pd.isna(x):
        return "-"
    return (f"{x:.2f}" if x < 9.995 else f"{x:.1f}" if x < 99.95 else f"{x:.0f}" if x < 99999.5
            else ">1e5")


def _agreement_word(report: CheckReport | None, subject: str) -> str:
    if report is None:
        return ""
    rows = report.agreement[report.agreement["subject"] == subject]
    if rows.empty:
        return "not run"
    own = [line for line in report.failures() if line.startswith(f"{subject} ")]
    ratio = rows["tolerance_ratio"].max()
    if rows["kind"].iloc[0] == "peer":
        edges = report.edges[(report.edges["subject"] == subject)
                             & ~report.edges["passed"].astype(bool)]
        word = "agrees" if rows["within_tolerance"].all() and edges.empty else "differs"
        return f"{word} (peer) {ratio:.2g}"
    if own:
        return f"FAILS ({len(own)})"
    return f"agrees {ratio:.2g}"


def verdict_lines(report: CheckReport | None, df: pd.DataFrame | None) -> list[str]:
    """A verdict per subject: agreement (worst error over tolerance), the fraction of the
    roofline at up to three flat sizes of the first dtype, and the best peer's step time
    over the subject's at those sizes, among the peers of the subject's state format
    (numba[int8] against the int8 peers; paired fractions: above 1, the subject is
    faster)."""
    subjects = list(report.agreement["subject"].unique()) if report is not None else []
    flat = pd.DataFrame()
    if df is not None and not df.empty:
        flat = df[(df["workload"] == "flat") & (df["dtype"] == df["dtype"].iloc[0])
                  & ~df["amsgrad"].astype(bool) & (df["kind"] != "roofline")
                  & df["seconds_median"].notna()]
        subjects += [s for s in flat["label"].unique() if s not in subjects]
    sizes = _sizes_to_show(flat) if not flat.empty else []
    fraction = flat.pivot_table(index="label", columns="elements",
                                values="fraction_of_roofline") if sizes else pd.DataFrame()
    peers = flat[flat["kind"] == "peer"]
    best_peer = (peers.groupby(["state", "elements"])["fraction_of_roofline"].max()
                 if not peers.empty else pd.Series(dtype=float))
    states = flat.groupby("label")["state"].first() if sizes else pd.Series(dtype=str)
    width = max([len(s) for s in subjects] + [7])
    names = " ".join(f"{size_name(n):>5}" for n in sizes)
    versus_title = "vs best peer" if not peers.empty else ""
    dtype = f" {flat['dtype'].iloc[0]}" if sizes else ""
    lines = ["verdicts. agreement: worst error over its tolerance, every dtype and option set "
             "(<= 1 passes);",
             "roofline: fraction of the same-streams kernel timed beside it; vs best peer: "
             "that fraction",
             "over the best peer's at the same size and state format (above 1: faster than "
             "every peer).",
             f"{'subject':<{width}}  {'agreement':<20}  {'roofline' + dtype:<{len(names)}}"
             f"  {versus_title:<{len(names)}}".rstrip(),
             f"{'':<{width}}  {'(error/tolerance)':<20}  {names}  "
             f"{names if versus_title else ''}".rstrip()]
    for subject in subjects:
        row = fraction.loc[subject] if subject in fraction.index else pd.Series(dtype=float)
        roof = " ".join(f"{_number(row.get(n)):>5}" for n in sizes)
        state = states.get(subject, "full")
        ratios = [None if subject in set(peers["label"]) or (state, n) not in best_peer.index
                  else row.get(n, math.nan) / best_peer[(state, n)] for n in sizes]
        versus = " ".join(f"{_number(x):>5}" for x in ratios) if versus_title else ""
        lines.append(f"{subject:<{width}}  {_agreement_word(report, subject):<20}  {roof}  "
                     f"{versus}".rstrip())
    return [fit(line) for line in lines + _best_peer_lines(peers, sizes, df is not None)]


def _best_peer_lines(peers: pd.DataFrame, sizes: list[int], benched: bool) -> list[str]:
    """Which peer is the best at each shown size, per state format; or, when no peer was
    measured, how to get the comparison."""
    if peers.empty:
        return [f"vs best peer: no peer measured; to compare with torch, DeepSpeed, optax: "
                f"{PEERS_INSTALL}"] if benched else []
    lines = []
    for state, rows in peers.groupby("state"):
        best = rows.loc[rows.groupby("elements")["fraction_of_roofline"].idxmax()]
        best = best.set_index("elements")["label"]
        names = ", ".join(f"{size_name(n)} {best[n]}" for n in sizes if n in best.index)
        lines.append(f"best peer{'' if state == 'full' else f' [{state}]'}: {names}")
    return lines


def _judged_lines(df: pd.DataFrame, prefix: str, describe) -> list[str]:
    """One line per subject of a judged table: its note where no row was judged, else
    ``describe(subject, judged rows)``."""
    lines = []
    for subject, rows in df.groupby("subject", sort=False):
        judged = rows.dropna(subset=["within_tolerance"])
        text = rows["note"].iloc[0] if judged.empty else describe(subject, judged)
        lines.append(fit(f"{prefix} {subject}: {text}"))
    return lines


def int8_lines(df: pd.DataFrame) -> list[str]:
    """One line per backend of ``int8_agreement``'s table, for check's terse output."""
    return _judged_lines(df, "int8 state", lambda subject, judged: (
        f"{int(judged['within_tolerance'].sum())}/{len(judged)} option sets agree; codes "
        f"differing: {int(judged['codes_at_boundary'].sum())} at a boundary, "
        f"{int(judged['codes_off_boundary'].sum())} elsewhere"))


def format_lines(formats: pd.DataFrame, bias: pd.DataFrame) -> list[str]:
    """One line per backend of the low-precision formats' check, for check's terse output."""
    def describe(subject, judged):
        mine = bias[bias["subject"] == subject]
        rounding = "" if mine.empty else (
            f"; stochastic rounding {'unbiased' if mine['unbiased'].all() else 'BIASED'} "
            f"(p >= {mine['min_p_value'].min():.2g})")
        return (f"{int(judged['within_tolerance'].sum())}/{len(judged)} agree, worst params "
                f"{judged['param_spacings'].max():.2g} spacings{rounding}")
    return _judged_lines(formats, "formats", describe)


def print_table(df: pd.DataFrame, title: str = "") -> None:
    """A Markdown table with a "## title" above it, for --verbose."""
    if title:
        print(f"\n## {title}\n")
    print(df.to_markdown(index=False) if not df.empty else "(no rows)")
