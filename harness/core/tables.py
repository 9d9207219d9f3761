"""Result-table math: the bytes model of docs/design.md and the columns derived from timings."""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["STREAMS", "bytes_per_element", "state_bytes_per_parameter", "state_label",
           "add_derived", "SUMMARY_COLUMNS", "summary", "versus"]

#: Arrays read or written once per element and step: read p, g, m, v; write p, m, v
#: (amsgrad adds read and write of max_exp_avg_sq).
STREAMS = {False: 7, True: 9}
#: int8 state (backends.int8_codec): bytes per element of one moment, a uint8 code plus
#: its share of a float32 scale per 256-element block.
INT8_MOMENT_BYTES = 1 + 4 / 256


def bytes_per_element(dtype, amsgrad: bool, state: str = "full") -> float:
    """Bytes one step moves per element. Full-precision state (moments in the params'
    dtype): 28 (float32), 36 (float32 + amsgrad), 56 (float64), 72 (float64 + amsgrad).
    state "int8": read and write p, read g, read and write each moment's code and scale:
    16.06 (float32), 18.09 (float32 + amsgrad)."""
    itemsize = np.dtype(dtype).itemsize
    if state == "int8":
        return 3 * itemsize + 2 * (3 if amsgrad else 2) * INT8_MOMENT_BYTES
    return STREAMS[bool(amsgrad)] * itemsize


def state_bytes_per_parameter(dtype, amsgrad: bool, state: str = "full") -> float:
    """Optimizer memory per parameter: 8 (float32 m and v), 12 with amsgrad; "int8":
    2.03 (codes and scales of m and v), 3.05 with amsgrad."""
    moments = 3 if amsgrad else 2
    if state == "int8":
        return moments * INT8_MOMENT_BYTES
    return moments * np.dtype(dtype).itemsize


def state_label(label: str, state: str) -> str:
    """A row's label in a state format: "numba" (full state), "numba[int8]"."""
    return label if state == "full" else f"{label}[{state}]"


def add_derived(df: pd.DataFrame) -> pd.DataFrame:
    """Add state_bytes_per_parameter, bytes_per_step, elements_per_s, gb_per_s,
    roofline_gb_per_s, fraction_of_roofline, speedup_vs_numpy and list_overhead to timing
    rows.

    state_bytes_per_parameter is the row's ``state_bytes`` (what the sweep read from the
    stepper's state arrays after timing) over its elements, else the bytes model's.

    The roofline moves 7 streams of the dtype. A row with ``roofline_seconds`` (the sweep
    times the roofline in turn with each subject) is compared with that; otherwise with
    the fastest roofline row of its device, dtype and element count. ``list_overhead``
    is a model-shaped row's time over the same label's flat tensor of equal element count
    (its own paired ``flat_seconds`` when the sweep measured one, else the flat row).
    """
    df = df.copy()
    if "state" not in df.columns:
        df["state"] = "full"
    df["state"] = df["state"].fillna("full")
    formats = list(zip(df["dtype"], df["amsgrad"], df["state"]))
    per_element = [bytes_per_element(*f) for f in formats]
    state_bytes = pd.Series([state_bytes_per_parameter(*f) for f in formats], index=df.index)
    if "state_bytes" in df.columns:  # measured by the sweep from the stepper's own arrays
        state_bytes = (pd.to_numeric(df["state_bytes"]) / df["elements"]).fillna(state_bytes)
    df["state_bytes_per_parameter"] = state_bytes
    df["bytes_per_step"] = df["elements"] * np.array(per_element, dtype=np.float64)
    df["elements_per_s"] = df["elements"] / df["seconds_median"]
    df["gb_per_s"] = df["bytes_per_step"] / df["seconds_median"] / 1e9
    roof = (df[df["label"].astype(str).str.startswith("roofline")]
            .groupby(["device", "dtype", "state", "elements"])["gb_per_s"].max()
            .rename("roofline_gb_per_s"))
    df = df.drop(columns=["roofline_gb_per_s"], errors="ignore").join(
        roof, on=["device", "dtype", "state", "elements"])
    if "roofline_seconds" in df.columns:
        roof_bytes = df["elements"] * [bytes_per_element(d, False, s)
                                       for d, s in zip(df["dtype"], df["state"])]
        paired = roof_bytes / df["roofline_seconds"] / 1e9
        df["roofline_gb_per_s"] = paired.fillna(df["roofline_gb_per_s"])
    df["fraction_of_roofline"] = df["gb_per_s"] / df["roofline_gb_per_s"]
    key = ["workload", "dtype", "amsgrad", "elements"]
    numpy_time = (df[df["label"] == "numpy"].groupby(key)["seconds_median"].min()
                  .rename("numpy_seconds"))
    df = df.join(numpy_time, on=key)
    df["speedup_vs_numpy"] = df.pop("numpy_seconds") / df["seconds_median"]
    flat_time = (df[df["workload"] == "flat"].groupby(["label", "dtype", "amsgrad", "elements"])
                 ["seconds_median"].min().rename("flat_row_seconds"))
    df = df.join(flat_time, on=["label", "dtype", "amsgrad", "elements"])
    flat_seconds = df.pop("flat_row_seconds")
    if "flat_seconds" in df.columns:
        flat_seconds = df["flat_seconds"].fillna(flat_seconds)
    df["list_overhead"] = np.where(df["workload"] == "flat", np.nan,
                                   df["seconds_median"] / flat_seconds)
    return df


