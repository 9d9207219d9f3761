"""Shared fixtures: every test that takes ``cpu_backend`` runs once per registered CPU
backend (ids are the names), so a backend is tested the moment it is registered."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from backends import get_backend, list_backends

# The CUDA-simulator tests need NUMBA_ENABLE_CUDASIM=1 before numba is imported, so they
# run in their own process (tests/test_cuda_simulator.py starts it), not in this one;
# `adam-bench gpu-report` runs them on a real GPU with ADAM_BENCH_CUDA_TESTS=1.
_CUDA_TESTS = "1" in (os.environ.get("NUMBA_ENABLE_CUDASIM"), os.environ.get("ADAM_BENCH_CUDA_TESTS"))
collect_ignore = [] if _CUDA_TESTS else ["cuda_sim"]

# Drawn examples are the same on every run, so CI never fails by the luck of the draw;
# `pytest --hypothesis-profile=explore` draws many fresh ones to look for new failures.
settings.register_profile("ci", max_examples=25, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", settings.get_profile("ci"), max_examples=3000,
                          derandomize=False)
settings.load_profile("ci")

#: The simulator's run (tests/test_cuda_simulator.py), started when collection ends.
SIMULATOR_RUN = pytest.StashKey[tuple]()
SIMULATOR_TEST = "test_cuda_simulator.py::test_numba_cuda_kernels_under_the_simulator"


def start_simulator_run() -> tuple:
    """(process, output file) of ``pytest tests/cuda_sim`` under NUMBA_ENABLE_CUDASIM=1."""
    root = Path(__file__).resolve().parent.parent
    out = tempfile.TemporaryFile(mode="w+")
    job = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(root / "tests" / "cuda_sim")], cwd=root, stdout=out,
                           stderr=subprocess.STDOUT, text=True,
                           env=dict(os.environ, NUMBA_ENABLE_CUDASIM="1"))
    return job, out


def pytest_collection_finish(session):
    """The simulator's run takes a minute and a half on one core: it starts now, beside
    the tests before it, and its test only waits for it."""
    if any(item.nodeid.endswith(SIMULATOR_TEST) for item in session.items):
        session.config.stash[SIMULATOR_RUN] = start_simulator_run()


def pytest_unconfigure(config):
    """A run stopped early (-x, ^C) ends the simulator's process too."""
    job, _ = config.stash.get(SIMULATOR_RUN, (None, None))
    if job is not None and job.poll() is None:
        job.kill()


CPU_BACKENDS = [r.name for r in list_backends() if r.device == "cpu"]
DTYPES = ["float32", "float64"]


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    row = next(r for r in list_backends() if r.name == request.param)
    if not row.available:
        pytest.skip(f"{row.name} unavailable: {row.reason}")
    return get_backend(request.param)


@pytest.fixture(autouse=True)
def no_user_table(tmp_path, monkeypatch):
    """No test reads or writes the user's measured table (backends.auto documents it)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ADAM_BACKENDS_TABLE", raising=False)


@pytest.fixture(params=DTYPES)
def dtype(request):
    return np.dtype(request.param)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    """The benchmarks' JSON carries harness.core.machine's metadata (CPU, memory, library
    versions, git commit) beside pytest-benchmark's own, for ``adam-bench report`` and
    ``compare``. Here, not in tests/benchmarks/conftest.py: a second module named
    ``conftest`` would shadow this one for ``from conftest import ...``."""
    from harness.core import machine
    from harness.bench.report import MACHINE_INFO_KEY

    machine_info[MACHINE_INFO_KEY] = machine.machine_info()
