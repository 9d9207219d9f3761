"""State as data: to_dict/from_dict, state_dict, save/load, and moving between backends."""
import numpy as np
import pytest

from backends import Adam, AdamConfig, AdamState, get_backend
from harness.core.problems import MIXED_SHAPES, random_problem

OPTIONS = dict(lr=3e-3, weight_decay=0.01, amsgrad=True)


def run(backend_name, params, grads_seq, opt=None):
    opt = opt or Adam(params, backend=backend_name, **OPTIONS)
    for grads in grads_seq:
        opt.step(grads)
    return opt


@pytest.mark.parametrize("name", ["python", "numpy", "numba"])
def test_save_and_load_resumes_bit_for_bit(tmp_path, name):
    problem = random_problem(MIXED_SHAPES[:6], "float32", steps=12, seed=2)
    straight = problem.copy_params()
    run(name, straight, problem.grads)

    resumed = problem.copy_params()
    first = run(name, resumed, problem.grads[:5])
    first.save(tmp_path / "adam.npz")
    second = Adam.load(tmp_path / "adam.npz", resumed)
    assert second.state.step == 5 and second.backend.name == name
    assert second.config == AdamConfig(**OPTIONS)
    run(name, resumed, problem.grads[5:], opt=second)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)


def test_state_moves_between_backends_mid_run(tmp_path):
    """numpy and numba compute the same bits, so a hand-over is invisible."""
    problem = random_problem(MIXED_SHAPES, "float64", steps=10, seed=4)
    straight = problem.copy_params()
    run("numpy", straight, problem.grads)
    moved = problem.copy_params()
    run("numpy", moved, problem.grads[:4]).save(tmp_path / "s.npz")
    run(None, moved, problem.grads[4:], opt=Adam.load(tmp_path / "s.npz", moved,
                                                       backend="numba"))
    for a, b in zip(straight, moved):
        np.testing.assert_array_equal(a, b)


def test_to_dict_from_dict_round_trip():
    be = get_backend("numpy")
    params = [np.ones((2, 3), np.float32), np.ones(4, np.float32)]
    state = be.init_state(params, AdamConfig(amsgrad=True))
    be.step(params, [np.full((2, 3), 0.5, np.float32), np.ones(4, np.float32)], state,
            AdamConfig(amsgrad=True))
    d = state.to_dict()
    back = AdamState.from_dict(d)
    assert back.step == 1
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        for a, b in zip(getattr(state, key), getattr(back, key)):
            np.testing.assert_array_equal(a, b)
            assert a is not b  # copies: the dict does not alias the live state


def test_load_state_dict_checks_before_changing():
    params = [np.ones(3, np.float32)]
    opt = Adam(params, backend="numpy")
    opt.step([np.ones(3, np.float32)])
    bad = opt.state_dict()
    bad["state"]["exp_avg"] = [np.zeros(4, np.float32)]
    before = opt.state.to_dict()
    with pytest.raises(ValueError, match=r"state.exp_avg\[0\] has shape \(4,\)"):
        opt.load_state_dict(bad)
    np.testing.assert_array_equal(opt.state.exp_avg[0], before["exp_avg"][0])


def test_load_rejects_other_files(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(1))
    with pytest.raises(ValueError, match="is not an Adam state file"):
        Adam.load(tmp_path / "other.npz", [np.zeros(1, np.float32)])


def test_from_dict_rejects_bad_step():
    with pytest.raises(ValueError, match=r"step must be an int in 0\.\.2\*\*63-2"):
        AdamState.from_dict({"step": -1, "exp_avg": [], "exp_avg_sq": []})
