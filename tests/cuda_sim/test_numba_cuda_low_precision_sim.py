"""The Numba CUDA low-precision kernel under the CUDA simulator (on a GPU when
ADAM_BENCH_CUDA_TESTS=1): the same bits as the NumPy backend (params, moments, master
weights, compensation) for every format, with NaN and inf grads, float32 grads and a
per-step learning rate. The simulator runs a Python thread per GPU thread, so problems
are two tensors of 200 and 15 elements and three steps.
"""
import numpy as np
import pytest
from low_precision_cases import FORMATS, stepped_bits
from numba import cuda

from backends import get_backend
from backends.cuda._numba_cuda_kernels import _random16
from backends.formats import random16

#: Each format with grads of the params' dtype, and three with float32 grads.
CASES = [(*f, f[1]) for f in FORMATS] + [(*f, np.float32) for f in FORMATS
                                         if f[0] in ("bf16", "bf16-sr", "fp16-master")]


@pytest.mark.parametrize("name, dtype, options, grad_dtype", CASES,
                         ids=[f"{c[0]}-{np.dtype(c[3]).name}-grads" for c in CASES])
def test_bits_equal_numpy(name, dtype, options, grad_dtype):
    expected, found = (stepped_bits(get_backend(b), dtype, options, grad_dtype, (200, 15))
                       for b in ("numpy", "numba-cuda"))
    assert len(found) == len(expected)
    for i, (a, b) in enumerate(zip(found, expected)):
        np.testing.assert_array_equal(a, b, err_msg=f"{name}: array {i}")


@cuda.jit
def _draw(key, first, out):
    """out[i] = the kernel's random bits of element first + i."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = _random16(key, first + i)


def test_stochastic_rounding_bits_are_formats_random16():
    """The kernel's hash is ``formats.random16`` bit for bit, below and above 2^32 (the
    format test above sees a few hundred draws, too few to catch dropped random bits)."""
    key = 0x9E3779B9 ^ 12345
    for first in (0, (1 << 32) - 128, 5 << 32):
        out = cuda.device_array(256, np.uint32)
        _draw[1, 256](key, first, out)
        np.testing.assert_array_equal(out.copy_to_host(), random16(key, first, first + 256))


def test_bench_format_steps_numba_cuda(tmp_path):
    """``adam-bench bench --format`` steps numba-cuda: its params and grads go to the
    device (host arrays were refused), beside the format's roofline on the GPU (a
    device-timed kernel) and torch's bf16 Adam on CUDA tensors (a row saying why where
    torch has no CUDA), one format at 256 elements."""
    import torch

    from harness.bench.formats import run_format_bench
    from harness.bench.roofline import format_roofline
    from harness.core.formats import FORMATS

    table = run_format_bench(["bf16"], [256], ["numba-cuda"], tmp_path / "fb", repeats=1,
                             max_seconds=0.01, show=lambda line: None)
    assert list(zip(table["backend"], table["device"], table["bytes_per_element"])) == [
        ("numba-cuda", "cuda", 14), ("torch-fused", "cuda", 14), ("torch-foreach", "cuda", 14)]
    ours = table.iloc[0]
    assert min(ours["us_per_step"], ours["fp32_us_per_step"], ours["roofline_us"]) > 0
    peers = table.iloc[1:]
    if torch.cuda.is_available():
        assert (peers["us_per_step"] > 0).all() and (peers["note"] == "").all()
    else:
        assert peers["note"].str.contains("torch sees no CUDA device").all()
    step, sync, timer = format_roofline(FORMATS["bf16-kahan"], 256, "cuda")
    step()
    sync()
