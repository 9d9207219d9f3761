"""``adam-bench report --html``: one self-contained HTML page from a results folder.

Every table the harness wrote there (``*.csv``) becomes a section: a bench table gets
its throughput plot (drawn anew, embedded as a base64 PNG), the verdicts and the summary
table; a check table its verdict (rows within tolerance); any other table is shown as it
is. PNGs already in the folder are embedded too, and each section ends with the machine
and software that made it. Nothing is linked: no scripts, no stylesheets, no URLs, so
the page opens anywhere, offline, as one file.
"""
from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path

import pandas as pd

from ..core.results_io import metadata_line, read_table

__all__ = ["html_report", "MAX_ROWS"]

#: Rows shown of a table (the CSV beside the page has them all).
MAX_ROWS = 60

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #1b1b1b; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 12px; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: 12px; }
img { max-width: 100%; border: 1px solid #eee; }
.meta { color: #555; font-size: 12px; } .pass { color: #176f2c; } .fail { color: #b00020; }
"""


def _png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _table(df: pd.DataFrame) -> str:
    """The table without its metadata columns (the section's last line says them)."""
    from ..core.machine import machine_info

    shown = df.drop(columns=[c for c in machine_info() if c in df.columns]).head(MAX_ROWS)
    more = (f"<p class=meta>first {MAX_ROWS} of {len(df)} rows; all in the CSV</p>"
            if len(df) > MAX_ROWS else "")
    return shown.to_html(index=False, na_rep="", border=0, escape=True) + more


def _is_bench(df: pd.DataFrame) -> bool:
    return {"label", "workload", "elements", "seconds_median", "kind"} <= set(df.columns)


def _bench_section(df: pd.DataFrame) -> list[str]:
    from ..core.plots import plot_throughput
    from ..core.tables import add_derived, summary
    from .summary import verdict_lines

    df = add_derived(df)
    parts = []
    if df["seconds_median"].notna().any():
        with tempfile.TemporaryDirectory() as tmp:
            parts.append(_png(plot_throughput(df, Path(tmp) / "plot.png")))
        parts.append(f"<pre>{html.escape(chr(10).join(verdict_lines(None, df)))}</pre>")
    shown = summary(df).drop(columns=["note"], errors="ignore").dropna(subset=["us_per_step"])
    return parts + [_table(shown)]


def _check_section(df: pd.DataFrame) -> list[str]:
    judged = df[df["kind"].isin(["backend", "emulated"])] if "kind" in df else df
    ok = judged["within_tolerance"].fillna(True).astype(bool)
    word = "pass" if ok.all() else "fail"
    return [f'<p class={word}>{word.upper()}: {int(ok.sum())} of {len(ok)} runs of our '
            "backends within tolerance of the float64 reference</p>", _table(df)]


def html_report(results_dir: str | Path, title: str = "adam-bench results") -> str:
    """The page for ``results_dir``; ValueError if it holds no table."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ValueError(f"{results_dir}: not a folder")
    tables = sorted(results_dir.glob("*.csv"), key=lambda p: (not p.stem.startswith("bench"),
                                                             p.stem))
    if not tables:
        raise ValueError(f"{results_dir}: no result tables (*.csv) in it")
    sections, index = [], []
    for n, path in enumerate(tables):
        df = read_table(path)
        if _is_bench(df):
            parts = _bench_section(df)
        elif {"within_tolerance", "subject"} <= set(df.columns):
            parts = _check_section(df)
        else:
            parts = [_table(df)]
        png = path.with_suffix(".png")
        if png.exists() and not _is_bench(df):
            parts.insert(0, _png(png))
        name = html.escape(path.stem)
        index.append(f'<li><a href="#t{n}">{name}</a></li>')
        sections.append(f'<h2 id="t{n}">{name}</h2>' + "".join(parts)
                        + f"<p class=meta>{html.escape(metadata_line(df))}</p>")
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=meta>{html.escape(str(results_dir))}: "
            f"{len(tables)} tables</p><ul>{''.join(index)}</ul>{''.join(sections)}"
            "</body></html>\n")
