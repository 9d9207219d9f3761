"""Low-precision params and state: config, roundings, reference, backends' bits, resume."""
from __future__ import annotations

import struct

import ml_dtypes
import numpy as np
import pytest
from scipy import stats

from backends import Adam, AdamConfig, get_backend
from backends.formats import (BFLOAT16, bf16_nearest_bits, bf16_stochastic_bits, finfo,
                              random16, round_stochastic, seed_stream, stream_key)
from backends.reference import LowPrecisionState, ReferenceState, \
    reference_step_low_precision, to_grid

#: (name, params dtype, config options): every format the step takes.
FORMATS = [
    ("bf16", BFLOAT16, {}),
    ("bf16-bf16state", BFLOAT16, {"state_dtype": "bfloat16"}),
    ("bf16-sr", BFLOAT16, {"rounding": "stochastic", "seed": 7, "state_dtype": "bfloat16"}),
    ("bf16-kahan", BFLOAT16, {"rounding": "kahan", "state_dtype": "bfloat16"}),
    ("bf16-master", BFLOAT16, {"master_weights": True}),
    ("fp16", np.float16, {"state_dtype": "float32"}),
    ("fp16-kahan", np.float16, {"rounding": "kahan", "state_dtype": "float32"}),
    ("fp16-master", np.float16, {"master_weights": True, "amsgrad": True}),
    ("fp32-bf16state", np.float32, {"state_dtype": "bfloat16", "weight_decay": 0.1}),
]
IDS = [f[0] for f in FORMATS]


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8).copy()


def _problem(dtype, n, steps, grad_dtype=None, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(dtype), rng.standard_normal((3, 5)).astype(dtype)]
    grads = [[rng.standard_normal(p.shape).astype(grad_dtype or dtype) for p in params]
             for _ in range(steps)]
    grads[0][0][:4] = [np.nan, np.inf, -np.inf, 0]  # IEEE specials propagate identically
    if grads[0][0].dtype == np.float32:  # a NaN whose payload carries out if unguarded
        grads[0][0].view(np.uint32)[4] = 0x7FFFFFFF
    return params, grads


def _run(backend, dtype, options, n=300, steps=3, grad_dtype=None, lr=1e-2):
    params, grads = _problem(dtype, n, steps, grad_dtype)
    cfg = AdamConfig(lr=lr, **options)
    state = backend.init_state(params, cfg)
    for g in grads:
        backend.step(params, g, state, cfg)
    out = params + [a for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "master_params",
                                   "compensation") for a in getattr(state, name) or ()]
    return [_bits(a) for a in out], state


# --- config -----------------------------------------------------------------------------
@pytest.mark.parametrize("options, error, match", [
    ({"rounding": "up"}, ValueError, "Invalid rounding: 'up'"),
    ({"state_dtype": "float16"}, ValueError, "Invalid state_dtype: 'float16'"),
    ({"seed": -1}, ValueError, r"Invalid seed: -1 \(expected an int in 0..2\*\*64-1\)"),
    ({"seed": 2**64}, ValueError, "Invalid seed"),
    ({"seed": 1.0}, ValueError, "Invalid seed: 1.0"),
    ({"seed": True}, ValueError, "Invalid seed: True"),
    ({"master_weights": 1}, TypeError, "master_weights must be a bool"),
    ({"master_weights": True, "rounding": "stochastic"}, ValueError,
     "with master_weights=True the params are written"),
    ({"state_dtype": "int8", "rounding": "kahan"}, ValueError, "state_dtype='int8' is for"),
])
def test_config_refuses_bad_low_precision_options(options, error, match):
    with pytest.raises(error, match=match):
        AdamConfig(**options)


# --- the roundings against independent oracles ----------------------------------------------
def _edge_floats():
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    special = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7FFFFFFF,
                        0xFFFFFFFF, 0x7F7FFFFF, 0x7F7F8000, 0x3F808000, 0x3F818000,
                        0x00008000, 0x00018000, 0x3F807FFF], dtype=np.uint32)
    return np.concatenate([special, bits]).view(np.float32)


