import pandas as pd

from harness.selection import choose_backend


def table(rows):
    return pd.DataFrame([{"kind": "backend", "workload": "flat", "dtype": "float32",
                          "device": "cpu", "amsgrad": False, "label": label,
                          "elements": n, "seconds_median": t} for label, n, t in rows])


MEASURED = table([("numpy", 1024, 10e-6), ("numpy", 2**20, 3e-3),
                  ("numba", 1024, 20e-6), ("numba", 2**20, 0.4e-3),
                  ("python", 1024, 600e-6)])


def test_fastest_measured_wins_per_size():
    assert choose_backend([2**20], table=MEASURED).name == "numba"
    assert choose_backend([1000], table=MEASURED).name == "numpy"
    assert choose_backend([300, 300, 400], table=MEASURED).name == "numpy"


def test_no_extrapolation_in_favour_of_an_unmeasured_size():
    """python measured only at 1024 must not look fast at 2^20 (time grows linearly)."""
    fast_small_python = table([("python", 1024, 1e-6), ("numba", 2**20, 0.4e-3)])
    assert choose_backend([2**20], table=fast_small_python).name == "numba"


def test_fallback_without_a_table_explains_itself():
    choice = choose_backend([10], table=table([]).reindex(columns=MEASURED.columns))
    assert choice.name == "numba"
    assert "built-in order numba > numpy > python" in choice.reason


def test_reason_is_one_line():
    choice = choose_backend([2**20], table=MEASURED)
    assert "\n" not in choice.reason and choice.reason.startswith("numba: fastest measured")
