"""pytest-benchmark JSON -> the sweep's table (same columns, same derived math, the
rounds' times and the run's machine and software)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..core.tables import add_derived
from ..core.timing import format_repeats

__all__ = ["benchmark_json_to_table", "EXTRA_INFO_KEYS", "MACHINE_INFO_KEY"]

#: What tests/benchmarks put in ``benchmark.extra_info``; the table's key columns.
EXTRA_INFO_KEYS = ("label", "kind", "device", "workload", "dtype", "amsgrad", "elements",
                   "tensors")


#: Where tests/benchmarks/conftest.py puts ``harness.core.machine.machine_info()`` in the
#: JSON's machine_info.
MACHINE_INFO_KEY = "adam_bench"


def _metadata(data: dict) -> dict:
    """The run's metadata columns: ours when the benchmarks' conftest added them, else
    what pytest-benchmark's own machine_info and commit_info say (the rest blank: this
    machine's values are not the run's)."""
    from ..core.machine import machine_info

    machine = data.get("machine_info", {})
    if MACHINE_INFO_KEY in machine:
        return dict(machine[MACHINE_INFO_KEY])
    cpu = machine.get("cpu", {})
    commit = data.get("commit_info", {})
    return dict.fromkeys(machine_info(), "") | {
            "cpu": cpu.get("brand_raw") or machine.get("processor", ""),
            "cores": cpu.get("count"), "python": machine.get("python_version", ""),
            "git_commit": (commit.get("id") or "") + ("+dirty" if commit.get("dirty") else "")}


def benchmark_json_to_table(path: str | Path) -> pd.DataFrame:
    """One row per benchmark that carries our extra_info; others are ignored."""
    data = json.loads(Path(path).read_text())
    metadata = _metadata(data)
    rows = []
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if not all(k in info for k in EXTRA_INFO_KEYS):
            continue
        stats = bench["stats"]
        rows.append({**{k: info[k] for k in EXTRA_INFO_KEYS},
                     "seconds_median": stats["median"], "seconds_min": stats["min"],
                     "spread": stats["iqr"] / stats["median"] if stats["median"] else 0.0,
                     "repeats": stats["rounds"], "seconds_repeats":
                         format_repeats(stats.get("data", ())), "note": "", **metadata,
                     "test": bench["name"], "datetime": data.get("datetime", "")})
    if not rows:
        raise ValueError(f"{path} holds no benchmarks from tests/benchmarks (no extra_info)")
    return add_derived(pd.DataFrame(rows))
