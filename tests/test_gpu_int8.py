"""int8 state on a real GPU (numba-cuda and cupy): the NumPy backend's bits, codes,
scales and params, over several steps (a tensor below the int8 threshold keeps float32
state, stepped by the GPU's float32 kernel, within FMA rounding: tests/int8_runs.py);
skipped with the reason where a backend cannot run (CI has no GPU: there the simulator
test and the PTX checks stand in)."""
import numpy as np
import pytest
from int8_runs import assert_same_run

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
    assert_same_run((pa, sa), (pb, sb), fused_float32=True)
