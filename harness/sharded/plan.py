"""Sharded Adam on paper: per-rank memory and step time for N ranks on a given link.

The model: a step is the shard update (P/N elements at the shard-update rate measured
here) plus a ring reduce-scatter and a ring all-gather, each ``(N-1)/N x bytes /
bandwidth + (N-1) x latency`` (every rank sends N-1 chunks of bytes/N). Memory per rank
(ZeRO stage 1): the full params and gradients, and 1/N of the moments. ``model_check``
applies the same model, with the link fitted to this machine's measured collectives,
to the measured 1- and 2-rank steps.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["predict", "fit_link", "update_rate", "model_check", "plan_table"]


def predict(params: float, ranks: int, link_bytes_per_s: float, latency_s: float,
            update_elements_per_s: float, itemsize: int = 4, moments: int = 2) -> dict:
    """Predicted step time (seconds) and per-rank memory (bytes) of one sharded step."""
    shard = np.ceil(params / ranks)
    update = shard / update_elements_per_s
    collective = 0.0 if ranks == 1 else (
        (ranks - 1) / ranks * params * itemsize / link_bytes_per_s + (ranks - 1) * latency_s)
    return {"update_s": update, "comm_s": 2 * collective, "step_s": update + 2 * collective,
            "state_bytes_per_rank": moments * shard * itemsize,
            "memory_bytes_per_rank": 2 * params * itemsize + moments * shard * itemsize}


def fit_link(table: pd.DataFrame) -> tuple[float, float]:
    """(latency seconds, bytes per second) of one collective step here: a least-squares
    line through the measured multi-rank reduce-scatter and all-gather times against the
    bytes each rank sent."""
    rows = table[table["ranks"] > 1]
    if rows.empty:
        raise ValueError("the table has no multi-rank rows to fit the link to")
    sent = np.concatenate([_sent(rows)] * 2)
    seconds = np.concatenate([rows["reduce_scatter_us"], rows["all_gather_us"]]) / 1e6
    steps = np.concatenate([rows["ranks"] - 1] * 2)
    slope, intercept = np.polyfit(sent, seconds, 1)
    return max(float(intercept / steps.mean()), 0.0), float(1 / slope)


def update_rate(table: pd.DataFrame, ranks: int) -> float:
    """Shard-update elements per second at the largest measured size on ``ranks`` ranks."""
    rows = table[table["ranks"] == ranks]
    if rows.empty:
        raise ValueError(f"the table has no {ranks}-rank rows")
    return float(rows.sort_values("elements")["update_elements_per_s"].iloc[-1])


def model_check(table: pd.DataFrame) -> pd.DataFrame:
    """Every measured row next to the model's prediction for it (link fitted here)."""
    latency, bandwidth = fit_link(table)
    out = []
    for row in table.itertuples():
        guess = predict(row.elements, row.ranks, bandwidth, latency, update_rate(table, row.ranks),
                        np.dtype(row.dtype).itemsize)
        out.append({"ranks": row.ranks, "elements": row.elements,
                    "measured_us": row.total_us, "predicted_us": guess["step_s"] * 1e6,
                    "predicted_over_measured": guess["step_s"] * 1e6 / row.total_us})
    return pd.DataFrame(out)


def plan_table(params: list[float], ranks: list[int], link_gbps: float, latency_us: float,
               table: pd.DataFrame, dtype: str = "float32") -> pd.DataFrame:
    """Predicted memory and step time for each model size x rank count; the shard update
    runs at the rate measured on this machine's largest multi-rank (else 1-rank) run."""
    measured = table[table["dtype"] == dtype]
    rate_ranks = int(measured["ranks"].max())
    rate = update_rate(measured, rate_ranks)
    itemsize = np.dtype(dtype).itemsize
    rows = []
    for p in params:
        for n in ranks:
            g = predict(p, n, link_gbps * 1e9 / 8, latency_us * 1e-6, rate, itemsize)
            rows.append({"params": f"{p:.3g}", "ranks": n, "link_gbps": link_gbps,
                         "state_gb_per_rank": g["state_bytes_per_rank"] / 1e9,
                         "memory_gb_per_rank": g["memory_bytes_per_rank"] / 1e9,
                         "update_ms": g["update_s"] * 1e3, "comm_ms": g["comm_s"] * 1e3,
                         "step_ms": g["step_s"] * 1e3,
                         "unsharded_state_gb": 2 * p * itemsize / 1e9})
    return pd.DataFrame(rows)


def _sent(rows: pd.DataFrame) -> np.ndarray:
    itemsize = rows["dtype"].map(lambda d: np.dtype(d).itemsize)
    return ((rows["ranks"] - 1) / rows["ranks"] * rows["shard_elements"] * rows["ranks"]
            * itemsize).to_numpy(dtype=float)
