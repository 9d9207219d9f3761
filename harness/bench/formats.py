"""``adam-bench bench --format ...``: each training format's step against the fp32 step,
against its own roofline and against the peers in that format, timed in turn in the same
run (``harness.core.timing``).

Per size and format, every backend's fp32 step is timed interleaved with its step in the
format, that format's roofline (its streams, trivial arithmetic: ``roofline_streams``) and
the peers' steps in the format (``harness.subjects.peers.low_precision``), so
``speed_vs_fp32``, ``fraction_of_roofline`` and ``speedup_over_peer`` are same-run ratios.
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
from ..subjects.peers.low_precision import format_peers, peer_step
from .roofline import format_roofline

__all__ = ["run_format_bench", "format_step"]


def format_step(backend, fmt: Format, n: int, seed: int = 0):
    """(step, sync) of ``backend`` stepping one tensor of ``n`` elements in ``fmt``, its
    arrays on the backend's device. One step is taken here, untimed: it makes the
    step's plan, and the kernel for the format's types compiles there (numba-cuda,
    numba), so no step handed to timing compiles, whatever the timing's warm-up."""
    rng = np.random.default_rng(seed)
    params = [backend.asarray(rng.standard_normal(n).astype(np.float32).astype(fmt.dtype))]
    grads = [backend.asarray(rng.standard_normal(n).astype(np.float32).astype(fmt.dtype)
                             * fmt.dtype.type(1e-3))]
    cfg = fmt.config(lr=1e-4)
    state = backend.init_state(params, cfg)

    def step():
        backend.step(params, grads, state, cfg)

    step()
    return step, backend.synchronize


def run_format_bench(formats: list[str], sizes: list[int], backends: list[str],
                     out_stem: str | Path, repeats: int = 15, max_seconds: float = 1.0,
                     peers: bool = True, show=print) -> pd.DataFrame:
    """Measure every (size, format) cell: each backend's fp32 and format steps, the
    format's roofline and (``peers``) the peers in that format, all interleaved; write
    ``out_stem``.csv/.json/.md. A peer row's ``speedup_over_peer`` is its step time over
    the first backend's in the same format; the peers run on that backend's device, and
    each backend's row holds the roofline of its own device."""
    rows = []
    info = machine_info()
    threads, machine = info["numba_threads"], machine_id()
    for n in sizes:
        chosen = [(name, get_backend(name)) for name in backends]
        devices = list(dict.fromkeys(backend.device for _, backend in chosen))
        bases = [format_step(backend, FORMATS["fp32"], n) for _, backend in chosen]
        for fmt_name in formats:
            fmt = FORMATS[fmt_name]
            nbytes = fmt.bytes_per_element()
            ours = [format_step(backend, fmt, n) for _, backend in chosen]
            roofs = [format_roofline(fmt, n, device) for device in devices]
            rival = [(p.label, peer_step(p, n, device=devices[0]))
                     for p in (format_peers(fmt_name, devices[0]) if peers else [])]
            runnable = [(label, step) for label, step in rival if not isinstance(step, str)]
            timings = iter([t.median for t in time_interleaved(
                [*bases, *ours, *roofs, *(step for _, step in runnable)],
                repeats=repeats, max_seconds=max_seconds)])
            t_fp32, t_ours = _take(timings, len(chosen)), _take(timings, len(chosen))
            t_roof = dict(zip(devices, _take(timings, len(devices))))
            t_peer = dict(zip((label for label, _ in runnable), timings))

            def row(subject, kind, t, fp32, device, note=""):
                return {"elements": n, "backend": subject, "kind": kind, "format": fmt_name,
                        "device": device, "bytes_per_element": nbytes,
                        "us_per_step": t * 1e6, "fp32_us_per_step": fp32 * 1e6,
                        "roofline_us": t_roof[device] * 1e6, "gb_per_s": nbytes * n / t / 1e9,
                        "fraction_of_roofline": t_roof[device] / t, "speed_vs_fp32": fp32 / t,
                        "speedup_over_peer": t / t_ours[0], "note": note, "threads": threads,
                        "machine": machine}

            for (name, backend), t, fp32 in zip(chosen, t_ours, t_fp32):
                rows.append(row(name, "ours", t, fp32, backend.device)
                            | {"speedup_over_peer": np.nan})
            for label, step in rival:
                if isinstance(step, str):
                    rows.append(row(label, "peer", np.nan, t_fp32[0], devices[0], note=step))
                else:
                    rows.append(row(label, "peer", t_peer[label], t_fp32[0], devices[0]))
            for r in rows[-len(chosen) - len(rival):]:
                show(_line(r))
            del ours, roofs, rival, runnable
        del bases
    df = pd.DataFrame(rows)
    write_tables(df, Path(out_stem), markdown=df.drop(columns=["machine"]).round(3))
    return df


def _take(values, count: int) -> list:
    """The next ``count`` items of the iterator ``values``."""
    return [next(values) for _ in range(count)]


def _line(r: dict) -> str:
    """One progress line of a row."""
    head = f"{r['backend']:19} {r['format']:15} 2^{int(np.log2(r['elements'])):<3} " \
           f"{r['bytes_per_element']:3d} B/el"
    if r["note"]:
        return f"{head}  {r['note']}"
    tail = f"  {r['speedup_over_peer']:.2f}x ours" if r["kind"] == "peer" else ""
    return (f"{head} {r['us_per_step']:10.1f} us  {r['fraction_of_roofline']:.2f} of its "
            f"roofline  {r['speed_vs_fp32']:.2f}x fp32{tail}")
