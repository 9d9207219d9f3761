"""``adam-bench compare BASE NEW``: how two runs' step times differ, cell by cell.

A cell is one subject at one workload, size, dtype and state format. Its ratio is the
Hodges-Lehmann estimate of NEW/BASE: the median of every ratio new_j / base_i of the two
runs' repeats (on the log scale: a shift of log time). The confidence interval is the
one that inverts the Mann-Whitney U test (Lehmann, *Nonparametrics*, 1975, ch. 2): the
k-th smallest and largest of those ratios, k from U's null distribution, exact for small
samples. A cell counts as changed when that interval excludes 1 and scipy's
Mann-Whitney U test gives p < 1 - confidence: no assumption about the times'
distribution, and 4 repeats a side are the fewest that can show a change at 95%.

``per_roofline``: each repeat is first divided by the roofline repeat timed in the same
round (harness.bench.sweep times them in turn), so the machine's bandwidth drift between the
two runs cancels, as the ratios of one run do.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..core.machine import machine_info
from ..core.results_io import read_table
from ..core.timing import parse_repeats
from .report import benchmark_json_to_table

__all__ = ["CELL", "load_run", "ratio_interval", "compare_runs", "metadata_differences",
           "Comparison"]

#: The columns that name a cell in both runs (the machine is not one: comparing two
#: machines is a use of compare, shown by ``metadata_differences``).
CELL = ["label", "workload", "elements", "dtype", "amsgrad", "state"]
#: Above this many repeats a side, the interval is computed from this many evenly spaced
#: quantiles of each (pytest-benchmark keeps every round; a million ratios are plenty).
_MAX_SAMPLE = 1000


def load_run(path: str | Path) -> pd.DataFrame:
    """A results table written by ``adam-bench bench`` (CSV or JSON) or a pytest-benchmark
    ``--benchmark-json`` file, as bench rows; ValueError naming the file if it is
    neither."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        if path.suffix == ".json" and isinstance(json.loads(path.read_text()), dict):
            return benchmark_json_to_table(path)
        df = read_table(path)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a bench table or pytest-benchmark JSON ({exc})") from None
    missing = [c for c in ["label", "workload", "elements", "dtype", "seconds_median"]
               if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a bench table (no column {missing[0]!r})")
    return df


def _null_cdf(m: int, n: int) -> np.ndarray:
    """P(U <= u), u = 0..m*n, for the Mann-Whitney U of samples of m and n without ties:
    the coefficients of the Gaussian binomial [m+n choose m]_q over C(m+n, m)."""
    counts = np.zeros(m * n + 1)
    counts[0] = 1.0
    for i in range(1, m + 1):  # times (1 - q^(n+i)) / (1 - q^i)
        counts[n + i:] -= counts[:-(n + i)].copy()
        padded = np.concatenate([counts, np.zeros(-len(counts) % i)])
        counts = padded.reshape(-1, i).cumsum(axis=0).reshape(-1)[:len(counts)]
    return np.cumsum(counts) / counts.sum()


def _tail_count(m: int, n: int, confidence: float) -> int:
    """k: the interval is the k-th smallest to the k-th largest ratio (0: unbounded)."""
    alpha = 1 - confidence
    if m + n <= 100:
        cdf = _null_cdf(m, n)
        return int(np.searchsorted(cdf, alpha / 2, side="right"))  # P(U <= k-1) <= a/2
    sigma = math.sqrt(m * n * (m + n + 1) / 12)
    return max(0, math.floor(m * n / 2 + 0.5 - stats.norm.ppf(1 - alpha / 2) * sigma))


def _thin(sample: np.ndarray) -> np.ndarray:
    if len(sample) <= _MAX_SAMPLE:
        return sample
    return np.quantile(sample, (np.arange(_MAX_SAMPLE) + 0.5) / _MAX_SAMPLE)


def ratio_interval(base, new, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(ratio, low, high, p): the Hodges-Lehmann NEW/BASE ratio of two samples of
    positive times, its ``confidence`` interval and the two-sided Mann-Whitney U test's
    p-value (NaN with fewer than 2 repeats a side: the ratio of the two is all there is)."""
    base, new = np.asarray(base, dtype=float), np.asarray(new, dtype=float)
    if len(base) < 2 or len(new) < 2:
        ratio = float(np.median(new) / np.median(base)) if len(base) and len(new) else math.nan
        return ratio, math.nan, math.nan, math.nan
    p = float(stats.mannwhitneyu(new, base, alternative="two-sided").pvalue)
    x, y = np.log(_thin(base)), np.log(_thin(new))
    shifts = np.sort((y[None, :] - x[:, None]).ravel())
    k = _tail_count(len(x), len(y), confidence)
    low, high = (shifts[k - 1], shifts[-k]) if k >= 1 else (-np.inf, np.inf)
    return float(np.exp(np.median(shifts))), float(np.exp(low)), float(np.exp(high)), p


def _samples(row, per_roofline: bool) -> np.ndarray:
    """A row's per-repeat seconds (over the roofline's of the same rounds), or its median
    alone where the table kept no repeats."""
    times = parse_repeats(row.get("seconds_repeats"))
    if per_roofline:
        roof = parse_repeats(row.get("roofline_seconds_repeats"))
        if len(roof) != len(times) or not len(times):
            raise ValueError(f"{row['label']} {row['workload']} {row['elements']}: no "
                             "roofline repeats beside its own (a bench table from before "
                             "repeats were kept, or pytest-benchmark's); leave out "
                             "--per-roofline")
        return times / roof
    return times if len(times) else np.array([row["seconds_median"]])


@dataclass
class Comparison:
    """Every cell of both runs (``cells``: ratio, interval, p, change) and what differs
    between the two runs' machines and software."""

    cells: pd.DataFrame
    only_base: int
    only_new: int
    differences: list[tuple[str, str, str]]

    def slower(self, above: float) -> pd.DataFrame:
        """The cells significantly slower in NEW with a ratio above ``above``."""
        return self.cells[(self.cells["change"] == "slower") & (self.cells["ratio"] > above)]


def _measured(df: pd.DataFrame, per_roofline: bool) -> pd.DataFrame:
    """The measured rows, one per cell, each with its ``sample`` of repeats."""
    df = df[df["seconds_median"].notna()].copy()
    for column, default in (("amsgrad", False), ("state", "full")):
        df[column] = df[column].fillna(default) if column in df else default
    df["amsgrad"] = df["amsgrad"].astype(bool)
    df = df.drop_duplicates(subset=CELL, keep="last")
    df["sample"] = [_samples(row, per_roofline) for row in df.to_dict("records")]
    return df[[*CELL, "seconds_median", "sample"]]


def compare_runs(base: pd.DataFrame, new: pd.DataFrame, confidence: float = 0.95,
                 per_roofline: bool = False) -> Comparison:
    """Compare every cell measured in both tables (rows of ``load_run``)."""
    a, b = _measured(base, per_roofline), _measured(new, per_roofline)
    joined = a.merge(b, on=CELL, suffixes=("_base", "_new"))
    rows = []
    for row in joined.to_dict("records"):
        ratio, low, high, p = ratio_interval(row["sample_base"], row["sample_new"], confidence)
        changed = p < 1 - confidence and not low <= 1 <= high
        rows.append({**{c: row[c] for c in CELL},
                     "base_us": row["seconds_median_base"] * 1e6,
                     "new_us": row["seconds_median_new"] * 1e6,
                     "repeats": f"{len(row['sample_base'])}/{len(row['sample_new'])}",
                     "ratio": ratio, "ci_low": low, "ci_high": high, "p_value": p,
                     "change": ("slower" if ratio > 1 else "faster") if changed else ""})
    cells = pd.DataFrame(rows, columns=[*CELL, "base_us", "new_us", "repeats", "ratio",
                                        "ci_low", "ci_high", "p_value", "change"])
    keys = lambda df: set(map(tuple, df[CELL].to_numpy().tolist()))
    return Comparison(cells, len(keys(a) - keys(b)), len(keys(b) - keys(a)),
                      metadata_differences(base, new))


def _run_metadata(df: pd.DataFrame) -> dict:
    """Each metadata field's values over the run's rows, "a, b" where rows differ."""
    out = {}
    for key in machine_info():
        if key in df.columns:
            values = sorted({str(v) for v in df[key] if not pd.isna(v) and str(v) != ""})
            out[key] = ", ".join(values)
    return out


def metadata_differences(base: pd.DataFrame, new: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(field, BASE's value, NEW's value) for each metadata field the two runs differ in
    ("?" where a table lacks it)."""
    a, b = _run_metadata(base), _run_metadata(new)
    return [(key, a.get(key, "?") or "?", b.get(key, "?") or "?") for key in machine_info()
            if (a.get(key) or "?") != (b.get(key) or "?")]
