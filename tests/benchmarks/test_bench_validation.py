"""pytest-benchmark: what the checks cost on the training-loop fast path (the same arrays
every step), for one tensor and a 200-tensor list of 16 elements each, where a step is
nearly all checks and dispatch.

    pytest tests/benchmarks/test_bench_validation.py --benchmark-enable --benchmark-only

``validate`` times the checks alone, ``step`` the whole call (checks, kernel on the
calling thread). In the normal test run each body runs once as a smoke test.
"""
import itertools

import numpy as np
import pytest

from backends import AdamConfig, get_backend, list_backends

AVAILABLE = {r.name for r in list_backends() if r.available}


@pytest.mark.parametrize("part", ["validate", "step"])
@pytest.mark.parametrize("tensors", [1, 200])
@pytest.mark.parametrize("name", ["numba", "numpy"])
def test_fast_path(benchmark, name, tensors, part):
    if name not in AVAILABLE:
        pytest.skip(f"{name} is unavailable here")
    benchmark.group = f"fast path, {tensors} tensor(s) of 16 elements"
    backend, cfg = get_backend(name), AdamConfig()
    params = [np.zeros(16, np.float32) for _ in range(tensors)]
    grads = [np.ones(16, np.float32) for _ in range(tensors)]
    state = backend.init_state(params, cfg)
    backend.step(params, grads, state, cfg)  # the first step checks everything
    call = backend._validate if part == "validate" else backend.step
    benchmark(call, params, grads, state, cfg)
    assert state.step >= 1 and np.all(params[-1] < 0)


@pytest.mark.parametrize("lr", ["fixed", "changing"])
@pytest.mark.parametrize("tensors", [1, 200])
@pytest.mark.parametrize("name", ["numba", "numpy"])
def test_schedule(benchmark, name, tensors, lr):
    """A step whose lr changes every call (``step(..., lr=...)``, a schedule) against one
    at the config's fixed lr: the difference is what a schedule costs per step."""
    if name not in AVAILABLE:
        pytest.skip(f"{name} is unavailable here")
    benchmark.group = f"schedule, {tensors} tensor(s) of 16 elements"
    backend, cfg = get_backend(name), AdamConfig()
    params = [np.zeros(16, np.float32) for _ in range(tensors)]
    grads = [np.ones(16, np.float32) for _ in range(tensors)]
    state = backend.init_state(params, cfg)
    backend.step(params, grads, state, cfg)
    rates = itertools.cycle([1e-3, 2e-3])
    if lr == "fixed":
        benchmark(lambda: backend.step(params, grads, state, cfg))
    else:
        benchmark(lambda: backend.step(params, grads, state, cfg, lr=next(rates)))
    assert state.step >= 2 and np.all(params[-1] < 0)
