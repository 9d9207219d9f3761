"""``adam-bench gpu-report``: the first run on a GPU, in one command.

Four stages, each written to ``results/local/*-<gpu>.*`` as it ends, so a run cut short
keeps what it finished:

- ``tests``: the GPU tests (machine code, CuPy, the Numba CUDA kernel tests on the real
  device, the low-precision kernels, the torch adapter's CUDA tensors), log in
  ``tests-<gpu>.log``;
- ``formats``: every training format (``bench --format``) on the GPU backends, beside
  the fp32 step, the format's GPU roofline and torch's fused and foreach bf16 Adam on
  CUDA tensors (``formats-<gpu>``);
- ``sweep``: float32 and float64, with and without amsgrad, and float32 with int8 state
  beside its own roofline; the GPU roofline timed beside every cell, torch's foreach and
  fused Adam on CUDA as the rivals (``bench-<gpu>``);
- ``check``: agreement with the reference, the GPU backends beside the CPU ones and the
  emulated GPU subjects (``check-<gpu>``).

Without a GPU it refuses at once.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["GpuReportPlan", "gpu_unavailable_reason", "plan_report", "run_gpu_report",
           "GPU_TESTS", "STAGES"]

#: The tests that need (or check code for) a GPU, run with ADAM_BENCH_CUDA_TESTS=1 so the
#: Numba CUDA kernel tests run on the device instead of the simulator.
GPU_TESTS = ("tests/test_machine_code.py", "tests/test_cupy.py", "tests/test_gpu_int8.py",
             "tests/test_torch_adapter_cuda.py", "tests/test_gpu_peers.py",
             "tests/test_gpu_low_precision.py",
             "tests/cuda_sim")

#: The stages in the order they run.
STAGES = ("tests", "formats", "sweep", "check")


def gpu_unavailable_reason() -> str | None:
    """None when a GPU backend can run here, else why neither can."""
    from backends import list_backends

    rows = [r for r in list_backends() if r.device == "cuda"]
    if any(r.available for r in rows):
        return None
    return "; ".join(f"{r.name}: {r.reason}" for r in rows)


@dataclass(frozen=True)
class GpuReportPlan:
    """What one report runs and where it writes."""

    gpu: str
    results: Path
    slug: str
    sizes: tuple[int, ...] = tuple(2**e for e in range(12, 29, 2))
    format_sizes: tuple[int, ...] = (2**16, 2**20, 2**24, 2**28)
    dtypes: tuple[str, ...] = ("float32", "float64")
    states: tuple[str, ...] = ("full", "int8")

    def stem(self, stage: str) -> Path:
        """Where ``stage`` writes: "sweep" -> results/local/bench-<gpu> (+ .csv, ...)."""
        return self.results / f"{'bench' if stage == 'sweep' else stage}-{self.slug}"


def plan_report(gpu_name: str, results: Path = Path("results/local"),
                sizes: list[int] | None = None) -> GpuReportPlan:
    """The plan for a GPU called ``gpu_name`` ("NVIDIA H100 80GB HBM3" -> files
    ``bench-nvidia-h100-80gb-hbm3.*``); ``sizes`` replaces both the sweep's and the
    formats' element counts."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    plan = GpuReportPlan(gpu_name, results, slug)
    return replace(plan, sizes=tuple(sizes), format_sizes=tuple(sizes)) if sizes else plan


def _run_tests(plan: GpuReportPlan) -> bool:
    """The GPU tests on the device, their output also in ``tests-<gpu>.log``."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, ADAM_BENCH_CUDA_TESTS="1")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    log = plan.stem("tests").with_suffix(".log")
    with subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *GPU_TESTS], cwd=root, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as job, open(log, "w") as out:
        for line in job.stdout:
            print(line, end="")
            out.write(line)
    return job.returncode == 0


def _cuda_backends() -> list[str]:
    from backends import list_backends

    return [r.name for r in list_backends() if r.device == "cuda" and r.available]


def _run_formats(plan: GpuReportPlan, repeats: int, max_seconds: float) -> bool:
    from ..bench.formats import run_format_bench
    from ..core.formats import FORMATS

    run_format_bench(list(FORMATS), list(plan.format_sizes), _cuda_backends(),
                     plan.stem("formats"), repeats=repeats, max_seconds=max_seconds)
    return True


def _run_sweep(plan: GpuReportPlan, repeats: int, max_seconds: float) -> bool:
    from ..bench.sweep import SweepConfig, run_sweep
    from ..core.plots import plot_throughput
    from ..subjects import collect_subjects

    sweep = SweepConfig(sizes=list(plan.sizes), dtypes=list(plan.dtypes), amsgrad=True,
                        models=[], repeats=repeats, max_seconds=max_seconds,
                        states=list(plan.states))
    subjects = collect_subjects(_cuda_backends(), peers=True, device="cuda")
    df = run_sweep(sweep, subjects, plan.stem("sweep"))
    plot_throughput(df, plan.stem("sweep").with_suffix(".png"), title=plan.gpu)
    return True


def _run_check(plan: GpuReportPlan) -> bool:
    from ..check import run_check
    from ..core.results_io import write_tables
    from ..subjects import collect_subjects

    report = run_check(collect_subjects(emulated=True), dtypes=plan.dtypes)
    write_tables(report.agreement, plan.stem("check"))
    write_tables(report.edges, plan.stem("check").with_name(plan.stem("check").name
                                                           + "-edge-cases"))
    return report.ok


def run_gpu_report(repeats: int = 15, max_seconds: float = 2.0,
                   stages: tuple[str, ...] = STAGES, sizes: list[int] | None = None) -> int:
    """Run ``stages`` in STAGES order, each going on whatever an earlier one did; 0 when
    every stage passed (tests and check green, the benchmarks ran to the end), 1 otherwise.
    A stage that raises prints its traceback and counts as failed."""
    from backends.cuda.device import numba_device_name

    from ..core.machine import machine_info

    plan = plan_report(machine_info()["gpu"] or numba_device_name(), sizes=sizes)
    plan.results.mkdir(parents=True, exist_ok=True)
    runs = {"tests": lambda: _run_tests(plan),
            "formats": lambda: _run_formats(plan, repeats, max_seconds),
            "sweep": lambda: _run_sweep(plan, repeats, max_seconds),
            "check": lambda: _run_check(plan)}
    failed = []
    for stage in (s for s in STAGES if s in stages):
        start = time.perf_counter()
        try:
            ok = runs[stage]()
        except Exception:  # one stage's fault must not lose the others' results
            traceback.print_exc()
            ok = False
        verdict = "passed" if ok else "FAILED"
        print(f"gpu-report: {stage} {verdict} in {time.perf_counter() - start:.0f} s "
              f"({plan.stem(stage)}.*)", flush=True)
        failed += [] if ok else [stage]
    return 1 if failed else 0
