"""Result tables on disk: CSV, JSON and Markdown, each written atomically, each with the
machine and software that made it (harness.core.machine): columns in CSV and JSON (a row's own
values win: a resumed sweep or a pytest-benchmark file says who measured it), a line under
the Markdown table."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from backends.files import atomic_write

__all__ = ["RESULTS_DIR", "atomic_write_text", "with_metadata", "metadata_line", "write_tables",
           "read_table"]

#: Where every command writes by default: ignored by git, so a run never rewrites the
#: curated results/<command>/ files (results/README.md says which command made each).
RESULTS_DIR = Path("results/local")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` (its directory made if needed) with the mode a normal
    file gets: a reader (or a killed writer) sees either the old file or the whole new
    one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode()))


def with_metadata(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a column per ``machine_info()`` field it lacks, holding this machine's
    value (columns it has are kept as they are)."""
    from .machine import machine_info

    missing = {k: v for k, v in machine_info().items() if k not in df.columns}
    return df.assign(**missing) if missing else df


def metadata_line(df: pd.DataFrame) -> str:
    """"run on: cpu AMD EPYC, cores 2, ...": the metadata of ``df``'s first row (the
    values every row of one run shares; this machine's for an empty table), empty fields
    left out."""
    from .machine import machine_info

    first = with_metadata(df).iloc[0] if not df.empty else pd.Series(machine_info())
    fields = [f"{k} {first[k]}" for k in machine_info()
              if not pd.isna(first[k]) and str(first[k]) != ""]
    return "run on: " + ", ".join(fields)


def write_tables(df: pd.DataFrame, stem: str | os.PathLike, markdown: pd.DataFrame | None = None
                 ) -> list[Path]:
    """``stem``.csv and .json with every column and the metadata's, .md with ``markdown``
    (default: df) and the metadata line under it."""
    stem = Path(stem)
    shown = df if markdown is None else markdown
    df = with_metadata(df)
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".json"), stem.with_suffix(".md")]
    atomic_write_text(paths[0], df.to_csv(index=False))
    atomic_write_text(paths[1], df.to_json(orient="records", indent=1))
    atomic_write_text(paths[2], shown.to_markdown(index=False) + f"\n\n{metadata_line(df)}\n")
    return paths


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A table written by ``write_tables`` (CSV or JSON, by suffix)."""
    path = Path(path)
    return pd.read_json(path, orient="records") if path.suffix == ".json" else pd.read_csv(path)
