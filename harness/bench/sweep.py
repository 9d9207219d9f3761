"""``adam-bench bench``: the throughput sweep over subjects x dtypes x workloads.

Every cell is one subject stepping one workload, timed in turn with the roofline kernel at
the same element count (harness.core.timing), so each row's fraction of roofline comes from the
same moments. The table is rewritten atomically after each cell, so a killed sweep leaves
the cells done so far, and ``resume`` skips them next time.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from backends import AdamConfig

from ..core.machine import machine_id, machine_info
from ..core.results_io import atomic_write_text, read_table, write_tables
from ..core.steppers import UnsupportedOption
from ..core.tables import add_derived, state_label, summary
from ..core.timing import format_repeats, time_interleaved
from ..subjects import Subject
from .roofline import roofline_step, roofline_unavailable_reason
from .workloads import Workload, flat_workload, model_workload

__all__ = ["SweepConfig", "Cell", "plan_cells", "run_sweep", "CELL_KEY"]

CELL_KEY = ["machine", "workload", "elements", "label", "dtype", "amsgrad", "state"]


@dataclass
class SweepConfig:
    """What to sweep; the defaults finish in a few minutes on a 2-core laptop."""

    sizes: list[int] = field(default_factory=lambda: [2**e for e in range(10, 25, 2)])
    dtypes: list[str] = field(default_factory=lambda: ["float32"])
    amsgrad: bool = False
    models: list[str] = field(default_factory=lambda: ["gpt2-small", "bert-base", "resnet50"])
    model_elements: int | None = 2**20
    scale: float | None = None
    repeats: int = 15
    max_seconds: float = 1.0
    python_max_size: int = 2**16
    #: "full" (moments in the params' dtype) and, with ``bench --state int8``, "int8"
    states: list[str] = field(default_factory=lambda: ["full"])

    def workloads(self) -> list[Workload]:
        flats = [flat_workload(n) for n in self.sizes]
        models = [model_workload(m, scale=self.scale,
                                 elements=None if self.scale else self.model_elements,
                                 flat_buffer=flat)
                  for flat in (False, True) for m in self.models]
        extra = sorted({m.elements for m in models} - set(self.sizes))
        return flats + [flat_workload(n) for n in extra] + models


@dataclass(frozen=True)
class Cell:
    workload: Workload
    subject: Subject | None  # None: the roofline
    device: str
    dtype: str
    amsgrad: bool
    state: str = "full"

    @property
    def label(self) -> str:
        return state_label(self.subject.label if self.subject else "roofline", self.state)

    def key(self) -> tuple:
        return (machine_id(), self.workload.name, self.workload.elements, self.label,
                self.dtype, self.amsgrad, self.state)


def plan_cells(cfg: SweepConfig, subjects: list[Subject]) -> list[Cell]:
    """Roofline first at each element count and device, then every subject; with int8
    state (float32 only) its roofline and the subjects measured in it follow: the
    backends that implement it (with ``bench --state int8``) and the peers whose state is
    always int8 (in every run: they have no fp32 rows)."""
    devices = sorted({s.device for s in subjects if s.make is not None} or {"cpu"})
    states = cfg.states + sorted({s.state for s in subjects} - set(cfg.states))
    cells = []
    for dtype in cfg.dtypes:
        for amsgrad in sorted({False, cfg.amsgrad}):
            for workload in cfg.workloads():
                for state in states:
                    if state != "full" and dtype != "float32":
                        continue
                    for device in devices:
                        if workload.name == "flat" and not amsgrad:
                            cells.append(Cell(workload, None, device, dtype, False, state))
                    for subject in subjects:
                        if state in _measured_states(subject, cfg.states):
                            cells.append(Cell(workload, subject, subject.device, dtype,
                                              amsgrad, state))
    return cells


def _measured_states(subject: Subject, states: list[str]) -> list[str]:
    """The state formats ``subject`` is measured in: a peer's own when it always keeps
    one; every format of ``states`` for a backend with int8 state; else "full"."""
    if subject.state != "full":
        return [subject.state]
    return states if _has_int8_state(subject) else ["full"]


def _has_int8_state(subject: Subject) -> bool:
    """Whether ``subject`` is one of our backends (CPU or GPU) with int8 state."""
    from backends import get_backend

    return (subject.kind == "backend" and subject.make is not None
            and get_backend(subject.label).supports_int8_state)


def _skip_reason(cell: Cell, cfg: SweepConfig) -> str | None:
    subject = cell.subject
    if subject is None:
        return roofline_unavailable_reason(cell.device)
    if subject.make is None:
        return subject.reason
    if cell.workload.flat_buffer and subject.kind != "backend":
        return "the flat-buffer layout is ours (Backend.flatten); peers get separate tensors"
    if subject.label == "python" and cell.workload.elements > cfg.python_max_size:
        return f"pure Python skipped above {cfg.python_max_size} elements (--python-max-size)"
    return None


def _measure(cell: Cell, cfg: SweepConfig) -> dict:
    """Time the cell in turn with the roofline at the same element count, and a
    model-shaped cell also with the same subject on one flat tensor of that size, so
    ``roofline_seconds`` and ``flat_seconds`` come from the same moments as the cell's."""
    timing_options = {"repeats": cfg.repeats, "max_seconds": cfg.max_seconds}
    roofline = roofline_step(cell.workload.elements, cell.dtype, cell.device, cell.state)
    if cell.subject is None:
        timing, = time_interleaved([roofline], **timing_options)
        return _timing_columns(timing) | {"threads": machine_info()["numba_threads"],
                                          "roofline_seconds": timing.median,
                                          "roofline_seconds_repeats": format_repeats(
                                              timing.per_step)}
    stepper, step = _stepper(cell.subject, cell.workload, cell.dtype, cell.amsgrad,
                             cell.state)
    steppers, steps = [stepper], [step, roofline]
    if cell.workload.name != "flat":
        flat_stepper, flat_step = _stepper(cell.subject, flat_workload(cell.workload.elements),
                                           cell.dtype, cell.amsgrad, cell.state)
        steppers.append(flat_stepper)
        steps.append(flat_step)
    compiles = [s.compile_count() for s in steppers]
    timings = time_interleaved(steps, **timing_options)
    if [s.compile_count() for s in steppers] != compiles:
        raise RuntimeError(f"{cell.label} compiled inside timed steps ({cell.workload.name}, "
                           f"{cell.workload.elements} elements): its timing would include it")
    extra = {"flat_seconds": timings[2].median} if len(timings) == 3 else {}
    return _timing_columns(timings[0]) | extra | {
        "state_bytes": stepper.state_nbytes(),
        "threads": stepper.threads, "roofline_seconds": timings[1].median,
        "roofline_seconds_repeats": format_repeats(timings[1].per_step),
        "compile_seconds": stepper.compile_seconds,
        "build_seconds": cell.subject.build_seconds}


