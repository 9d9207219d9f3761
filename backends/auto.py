"""``backend="auto"``: the fastest available backend for some tensors, by measured step times.

The measured table is a CSV of step times as ``adam-bench bench`` writes them (columns
``label, kind, workload, device, dtype, amsgrad, elements, seconds_median``), read from the
first of these that is given, and from nowhere else:

1. the ``table`` argument (``Adam(params, backend="auto", table=path)``), a path or rows;
2. the environment variable ``ADAM_BACKENDS_TABLE``, a path;
3. the per-user cache ``$XDG_CACHE_HOME/adam-backends/bench-<host>.csv`` (``~/.cache`` when
   XDG_CACHE_HOME is unset), which every ``adam-bench bench`` run updates with its rows.

Without a table, or without rows for the tensors' dtype and device, the built-in order
decides (numba > numpy > python on CPU, cupy > numba-cuda on CUDA), and the Choice says so.
"""
from __future__ import annotations

import csv
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .registry import list_backends

__all__ = ["Choice", "FALLBACK_ORDER", "TABLE_ENV", "choose_backend", "table_path",
           "user_table_path"]

FALLBACK_ORDER = {"cpu": ["numba", "numpy", "python"], "cuda": ["cupy", "numba-cuda"]}

#: The environment variable naming a measured table.
TABLE_ENV = "ADAM_BACKENDS_TABLE"


@dataclass(frozen=True)
class Choice:
    """The chosen backend, a one-line reason, the table it came from (None: no table),
    and whether the built-in order decided."""

    name: str
    reason: str
    table: str | None = None
    fallback: bool = False


def user_table_path() -> Path:
    """The per-user cache of this host's measurements (written by ``adam-bench bench``)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"
    return Path(root) / "adam-backends" / f"bench-{host}.csv"


def table_path(table: str | os.PathLike | None = None) -> Path | None:
    """The table "auto" reads: ``table``, else $ADAM_BACKENDS_TABLE, else the user cache
    when it exists, else None. A named file that does not exist is an error."""
    for given, what in ((table, "table"), (os.environ.get(TABLE_ENV), TABLE_ENV)):
        if given:
            if not Path(given).is_file():
                raise ValueError(f"{what}: no measured table at {os.fspath(given)!r} "
                                 "(expected a CSV written by adam-bench bench)")
            return Path(given)
    cached = user_table_path()
    return cached if cached.is_file() else None


def _read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def choose_backend(sizes, dtype: str = "float32", device: str = "cpu", table=None,
                   amsgrad: bool = False) -> Choice:
    """The fastest available backend for tensors of these sizes.

    ``table`` is a path, a list of row mappings, a DataFrame, or None (the documented
    places above). A backend's estimate is its step time interpolated (log-log) at the
    total element count over its flat-tensor rows of the same dtype and amsgrad setting;
    past its largest measured size it grows linearly (a step cannot get cheaper per element
    than it was), below its smallest it is the smallest size's time.
    """
    if device not in FALLBACK_ORDER:
        raise ValueError(f"device must be one of {list(FALLBACK_ORDER)}, got {device!r}")
    total = int(sum(int(n) for n in sizes))
    available = {r.name for r in list_backends() if r.available and r.device == device}
    if not available:
        raise ValueError(f"no available backend for device {device!r} "
                         "(adam-bench backends says why)")
    source = None
    if hasattr(table, "to_dict"):
        table = table.to_dict("records")
    elif table is None or isinstance(table, (str, os.PathLike)):
        path = table_path(table)
        source = None if path is None else os.fspath(path)
        table = [] if path is None else _read_rows(path)
    else:
        source = "rows given"
    estimates = _estimates(table, total, dtype, device, amsgrad, available)
    if estimates:
        name = min(estimates, key=estimates.get)
        return Choice(name, f"{name}: fastest measured for {total} {dtype} elements on {device} "
                            f"(~{estimates[name] * 1e6:.1f} us/step; {len(estimates)} "
                            f"candidates)", source or "rows given")
    order = [n for n in FALLBACK_ORDER[device] if n in available] or sorted(available)
    why = ("no measured table (run adam-bench bench, or set " + TABLE_ENV + ")"
           if source is None and not table else
           f"no {dtype} {device} rows in {source or 'the rows given'}")
    return Choice(order[0], f"{order[0]}: {why}; built-in order "
                            f"{' > '.join(FALLBACK_ORDER[device])}", source, fallback=True)


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("true", "1")


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _estimates(rows, total, dtype, device, amsgrad, available) -> dict[str, float]:
    measured: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        seconds, elements = _number(row.get("seconds_median")), _number(row.get("elements"))
        if (row.get("kind") == "backend" and row.get("workload") == "flat"
                and str(row.get("dtype")) == dtype and row.get("device") == device
                and _truthy(row.get("amsgrad")) == bool(amsgrad) and row.get("label") in available
                and np.isfinite(seconds) and elements > 0):
            measured.setdefault(row["label"], []).append((elements, seconds))
    out = {}
    for name, points in measured.items():
        n, t = (np.array(column, dtype=float) for column in zip(*sorted(points)))
        if total > n[-1]:
            out[name] = float(t[-1] * total / n[-1])
        else:
            out[name] = float(np.exp(np.interp(np.log(max(total, 1)), np.log(n), np.log(t))))
    return out
