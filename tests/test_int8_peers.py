"""The int8 peers (bitsandbytes, torchao) in the bench's int8 state rows: where they are
planned, the state bytes read from their own tensors, the table of their step time over
numba[int8]'s, and a peer that cannot load."""
import importlib.util

import numpy as np
import pandas as pd
import pytest

from backends import AdamConfig
from harness.cli import main
from harness.subjects.peers import PEERS, Peer, load_peer
from harness.core.steppers import Stepper
from harness.subjects import Subject, collect_subjects
from harness.cli.summary import verdict_lines, versus_lines
from harness.bench.sweep import SweepConfig, plan_cells, run_sweep
from harness.core.tables import add_derived, versus


class _Idle(Stepper):
    """A peer stepper that does nothing and says it holds 3 bytes of state per element."""

    kind, device = "peer", "cpu"

    def __init__(self, params, cfg, **layout):
        self.elements = sum(p.size for p in params)

    def prepare(self, grads):
        return grads

    def step(self, prepared):
        pass

    def state_nbytes(self):
        return 3 * self.elements


def _subjects():
    """Our numpy backend, a full-state peer and an int8 peer (stand-ins: planning reads
    only their ``state``)."""
    return collect_subjects(["numpy"], peers=False) + [
        Subject("fp32-peer", "peer", "cpu", _Idle),
        Subject("int8-peer", "peer", "cpu", _Idle, state="int8")]


def _labels(cells, state):
    return sorted(c.label for c in cells if c.state == state)


def test_the_int8_peers_declare_int8_state():
    assert {p.label for p in PEERS if p.state == "int8"} == {"bnb-adam8bit",
                                                             "torchao-adamw8bit"}


def test_with_state_int8_int8_peers_are_in_int8_cells_not_fp32_cells():
    cfg = SweepConfig(sizes=[2**12], models=[], dtypes=["float32", "float64"],
                      states=["full", "int8"])
    cells = plan_cells(cfg, _subjects())
    assert _labels(cells, "int8") == ["int8-peer[int8]", "numpy[int8]", "roofline[int8]"]
    assert _labels(cells, "full") == sorted(["roofline", "numpy", "fp32-peer"] * 2)
    assert all(c.dtype == "float32" for c in cells if c.state == "int8")


def test_a_plain_bench_keeps_int8_peers_in_their_own_int8_rows():
    """Without --state int8 our backends run fp32 state only, and the int8 peers still
    get rows, in their own format, beside the int8 roofline."""
    cells = plan_cells(SweepConfig(sizes=[2**12], models=[]), _subjects())
    assert _labels(cells, "int8") == ["int8-peer[int8]", "roofline[int8]"]
    assert _labels(cells, "full") == ["fp32-peer", "numpy", "roofline"]


def test_the_state_bytes_column_is_what_the_stepper_holds(tmp_path):
    cfg = SweepConfig(sizes=[2**12], models=[], repeats=3, max_seconds=0.01)
    df = run_sweep(cfg, _subjects(), tmp_path / "b", show_progress=False).set_index("label")
    assert df.loc["int8-peer[int8]", "state_bytes_per_parameter"] == 3  # not the model's 2.03
    assert df.loc["fp32-peer", "state_bytes_per_parameter"] == 3  # not the model's 8
    assert df.loc["numpy", "state_bytes_per_parameter"] == 8  # float32 m and v, read back
    assert df.loc["roofline[int8]", "state_bytes_per_parameter"] == 2.03125  # the model


def test_an_unavailable_int8_peer_is_an_int8_row_with_the_install_command(tmp_path):
    missing = load_peer(Peer("missing8", "no_such_adam8bit_adapter", ("no_such_adam8bit",),
                             install="pip install no-such-adam8bit", state="int8"))
    cfg = SweepConfig(sizes=[2**12], models=[], repeats=3, max_seconds=0.01)
    df = run_sweep(cfg, [missing], tmp_path / "b", show_progress=False).set_index("label")
    row = df.loc["missing8[int8]"]
    assert row["state"] == "int8" and np.isnan(row["seconds_median"])
    assert row["note"].startswith("skipped: unavailable: ModuleNotFoundError")
    assert row["note"].endswith("(pip install no-such-adam8bit)")


def _row(label, state, seconds, roofline_seconds, elements=4096, kind="x"):
    return {"label": label, "state": state, "seconds_median": seconds, "elements": elements,
            "roofline_seconds": roofline_seconds, "workload": "flat", "amsgrad": False,
            "dtype": "float32", "device": "cpu", "kind": kind}


