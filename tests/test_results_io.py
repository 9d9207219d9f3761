import os

import pandas as pd
import pytest

from harness.core import machine, results_io
from harness.core.results_io import atomic_write_text, read_table, write_tables


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "table.csv"
    atomic_write_text(path, "old,complete\n")

    def crash(src, dst):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(results_io.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, "new," * 1000)
    assert path.read_text() == "old,complete\n"
    assert os.listdir(tmp_path) == ["table.csv"]  # no temporary file left behind


def test_tables_round_trip(tmp_path):
    df = pd.DataFrame({"label": ["numba", "numpy"], "seconds_median": [1e-3, 2e-3]})
    paths = write_tables(df, tmp_path / "bench")
    assert [p.suffix for p in paths] == [".csv", ".json", ".md"]
    pd.testing.assert_frame_equal(read_table(paths[0])[df.columns], df)
    pd.testing.assert_frame_equal(read_table(paths[1])[df.columns], df)
    assert "| numba" in paths[2].read_text()


def test_every_file_says_which_machine_and_software_made_it(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "_cpu_model", lambda: "Test CPU 9000")
    machine.machine_info.cache_clear()
    try:
        df = pd.DataFrame({"label": ["numba"], "v_numba": ["0.1"]})  # a row's own value wins
        csv, json_, md = write_tables(df, tmp_path / "t")
        empty = write_tables(pd.DataFrame({"label": []}), tmp_path / "e")[2].read_text()
    finally:
        machine.machine_info.cache_clear()
    for table in (read_table(csv), read_table(json_)):
        row = table.iloc[0]
        assert row["cpu"] == "Test CPU 9000" and row["v_numba"] == 0.1
        assert row["cores"] >= 1 and row["memory_gib"] > 0 and str(row["v_numpy"])[:1] == "2"
        assert len(str(row["git_commit"])) >= 40  # this checkout's commit
    line = md.read_text().splitlines()[-1]
    assert line.startswith("run on: cpu Test CPU 9000, cores ") and "v_numba 0.1," in line
    assert "run on: cpu Test CPU 9000" in empty
