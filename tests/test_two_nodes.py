"""Sharded Adam on two "nodes": tests/two_nodes/nodes.sh makes network namespaces with
their own hostname, IP and /dev/shm on a private bridge, and mpiexec places rank i on node
n{i} through Hydra's ssh launcher (HYDRA_LAUNCHER_EXEC=tests/two_nodes/fake_ssh.sh), so
the cross-node path of ``backends.sharded.comm.MPIComm`` (the point-to-point ring over TCP, no
shared-memory window) runs for real. tests/test_sharded.py's multi-rank tests run there
(every scenario asserting its ranks' hosts differ and the ring is taken), then three
faults: link down, 5% packet loss, one node's processes killed.

Needs root (CI runs as root); skipped with the reason where namespaces cannot be made.
See docs/two-nodes.md.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install -e '.[mpi]')")

from backends.sharded import read_manifest  # noqa: E402
from harness.sharded.mpi_launch import mpiexec_path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "tests" / "two_nodes"
NODES = HERE / "nodes.sh"
SCENARIOS = ROOT / "tests" / "sharded_scenarios.py"
#: tests/test_sharded.py's tests whose two ranks exchange data: their bits across hosts. Its
#: fault tests (a killed, hung or saving rank) are left to the node-level faults below, and
#: its agreement test's [ring] case too: across nodes [shared-memory] takes the ring as well
#: (no node-local window), so the two run the same code there.
MULTI_RANK = "two_ranks_equal and shared-memory or reshards or int8_state_on_two"
#: The collectives' timeout in the fault runs (MPIComm's, as ADAM_COMM_TIMEOUT sets it).
COMM_TIMEOUT = 5
#: Seconds a faulted job may take past COMM_TIMEOUT to end (the abort, mpiexec's teardown).
TEARDOWN = 25


class Nodes:
    """The fake nodes of one test module: ``env`` reaches them (nodes.sh and Hydra)."""

    def __init__(self, prefix: str, state: Path):
        self.state = state
        self.env = {**os.environ, "NODES_PFX": prefix, "NODES_STATE": str(state),
                    "HYDRA_HOST_FILE": str(state / "hostfile"), "HYDRA_LAUNCHER": "ssh",
                    "HYDRA_LAUNCHER_EXEC": str(HERE / "fake_ssh.sh"),
                    "OMP_WAIT_POLICY": "passive", "SCENARIO_NODES": "2"}

    def run(self, *args, timeout=30):
        """nodes.sh ARGS (up, down, link, loss, kill, pids); CalledProcessError if it fails."""
        return subprocess.run([str(NODES), *map(str, args)], env=self.env, check=True,
                              capture_output=True, text=True, timeout=timeout)

    def mpiexec(self, scenario: str, directory, **env) -> subprocess.Popen:
        """``mpiexec -n 2`` of a sharded scenario, started on the head node."""
        cmd = [str(NODES), "exec", "head", mpiexec_path(), "-n", "2", sys.executable,
               str(SCENARIOS), scenario, str(directory)]
        return subprocess.Popen(cmd, cwd=ROOT, env={**self.env, **env}, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to make network namespaces (CI runs as root)"
    missing = [tool for tool in ("ip", "unshare", "nft") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found (apt-get install iproute2 util-linux nftables)"
    return None


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    nodes = Nodes(f"ad{os.getpid() % 10**6:06d}", tmp_path_factory.mktemp("nodes"))
    # a SIGTERM (a CI job cancelled) ends pytest through the finally, which deletes them
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        try:
            nodes.run("up", 2)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"network namespaces cannot be made here: "
                        f"{(getattr(exc, 'stderr', '') or str(exc)).strip()[-300:]}")
        yield nodes
    finally:
        nodes.run("down")
        signal.signal(signal.SIGTERM, previous)


def _finish(job: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``job``, killed (its whole session) and failing
    the test if it runs past ``timeout``: a hang."""
    try:
        out, err = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, 9)
        out, err = job.communicate()
        pytest.fail(f"hang: the job still ran after {timeout:.0f} s\n{out[-2000:]}{err[-2000:]}")
    return job.returncode, out, err


