"""numba's low-precision table kernel: every tensor of one format in one call, with the
NumPy backend's bits and the per-tensor kernel's, for every format, mixed sizes (empty,
odd, several chunks per tensor, several tensors per chunk), mixed formats in one step,
per-tensor stochastic-rounding keys; its layout and hash keys against their definitions."""
import numpy as np
import pytest
from low_precision_cases import FORMATS, LRS, canonical_bits, stepped_bits

from backends import AdamConfig, get_backend
from backends.cpu import _numba_low_precision_table as table_module
from backends.cpu._numba_kernels import packed_table, table_layout
from backends.cpu._numba_low_precision_kernels import BLOCK, segment_key
from backends.cpu.numba import SERIAL_MAX
from backends.formats import BFLOAT16, seed_stream, stream_key
from harness.bench.many_tensors import PerTensorNumba

CHUNK = table_module.CHUNK
#: Sizes stepped in one call: empty ones (so a tensor's row is not its index), odd ones,
#: one over several chunks, small ones sharing a chunk; above SERIAL_MAX, so parallel.
#: The first one takes the NaN and inf grads of ``low_precision_cases.problem``.
LARGE = (1001, 0, 1, 7, 3 * CHUNK + 5, 400, 0, 2, 9)
#: The same under SERIAL_MAX: one chunk on the calling thread.
SMALL = (300, 0, 5, 1, 0, 17)


def _plan(state):
    return state.cache["validated_low_precision"]["plan"]


@pytest.mark.parametrize("sizes", [LARGE, SMALL], ids=["parallel", "serial"])
@pytest.mark.parametrize("name, dtype, options", FORMATS, ids=[f[0] for f in FORMATS])
def test_table_gives_numpy_and_per_tensor_bits(name, dtype, options, sizes):
    """Parallel with grads of the params' dtype, serial with both grad dtypes (each
    combination compiles a kernel: the parallel ones cost most)."""
    assert (sum(sizes) > SERIAL_MAX) == (sizes is LARGE)
    both = {np.dtype(dtype), np.dtype(np.float32)}
    for grad_dtype in [np.dtype(dtype)] if sizes is LARGE else both:
        expected = stepped_bits(get_backend("numpy"), dtype, options, grad_dtype, sizes)
        per_tensor = stepped_bits(PerTensorNumba(), dtype, options, grad_dtype, sizes)
        table = stepped_bits(get_backend("numba"), dtype, options, grad_dtype, sizes)
        for i, (a, b, c) in enumerate(zip(expected, per_tensor, table)):
            assert np.array_equal(a, b), f"per tensor differs from numpy: array {i}"
            assert np.array_equal(a, c), f"table differs from numpy: array {i}"


#: All-bfloat16 tensors of at most SERIAL_MAX in one parallel table: equal chunks of 5463
#: elements cut the two long ones at odd elements (5459 and 2731).
ODD_CUTS = (4, 8191, 8191, 3)


@pytest.mark.parametrize("name, dtype, options",
                         [f for f in FORMATS if f[0] in ("bf16-sr", "bf16-kahan")],
                         ids=["bf16-sr", "bf16-kahan"])
def test_all_bf16_tables_step_pairs_from_odd_cuts(name, dtype, options):
    """The table steps all-bfloat16 tensors in pairs of the tensor's elements (2j, 2j + 1,
    which share a stochastic-rounding hash), however a chunk cuts them: a segment that
    starts at an odd element steps it alone first (a pairing from the segment's start
    fails this), one that ends without its pair steps the last alone."""
    backend, cfg = get_backend("numba"), AdamConfig(**options)
    params = [np.ones(n, BFLOAT16) for n in ODD_CUTS]
    state = backend.init_state(params, cfg)
    backend.step(params, [np.ones_like(p) for p in params], state, cfg)
    plan = _plan(state)
    assert len(plan.tables) == 1 and not plan.lone
    starts = table_layout.py_func(plan.tables[0][1][0])[4]
    assert any(start % 2 for start in starts), "no segment starts at an odd element"
    expected = stepped_bits(get_backend("numpy"), dtype, options, np.dtype(dtype), ODD_CUTS)
    table = stepped_bits(backend, dtype, options, np.dtype(dtype), ODD_CUTS)
    for i, (a, b) in enumerate(zip(expected, table)):
        assert np.array_equal(a, b), f"table differs from numpy: array {i}"


