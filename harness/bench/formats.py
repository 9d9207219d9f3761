"""``adam-bench bench --format ...``: each training format's step against the fp32 step
and against its own roofline, timed in turn in the same run (``harness.timing``).

Per size and backend the fp32 step is timed interleaved with each format's step and that
format's roofline (its streams, trivial arithmetic: ``roofline_streams``), so
``speed_vs_fp32`` and ``fraction_of_roofline`` are same-run ratios.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from backends import get_backend

from ..core.formats import FORMATS, Format
from ..core.machine import machine_id, machine_info
from ..core.results_io import write_tables
from ..core.timing import time_interleaved
from .roofline import format_roofline

__all__ = ["run_format_bench", "format_step"]


def format_step(backend, fmt: Format, n: int, seed: int = 0):
    """(step, sync) of ``backend`` stepping one tensor of ``n`` elements in ``fmt``."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(np.float32).astype(fmt.dtype)]
    grads = [rng.standard_normal(n).astype(np.float32).astype(fmt.dtype) * fmt.dtype.type(1e-3)]
    cfg = fmt.config(lr=1e-4)
    state = backend.init_state(params, cfg)
    return (lambda: backend.step(params, grads, state, cfg)), backend.synchronize


def run_format_bench(formats: list[str], sizes: list[int], backends: list[str],
                     out_stem: str | Path, repeats: int = 15, max_seconds: float = 1.0,
                     show=print) -> pd.DataFrame:
    """Measure every (size, backend, format) cell; write ``out_stem``.csv/.json/.md."""
    rows = []
    info = machine_info()
    fp32 = FORMATS["fp32"]
    for n in sizes:
        for name in backends:
            backend = get_backend(name)
            base = format_step(backend, fp32, n)
            for fmt_name in formats:
                fmt = FORMATS[fmt_name]
                steps = [base, format_step(backend, fmt, n), format_roofline(fmt, n)]
                t_fp32, t_fmt, t_roof = (t.median for t in time_interleaved(
                    steps, repeats=repeats, max_seconds=max_seconds))
                nbytes = fmt.bytes_per_element()
                rows.append({
                    "elements": n, "backend": name, "format": fmt_name,
                    "bytes_per_element": nbytes, "us_per_step": t_fmt * 1e6,
                    "fp32_us_per_step": t_fp32 * 1e6, "roofline_us": t_roof * 1e6,
                    "gb_per_s": nbytes * n / t_fmt / 1e9,
                    "fraction_of_roofline": t_roof / t_fmt, "speed_vs_fp32": t_fp32 / t_fmt,
                    "threads": info["numba_threads"], "machine": machine_id()})
                r = rows[-1]
                show(f"{name:6} {fmt_name:12} 2^{int(np.log2(n)):<3} {nbytes:3d} B/el "
                     f"{r['us_per_step']:10.1f} us  {r['fraction_of_roofline']:.2f} of its "
                     f"roofline  {r['speed_vs_fp32']:.2f}x fp32")
            del base
    df = pd.DataFrame(rows)
    write_tables(df, Path(out_stem), markdown=df.drop(columns=["machine"]).round(3))
    return df
