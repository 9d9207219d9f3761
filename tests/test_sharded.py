"""Sharded Adam (ZeRO-1) on MPI: agreement, param groups, checkpoints across world sizes,
failures, torch tensors through torch.distributed.

Multi-rank cases run tests/sharded_scenarios.py under the mpiexec of the ``[mpi]`` extra
(param groups on 2 ranks ride along in the agreement and resharding runs, the torch tensors
in the torchrun one); the rest run in this process on a one-rank communicator.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install -e '.[mpi]')")

from backends import Adam, get_backend  # noqa: E402
from backends.sharded.comm import MPIComm  # noqa: E402
from backends.sharded.adam import ShardedAdam, load_adam, read_manifest, save_adam  # noqa: E402
from harness.sharded.mpi_launch import mpiexec_path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "tests" / "sharded_scenarios.py"


def run_scenario(name: str, directory, ranks: int = 2, timeout: float = 120, **env):
    """The scenario under mpiexec; a job still running after ``timeout`` seconds (a rank
    left hanging) raises TimeoutExpired, which fails the test."""
    cmd = [sys.executable, str(SCENARIOS), name, str(directory)]
    if ranks:
        cmd = [mpiexec_path(), "-n", str(ranks), *cmd]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_WAIT_POLICY": "passive", **env})


def assert_ok(result, ranks: int = 2):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count(": OK") == max(ranks, 1), result.stdout


@pytest.mark.parametrize("shared", ["1", "0"], ids=["shared-memory", "ring"])
def test_two_ranks_equal_the_single_process_step_bit_for_bit(shared, tmp_path):
    result = run_scenario("agree", tmp_path, SCENARIO_SHARED=shared)
    assert_ok(result)


def test_gpu_backend_steps_its_shard_under_the_cuda_simulator(tmp_path):
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
    result = run_scenario("agree", tmp_path, NUMBA_ENABLE_CUDASIM="1",
                             SCENARIO_BACKENDS="numba-cuda")
    assert_ok(result)


def test_a_torch_distributed_group_gives_the_same_bits(tmp_path):
    pytest.importorskip("torch.distributed", reason="torch is not installed")
    torchrun = Path(sys.executable).parent / "torchrun"
    result = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2",
                             str(SCENARIOS), "torch_agree", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_WAIT_POLICY": "passive",
                                 "SCENARIO_BACKENDS": "numpy"})
    assert_ok(result)


def test_param_groups_on_three_ranks_equal_one_process_bit_for_bit(tmp_path):
    """Group boundaries inside two ranks' shards, shard boundaries cutting tensors; the
    shared-memory sum runs in rank order, as the reference's mean does."""
    assert_ok(run_scenario("groups_agree", tmp_path, ranks=3), ranks=3)


def test_checkpoint_reshards_two_to_one_to_two_ranks_bit_for_bit(tmp_path):
    result = run_scenario("resume_start", tmp_path / "a")
    assert_ok(result)
    assert read_manifest(tmp_path / "a")["world_size"] == 2
    result = run_scenario("resume_middle", tmp_path, ranks=0)
    assert_ok(result, ranks=1)
    assert read_manifest(tmp_path / "b")["world_size"] == 1
    result = run_scenario("resume_end", tmp_path)
    assert_ok(result)


def test_int8_state_on_two_ranks_resumes_bit_for_bit(tmp_path):
    assert_ok(run_scenario("int8_resume", tmp_path))


def test_a_killed_rank_ends_the_job_with_a_nonzero_exit(tmp_path):
    result = run_scenario("kill", tmp_path, timeout=60)
    assert result.returncode != 0


@pytest.mark.parametrize("shared", ["1", "0"], ids=["shared-memory", "ring"])
def test_a_hung_rank_times_the_collective_out_with_a_clear_message(shared, tmp_path):
    result = run_scenario("hang", tmp_path, timeout=60, SCENARIO_TIMEOUT="2",
                                   SCENARIO_SHARED=shared)
    assert result.returncode != 0
    assert "got no answer within 2 s; a peer rank died or hangs" in result.stderr


