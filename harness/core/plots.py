"""Plots of result tables: effective bandwidth against tensor size, the roofline drawn in."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["plot_throughput"]


def plot_throughput(df: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Log-log GB/s vs elements per step for every label on flat tensors, one panel per
    (device, dtype, amsgrad); the roofline is the thick dashed black line."""
    power_of_two = (df["elements"] & (df["elements"] - 1)) == 0  # the swept sizes
    flat = df[(df["workload"] == "flat") & df["seconds_median"].notna() & power_of_two]
    panels = sorted(flat.groupby(["device", "dtype", "amsgrad"]).groups)
    cols = min(len(panels), 2) or 1
    rows = -(-len(panels) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 5 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (device, dtype, amsgrad) in zip(axes.flat, panels):
        panel = flat[(flat["device"] == device) & (flat["dtype"] == dtype)]
        roof = panel[panel["label"] == "roofline"].sort_values("elements")
        ax.plot(roof["elements"], roof["gb_per_s"], "k--", lw=2.5, label="roofline (same streams)")
        roof8 = panel[panel["label"] == "roofline[int8]"].sort_values("elements")
        if not roof8.empty:
            ax.plot(roof8["elements"], roof8["gb_per_s"], "k:", lw=2.5,
                    label="roofline[int8] (int8 state streams)")
        rows = panel[~panel["label"].astype(str).str.startswith("roofline")
                     & (panel["amsgrad"] == amsgrad)]
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # a dozen subjects, apart
        for label, group in rows.groupby("label"):
            group = group.sort_values("elements")
            style = ":" if (group["kind"] == "peer").all() else "-"
            ax.plot(group["elements"], group["gb_per_s"], style, marker="o", ms=4, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("elements per step (one tensor)")
        ax.set_ylabel("effective GB/s (bytes model of docs/design.md)")
        ax.set_title(f"{device} {dtype}" + (" amsgrad" if amsgrad else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