def test_test_sharded_runs_on_two_nodes(nodes):
    """tests/test_sharded.py's scenario tests inside the head node: every mpiexec they
    start puts its ranks on n0 and n1 (the one-process tests, torchrun's single-node
    group, the simulator's and the CLI's runs gain nothing there and are left out)."""
    cmd = [str(NODES), "exec", "head", sys.executable, "-m", "pytest", "-q", "-p",
           "no:cacheprovider", str(ROOT / "tests" / "test_sharded.py"), "-k", MULTI_RANK]
    done = subprocess.run(cmd, cwd=ROOT, env=nodes.env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout.splitlines()[-1]


def test_ranks_are_on_two_hosts_and_take_the_ring(nodes, tmp_path):
    code, out, err = _finish(nodes.mpiexec("agree", tmp_path, SCENARIO_BACKENDS="numpy"), 120)
    assert code == 0, out + err
    assert "rank 0: host n0, node_local False, algorithm ring" in out
    assert "rank 1: host n1, node_local False, algorithm ring" in out


def _start_fault_run(nodes, directory):
    """The ``fault`` scenario, running once its step-2 checkpoint is complete."""
    job = nodes.mpiexec("fault", directory, SCENARIO_TIMEOUT=str(COMM_TIMEOUT))
    deadline = time.monotonic() + 60
    while not (directory / "manifest.json").exists():
        if job.poll() is not None or time.monotonic() > deadline:
            _, out, err = _finish(job, 10)
            pytest.fail(f"no checkpoint was written\n{out[-2000:]}{err[-2000:]}")
        time.sleep(0.05)
    time.sleep(0.3)  # well into the steps after it
    return job


def _assert_resumes(nodes, directory):
    assert read_manifest(directory)["step"] == 2
    code, out, err = _finish(nodes.mpiexec("resume_fault", directory), 120)
    assert code == 0 and out.count(": OK") == 2, out + err


def _fails_clearly(job, started: float):
    code, out, err = _finish(job, COMM_TIMEOUT + TEARDOWN)
    elapsed = time.monotonic() - started
    assert code != 0, out + err
    assert elapsed <= COMM_TIMEOUT + TEARDOWN
    return out + err, elapsed


@pytest.mark.parametrize("fault", ["link_down", "node_killed"])
def test_a_fault_ends_the_job_with_a_clear_error_and_the_checkpoint_resumes(
        nodes, tmp_path, fault):
    job = _start_fault_run(nodes, tmp_path)
    started = time.monotonic()
    if fault == "link_down":
        nodes.run("link", "n1", "down")
    else:
        nodes.run("kill", "n1")
    try:
        text, _ = _fails_clearly(job, started)
    finally:
        nodes.run("link", "n1", "up")
    if fault == "link_down":
        assert f"got no answer within {COMM_TIMEOUT} s; a peer rank died or hangs" in text
    else:  # mpiexec loses n1's proxy at once and says so; n0's rank does not linger
        assert "[mpiexec@head]" in text, text
        assert nodes.run("pids", "n0").stdout.split() == []
    _assert_resumes(nodes, tmp_path)


def test_five_percent_packet_loss_gives_the_right_bits_or_a_clear_error(nodes, tmp_path):
    """TCP retransmits what is lost: the run either ends with the single-process bits
    (the scenario asserts them) or, should a collective wait past the timeout, with the
    timeout's message; never a hang. The checkpoint resumes either way."""
    job = _start_fault_run(nodes, tmp_path)
    nodes.run("loss", "n1", 5)
    try:
        time.sleep(3)
        (tmp_path / "stop").touch()
        code, out, err = _finish(job, COMM_TIMEOUT + TEARDOWN + 30)
    finally:
        nodes.run("loss", "n1", "off")
    if code == 0:
        assert out.count(": OK") == 2, out + err
    else:
        assert f"got no answer within {COMM_TIMEOUT} s" in err, out + err
    _assert_resumes(nodes, tmp_path)
