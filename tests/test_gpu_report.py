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
    assert plan.stem("sweep") == Path("results/local/bench-nvidia-h100-80gb-hbm3")
    assert plan.stem("check") == Path("results/local/check-nvidia-h100-80gb-hbm3")
    assert plan.stem("formats") == Path("results/local/formats-nvidia-h100-80gb-hbm3")
    assert plan.sizes[0] == 2**12 and plan.sizes[-1] == 2**28
    assert plan.format_sizes == (2**16, 2**20, 2**24, 2**28)
    assert plan.dtypes == ("float32", "float64")
    assert plan.states == ("full", "int8")
    assert plan_report("x", sizes=[64, 4096]).format_sizes == (64, 4096)


def test_stages_run_in_order_and_a_failing_stage_does_not_stop_the_others(monkeypatch, capsys):
    """Each stage reports passed/FAILED with its files; one that raises is FAILED, the next
    still runs, and the exit status is 1; only the stages asked for run."""
    from harness.gpu import report

    ran = []

    def fake(name, outcome):
        def run(*args):
            ran.append(name)
            if outcome is None:
                raise RuntimeError(f"{name} broke")
            return outcome
        return run

    monkeypatch.setattr(report, "_run_tests", fake("tests", True))
    monkeypatch.setattr(report, "_run_formats", fake("formats", None))
    monkeypatch.setattr(report, "_run_sweep", fake("sweep", True))
    monkeypatch.setattr(report, "_run_check", fake("check", False))
    monkeypatch.setattr(report, "plan_report",
                        lambda gpu, sizes=None: plan_report(gpu, Path("/nonexistent-never-made")))
    monkeypatch.setattr(Path, "mkdir", lambda *a, **k: None)
    monkeypatch.setattr("harness.core.machine.machine_info", lambda: {"gpu": "Test GPU"})
    assert report.run_gpu_report(stages=("check", "tests", "formats", "sweep")) == 1
    out = capsys.readouterr()
    assert ran == ["tests", "formats", "sweep", "check"]
    verdicts = [line.split()[1:3] for line in out.out.splitlines()
                if line.startswith("gpu-report:")]
    assert verdicts == [["tests", "passed"], ["formats", "FAILED"], ["sweep", "passed"],
                        ["check", "FAILED"]]
    assert "RuntimeError: formats broke" in out.err
    ran.clear()
    assert report.run_gpu_report(stages=("sweep",)) == 0 and ran == ["sweep"]


def test_stages_option_refuses_an_unknown_stage_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["gpu-report", "--stages", "tests,sweeps"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown stage 'sweeps'" in err, err


def test_the_gpu_tests_exist_and_the_cuda_kernel_tests_are_collected_for_a_device():
    assert all((ROOT / path).exists() for path in GPU_TESTS)
    env = dict(os.environ, ADAM_BENCH_CUDA_TESTS="1")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider", "tests/cuda_sim"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300).stdout
    assert "test_kernel_matches_the_reference" in out, out[-2000:]
