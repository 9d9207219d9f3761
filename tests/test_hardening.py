"""Promises under hostile use: snapshots and copies, threads, arrays changed in place,
aliasing, step counts, NaN bits, weight decay rounding, hyperparameter types."""
import copy
import fractions
import decimal
import pickle
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends import Adam, AdamConfig, AdamState, get_backend
from backends.formats import finfo

from harness.check.bad_input import make_setup, snapshot, unchanged

from conftest import CPU_BACKENDS

SHAPES = [(3, 4), (5,), (40,)]


def grads_for(params, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def new_opt(name, shapes=SHAPES, **config):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    return Adam(params, backend=name, **config)


def restore(opt, snap, how):
    """opt's state replaced by the snapshot ``snap`` taken with ``how``."""
    if how == "state_dict":
        opt.load_state_dict(snap)
    else:
        opt.state = snap


def take(opt, how):
    if how == "deepcopy":
        return copy.deepcopy(opt.state)
    if how == "pickle":
        return pickle.loads(pickle.dumps(opt.state))
    if how == "copy":
        return copy.copy(opt.state)
    return opt.state_dict()


# --- 1. snapshots -------------------------------------------------------------------------

@pytest.mark.parametrize("shapes", [SHAPES, [(64,)]], ids=["list", "one-tensor"])
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("name", CPU_BACKENDS[:3])
def test_restore_by_snapshot_equals_restore_by_state_dict(name, how, shapes):
    """Snapshot after 3 steps, 3 more steps, restore, 2 steps: the same bits as restoring
    through state_dict, and the abandoned state's arrays are left alone (the kernel
    writes into the live params and the restored moments, nothing else)."""
    results = []
    for method in (how, "state_dict"):
        opt = new_opt(name, shapes, amsgrad=True, weight_decay=0.01)
        params0 = [p.copy() for p in opt.params]
        for k in range(3):
            opt.step(grads_for(opt.params, k))
        snap, params_at_snap = take(opt, method), [p.copy() for p in opt.params]
        for k in range(3, 6):
            opt.step(grads_for(opt.params, k))
        abandoned = opt.state
        abandoned_copy = abandoned.to_dict()
        for p, saved in zip(opt.params, params_at_snap):
            p[...] = saved
        restore(opt, snap, method)
        for k in range(6, 8):
            opt.step(grads_for(opt.params, k))
        for old, new in zip(abandoned_copy["exp_avg"], abandoned.exp_avg):
            np.testing.assert_array_equal(old, new)
        assert opt.state.step == 5
        assert not np.array_equal(params0[0], opt.params[0])
        results.append([p.copy() for p in opt.params] + opt.state.to_dict()["exp_avg_sq"])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "copy"])
def test_a_copied_state_starts_with_an_empty_cache(how):
    opt = new_opt("numba")
    opt.step(grads_for(opt.params, 0))
    assert opt.state.cache
    assert take(opt, how).cache == {}


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_deepcopy_and_pickle_of_an_optimizer(name):
    """A copied optimizer steps on its own copies of params and state, with the same bits."""
    opt = new_opt(name)
    opt.step(grads_for(opt.params, 0))
    twins = [copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))]
    before = [p.copy() for p in opt.params]
    for twin in twins:
        twin.step(grads_for(twin.params, 1))
    for p, b in zip(opt.params, before):
        np.testing.assert_array_equal(p, b)  # the original did not move
    opt.step(grads_for(opt.params, 1))
    for twin in twins:
        assert twin.backend.name == name
        for a, b in zip(opt.params, twin.params):
            np.testing.assert_array_equal(a, b)


# --- 2. threads ---------------------------------------------------------------------------

