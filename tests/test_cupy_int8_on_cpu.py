"""The CuPy backend's int8 kernel source, run on the CPU: the CUDA C of
``backends.cuda._cupy_kernels.int8_kernel_source`` compiled by the host C++ compiler with a
small shim (one std::thread per GPU thread, a std::barrier for __syncthreads, the _rn
intrinsics as plain IEEE float operations, -ffp-contract=off), one thread block after
another. It must give the NumPy backend's bits: the kernel's own logic (decode, body,
reduction, scales, encode, partial and NaN blocks, the grid-stride loop over blocks)
checked without a GPU. What only a GPU shows (NVRTC's code, launch) is
tests/test_machine_code.py's and tests/test_gpu_int8.py's."""
from __future__ import annotations

import ctypes
from functools import lru_cache

import numpy as np
import pytest

import cuda_c_on_cpu
from backends import Adam, get_backend
from backends.cuda import _cupy_kernels
from backends import int8_codec as codec
from backends.scalars import StepScalars
from harness.check.agreement import OPTION_SETS

pytestmark = cuda_c_on_cpu.needs_compiler

_DRIVER = r"""
template <class... Args>
static void launch(void (*kernel)(Args...), unsigned grid, unsigned threads, Args... args) {
    gridDim.x = grid;
    blockDim.x = threads;
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx.x = b;
        std::barrier<> barrier(threads);
        block_barrier = &barrier;
        std::vector<std::thread> lanes;
        for (unsigned t = 0; t < threads; ++t)
            lanes.emplace_back([&, t] { threadIdx.x = t; kernel(args...); });
        for (auto& lane : lanes) lane.join();
    }
}
extern "C" void run(unsigned grid, float* p, const float* g, unsigned char* mc, float* ms,
                    unsigned char* vc, float* vs, unsigned char* xc, float* xs,
                    const float* c, bool use_l2, long long n) {
    launch(KERNEL, grid, THREADS, p, g, mc, ms, vc, vs, XARGS c[0], c[1], c[2], c[3], c[4],
           c[5], c[6], c[7], c[8], c[9], use_l2, n);
}
"""


@lru_cache(maxsize=None)
def _compiled(amsgrad: bool, tmp_dir: str):
    from pathlib import Path

    name = _cupy_kernels.int8_kernel_name(amsgrad)
    driver = (_DRIVER.replace("KERNEL", name)
              .replace("XARGS", "xc, xs, " if amsgrad else ""))
    run = cuda_c_on_cpu.load(_cupy_kernels.int8_kernel_source(amsgrad) + driver,
                             Path(tmp_dir) / name).run
    run.restype = None
    return run


def _pointer(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def _cpu_step(run, p, g, moments, scalars, grid):
    (mc, ms), (vc, vs), vmax = moments
    xc, xs = vmax if vmax is not None else (vc, vs)
    c = np.array(scalars.floats(), np.float32)
    run(ctypes.c_uint(grid), *map(_pointer, (p, g, mc, ms, vc, vs, xc, xs, c)),
        ctypes.c_bool(scalars.use_l2), ctypes.c_longlong(p.size))


def _bits(x):
    return x.view(np.uint32) if x.dtype == np.float32 else x.view(np.uint8)


@pytest.mark.parametrize("options", list(OPTION_SETS), ids=list(OPTION_SETS))
def test_cupy_int8_source_gives_numpys_bits(options, tmp_path_factory):
    """Three steps over 16 full blocks and a partial one, with a NaN block, a block made
    inf then NaN by an inf gradient (m codes: M_NONFINITE_CODE) and a block of zeros,
    three thread blocks looping over the 17 state blocks."""
    cfg_options = OPTION_SETS[options]
    amsgrad = cfg_options.get("amsgrad", False)
    run = _compiled(amsgrad, str(tmp_path_factory.getbasetemp()))
    n = 4096 + 100
    rng = np.random.default_rng(1)
    p = rng.standard_normal(n).astype(np.float32)
    p[5 * codec.BLOCK:6 * codec.BLOCK] = 0
    reference = Adam([p.copy()], backend=get_backend("numpy"), state_dtype="int8",
                     **cfg_options)
    state = codec.init_int8_state(get_backend("numpy"), [p], amsgrad)
    mine = p.copy()
    for t in range(1, 4):
        g = (rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 2, n)).astype(np.float32)
        g[3 * codec.BLOCK + 7] = np.nan if t == 2 else g[3 * codec.BLOCK + 7]
        g[8 * codec.BLOCK + 1] = np.inf if t == 1 else g[8 * codec.BLOCK + 1]
        g[5 * codec.BLOCK:6 * codec.BLOCK] = 0
        reference.step([g])
        pairs = [(getattr(state, name)[0], getattr(state, scale)[0])
                 for name, scale in zip(codec.INT8_MOMENTS, codec.SCALE_NAMES)
                 if getattr(state, name) is not None]
        _cpu_step(run, mine, g, (*pairs[:2], pairs[2] if amsgrad else None),
                  StepScalars.for_step(reference.config, t), grid=3)
        np.testing.assert_array_equal(_bits(mine), _bits(reference.params[0]))
        for name, scale in zip(codec.INT8_MOMENTS, codec.SCALE_NAMES):
            if getattr(state, name) is None:
                continue
            np.testing.assert_array_equal(getattr(state, name)[0],
                                          getattr(reference.state, name)[0], err_msg=name)
            np.testing.assert_array_equal(_bits(getattr(state, scale)[0]),
                                          _bits(getattr(reference.state, scale)[0]),
                                          err_msg=scale)
    assert np.isnan(reference.state.exp_avg_scale[0][3])
    assert not np.isfinite(reference.state.exp_avg_scale[0][8])
    assert (reference.state.exp_avg[0][8 * codec.BLOCK:9 * codec.BLOCK] == codec.M_NONFINITE_CODE).all()
    assert reference.state.exp_avg_scale[0][5] == 0
