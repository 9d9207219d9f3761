"""int8 state (state_dtype="int8"): the maps, bit identity of numpy and numba,
agreement with the float64 int8 reference, the update bound, resume, bad input."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from backends import Adam, AdamConfig, get_backend
from backends import int8_codec as codec
from backends.reference import Int8Moment, nearest_code, reference_step_int8
from harness.check.int8_agreement import compare_codes

INT8_BACKENDS = ["python", "numpy", "numba"]
CONFIGS = [{}, {"amsgrad": True}, {"weight_decay": 0.1},
           {"weight_decay": 0.1, "decoupled": True, "maximize": True}]
F32_EPS = float(np.finfo(np.float32).eps)


def hard_values() -> np.ndarray:
    """float32 values in [0, 1] where rounding is decided: every map value and midpoint,
    one ulp either side, denormals, and values drawn across all binades."""
    rng = np.random.default_rng(0)
    tables = (codec.M_VALUES, codec.V_VALUES)
    points = np.concatenate([*tables, *((t[1:] + t[:-1]) / 2 for t in tables),
                             [0.0, 1.0, 1e-45, 1e-40, 2.0**-40, 0.75 * 2.0**-32, codec.M_FLUSH]])
    x = points.astype(np.float32)
    x = np.concatenate([np.nextafter(x, np.float32(0)), x, np.nextafter(x, np.float32(1))])
    drawn = rng.integers(0, 0x3F800001, 1 << 18, dtype=np.uint32).view(np.float32)
    return np.concatenate([x, drawn])


@pytest.mark.parametrize("signed", [True, False], ids=["m", "v"])
def test_encoders_pick_the_nearest_map_value(signed):
    x = hard_values()
    if signed:
        x = np.concatenate([x, -x])
        codes = codec.encode_m(x)
    else:
        codes = codec.encode_v(x)
    np.testing.assert_array_equal(codes, nearest_code(x.astype(np.float64), signed))


def test_maps_decode_to_their_tables_and_v_never_to_zero():
    codes = np.arange(256, dtype=np.uint8)
    m = codec.decode_m(codes).astype(np.float64)
    np.testing.assert_array_equal(np.abs(m[:128]), codec.M_VALUES)
    np.testing.assert_array_equal(m[128:], -codec.M_VALUES)
    v = codec.decode_v(codes).astype(np.float64)
    np.testing.assert_array_equal(v, codec.V_VALUES)
    assert v.min() == 1.125 * 2.0**-32 and v.max() == 1.0 and m.max() == 1.0
    assert np.all(np.diff(codec.M_VALUES) > 0) and np.all(np.diff(codec.V_VALUES) > 0)


def _kernel_codec():
    """The numba kernels' encoders and decoders applied elementwise."""
    from numba import njit

    from backends.cpu._numba_int8_kernels import _decode_m, _decode_v, _encode_m, _encode_v

    @njit
    def codec(x, codes):
        encoded = np.empty((2, x.size), np.uint8)
        decoded = np.empty((2, codes.size), np.float32)
        for i in range(x.size):
            encoded[0, i], encoded[1, i] = _encode_m(x[i]), _encode_v(x[i])
        for i in range(codes.size):
            decoded[0, i], decoded[1, i] = _decode_m(codes[i]), _decode_v(codes[i])
        return encoded, decoded

    return codec


def test_numba_codec_equals_numpy_codec_on_every_hard_value():
    """Every rounding decision, both signs for m, NaN and inf: the kernels' 16-bit lane
    encoders and their decoders against int8_codec's (v's encoder sees x >= +0 or NaN)."""
    x = hard_values()
    x = np.concatenate([x, -x, np.float32([np.nan, -np.nan, np.inf, -np.inf, 1.5, 3e38])])
    codes = np.arange(256, dtype=np.uint8)
    encoded, decoded = _kernel_codec()(x, codes)
    np.testing.assert_array_equal(encoded[0], codec.encode_m(x))
    v_domain = ~np.signbit(x) | np.isnan(x)
    np.testing.assert_array_equal(encoded[1][v_domain], codec.encode_v(x[v_domain]))
    np.testing.assert_array_equal(decoded.view(np.uint32),
                                  np.stack([codec.decode_m(codes), codec.decode_v(codes)])
                                  .view(np.uint32))


def _params(seed, sizes=(100_000 + 37, 5000, 300, 4096)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(np.float32) for n in sizes]


def _grads(params, seed, steps):
    rng = np.random.default_rng(seed)
    return [[(rng.standard_normal(p.shape) * 10.0 ** rng.integers(-8, 3)).astype(np.float32)
             for p in params] for _ in range(steps)]