def test_a_rank_killed_while_saving_leaves_the_previous_checkpoint(tmp_path):
    result = run_scenario("kill_during_save", tmp_path, timeout=60)
    assert result.returncode != 0
    assert read_manifest(tmp_path)["step"] == 2
    params = [np.zeros(s, np.float32) for s in [(0,), (3, 5), (7,), (1,), (4, 2, 3)]]
    assert load_adam(tmp_path, params, backend="numpy").state.step == 2


# --- in this process, one rank ------------------------------------------------------------
@pytest.fixture(scope="module")
def comm():
    return MPIComm()


def _params():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (5,)]]


def test_one_rank_equals_plain_adam_and_saves_a_plain_adam_checkpoint(comm, tmp_path):
    params = _params()
    sharded = ShardedAdam([p.copy() for p in params], backend="numba", comm=comm, lr=0.1)
    plain = Adam(params, backend="numpy", lr=0.1)
    grads = [np.ones_like(p) for p in params]
    for _ in range(3):
        sharded.step(grads)
        plain.step(grads)
    assert all(np.array_equal(a, b) for a, b in zip(sharded.params, params))
    save_adam(plain, tmp_path)
    resumed = ShardedAdam.load(tmp_path, params, comm=comm)
    assert resumed.state.step == 3 and resumed.config.lr == 0.1
    assert np.array_equal(resumed.state.exp_avg_sq[0],
                          np.concatenate([v.reshape(-1) for v in plain.state.exp_avg_sq]))


def test_bad_grads_are_refused_before_anything_changes(comm):
    opt = ShardedAdam(_params(), backend="numpy", comm=comm)
    before = [p.copy() for p in opt.params]
    with pytest.raises(ValueError, match=r"grads\[1\] has shape \(4,\) but params\[1\] has \(5,\)"):
        opt.step([np.ones((3, 4), np.float32), np.ones(4, np.float32)])
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype float64"):
        opt.step([np.ones((3, 4)), np.ones(5, np.float32)])
    with pytest.raises(ValueError, match="grads holds 1 tensors but params has 2"):
        opt.step([np.ones((3, 4), np.float32)])
    assert all(np.array_equal(a, b) for a, b in zip(opt.params, before))
    assert opt.state.step == 0


def test_bad_params_and_communicator_options_are_refused(comm):
    with pytest.raises(TypeError, match="params must share one dtype"):
        ShardedAdam([np.ones(2, np.float32), np.ones(2)], comm=comm)
    with pytest.raises(ValueError, match="params is empty"):
        ShardedAdam([], comm=comm)
    with pytest.raises(ValueError, match="algorithm must be 'ring' or 'builtin'"):
        MPIComm(algorithm="tree")
    with pytest.raises(ValueError, match="timeout must be > 0"):
        MPIComm(timeout=0)


