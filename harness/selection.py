"""Backend selection from measured results: the fastest available backend for a workload.

The table is every ``results/bench*.csv`` row measured on this machine (CPU model, cores
and GPU name match; the newest of each cell), or one passed in. Without a usable table
the built-in order decides: on CPU numba, then numpy, then python; on CUDA cupy, then
numba-cuda.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from backends import list_backends

from .machine import machine_id
from .results_io import RESULTS_DIR, read_table

__all__ = ["Choice", "choose_backend", "FALLBACK_ORDER", "newest_table"]

FALLBACK_ORDER = {"cpu": ["numba", "numpy", "python"], "cuda": ["cupy", "numba-cuda"]}


@dataclass(frozen=True)
class Choice:
    """The chosen backend and a one-line reason."""

    name: str
    reason: str


def newest_table(results_dir: str | Path = RESULTS_DIR) -> pd.DataFrame | None:
    """This machine's rows from every bench table in ``results_dir``, the newest
    measurement of each cell kept (tables from several sweeps complement each other)."""
    tables = [read_table(path) for path in Path(results_dir).glob("bench*.csv")]
    tables = [t[t["machine"] == machine_id()] for t in tables if "machine" in t.columns]
    rows = pd.concat([t for t in tables if not t.empty] or [pd.DataFrame()])
    if rows.empty:
        return None
    key = ["workload", "label", "dtype", "amsgrad", "elements"]
    return rows.sort_values("timestamp").drop_duplicates(key, keep="last")


def choose_backend(sizes, dtype: str = "float32", device: str = "cpu",
                   table: pd.DataFrame | None = None, amsgrad: bool = False) -> Choice:
    """The fastest available backend for tensors of these sizes, by measured results.

    A backend's estimate is its step time interpolated (log-log) at the total element count
    over its flat-tensor rows of the same dtype and amsgrad setting; past its largest
    measured size it grows linearly (a step cannot get cheaper per element than it was),
    below its smallest it is the smallest size's time.
    """
    if device not in FALLBACK_ORDER:
        raise ValueError(f"device must be one of {list(FALLBACK_ORDER)}, got {device!r}")
    total = int(sum(int(n) for n in sizes))
    available = {r.name for r in list_backends() if r.available and r.device == device}
    if not available:
        raise ValueError(f"no available backend for device {device!r} "
                         "(adam-bench backends says why)")
    if table is None:
        table = newest_table()
    estimates = _estimates(table, total, dtype, device, amsgrad, available) \
        if table is not None else {}
    if estimates:
        name = min(estimates, key=estimates.get)
        return Choice(name, f"{name}: fastest measured for {total} {dtype} elements on {device} "
                            f"(~{estimates[name] * 1e6:.1f} us/step; "
                            f"{len(estimates)} candidates)")
    name = next(n for n in FALLBACK_ORDER[device] if n in available)
    return Choice(name, f"{name}: no measured results for this machine, built-in order "
                        f"{' > '.join(FALLBACK_ORDER[device])}")


def _estimates(table, total, dtype, device, amsgrad, available) -> dict[str, float]:
    rows = table[(table["kind"] == "backend") & (table["workload"] == "flat")
                 & (table["dtype"] == dtype) & (table["device"] == device)
                 & (table["amsgrad"] == amsgrad) & table["seconds_median"].notna()]
    out = {}
    for name, group in rows.groupby("label"):
        if name not in available:
            continue
        group = group.sort_values("elements")
        n = group["elements"].to_numpy(dtype=float)
        t = group["seconds_median"].to_numpy(dtype=float)
        if total > n[-1]:
            out[name] = float(t[-1] * total / n[-1])
        else:
            out[name] = float(np.exp(np.interp(np.log(max(total, 1)), np.log(n), np.log(t))))
    return out
