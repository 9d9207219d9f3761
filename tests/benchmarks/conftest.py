"""The benchmarks' JSON carries harness.machine's metadata (CPU, memory, library versions,
git commit) beside pytest-benchmark's own, for ``adam-bench report`` and ``compare``."""
import pytest

from harness import machine
from harness.bench_report import MACHINE_INFO_KEY


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info[MACHINE_INFO_KEY] = machine.machine_info()
