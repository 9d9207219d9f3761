"""pytest-benchmark JSON -> the sweep's table (same columns, same derived math)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .tables import add_derived

__all__ = ["benchmark_json_to_table", "EXTRA_INFO_KEYS"]

#: What tests/benchmarks put in ``benchmark.extra_info``; the table's key columns.
EXTRA_INFO_KEYS = ("label", "kind", "device", "workload", "dtype", "amsgrad", "elements",
                   "tensors")


def benchmark_json_to_table(path: str | Path) -> pd.DataFrame:
    """One row per benchmark that carries our extra_info; others are ignored."""
    data = json.loads(Path(path).read_text())
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw") or machine.get("processor", "")
    rows = []
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if not all(k in info for k in EXTRA_INFO_KEYS):
            continue
        stats = bench["stats"]
        rows.append({**{k: info[k] for k in EXTRA_INFO_KEYS},
                     "seconds_median": stats["median"], "seconds_min": stats["min"],
                     "spread": stats["iqr"] / stats["median"] if stats["median"] else 0.0,
                     "repeats": stats["rounds"], "note": "", "cpu": cpu,
                     "test": bench["name"], "datetime": data.get("datetime", "")})
    if not rows:
        raise ValueError(f"{path} holds no benchmarks from tests/benchmarks (no extra_info)")
    return add_derived(pd.DataFrame(rows))