def test_bf16_nearest_is_ml_dtypes_cast():
    x = _edge_floats()
    with np.errstate(invalid="ignore"):
        expected = x.astype(BFLOAT16).view(np.uint16)
    got = bf16_nearest_bits(x.view(np.uint32))
    finite = np.isfinite(x) | np.isinf(x)
    assert np.array_equal(got[finite], expected[finite])
    nan = np.isnan(x)
    assert np.all(np.isnan(got[nan].view(BFLOAT16).astype(np.float32)))
    assert np.array_equal(got[nan] >> 15, x[nan].view(np.uint32) >> 31)  # sign kept


def test_to_grid_rounds_float64_once():
    # 1 + 2**-8 + 2**-30: float32 would round it to the tie 1 + 2**-8 first, then to 1
    x = np.array([1 + 2**-8 + 2**-30, 1 + 2**-8, 1 + 3 * 2**-8, 3.3962e38, -3 * 2.0**-133,
                  np.nan, -np.inf, 65519.0, 65520.0])
    got = to_grid(x, BFLOAT16)
    assert got[0] == 1 + 2**-7 and got[1] == 1.0 and got[2] == 1 + 4 * 2**-8
    assert got[3] == np.inf and got[4] == -3 * 2.0**-133 and np.isnan(got[5]) and got[6] == -np.inf
    half = to_grid(x[-2:], np.float16)
    assert half[0] == 65504.0 and half[1] == np.inf
    f32 = _edge_floats()[:20000]
    f32 = f32[np.isfinite(f32)]
    with np.errstate(over="ignore"):
        assert np.array_equal(to_grid(f32.astype(np.float64), BFLOAT16),
                              f32.astype(BFLOAT16).astype(np.float64))
        assert np.array_equal(to_grid(f32.astype(np.float64), np.float16),
                              f32.astype(np.float16).astype(np.float64))


