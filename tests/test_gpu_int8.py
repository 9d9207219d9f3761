"""int8 state on a real GPU (numba-cuda and cupy): the NumPy backend's bits, codes,
scales and params, over several steps; skipped with the reason where a backend cannot
run (CI has no GPU: there the simulator test and the PTX checks stand in)."""
import numpy as np
import pytest

from backends import Adam, get_backend, list_backends
from harness.check.agreement import OPTION_SETS

_ROWS = {r.name: r for r in list_backends()}


def _run(backend, params, grad_steps, options):
    arrays = [backend.asarray(p.copy()) for p in params]
    opt = Adam(arrays, backend=backend, state_dtype="int8", **options)
    for grads in grad_steps:
        opt.step([backend.asarray(g) for g in grads])
    return [backend.to_numpy(a) for a in opt.params], opt.state_dict()["state"]


@pytest.mark.gpu
@pytest.mark.parametrize("options", list(OPTION_SETS), ids=list(OPTION_SETS))
@pytest.mark.parametrize("name", ["numba-cuda", "cupy"])
def test_gpu_int8_step_gives_numpys_bits(name, options):
    if not _ROWS[name].available:
        pytest.skip(f"{name} unavailable: {_ROWS[name].reason}")
    rng = np.random.default_rng(11)
    sizes = (4095, 4097, 100_000 + 37)
    params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grads = [[(rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 2, n)).astype(np.float32)
              for n in sizes] for _ in range(5)]
    (pa, sa), (pb, sb) = (_run(get_backend(b), params, grads, OPTION_SETS[options])
                          for b in ("numpy", name))
    for x, y in zip(pa, pb):  # no NaN here: a GPU's NaN bits are its own
        np.testing.assert_array_equal(x.view(np.uint32), y.view(np.uint32))
    for key, arrays in sa.items():
        if key == "step" or arrays is None:
            assert arrays == sb[key]
            continue
        for i, (x, y) in enumerate(zip(arrays, sb[key])):
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8),
                                              err_msg=f"{key}[{i}]")
