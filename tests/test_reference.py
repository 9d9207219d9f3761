"""The float64 reference against steps computed by hand from the seed's five formulas."""
import math

import numpy as np
import pytest

from backends import AdamConfig
from backends.reference import ReferenceState, reference_run, reference_step


def one_step(p, g, cfg, t=1, state=None):
    state = state or ReferenceState.zeros_like(np.array([p]), cfg.amsgrad)
    new_p, new_state = reference_step(np.array([p]), np.array([g]), state, t, cfg)
    return float(new_p[0]), new_state


def test_first_step_by_hand():
    # m = 0.1 * 0.5 = 0.05; v = 0.001 * 0.25 = 0.00025
    # m_hat = 0.05 / 0.1 = 0.5; v_hat = 0.00025 / 0.001 = 0.25; sqrt(v_hat) = 0.5
    p, state = one_step(1.0, 0.5, AdamConfig())
    assert state.m[0] == pytest.approx(0.05, rel=1e-15)
    assert state.v[0] == pytest.approx(0.00025, rel=1e-15)
    assert p == pytest.approx(1.0 - 1e-3 * 0.5 / (0.5 + 1e-8), rel=1e-15)


def test_second_step_by_hand():
    cfg = AdamConfig()
    p1, state = one_step(1.0, 0.5, cfg)
    p2, state = one_step(p1, -1.0, cfg, t=2, state=state)
    m = 0.9 * 0.05 + 0.1 * -1.0                 # -0.055
    v = 0.999 * 0.00025 + 0.001 * 1.0           # 0.00124975
    m_hat = m / (1 - 0.9**2)                    # / 0.19
    v_hat = v / (1 - 0.999**2)                  # / 0.001999
    assert state.m[0] == pytest.approx(-0.055, rel=1e-14)
    assert state.v[0] == pytest.approx(0.00124975, rel=1e-14)
    assert p2 == pytest.approx(p1 - 1e-3 * m_hat / (math.sqrt(v_hat) + 1e-8), rel=1e-15)


def test_l2_adds_decay_to_the_gradient():
    # g_eff = 0.5 + 0.1 * 2.0 = 0.7; the first step is lr * sign(g_eff) (up to eps)
    p, state = one_step(2.0, 0.5, AdamConfig(weight_decay=0.1))
    assert state.m[0] == pytest.approx(0.07, rel=1e-14)
    assert p == pytest.approx(2.0 - 1e-3 * 0.7 / (0.7 + 1e-8), rel=1e-15)


def test_adamw_shrinks_the_parameter_first():
    # p = 2 * (1 - 1e-3 * 0.1) = 1.9998, then the plain step with g = 0.5
    p, state = one_step(2.0, 0.5, AdamConfig(weight_decay=0.1, decoupled=True))
    assert state.m[0] == pytest.approx(0.05, rel=1e-14)
    assert p == pytest.approx(1.9998 - 1e-3 * 0.5 / (0.5 + 1e-8), rel=1e-15)


def test_amsgrad_uses_the_running_max_of_v():
    cfg = AdamConfig(amsgrad=True)
    p1, state = one_step(0.0, 1.0, cfg)
    p2, state = one_step(p1, 0.0, cfg, t=2, state=state)
    v1 = 0.001                                   # after step 1
    v2 = 0.999 * v1                              # smaller after a zero gradient
    assert state.v[0] == pytest.approx(v2, rel=1e-14)
    assert state.v_max[0] == pytest.approx(v1, rel=1e-14)  # the max kept step 1's value
    m_hat = 0.9 * 0.1 / (1 - 0.9**2)
    v_hat = v1 / (1 - 0.999**2)
    assert p2 == pytest.approx(p1 - 1e-3 * m_hat / (math.sqrt(v_hat) + 1e-8), rel=1e-14)


def test_maximize_steps_uphill():
    p, _ = one_step(1.0, 0.5, AdamConfig(maximize=True))
    assert p == pytest.approx(1.0 + 1e-3 * 0.5 / (0.5 + 1e-8), rel=1e-15)


def test_first_step_moves_every_parameter_by_lr_times_sign_of_g():
    rng = np.random.default_rng(1)
    g = rng.standard_normal(1000)
    p, _ = reference_run([np.zeros(1000)], [[g]], AdamConfig(lr=1e-2))
    # exactly lr * |g| / (|g| + eps): off lr * sign(g) by at most lr * eps / |g|
    assert np.all(np.abs(p[0] + 1e-2 * np.sign(g)) <= 1e-2 * 1e-8 / np.abs(g) * 1.0001)


def test_zero_gradient_leaves_parameters_unchanged():
    p0 = np.linspace(-3, 3, 50)
    p, states = reference_run([p0], [[np.zeros(50)]] * 10, AdamConfig())
    np.testing.assert_array_equal(p[0], p0)
    np.testing.assert_array_equal(states[0].m, 0)


def test_bias_correction_matters_at_step_one():
    # Without correction the first step would be lr * 0.1 / sqrt(0.001) = 3.16 lr.
    p, _ = one_step(0.0, 1.0, AdamConfig())
    assert -p == pytest.approx(1e-3, rel=1e-6)
    assert -p < 1e-3 * 0.1 / math.sqrt(0.001) / 2


def test_inputs_are_not_modified():
    p0, g = np.ones(4), np.full(4, 0.5)
    reference_run([p0], [[g]], AdamConfig())
    np.testing.assert_array_equal(p0, 1.0)
    np.testing.assert_array_equal(g, 0.5)
