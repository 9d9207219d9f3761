"""Runs tests/cuda_sim in a fresh process with NUMBA_ENABLE_CUDASIM=1 (numba reads it at
import), so the Numba CUDA kernels' logic is checked on machines without a GPU. The
process starts when collection ends (tests/conftest.py), so it runs beside other tests;
under pytest-xdist this test starts it, first on its worker, beside the other workers."""
import re

import pytest

from conftest import SIMULATOR_RUN, start_simulator_run

pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install -e '.[test]')")


def test_numba_cuda_kernels_under_the_simulator(request):
    if SIMULATOR_RUN not in request.config.stash:  # xdist: here, stashed for pytest_unconfigure
        request.config.stash[SIMULATOR_RUN] = start_simulator_run()
    job, out = request.config.stash[SIMULATOR_RUN]
    job.wait(timeout=600)
    out.seek(0)
    text = out.read()
    summary = text.strip().splitlines()[-1] if text.strip() else ""
    assert job.returncode == 0, text[-6000:]
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary, summary