def test_a_directory_without_a_manifest_holds_no_checkpoint(comm, tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete sharded checkpoint"):
        ShardedAdam.load(tmp_path, _params(), comm=comm)


def test_a_shard_from_another_save_is_refused(comm, tmp_path):
    opt = ShardedAdam(_params(), backend="numpy", comm=comm)
    opt.step([np.ones((3, 4), np.float32), np.ones(5, np.float32)])
    opt.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    other = tmp_path / "other"
    opt.step([np.ones((3, 4), np.float32), np.ones(5, np.float32)])
    opt.save(other)
    (tmp_path / manifest["shards"][0]).unlink()
    (other / "shard-step000000000002-rank00000-of-00001.npz").rename(
        tmp_path / manifest["shards"][0])
    with pytest.raises(ValueError, match="does not belong to the manifest's checkpoint"):
        ShardedAdam.load(tmp_path, _params(), comm=comm)


def test_checkpoint_for_other_shapes_is_refused(comm, tmp_path):
    ShardedAdam(_params(), backend="numpy", comm=comm).save(tmp_path)
    with pytest.raises(ValueError, match="saved for"):
        load_adam(tmp_path, [np.zeros(12, np.float32), np.zeros(5, np.float32)])


# --- the commands ---------------------------------------------------------------------------
def test_demo_on_two_ranks_ends_with_the_single_process_loss(tmp_path):
    from harness.cli import main

    assert main(["demo", "--ranks", "2", "--steps", "30", "--out", str(tmp_path / "d")]) == 0
    rows = json.loads((tmp_path / "d.json").read_text())
    sharded, same_grads = rows[0], rows[1]
    assert sharded["final_loss"] == same_grads["final_loss"]
    assert same_grads["params_equal_bits"] is True


@pytest.mark.parametrize("ranks", [2, 3])
def test_check_on_several_ranks_passes_and_writes_its_table(ranks, tmp_path):
    from harness.cli import main

    out = tmp_path / "check"
    assert main(["check", "--ranks", str(ranks), "--steps", "3", "--dtypes", "float32",
                 "--out", str(out)]) == 0
    rows = json.loads((tmp_path / "check-sharded.json").read_text())
    assert len(rows) == 5 and all(r["passed"] and r["ranks"] == ranks for r in rows)
    if ranks == 2:
        assert all(r["max_abs_diff"] == 0 for r in rows)


def test_importing_backends_imports_no_mpi():
    code = ("import sys, backends, backends.sharded.adam, backends.sharded.comm; "
            "assert 'mpi4py' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("argv, message", [
    (["plan", "--results", "no/such.csv"], "no/such.csv"),
])
def test_bad_sharded_arguments_get_one_line_and_status_2(argv, message, capsys):
    from harness.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_the_cost_model_by_hand():
    from harness.sharded.plan import predict

    # 1000 params on 4 ranks: shards of 250 at 250 elements/s take 1 s; each collective
    # sends 3/4 x 4000 bytes at 1000 B/s (3 s) plus 3 messages of 0.5 s.
    got = predict(1000, 4, link_bytes_per_s=1000, latency_s=0.5, update_elements_per_s=250)
    assert got == {"update_s": 1.0, "comm_s": 9.0, "step_s": 10.0,
                   "state_bytes_per_rank": 2000, "memory_bytes_per_rank": 10000}
    assert predict(1000, 1, 1000, 0.5, 250)["comm_s"] == 0


def test_the_link_fit_recovers_latency_and_bandwidth():
    import pandas as pd

    from harness.sharded.plan import fit_link

    sizes = np.array([2**20, 2**22, 2**24])
    sent = sizes * 4 / 2  # bytes each of 2 ranks sends per collective
    table = pd.DataFrame({"ranks": 2, "dtype": "float32", "elements": sizes,
                          "shard_elements": sizes // 2,
                          "reduce_scatter_us": (20e-6 + sent / 4e9) * 1e6,
                          "all_gather_us": (20e-6 + sent / 4e9) * 1e6})
    latency, bandwidth = fit_link(table)
    assert latency == pytest.approx(20e-6, rel=1e-6)
    assert bandwidth == pytest.approx(4e9, rel=1e-6)


def _int8_params():
    rng = np.random.default_rng(3)
    return [rng.standard_normal(s).astype(np.float32) for s in [(50, 100), (300,)]]


def _int8_grads(t):
    rng = np.random.default_rng(100 + t)
    return [rng.standard_normal(s).astype(np.float32) for s in [(50, 100), (300,)]]


def _straight_and_resumed(make, comm, tmp_path) -> tuple:
    """(an optimizer from ``make`` stepped 4 times, one saved after 2 steps, loaded from
    the checkpoint and stepped the other 2)."""
    straight, first = make(), make()
    for t in range(4):
        straight.step(_int8_grads(t))
        if t < 2:
            first.step(_int8_grads(t))
    first.save(tmp_path)
    resumed = ShardedAdam.load(tmp_path, [p.copy() for p in first.params], comm=comm)
    for t in range(2, 4):
        resumed.step(_int8_grads(t))
    return straight, resumed


