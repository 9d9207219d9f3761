"""Shared fixtures: every test that takes ``cpu_backend`` runs once per registered CPU
backend (ids are the names), so a backend is tested the moment it is registered."""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from backends import AdamConfig, get_backend, list_backends

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

CPU_BACKENDS = [r.name for r in list_backends() if r.device == "cpu"]
DTYPES = ["float32", "float64"]


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    row = next(r for r in list_backends() if r.name == request.param)
    if not row.available:
        pytest.skip(f"{row.name} unavailable: {row.reason}")
    return get_backend(request.param)


@pytest.fixture(params=DTYPES)
def dtype(request):
    return np.dtype(request.param)


def snapshot(params, state):
    """Deep host copies of params and state, to prove a failed call changed nothing."""
    return [np.array(p, copy=True) for p in params], state.to_dict()


def assert_unchanged(before, params, state):
    old_params, old_state = before
    for old, new in zip(old_params, params):
        np.testing.assert_array_equal(old, new)
    new_state = state.to_dict()
    assert new_state["step"] == old_state["step"]
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        if old_state[key] is None:
            assert new_state[key] is None
            continue
        for old, new in zip(old_state[key], new_state[key]):
            np.testing.assert_array_equal(old, new)


def make_setup(backend, dtype=np.float32, shapes=((3, 4), (5,)), cfg=None, seed=0):
    """(params, grads, state, cfg) of backend arrays, state after one step."""
    rng = np.random.default_rng(seed)
    cfg = cfg or AdamConfig()
    params = [backend.asarray(rng.standard_normal(s).astype(dtype)) for s in shapes]
    grads = [backend.asarray(rng.standard_normal(s).astype(dtype)) for s in shapes]
    state = backend.init_state(params, cfg)
    backend.step(params, grads, state, cfg)
    return params, grads, state, cfg
