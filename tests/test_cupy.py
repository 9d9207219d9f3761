"""The CuPy backend on a real GPU; skipped with the reason where there is none."""
import numpy as np
import pytest

from backends import AdamConfig, get_backend, list_backends
from harness.check.agreement import OPTION_SETS, run_with_reference
from harness.core.problems import MIXED_SHAPES, random_problem
from harness.core.steppers import BackendStepper

_ROW = next(r for r in list_backends() if r.name == "cupy")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not _ROW.available, reason=f"cupy unavailable: {_ROW.reason}")]


@pytest.mark.parametrize("options", list(OPTION_SETS), ids=list(OPTION_SETS))
def test_cupy_matches_the_reference(options, dtype):
    backend = get_backend("cupy")
    cfg = AdamConfig(**OPTION_SETS[options])
    problem = random_problem(MIXED_SHAPES, dtype, steps=50, seed=2)
    errors = run_with_reference(lambda p, c: BackendStepper(backend, p, c), problem, cfg).errors
    assert errors.within_tolerance, errors


def test_flattened_list_is_one_launch(monkeypatch):
    backend = get_backend("cupy")
    launches = []
    real = backend._launch
    monkeypatch.setattr(backend, "_launch", lambda *a: launches.append(a[0].size) or real(*a))
    host = [np.ones(s, np.float32) for s in [(3, 4), (5,), (7,)]]
    params, grads = backend.flatten(host)[1], backend.flatten(host)[1]
    backend.step(params, grads, backend.init_state(params), AdamConfig())
    assert launches == [24]
