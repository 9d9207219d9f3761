"""Shared fixtures: every test that takes ``cpu_backend`` runs once per registered CPU
backend (ids are the names), so a backend is tested the moment it is registered."""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent

# Under pytest-xdist each worker keeps its own Numba cache (a worker's subprocesses share
# it): Numba saves a kernel's cache index without a lock between processes, so two workers
# compiling overloads of one kernel at once can leave its index naming one overload's file
# for the other. Set before backends imports numba.
if os.environ.get("PYTEST_XDIST_WORKER") and "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = str(ROOT / ".pytest_cache" / "numba"
                                        / os.environ["PYTEST_XDIST_WORKER"])

from backends import get_backend, list_backends  # noqa: E402

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


#: The background build of DeepSpeed's op, started when collection ends.
DEEPSPEED_BUILD = pytest.StashKey[subprocess.Popen]()
#: The session's torch extensions folder, made when no TORCH_EXTENSIONS_DIR is given.
EXTENSIONS_DIR = pytest.StashKey[str]()


def start_simulator_run() -> tuple:
    """(process, output file) of ``pytest tests/cuda_sim`` under NUMBA_ENABLE_CUDASIM=1."""
    out = tempfile.TemporaryFile(mode="w+")
    job = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(ROOT / "tests" / "cuda_sim")], cwd=ROOT, stdout=out,
                           stderr=subprocess.STDOUT, text=True,
                           env=dict(os.environ, NUMBA_ENABLE_CUDASIM="1"))
    return job, out


def start_deepspeed_build() -> subprocess.Popen:
    """DeepSpeed's C++ op built by another process at the lowest CPU priority (100 s of
    CPU, from scratch in a fresh venv), on the cores the tests leave idle: the peer's
    first test loads it, or waits on torch's build lock for the rest, instead of
    building it alone."""
    code = "from harness.subjects.peers.deepspeed_cpu_adam import build; build()"
    build = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    _lowest_priority(build.pid)
    return build


def _lowest_priority(pid: int) -> None:
    """Nice 19 for process ``pid`` (its children inherit it) and, where Linux gives each
    session its own scheduling group (autogroup), for its session's group too: that group
    would otherwise take an equal share of the cores whatever its processes' nice."""
    os.setpriority(os.PRIO_PROCESS, pid, 19)
    try:
        Path(f"/proc/{pid}/autogroup").write_text("19")
    except OSError:  # no autogroup here (not Linux, or the kernel has it off)
        pass


def pytest_configure(config):
    """One torch extensions folder for the session (the per-test XDG_CACHE_HOME of
    ``no_user_table`` would give each test its own), so the op built beside the tests is
    the one they load."""
    if "TORCH_EXTENSIONS_DIR" not in os.environ:
        config.stash[EXTENSIONS_DIR] = tempfile.mkdtemp(prefix="torch-extensions-")
        os.environ["TORCH_EXTENSIONS_DIR"] = config.stash[EXTENSIONS_DIR]


def _xdist_worker(config) -> bool:
    """Whether this process is a pytest-xdist worker (``-n``): its controller starts the
    DeepSpeed build, and its simulator test runs the simulator itself."""
    return hasattr(config, "workerinput")


def pytest_collection_modifyitems(config, items):
    """The simulator's test after the other unit tests, then the benchmark smoke runs
    (tests/benchmarks): none of them waits at the start for what runs beside the tests.
    Under xdist the simulator's test, the longest, goes first: its worker runs it while
    the other workers run the rest."""
    first = _xdist_worker(config)

    def order(item):
        simulator = item.nodeid.endswith(SIMULATOR_TEST)
        return "/benchmarks/" in item.nodeid, not simulator if first else simulator

    items.sort(key=order)


def _start_deepspeed_build_for(config, ids) -> None:
    """DeepSpeed's build, once a session, if a selected test needs the peer."""
    if DEEPSPEED_BUILD not in config.stash and any("deepspeed" in nodeid for nodeid in ids) \
            and importlib.util.find_spec("deepspeed"):
        config.stash[DEEPSPEED_BUILD] = start_deepspeed_build()


def pytest_collection_finish(session):
    """The simulator's run takes a minute and a half on one core, DeepSpeed's build a
    minute: they start now, beside the tests before theirs, which only wait for them.
    Not in an xdist worker: each one collects every test."""
    if _xdist_worker(session.config):
        return
    ids = [item.nodeid for item in session.items]
    if any(nodeid.endswith(SIMULATOR_TEST) for nodeid in ids):
        session.config.stash[SIMULATOR_RUN] = start_simulator_run()
    _start_deepspeed_build_for(session.config, ids)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """Under xdist the controller starts DeepSpeed's build, once: the workers share its
    torch extensions folder (set in pytest_configure, before they start)."""
    _start_deepspeed_build_for(node.config, ids)


def pytest_unconfigure(config):
    """A run stopped early (-x, ^C) ends the simulator's process and the build (its
    process group: the compilers too); the session's extensions folder goes."""
    job, _ = config.stash.get(SIMULATOR_RUN, (None, None))
    if job is not None and job.poll() is None:
        job.kill()
    build = config.stash.get(DEEPSPEED_BUILD, None)
    if build is not None and build.poll() is None:
        os.killpg(build.pid, signal.SIGKILL)
        build.wait()
    if EXTENSIONS_DIR in config.stash:
        os.environ.pop("TORCH_EXTENSIONS_DIR", None)
        shutil.rmtree(config.stash[EXTENSIONS_DIR], ignore_errors=True)


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
