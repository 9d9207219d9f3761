"""The Numba CUDA int8 state kernel under the CUDA simulator: the same bits as the NumPy
backend (codes, scales, params) step after step, for every option set, a partial last
block, blocks of NaN and of zeros, sizes around the 4096-element threshold, several
tensors per step, and resume from the NumPy backend's state.

The simulator runs the kernel's Python source with NumPy float32 scalars (each operation
rounded once, as the compiled kernel's mul.rn/add.rn: tests/test_machine_code.py checks
the PTX for that), one Python thread per GPU thread, so sizes stay small: about 0.1 s per
256-element block and step.
"""
import os

import numpy as np
import pytest
from int8_runs import assert_same_run

from backends import Adam, get_backend
from backends import int8_codec as codec
from harness.check.agreement import OPTION_SETS


SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


@pytest.fixture(scope="module")
def cuda_backend():
    return get_backend("numba-cuda")


def _grads(sizes, seed, steps):
    rng = np.random.default_rng(seed)
    return [[(rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 2, n)).astype(np.float32)
             for n in sizes] for _ in range(steps)]


def _run(backend, params, grad_steps, options, state=None):
    """(params, state_dict) after the steps; from ``state`` (a state_dict) if given."""
    backend = get_backend(backend) if isinstance(backend, str) else backend
    arrays = [backend.asarray(p.copy()) for p in params]
    opt = Adam(arrays, backend=backend, state_dtype="int8", **options)
    if state is not None:
        opt.load_state_dict({"config": opt.config.to_dict(), "state": state})
    for grads in grad_steps:
        opt.step([backend.asarray(g) for g in grads])
    return [backend.to_numpy(a).copy() for a in opt.params], opt.state_dict()["state"]


def _assert_same_bits(a, b):
    """``a``'s bits in ``b``; float32-state tensors within FMA rounding on a real GPU."""
    assert_same_run(a, b, fused_float32=not SIMULATED)


@pytest.mark.parametrize("options", list(OPTION_SETS), ids=list(OPTION_SETS))
def test_steps_give_numpys_bits(cuda_backend, options):
    sizes = (4096 + 100,)  # 16 full blocks and a partial one
    params = [np.random.default_rng(1).standard_normal(n).astype(np.float32) for n in sizes]
    grads = _grads(sizes, 2, steps=2)
    _assert_same_bits(_run("numpy", params, grads, OPTION_SETS[options]),
                      _run(cuda_backend, params, grads, OPTION_SETS[options]))


def test_many_tensors_around_the_threshold_in_one_step(cuda_backend):
    """4095 elements keep float32 state (the fp32 kernel), 4097 has int8 state."""
    sizes = (4095, 4097, 5)
    rng = np.random.default_rng(3)
    params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grads = _grads(sizes, 4, steps=2)
    options = {"amsgrad": True, "weight_decay": 0.01}
    numpy_run = _run("numpy", params, grads, options)
    _assert_same_bits(numpy_run, _run(cuda_backend, params, grads, options))
    state = numpy_run[1]
    assert [s is None for s in state["exp_avg_scale"]] == [True, False, True]
    assert state["exp_avg"][0].dtype == np.float32 and state["exp_avg"][1].dtype == np.uint8


def test_nan_block_and_zero_block(cuda_backend):
    """A NaN makes its block's scale and state NaN (and only that block's), as an inf
    gradient does from the next step on (with L2, NaNs of either sign meet: every m code
    of such a block is M_NONFINITE_CODE); a block of zero gradients and params keeps scale
    0 and code 0 (x = 0 where absmax is 0)."""
    n = 4096 + 1
    rng = np.random.default_rng(5)
    p = rng.standard_normal(n).astype(np.float32)
    p[5 * codec.BLOCK:6 * codec.BLOCK] = 0
    grads = _grads((n,), 6, steps=3)
    for (g,) in grads:
        g[3 * codec.BLOCK + 7] = np.nan
        g[5 * codec.BLOCK:6 * codec.BLOCK] = 0
    grads[0][0][8 * codec.BLOCK + 1] = np.inf
    options = {"weight_decay": 0.1}
    numpy_run = _run("numpy", [p], grads, options)
    _assert_same_bits(numpy_run, _run(cuda_backend, [p], grads, options))
    scales = numpy_run[1]["exp_avg_scale"][0]
    assert np.isnan(scales[[3, 8]]).all() and scales[5] == 0
    assert np.count_nonzero(np.isnan(scales)) == 2
    codes = numpy_run[1]["exp_avg"][0]
    assert (codes[8 * codec.BLOCK:9 * codec.BLOCK] == codec.M_NONFINITE_CODE).all()


def test_resume_from_numpys_state_dict_is_bit_exact(cuda_backend):
    sizes = (4096 + 300, 200)
    rng = np.random.default_rng(7)
    params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grads = _grads(sizes, 8, steps=3)
    options = {"amsgrad": True}
    straight = _run("numpy", params, grads, options)
    half_params, half_state = _run("numpy", params, grads[:1], options)
    _assert_same_bits(straight, _run(cuda_backend, half_params, grads[1:], options, half_state))


def test_codes_of_every_value_class_match_the_numpy_maps():
    """The kernel's encoders and decoders on map values, midpoints, ulps beside them,
    denormals, NaN and infinity, against ``int8_codec``'s NumPy encoders."""
    from backends.cuda import _numba_cuda_kernels as kernels

    if not kernels._SIMULATED:
        pytest.skip("device functions are called from Python only under the simulator")
    x = np.concatenate([codec.M_VALUES, codec.V_VALUES, (codec.M_VALUES[1:] + codec.M_VALUES[:-1]) / 2,
                        (codec.V_VALUES[1:] + codec.V_VALUES[:-1]) / 2,
                        [0.0, 1e-45, 1e-40, codec.M_FLUSH, np.inf, np.nan]]).astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(0)), np.nextafter(x, np.float32(2))])
    x = np.concatenate([x, -x])
    np.testing.assert_array_equal([kernels._encode_m(v) for v in x], codec.encode_m(x))
    np.testing.assert_array_equal([kernels._encode_v(v) for v in x], codec.encode_v(x))
    codes = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(
        np.array([kernels._decode_m(c) for c in codes], np.float32).view(np.uint32),
        codec.decode_m(codes).view(np.uint32))
    np.testing.assert_array_equal(
        np.array([kernels._decode_v(c) for c in codes], np.float32).view(np.uint32),
        codec.decode_v(codes).view(np.uint32))


def test_save_and_load_on_the_gpu_backend_is_bit_exact(cuda_backend, tmp_path):
    """Codes, scales and float32 moments through a file: a step after loading gives the
    bits of a run that never stopped."""
    sizes = (4096 + 5, 100)
    rng = np.random.default_rng(9)
    params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grads = _grads(sizes, 10, steps=2)
    straight = _run("numpy", params, grads, {"amsgrad": True})
    arrays = [cuda_backend.asarray(p.copy()) for p in params]
    first = Adam(arrays, backend=cuda_backend, state_dtype="int8", amsgrad=True)
    first.step([cuda_backend.asarray(g) for g in grads[0]])
    first.save(tmp_path / "state.npz")
    resumed = [cuda_backend.asarray(cuda_backend.to_numpy(a)) for a in arrays]
    second = Adam.load(tmp_path / "state.npz", resumed)
    assert second.backend is cuda_backend or second.backend.name == "numba-cuda"
    second.step([cuda_backend.asarray(g) for g in grads[1]])
    _assert_same_bits(straight, ([cuda_backend.to_numpy(a) for a in second.params],
                                 second.state_dict()["state"]))
