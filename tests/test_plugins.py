"""Third-party backends: the example plugin installed by its entry point shows up wherever a
built-in backend does; broken plugins and name clashes are reported, never fatal."""
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import backends
from backends import (Backend, BackendUnavailable, backend_names, get_backend,
                       list_backends, register_backend, unregister_backend)
from backends.cpu.numpy import NumpyBackend
from backends.registry import PluginWarning

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "examples" / "plugin-template"
WRONG_MATH = ("v += (1.0 - cfg.beta2) * g * g", "v += (1.0 - cfg.beta1) * g * g")


def install_metadata(site: Path, dist: str, entry_points: dict[str, str]) -> None:
    """What pip leaves for importlib.metadata: a .dist-info with METADATA and the entry
    points of our group."""
    info = site / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    lines = [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("[adam_backends.backends]\n" + "\n".join(lines) + "\n")


def install_template(site: Path, mutate: tuple[str, str] | None = None) -> None:
    """The example plugin as pip installs it: its package and the entry points its
    pyproject.toml declares (optionally with one line of its math changed)."""
    project = tomllib.loads((TEMPLATE / "pyproject.toml").read_text())["project"]
    shutil.copytree(TEMPLATE / "adam_plugin_template", site / "adam_plugin_template")
    if mutate:
        module = site / "adam_plugin_template" / "__init__.py"
        source = module.read_text()
        assert mutate[0] in source
        module.write_text(source.replace(*mutate))
    install_metadata(site, project["name"], project["entry-points"]["adam_backends.backends"])


def run(site: Path, *args, cwd=REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
           "XDG_CACHE_HOME": str(site / "cache")}
    env.pop("ADAM_BACKENDS_TABLE", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def template_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    install_template(site)
    return site


def test_template_shows_in_backends(template_site):
    out = run(template_site, "-m", "harness.cli", "backends")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if "template" in line)
    assert row.split() == ["template", "cpu", "plugin", "adam-backends-plugin-template", "ready"]


def test_template_passes_check_and_is_benchmarked_and_selected(template_site, tmp_path):
    cli = ("-m", "harness.cli")
    check = run(template_site, *cli, "check", "--backends", "template,numpy", "--steps", "10",
                "--no-peers", "--quiet", "--out", str(tmp_path / "check"))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "check: PASS" in check.stdout
    table = pd.read_csv(tmp_path / "check.csv")
    assert (table["subject"] == "template").sum() == 10 and table["within_tolerance"].all()
    bad_input = pd.read_csv(tmp_path / "check-bad-input.csv")
    assert bad_input[bad_input["subject"] == "template"]["passed"].all()

    bench = run(template_site, *cli, "bench", "--backends", "template", "--sizes", "2^10,2^12",
                "--models", "none", "--repeats", "3", "--max-seconds", "0.01", "--no-peers",
                "--no-plot", "--quiet", "--out", str(tmp_path / "bench"))
    assert bench.returncode == 0, bench.stderr
    rows = pd.read_csv(tmp_path / "bench.csv")
    assert rows[rows["label"] == "template"]["seconds_median"].notna().sum() == 2

    select = run(template_site, *cli, "select", "--sizes", "3000")
    assert select.stdout.startswith("template: fastest measured for 3000 float32"), select.stderr


def test_template_steps_through_adam_and_the_benchmark_suite(template_site):
    code = ("import numpy as np; from backends import Adam; p = [np.zeros(3, np.float32)]; "
            "opt = Adam(p, backend='template', lr=0.5); opt.step([np.ones(3, np.float32)]); "
            "print(opt.backend.name, p[0].tolist())")
    out = run(template_site, "-c", code)
    assert out.stdout.split(" ", 1) == ["template", "[-0.5, -0.5, -0.5]\n"], out.stderr
    ids = [f"tests/benchmarks/test_bench_adam.py::test_adam_step[template-2^10-{dtype}]"
           for dtype in ("float32", "float64")]
    suite = run(template_site, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ids)
    assert suite.returncode == 0 and "2 passed" in suite.stdout, suite.stdout + suite.stderr


def test_template_tests_use_the_kit(template_site):
    out = run(template_site, "-m", "pytest", "-q", "-p", "no:cacheprovider",
              str(TEMPLATE / "tests"))
    assert out.returncode == 0 and "2 passed" in out.stdout, out.stdout + out.stderr


def test_a_template_with_wrong_math_fails_check_and_the_kit(tmp_path):
    site = tmp_path / "site"
    install_template(site, mutate=WRONG_MATH)
    check = run(site, "-m", "harness.cli", "check", "--backends", "template", "--steps", "10",
                "--no-peers", "--dtypes", "float64", "--quiet", "--out", str(tmp_path / "check"))
    assert check.returncode == 1 and "check: FAIL" in check.stdout, check.stdout + check.stderr
    assert "template float64 plain: exp_avg_sq off the float64 reference" in check.stdout
    kit = run(site, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TEMPLATE / "tests"),
              "-k", "agrees")
    assert kit.returncode == 1 and "disagrees with the float64 reference" in kit.stdout


# --- in this process: broken plugins, clashes, register_backend -------------------------

@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_plugin_that_fails_to_import_is_listed_with_the_reason(site):
    (site / "plugin_raises_at_import.py").write_text("raise RuntimeError('no licence')\n")
    install_metadata(site, "bad-plugins", {"missing": "plugin_not_there:Backend",
                                           "raises": "plugin_raises_at_import:Backend"})
    rows = {r.name: r for r in list_backends()}
    assert not rows["missing"].available and rows["missing"].device == "?"
    assert rows["missing"].reason == "import failed: No module named 'plugin_not_there'"
    assert rows["raises"].reason == ("plugin bad-plugins failed to load: RuntimeError: "
                                     "no licence")
    assert rows["numpy"].available
    with pytest.raises(BackendUnavailable, match="no licence"):
        get_backend("raises")


