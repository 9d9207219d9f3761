import subprocess
import sys

import pytest

from backends import BackendUnavailable, backend_names, get_backend, list_backends


def test_every_planned_backend_is_listed():
    rows = {r.name: r for r in list_backends() if r.origin == "built-in"}
    assert list(rows) == ["python", "numpy", "numba", "numba-cuda", "cupy"]
    assert {n: r.device for n, r in rows.items()} == {
        "python": "cpu", "numpy": "cpu", "numba": "cpu", "numba-cuda": "cuda", "cupy": "cuda"}
    for row in rows.values():
        assert row.available == (row.reason is None)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown backend 'jax'; known backends: python, numpy, "
                                         "numba, numba-cuda, cupy"):
        get_backend("jax")


@pytest.mark.parametrize("name", ["numba-cuda", "cupy"])
def test_unusable_backend_raises_with_the_reason(name):
    row = next(r for r in list_backends() if r.name == name)
    if row.available:
        pytest.skip(f"{name} is usable on this machine")
    with pytest.raises(BackendUnavailable, match=f"backend '{name}' is unavailable here: "):
        get_backend(name)


def test_importing_backends_loads_no_optional_library():
    code = ("import sys, backends; "
            "print(sorted(m for m in ('numba', 'cupy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_backend_names_match_the_instances():
    for name in backend_names():
        row = next(r for r in list_backends() if r.name == name)
        if row.available:
            backend = get_backend(name)
            assert (backend.name, backend.device) == (name, row.device)
