"""The Numba CUDA kernels under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1).

Collected only in a process started with that variable (tests/test_cuda_simulator.py
starts one), because numba reads it at import time.
"""
import numpy as np
import pytest

from backends import AdamConfig, get_backend, list_backends
from harness.check.agreement import OPTION_SETS, run_with_reference
from harness.core.problems import random_problem
from harness.core.steppers import BackendStepper


#: Empty, one-element, odd and 2-D tensors, 600 elements in all: three thread blocks, the
#: last one partial (the simulator runs a Python thread per GPU thread).
SHAPES = [(0,), (1,), (3,), (17, 5), (7, 73)]


@pytest.fixture(scope="module")
def backend():
    row = next(r for r in list_backends() if r.name == "numba-cuda")
    assert row.available, row.reason
    return get_backend("numba-cuda")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("options", list(OPTION_SETS), ids=list(OPTION_SETS))
def test_kernel_matches_the_reference(backend, dtype, options):
    cfg = AdamConfig(**OPTION_SETS[options])
    problem = random_problem(SHAPES, dtype, steps=3, seed=1)
    errors = run_with_reference(lambda p, c: BackendStepper(backend, p, c), problem, cfg).errors
    assert errors.within_tolerance, errors


def test_flattened_list_is_one_launch(backend, monkeypatch):
    launches = []
    real = backend._launch
    monkeypatch.setattr(backend, "_launch", lambda *a: launches.append(a[0].size) or real(*a))
    host = [np.ones(s, np.float32) for s in [(3, 4), (5,), (1,), (0,), (7,)]]
    _, params = backend.flatten(host)
    _, grads = backend.flatten([h * 0.5 for h in host])
    state = backend.init_state(params)
    backend.step(params, grads, state, AdamConfig())
    assert launches == [25]
    np.testing.assert_allclose(backend.to_numpy(params[0]), 1 - 1e-3, rtol=1e-6)


def test_launch_plan_is_kept_until_the_arrays_change(backend, monkeypatch):
    """Device addresses are read when the arrays change, not every step, nor when a
    learning-rate schedule passes a new config each step."""
    reads = []
    real = backend.address
    monkeypatch.setattr(backend, "address", lambda a: reads.append(1) or real(a))
    host = [np.ones(s, np.float32) for s in [(3, 4), (5,)]]
    params = backend.flatten(host)[1]
    grads = backend.flatten(host)[1]
    state = backend.init_state(params)
    backend.step(params, grads, state, AdamConfig())
    first = len(reads)
    assert first > 0
    for lr in (1e-3, 5e-4, 2e-4):
        backend.step(params, grads, state, AdamConfig(lr=lr))
    assert len(reads) == first
    backend.step(params, backend.flatten(host)[1], state, AdamConfig())
    assert len(reads) > first


def test_separate_arrays_still_step_correctly(backend):
    params = [backend.asarray(np.ones(4, np.float32)), backend.asarray(np.ones(3, np.float32))]
    grads = [backend.asarray(np.full(4, 2.0, np.float32)),
             backend.asarray(np.full(3, -2.0, np.float32))]
    state = backend.init_state(params)
    backend.step(params, grads, state, AdamConfig())
    np.testing.assert_allclose(backend.to_numpy(params[0]), 1 - 1e-3, rtol=1e-6)
    np.testing.assert_allclose(backend.to_numpy(params[1]), 1 + 1e-3, rtol=1e-6)
    assert state.to_dict()["exp_avg"][1].tolist() == pytest.approx([-0.2] * 3)


def test_host_arrays_are_refused(backend):
    params = [np.ones(3, np.float32)]
    with pytest.raises(TypeError, match=r"params\[0\] is numpy.ndarray; the numba-cuda backend "
                                        "needs"):
        backend.init_state(params)


def test_state_round_trips_through_the_host(backend):
    _, params = backend.flatten([np.ones(5, np.float32)])
    _, grads = backend.flatten([np.ones(5, np.float32)])
    state = backend.init_state(params, AdamConfig(amsgrad=True))
    backend.step(params, grads, state, AdamConfig(amsgrad=True))
    again = backend.state_from_dict(state.to_dict())
    assert again.step == 1
    np.testing.assert_array_equal(backend.to_numpy(again.max_exp_avg_sq[0]),
                                  backend.to_numpy(state.max_exp_avg_sq[0]))



def test_step_lr_gives_the_bits_of_a_config_with_that_lr(backend):
    """A schedule through ``lr=`` under one config: the bits of a new config per step
    (tests/test_step_lr.py checks the int8 launches' scalars without the simulator)."""
    lrs = [1e-3, 4e-3, 0.0, 2.5e-2]
    rng = np.random.default_rng(3)
    host = [rng.standard_normal(s).astype(np.float32) for s in [(7,), (3, 5)]]
    grads = [[backend.asarray(rng.standard_normal(h.shape).astype(np.float32)) for h in host]
             for _ in lrs]
    options = {"weight_decay": 0.1, "decoupled": True}

    def run(cfg_at, lr_at):
        params = [backend.asarray(h) for h in host]
        state = backend.init_state(params, cfg_at(0))
        for t, g in enumerate(grads):
            backend.step(params, g, state, cfg_at(t), lr=lr_at(t))
        return [backend.to_numpy(p) for p in params]

    fixed = AdamConfig(**options)
    scheduled = run(lambda t: fixed, lambda t: lrs[t])
    assert all(np.array_equal(a, b) for a, b in
               zip(scheduled, run(lambda t: AdamConfig(lr=lrs[t], **options), lambda t: None)))