def test_one_call_per_format_and_a_lone_tensor_keeps_its_own_kernel():
    backend = get_backend("numba")
    params = [np.ones(n, BFLOAT16) for n in (3, 0, 4)] + [np.ones(5, np.float16)]
    cfg = AdamConfig()
    state = backend.init_state(params, cfg)
    backend.step(params, [np.ones_like(p) for p in params], state, cfg)
    plan = _plan(state)
    assert len(plan.tables) == 1 and [index for index, _ in plan.lone] == [3]
    packed = plan.tables[0][1][0]
    rows = table_layout.py_func(packed)[0]
    assert list(rows[:, -1]) == [0, 2]  # the tensors' indices in the step: their keys'


def test_big_all_bf16_tensors_step_alone_in_pairs():
    """All-bfloat16 tensors above SERIAL_MAX leave the table for ``adam_bf16_pairs``
    (faster); the small ones of their format stay in it; numpy's bits."""
    sizes = (SERIAL_MAX + 3, 5, SERIAL_MAX + 1, 300)
    options = {"rounding": "stochastic", "seed": 3, "state_dtype": "bfloat16"}
    expected = stepped_bits(get_backend("numpy"), BFLOAT16, options, BFLOAT16, sizes)
    backend = get_backend("numba")
    assert all(np.array_equal(a, b) for a, b in zip(
        expected, stepped_bits(backend, BFLOAT16, options, BFLOAT16, sizes)))
    params = [np.ones(n, BFLOAT16) for n in sizes]
    cfg = AdamConfig(**options)
    state = backend.init_state(params, cfg)
    backend.step(params, [np.ones_like(p) for p in params], state, cfg)
    plan = _plan(state)
    assert [index for index, _ in plan.lone] == [0, 2] and len(plan.tables) == 1