def test_an_int8_checkpoint_resumes_bit_for_bit_and_counts_its_real_bytes(comm, tmp_path):
    """The codes' scales are saved and read back (they were dropped: the checkpoint could
    never be loaded); state_bytes counts 1 byte per element and moment plus 4 per block."""
    straight, resumed = _straight_and_resumed(
        lambda: ShardedAdam(_int8_params(), backend="numba", comm=comm, state_dtype="int8",
                            amsgrad=True), comm, tmp_path)
    assert straight.state_bytes == 3 * (5300 + 4 * -(-5300 // 256))
    assert resumed.config.state_dtype == "int8" and resumed.state.step == 4
    assert all(np.array_equal(a.view(np.uint32), b.view(np.uint32))
               for a, b in zip(straight.params, resumed.params))
    for name, arrays in straight.state.to_dict().items():
        if name != "step":
            mine = resumed.state.to_dict()[name]
            assert all(np.array_equal(a.view(np.uint8), b.view(np.uint8))
                       for a, b in zip(arrays, mine)), name


def test_an_int8_checkpoint_is_not_resharded_silently(comm, tmp_path):
    opt = ShardedAdam(_int8_params(), backend="numpy", comm=comm, state_dtype="int8")
    opt.step(_int8_grads(0))
    opt.save(tmp_path)
    with pytest.raises(ValueError, match="cannot be re-sharded; resume it with "
                                         "ShardedAdam.load on 1 ranks"):
        load_adam(tmp_path, _int8_params())
    with pytest.raises(ValueError, match="saved with state_dtype='int8'"):
        ShardedAdam.load(tmp_path, _int8_params(), comm=comm, state_dtype=None)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "world_size": 2}))
    with pytest.raises(ValueError, match="saved by 2 ranks and resumes on 2 only, not 1"):
        ShardedAdam.load(tmp_path, _int8_params(), comm=comm)
    with pytest.raises(ValueError, match="cannot be re-sharded; save a plain Adam"):
        save_adam(Adam(_int8_params(), backend="numpy", state_dtype="int8"), tmp_path / "b")


class _PaddedOneRank(MPIComm):
    """One rank that pads like two: the copy path (in and out) on one process."""

    def __init__(self):
        super().__init__()
        self.size = 2

    def reduce_scatter(self, sendbuf, recvbuf):
        recvbuf[:] = sendbuf[:recvbuf.size]

    def all_gather(self, buf):
        pass


@pytest.mark.parametrize("layout", ["separate", "flat"])
def test_the_callers_arrays_are_stepped_in_place_as_adam_steps_them(comm, layout):
    """ShardedAdam updates the arrays it was given (zero-copy when they are views of one
    buffer), with a per-step lr, bit for bit as Adam."""
    host = _params()
    if layout == "flat":
        flat, mine = get_backend("numba").flatten(host)
    else:
        mine = [p.copy() for p in host]
    reference = [p.copy() for p in host]
    sharded = ShardedAdam(mine, backend="numba", comm=comm, weight_decay=0.1)
    plain = Adam(reference, backend="numba", weight_decay=0.1)
    for t in range(3):
        g = [np.full(p.shape, t - 0.5, np.float32) for p in host]
        sharded.step(g, lr=1e-2 / (t + 1))
        plain.step(g, lr=1e-2 / (t + 1))
    assert sharded.params is not None and all(a is b for a, b in zip(sharded.params, mine))
    assert all(np.array_equal(a, b) for a, b in zip(mine, reference))
    assert not np.array_equal(mine[0], host[0])
    assert sharded.zero_copy == (layout == "flat")
    if layout == "flat":
        assert np.shares_memory(sharded.flat_params, flat)


