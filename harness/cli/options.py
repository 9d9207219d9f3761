"""adam-bench's argument types: each option is checked while parsing, so a bad value
stops the command with one line naming the option and exit status 2, before any cell
runs."""
from __future__ import annotations

import argparse
import math
import os

__all__ = ["Parser", "sizes", "dtypes", "backend_names", "peer_names", "model_names",
           "model_name", "scale", "fraction", "positive_int", "non_negative_int", "positive_float",
           "non_negative_float", "ranks", "positive_floats", "available_memory",
           "sweep_bytes_needed", "oversized_sweep", "peers_option", "VERBOSE", "RANKS_HELP"]

_DTYPES = ("float32", "float64")
#: Bytes a bench cell holds per element and per byte of its dtype: the subject's params,
#: grads, their copy and three moments, the same again for the flat-tensor comparison of
#: a model-shaped cell, and the roofline's four arrays.
_ARRAYS_PER_CELL = 16


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: "adam-bench bench: error: ..."."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _listed(text: str, what: str, known, expected: str) -> list[str]:
    """A comma-separated list of names, each one of ``known``."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}s, got "
                                         f"{text!r}")
    bad = [n for n in names if n not in known]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown {what} {bad[0]!r}; expected {expected}")
    return names


def sizes(text: str) -> list[int]:
    """"2^10..2^24:2", "4096,2^20": element counts >= 1."""
    from ..bench.workloads import parse_sizes

    try:
        return parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_names(text: str) -> list[str]:
    """Training formats of ``harness.core.formats``."""
    from ..core.formats import FORMATS

    return _listed(text, "format", FORMATS, ", ".join(FORMATS))


def gpu_report_stages(text: str) -> list[str]:
    """Stages of ``adam-bench gpu-report``."""
    from ..gpu.report import STAGES

    return _listed(text, "stage", STAGES, ", ".join(STAGES))


def dtypes(text: str) -> list[str]:
    return _listed(text, "dtype", _DTYPES, " or ".join(_DTYPES))


def backend_names(text: str) -> list[str]:
    """Registered backends, at least one of them able to run here (the others are shown
    as not run, with the reason)."""
    from backends import list_backends

    rows = {r.name: r for r in list_backends()}
    names = _listed(text, "backend", rows, ", ".join(rows))
    if not any(rows[name].available for name in names):
        reasons = "; ".join(f"{name}: {rows[name].reason}" for name in names)
        raise argparse.ArgumentTypeError(f"no backend named is available here ({reasons})")
    return names


def peer_names(text: str) -> list[str]:
    """Peer labels (harness.subjects.peers), whether or not their libraries are installed here."""
    from ..subjects.peers import peer_labels

    return _listed(text, "peer", peer_labels(), ", ".join(peer_labels()))


def model_names(text: str) -> list[str]:
    """Known model names, or "none" for no model-shaped workloads."""
    from ..bench.workloads import MODELS

    if text.strip() == "none":
        return []
    return _listed(text, "model", MODELS, f"{', '.join(MODELS)}, or none")


def model_name(text: str) -> str:
    """One known model name."""
    names = model_names(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError(f"expected one model name, got {text!r}")
    return names[0]


def _number(text: str, kind, rule: str, ok) -> float:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {rule}, got {text!r}")
    return value


def scale(text: str) -> float:
    return _number(text, float, "a number in (0, 1]", lambda x: 0 < x <= 1)


def fraction(text: str) -> float:
    return _number(text, float, "a number in (0, 1)", lambda x: 0 < x < 1)


def positive_int(text: str) -> int:
    return _number(text, int, "an integer >= 1", lambda x: x >= 1)


def non_negative_int(text: str) -> int:
    return _number(text, int, "an integer >= 0", lambda x: x >= 0)


def positive_float(text: str) -> float:
    return _number(text, float, "a finite number > 0", lambda x: math.isfinite(x) and x > 0)


def non_negative_float(text: str) -> float:
    return _number(text, float, "a finite number >= 0", lambda x: math.isfinite(x) and x >= 0)


def _positive_list(text: str, kind, example: str) -> list:
    """A comma-separated list of finite numbers > 0 of type ``kind``."""
    try:
        values = [kind(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers > 0 like {example}, got {text!r}")
    return values


def ranks(text: str) -> list[int]:
    """"1,2" -> [1, 2]: MPI rank counts."""
    return _positive_list(text, int, "2 or 1,2")


def positive_floats(text: str) -> list[float]:
    """"124e6,7e9" -> [124e6, 7e9]."""
    return _positive_list(text, float, "124e6,7e9")


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def sweep_bytes_needed(cfg) -> int:
    """About the most memory one cell of the sweep ``cfg`` holds at once."""
    itemsize = max(8 if d == "float64" else 4 for d in cfg.dtypes)
    largest = max(w.elements for w in cfg.workloads())
    return largest * itemsize * _ARRAYS_PER_CELL


def oversized_sweep(cfg, allowed: bool) -> str | None:
    """Why the sweep ``cfg`` should not run here (its largest cell needs more memory than
    is available and ``allowed`` is false), or None."""
    need, available = sweep_bytes_needed(cfg), available_memory()
    if allowed or available is None or need <= available:
        return None
    return (f"the largest cell needs about {need / 2**30:.1f} GiB but "
            f"{available / 2**30:.1f} GiB is available; choose smaller --sizes or pass "
            "--allow-large-memory")


#: A subcommand's --verbose (the top-level one is the tour's).
VERBOSE = {"action": "store_true", "default": argparse.SUPPRESS,
           "help": "print the full Markdown tables (they are always in the files)"}
RANKS_HELP = ("sharded Adam (ZeRO-1) on this many MPI ranks, e.g. 2 or 1,2: launches mpiexec "
              "(pip install -e '.[mpi]')")


def peers_option(args) -> bool | list[str]:
    """--no-peers: none; --peers a,b: those; else every peer."""
    return False if args.no_peers else (args.peers or True)


def backends_device(names: list[str] | None) -> str | None:
    """"cuda" when every one of these backends steps CUDA arrays (so the peers to time
    beside them are torch's on CUDA tensors), else None (any device, CPU peers)."""
    from backends import list_backends

    devices = {r.name: r.device for r in list_backends()}
    if names and all(devices.get(name) == "cuda" for name in names):
        return "cuda"
    return None
