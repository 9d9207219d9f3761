"""adam-bench compare: the ratio, its interval and test, the regression gate, the runs'
metadata, and the one-line refusals. Expected values come from outside the code: exact
ratios built into the samples, a brute-force enumeration of U, the published
Mann-Whitney critical value."""
import importlib
import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.core import machine as harness_machine
from harness.cli import main
from harness.bench.compare import _null_cdf, compare_runs, load_run, ratio_interval
from harness.core.timing import format_repeats

RNG = np.random.default_rng(7)
#: 15 repeats of a 10 us step with 2% noise: a bench cell's default repeats.
BASE = 1e-5 * RNG.lognormal(0, 0.02, 15)


def test_an_exact_ratio_is_found_exactly():
    ratio, low, high, p = ratio_interval(BASE, 1.25 * BASE)
    assert ratio == pytest.approx(1.25, rel=1e-12)
    assert low < 1.25 < high and low > 1 and p < 1e-4


def test_one_stalled_repeat_barely_moves_the_ratio():
    new = 1.25 * BASE
    new[3] *= 8  # a repeat that another process stalled
    assert ratio_interval(BASE, new)[0] == pytest.approx(1.25, rel=0.02)


def test_the_null_distribution_of_u_is_the_enumerated_one():
    for m, n in [(1, 1), (2, 3), (3, 3), (4, 6), (5, 5)]:
        counts = np.zeros(m * n + 1)
        for chosen in itertools.combinations(range(m + n), m):
            others = set(range(m + n)) - set(chosen)
            counts[sum(x > y for x in chosen for y in others)] += 1
        np.testing.assert_allclose(_null_cdf(m, n), np.cumsum(counts) / counts.sum())


def test_the_interval_is_the_published_critical_value_inverted():
    # 15 and 15 at 5% two-sided: U <= 64 rejects (Mann-Whitney tables), so the interval is
    # the 65th smallest to the 65th largest of the 225 ratios
    new = 1e-5 * RNG.lognormal(0.05, 0.02, 15)
    ratios = np.sort((new[None, :] / BASE[:, None]).ravel())
    _, low, high, _ = ratio_interval(BASE, new)
    assert (low, high) == pytest.approx((ratios[64], ratios[-65]), rel=1e-12)


def test_the_interval_excludes_1_exactly_when_the_test_rejects():
    for seed in range(40):
        rng = np.random.default_rng(seed)
        base, new = rng.lognormal(0, 0.05, 9), rng.lognormal(0.04, 0.05, 11)
        _, low, high, p = ratio_interval(base, new)
        exact = stats.mannwhitneyu(new, base, method="exact").pvalue
        assert (exact < 0.05) == (not low <= 1 <= high), seed
        assert p == pytest.approx(exact, abs=0.02)


def test_three_repeats_a_side_can_show_no_change():
    ratio, low, high, p = ratio_interval(BASE[:3], 2 * BASE[:3])
    assert ratio == pytest.approx(2) and (low, high) == (0, np.inf) and p >= 0.1


def _row(label, times, elements=4096, roofline=None, **extra):
    return {"label": label, "workload": "flat", "elements": elements, "dtype": "float32",
            "amsgrad": False, "state": "full", "seconds_median": float(np.median(times)),
            "seconds_repeats": format_repeats(times),
            "roofline_seconds_repeats": format_repeats(BASE if roofline is None else roofline),
            "cpu": "test cpu", "v_numba": "0.60.0", **extra}


def _tables(tmp_path, new_extra=None):
    """BASE and NEW tables: numba 1.25x slower, numpy 1.05x slower (both beyond noise),
    python 1.25x by its median but lost in 50% noise, torch 0.8x (faster)."""
    noisy = 1e-5 * RNG.lognormal(0, 0.5, 15)
    base = [_row("numba", BASE), _row("numpy", BASE), _row("python", noisy),
            _row("torch", BASE), _row("gone", BASE)]
    new = [_row("numba", 1.25 * BASE), _row("numpy", 1.05 * BASE),
           _row("python", 1.25 * noisy[::-1]), _row("torch", 0.8 * BASE),
           _row("numba", BASE, elements=2**20)]
    new = [{**r, **(new_extra or {})} for r in new]
    pd.DataFrame(base).to_csv(tmp_path / "base.csv", index=False)
    pd.DataFrame(new).to_json(tmp_path / "new.json", orient="records")
    return str(tmp_path / "base.csv"), str(tmp_path / "new.json")


def test_the_gate_names_the_cells_significantly_slower_than_the_ratio(tmp_path, capsys):
    base, new = _tables(tmp_path)
    assert main(["compare", base, new]) == 0
    out = capsys.readouterr().out
    assert "compare: 4 cells in both runs: 2 slower, 1 faster, 1 unchanged" in out
    assert "cells in one run only: 1 in BASE, 1 in NEW" in out
    assert main(["compare", base, new, "--fail-above", "1.10"]) == 1
    out = capsys.readouterr().out
    slower = [line for line in out.splitlines() if line.startswith("  slower: ")]
    assert len(slower) == 1 and slower[0].startswith("  slower: numba flat 2^12 float32: 1.250x")
    assert "gate: FAIL (1 cells significantly slower than 1.1x)" in out
    assert main(["compare", base, new, "--fail-above", "1.3"]) == 0
    assert "gate: PASS" in capsys.readouterr().out


