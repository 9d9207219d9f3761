"""Every bad input raises a clear error before any array is touched: the cases of
harness.check.bad_input, run through the test kit a plugin's tests use."""
import numpy as np
import pytest

from harness.check.bad_input import BAD_INPUT_CASES, make_setup
from harness.testing import assert_refuses_bad_input

from broken_backend import NoBiasCorrection


@pytest.mark.parametrize("case", [c.name for c in BAD_INPUT_CASES])
def test_bad_input_is_refused_before_anything_changes(cpu_backend, case):
    assert_refuses_bad_input(cpu_backend, cases=[case])


class SkipsShapeCheck(NoBiasCorrection):
    """A backend that steps whatever it is given as long as the lengths match."""

    def _validate(self, params, grads, state, cfg):
        return params, grads, {params[0].dtype: list(range(len(params)))}, state.step


def test_the_kit_catches_a_backend_that_skips_validation():
    with pytest.raises(AssertionError, match=r"bad input shapes-differ: "):
        assert_refuses_bad_input(SkipsShapeCheck(), cases=["shapes-differ"])


def test_the_kit_catches_a_step_that_changes_params_before_refusing():
    class ChangesThenRefuses(NoBiasCorrection):
        def step(self, params, grads, state, cfg):
            params[0][...] = 7
            super().step(params, grads, state, cfg)

    with pytest.raises(AssertionError, match=r"lengths-differ: changed params\[0\]"):
        assert_refuses_bad_input(ChangesThenRefuses(), cases=["lengths-differ"])


def test_unknown_case_names_are_refused(cpu_backend):
    with pytest.raises(ValueError, match=r"unknown bad-input cases \['nope'\]"):
        assert_refuses_bad_input(cpu_backend, cases=["nope"])


def test_nan_and_inf_gradients_are_not_errors(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend, shapes=((6,),))
    grads[0][:] = [np.nan, np.inf, -np.inf, 1.0, 0.0, -1.0]
    cpu_backend.step(params, grads, state, cfg)
    assert np.isnan(params[0][:3]).all()
    assert np.isfinite(params[0][3:]).all()
