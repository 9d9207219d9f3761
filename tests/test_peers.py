"""The peers (harness.subjects.peers): each adapter against the reference, options a peer does not
offer, a peer that cannot be imported or built, and no compilation inside timed steps."""
import importlib.util

import numpy as np
import pandas as pd
import pytest

from backends import AdamConfig
from harness.subjects import peers as peer_registry
from harness.bench import sweep
from harness.check.agreement import OPTION_SETS, run_with_reference
from harness.check import run_check
from harness.cli import main
from harness.check.edge_cases import EDGE_CASES, run_edge_case
from harness.subjects.peers import PEERS, Peer, collect_peers, load_peer, peer_labels
from harness.core.problems import random_problem
from harness.core.steppers import Stepper, UnsupportedOption
from harness.subjects import Subject, collect_subjects
from harness.bench.workloads import flat_workload

SMALL_SHAPES = [(1,), (17, 5), (300,)]
FULL = [p for p in PEERS if p.state == "full"]
EIGHT_BIT = [p for p in PEERS if p.state == "int8"]
_LOADED = {}


def _loaded(peer: Peer) -> Subject:
    """The peer's subject, loaded once; skipped (with the install command) only when its
    library is not installed, so an adapter that breaks with its library present fails."""
    for module in peer.requires:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed ({peer.install})")
    if peer.label not in _LOADED:
        _LOADED[peer.label] = load_peer(peer)
    subject = _LOADED[peer.label]
    assert subject.make is not None, subject.reason
    return subject


#: What a peer refuses (UnsupportedOption naming it), by option set or dtype.
REFUSED = {("deepspeed-cpu-adam", "amsgrad"): "amsgrad", ("deepspeed-cpu-adam", "maximize"):
           "maximize", ("deepspeed-cpu-adam", "float64"): "float64", ("optax", "amsgrad"):
           "amsgrad"}
#: torch-compile in float64 is a known difference, asserted by its own test below.
AGREEMENT_CASES = [(peer, options, dtype) for peer in FULL for options in OPTION_SETS
                   for dtype in ("float32", "float64")
                   if (peer.label, dtype) != ("torch-compile", "float64")]


@pytest.mark.parametrize("peer, options, dtype", AGREEMENT_CASES,
                         ids=[f"{p.label}-{o}-{d}" for p, o, d in AGREEMENT_CASES])
def test_full_precision_peer_agrees_with_the_reference_or_refuses(peer, options, dtype):
    subject = _loaded(peer)
    cfg = AdamConfig(**OPTION_SETS[options])
    problem = random_problem(SMALL_SHAPES, dtype, steps=3, seed=9)
    refused = REFUSED.get((peer.label, options)) or REFUSED.get((peer.label, dtype))
    if refused:
        with pytest.raises(UnsupportedOption, match=refused):
            subject.make(problem.copy_params(), cfg)
        return
    trajectory = run_with_reference(subject.make, problem, cfg)
    assert trajectory.errors.within_tolerance, trajectory.errors
    assert not np.array_equal(trajectory.params[1], problem.params[1])


@pytest.mark.parametrize("peer", EIGHT_BIT, ids=[p.label for p in EIGHT_BIT])
def test_int8_peer_steps_near_the_reference(peer):
    """No full-precision verdict, but a step is an Adam step: with int8 moments every
    parameter lands within a tenth of lr of the float64 reference after one step (each
    element moves about lr), including the 8192-element tensor whose moments are int8."""
    subject = _loaded(peer)
    cfg = AdamConfig()
    problem = random_problem(SMALL_SHAPES + [(8192,)], "float32", steps=1, seed=3)
    trajectory = run_with_reference(subject.make, problem, cfg)
    for p0, p, g in zip(problem.params, trajectory.params, problem.grads[0]):
        expected = p0.astype(np.float64) - cfg.lr * np.sign(g)  # step 1: m_hat/sqrt(v_hat) = sign(g)
        np.testing.assert_allclose(p, expected, rtol=0, atol=0.1 * cfg.lr)


