"""``adam-bench gpu-report``: the first run on a GPU, in one command.

Runs the GPU tests (machine code, the CuPy tests and the Numba CUDA kernel tests on the
real device), the agreement check with the GPU backends beside the CPU ones and the
emulated GPU subjects (and the int8 state agreement of the GPU kernels), and the GPU
sweep (2^12..2^28 elements, float32 and float64, with and without amsgrad, and float32
with int8 state beside its own roofline; the GPU roofline timed beside every cell), writing
``results/local/check-<gpu>.*`` and ``results/local/bench-<gpu>.*``. Without a GPU it refuses
at once.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GpuReportPlan", "gpu_unavailable_reason", "plan_report", "run_gpu_report",
           "GPU_TESTS"]

#: The tests that need (or check code for) a GPU, run with ADAM_BENCH_CUDA_TESTS=1 so the
#: Numba CUDA kernel tests run on the device instead of the simulator.
GPU_TESTS = ("tests/test_machine_code.py", "tests/test_cupy.py", "tests/test_gpu_int8.py",
             "tests/test_torch_adapter_cuda.py",
             "tests/test_gpu_low_precision.py",
             "tests/cuda_sim")


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
    check_stem: Path
    bench_stem: Path
    sizes: tuple[int, ...] = tuple(2**e for e in range(12, 29, 2))
    dtypes: tuple[str, ...] = ("float32", "float64")
    states: tuple[str, ...] = ("full", "int8")


def plan_report(gpu_name: str, results: Path = Path("results/local")) -> GpuReportPlan:
    """The plan for a GPU called ``gpu_name`` ("NVIDIA H100 80GB HBM3" -> files
    ``bench-nvidia-h100-80gb-hbm3.*``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    return GpuReportPlan(gpu_name, results / f"check-{slug}", results / f"bench-{slug}")




def _run_tests(root: Path) -> int:
    env = dict(os.environ, ADAM_BENCH_CUDA_TESTS="1")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *GPU_TESTS], cwd=root, env=env).returncode


def run_gpu_report(repeats: int = 15, max_seconds: float = 2.0) -> int:
    """Tests, check, sweep; 0 when the tests and the check pass, 1 otherwise."""
    from ..bench.sweep import SweepConfig, run_sweep
    from backends.cuda.device import numba_device_name

    from ..check import run_check
    from ..core.machine import machine_info
    from ..core.plots import plot_throughput
    from ..core.results_io import write_tables
    from ..subjects import collect_subjects

    plan = plan_report(machine_info()["gpu"] or numba_device_name())
    root = Path(__file__).resolve().parents[2]
    tests_status = _run_tests(root)
    print(f"gpu-report: GPU tests {'passed' if tests_status == 0 else 'FAILED'}")
    report = run_check(collect_subjects(emulated=True), dtypes=plan.dtypes)
    write_tables(report.agreement, plan.check_stem)
    write_tables(report.edges, plan.check_stem.with_name(plan.check_stem.name + "-edge-cases"))
    print(f"gpu-report: check {'PASS' if report.ok else 'FAIL'} ({plan.check_stem}.md)")
    sweep = SweepConfig(sizes=list(plan.sizes), dtypes=list(plan.dtypes), amsgrad=True,
                        models=[], repeats=repeats, max_seconds=max_seconds,
                        states=list(plan.states))
    df = run_sweep(sweep, collect_subjects(peers=False, device="cuda"), plan.bench_stem)
    plot_throughput(df, plan.bench_stem.with_suffix(".png"), title=plan.gpu)
    print(f"gpu-report: sweep written to {plan.bench_stem}.csv/.json/.md/.png")
    return 0 if tests_status == 0 and report.ok else 1
