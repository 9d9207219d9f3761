"""Scenarios test_sharded.py runs under ``mpiexec -n N`` (not collected by pytest).

``python tests/sharded_scenarios.py SCENARIO DIR``; exit status 0 means every assertion
held on this rank; a failed one exits 1 with the reason.
"""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

from backends import Adam
from backends.sharded.comm import MPIComm
from backends.sharded.adam import ShardedAdam, load_adam, save_adam
from harness.sharded.worker import mean_of

SHAPES = [(0,), (3, 5), (7,), (1,), (4, 2, 3)]  # 47 elements: the last shard is padded
CONFIG = {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True}
RANKS = 2


def initial_params(dtype="float32"):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def grads(rank, step, dtype="float32"):
    rng = np.random.default_rng(1000 * step + rank)
    return [(10.0 ** (i - 2) * rng.standard_normal(s)).astype(dtype) for i, s in enumerate(SHAPES)]


def single_process(steps, dtype="float32", backend="numpy"):
    """The reference: one plain Adam on the gradient averaged over RANKS ranks."""
    params = initial_params(dtype)
    opt = Adam(params, backend=backend, **CONFIG)
    for t in range(steps):
        opt.step(mean_of([grads(r, t, dtype) for r in range(RANKS)]))
    return params, opt


def same_bits(a, b) -> bool:
    return all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))


def agree(directory, comm):
    for backend in os.environ.get("SCENARIO_BACKENDS", "numpy,numba").split(","):
        for dtype in ("float32", "float64"):
            mine = initial_params(dtype)
            opt = ShardedAdam(mine, backend=backend, comm=comm, **CONFIG)
            for t in range(6):
                g = grads(comm.rank, t, dtype)
                if t % 2:  # every other step through opt.grads, the no-copy path
                    for view, a in zip(opt.grads, g):
                        view[...] = a
                    g = opt.grads
                opt.step(g)
            expected, _ = single_process(6, dtype)
            assert same_bits(mine, expected), f"{backend} {dtype}: params differ"


def resume_start(directory, comm):
    opt = ShardedAdam(initial_params(), backend="numba", comm=comm, **CONFIG)
    for t in range(4):
        opt.step(grads(comm.rank, t))
    opt.save(directory)


def resume_middle(directory, comm):
    """One process: the 2-rank checkpoint resumes as a plain Adam, then is saved back."""
    assert comm.size == 1
    params, _ = single_process(4)
    opt = load_adam(os.path.join(directory, "a"), params, backend="numpy")
    for t in range(4, 8):
        opt.step(mean_of([grads(r, t) for r in range(RANKS)]))
    save_adam(opt, os.path.join(directory, "b"))