def test_the_copy_path_reads_the_callers_shard_each_step():
    """Values the caller writes between steps are the ones stepped (a weight reload)."""
    mine = _params()
    opt = ShardedAdam(mine, backend="numpy", comm=_PaddedOneRank(), lr=0.0)
    assert not opt.zero_copy
    mine[0][...] = 7.0
    opt.step([np.zeros_like(p) for p in mine])
    own = mine[0].reshape(-1)[:opt.shard_len]  # this rank's shard (9 of 17 elements)
    assert opt.shard_len == 9 and np.all(own == 7.0) and opt.seconds["copy"] > 0


def test_cpu_torch_tensors_are_updated_in_place(comm):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    host = _params()
    tensors = [torch.from_numpy(p.copy()) for p in host]
    reference = [p.copy() for p in host]
    opt = ShardedAdam(tensors, backend="numba", comm=comm)
    plain = Adam(reference, backend="numba")
    g = [np.ones_like(p) for p in host]
    opt.step(g)
    plain.step(g)
    assert all(np.array_equal(t.numpy(), r) for t, r in zip(tensors, reference))


def test_params_it_cannot_update_in_place_are_refused(comm):
    """A list or a bfloat16 tensor would be stepped as a copy the caller never sees."""
    with pytest.raises(TypeError, match=r"params\[1\] is list; expected a NumPy array or "
                                        "a CPU torch tensor"):
        ShardedAdam([np.ones(2, np.float32), [1.0, 2.0]], comm=comm)
    torch = pytest.importorskip("torch", reason="torch is not installed")
    with pytest.raises(TypeError, match=r"params\[0\]: .*BFloat16.*; expected float32 or "
                                        "float64"):
        ShardedAdam([torch.ones(2, dtype=torch.bfloat16)], comm=comm)


def test_read_only_params_and_a_bad_lr_are_refused(comm):
    p = _params()
    p[1].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[1\] is read-only; ShardedAdam updates it"):
        ShardedAdam(p, comm=comm)
    mine = _params()
    opt = ShardedAdam(mine, backend="numpy", comm=comm)
    before = [a.copy() for a in mine]
    with pytest.raises(ValueError, match=r"Invalid lr: -1.0"):
        opt.step([np.ones_like(a) for a in mine], lr=-1.0)
    assert all(np.array_equal(a, b) for a, b in zip(mine, before)) and opt.state.step == 0


def test_the_last_step_lr_is_saved_and_resumed(comm, tmp_path):
    opt = ShardedAdam(_params(), backend="numpy", comm=comm, lr=1e-3)
    opt.step([np.ones(s, np.float32) for s in [(3, 4), (5,)]], lr=4e-3)
    opt.save(tmp_path)
    assert read_manifest(tmp_path)["config"]["lr"] == 4e-3
    assert ShardedAdam.load(tmp_path, _params(), comm=comm).config.lr == 4e-3


# --- param groups on one rank ---------------------------------------------------------------
def test_param_groups_on_one_rank_equal_adam_bit_for_bit(comm, tmp_path):
    import sharded_scenarios

    sharded_scenarios.groups_agree(tmp_path, comm)


def _two_groups(params, **second):
    return [{"params": params[:1], "weight_decay": 0.1}, {"params": params[1:], **second}]


@pytest.mark.parametrize("groups, error, message", [
    (lambda p: [{"params": p[:1]}, {"weight_decay": 0.0}], ValueError,
     r"param_groups\[1\] lacks 'params'"),
    (lambda p: _two_groups(p, betas=(0.9, 0.99)), ValueError,
     r"param_groups\[1\] has unknown key 'betas'.*torch's betas are beta1 and beta2"),
    (lambda p: [{"params": p[:1]}, {"params": p}], ValueError,
     r"param_groups\[1\]\['params'\]\[0\] is already in a param group"),
    (lambda p: _two_groups(p, lr=-1.0), ValueError,
     r"param_groups\[1\]\['lr'\]: Invalid lr: -1.0"),
    (lambda p: [{"params": p[:1]}, {"params": {"bias": p[1]}}], TypeError,
     r"param_groups\[1\]\['params'\] must be a list of arrays, got dict"),
])
def test_bad_param_groups_get_adams_errors(comm, groups, error, message):
    for make in (lambda g: Adam(g, backend="numpy"),
                 lambda g: ShardedAdam(g, backend="numpy", comm=comm)):
        with pytest.raises(error, match=message):
            make(groups(_params()))