def test_versus_int8_is_peer_time_over_numba_int8_time_with_the_drift_taken_out():
    """By hand: at 4096 the int8 roofline timed beside the peer took twice as long as the
    one beside numba[int8] (the machine was slower then), so the peer's 200 us over
    numba[int8]'s 10 us counts as 20 / 2 = 10; at 2^20 the rooflines agree: 5000 / 400 =
    12.5. The fp32 rows (a 1000x slower full-state peer) stay out of this table."""
    df = add_derived(pd.DataFrame([
        _row("numba[int8]", "int8", 10e-6, 4e-6), _row("bnb[int8]", "int8", 200e-6, 8e-6),
        _row("numba[int8]", "int8", 400e-6, 300e-6, 2**20),
        _row("bnb[int8]", "int8", 5000e-6, 300e-6, 2**20),
        _row("numba", "full", 10e-6, 9e-6), _row("slow", "full", 10e-3, 9e-6)]))
    table = versus(df, state="int8").set_index("elements")
    assert list(table.columns) == ["workload", "dtype", "amsgrad", "roofline_gb_per_s",
                                   "numba[int8]_us", "numba[int8]_of_roofline",
                                   "bnb[int8] / numba[int8]"]
    assert table.loc[4096, "bnb[int8] / numba[int8]"] == pytest.approx(10)
    assert table.loc[2**20, "bnb[int8] / numba[int8]"] == pytest.approx(12.5)
    assert table.loc[4096, "numba[int8]_us"] == pytest.approx(10)
    full = versus(df).set_index("elements")
    assert list(full.columns)[-1] == "slow / numba" and len(full) == 1
    assert versus_lines(table.reset_index(), "numba[int8]", "x.md") == [
        "against numba[int8]: x.md",
        "  smallest time over numba[int8]'s, flat sizes: bnb[int8] 10.0"]


def test_verdicts_compare_numba_int8_with_the_best_int8_peer_only():
    """Fractions of the roofline by hand: numba 0.9, torch-fused 0.5 (fp32 rows);
    numba[int8] 0.6, bnb[int8] 0.02 (int8 rows). vs best peer: 0.9 / 0.5 = 1.8 for numba,
    0.6 / 0.02 = 30 for numba[int8] (not 0.6 / 0.5 against an fp32 peer)."""
    df = add_derived(pd.DataFrame([
        _row("numba", "full", 10e-6, 9e-6, kind="backend"),
        _row("torch-fused", "full", 10e-6, 5e-6, kind="peer"),
        _row("torch-forloop", "full", 10e-6, 1e-6, kind="peer"),
        _row("numba[int8]", "int8", 10e-6, 6e-6, kind="backend"),
        _row("bnb[int8]", "int8", 100e-6, 2e-6, kind="peer")]))
    lines = verdict_lines(None, df)
    assert lines[-2:] == ["best peer: 2^12 torch-fused", "best peer [int8]: 2^12 bnb[int8]"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[5:-2]}
    assert rows["numba"] == ["0.90", "1.80"]
    assert rows["numba[int8]"] == ["0.60", "30.0"]
    assert rows["bnb[int8]"] == ["0.02", "-"]


def _installed(*modules):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install -e '.[peers]')")


@pytest.mark.parametrize("label, module, maps, extra", [
    ("bnb-adam8bit", "bitsandbytes", 2, 0),  # one pair of maps shared by every tensor
    ("torchao-adamw8bit", "torchao", 4, 3 * 4),  # a pair per int8 tensor; a float32 step
])                                                # count per tensor
def test_int8_peer_state_bytes_are_read_from_its_tensors(label, module, maps, extra):
    """By hand: tensors of 8192 and 4096 elements keep uint8 m and v codes and a float32
    absmax per 256 elements for each; the 100-element tensor keeps float32 m and v; each
    map (signed for m, unsigned for v) is 256 float32 entries, counted once however many
    state entries share it."""
    _installed("torch", module)
    subject = load_peer(next(p for p in PEERS if p.label == label))
    params = [np.ones(n, np.float32) for n in (8192, 4096, 100)]
    stepper = subject.make(params, AdamConfig())
    stepper.step(stepper.prepare(params))
    codes, scales, small = 2 * (8192 + 4096), 2 * 4 * (32 + 16), 2 * 4 * 100
    assert stepper.state_nbytes() == codes + scales + maps * 4 * 256 + small + extra


def test_cli_bench_state_int8_writes_the_table_against_numba_int8(tmp_path, capsys):
    _installed("torch", "bitsandbytes")
    out = tmp_path / "bench"
    assert main(["bench", "--sizes", "2^12", "--backends", "numba", "--peers",
                 "bnb-adam8bit,torch-forloop", "--state", "int8", "--models", "none",
                 "--repeats", "3", "--max-seconds", "0.01", "--no-plot", "--quiet",
                 "--out", str(out)]) == 0
    assert f"against numba[int8]: {out}-versus-numba-int8.md" in capsys.readouterr().out
    int8 = pd.read_csv(f"{out}-versus-numba-int8.csv")
    assert int8.filter(like=" / ").columns.tolist() == ["bnb-adam8bit[int8] / numba[int8]"]
    assert (int8["bnb-adam8bit[int8] / numba[int8]"] > 0).all()
    full = pd.read_csv(f"{out}-versus-numba.csv")
    assert full.filter(like=" / ").columns.tolist() == ["torch-forloop / numba"]
    bnb = pd.read_csv(out.with_suffix(".csv")).set_index("label").loc["bnb-adam8bit[int8]"]
    assert bnb["state"] == "int8"
    assert bnb["state_bytes"] == 2 * 4096 + 2 * 4 * 16 + 2 * 4 * 256  # codes, absmax, maps
