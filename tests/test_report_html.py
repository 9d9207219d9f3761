"""adam-bench report --html: one self-contained page from a results folder, opened in
headless Chromium (skipped, with the reason, only where no Chromium is installed)."""
import re
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest

from harness.cli import main

BENCH = ["bench", "--sizes", "2^10,2^12", "--backends", "numpy,numba", "--no-peers",
         "--models", "none", "--repeats", "3", "--max-seconds", "0.02", "--quiet"]
CHECK = ["check", "--steps", "2", "--backends", "numpy", "--no-peers", "--dtypes", "float64",
         "--quiet"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    assert main(BENCH + ["--out", str(results / "bench")]) == 0
    assert main(CHECK + ["--out", str(results / "check")]) == 0
    assert main(["report", "--html", str(results)]) == 0
    return results / "report.html"


def test_the_page_holds_plots_tables_verdicts_and_metadata(page):
    text = page.read_text()
    assert text.count('src="data:image/png;base64,') >= 1  # the bench plot, drawn anew
    for heading in ("bench", "check", "check-edge-cases", "check-pairs"):
        assert f">{heading}</h2>" in text
    assert "verdicts. agreement" in text
    assert re.search(r"PASS: \d+ of \d+ runs of our backends", text)
    assert text.count("run on: cpu ") >= 5 and "git_commit " in text


def test_the_page_links_nothing_outside_itself(page):
    text = page.read_text()
    assert not re.search(r"<(script|link|iframe|object|embed)\b", text)
    sources = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', text)
    assert sources and all(s.startswith(("data:image/png;base64,", "#")) for s in sources)
    assert "url(" not in text and "@import" not in text


def test_report_refuses_a_folder_without_tables(tmp_path, capsys):
    assert main(["report", "--html", str(tmp_path)]) == 2
    assert main(["report", "--html", str(tmp_path / "missing")]) == 2
    assert main(["report"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "no result tables" in err[0] and "not a folder" in err[1]


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium here (.ci/run installs the Debian package chromium)")


def render(html_path, screenshot):
    """Chromium's console lines for ``html_path`` and its screenshot."""
    done = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                           "--enable-logging=stderr", "--v=0", "--window-size=1200,1600",
                           f"--screenshot={screenshot}", html_path.as_uri()],
                          capture_output=True, text=True, timeout=120)
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def test_chromium_renders_the_page_without_console_errors(page, tmp_path):
    shot = tmp_path / "page.png"
    assert render(page, shot) == []
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    ink = (pixels.mean(axis=2) < 0.9).mean()  # text, rules, the plot
    assert 0.01 < ink < 0.9, ink
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # not one flat colour


def test_the_render_check_sees_a_console_error(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>undefinedFunction()</script></body></html>")
    assert any("undefinedFunction" in line for line in render(bad, tmp_path / "bad.png"))
