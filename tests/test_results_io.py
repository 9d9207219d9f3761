import os

import pandas as pd
import pytest

from harness import results_io
from harness.results_io import atomic_write_text, read_table, write_tables


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
    pd.testing.assert_frame_equal(read_table(paths[0]), df)
    pd.testing.assert_frame_equal(read_table(paths[1]), df)
    assert "| numba" in paths[2].read_text()
