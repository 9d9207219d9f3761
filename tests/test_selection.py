"""backend="auto": the choice (backends.auto) from a measured table read only from the
documented places, and the per-user table that adam-bench bench keeps."""
import warnings

import numpy as np
import pandas as pd
import pytest

from backends import Adam, AutoFallbackWarning
from backends.auto import TABLE_ENV, choose_backend, user_table_path
from harness.bench.selection import update_user_table


def table(rows):
    return pd.DataFrame([{"kind": "backend", "workload": "flat", "dtype": "float32",
                          "device": "cpu", "amsgrad": False, "label": label,
                          "elements": n, "seconds_median": t, "machine": "m",
                          "timestamp": "2026-01-01T00:00:00+00:00"} for label, n, t in rows])


MEASURED = table([("numpy", 1024, 10e-6), ("numpy", 2**20, 3e-3),
                  ("numba", 1024, 20e-6), ("numba", 2**20, 0.4e-3),
                  ("python", 1024, 600e-6)])
NUMPY_FASTEST = table([("numpy", 1024, 1e-6), ("numba", 1024, 9e-6)])


def test_fastest_measured_wins_per_size():
    assert choose_backend([2**20], table=MEASURED).name == "numba"
    assert choose_backend([1000], table=MEASURED).name == "numpy"
    assert choose_backend([300, 300, 400], table=MEASURED).name == "numpy"


def test_no_extrapolation_in_favour_of_an_unmeasured_size():
    """python measured only at 1024 must not look fast at 2^20 (time grows linearly)."""
    fast_small_python = table([("python", 1024, 1e-6), ("numba", 2**20, 0.4e-3)])
    assert choose_backend([2**20], table=fast_small_python).name == "numba"


def test_fallback_without_a_table_explains_itself():
    choice = choose_backend([10])
    assert (choice.name, choice.fallback, choice.table) == ("numba", True, None)
    assert choice.reason == ("numba: no measured table (run adam-bench bench, or set "
                             "ADAM_BACKENDS_TABLE); built-in order numba > numpy > python")


def test_rows_of_another_dtype_are_no_table():
    choice = choose_backend([10], dtype="float64", table=MEASURED)
    assert choice.fallback and "no float64 cpu rows in the rows given" in choice.reason


def test_reason_is_one_line():
    choice = choose_backend([2**20], table=MEASURED)
    assert "\n" not in choice.reason and choice.reason.startswith("numba: fastest measured")


def test_auto_reads_the_argument_then_the_variable_then_the_user_table(tmp_path, monkeypatch):
    params = [np.zeros(1000, np.float32)]
    cached = update_user_table(NUMPY_FASTEST)
    assert cached == user_table_path() and cached.is_file()
    assert Adam(params).choice.name == "numpy"
    assert Adam(params).choice.table == str(cached)

    slow_numpy = tmp_path / "env.csv"
    table([("numpy", 1024, 9e-6), ("python", 1024, 1e-6)]).to_csv(slow_numpy, index=False)
    monkeypatch.setenv(TABLE_ENV, str(slow_numpy))
    assert Adam(params).backend.name == "python"

    argument = tmp_path / "argument.csv"
    table([("numba", 1024, 1e-7)]).to_csv(argument, index=False)
    opt = Adam(params, table=argument)
    assert (opt.backend.name, opt.choice.table, opt.choice.fallback) == ("numba", str(argument),
                                                                        False)


def test_auto_ignores_results_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    NUMPY_FASTEST.to_csv(tmp_path / "results" / "bench.csv", index=False)
    with pytest.warns(AutoFallbackWarning, match=r'Adam\(backend="auto"\) chose numba: no '
                                                 "measured table"):
        opt = Adam([np.zeros(1000, np.float32)])
    assert opt.backend.name == "numba" and opt.choice.fallback


def test_a_named_table_that_does_not_exist_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"table: no measured table at '.*nope.csv'"):
        Adam([np.zeros(3)], table=tmp_path / "nope.csv")
    monkeypatch.setenv(TABLE_ENV, str(tmp_path / "gone.csv"))
    with pytest.raises(ValueError, match=r"ADAM_BACKENDS_TABLE: no measured table at"):
        Adam([np.zeros(3)])


def test_a_measured_choice_does_not_warn():
    update_user_table(NUMPY_FASTEST)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Adam([np.zeros(100, np.float32)]).backend.name == "numpy"


def test_the_user_table_keeps_the_newest_row_of_each_cell():
    update_user_table(NUMPY_FASTEST)
    newer = NUMPY_FASTEST.assign(timestamp="2026-02-01T00:00:00+00:00", seconds_median=5e-5)
    newer.loc[newer["label"] == "numba", "elements"] = 2048
    rows = pd.read_csv(update_user_table(newer))
    assert len(rows) == 3
    assert rows[rows["label"] == "numpy"]["seconds_median"].tolist() == [5e-5]
