"""The measured table behind ``backend="auto"`` and ``adam-bench select``.

The choice itself is ``backends.auto.choose_backend`` (the library reads a table, the
harness writes it): every ``adam-bench bench`` run merges its flat-tensor rows into the
per-user table at ``backends.auto.user_table_path()``, the newest measurement of each cell
kept, so sweeps of different sizes or dtypes complement each other.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from backends.auto import user_table_path

from ..core.results_io import atomic_write_text, read_table

__all__ = ["SELECTION_COLUMNS", "newest_rows", "update_user_table"]

#: What the choice reads, plus where and when each row was measured.
SELECTION_COLUMNS = ["label", "kind", "workload", "device", "dtype", "amsgrad", "elements",
                     "seconds_median", "machine", "timestamp"]
_CELL = ["machine", "label", "workload", "device", "dtype", "amsgrad", "elements"]


def newest_rows(*tables: pd.DataFrame) -> pd.DataFrame:
    """The measured flat-tensor backend rows of these tables, the newest of each cell."""
    rows = pd.concat([t.reindex(columns=SELECTION_COLUMNS) for t in tables], ignore_index=True)
    rows = rows[(rows["kind"] == "backend") & (rows["workload"] == "flat")
                & rows["seconds_median"].notna()]
    return (rows.sort_values("timestamp", kind="stable")
            .drop_duplicates(_CELL, keep="last").reset_index(drop=True))


def update_user_table(df: pd.DataFrame, path: str | Path | None = None) -> Path:
    """Merge a sweep's rows into the table "auto" reads (default: the per-user cache)."""
    path = Path(path) if path else user_table_path()
    old = [read_table(path)] if path.is_file() else []
    atomic_write_text(path, newest_rows(*old, df).to_csv(index=False))
    return path