def _run(backend, config, params, grad_steps):
    params = [p.copy() for p in params]
    opt = Adam(params, backend=backend, state_dtype="int8", **config)
    for grads in grad_steps:
        opt.step(grads)
    return params, opt.state_dict()["state"]


def _assert_same_bits(a, b):
    (pa, sa), (pb, sb) = a, b
    for x, y in zip(pa, pb):
        np.testing.assert_array_equal(x.view(np.uint32), y.view(np.uint32))
    assert sa.keys() == sb.keys()
    for key in sa:
        if key == "step" or sa[key] is None:
            assert sa[key] == sb[key]
            continue
        for x, y in zip(sa[key], sb[key]):
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8))


@pytest.mark.parametrize("config", CONFIGS + [{"weight_decay": 0.1, "decoupled": True},
                                               {"maximize": True}],
                         ids=lambda c: ",".join(c) or "plain")
def test_numpy_and_numba_are_bit_identical(config):
    """Every option alone as well: the kernel's loop without maximize and weight decay
    is a separate copy."""
    params = _params(1)
    grads = _grads(params, 2, steps=5)
    _assert_same_bits(_run("numpy", config, params, grads),
                      _run("numba", config, params, grads))


def test_numba_one_and_two_threads_are_bit_identical():
    params = _params(3, sizes=(300_000,))
    grads = _grads(params, 4, steps=3)
    runs = [_run(get_backend("numba", threads=n), {"amsgrad": True}, params, grads)
            for n in (1, 2)]
    _assert_same_bits(*runs)


