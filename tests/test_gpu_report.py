"""``adam-bench gpu-report``: what it plans, and its one-line refusal without a GPU."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.gpu.report import GPU_TESTS, gpu_unavailable_reason, plan_report

ROOT = Path(__file__).resolve().parent.parent


def test_without_a_gpu_it_refuses_in_one_line(capsys):
    if gpu_unavailable_reason() is None:
        pytest.skip("a GPU is usable here: gpu-report would run instead of refusing")
    assert main(["gpu-report"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("gpu-report: needs a GPU"), err


def test_plan_names_files_after_the_gpu_and_sweeps_2_12_to_2_28():
    plan = plan_report("NVIDIA H100 80GB HBM3")
    assert plan.bench_stem == Path("results/local/bench-nvidia-h100-80gb-hbm3")
    assert plan.check_stem == Path("results/local/check-nvidia-h100-80gb-hbm3")
    assert plan.sizes[0] == 2**12 and plan.sizes[-1] == 2**28
    assert plan.dtypes == ("float32", "float64")
    assert plan.states == ("full", "int8")


def test_the_gpu_tests_exist_and_the_cuda_kernel_tests_are_collected_for_a_device():
    assert all((ROOT / path).exists() for path in GPU_TESTS)
    env = dict(os.environ, ADAM_BENCH_CUDA_TESTS="1")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider", "tests/cuda_sim"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300).stdout
    assert "test_kernel_matches_the_reference" in out, out[-2000:]