def test_a_plugin_that_fails_to_construct_is_unavailable_not_fatal(site, capsys):
    (site / "plugin_bad_init.py").write_text(
        "from backends.cpu.numpy import NumpyBackend\n"
        "class Bad(NumpyBackend):\n"
        "    def __init__(self):\n"
        "        raise OSError('device busy')\n"
        "def not_a_backend():\n"
        "    return 42\n")
    install_metadata(site, "bad-init", {"bad-init": "plugin_bad_init:Bad",
                                        "not-a-backend": "plugin_bad_init:not_a_backend"})
    rows = {r.name: r for r in list_backends()}
    assert (rows["bad-init"].available, rows["bad-init"].device) == (False, "cpu")
    assert rows["bad-init"].reason == ("backend 'bad-init' (plugin bad-init) failed to "
                                       "construct: OSError: device busy")
    assert rows["not-a-backend"].reason.endswith("made a int, not a backends.Backend")
    with pytest.raises(BackendUnavailable, match=r"backend 'bad-init' \(plugin bad-init\) "
                                                 "failed to construct: OSError: device busy"):
        get_backend("bad-init")
    with pytest.raises(BackendUnavailable, match="made a int, not a backends.Backend"):
        get_backend("not-a-backend")
    from harness.cli import main

    assert main(["check", "--backends", "numpy,bad-init", "--steps", "2", "--no-peers",
                 "--dtypes", "float64", "--quiet", "--out", str(site / "check")]) == 0
    out = capsys.readouterr().out
    assert ("  not run: bad-init (backend 'bad-init' (plugin bad-init) failed to construct: "
            "OSError: device busy)") in out


def test_a_plugin_cannot_take_a_built_in_name(site):
    (site / "plugin_impostor.py").write_text(
        "from backends.cpu.numpy import NumpyBackend\nclass Impostor(NumpyBackend):\n"
        "    pass\n")
    install_metadata(site, "impostor", {"numpy": "plugin_impostor:Impostor"})
    with pytest.warns(PluginWarning, match=r"plugin 'numpy' from impostor "
                                           r"\(plugin_impostor:Impostor\) refused: the name is "
                                           "taken by the built-in backend"):
        rows = list_backends()
        assert [r.origin for r in rows if r.name == "numpy"] == ["built-in"]
        assert type(get_backend("numpy")) is NumpyBackend


class Doubling(NumpyBackend):
    """lr twice what it should be: the kit must notice."""

    def _update(self, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, cfg, t, dtype,
                cache):
        super()._update(params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq,
                        type(cfg)(**{**cfg.to_dict(), "lr": 2 * cfg.lr}), t, dtype, cache)


def test_register_backend_for_a_notebook():
    register_backend("mine", NumpyBackend)
    try:
        assert backend_names()[-1] == "mine"
        row = next(r for r in list_backends() if r.name == "mine")
        assert (row.device, row.available, row.origin) == ("cpu", True, "registered")
        backend = get_backend("mine")
        assert isinstance(backend, NumpyBackend) and backend.name == "mine"
        assert backends.Adam([np.zeros(2)], backend="mine").backend.name == "mine"
        with pytest.raises(ValueError, match="backend name 'mine' is taken by the registered "
                                             "backend; pass replace=True"):
            register_backend("mine", Doubling)
    finally:
        unregister_backend("mine")
    assert "mine" not in backend_names()


def test_register_backend_refuses_a_built_in_name_unless_told():
    with pytest.raises(ValueError, match="backend name 'numba' is taken by the built-in "
                                         "backend; pass replace=True"):
        register_backend("numba", Doubling)
    register_backend("numba", lambda: Doubling(), replace=True)
    try:
        assert type(get_backend("numba")) is Doubling
    finally:
        unregister_backend("numba")
    assert type(get_backend("numba")).__name__ == "NumbaBackend"


@pytest.mark.parametrize("name, target, error", [
    ("", NumpyBackend, ValueError), (" x", NumpyBackend, ValueError), (3, NumpyBackend, ValueError),
    ("x", 3, TypeError)])
def test_register_backend_checks_its_arguments(name, target, error):
    with pytest.raises(error):
        register_backend(name, target)
    assert "x" not in backend_names()


def test_a_registered_class_that_is_no_backend_is_unavailable():
    register_backend("dict", dict)
    try:
        row = next(r for r in list_backends() if r.name == "dict")
        assert not row.available and "gives dict, which is not a subclass" in row.reason
    finally:
        unregister_backend("dict")


def test_importing_backends_never_imports_the_harness():
    """The library stands on its own: no module of ``backends`` imports ``harness``, checked
    on the source and on a process that imports every module and runs "auto"."""
    import ast

    paths = sorted((REPO / "backends").rglob("*.py"))
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "harness" or n.startswith("harness.") for n in names), path
    modules = [".".join(p.relative_to(REPO).with_suffix("").parts) for p in paths
               if p.stem != "__init__"]
    code = ("import sys, importlib, warnings, numpy as np; warnings.simplefilter('ignore'); "
            f"[importlib.import_module(m) for m in {modules!r}]; "
            "from backends import Adam, list_backends; list_backends(); "
            "Adam([np.zeros(3, np.float32)]).step([np.ones(3, np.float32)]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'harness'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "XDG_CACHE_HOME": "/nonexistent"})
    assert out.stdout.strip() == "[]", out.stderr
