"""adam-bench refuses bad arguments with one line and exit status 2, before any cell runs."""
import pandas as pd
import pytest

from backends import list_backends
from harness.cli import options as cli_args
from harness.bench import sweep
from harness.cli import main

UNAVAILABLE = next((r.name for r in list_backends() if not r.available), None)

BAD = [
    (["bench", "--sizes", "abc"], "--sizes: a size must be an integer, got 'abc'"),
    (["bench", "--sizes", "-5"], "--sizes: sizes must be in 1..2^62"),
    (["bench", "--sizes", "2^3..2^1"], "--sizes: a size range needs 2^LO..2^HI[:STEP]"),
    (["bench", "--sizes", ","], "--sizes: expected sizes like"),
    (["bench", "--sizes", "2^4..2^6:0"], "--sizes: a size range needs"),
    (["bench", "--sizes", "0"], "--sizes: sizes must be in 1..2^62"),
    (["bench", "--sizes", "2^-1"], "--sizes: exponents must be in 0..62"),
    (["bench", "--dtypes", "float64,float16"], "--dtypes: unknown dtype 'float16'; expected float32 or float64"),
    (["bench", "--backends", "nosuch"], "--backends: unknown backend 'nosuch'"),
    (["bench", "--models", "nosuch"], "--models: unknown model 'nosuch'"),
    (["bench", "--scale", "2"], "--scale: expected a number in (0, 1], got '2'"),
    (["bench", "--repeats", "0"], "--repeats: expected an integer >= 1, got '0'"),
    (["bench", "--max-seconds", "nan"], "--max-seconds: expected a finite number > 0"),
    (["check", "--steps", "0"], "--steps: expected an integer >= 1, got '0'"),
    (["check", "--dtypes", ""], "--dtypes: expected a comma-separated list of dtypes"),
    (["select", "--model", "nosuch"], "--model: unknown model 'nosuch'"),
    (["check", "--ranks", "0"], "--ranks: expected numbers > 0 like 2 or 1,2, got '0'"),
    (["bench", "--ranks", "two"], "--ranks: expected numbers > 0 like 2 or 1,2, got 'two'"),
    (["demo", "--ranks", "1x"], "--ranks: expected numbers > 0 like 2 or 1,2, got '1x'"),
    (["plan", "--params", "x"], "--params: expected numbers > 0 like 124e6,7e9, got 'x'"),
    (["plan", "--params", "inf"], "--params: expected numbers > 0 like 124e6,7e9, got 'inf'"),
    (["plan", "--link-gbps", "0"], "--link-gbps: expected a finite number > 0, got '0'"),
    (["plan", "--latency-us", "nan"], "--latency-us: expected a finite number >= 0, got 'nan'"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_arguments_get_one_line_and_status_2(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "_measure", lambda *a: pytest.fail("a cell ran"))
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"adam-bench {argv[0]}: error: argument {message}" in err


@pytest.mark.skipif(UNAVAILABLE is None, reason="every backend is available here")
def test_only_unavailable_backends_asked_for_by_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--backends", UNAVAILABLE])
    assert exit_info.value.code == 2
    assert f"no backend named is available here ({UNAVAILABLE}: " in capsys.readouterr().err


def test_a_sweep_that_does_not_fit_in_memory_is_refused(capsys, monkeypatch):
    monkeypatch.setattr(sweep, "_measure", lambda *a: pytest.fail("a cell ran"))
    monkeypatch.setattr(cli_args, "available_memory", lambda: 2**30)
    assert main(["bench", "--sizes", "2^24", "--dtypes", "float64", "--models", "none",
                 "--backends", "numpy", "--no-peers"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("adam-bench bench: error: the largest cell needs about 2.0 GiB but 1.0 GiB "
                   "is available; choose smaller --sizes or pass --allow-large-memory")


def test_check_of_a_single_subject(tmp_path, capsys):
    """No pairs to compare: an empty pairs table, not a KeyError."""
    assert main(["check", "--steps", "2", "--backends", "numpy", "--no-peers", "--quiet",
                 "--dtypes", "float64", "--out", str(tmp_path / "check")]) == 0
    assert "check: PASS" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "check-pairs.csv").empty
