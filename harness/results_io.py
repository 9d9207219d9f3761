"""Result tables on disk: CSV, JSON and Markdown, each written atomically."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from backends.files import atomic_write

__all__ = ["RESULTS_DIR", "atomic_write_text", "write_tables", "read_table"]

RESULTS_DIR = Path("results")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` (its directory made if needed) with the mode a normal
    file gets: a reader (or a killed writer) sees either the old file or the whole new
    one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode()))


def write_tables(df: pd.DataFrame, stem: str | os.PathLike, markdown: pd.DataFrame | None = None
                 ) -> list[Path]:
    """``stem``.csv and .json with every column, .md with ``markdown`` (default: df)."""
    stem = Path(stem)
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".json"), stem.with_suffix(".md")]
    atomic_write_text(paths[0], df.to_csv(index=False))
    atomic_write_text(paths[1], df.to_json(orient="records", indent=1))
    atomic_write_text(paths[2], (df if markdown is None else markdown).to_markdown(index=False)
                      + "\n")
    return paths


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A table written by ``write_tables`` (CSV or JSON, by suffix)."""
    path = Path(path)
    return pd.read_json(path, orient="records") if path.suffix == ".json" else pd.read_csv(path)
