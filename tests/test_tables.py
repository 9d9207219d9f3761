import numpy as np
import pandas as pd
import pytest

from harness.core.tables import add_derived, bytes_per_element


@pytest.mark.parametrize("dtype, amsgrad, expected", [("float32", False, 28),
                                                      ("float32", True, 36),
                                                      ("float64", False, 56),
                                                      ("float64", True, 72)])
def test_bytes_model_of_design_md(dtype, amsgrad, expected):
    assert bytes_per_element(dtype, amsgrad) == expected


def row(label, seconds, elements=1000, workload="flat", amsgrad=False, dtype="float32"):
    return {"label": label, "seconds_median": seconds, "elements": elements,
            "workload": workload, "amsgrad": amsgrad, "dtype": dtype, "device": "cpu"}


def test_derived_columns_by_hand():
    df = add_derived(pd.DataFrame([
        row("roofline", 1e-6), row("numpy", 8e-6), row("numba", 2e-6),
        row("numba", 3e-6, amsgrad=True), row("numba", 2.6e-6, workload="gpt2")]))
    numba = df[(df.label == "numba") & (df.workload == "flat") & ~df.amsgrad].iloc[0]
    assert numba.bytes_per_step == 28_000
    assert numba.gb_per_s == pytest.approx(28_000 / 2e-6 / 1e9)
    assert numba.roofline_gb_per_s == pytest.approx(28.0)
    assert numba.fraction_of_roofline == pytest.approx(0.5)
    assert numba.speedup_vs_numpy == pytest.approx(4.0)
    assert np.isnan(numba.list_overhead)
    ams = df[(df.label == "numba") & df.amsgrad].iloc[0]
    assert ams.bytes_per_step == 36_000
    assert ams.fraction_of_roofline == pytest.approx(36_000 / 3e-6 / 1e9 / 28.0)
    model = df[df.workload == "gpt2"].iloc[0]
    assert model.list_overhead == pytest.approx(1.3)