def test_compare_shows_where_the_two_runs_differ(tmp_path, capsys):
    base, new = _tables(tmp_path, new_extra={"v_numba": "0.61.0"})
    assert main(["compare", base, new]) == 0
    out = capsys.readouterr().out
    assert "  runs differ: v_numba: 0.60.0 -> 0.61.0" in out
    assert "cpu:" not in out


def test_per_roofline_cancels_a_machine_that_got_slower(tmp_path):
    base = pd.DataFrame([_row("numba", BASE)])
    new = pd.DataFrame([_row("numba", 2 * BASE, roofline=2 * BASE)])
    assert compare_runs(base, new).cells["change"].item() == "slower"
    cell = compare_runs(base, new, per_roofline=True).cells.iloc[0]
    assert cell["ratio"] == pytest.approx(1) and cell["change"] == ""


def _benchmark_json(path, scale):
    info = {"kind": "backend", "device": "cpu", "workload": "flat", "dtype": "float32",
            "amsgrad": False, "elements": 4096, "tensors": 1, "label": "numba"}
    data = list(scale * BASE)
    stats_ = {"median": float(np.median(data)), "min": min(data), "iqr": 0.0,
              "rounds": len(data), "data": data}
    path.write_text(json.dumps({"machine_info": {"cpu": {"brand_raw": "x"}},
                                "commit_info": {"id": "abc", "dirty": False},
                                "benchmarks": [{"name": "t", "stats": stats_,
                                                "extra_info": info}]}))
    return str(path)


def test_pytest_benchmark_files_compare_by_their_rounds(tmp_path, capsys):
    base = _benchmark_json(tmp_path / "a.json", 1.0)
    new = _benchmark_json(tmp_path / "b.json", 1.5)
    assert load_run(base)["git_commit"].item() == "abc"
    assert main(["compare", base, new, "--fail-above", "1.1"]) == 1
    assert "slower: numba flat 2^12 float32: 1.500x" in capsys.readouterr().out


def _status(argv) -> int:
    """main's exit status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("argv, message", [
    (["missing.csv", "{new}"], "missing.csv: no such file"),
    (["{junk}", "{new}"], "not a bench table"),
    (["{base}", "{new}", "--fail-above", "0"], "--fail-above: expected a finite number > 0"),
    (["{base}", "{new}", "--confidence", "1.5"], "--confidence: expected a number in (0, 1)"),
    (["{base}", "{other}"], "have no measured cell in common"),
    (["{bench_json}", "{bench_json}", "--per-roofline"], "no roofline repeats"),
])
def test_bad_arguments_get_one_line_and_status_2(tmp_path, capsys, argv, message):
    base, new = _tables(tmp_path)
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    pd.DataFrame([_row("other", BASE)]).to_csv(tmp_path / "other.csv", index=False)
    names = {"base": base, "new": new, "junk": str(tmp_path / "junk.csv"),
             "other": str(tmp_path / "other.csv"),
             "bench_json": _benchmark_json(tmp_path / "p.json", 1.0)}
    assert _status(["compare", *(a.format(**names) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


BENCH = ["bench", "--sizes", "2^10", "--backends", "numpy", "--no-peers", "--models", "none",
         "--repeats", "5", "--max-seconds", "10", "--quiet", "--no-plot"]


def test_bench_keeps_every_repeat_and_compares_with_itself(tmp_path, capsys):
    assert main(BENCH + ["--out", str(tmp_path / "bench")]) == 0
    table = load_run(tmp_path / "bench.csv")
    for row in table.to_dict("records"):
        times = row["seconds_repeats"].split()
        assert len(times) == row["repeats"] == 5
        assert len(row["roofline_seconds_repeats"].split()) == 5
        assert float(np.median([float(t) for t in times])) == pytest.approx(
            row["seconds_median"], rel=1e-6)
    cells = compare_runs(table, load_run(tmp_path / "bench.json"), per_roofline=True).cells
    assert len(cells) == 2 and (cells["ratio"] == 1).all() and (cells["change"] == "").all()


def test_pytest_benchmark_json_carries_our_metadata(tmp_path):
    conftest = importlib.import_module("conftest")
    machine_info = {"cpu": {"brand_raw": "pytest-benchmark's name"}}
    conftest.pytest_benchmark_update_machine_info(None, machine_info)
    path = _benchmark_json(tmp_path / "b.json", 1.0)
    data = json.loads(open(path).read())
    data["machine_info"] = machine_info
    open(path, "w").write(json.dumps(data))
    row = load_run(path).iloc[0]
    assert row["memory_gib"] > 0 and row["v_numba"] and len(row["git_commit"]) >= 40
    assert row["cpu"] == harness_machine.machine_info()["cpu"]