def _mixed_step(backend, cfg, dtypes, grad_dtypes, sizes, seed=0):
    """Bits of params and state after a step at each of LRS of params of ``dtypes``
    (interleaved, so each format's tensors have indices with gaps)."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(d) for n, d in zip(sizes, dtypes)]
    state = backend.init_state(params, cfg)
    for lr in LRS:
        grads = [rng.standard_normal(n).astype(d) for n, d in zip(sizes, grad_dtypes)]
        backend.step(params, grads, state, cfg, lr=lr)
    fields = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "master_params", "compensation")
    out = params + [a for name in fields for a in getattr(state, name) or ()]
    return [canonical_bits(a) for a in out], state


@pytest.mark.parametrize("case", ["bf16-fp16-fp32", "bf16-sr-two-grad-dtypes"])
def test_mixed_formats_in_one_step(case):
    """bf16, fp16 and fp32 params under one config, and stochastic rounding of bf16
    params with bf16 and float32 grads: a table per format, each tensor with its own
    key (a key taken from a tensor's row in its table, not its index, fails this)."""
    sizes = [400, 0, 3 * CHUNK + 5, 1, 77, 9, 2 * CHUNK, 5, 301, 0, 64, 1000]
    if case == "bf16-fp16-fp32":
        cfg = AdamConfig(lr=LRS[0], state_dtype="bfloat16", amsgrad=True, weight_decay=0.1)
        dtypes = [BFLOAT16, np.float16, np.float32] * 4
        grad_dtypes = dtypes
    else:
        cfg = AdamConfig(lr=LRS[0], rounding="stochastic", seed=11)
        dtypes = [BFLOAT16] * 12
        grad_dtypes = [BFLOAT16, np.float32, np.float32] * 4
    expected, _ = _mixed_step(get_backend("numpy"), cfg, dtypes, grad_dtypes, sizes)
    per_tensor, _ = _mixed_step(PerTensorNumba(), cfg, dtypes, grad_dtypes, sizes)
    table, state = _mixed_step(get_backend("numba"), cfg, dtypes, grad_dtypes, sizes)
    assert len(_plan(state).tables) == (3 if case == "bf16-fp16-fp32" else 2)
    for i, (a, b, c) in enumerate(zip(expected, per_tensor, table)):
        assert np.array_equal(a, b), f"per tensor differs from numpy: array {i}"
        assert np.array_equal(a, c), f"table differs from numpy: array {i}"


def test_segment_key_is_the_blocks_key_of_the_tensors_key():
    """The kernels' key of a segment starting at ``start`` of tensor ``index`` at step
    ``t``, from the seed's stream: ``stream_key(seed, t, index) ^ hi32(start) *
    0x9E3779B9`` (formats.random16's rule), for seeds, steps and indices across their
    ranges and starts on both sides of block edges."""
    from numba import njit

    kernel_key = njit(lambda seed, t, index, start: segment_key(seed, t, index, start))
    for seed in (0, 7, 2**63, 2**64 - 1):
        for t in (1, 3, 2**40):
            for index in (0, 1, 5, 2**31 - 1, 2**40 + 3):
                for start in (0, 9, BLOCK - 1, BLOCK, 3 * BLOCK + 11):
                    got = int(kernel_key(np.uint64(seed_stream(seed)), np.int64(t),
                                         np.int64(index), np.int64(start)))
                    expected = (stream_key(seed, t, index)
                                ^ (start // BLOCK) * 0x9E3779B9) & 0xFFFFFFFF
                    assert got == expected, (seed, t, index, start)


@pytest.mark.parametrize("chunk, block", [(7, None), (7, 5), (4, 3), (100, 6)])
def test_packed_table_covers_every_element_once_in_chunks_and_blocks(chunk, block):
    sizes = [0, 13, 1, 5, 0, 22, 3]
    packed, (rows, table_sizes, bounds, tensor, start, stop) = packed_table(
        sizes, 3, chunk, block)
    assert rows.shape == (len(sizes), 3) and list(table_sizes) == sizes
    covered = [np.zeros(n, int) for n in sizes]
    for k in range(tensor.size):
        assert 0 <= start[k] < stop[k] <= sizes[tensor[k]]
        covered[tensor[k]][start[k]:stop[k]] += 1
        if block:  # no segment crosses a block edge
            assert start[k] // block == (stop[k] - 1) // block
    assert all(np.all(c == 1) for c in covered)
    lengths = [int((stop[bounds[c]:bounds[c + 1]] - start[bounds[c]:bounds[c + 1]]).sum())
               for c in range(bounds.size - 1)]
    assert lengths[:-1] == [chunk] * (len(lengths) - 1) and 0 < lengths[-1] <= chunk
    assert sum(lengths) == sum(sizes)


#: A big all-bfloat16 Kahan tensor alone in its format (``adam_bf16_pairs``) beside a table
#: of bfloat16 params with float32 grads, three steps; prints the arrays that differ from
#: numpy's.
_PAIRS_BESIDE_A_TABLE = """
import numpy as np
from backends import AdamConfig, get_backend
from backends.formats import BFLOAT16
cfg = AdamConfig(lr=1e-2, rounding="kahan", state_dtype="bfloat16", weight_decay=0.1,
                 decoupled=True)
sizes, grads = [1001, 24581, 400], [np.float32, BFLOAT16, np.float32]
def bits(name):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(n).astype(BFLOAT16) for n in sizes]
    backend = get_backend(name)
    state = backend.init_state(params, cfg)
    for lr in (1e-2, 3e-3, 1e-3):
        backend.step(params, [rng.standard_normal(n).astype(d) for n, d in zip(sizes, grads)],
                     state, cfg, lr=lr)
    return [a.view(np.uint16) for a in params + state.compensation]
print([i for i, (a, b) in enumerate(zip(bits("numpy"), bits("numba")))
       if not np.array_equal(a, b)])
"""


def test_a_lone_all_bf16_kahan_tensor_beside_a_table():
    """A big all-bfloat16 Kahan tensor (``adam_bf16_pairs``) and a table in one step:
    numpy's bits, in a fresh process (where the pair kernel's uint32 views, made outside
    its parallel loop, lost the compensation writes from step 2; after other steps in a
    process they landed)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", _PAIRS_BESIDE_A_TABLE], capture_output=True,
                         text=True, env=env, cwd=root, check=True)
    assert run.stdout.strip().splitlines()[-1] == "[]"