@pytest.mark.parametrize("backend", INT8_BACKENDS)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(c) or "plain")
def test_one_step_matches_the_int8_reference(backend, config):
    """From one int8 state, a step gives the reference's scales (within float32
    rounding) and codes, except where the reference's value / scale lies within float32
    rounding of a decision boundary (those are counted: few)."""
    cfg = AdamConfig(state_dtype="int8", **config)
    rng = np.random.default_rng(5)
    n = 4096 * 2 + 100
    p = rng.standard_normal(n).astype(np.float32)
    opt = Adam([p], backend=backend, **{**config, "state_dtype": "int8"})
    for _ in range(3):
        opt.step([rng.standard_normal(n).astype(np.float32)])
    before = opt.state_dict()["state"]
    p0 = p.copy()
    g = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 1, n)).astype(np.float32)
    opt.step([g])
    after = opt.state_dict()["state"]

    def moment(state, name):
        if state[name] is None:
            return None
        return Int8Moment(state[name][0], state[f"{name}_scale"][0].astype(np.float64))

    ref_p, *ref = reference_step_int8(p0, g, moment(before, "exp_avg"),
                                      moment(before, "exp_avg_sq"),
                                      moment(before, "max_exp_avg_sq"), opt.state.step, cfg)
    np.testing.assert_allclose(p, ref_p, rtol=1e-5, atol=1e-6)
    near_boundary = 0
    for name, signed, q in zip(("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                               (True, False, False), ref):
        if q is None:
            continue
        np.testing.assert_allclose(after[f"{name}_scale"][0], q.scales, rtol=8 * F32_EPS)
        at_boundary, elsewhere = compare_codes(after[name][0], q, signed)
        assert elsewhere == 0, f"{name}: codes differ away from decision boundaries"
        near_boundary += at_boundary
    assert near_boundary <= n // 100


@pytest.mark.parametrize("backend", INT8_BACKENDS)
def test_resume_from_file_is_bit_exact(backend, tmp_path):
    params = _params(6, sizes=(5000, 300))
    grads = _grads(params, 7, steps=4)
    straight = [p.copy() for p in params]
    opt = Adam(straight, backend=backend, state_dtype="int8", amsgrad=True)
    for g in grads:
        opt.step(g)
    resumed = [p.copy() for p in params]
    first = Adam(resumed, backend=backend, state_dtype="int8", amsgrad=True)
    for g in grads[:2]:
        first.step(g)
    first.save(tmp_path / "state.npz")
    second = Adam.load(tmp_path / "state.npz", resumed)
    assert second.config.state_dtype == "int8"
    for g in grads[2:]:
        second.step(g)
    _assert_same_bits((straight, opt.state_dict()["state"]),
                      (resumed, second.state_dict()["state"]))


def test_memory_is_about_a_quarter():
    p = np.zeros(1 << 16, np.float32)
    state = Adam([p], backend="numpy", state_dtype="int8").state
    nbytes = sum(a.nbytes for a in state.exp_avg + state.exp_avg_sq + state.exp_avg_scale
                 + state.exp_avg_sq_scale)
    assert nbytes == 2 * p.size * (1 + 4 / codec.BLOCK)


@given(exponents=st.lists(st.floats(-30, 8), min_size=20, max_size=20),
       spread=st.floats(0, 15), sparsity=st.floats(0, 0.99), seed=st.integers(0, 2**16))
def test_no_update_exceeds_a_small_multiple_of_lr(exponents, spread, sparsity, seed):
    """Adam's step is about lr at most; a v that decodes to 0 under a nonzero m (the
    zero-point failure) would make it lr * m / eps, orders of magnitude more."""
    rng = np.random.default_rng(seed)
    n, lr = 8192, 1e-3
    p = rng.standard_normal(n).astype(np.float32)
    opt = Adam([p], backend="numba", lr=lr, state_dtype="int8")
    worst = 0.0
    for e in exponents:
        g = rng.standard_normal(n) * 10.0 ** (e - rng.uniform(0, spread, n))
        g[rng.random(n) < sparsity] = 0
        before = p.astype(np.float64)
        opt.step([g.astype(np.float32)])
        worst = max(worst, float(np.max(np.abs(p - before))))
    bound = lr * (1 - 0.9) / np.sqrt(1 - 0.999)  # Adam's own, about 3.2 lr
    assert worst <= bound


def test_bad_state_dtype_and_params():
    with pytest.raises(ValueError, match="Invalid state_dtype"):
        AdamConfig(state_dtype="fp8")
    with pytest.raises(ValueError, match="Invalid state_dtype"):
        AdamConfig(state_dtype=np.array("int8"))
    with pytest.raises(TypeError, match="needs float32 params"):
        Adam([np.zeros(5000)], backend="numpy", state_dtype="int8")


@pytest.mark.parametrize("name", ["numba-cuda", "cupy"])
def test_gpu_backends_declare_int8_state(name):
    """(Their kernels' bits are checked under the CUDA simulator and as PTX: see
    tests/cuda_sim and tests/test_machine_code.py.)"""
    import importlib

    from backends.registry import _BUILT_IN

    module, cls, _ = _BUILT_IN[name]
    try:
        backend_class = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        pytest.skip(f"{name} module does not import here: {exc}")
    assert backend_class.supports_int8_state


def test_a_backend_without_int8_state_refuses_it_by_name():
    from backends.cpu.numpy import NumpyBackend
    from backends.int8_step import require_int8_support

    class Float32Only(NumpyBackend):
        name = "float32-only"
        supports_int8_state = False

    with pytest.raises(ValueError, match="state_dtype='int8' is not implemented by the "
                                         "float32-only backend"):
        require_int8_support(Float32Only(), [np.zeros(5000, np.float32)])


@pytest.mark.parametrize("backend", INT8_BACKENDS)
def test_bad_state_is_refused_before_anything_changes(backend):
    params = _params(8, sizes=(5000, 300))
    opt = Adam(params, backend=backend, state_dtype="int8")
    grads = _grads(params, 9, steps=1)[0]
    opt.step(grads)
    before = [p.copy() for p in params], opt.state_dict()["state"]
    opt.state.exp_avg_sq[0] = opt.state.exp_avg_sq[0].astype(np.float32)
    with pytest.raises(ValueError, match=r"state.exp_avg_sq\[0\] is float32"):
        opt.step(grads)
    opt.state.exp_avg_sq[0] = opt.state.exp_avg[0]
    with pytest.raises(ValueError, match="share memory"):
        opt.step(grads)
    opt.state.exp_avg_sq[0] = before[1]["exp_avg_sq"][0].copy()
    opt.state.exp_avg_scale[1] = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match=r"exp_avg_scale\[1\] must be None"):
        opt.step(grads)
    opt.state.exp_avg_scale[1] = None
    with pytest.raises(ValueError, match="stepped with amsgrad=False"):
        opt.load_state_dict({"config": {**opt.config.to_dict(), "amsgrad": True},
                             "state": opt.state_dict()["state"]})
    _assert_same_bits(before, ([p for p in params], opt.state_dict()["state"]))


@pytest.mark.parametrize("backend", INT8_BACKENDS)
def test_arrays_changed_in_place_after_checked_steps_are_checked_again(backend):
    """Later steps skip the checks for the same arrays with the same headers: a header
    changed in place (flags, shape, dtype) sends the step back through them."""
    params = _params(10, sizes=(5000, 300))
    opt = Adam(params, backend=backend, state_dtype="int8")
    grads = _grads(params, 11, steps=1)[0]
    opt.step(grads)
    opt.step(grads)
    before = [p.copy() for p in params], opt.state_dict()["state"]
    changes = [
        (lambda s: setattr(s.exp_avg_sq_scale[0].flags, "writeable", False),
         lambda s: setattr(s.exp_avg_sq_scale[0].flags, "writeable", True),
         r"state.exp_avg_sq_scale\[0\] is read-only"),
        (lambda s: setattr(s.exp_avg[0], "shape", (50, 100)),
         lambda s: setattr(s.exp_avg[0], "shape", (5000,)),
         r"state.exp_avg\[0\] is uint8 \(50, 100\); expected uint8 \(5000,\)"),
        (lambda s: setattr(s.exp_avg_scale[0], "dtype", np.int32),
         lambda s: setattr(s.exp_avg_scale[0], "dtype", np.float32),
         r"state.exp_avg_scale\[0\] is int32"),
    ]
    for change, undo, message in changes:
        change(opt.state)
        with pytest.raises(ValueError, match=message):
            opt.step(grads)
        undo(opt.state)
    _assert_same_bits(before, ([p for p in params], opt.state_dict()["state"]))


@pytest.mark.parametrize("scale", ["exp_avg_scale", "exp_avg_sq_scale"])
@pytest.mark.parametrize("backend", INT8_BACKENDS)
def test_a_negative_scale_is_refused_by_load_state_dict_and_load(backend, scale, tmp_path):
    """A negative scale would flip m's sign or make v negative (params NaN): a state dict
    or file holding one is refused, as a negative fp32 second moment is, and nothing
    changes. -0.0 is no negative value: it is accepted."""
    params = _params(12, sizes=(5000, 300))
    opt = Adam(params, backend=backend, state_dtype="int8")
    grads = _grads(params, 13, steps=1)[0]
    opt.step(grads)
    before = [p.copy() for p in params], opt.state_dict()["state"]
    bad = opt.state_dict()
    bad["state"][scale][0][3] = -bad["state"][scale][0][3] - 1.0
    message = rf"{scale}\[0\] holds negative values; an int8 block's scale is never negative"
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(bad)
    from backends.checkpoint import write_checkpoint

    write_checkpoint(tmp_path / "bad.npz", bad)
    with pytest.raises(ValueError, match=message):
        Adam.load(tmp_path / "bad.npz", params)
    _assert_same_bits(before, ([p for p in params], opt.state_dict()["state"]))
    signed_zero = opt.state_dict()
    signed_zero["state"][scale][0][3] = -0.0
    opt.load_state_dict(signed_zero)


def _nonfinite_run(backend, steps):
    """L2 steps of one int8 tensor: an inf gradient in block 0 and a NaN in block 2
    at the first step, so block 0 holds inf moments, then NaN ones; block 2 NaN ones."""
    rng = np.random.default_rng(14)
    p = rng.standard_normal(4 * codec.BLOCK + 4096).astype(np.float32)
    grads = [rng.standard_normal(p.size).astype(np.float32) for _ in range(steps)]
    grads[0][7], grads[0][2 * codec.BLOCK + 9] = np.inf, np.nan
    with np.errstate(all="ignore"):
        return _run(backend, {"weight_decay": 0.1}, [p], [[g] for g in grads])


@pytest.mark.parametrize("steps", [1, 3])
def test_non_finite_blocks_give_identical_bits(steps):
    """Whatever sign the NaN of each backend's arithmetic has (x86 makes inf * 0 negative
    and passes on one operand's when two NaNs meet, in the order the compiler chose),
    numpy and numba write the same bits: every m code of a block with an inf or NaN scale
    is M_NONFINITE_CODE (127), in the python backend too."""
    runs = {name: _nonfinite_run(name, steps) for name in INT8_BACKENDS}
    _assert_same_bits(runs["numpy"], runs["numba"])
    for name, (_, state) in runs.items():
        scales, codes = state["exp_avg_scale"][0], state["exp_avg"][0].reshape(-1, codec.BLOCK)
        assert np.isnan(scales[2]) and (np.isinf(scales[0]) if steps == 1 else np.isnan(scales[0]))
        assert np.isfinite(np.delete(scales, [0, 2])).all(), name
        assert (codes[[0, 2]] == 127).all(), name
        assert (np.delete(codes, [0, 2], axis=0) != 127).any(), name
