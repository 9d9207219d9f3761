"""The Numba CPU backend: thread counts, one call for many tensors, identical numerics."""
import platform
import re

import numba
import numpy as np
import pytest

from backends import AdamConfig, get_backend
from backends.cpu._numba_kernels import CHUNK
from backends.cpu.numba import _AddressTable
from harness.bench.workloads import model_workload


def run(backend, shapes, cfg, steps=5, dtype=np.float32):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    state = backend.init_state(params, cfg)
    for _ in range(steps):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        backend.step(params, grads, state, cfg)
    return params, state


@pytest.mark.parametrize("amsgrad", [False, True])
def test_one_and_two_threads_give_identical_bits(amsgrad):
    shapes = [(3 * CHUNK + 17,), (1000,), (5, 7)]
    cfg = AdamConfig(amsgrad=amsgrad, weight_decay=0.01)
    one, s1 = run(get_backend("numba", threads=1), shapes, cfg)
    two, s2 = run(get_backend("numba", threads=2), shapes, cfg)
    for a, b in zip(one + s1.exp_avg_sq, two + s2.exp_avg_sq):
        np.testing.assert_array_equal(a, b)


def test_threads_setting_is_validated_and_reported():
    import numba

    assert get_backend("numba", threads=1).threads == 1
    assert get_backend("numba").threads == numba.config.NUMBA_NUM_THREADS
    with pytest.raises(ValueError, match=r"threads must be an int in 1\.\."):
        get_backend("numba", threads=0)


def test_threads_setting_does_not_leak_to_other_code():
    import numba

    before = numba.get_num_threads()
    run(get_backend("numba", threads=1), [(CHUNK * 3,)], AdamConfig(), steps=1)
    assert numba.get_num_threads() == before


def test_model_shaped_list_equals_one_flat_tensor():
    """148 GPT-2 tensors in one call give the same bits as their concatenation."""
    workload = model_workload("gpt2-small", elements=2**18)
    backend = get_backend("numba")
    cfg = AdamConfig(amsgrad=True)
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(s).astype(np.float32) for s in workload.shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in workload.shapes]
    flat_p = np.concatenate([p.ravel() for p in params])
    flat_g = np.concatenate([g.ravel() for g in grads])
    state, flat_state = backend.init_state(params, cfg), backend.init_state([flat_p], cfg)
    for _ in range(3):
        backend.step(params, grads, state, cfg)
        backend.step([flat_p], [flat_g], flat_state, cfg)
    np.testing.assert_array_equal(np.concatenate([p.ravel() for p in params]), flat_p)


def test_new_gradient_arrays_every_step_are_read():
    """The address table follows new arrays (a training loop allocates grads anew)."""
    backend = get_backend("numba")
    params = [np.zeros(10, np.float32), np.zeros(CHUNK + 5, np.float32)]
    state = backend.init_state(params)
    for sign in (1.0, -1.0, 1.0):
        before = [p.copy() for p in params]
        grads = [np.full(p.shape, sign, np.float32) for p in params]
        backend.step(params, grads, state, AdamConfig())
        for b, p in zip(before, params):
            assert np.all(np.sign(b - p) == sign)


def test_steps_never_compile():
    """Kernels are compiled when the backend is made, for both dtypes and every option."""
    from backends.cpu import _numba_kernels

    backend = get_backend("numba")
    compile_time = backend.compile_seconds  # reported apart from any step
    assert isinstance(compile_time, float)
    before = {kernel: len(kernel.signatures) for kernel in _numba_kernels.SIGNATURES}
    for dtype in (np.float32, np.float64):
        for cfg in (AdamConfig(), AdamConfig(amsgrad=True, weight_decay=0.1, maximize=True)):
            run(backend, [(CHUNK * 2, 3), (4, 5, 6, 7), (9,)], cfg, steps=1, dtype=dtype)
            run(backend, [(CHUNK * 2,)], cfg, steps=1, dtype=dtype)
    assert {kernel: len(kernel.signatures) for kernel in _numba_kernels.SIGNATURES} == before


def test_views_of_a_flat_buffer_take_the_single_tensor_kernel():
    """Params and grads made by flatten lie back to back: one vectorized call, same bits
    as the table kernel over separate arrays."""
    backend = get_backend("numba")
    cfg = AdamConfig(amsgrad=True, weight_decay=0.1)
    rng = np.random.default_rng(2)
    shapes = [(0,), (CHUNK + 3,), (7, 9), (1,)]
    host_p = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    host_g = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    _, views = backend.flatten(host_p)
    _, grad_views = backend.flatten(host_g)
    separate = [p.copy() for p in host_p]
    s_views, s_sep = backend.init_state(views, cfg), backend.init_state(separate, cfg)
    for _ in range(3):
        backend.step(views, grad_views, s_views, cfg)
        backend.step(separate, [g.copy() for g in host_g], s_sep, cfg)
    table = next(v for v in s_views.cache.values() if isinstance(v, _AddressTable))
    assert table.spans is not None
    for a, b in zip(views, separate):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shapes", [[(5,)], [(5,), (CHUNK + 1,)]], ids=["one", "many"])
