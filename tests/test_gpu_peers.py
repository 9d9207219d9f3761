"""The GPU sweep's rivals: torch's foreach and fused Adam on CUDA tensors
(``harness.subjects.peers.CUDA_PEERS``) agree with the float64 reference on every option
set, and the bf16 format peers step CUDA tensors. Needs a CUDA build of torch and a GPU
(``adam-bench gpu-report`` runs this file there); elsewhere the subjects carry the reason
and the device tests skip with it."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[peers]')")

from backends import AdamConfig  # noqa: E402
from harness.check.agreement import OPTION_SETS, run_with_reference  # noqa: E402
from harness.core.problems import random_problem  # noqa: E402
from harness.subjects import collect_subjects  # noqa: E402
from harness.subjects.peers import CUDA_PEERS, collect_peers, load_peer  # noqa: E402
from harness.subjects.peers.low_precision import format_peers, peer_step  # noqa: E402

NO_CUDA = None if torch.cuda.is_available() else "torch sees no CUDA device"


def test_cuda_peers_are_torchs_foreach_and_fused_on_the_gpu_sweep_only():
    labels = [s.label for s in collect_peers(device="cuda")]
    assert labels == ["torch-foreach", "torch-fused"]
    assert all(s.device == "cuda" for s in collect_subjects([], device="cuda"))
    assert {s.label for s in collect_subjects([], device="cuda")} == set(labels)
    cpu = collect_subjects([], peers=["torch-fused"])
    assert [(s.label, s.device) for s in cpu] == [("torch-fused", "cpu")]
    assert [p.label for p in format_peers("bf16", "cuda")] == ["torch-fused", "torch-foreach"]
    assert format_peers("bf16-sr", "cuda") == []
    if NO_CUDA:
        subject = load_peer(CUDA_PEERS[0])
        assert subject.make is None and NO_CUDA in subject.reason
        assert NO_CUDA in peer_step(format_peers("bf16", "cuda")[0], 8, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("options", list(OPTION_SETS))
@pytest.mark.parametrize("peer", CUDA_PEERS, ids=[p.label for p in CUDA_PEERS])
def test_cuda_peer_agrees_with_the_reference(peer, options, dtype):
    if NO_CUDA:
        pytest.skip(NO_CUDA)
    subject = load_peer(peer)
    problem = random_problem([(1,), (17, 5), (3000,)], dtype, steps=3, seed=9)
    trajectory = run_with_reference(subject.make, problem, AdamConfig(**OPTION_SETS[options]))
    assert trajectory.errors.within_tolerance, trajectory.errors
    assert not np.array_equal(trajectory.params[2], problem.params[2])


@pytest.mark.gpu
@pytest.mark.parametrize("peer", format_peers("bf16", "cuda"), ids=lambda p: p.label)
def test_bf16_format_peer_steps_a_cuda_tensor(peer):
    if NO_CUDA:
        pytest.skip(NO_CUDA)
    step, sync = peer_step(peer, 1000, device="cuda")
    step()
    sync()


def test_bench_of_gpu_backends_only_times_the_cuda_peers():
    """``adam-bench bench --backends numba-cuda,cupy`` sets torch on CUDA tensors beside
    them; any CPU backend in the list keeps the CPU peers."""
    from harness.cli.options import backends_device

    assert backends_device(["numba-cuda", "cupy"]) == "cuda"
    assert backends_device(["numba-cuda"]) == "cuda"
    assert backends_device(["numba", "numba-cuda"]) is None
    assert backends_device(None) is None and backends_device([]) is None