SUMMARY_COLUMNS = ["workload", "elements", "tensors", "label", "kind", "device", "dtype",
                   "amsgrad", "state", "state_bytes_per_parameter", "us_per_step", "gb_per_s",
                   "fraction_of_roofline", "speedup_vs_numpy", "list_overhead", "spread",
                   "compile_seconds", "build_seconds", "note"]


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """The columns a person reads, rounded: for the terminal and the Markdown table."""
    out = df.assign(us_per_step=df["seconds_median"] * 1e6)
    out = out[[c for c in SUMMARY_COLUMNS if c in out.columns]]
    return out.round({"us_per_step": 1, "state_bytes_per_parameter": 2, "gb_per_s": 2, "fraction_of_roofline": 3,
                      "speedup_vs_numpy": 2, "list_overhead": 3, "spread": 3,
                      "compile_seconds": 2, "build_seconds": 2})


def versus(df: pd.DataFrame, baseline: str = "numba", state: str = "full") -> pd.DataFrame:
    """One row per workload, size and dtype of the rows in state format ``state``: the
    roofline's GB/s, ``baseline``'s step time and fraction of the roofline, then every
    other label's step time over the baseline's, each first divided by the roofline timed
    beside it (so the machine's bandwidth drift between cells cancels; above 1: slower
    than the baseline). With state "int8" the baseline is ``baseline[int8]`` and the
    roofline the int8 one. ``df`` has derived columns."""
    key = ["workload", "elements", "dtype", "amsgrad"]
    baseline = state_label(baseline, state)
    measured = df[df["seconds_median"].notna() & (df["state"] == state)
                  & ~df["label"].astype(str).str.startswith("roofline")]
    fraction = measured.pivot_table(index=key, columns="label",
                                    values="fraction_of_roofline", aggfunc="first")
    if baseline not in fraction:
        raise ValueError(f"no measured {baseline!r} rows to compare with")
    base = measured[measured["label"] == baseline].set_index(key)
    out = pd.DataFrame({"roofline_gb_per_s": base["roofline_gb_per_s"].round(1),
                        f"{baseline}_us": (base["seconds_median"] * 1e6).round(1),
                        f"{baseline}_of_roofline": base["fraction_of_roofline"].round(2)})
    others = [c for c in fraction.columns if c != baseline]
    ratios = fraction[[baseline]].to_numpy() / fraction[others]
    out = out.join(ratios.round(2).add_suffix(f" / {baseline}"), how="left")
    order = sorted(out.index, key=lambda k: (k[0] != "flat", k[0], k[2], k[3], k[1]))
    return out.loc[order].reset_index()
