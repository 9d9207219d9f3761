"""Start ``harness.sharded.worker`` on N ranks with ``mpiexec`` and read back its rows.

The ``mpiexec`` of the ``[mpi]`` extra (the mpich wheel) sits beside the venv's python.
``MPIEXEC_TIMEOUT`` bounds the whole job, on top of the per-collective deadline, so a
rank that hangs outside a collective cannot hold the others either.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["mpiexec_path", "mpi_world_size", "run_ranks", "MPIUnavailable"]


class MPIUnavailable(RuntimeError):
    """No mpiexec or mpi4py here; the message says how to install them."""


def mpiexec_path() -> str:
    """The mpiexec beside this interpreter (the mpich wheel's), else the one on PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    found = str(local) if local.exists() else shutil.which("mpiexec")
    if found is None:
        raise MPIUnavailable("mpiexec not found: install the MPI extra, "
                             "pip install -e '.[mpi]' (mpi4py and the mpich wheel)")
    return found


def mpi_world_size() -> int | None:
    """The number of ranks when this process was started by mpiexec (Hydra's PMI), else None."""
    size = os.environ.get("PMI_SIZE")
    return int(size) if size else None


def run_ranks(ranks: int, job: str, options: list[str], timeout: float = 600.0) -> list[dict]:
    """Run ``harness.sharded.worker JOB`` on ``ranks`` processes; rank 0's rows. Raises
    RuntimeError with the exit status when a rank failed or the job timed out."""
    if mpi_world_size() is not None:
        return _run_inside(ranks, job, options)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [mpiexec_path(), "-n", str(ranks), sys.executable, "-m", "harness.sharded.worker",
               job, "--out", str(out), *options]
        # ranks share the cores: OpenMP threads that spin after a parallel region would
        # starve the other ranks (measured: collectives 100x slower at 2^16)
        env = {"OMP_WAIT_POLICY": "passive", **os.environ, "MPIEXEC_TIMEOUT": str(int(timeout))}
        status = subprocess.run(cmd, env=env).returncode
        if status != 0 or not out.exists():
            raise RuntimeError(f"{job} on {ranks} ranks failed (mpiexec exit status {status})")
        return json.loads(out.read_text())


def _run_inside(ranks: int, job: str, options: list[str]) -> list[dict]:
    """Already under mpiexec: run the job in this process, on the ranks mpiexec gave."""
    from .worker import main

    if mpi_world_size() != ranks:
        raise RuntimeError(f"running inside mpiexec with {mpi_world_size()} ranks; "
                           f"--ranks {ranks} needs its own launch (run outside mpiexec)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"rows-{os.getpid()}.json"
        main([job, "--out", str(out), *options])
        return json.loads(out.read_text()) if out.exists() else []