def resume_end(directory, comm):
    params, _ = single_process(8)
    opt = ShardedAdam.load(os.path.join(directory, "b"), params, backend="numba", comm=comm)
    for t in range(8, 12):
        opt.step(grads(comm.rank, t))
    expected, reference = single_process(12)
    assert opt.state.step == 12
    assert same_bits(opt.params, expected), "params after 2 -> 1 -> 2 ranks differ"
    whole = reference.state.to_dict()
    flat = {k: np.concatenate([a.reshape(-1) for a in whole[k]]) for k in
            ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")}
    mine = opt.state.to_dict()
    for k, v in flat.items():
        shard = np.pad(v, (0, opt.shard_len * comm.size - v.size))[
            opt.start:opt.start + opt.shard_len]
        assert np.array_equal(mine[k][0], shard), f"state {k} differs"


def int8_resume(directory, comm):
    """int8 state (each rank's shard in int8: 5150 elements): 2 steps, save, load, 2
    more steps equal 4 straight steps bit for bit, state included."""
    shapes = [(2, 5000), (300,)]

    def params():
        return [np.random.default_rng(5).standard_normal(s).astype(np.float32) for s in shapes]

    def step_grads(t):
        rng = np.random.default_rng(10 * t + comm.rank)
        return [rng.standard_normal(s).astype(np.float32) for s in shapes]

    straight = ShardedAdam(params(), backend="numba", comm=comm, state_dtype="int8")
    first = ShardedAdam(params(), backend="numba", comm=comm, state_dtype="int8")
    for t in range(4):
        straight.step(step_grads(t))
        if t < 2:
            first.step(step_grads(t))
    first.save(directory)
    resumed = ShardedAdam.load(directory, [p.copy() for p in first.params], comm=comm)
    for t in range(2, 4):
        resumed.step(step_grads(t))
    assert straight.state.exp_avg_scale[0] is not None, "the shard has no int8 state"
    assert same_bits([p.view(np.uint32) for p in straight.params],
                     [p.view(np.uint32) for p in resumed.params]), "params differ"
    mine, theirs = resumed.state.to_dict(), straight.state.to_dict()
    for k, v in theirs.items():
        same = v == mine[k] if k == "step" or v is None else same_bits(v, mine[k])
        assert same, f"state {k} differs"


def fault(directory, comm):
    """Steps until ``DIR/stop`` appears (or 120 s pass), saving at step 2, for a fault
    made from outside meanwhile; the ranks agree on stopping every step. A run that ends
    must hold the single-process bits."""
    opt = ShardedAdam(initial_params(), backend="numpy", comm=comm, **CONFIG)
    deadline, t = time.monotonic() + 120, 0
    while True:
        opt.step(grads(comm.rank, t))
        t += 1
        if t == 2:
            opt.save(directory)
        stop = os.path.exists(os.path.join(directory, "stop")) or time.monotonic() > deadline
        if not comm.all_ok(not stop):
            break
    assert same_bits(opt.params, single_process(t)[0]), f"params after {t} steps differ"


def resume_fault(directory, comm):
    """The checkpoint ``fault`` saved (step 2) resumes and steps on to the single-process
    bits, state included."""
    params, _ = single_process(2)
    opt = ShardedAdam.load(directory, params, backend="numpy", comm=comm)
    assert opt.state.step == 2, opt.state.step
    for t in range(2, 5):
        opt.step(grads(comm.rank, t))
    expected, reference = single_process(5)
    assert same_bits(opt.params, expected), "params resumed after the fault differ"
    whole = reference.state.to_dict()
    mine = opt.state.to_dict()
    for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        flat = np.concatenate([a.reshape(-1) for a in whole[k]])
        shard = np.pad(flat, (0, opt.shard_len * comm.size - flat.size))[
            opt.start:opt.start + opt.shard_len]
        assert np.array_equal(mine[k][0], shard), f"state {k} differs"


def kill(directory, comm):
    """Rank 1 dies (SIGKILL) at step 3; rank 0 goes on stepping."""
    opt = ShardedAdam(initial_params(), backend="numpy", comm=comm)
    for t in range(100):
        if t == 3 and comm.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        opt.step(grads(comm.rank, t))


def hang(directory, comm):
    """Rank 1 hangs at step 3; rank 0's next collective must time out and end the job."""
    opt = ShardedAdam(initial_params(), backend="numpy", comm=comm)
    for t in range(100):
        if t == 3 and comm.rank == 1:
            time.sleep(600)
        opt.step(grads(comm.rank, t))


def kill_during_save(directory, comm):
    """A complete save at step 2, then a save at step 4 during which rank 1 dies after
    writing its shard, before the manifest: step 2 must stay the checkpoint."""
    from backends.sharded import adam as sharded

    opt = ShardedAdam(initial_params(), backend="numpy", comm=comm)
    for t in range(4):
        opt.step(grads(comm.rank, t))
        if t == 1:
            opt.save(directory)
    if comm.rank == 1:
        real = sharded._write_shard

        def write_then_die(*args):
            real(*args)
            os.kill(os.getpid(), signal.SIGKILL)

        sharded._write_shard = write_then_die
    opt.save(directory)


def torch_agree(directory, comm):
    """The same agreement through a torch.distributed (gloo) process group."""
    agree(directory, comm)


def _communicator(scenario: str):
    if scenario.startswith("torch_"):  # started by torchrun
        import torch.distributed as dist

        from backends.sharded.comm import TorchComm

        dist.init_process_group("gloo")
        return TorchComm()
    return MPIComm(timeout=float(os.environ.get("SCENARIO_TIMEOUT", "60")),
                   shared_memory=os.environ.get("SCENARIO_SHARED", "1") == "1")


def _check_placement(comm) -> None:
    """With SCENARIO_NODES=N (tests/test_two_nodes.py): the ranks are on N different
    hosts and the collectives take the point-to-point ring, not the shared-memory window."""
    import socket

    hosts = comm.comm.allgather(socket.gethostname())
    print(f"rank {comm.rank}: host {hosts[comm.rank]}, node_local {comm.node_local}, "
          f"algorithm {comm.algorithm}", flush=True)
    assert len(set(hosts)) == int(os.environ["SCENARIO_NODES"]), f"hosts {hosts}"
    assert not comm.node_local and comm.algorithm == "ring", "not the cross-node ring"


def main():
    scenario, directory = sys.argv[1], sys.argv[2]
    comm = _communicator(scenario)
    try:
        if os.environ.get("SCENARIO_NODES") and isinstance(comm, MPIComm) and comm.size > 1:
            _check_placement(comm)
        globals()[scenario](directory, comm)
    except AssertionError as exc:
        print(f"rank {comm.rank}: FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if scenario.startswith("torch_"):  # gloo aborts at exit when its group is left open
            import torch.distributed as dist

            dist.destroy_process_group()
    print(f"rank {comm.rank}: OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
