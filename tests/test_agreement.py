"""Every CPU backend against the float64 reference: every option, both dtypes, 100 steps,
parameters and every state entry (harness.check.tolerances states the bounds and why)."""
import re

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from backends import AdamConfig, get_backend
from harness.check.agreement import OPTION_SETS, run_with_reference
from harness.check.edge_cases import EDGE_CASES
from harness.core.problems import MIXED_SHAPES, random_problem
from harness.core.steppers import BackendStepper
from harness.testing import assert_agrees_with_reference

from broken_backend import NoBiasCorrection


def stepper_for(backend):
    return lambda params, cfg: BackendStepper(backend, params, cfg)


@pytest.mark.parametrize("options", list(OPTION_SETS), ids=list(OPTION_SETS))
def test_hundred_steps_match_the_reference(cpu_backend, dtype, options):
    steps = 20 if cpu_backend.name == "python" else 100
    report = assert_agrees_with_reference(cpu_backend, dtypes=[dtype.name], options=[options],
                                          steps=steps, seed=3, edge_cases=False)
    assert len(report.agreement) == 1


def test_edge_cases_hold(cpu_backend):
    report = assert_agrees_with_reference(cpu_backend, options=[], steps=1)
    assert len(report.edges) == 2 * len(EDGE_CASES)


def test_the_kit_names_subject_dtype_options_step_and_quantity():
    with pytest.raises(AssertionError) as failure:
        assert_agrees_with_reference(NoBiasCorrection(), dtypes=["float64"],
                                     options=["adamw"], steps=5, edge_cases=False)
    assert re.search(r"backend 'broken' disagrees with the float64 reference \(1 failures\):\n"
                     r"  broken float64 adamw: p off the float64 reference by \S+x its "
                     r"tolerance at step \d", str(failure.value))


# Found by drawing: L2 weight decay cancelling the gradient to near 0 next to a large eps
# (the update's error is then absolute, lr*u*|g|/eps), and p's error fed back through L2.
@example(lr=0.0625, beta1=0.0, beta2=0.5, eps=0.0007888366339931175, weight_decay=0.375,
         decoupled=False, amsgrad=False, maximize=False, sizes=[114, 300, 300],
         dtype="float32", seed=17)
@example(lr=0.091796875, beta1=0.0, beta2=0.5, eps=0.001, weight_decay=0.4375,
         decoupled=False, amsgrad=False, maximize=False, sizes=[150, 300], dtype="float32",
         seed=0)
@given(lr=st.floats(1e-5, 0.1), beta1=st.floats(0.0, 0.99), beta2=st.floats(0.5, 0.9999),
       eps=st.floats(1e-10, 1e-3),
       weight_decay=st.one_of(st.just(0.0), st.floats(1e-30, 0.5)), decoupled=st.booleans(),
       amsgrad=st.booleans(), maximize=st.booleans(),
       sizes=st.lists(st.integers(0, 300), min_size=1, max_size=4),
       dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**16))
def test_random_configs_match_the_reference(lr, beta1, beta2, eps, weight_decay, decoupled,
                                            amsgrad, maximize, sizes, dtype, seed):
    cfg = AdamConfig(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                     decoupled=decoupled, amsgrad=amsgrad, maximize=maximize)
    problem = random_problem([(n,) for n in sizes], dtype, steps=10, seed=seed)
    for name in ("numpy", "numba"):
        errors = run_with_reference(stepper_for(_backend(name)), problem, cfg).errors
        assert errors.within_tolerance, (name, errors)


_BACKENDS = {}


def _backend(name):
    if name not in _BACKENDS:
        _BACKENDS[name] = get_backend(name)
    return _BACKENDS[name]


def test_numpy_and_numba_are_bitwise_equal(dtype):
    """Same operations in the same order, no fused multiply-add: identical bits."""
    cfg = AdamConfig(weight_decay=0.01, amsgrad=True)
    problem = random_problem(MIXED_SHAPES, dtype, steps=30, seed=5)
    results = []
    for name in ("numpy", "numba"):
        stepper = BackendStepper(_backend(name), problem.copy_params(), cfg)
        for grads in problem.grads:
            stepper.step(stepper.prepare(grads))
        results.append(stepper.params() + sum(stepper.moments().values(), []))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("step", [1, 7, 999, 12_345, 10**6])
def test_numba_kernel_constants_match_the_host_ones_at_any_step(step, dtype):
    """The Numba kernels compute the bias corrections themselves (beta ** t in double):
    one step from ``step`` gives the NumPy backend's bits, which use StepScalars."""
    cfg = AdamConfig(weight_decay=0.01, decoupled=True, beta2=0.99)
    problem = random_problem(MIXED_SHAPES, dtype, steps=1, seed=6)
    results = []
    for name in ("numpy", "numba"):
        backend = _backend(name)
        params = problem.copy_params()
        state = backend.init_state(params, cfg)
        state.step = step
        backend.step(params, problem.grads[0], state, cfg)
        results.append(params)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