def test_a_group_changed_to_a_bad_value_is_refused_before_anything_changes(comm):
    mine = _params()
    opt = ShardedAdam(_two_groups(mine), backend="numpy", comm=comm)
    before = [a.copy() for a in mine]
    g = [np.ones_like(a) for a in mine]
    opt.param_groups[1]["eps"] = -1.0
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['eps'\]: Invalid eps"):
        opt.step(g)
    opt.param_groups[1]["eps"] = 1e-8
    opt.param_groups[0]["lr"] = float("nan")
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['lr'\]"):
        opt.step(g)
    opt.param_groups[0]["lr"] = 1e-3
    with pytest.raises(ValueError, match="lr holds 3 values but there are 2 param groups"):
        opt.step(g, lr=[1e-3] * 3)
    assert all(np.array_equal(a, b) for a, b in zip(mine, before))
    assert all(s.step == 0 for s in opt.states)
    assert [gr["lr"] for gr in opt.param_groups] == [1e-3, 1e-3]
    with pytest.raises(AttributeError, match="ShardedAdam.config belongs to a ShardedAdam "
                                             "of one param group; this one has 2"):
        opt.config


def test_mixed_int8_and_float32_groups_resume_bit_for_bit(comm, tmp_path):
    """An int8 group beside a float32 one: each keeps its own state in the checkpoint."""
    def groups(params):
        return [{"params": params[:1], "state_dtype": "int8"}, {"params": params[1:]}]

    straight, resumed = _straight_and_resumed(
        lambda: ShardedAdam(groups(_int8_params()), backend="numba", comm=comm, amsgrad=True),
        comm, tmp_path)
    assert [g["state_dtype"] for g in resumed.param_groups] == ["int8", None]
    assert all(np.array_equal(a.view(np.uint32), b.view(np.uint32))
               for a, b in zip(straight.params, resumed.params))
    for mine, theirs in zip(resumed.states, straight.states):
        for name, arrays in theirs.to_dict().items():
            if name != "step" and arrays is not None:
                assert all(np.array_equal(a, b) for a, b in zip(arrays, mine.to_dict()[name]))
    with pytest.raises(ValueError, match=r"param_groups\[0\] saved with state_dtype='int8'"):
        ShardedAdam.load(tmp_path, _int8_params(), comm=comm, state_dtype=None)


def test_save_adam_refuses_groups_at_different_steps(tmp_path):
    params = _params()
    adam = Adam(params[:1], backend="numpy")
    adam.step([np.ones_like(params[0])])
    adam.add_param_group({"params": params[1:]})
    with pytest.raises(ValueError, match=r"every param group at one step: param_groups\[1\] "
                                         r"is at step 0, param_groups\[0\] at 1"):
        save_adam(adam, tmp_path)


def test_a_step_passes_the_backend_the_same_arrays_each_time(comm):
    """The backends keep their checks by the arrays' identity: a shard piece made anew
    each step would have every array checked again (4x the step time at small sizes)."""
    mine = _params()
    opt = ShardedAdam(_two_groups(mine), backend="numba", comm=comm)
    g = [np.ones_like(a) for a in mine]
    opt.step(g)
    kept = [s.cache["validated"]["key"] for s in opt.states]
    opt.step(g)
    assert [s.cache["validated"]["key"] for s in opt.states] == kept
