"""Runs tests/cuda_sim in a fresh process with NUMBA_ENABLE_CUDASIM=1 (numba reads it at
import), so the Numba CUDA kernels' logic is checked on machines without a GPU."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install -e '.[test]')")


def test_numba_cuda_kernels_under_the_simulator():
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(root / "tests" / "cuda_sim")],
                            cwd=root, env=env, capture_output=True, text=True, timeout=600)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary, summary
