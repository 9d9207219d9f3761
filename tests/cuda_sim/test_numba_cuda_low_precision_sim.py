"""The Numba CUDA low-precision kernel under the CUDA simulator (on a GPU when
ADAM_BENCH_CUDA_TESTS=1): the same bits as the NumPy backend (params, moments, master
weights, compensation) for every format, with NaN and inf grads, float32 grads and a
per-step learning rate. The simulator runs a Python thread per GPU thread, so problems
are two tensors of 200 and 15 elements and three steps.
"""
import numpy as np
import pytest
from low_precision_cases import FORMATS, stepped_bits

from backends import get_backend

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