def _lowbias32(x: int) -> int:
    """lowbias32 spelled on Python ints from its published constants."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def _documented_random16(key: int, i: int) -> int:
    """Element ``i``'s half of lowbias32 of its pair's even index (formats' docstring)."""
    even = i & ~1
    h = _lowbias32((even & 0xFFFFFFFF) ^ key ^ ((even >> 32) * 0x9E3779B9 & 0xFFFFFFFF))
    return h >> 16 if i & 1 else h & 0xFFFF


_HASHED_INDICES = [0, 1, 2, 9, 5000, 2**32 - 2, 2**32 - 1, 2**32, 2**32 + 7, 3 * 2**32 + 11]


def test_random_bits_are_the_documented_hash():
    """One hash per pair of elements, its low half for the even one, its high half for
    the odd one (a mutant that gives the odd element the low half, or hashes the odd
    index itself, fails this)."""
    key = stream_key(123, 9, 2)
    assert key == stream_key(123, 9, 2) and key != stream_key(123, 9, 3)
    assert key != stream_key(124, 9, 2) and key != stream_key(123, 10, 2)
    got = [int(random16(key, i, i + 1)[0]) for i in _HASHED_INDICES]
    assert got == [_documented_random16(key, i) for i in _HASHED_INDICES]
    assert np.array_equal(random16(key, 3, 10), random16(key, 0, 10)[3:])  # chunk-free
    assert np.array_equal(random16(key, 2**32 - 3, 2**32 + 3),
                          [_documented_random16(key, i) for i in range(2**32 - 3, 2**32 + 3)])


def test_numba_hash_by_blocks_is_the_documented_hash():
    """The Numba kernel hashes ``lo32(i)`` under the key of i's block (``segment_key``):
    the same 16 bits as the hash of the whole index, on both sides of a block edge (a
    segment key without the block fails this); its pair hash holds the even element's
    bits in its low half and the odd one's in its high half."""
    from numba import njit

    from backends.cpu import _numba_low_precision_kernels as lp

    kernel_bits = njit(lambda key, i: lp.random16(key, i))
    pair_bits = njit(lambda key, i: lp.pair_random(key, i))
    segment_key = njit(lambda seed, t, index, start: lp.segment_key(seed, t, index, start))
    key = stream_key(5, 3, 1)
    for i in _HASHED_INDICES:
        low = i % lp.BLOCK
        block_key = segment_key(np.uint64(seed_stream(5)), 3, 1, np.int64(i - low))
        got = int(kernel_bits(block_key, np.int64(low)))
        assert got == int(random16(key, i, i + 1)[0]) == _documented_random16(key, i)
        pair = int(pair_bits(block_key, np.uint32(low & ~1)))
        assert (pair >> 16 if i & 1 else pair & 0xFFFF) == got


def test_numba_steps_a_tensor_block_by_block():
    """A tensor longer than one hash block goes to the kernel in blocks of its elements,
    each with its first element's index (the arrays themselves when one block holds
    them)."""
    from backends.cpu.numba import _blocks

    a, b = np.arange(10), np.arange(10, 20)
    assert [(k, part) for k, part in _blocks((a, None, b), 10)] == [(0, (a, None, b))]
    parts = list(_blocks((a, None, b), 4))
    assert [k for k, _ in parts] == [0, 4, 8]
    assert [p[1] for _, p in parts] == [None] * 3
    assert np.array_equal(np.concatenate([p[0] for _, p in parts]), a)
    assert np.array_equal(np.concatenate([p[2] for _, p in parts]), b)


def test_stochastic_rounding_is_unbiased_over_seeds():
    """Mean of stochastically rounded values over 4000 keys is the value itself: a
    two-sided t-test per value at alpha = 1e-6 (false failure about 1e-5 for the 8 values),
    and plain rounding's bias is detected by the same test (it must fail there)."""
    rng = np.random.default_rng(3)
    x = (1 + rng.uniform(0, 1, 8) * 2**-7).astype(np.float32)  # between bf16 neighbours
    keys = [stream_key(seed, 1, 0) for seed in range(4000)]
    rounded = np.array([round_stochastic(x, random16(k, 0, x.size)).astype(np.float64)
                        for k in keys])
    spacing = 2.0**-7
    assert set(np.unique((rounded - 1) / spacing)) <= {0.0, 1.0, 2.0}
    p = stats.ttest_1samp(rounded, x.astype(np.float64), axis=0).pvalue
    assert np.all(p > 1e-6), p
    nearest = np.broadcast_to(x.astype(BFLOAT16).astype(np.float64), rounded.shape)
    noisy = nearest + rng.normal(0, 1e-9, nearest.shape)
    assert np.any(stats.ttest_1samp(noisy, x.astype(np.float64), axis=0).pvalue < 1e-6)


# --- backends -------------------------------------------------------------------------------
@pytest.mark.parametrize("name, dtype, options", FORMATS, ids=IDS)
def test_numpy_python_and_numba_give_the_same_bits(name, dtype, options):
    numpy_bits, _ = _run(get_backend("numpy"), dtype, options)
    python_bits, _ = _run(get_backend("python"), dtype, options)
    numba_bits, _ = _run(get_backend("numba"), dtype, options)
    for a, b, c in zip(numpy_bits, python_bits, numba_bits):
        assert np.array_equal(a, c), f"numba differs from numpy ({name})"
        finite = a == b
        if not finite.all():  # python and the kernels may pick different NaN payloads
            values = [np.frombuffer(x.tobytes(), dtype=np.dtype(dtype)) for x in (a, b)]
            assert values[0].size == 0 or np.array_equal(values[0], values[1], equal_nan=True)


@pytest.mark.parametrize("grad_dtype", [np.float32, BFLOAT16])
def test_numba_threads_and_float32_grads(grad_dtype):
    """Above the serial threshold: 1 thread == 2 threads == numpy, bit for bit."""
    from backends.cpu.numba import SERIAL_MAX, NumbaBackend

    options = {"rounding": "stochastic", "seed": 1, "state_dtype": "bfloat16"}
    n = 2 * SERIAL_MAX + 3
    one = _run(NumbaBackend(threads=1), BFLOAT16, options, n=n, grad_dtype=grad_dtype)[0]
    two = _run(NumbaBackend(threads=2), BFLOAT16, options, n=n, grad_dtype=grad_dtype)[0]
    ref = _run(get_backend("numpy"), BFLOAT16, options, n=n, grad_dtype=grad_dtype)[0]
    assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(one, two, ref))
    nans = [0, 4] if grad_dtype == np.float32 else [0]  # NaN grads give NaN params
    assert np.isnan(one[0].view(BFLOAT16)[nans].astype(np.float32)).all()


