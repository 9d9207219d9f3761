"""Every bad input raises a clear error before any array is touched."""
import numpy as np
import pytest

from backends import AdamConfig, AdamState

from conftest import assert_unchanged, make_setup, snapshot


def expect_rejected(backend, params, grads, state, cfg, error, match):
    before = snapshot(params, state)
    with pytest.raises(error, match=match):
        backend.step(params, grads, state, cfg)
    assert_unchanged(before, params, state)


def test_lengths_differ(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend)
    expect_rejected(cpu_backend, params, grads[:1], state, cfg, ValueError,
                    r"params and grads differ in length: 2 vs 1")


def test_shapes_differ(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend)
    grads[1] = np.zeros(6, np.float32)
    expect_rejected(cpu_backend, params, grads, state, cfg, ValueError,
                    r"grads\[1\] has shape \(6,\) but params\[1\] has \(5,\)")


def test_dtypes_differ(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend)
    grads[0] = grads[0].astype(np.float64)
    expect_rejected(cpu_backend, params, grads, state, cfg, TypeError,
                    r"grads\[0\] has dtype float64 but params\[0\] has float32")


@pytest.mark.parametrize("bad", ["int64", "float16", "int32"])
def test_non_float_params(cpu_backend, bad):
    params = [np.zeros(3, bad)]
    with pytest.raises(TypeError, match=rf"params\[0\] has dtype {bad}; expected float32 or "
                                        "float64"):
        cpu_backend.init_state(params)
    state = AdamState(0, [np.zeros(3, bad)], [np.zeros(3, bad)])
    expect_rejected(cpu_backend, params, [np.zeros(3, bad)], state, AdamConfig(), TypeError,
                    "expected float32 or float64")


def test_non_contiguous_params(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend, shapes=((4, 6),))
    strided = np.zeros((4, 12), np.float32)[:, ::2]
    expect_rejected(cpu_backend, [strided], grads, state, cfg, ValueError,
                    r"params\[0\] is not C-contiguous")


def test_read_only_params(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend)
    params = [params[0], params[1].copy()]
    params[1].flags.writeable = False
    expect_rejected(cpu_backend, params, grads, state, cfg, ValueError,
                    r"params\[1\] is read-only")


def test_read_only_params_after_steps_that_passed(cpu_backend):
    """An array checked at an earlier step and made read-only since is still caught."""
    params, grads, state, cfg = make_setup(cpu_backend)
    cpu_backend.step(params, grads, state, cfg)
    params[0].flags.writeable = False
    expect_rejected(cpu_backend, params, grads, state, cfg, ValueError,
                    r"params\[0\] is read-only")


def test_state_entry_replaced_after_steps_that_passed(cpu_backend):
    """A moment swapped in after checked steps is checked itself, not trusted by position."""
    params, grads, state, cfg = make_setup(cpu_backend)
    cpu_backend.step(params, grads, state, cfg)
    state.exp_avg_sq[1] = np.zeros(6, np.float32)
    expect_rejected(cpu_backend, params, grads, state, cfg, ValueError,
                    r"state.exp_avg_sq\[1\] has shape \(6,\) but params\[1\] has \(5,\)")


def test_state_for_other_tensors(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend)
    other = cpu_backend.init_state([params[0]])
    expect_rejected(cpu_backend, params, grads, other, cfg, ValueError,
                    r"state.exp_avg holds 1 tensors but params has 2: the state was made for "
                    "other tensors")
    reshaped = cpu_backend.init_state([params[0].reshape(-1), params[1]])
    expect_rejected(cpu_backend, params, grads, reshaped, cfg, ValueError,
                    r"state.exp_avg\[0\] has shape \(12,\) but params\[0\] has \(3, 4\)")


@pytest.mark.parametrize("bad", [5, None])
def test_state_moments_that_are_no_list(cpu_backend, bad):
    params, grads, state, cfg = make_setup(cpu_backend)
    before = [cpu_backend.to_numpy(a).copy() for a in params + state.exp_avg]
    state.exp_avg_sq = bad
    match = (r"state.exp_avg_sq must be a list of arrays, got int" if bad is not None
             else r"state.exp_avg_sq holds none tensors but params has 2")
    with pytest.raises(TypeError if bad is not None else ValueError, match=match):
        cpu_backend.step(params, grads, state, cfg)
    for old, new in zip(before, params + state.exp_avg):
        np.testing.assert_array_equal(old, cpu_backend.to_numpy(new))
    assert state.step == 1


def test_wrong_array_kind(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend)
    expect_rejected(cpu_backend, params, [grads[0], grads[1].tolist()], state, cfg, TypeError,
                    rf"grads\[1\] is builtins.list; the {cpu_backend.name} backend needs "
                    r"numpy.ndarray")


def test_wrong_config_and_state_types(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend)
    expect_rejected(cpu_backend, params, grads, state, {"lr": 1e-3}, TypeError,
                    "cfg must be an AdamConfig, got dict")
    with pytest.raises(TypeError, match="state must be an AdamState, got dict"):
        cpu_backend.step(params, grads, {"step": 0}, cfg)


def test_amsgrad_switched_on_mid_run(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend)
    expect_rejected(cpu_backend, params, grads, state, AdamConfig(amsgrad=True), ValueError,
                    "amsgrad=True but state has no max_exp_avg_sq")


def test_eps_that_rounds_to_zero(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend)
    expect_rejected(cpu_backend, params, grads, state, AdamConfig(eps=1e-50), ValueError,
                    r"eps=1e-50 rounds to 0 in float32")


def test_params_must_be_arrays(cpu_backend):
    with pytest.raises(TypeError, match="params must be an array or a sequence of arrays, got "
                                        "int"):
        cpu_backend.init_state(3)


def test_nan_and_inf_gradients_are_not_errors(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend, shapes=((6,),))
    grads[0][:] = [np.nan, np.inf, -np.inf, 1.0, 0.0, -1.0]
    cpu_backend.step(params, grads, state, cfg)
    assert np.isnan(params[0][:3]).all()
    assert np.isfinite(params[0][3:]).all()
