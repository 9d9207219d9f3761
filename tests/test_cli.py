"""adam-bench as a user runs it: each subcommand, its files, and its exit status."""
import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from backends import register_backend, unregister_backend
from backends.auto import user_table_path
from harness.bench import sweep
from harness.cli import build_parser, cmd_tour, main

from broken_backend import NoBiasCorrection


@pytest.fixture
def broken_registered():
    register_backend("broken", NoBiasCorrection)
    yield
    unregister_backend("broken")


def test_backends_lists_every_backend(capsys):
    assert main(["backends"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "backends:"
    for name, device in (("python", "cpu"), ("numpy", "cpu"), ("numba", "cpu"),
                         ("numba-cuda", "cuda"), ("cupy", "cuda")):
        row = next(line.split() for line in lines if line.split()[0] == name)
        assert row[1:3] == [device, "built-in"]
        assert row[3] in ("ready", "unavailable:")
    assert main(["backends", "--verbose"]) == 0
    assert "| numba-cuda | cuda     |" in capsys.readouterr().out


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
    assert "  broken float64 plain: p off the float64 reference by" in out
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


def test_bench_updates_the_table_that_auto_and_select_read(tmp_path, capsys):
    assert not user_table_path().exists()
    main(BENCH + ["--out", str(tmp_path / "bench")])
    out = capsys.readouterr().out
    assert f'backend="auto" reads {user_table_path()}' in out
    cached = pd.read_csv(user_table_path())
    assert set(cached["label"]) == {"numpy", "numba", "python"}
    assert (cached["workload"] == "flat").all() and cached["seconds_median"].notna().all()
    assert main(["select", "--sizes", "4096"]) == 0
    assert "fastest measured" in capsys.readouterr().out


# cupy: without a GPU its long "not run" reason must be cut to the width; torch's three
# Adams stand for the peers (the compiled ones would add minutes)
TOUR_OPTIONS = {"check": ["--steps", "3", "--backends", "python,numpy,numba,cupy", "--quiet",
                          "--peers", "torch-forloop,torch-foreach,torch-fused"],
                "bench": BENCH[1:] + ["--no-plot"]}


def tour(tmp_path, *flags, options=TOUR_OPTIONS):
    args = build_parser().parse_args(list(flags))
    args.tour_options = {name: step + ["--out", str(tmp_path / name)]
                         for name, step in options.items()}
    return cmd_tour(args)


def test_the_tour_fits_two_screens_and_ends_with_verdicts(tmp_path, capsys, monkeypatch):
    short = Path(tempfile.mkdtemp(prefix="t"))  # the tour prints paths; keep them short
    monkeypatch.setenv("XDG_CACHE_HOME", str(short / "cache"))
    assert tour(short) == 0
    shutil.rmtree(short)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 100 and max(map(len, lines)) <= 100, "\n".join(lines)
    assert not any(line.startswith("|") for line in lines)  # no Markdown tables
    verdicts = lines[lines.index(next(x for x in lines if x.startswith("subject "))) + 2:-1]
    assert lines[-1] == ("vs best peer: no peer measured; to compare with torch, DeepSpeed, "
                         "optax: pip install -e '.[peers]'")  # the bench ran --no-peers
    names = [v.split()[0] for v in verdicts if not v.startswith("cupy ")]  # a GPU's cupy
    assert names == ["python", "numpy", "numba", "torch-forloop", "torch-foreach",
                     "torch-fused"]
    numba = verdicts[2].split()
    assert numba[1] == "agrees" and float(numba[2]) <= 1
    assert len(numba) == 3 + 2  # fraction of roofline at 2^10, 2^12; no peer to be over


def test_the_verbose_tour_prints_the_full_tables(tmp_path, capsys):
    small = {"check": ["--steps", "2", "--backends", "numpy", "--no-peers", "--quiet"],
             "bench": ["--sizes", "2^10", "--backends", "numpy", "--no-peers", "--models", "none",
                       "--repeats", "3", "--max-seconds", "0.02", "--quiet", "--no-plot"]}
    assert tour(tmp_path, "--verbose", options=small) == 0
    out = capsys.readouterr().out
    for title in ("## Backends", "## Agreement with the float64 reference",
                  "## Edge cases", "## Throughput"):
        assert title in out
    assert out.rstrip().splitlines()[-2].startswith("numpy ")


def test_a_first_run_says_in_one_line_how_to_get_the_peers(tmp_path, capsys):
    from dataclasses import replace

    from harness.check import run_check
    from harness.subjects.peers import PEERS
    from harness.subjects import Subject, collect_subjects
    from harness.cli.summary import check_lines, verdict_lines

    missing = [Subject(label, "peer", "cpu", None, "unavailable: ModuleNotFoundError: No "
                       "module named 'torch' (pip install -e '.[peers]')")
               for label in ("torch-forloop", "torch-fused", "optax")]
    report = run_check(collect_subjects(["numpy"], peers=False) + missing, steps=2,
                       dtypes=("float64",), options=("plain",), edge_cases=(), bad_input=())
    lines = check_lines(report)
    peers = [line for line in lines if "peers" in line and "not installed" in line]
    assert peers == ["  peers not installed: torch-forloop, torch-fused, optax "
                     "(pip install -e '.[peers]')"]
    every = [Subject(p.label, "peer", "cpu", None, "unavailable") for p in PEERS]
    assert [line for line in check_lines(replace(report, skipped=run_check(
        every, dtypes=(), options=(), edge_cases=(), bad_input=()).skipped))
            if "not installed" in line] == [
        f"  {len(every)} peers not installed (pip install -e '.[peers]'; --verbose: which, "
        "and why)"]
    main(BENCH + ["--no-plot", "--out", str(tmp_path / "bench")])
    verdicts = verdict_lines(report, pd.read_csv(tmp_path / "bench.csv"))
    assert "vs best peer" not in verdicts[3]
    assert verdicts[-1].endswith("optax: pip install -e '.[peers]'")


def test_the_gpu_emulation_is_checked_only_when_asked(tmp_path):
    check = ["check", "--steps", "2", "--backends", "numpy", "--no-peers", "--dtypes",
             "float64", "--quiet", "--out", str(tmp_path / "check")]
    assert main(check) == 0
    assert set(pd.read_csv(tmp_path / "check.csv")["subject"]) == {"numpy"}
    assert main(check + ["--gpu-emulation"]) == 0
    assert set(pd.read_csv(tmp_path / "check.csv")["subject"]) == {
        "numpy", "numba-cuda (emulated)", "cupy (emulated)"}


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