def test_two_optimizers_sharing_a_numpy_backend_in_two_threads():
    """Scratch buffers belong to the calling thread, not to the shared backend."""
    backend = get_backend("numpy", chunk_bytes=4096, threads=1)
    shapes = [(1 << 15,), (3000,)]

    def run(seed, out):
        rng = np.random.default_rng(seed)
        params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        opt = Adam(params, backend=backend, weight_decay=0.01)
        for k in range(30):
            opt.step(grads_for(params, seed * 100 + k))
        out[seed] = params

    alone, together = {}, {}
    for seed in (1, 2):
        run(seed, alone)
    threads = [threading.Thread(target=run, args=(seed, together)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed in (1, 2):
        for a, b in zip(alone[seed], together[seed]):
            np.testing.assert_array_equal(a, b)


# --- 3. arrays that are no plain ndarray, or changed in place -----------------------------

def expect_refused(backend, params, grads, state, cfg, error, match):
    before = snapshot(backend, params, state)
    with pytest.raises(error, match=match):
        backend.step(params, grads, state, cfg)
    assert unchanged(before, backend, params, state) == ""


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_ndarray_subclasses_are_refused_up_front(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend, shapes=((4,), (2, 3)))
    params[1] = np.asmatrix(params[1])
    grads[1] = np.asmatrix(grads[1])
    expect_refused(cpu_backend, params, grads, state, cfg, TypeError,
                   r"params\[1\] is numpy.matrix; the \w+ backend needs numpy.ndarray, not a "
                   "subclass")


def test_a_moment_made_read_only_after_checked_steps(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend)
    cpu_backend.step(params, grads, state, cfg)
    state.exp_avg_sq[1].flags.writeable = False
    expect_refused(cpu_backend, params, grads, state, cfg, ValueError,
                   r"state.exp_avg_sq\[1\] is read-only")


def test_a_grad_whose_dtype_changed_in_place(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend)
    cpu_backend.step(params, grads, state, cfg)
    grads[1].dtype = np.int32
    expect_refused(cpu_backend, params, grads, state, cfg, TypeError,
                   r"grads\[1\] has dtype int32; expected float32 or float64")


def test_a_grad_whose_shape_changed_in_place(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend)
    cpu_backend.step(params, grads, state, cfg)
    grads[0].shape = (4, 3)
    expect_refused(cpu_backend, params, grads, state, cfg, ValueError,
                   r"grads\[0\] has shape \(4, 3\) but params\[0\] has \(3, 4\)")


def test_a_checked_param_cannot_be_resized_under_the_kernel(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend)
    with pytest.raises(ValueError, match="cannot resize"):
        params[1].resize(10_000, refcheck=False)


# --- 4. aliasing --------------------------------------------------------------------------

def test_aliased_arrays_are_refused(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend, shapes=((6,), (6,)))
    expect_refused(cpu_backend, [params[0], params[0]], grads, state, cfg, ValueError,
                   r"params\[0\] and params\[1\] share memory")
    buffer = np.zeros(10, np.float32)
    expect_refused(cpu_backend, [buffer[:6], buffer[4:]], grads, state, cfg, ValueError,
                   r"params\[0\] and params\[1\] share memory")
    expect_refused(cpu_backend, params, [grads[0], params[1]], state, cfg, ValueError,
                   r"params\[1\] and grads\[1\] share memory")
    expect_refused(cpu_backend, params, [state.exp_avg[0], grads[1]], state, cfg, ValueError,
                   r"grads\[0\] and state.exp_avg\[0\] share memory")


def test_grads_may_share_memory_with_each_other(cpu_backend):
    """Grads are only read: one gradient for two params steps both as two copies would."""
    shared, copied = (make_setup(cpu_backend, shapes=((6,), (6,))) for _ in range(2))
    for (params, grads, state, cfg), twin in ((shared, False), (copied, True)):
        cpu_backend.step(params, [grads[0], grads[0].copy() if twin else grads[0]], state,
                         cfg)
    for a, b in zip(shared[0] + shared[2].exp_avg, copied[0] + copied[2].exp_avg):
        np.testing.assert_array_equal(a, b)


# --- 5. the step counter ------------------------------------------------------------------

def test_a_small_integer_step_does_not_wrap():
    results = []
    for name in CPU_BACKENDS[:3]:
        for step in (np.int8(127), 127):
            params, grads, state, cfg = make_setup(get_backend(name), dtype=np.float64)
            state.step = step
            get_backend(name).step(params, grads, state, cfg)
            assert state.step == 128 and type(state.step) is int
            assert np.isfinite(params[0]).all()
            results.append(params)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("step", [2**63 - 1, -1, 2.0, True])
def test_steps_out_of_range_are_refused_everywhere(cpu_backend, step):
    params, grads, state, cfg = make_setup(cpu_backend)
    state.step = step
    with pytest.raises(ValueError, match=r"state.step must be an int in 0\.\.2\*\*63-2"):
        cpu_backend.step(params, grads, state, cfg)


def test_the_last_step_runs_everywhere(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend)
    state.step = 2**63 - 2
    cpu_backend.step(params, grads, state, cfg)
    assert state.step == 2**63 - 1 and np.isfinite(params[0]).all()


# --- 6. identical bits, NaN included ------------------------------------------------------

def nan_laden(n, dtype, rng):
    """Normal values with 40% NaNs of random sign and payload."""
    uint = {4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize]
    bits = np.dtype(dtype).itemsize * 8
    mantissa = finfo(dtype).nmant
    x = rng.standard_normal(n).astype(dtype)
    raw = x.view(uint)
    nan_bits = (uint((1 << (bits - 1)) - 1) ^ uint((1 << mantissa) - 1)) | \
        rng.integers(1, 1 << (mantissa - 1), n).astype(uint) | \
        (rng.integers(0, 2, n).astype(uint) << uint(bits - 1))
    mask = rng.random(n) < 0.4
    raw[mask] = nan_bits[mask]
    return x


@pytest.mark.parametrize("options", [{"maximize": True}, {"weight_decay": 0.01},
                                     {"weight_decay": 0.01, "amsgrad": True,
                                      "maximize": True}], ids=["maximize", "l2", "all"])
def test_numpy_and_numba_give_identical_bits_with_nans(dtype, options):
    cfg = AdamConfig(**options)
    rng = np.random.default_rng(7)
    p0 = nan_laden(2000, dtype, rng)
    grads = [nan_laden(2000, dtype, rng) for _ in range(3)]
    bits = []
    for name in ("numpy", "numba"):
        backend = get_backend(name)
        params = [p0.copy()]
        state = backend.init_state(params, cfg)
        for g in grads:
            backend.step(params, [g.copy()], state, cfg)
        arrays = params + state.exp_avg + state.exp_avg_sq + (state.max_exp_avg_sq or [])
        bits.append([a.view(f"u{a.itemsize}").copy() for a in arrays])
    for a, b in zip(*bits):
        np.testing.assert_array_equal(a, b)


# --- 7. weight decay that rounds to 0 -----------------------------------------------------

def test_weight_decay_that_rounds_to_zero_is_refused(cpu_backend):
    params, grads, state, cfg = make_setup(cpu_backend)
    expect_refused(cpu_backend, params, grads, state, AdamConfig(weight_decay=1e-50),
                   ValueError, r"weight_decay=1e-50 rounds to 0 in float32")


# --- 11. hyperparameter types -------------------------------------------------------------

@pytest.mark.parametrize("value", [np.float32(0.25), np.int64(1), fractions.Fraction(1, 4),
                                   decimal.Decimal("0.25"), np.float16(0.25)])
def test_any_finite_real_is_a_hyperparameter(value):
    cfg = AdamConfig(lr=value, weight_decay=value)
    assert type(cfg.lr) is float and cfg.lr == float(value)


@pytest.mark.parametrize("value, error, match", [
    (10**400, ValueError, r"lr must be finite, got 1000"),
    (decimal.Decimal("NaN"), ValueError, r"lr must be finite"),
    (np.bool_(True), TypeError, r"lr must be a real number \(int, float, NumPy scalar, "
                                r"Fraction or Decimal; not bool\)"),
    (1j, TypeError, r"lr must be a real number"),
], ids=["10**400", "Decimal-NaN", "np.bool_", "complex"])
def test_what_is_no_finite_real_is_refused(value, error, match):
    with pytest.raises(error, match=match):
        AdamConfig(lr=value)


def test_in_place_changes_are_seen_without_the_compiled_header_reader(monkeypatch):
    """Where the struct offsets do not hold, headers are read in Python: same verdicts."""
    from backends import _array_headers

    monkeypatch.setattr(_array_headers, "_COMPILED", False)
    backend = get_backend("numba")
    params, grads, state, cfg = make_setup(backend)
    backend.step(params, grads, state, cfg)
    grads[1].dtype = np.int32
    expect_refused(backend, params, grads, state, cfg, TypeError,
                   r"grads\[1\] has dtype int32")


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_data_addresses_are_each_arrays_first_element(compiled, monkeypatch):
    """One compiled read of many arrays' addresses gives ``__array_interface__``'s, for
    offset views, reversed strides, 0-d and empty arrays; a list with another array type
    (a subclass) and the Python fallback give the same."""
    from backends import _array_headers

    if not compiled:
        monkeypatch.setattr(_array_headers, "_COMPILED", False)
    base = np.arange(40, dtype=np.float32)
    arrays = [base, base[3:], base[::-2], base.reshape(5, 8)[1:, 2:], np.zeros(()),
              np.zeros(0, np.float64), base.view(np.uint16)[7:]]
    expected = [a.__array_interface__["data"][0] for a in arrays]
    assert _array_headers.data_addresses(arrays).tolist() == expected
    assert _array_headers.data_addresses(arrays + [np.ma.masked_array(base[5:])]).tolist() \
        == expected + [base[5:].__array_interface__["data"][0]]
    assert _array_headers.data_addresses([]).tolist() == []


@given(ranges=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 8), st.booleans()),
                       max_size=12))
def test_the_overlap_sweep_agrees_with_comparing_every_pair(ranges):
    from backends.memory import first_overlap

    starts = np.array([s for s, _, _ in ranges], dtype=np.int64)
    stops = starts + np.array([n for _, n, _ in ranges], dtype=np.int64)
    written = np.array([w for _, _, w in ranges], dtype=bool)
    clashing = {(i, j) for i in range(len(ranges)) for j in range(len(ranges))
                if i != j and (written[i] or written[j]) and starts[i] < stops[j]
                and starts[j] < stops[i]}
    found = first_overlap(starts, stops, written)
    assert (found is None) == (not clashing)
    assert found is None or found in clashing
