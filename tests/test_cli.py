"""adam-bench as a user runs it: each subcommand, its files, and its exit status."""
import json

import pandas as pd
import pytest

from backends import registry
from harness import sweep
from harness.cli import main


@pytest.fixture
def broken_registered(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "broken", ("broken_backend", "NoBiasCorrection",
                                                       "cpu"))


def test_backends_lists_every_backend(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    for name in ("python", "numpy", "numba", "numba-cuda", "cupy"):
        assert f"| {name}" in out


def test_check_passes_for_our_backends(tmp_path, capsys):
    status = main(["check", "--steps", "5", "--backends", "numpy,numba", "--no-peers",
                   "--quiet", "--out", str(tmp_path / "check")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "check: PASS" in out
    table = pd.read_csv(tmp_path / "check.csv")
    assert set(table["subject"]) == {"numpy", "numba"}
    assert table["within_tolerance"].all()
    assert (tmp_path / "check-edge-cases.md").exists()


def test_check_fails_a_wrong_backend(tmp_path, capsys, broken_registered):
    status = main(["check", "--steps", "5", "--backends", "numpy,broken", "--no-peers",
                   "--dtypes", "float64", "--quiet", "--out", str(tmp_path / "check")])
    out = capsys.readouterr().out
    assert status == 1
    assert "check: FAIL" in out
    table = pd.read_csv(tmp_path / "check.csv")
    assert not table[table.subject == "broken"]["within_tolerance"].any()
    assert table[table.subject == "numpy"]["within_tolerance"].all()


BENCH = ["bench", "--sizes", "2^10,2^12", "--backends", "numpy,numba,python", "--no-peers",
         "--models", "gpt2-small", "--model-elements", "4096", "--repeats", "3",
         "--max-seconds", "0.02", "--python-max-size", "1024", "--quiet"]


def test_bench_writes_tables_and_plot(tmp_path, capsys):
    out_stem = tmp_path / "bench"
    assert main(BENCH + ["--out", str(out_stem)]) == 0
    df = pd.read_csv(out_stem.with_suffix(".csv"))
    for suffix in (".json", ".md", ".png"):
        assert out_stem.with_suffix(suffix).exists()
    measured = df[df.seconds_median.notna()]
    assert set(measured.label) == {"roofline", "numpy", "numba", "python"}
    assert (measured.fraction_of_roofline > 0).all()
    skipped = df[df.label == "python"].note.dropna()
    assert any("pure Python skipped above 1024" in n for n in skipped)
    model = df[df.workload.str.startswith("gpt2-small")]
    assert (model.tensors == 148).all() and model.list_overhead.notna().any()
    for column in ("cpu", "cores", "v_numpy", "machine"):
        assert df[column].notna().all()


def test_bench_resume_measures_only_missing_cells(tmp_path, monkeypatch):
    out_stem = tmp_path / "bench"
    real = sweep._measure
    calls = []

    def dies_after_four(cell, cfg):
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        calls.append(cell.label)
        return real(cell, cfg)

    monkeypatch.setattr(sweep, "_measure", dies_after_four)
    with pytest.raises(KeyboardInterrupt):
        main(BENCH + ["--out", str(out_stem)])
    partial = pd.read_csv(out_stem.with_suffix(".csv"))  # whole rows of the cells done
    assert len(partial) >= 4

    calls.clear()
    monkeypatch.setattr(sweep, "_measure", lambda cell, cfg: calls.append(cell.label)
                        or real(cell, cfg))
    main(BENCH + ["--out", str(out_stem), "--resume"])
    full = pd.read_csv(out_stem.with_suffix(".csv"))
    measured_before, measured_after = (t.seconds_median.notna().sum() for t in (partial, full))
    assert len(calls) == measured_after - measured_before
    assert not full.duplicated(subset=sweep.CELL_KEY).any()


def test_select_prints_one_line(tmp_path, capsys):
    main(BENCH + ["--out", str(tmp_path / "bench")])
    capsys.readouterr()
    assert main(["select", "--sizes", "4096", "--results", str(tmp_path / "bench.csv")]) == 0
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "fastest measured" in out
    assert main(["select", "--model", "resnet50", "--scale", "0.01", "--results",
                 str(tmp_path / "bench.csv")]) == 0


def test_report_turns_benchmark_json_into_tables(tmp_path, capsys):
    stats = {"median": 2e-6, "min": 1.9e-6, "iqr": 1e-7, "rounds": 10}
    info = {"kind": "backend", "device": "cpu", "workload": "flat", "dtype": "float32",
            "amsgrad": False, "elements": 4096, "tensors": 1}
    data = {"datetime": "2026-11-25", "machine_info": {"cpu": {"brand_raw": "test cpu"}},
            "benchmarks": [{"name": f"test[{label}]", "stats": stats,
                            "extra_info": {**info, "label": label}}
                           for label in ("roofline", "numba")]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    assert main(["report", str(path), "--out", str(tmp_path / "report")]) == 0
    df = pd.read_csv(tmp_path / "report.csv")
    assert df.set_index("label").fraction_of_roofline["numba"] == pytest.approx(1.0)
    assert (tmp_path / "report.png").exists()


def test_report_refuses_to_overwrite_its_input(tmp_path, capsys):
    path = tmp_path / "bench.json"
    path.write_text("{}")
    assert main(["report", str(path), "--out", str(tmp_path / "bench")]) == 2
    assert path.read_text() == "{}"