@pytest.mark.parametrize("label, cfg", [
    ("bnb-adam8bit", AdamConfig(weight_decay=0.1)),
    ("bnb-adam8bit", AdamConfig(amsgrad=True)),
    ("torchao-adamw8bit", AdamConfig(maximize=True)),
    ("torchao-adamw8bit", AdamConfig(amsgrad=True)),
])
def test_an_option_an_int8_peer_lacks_is_refused_not_faked(label, cfg):
    subject = _loaded(next(p for p in PEERS if p.label == label))
    with pytest.raises(UnsupportedOption):
        subject.make([np.ones(4, np.float32)], cfg)


def test_torch_compile_does_not_compile_again_after_construction():
    subject = _loaded(next(p for p in PEERS if p.label == "torch-compile"))
    problem = random_problem(SMALL_SHAPES, "float32", steps=4, seed=1)
    stepper = subject.make(problem.copy_params(), AdamConfig())
    assert stepper.compile_seconds > 0
    compiled = stepper.compile_count()
    for grads in problem.grads:  # new gradient tensors every step, as in training
        stepper.step(stepper.prepare(grads))
    assert stepper.compile_count() == compiled


def test_known_difference_torch_compile_float64_bias_corrections():
    """Compiled, torch's Adam keeps its step count as a tensor of the default dtype
    (float32) and computes the bias corrections from it in float32; float64 params are then
    off the float64 reference by far more than float64 rounding (1e7x the tolerance here).
    With torch.set_default_dtype(torch.float64) it agrees. README documents it."""
    subject = _loaded(next(p for p in PEERS if p.label == "torch-compile"))
    problem = random_problem([(300,)], "float64", steps=3, seed=0)
    errors = run_with_reference(subject.make, problem, AdamConfig()).errors
    assert errors.worst_ratio > 1e3 and errors.max_abs < 1e-6, errors


def test_known_difference_inf_gradient_makes_torch_first_moment_nan():
    """torch updates m with lerp (m + w*(g - m)): an inf gradient followed by any finite one
    gives inf - inf = NaN, where beta1*m + (1-beta1)*g keeps inf. Parameters are NaN in both
    (inf/inf), so training is equally dead; README documents the difference."""
    subject = _loaded(next(p for p in PEERS if p.label == "torch-fused"))
    case = next(c for c in EDGE_CASES if c.name == "nan-inf-grad")
    passed, why, trajectory = run_edge_case(case, subject.make, np.float32)
    assert not passed and "exp_avg" in why
    assert case.check(case.build(np.dtype(np.float32)), trajectory.params,
                      trajectory.moments, case.cfg) == ""


BROKEN = [Peer("missing-lib", "no_such_adam_library_adapter", ("no_such_adam_library",),
               install="pip install no-such-adam"),
          Peer("build-fails", "broken_peer", ("broken_peer",))]


def test_a_peer_that_cannot_import_or_build_is_a_row_with_the_reason():
    missing, build_fails = (load_peer(p) for p in BROKEN)
    assert missing.make is None and build_fails.make is None
    assert missing.reason.startswith("unavailable: ModuleNotFoundError")
    assert "(pip install no-such-adam)" in missing.reason
    assert "ninja: build stopped" in build_fails.reason


def test_check_goes_on_past_a_broken_peer(monkeypatch):
    monkeypatch.setattr(peer_registry, "PEERS", tuple(BROKEN))
    subjects = collect_subjects(["numpy"], peers=True)
    report = run_check(subjects, dtypes=["float64"], steps=3)
    assert set(report.skipped["subject"]) == {"missing-lib", "build-fails"}
    assert set(report.agreement["subject"]) == {"numpy"} and report.ok


def _fails_at_l2(params, cfg):
    if cfg.weight_decay and not cfg.decoupled:
        raise RuntimeError("library bug\nsecond line")
    return _loaded(next(p for p in PEERS if p.label == "torch-forloop")).make(params, cfg)


def test_check_shows_a_peer_failing_at_one_option_and_goes_on():
    subjects = collect_subjects(["numpy"], peers=False) + [
        Subject("flaky", "peer", "cpu", _fails_at_l2)]
    report = run_check(subjects, dtypes=["float32"], steps=3)
    flaky = report.agreement[report.agreement.subject == "flaky"].set_index("options")
    assert flaky.loc["l2", "note"] == "failed: RuntimeError: library bug"
    assert flaky.drop(index="l2")["within_tolerance"].all() and report.ok