def _stepper(subject: Subject, workload: Workload, dtype: str, amsgrad: bool,
             state: str = "full"):
    """(stepper, (step, sync, timer)) of ``subject`` on seeded random params and grads."""
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(dtype) for s in workload.shapes]
    grads = [rng.standard_normal(s).astype(dtype) for s in workload.shapes]
    layout = {"flat_buffer": True} if workload.flat_buffer else {}
    cfg = AdamConfig(amsgrad=amsgrad, state_dtype=None if state == "full" else state)
    stepper = subject.make(params, cfg, **layout)
    prepared = stepper.prepare(grads)
    return stepper, (lambda: stepper.step(prepared), stepper.sync, stepper.timer())


def _timing_columns(timing) -> dict:
    """The timing's summary and its per-repeat seconds (for ``adam-bench compare``)."""
    return {"seconds_median": timing.median, "seconds_min": timing.best,
            "seconds_repeats": format_repeats(timing.per_step),
            "spread": timing.spread, "repeats": len(timing.per_step),
            "steps_per_repeat": timing.steps_per_repeat, "warmup_seconds": timing.warmup_seconds}


def run_sweep(cfg: SweepConfig, subjects: list[Subject], out_stem: str | Path,
              resume: bool = False, show_progress: bool = True) -> pd.DataFrame:
    """Measure every planned cell (skipping ones already in ``out_stem``.csv with
    ``resume``); returns the table with derived columns, also written to ``out_stem``.*."""
    out_stem = Path(out_stem)
    rows = []
    csv = out_stem.with_suffix(".csv")
    if resume and csv.exists():
        rows = read_table(csv).to_dict("records")
    done = {tuple(r.get(k, "full") for k in CELL_KEY) for r in rows}
    cells = [c for c in plan_cells(cfg, subjects) if c.key() not in done]
    info = machine_info()
    for cell in tqdm(cells, desc="adam-bench", unit="cell", disable=not show_progress):
        row = dict(zip(CELL_KEY, cell.key()))
        row.update({"tensors": cell.workload.tensors, "kind": cell.subject.kind
                    if cell.subject else "roofline", "device": cell.device, "note": ""})
        reason = _skip_reason(cell, cfg)
        if not reason:
            try:
                row.update(_measure(cell, cfg))
            except UnsupportedOption as exc:
                reason = f"not supported: {exc}"
        if reason:
            row.update(seconds_median=np.nan, note=f"skipped: {reason}")
        row.update(info)
        row["timestamp"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds")
        rows.append(row)
        _write(rows, out_stem, final=False)
    return _write(rows, out_stem, final=True)


def _write(rows, out_stem: Path, final: bool) -> pd.DataFrame:
    df = add_derived(pd.DataFrame(rows))
    if final:
        write_tables(df, out_stem, markdown=summary(df))
    else:
        atomic_write_text(out_stem.with_suffix(".csv"), df.to_csv(index=False))
    return df
