"""pytest-benchmark: one Adam step, parametrized over subject x size x dtype.

    pytest tests/benchmarks --benchmark-only --benchmark-json=bench.json
    adam-bench report bench.json

Groups are "dtype size" so each printed group compares every subject at one size; the
extra_info carries what ``adam-bench report`` needs. In the normal test run
(--benchmark-disable) each body runs once as a smoke test, the peers at the smallest size
only (each size of torch.compile and torchao is a compile of several seconds; the peers'
own tests cover them). ADAM_BENCH_SIZES widens the sweep, e.g.
ADAM_BENCH_SIZES="2^10..2^26:2".
"""
import os

import numpy as np
import pytest

from backends import AdamConfig, list_backends
from harness.bench.report import EXTRA_INFO_KEYS
from harness.subjects.peers import peer_labels
from harness.bench.roofline import roofline_arrays, roofline_unavailable_reason
from harness.core.steppers import UnsupportedOption
from harness.subjects import collect_subjects
from harness.bench.workloads import parse_sizes

SIZES = parse_sizes(os.environ.get("ADAM_BENCH_SIZES", "2^10..2^22:4"))
PYTHON_MAX = 2**14
LABELS = ["roofline"] + [r.name for r in list_backends()] + peer_labels()
_SUBJECTS = {}


def _subject(label):
    """The subject of ``label``, collected on first use: a run of a few ids imports (and
    builds) only their subjects' libraries."""
    if label not in _SUBJECTS:
        if label in peer_labels():
            (_SUBJECTS[label],) = collect_subjects([], peers=[label])
        else:
            (_SUBJECTS[label],) = collect_subjects([label], peers=False)
    return _SUBJECTS[label]


def pytest_generate_tests(metafunc):
    """(label, size) pairs: every size for every label when timing, the smallest size for
    the peers in the smoke run."""
    if metafunc.function is not test_adam_step:
        return
    options = metafunc.config.getoption
    smoke = options("benchmark_disable") and not options("benchmark_enable")
    pairs = [(label, size) for label in LABELS for size in SIZES
             if not (smoke and label in peer_labels() and size != SIZES[0])]
    metafunc.parametrize("label, size", pairs,
                         ids=[f"{label}-2^{size.bit_length() - 1}" for label, size in pairs])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adam_step(benchmark, label, size, dtype):
    benchmark.group = f"{dtype} 2^{size.bit_length() - 1}"
    if label == "roofline":
        _roofline(benchmark, size, dtype)
        return
    subject = _subject(label)
    if subject.make is None:
        pytest.skip(subject.reason)
    if label == "python" and size > PYTHON_MAX:
        pytest.skip(f"pure Python above {PYTHON_MAX} elements takes seconds a step")
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(size).astype(dtype)]
    try:
        stepper = subject.make(params, AdamConfig())
    except UnsupportedOption as exc:
        pytest.skip(f"{label} does not offer it: {exc}")
    prepared = stepper.prepare([rng.standard_normal(size).astype(dtype)])
    stepper.step(prepared)  # warm-up: compilation and first-touch stay out of the timing
    stepper.sync()
    benchmark.extra_info.update(_info(label, subject.kind, subject.device, dtype, size))
    compiled = stepper.compile_count()

    def one_step():
        stepper.step(prepared)
        stepper.sync()

    benchmark(one_step)
    assert stepper.compile_count() == compiled, f"{label} compiled inside timed steps"
    after = stepper.params()[0]
    assert np.isfinite(after).all() and not np.array_equal(after, params[0])


def _roofline(benchmark, size, dtype):
    reason = roofline_unavailable_reason("cpu")
    if reason:
        pytest.skip(reason)
    from backends.cpu import _numba_kernels

    _numba_kernels.compile_all()
    p, g, m, v = roofline_arrays(size, dtype)
    benchmark.extra_info.update(_info("roofline", "roofline", "cpu", dtype, size))
    benchmark(_numba_kernels.roofline_flat, p, g, m, v)
    assert np.all(p == 1)  # g is zero: the bytes moved, the values did not


def _info(label, kind, device, dtype, size):
    info = {"label": label, "kind": kind, "device": device, "workload": "flat",
            "dtype": dtype, "amsgrad": False, "elements": size, "tensors": 1}
    assert set(info) == set(EXTRA_INFO_KEYS)
    return info


def test_every_peer_is_benchmarked():
    assert set(peer_labels()) <= set(LABELS)
    assert {"torch-compile", "deepspeed-cpu-adam", "optax", "bnb-adam8bit",
            "torchao-adamw8bit"} <= set(peer_labels())