def test_cli_check_without_the_peers_libraries_names_the_install(tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.setattr(peer_registry, "PEERS", tuple(BROKEN))
    status = main(["check", "--steps", "2", "--backends", "numpy", "--dtypes", "float32",
                   "--quiet", "--verbose", "--out", str(tmp_path / "check")])
    out = capsys.readouterr().out
    assert status == 0 and "check: PASS" in out
    assert "unavailable: ModuleNotFoundError" in out and "(pip install no-such-adam)" in out


def test_unknown_peer_label_is_refused():
    with pytest.raises(ValueError, match="Unknown peer.*known peers: torch-forloop"):
        collect_peers(["torch-fast"])
    assert peer_labels()[:3] == ["torch-forloop", "torch-foreach", "torch-fused"]


class _Idle(Stepper):
    """A peer stepper that does nothing (the sweep only times it)."""

    label, kind, device = "idle", "peer", "cpu"

    def __init__(self, params, cfg, **layout):
        pass

    def prepare(self, grads):
        return grads

    def step(self, prepared):
        pass


class _CompilesEveryStep(_Idle):
    """The mutant of a cached compile: its compiler runs again at each step."""

    compiled = 0

    def step(self, prepared):
        type(self).compiled += 1

    def compile_count(self):
        return self.compiled


def _idle_without_amsgrad(params, cfg, **layout):
    if cfg.amsgrad:
        raise UnsupportedOption("amsgrad: not here")
    return _Idle(params, cfg)


def test_sweep_refuses_a_timing_that_includes_compilation():
    subject = Subject("recompiler", "peer", "cpu", _CompilesEveryStep)
    cell = sweep.Cell(flat_workload(1024), subject, "cpu", "float32", False)
    with pytest.raises(RuntimeError, match="recompiler compiled inside timed steps"):
        sweep._measure(cell, sweep.SweepConfig(repeats=3, max_seconds=0.01))


def test_sweep_notes_an_option_a_peer_lacks(tmp_path):
    subjects = [Subject("no-amsgrad", "peer", "cpu", _idle_without_amsgrad)]
    cfg = sweep.SweepConfig(sizes=[1024], models=[], amsgrad=True, repeats=3, max_seconds=0.01)
    df = sweep.run_sweep(cfg, subjects, tmp_path / "bench", show_progress=False)
    peer = df[df.label == "no-amsgrad"].set_index("amsgrad")
    assert peer.loc[True, "note"] == "skipped: not supported: amsgrad: not here"
    assert peer.loc[False, "seconds_median"] > 0


def test_cli_check_shows_chosen_peers_and_the_int8_block(tmp_path, capsys):
    status = main(["check", "--steps", "3", "--backends", "numpy", "--peers",
                   "optax,bnb-adam8bit", "--dtypes", "float32", "--quiet", "--verbose",
                   "--out", str(tmp_path / "check")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "## int8 peers against the float64 reference" in out
    assert "  int8 peers (apart, no verdict): bnb-adam8bit: " in out  # the terse line too
    int8_peers = pd.read_csv(tmp_path / "check-int8-peers.csv")
    assert set(int8_peers.subject) == {"bnb-adam8bit"} and "within_tolerance" not in int8_peers
    assert set(pd.read_csv(tmp_path / "check.csv").subject) == {"numpy", "optax"}


def test_cli_refuses_an_unknown_peer_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--peers", "optax,torch-fast"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --peers: unknown peer 'torch-fast'" in err


def test_cli_bench_writes_the_table_against_numba(tmp_path):
    out_stem = tmp_path / "bench"
    assert main(["bench", "--sizes", "2^10", "--backends", "numba", "--peers", "optax",
                 "--models", "gpt2-small", "--model-elements", "4096", "--repeats", "3",
                 "--max-seconds", "0.02", "--no-plot", "--quiet", "--out", str(out_stem)]) == 0
    versus = pd.read_csv(tmp_path / "bench-versus-numba.csv").set_index("workload")
    separate_tensors = [w for w in versus.index if not w.endswith("+flat-buffer")]
    assert (versus.loc[separate_tensors, "optax / numba"] > 0).all()  # flat 2^10 and the model
    assert any(w.startswith("gpt2-small") for w in separate_tensors)
    bench = pd.read_csv(out_stem.with_suffix(".csv"))
    optax = bench[(bench.label == "optax") & bench.seconds_median.notna()]
    assert len(optax) == 3 and (optax.compile_seconds > 0).all()  # 2^10, 4096 and gpt2
