"""The harness with int8 state: bytes model, planned cells, and a tiny bench run."""
import pytest

from harness.subjects import collect_subjects
from harness.bench.sweep import SweepConfig, plan_cells, run_sweep
from harness.core.tables import bytes_per_element, state_bytes_per_parameter


@pytest.mark.parametrize("amsgrad, expected, state_bytes", [(False, 16.0625, 2.03125),
                                                            (True, 18.09375, 3.046875)])
def test_int8_bytes_model(amsgrad, expected, state_bytes):
    # p read and written (8), g read (4), each moment's code read and written (2) plus
    # its share of a float32 scale per 256 elements, read and written (8/256)
    assert bytes_per_element("float32", amsgrad, "int8") == expected
    assert state_bytes_per_parameter("float32", amsgrad, "int8") == state_bytes
    assert state_bytes_per_parameter("float32", amsgrad) == (12 if amsgrad else 8)


def test_int8_cells_only_for_backends_with_int8_state():
    cfg = SweepConfig(sizes=[2**12], models=[], dtypes=["float32", "float64"],
                      states=["full", "int8"])
    cells = plan_cells(cfg, collect_subjects(["numpy", "numba-cuda"], peers=False))
    int8 = sorted(c.label for c in cells if c.state == "int8")
    assert int8 == ["numpy[int8]", "roofline[int8]"]
    assert all(c.dtype == "float32" for c in cells if c.state == "int8")


def test_bench_rows_for_int8_beside_full_state(tmp_path):
    cfg = SweepConfig(sizes=[2**13], models=[], repeats=3, max_seconds=0.05,
                      states=["full", "int8"])
    df = run_sweep(cfg, collect_subjects(["numpy"], peers=False), tmp_path / "b",
                   show_progress=False)
    rows = df.set_index("label")
    assert set(rows.index) == {"roofline", "numpy", "roofline[int8]", "numpy[int8]"}
    assert rows.loc["numpy[int8]", "bytes_per_step"] == 2**13 * 16.0625
    assert rows.loc["numpy[int8]", "state_bytes_per_parameter"] == 2.03125
    assert rows.loc["numpy", "state_bytes_per_parameter"] == 8
    assert rows["fraction_of_roofline"].notna().all()


def test_int8_agreement_passes_ours_and_names_refusals():
    from harness.check.int8_agreement import int8_agreement

    df = int8_agreement(["numpy", "numba", "cupy"], steps=3)
    judged = df[df["subject"] != "cupy"]
    assert len(judged) == 10 and judged["within_tolerance"].all()
    assert judged["codes_off_boundary"].sum() == 0
    assert df[df["subject"] == "cupy"]["note"].str.contains("not run|refuses").all()


def test_int8_agreement_fails_a_wrong_rounding(monkeypatch):
    from backends import int8_codec
    from harness.check.int8_agreement import int8_agreement

    monkeypatch.setattr(int8_codec, "V_HALF", 0)  # numpy's v codes truncate, not round
    df = int8_agreement(["numpy"], steps=2)
    assert not df["within_tolerance"].any()
    assert (df["codes_off_boundary"] > 0).all()


def test_digits_demo_with_int8_state_learns_as_well_and_keeps_steps_bounded():
    from harness.demo.digits_int8 import run_int8_demo

    summary, losses = run_int8_demo(steps=200)
    full, int8 = summary.set_index("state").loc[["float32 state", "int8 state"]].itertuples()
    assert abs(full.test_accuracy - int8.test_accuracy) <= 0.005
    bound = (1 - 0.9) / (1 - 0.999) ** 0.5  # Adam's own, about 3.2 lr
    assert int8.worst_step_over_lr <= bound
    assert int8.state_bytes < full.state_bytes / 2
    assert list(losses.columns) == ["step", "float32 state", "int8 state"]


def test_int8_agreement_of_backends_without_int8_state_is_a_table_of_notes():
    from harness.check.int8_agreement import int8_agreement
    from harness.cli.summary import int8_lines

    df = int8_agreement(["cupy"])
    assert "within_tolerance" in df.columns and df["within_tolerance"].isna().all()
    assert int8_lines(df)[0].startswith("int8 state cupy: ")


def test_int8_cells_for_a_gpu_backend_with_a_gpu_roofline(monkeypatch):
    """A GPU backend with int8 state (here a stand-in: no GPU) gets float32 int8 cells
    and the int8 roofline on its device, as ``adam-bench gpu-report`` sweeps them."""
    import backends
    from harness.subjects import Subject

    class GpuWithInt8:
        supports_int8_state = True

    monkeypatch.setattr(backends, "get_backend", lambda name: GpuWithInt8())
    gpu = Subject("numba-cuda", "backend", "cuda", make=lambda *a, **k: None)
    cfg = SweepConfig(sizes=[2**12], models=[], dtypes=["float32", "float64"],
                      states=["full", "int8"])
    int8 = sorted((c.label, c.device, c.dtype) for c in plan_cells(cfg, [gpu])
                  if c.state == "int8")
    assert int8 == [("numba-cuda[int8]", "cuda", "float32"),
                    ("roofline[int8]", "cuda", "float32")]
    GpuWithInt8.supports_int8_state = False
    assert not [c for c in plan_cells(cfg, [gpu]) if c.state == "int8" and c.subject]


def test_simulated_int8_agreement_says_why_it_did_not_run():
    from harness.check.int8_agreement import simulated_int8_agreement

    row = simulated_int8_agreement("no-such-backend", steps=1).iloc[0]
    assert row["subject"] == "no-such-backend (simulated)"
    assert row["note"].startswith("not run: the simulator failed:")
    assert "no-such-backend" in row["note"]