def test_new_param_arrays_with_the_same_state_are_the_ones_stepped(shapes):
    """Handing the state other (same-shaped) params must step those, not the first ones."""
    backend = get_backend("numba")
    first = [np.zeros(s, np.float32) for s in shapes]
    state = backend.init_state(first)
    grads = [np.ones(s, np.float32) for s in shapes]
    backend.step(first, grads, state, AdamConfig())
    second = [p.copy() for p in first]
    frozen = [p.copy() for p in first]
    backend.step(second, grads, state, AdamConfig())
    for f, old, new in zip(frozen, first, second):
        np.testing.assert_array_equal(old, f)        # the first params were left alone
        assert np.all(new < f)                       # the second ones moved


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="looks for x86 packed square roots in the machine code")
@pytest.mark.parametrize("name", ["adam_flat_serial", "adam_table_serial"])
def test_element_loops_are_vectorized(name):
    """LLVM turns the element loop into packed SIMD (sqrtps / sqrtpd). Passing arrays into
    the element body or Python's error model each stop that, and this fails."""
    from backends.cpu import _numba_kernels

    kernel = getattr(_numba_kernels, name)
    options = {k: v for k, v in _numba_kernels.KERNEL_OPTIONS.items() if k != "cache"}
    fresh = numba.njit(**options)(kernel.py_func)  # cached code cannot be inspected
    for signature in _numba_kernels.SIGNATURES[kernel]:
        fresh.compile(signature)
        assert re.search(r"\bv?sqrtp[sd]\b", fresh.inspect_asm(signature)), signature


def _low_precision_arguments(kind):
    n, f32 = 64, np.float32
    bf16, f16 = (lambda: np.zeros(n, np.uint16)), (lambda: np.zeros(n, np.int16))
    arrays = {"bf16": (bf16(), bf16(), bf16(), bf16(), None, None, None),
              "bf16-sr": (bf16(), bf16(), bf16(), bf16(), None, None, None),
              "bf16-kahan": (bf16(), bf16(), bf16(), bf16(), None, None, bf16()),
              "bf16-master": (bf16(), bf16(), np.zeros(n, f32), np.zeros(n, f32), None,
                              np.zeros(n, f32), None),
              "fp16-master": (f16(), f16(), np.zeros(n, f32), np.zeros(n, f32), None,
                              np.zeros(n, f32), None),
              "fp32-bf16state": (np.zeros(n, f32), np.zeros(n, f32), bf16(), bf16(), bf16(),
                                 None, None)}[kind]
    seed = np.uint64(1) if kind == "bf16-sr" else None
    return arrays + (np.zeros(8), 1, seed, 0, 0)  # hyper, t, seed, tensor index, start


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="looks for x86 packed square roots in the machine code")
@pytest.mark.parametrize("kind, kernel", [
    *((kind, "per tensor") for kind in ("bf16", "bf16-sr", "bf16-kahan", "bf16-master",
                                        "fp16-master", "fp32-bf16state")),
    ("bf16-sr", "table"), ("bf16-master", "table")])
def test_low_precision_element_loops_are_vectorized(kind, kernel):
    """Each format's element loop is packed SIMD in the per-tensor kernel, and the table
    kernel's loop over the same ``step_element`` is too (with its per-segment key, and
    with mixed element types): the 2-byte conversions, the NaN select and the hash must
    not leave it scalar (with VECTOR_WIDTH forced to 1 this fails)."""
    from backends.cpu import _numba_kernels
    from backends.cpu import _numba_low_precision_kernels as lp
    from backends.cpu import _numba_low_precision_table as lp_table

    options = {k: v for k, v in _numba_kernels.KERNEL_OPTIONS.items() if k != "cache"}
    arguments = _low_precision_arguments(kind)
    if kernel == "table":  # the table, the arrays' element types, hyper, t, the seed
        arguments = (np.zeros(16, np.int64),) + arguments[:-2]
        source = lp_table.adam_low_precision_table_serial
    else:
        source = lp.adam_low_precision_serial
    fresh = numba.njit(**options)(source.py_func)
    lp.compiled_for(fresh, arguments)
    assert re.search(r"\bvsqrtps\b", fresh.inspect_asm(fresh.signatures[0])), kind


def _pair_arguments(kind):
    pairs = lambda: np.zeros(64, np.uint16)  # noqa: E731
    vmax = pairs() if kind == "amsgrad" else None
    compensation = pairs() if kind == "kahan" else None
    seed = np.uint64(1) if kind == "sr" else None
    return (pairs(), pairs(), pairs(), pairs(), vmax, compensation, np.zeros(8), 1, seed, 0, 0)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="looks for x86 packed square roots in the machine code")
@pytest.mark.parametrize("kind", ["nearest", "sr", "kahan", "amsgrad"])
def test_bf16_pair_loops_are_vectorized(kind):
    """The all-bfloat16 kernel's loop over uint32 pairs is packed SIMD in each variant."""
    from backends.cpu import _numba_kernels
    from backends.cpu import _numba_low_precision_kernels as lp

    options = {k: v for k, v in _numba_kernels.KERNEL_OPTIONS.items() if k != "cache"}
    fresh = numba.njit(**options)(lp.adam_bf16_pairs_serial.py_func)
    lp.compiled_for(fresh, _pair_arguments(kind))
    assert re.search(r"\bvsqrtps\b", fresh.inspect_asm(fresh.signatures[0])), kind
