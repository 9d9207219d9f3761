"""Low-precision formats on a real GPU (numba-cuda and cupy): the NumPy backend's bits for
every format, over tensors of many blocks; skipped with the reason where the backend
cannot run (CI has no GPU: there the simulator test, the cupy kernel's C++ build and the
PTX checks stand in)."""
import numpy as np
import pytest
from low_precision_cases import FORMATS, stepped_bits

from backends import get_backend, list_backends

_ROWS = {r.name: r for r in list_backends()}


@pytest.mark.gpu
@pytest.mark.parametrize("name, dtype, options", FORMATS, ids=[f[0] for f in FORMATS])
@pytest.mark.parametrize("grads", ["params", "float32"])
@pytest.mark.parametrize("backend", ["numba-cuda", "cupy"])
def test_gpu_low_precision_step_gives_numpys_bits(backend, name, dtype, options, grads):
    if not _ROWS[backend].available:
        pytest.skip(f"{backend} unavailable: {_ROWS[backend].reason}")
    grad_dtype = np.float32 if grads == "float32" else dtype
    sizes = (100_000 + 37, 4097, 1)
    expected, found = (stepped_bits(get_backend(b), dtype, options, grad_dtype, sizes)
                       for b in ("numpy", backend))
    for i, (a, b) in enumerate(zip(found, expected)):
        np.testing.assert_array_equal(a, b, err_msg=f"{name}: array {i}")