def test_numba_bf16_roundings_in_pairs_are_formats_roundings():
    """The Numba kernels' bfloat16 roundings (a nearest-even addend chosen by a test, two
    results packed in one uint32 as the all-bfloat16 kernel stores them) give formats'
    bits for every edge float: ties both ways, NaNs, infinities, subnormals (an addend of
    0x8000 whatever the kept bit, or halves packed the other way round, fail)."""
    from numba import njit

    from backends.cpu import _numba_low_precision_kernels as lp

    @njit
    def packed(x, random):
        nearest = np.empty(x.size // 2, np.uint32)
        stochastic = np.empty(x.size // 2, np.uint32)
        for i in range(nearest.size):
            a, b = x[2 * i], x[2 * i + 1]
            nearest[i] = lp._pack(lp._nearest_sum(a), lp._nearest_sum(b))
            stochastic[i] = lp._pack(lp._bf16_sum(a, random[2 * i]),
                                     lp._bf16_sum(b, random[2 * i + 1]))
        return nearest, stochastic

    x = _edge_floats()
    x = np.concatenate([x, x[1:]])  # each value at an even and an odd place
    x = x[:x.size - x.size % 2]
    random = random16(stream_key(3, 1, 0), 0, x.size)
    nearest, stochastic = packed(x, random)
    bits = x.view(np.uint32)
    assert np.array_equal(nearest.view(np.uint16), bf16_nearest_bits(bits))
    assert np.array_equal(stochastic.view(np.uint16), bf16_stochastic_bits(bits, random))


@pytest.mark.parametrize("name, options", [
    ("bf16-bf16state", {"state_dtype": "bfloat16", "maximize": True}),
    ("bf16-sr", {"rounding": "stochastic", "seed": 7, "state_dtype": "bfloat16"}),
    ("bf16-kahan", {"rounding": "kahan", "state_dtype": "bfloat16", "weight_decay": 0.1}),
    ("bf16-amsgrad", {"amsgrad": True, "weight_decay": 0.1, "decoupled": True})])
def test_numba_bf16_pairs_give_numpys_bits(name, options):
    """Above the serial threshold an all-bfloat16 tensor is stepped two elements per
    uint32 (``adam_bf16_pairs``), an odd last element alone: numpy's bits, for
    every field (a tail left unwritten, or the hash of element 2i + 1 taken at i, fail)."""
    from backends.cpu.numba import SERIAL_MAX

    n = SERIAL_MAX + 1
    ours = _run(get_backend("numba"), BFLOAT16, options, n=n)[0]
    ref = _run(get_backend("numpy"), BFLOAT16, options, n=n)[0]
    assert all(np.array_equal(a, b) for a, b in zip(ours, ref))


@pytest.mark.parametrize("name", ["bf16-sr", "bf16-kahan", "fp16-master"])
def test_numpy_threads_give_one_threads_bits(name):
    """Large low-precision steps are split over the numpy backend's threads in chunks of
    another size than one thread's: the bits stay those of one thread."""
    from backends.cpu.numpy import PARALLEL_MIN_ELEMENTS, NumpyBackend

    _, dtype, options = FORMATS[IDS.index(name)]
    n = PARALLEL_MIN_ELEMENTS + 5
    one = _run(NumpyBackend(threads=1), dtype, options, n=n)[0]
    two = _run(NumpyBackend(threads=2, chunk_bytes=4096), dtype, options, n=n)[0]
    assert all(np.array_equal(a, b) for a, b in zip(one, two))


@pytest.mark.parametrize("name, dtype, options", FORMATS, ids=IDS)
def test_numpy_agrees_with_the_float64_reference(name, dtype, options):
    """Every stored value within one spacing of its format of the reference's, and most
    exactly equal (they differ only where float32's rounding crosses a boundary)."""
    params, grads = _problem(dtype, 2000, 4)
    for g in grads:
        g[0][:5] = 0.5  # no NaN (checked elsewhere)
    cfg = AdamConfig(lr=1e-2, **options)
    be = get_backend("numpy")
    state = be.init_state(params, cfg)
    p_dtype = np.dtype(dtype)
    s_dtype = state.exp_avg[0].dtype
    ref_p = [p.astype(np.float64) for p in params]
    ref = [LowPrecisionState(ReferenceState.zeros_like(p, cfg.amsgrad),
                             master=p.astype(np.float64) if cfg.master_weights else None,
                             compensation=np.zeros(p.shape) if cfg.rounding == "kahan"
                             else None) for p in params]
    for t, g in enumerate(grads, start=1):
        be.step(params, g, state, cfg)
        for i in range(len(params)):
            random = random16(stream_key(cfg.seed, t, i), 0, params[i].size).reshape(
                params[i].shape) if cfg.rounding == "stochastic" else None
            ref_p[i], ref[i] = reference_step_low_precision(
                ref_p[i], g[i].astype(np.float64), ref[i], t, cfg, p_dtype, s_dtype, random)
    for i, p in enumerate(params):
        got, want = p.astype(np.float64), ref_p[i]
        spacing = np.abs(want) * 2.0 ** -(finfo(p_dtype).nmant) + 1e-30
        if p_dtype.itemsize == 2:  # rounded once per step, from float32 results
            assert np.all(np.abs(got - want) <= spacing), name
            assert np.mean(got == want) > 0.97, name
        else:  # float32 params round every operation of every step (updates ~ lr)
            assert np.all(np.abs(got - want) <= 8 * (spacing + cfg.lr * 2.0**-23)), name
        g = np.array([step[i].astype(np.float64) for step in grads])
        scales = (0.1 * np.abs(g).max(axis=0), 0.001 * (g * g).max(axis=0))
        for got_m, want_m, scale in ((state.exp_avg[i], ref[i].moments.m, scales[0]),
                                     (state.exp_avg_sq[i], ref[i].moments.v, scales[1])):
            # a spacing of the operands per step (cancellation can make it many of m's)
            got_m = got_m.astype(np.float64)
            spacing = (np.abs(want_m) + scale) * 2.0 ** -finfo(s_dtype).nmant
            assert np.all(np.abs(got_m - want_m) <= 4 * spacing), name
            if s_dtype.itemsize == 2:  # float32 moments round every operation
                assert np.mean(got_m == want_m) > 0.97, name


def test_stochastic_and_kahan_keep_small_updates_that_nearest_loses():
    """Updates far below half a bfloat16 spacing: nearest leaves params where they are,
    stochastic rounding and Kahan move them as float32 does (the reason they exist)."""
    be = get_backend("numpy")
    finals = {}
    for rounding in ("nearest", "stochastic", "kahan"):
        p = [np.full(4096, 1.0, BFLOAT16)]
        cfg = AdamConfig(lr=1e-4, rounding=rounding, state_dtype="bfloat16")
        state = be.init_state(p, cfg)
        for _ in range(200):
            be.step(p, [np.full(4096, 1.0, BFLOAT16)], state, cfg)
        finals[rounding] = float(np.mean(p[0].astype(np.float64)))
    assert finals["nearest"] == 1.0
    for rounding in ("stochastic", "kahan"):  # float32 math: 1 - 200 * 1e-4 = 0.98
        assert abs(finals[rounding] - 0.98) < 0.002, finals


# --- state, files, errors -------------------------------------------------------------------
@pytest.mark.parametrize("name, dtype, options", FORMATS, ids=IDS)
def test_save_load_resumes_bit_for_bit(tmp_path, name, dtype, options):
    params, grads = _problem(dtype, 500, 6)
    whole = Adam([p.copy() for p in params], backend="numpy", lr=1e-2, **options)
    for g in grads:
        whole.step(g)
    half = Adam([p.copy() for p in params], backend="numpy", lr=1e-2, **options)
    for g in grads[:3]:
        half.step(g)
    half.save(tmp_path / "s.npz")
    resumed = Adam.load(tmp_path / "s.npz", half.params, backend="python")
    for g in grads[3:]:
        resumed.step(g)
    again = Adam([p.copy() for p in half.params], backend="numpy", lr=1e-2, **options)
    again.load_state_dict(half.state_dict())
    for a, b in zip(whole.params, resumed.params):
        assert np.array_equal(_bits(a), _bits(b), equal_nan=False) or np.array_equal(
            a.astype(np.float64), b.astype(np.float64), equal_nan=True)
    assert again.state.step == 3


def _rejected(step, error, match, arrays):
    before = [_bits(a) for a in arrays]
    with pytest.raises(error, match=match):
        step()
    assert all(np.array_equal(a, _bits(b)) for a, b in zip(before, arrays))


@pytest.mark.parametrize("backend", ["numpy", "numba", "python"])
def test_bad_low_precision_input_is_refused_before_anything_changes(backend):
    be = get_backend(backend)
    f32 = [np.ones(8, np.float32)]
    with pytest.raises(TypeError, match=r"rounding='kahan' needs bfloat16 or float16 params; "
                                        r"params\[0\] is float32"):
        be.init_state(f32, AdamConfig(rounding="kahan"))
    with pytest.raises(TypeError, match=r"master_weights=True needs bfloat16 or float16"):
        be.init_state(f32, AdamConfig(master_weights=True))
    with pytest.raises(TypeError, match=r"rounding='stochastic' is implemented for bfloat16"):
        be.init_state([np.ones(8, np.float16)], AdamConfig(rounding="stochastic"))
    with pytest.raises(TypeError, match=r"float64 takes no low-precision option"):
        be.init_state([np.ones(8)], AdamConfig(state_dtype="bfloat16"))
    cfg = AdamConfig(rounding="kahan")
    p = [np.ones(8, BFLOAT16)]
    state = be.init_state(p, cfg)
    arrays = p + state.exp_avg + state.exp_avg_sq + state.compensation
    _rejected(lambda: be.step(p, [np.ones(8, np.float16)], state, cfg), TypeError,
              r"grads\[0\] is float16; params\[0\] is bfloat16, so its grads must be", arrays)
    _rejected(lambda: be.step(p, [np.ones(9, BFLOAT16)], state, cfg), ValueError,
              r"grads\[0\] has shape \(9,\) but params\[0\] has \(8,\)", arrays)
    _rejected(lambda: be.step(p, [np.ones(8, BFLOAT16)], state,
                              AdamConfig(rounding="kahan", state_dtype="float32")), ValueError,
              r"state.exp_avg\[0\] is bfloat16 \(8,\); expected float32 \(8,\)", arrays)
    state.compensation = [state.exp_avg[0]]
    _rejected(lambda: be.step(p, [np.ones(8, BFLOAT16)], state, cfg), ValueError,
              "share memory", arrays)


def _stepped_with(backend, options, n, fresh: bool) -> tuple[list, list]:
    """(bits of params and state, the full checks run after the first step) of three
    steps whose grads are new arrays each step (``fresh``) or the same arrays refilled."""
    from backends import low_precision_step

    params, grads = _problem(BFLOAT16, n, 3)
    cfg = AdamConfig(lr=1e-2, **options)
    state = backend.init_state(params, cfg)
    kept = [g.copy() for g in grads[0]]
    checks = []
    full_check = low_precision_step.check_low_precision
    for k, g in enumerate(grads):
        for a, b in zip(kept, g):
            a[...] = b
        backend.step(params, [x.copy() for x in g] if fresh else kept, state, cfg)
        if k == 0:
            low_precision_step.check_low_precision = lambda *a: checks.append(a) or \
                full_check(*a)
    low_precision_step.check_low_precision = full_check
    out = params + [a for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq",
                                   "compensation") for a in getattr(state, name) or ()]
    return [_bits(a) for a in out], checks


@pytest.mark.parametrize("backend, n", [("numpy", 300), ("numba", 300), ("numba", 8193)],
                         ids=["numpy", "numba-table", "numba-lone-pairs"])
def test_new_grads_alone_are_checked_alone_and_step_as_kept_grads(backend, n):
    """A loop that makes new grad arrays every step (a framework's fresh gradients), the
    params and state the same, checks only the grads (the full check is not run again)
    and gets the bits of numpy's step with the same grad arrays refilled in place (the
    plan kept as it is), whether numba's plan holds the tensors in a table or alone. The
    options are bf16-kahan's of test_numba_bf16_pairs_give_numpys_bits, so the pair
    kernel it compiles serves both."""
    options = {"rounding": "kahan", "state_dtype": "bfloat16", "weight_decay": 0.1}
    kept, _ = _stepped_with(get_backend("numpy"), options, n, fresh=False)
    fresh, checks = _stepped_with(get_backend(backend), options, n, fresh=True)
    assert checks == []
    assert all(np.array_equal(a, b) for a, b in zip(kept, fresh))


@pytest.mark.parametrize("bad, error, match", [
    (lambda p, s: (p, [np.ones(8, np.float16)]), TypeError, r"grads\[0\] is float16"),
    (lambda p, s: (p, [np.ones(9, BFLOAT16)]), ValueError, r"grads\[0\] has shape \(9,\)"),
    (lambda p, s: (p, [np.ones(16, BFLOAT16)[::2]]), ValueError, r"grads\[0\] is not C-"),
    (lambda p, s: (p, [s.exp_avg[0]]), ValueError, "share memory"),
    (lambda p, s: (p, [p[0]]), ValueError, "share memory"),
    (lambda p, s: ([np.ones(8, np.float32)], [np.ones(8, np.float32)]), TypeError,
     r"rounding='kahan' needs bfloat16 or float16 params; params\[0\] is float32")])
def test_a_bad_new_grad_is_refused_before_anything_changes(bad, error, match):
    """After a step, new grads are checked as fully as on the first step, and new params
    with them get the full check."""
    be = get_backend("numba")
    cfg = AdamConfig(rounding="kahan")
    p = [np.ones(8, BFLOAT16)]
    state = be.init_state(p, cfg)
    be.step(p, [np.ones(8, BFLOAT16)], state, cfg)
    arrays = p + state.exp_avg + state.exp_avg_sq + state.compensation
    params, grads = bad(p, state)
    _rejected(lambda: be.step(params, grads, state, cfg), error, match, arrays + params)
    assert state.step == 1


def test_backends_without_low_precision_say_so():
    from backends.base import Backend

    class Plain(Backend):
        name = "plain"

    with pytest.raises(ValueError, match="not implemented by the plain backend"):
        Plain().init_state([np.ones(4, BFLOAT16)], AdamConfig())


def test_float32_path_unchanged_by_default():
    """float32 params with the default config never enter the low-precision step."""
    be = get_backend("numpy")
    p = [np.ones(8, np.float32)]
    state = be.init_state(p, AdamConfig())
    be.step(p, [np.ones(8, np.float32)], state, AdamConfig())
    assert "validated" in state.cache and "validated_low_precision" not in state.cache
    assert state.master_params is None and state.compensation is None


def test_struct_half_matches_numpy():
    """The python backend's float16 stores (struct 'e') are NumPy's cast, overflow to inf."""
    from backends.cpu.python import _f16_bits

    x = _edge_floats()[:5000]
    x = x[~np.isnan(x)]
    got = np.array([_f16_bits(float(v)) for v in x], dtype=np.uint16)
    with np.errstate(over="ignore"):
        assert np.array_equal(got, x.astype(np.float16).view(np.uint16))
    assert struct.unpack("<e", struct.pack("<H", 0x7C00))[0] == np.inf
    assert ml_dtypes.bfloat16(1.0) == 1.0


@pytest.mark.parametrize("backend", ["numpy", "numba", "python"])
def test_per_step_lr_is_the_configs_lr(backend):
    """``step(..., lr=x)`` on a low-precision state gives the bits of a config with lr=x."""
    be = get_backend(backend)
    options = {"rounding": "stochastic", "seed": 2, "state_dtype": "bfloat16"}
    runs = []
    for cfg, lr in ((AdamConfig(lr=1e-3, **options), 5e-2), (AdamConfig(lr=5e-2, **options),
                                                              None)):
        params, grads = _problem(BFLOAT16, 200, 2)
        state = be.init_state(params, cfg)
        for g in grads:
            be.step(params, g, state, cfg, lr=lr)
        runs.append([_bits(p) for p in params])
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


def test_bytes_model_of_every_format():
    """Bytes per element a step moves, counted by hand from each format's arrays."""
    from harness.core.formats import FORMATS

    expected = {"fp32": 4 * 4 + 3 * 4,            # read p g m v, write p m v
                "bf16": 4 * 2 + 3 * 2, "bf16-sr": 4 * 2 + 3 * 2,
                "bf16-fp32-state": (2 + 2 + 4 + 4) + (2 + 4 + 4),
                "bf16-kahan": 5 * 2 + 4 * 2,      # and the compensation, read and written
                "bf16-master": (4 + 2 + 4 + 4) + (4 + 4 + 4 + 2),  # master, no p read
                "fp16-master": (4 + 2 + 4 + 4) + (4 + 4 + 4 + 2)}
    assert {name: f.bytes_per_element() for name, f in FORMATS.items()} == expected


def test_bench_format_cli(tmp_path):
    import pandas as pd

    from harness.cli import main

    out = tmp_path / "fb"
    assert main(["bench", "--format", "bf16-sr,bf16-kahan", "--sizes", "256", "--repeats", "1",
                 "--max-seconds", "0.01", "--out", str(out)]) == 0
    table = pd.read_csv(out.with_suffix(".csv"))
    assert list(zip(table["backend"], table["format"], table["bytes_per_element"])) == [
        ("numba", "bf16-sr", 14), ("torchao-adamw-sr", "bf16-sr", 14),
        ("numba", "bf16-kahan", 18), ("optimi-kahan", "bf16-kahan", 18)]
    assert (table[["us_per_step", "fp32_us_per_step", "roofline_us"]] > 0).all(axis=None)
    peers = table[table["kind"] == "peer"]
    assert (peers["speedup_over_peer"] > 0).all() and peers["note"].isna().all()
    assert main(["bench", "--format", "bf16", "--sizes", "256", "--repeats", "1", "--no-peers",
                 "--max-seconds", "0.01", "--out", str(out)]) == 0
    assert list(pd.read_csv(out.with_suffix(".csv"))["backend"]) == ["numba"]
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--format", "bf8"])
    assert exit_.value.code == 2


def test_bench_format_times_no_step_that_compiles():
    """``format_step`` takes the plan-making first step itself, so a backend compiling a
    kernel on the first use of each combination of types (numba-cuda, numba) compiles
    before any step is handed to timing. The stand-in counts first uses."""
    from backends.cpu.numpy import NumpyBackend
    from harness.bench.formats import format_step
    from harness.core.formats import FORMATS

    class FirstUseCounting(NumpyBackend):
        def __init__(self):
            super().__init__()
            self.compiles, self.seen = 0, set()

        def _update_low_precision(self, p, g, m, v, vmax, master, compensation, cfg, t, key,
                                  lr=None):
            arrays = (p, g, m, v, vmax, master, compensation)
            kind = (tuple(None if a is None else a.dtype for a in arrays), key is None)
            if kind not in self.seen:
                self.seen.add(kind)
                self.compiles += 1
            super()._update_low_precision(*arrays, cfg, t, key, lr=lr)

    backend = FirstUseCounting()
    for fmt in FORMATS.values():
        if fmt.low_precision:
            step, sync = format_step(backend, fmt, 64)
            compiled = backend.compiles
            step()
            sync()
            assert backend.compiles == compiled > 0, f"{fmt.name}: a timed step compiled"


def test_stochastic_and_kahan_train_least_squares_as_fp32_does():
    """The training goal on the least-squares problem: within 1.3x of fp32's final loss."""
    from harness.demo.formats import train_least_squares
    from harness.core.formats import FORMATS

    loss = {name: train_least_squares(FORMATS[name], steps=150, lr=1e-2, backend="numpy")
            for name in ("fp32", "bf16-sr", "bf16-kahan")}
    assert all(np.isfinite(v) for v in loss.values())
    assert loss["bf16-sr"] <= 1.3 * loss["fp32"] and loss["bf16-kahan"] <= 1.3 * loss["fp32"]


# --- adam-bench check ---------------------------------------------------------------------
def _check(backends):
    from harness.check import run_check
    from harness.subjects.subject import backend_subject

    return run_check([backend_subject(b) for b in backends], dtypes=["float32"], steps=2,
                     options=("plain",), edge_cases=[], bad_input=[])


def test_check_covers_every_format_and_stochastic_roundings_mean():
    from harness.core.formats import FORMATS

    report = _check([get_backend("numpy"), get_backend("numba")])
    formats = report.formats
    low = [name for name, f in FORMATS.items() if f.low_precision]
    assert sorted(formats["format"].unique()) == sorted(low) and len(formats) == 2 * len(low)
    assert formats["within_tolerance"].all() and formats["bits_equal_first"].all()
    assert list(report.rounding_bias["unbiased"]) == [True, True] and report.ok


def test_check_fails_a_backend_whose_bf16_params_are_one_spacing_low():
    """A mutant: every other bfloat16 param written one spacing toward minus infinity
    (positive values) after each step: off the reference, other bits than numpy's, and a
    biased stochastic rounding."""
    from backends.cpu.numpy import NumpyBackend

    broken = NumpyBackend()
    real = broken.step

    def step(params, grads, state, cfg, **kw):
        real(params, grads, state, cfg, **kw)
        for p in params:
            if p.dtype == BFLOAT16:
                p.view(np.uint16).reshape(-1)[::2] -= 1
    broken.step = step
    report = _check([get_backend("numpy"), broken])
    mine = report.formats[report.formats.index % 2 == 1]
    assert not mine[mine["format"].str.startswith("bf16")]["within_tolerance"].any()
    assert list(report.rounding_bias["unbiased"]) == [True, False]
    assert any("format bf16-sr" in line for line in report.failures()) and not report.ok
