"""The layers of backends/ and harness/: every module imports only modules of its own
layer or a lower one, function-local imports included, and no import cycle exists.

The table is the map of the code: a new module goes in the row of what it is, and this
test says which import breaks the order. Two kinds of import are held apart from the
order: a private module (a name part starting with "_") is imported only inside its own
package, and cupy and numba.cuda only inside backends/cuda; ``KERNEL_READERS`` are the
declared exceptions to both (the roofline and the machine-code checks read kernels).

One word per concept: the state of uint8 codes and per-block scales is "int8" in every
name and text of ours (``state_dtype="int8"``); ``RETIRED`` are the words it replaced, and
``PEER_NAMES`` the third-party names that keep them.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("backends", "harness")

#: Lowest first. An entry holds the module of that name and every module under it; the
#: top packages ``backends`` and ``harness`` name their ``__init__`` only.
LAYERS = (
    ("backends.config", "backends.state", "backends.files", "backends.scalars",
     "backends.int8_codec", "backends._array_fields", "backends.formats",
     "backends.memory"),
    ("backends.reference", "backends.validation", "backends._array_headers",
     "backends._header_kernels", "backends.update_calls", "backends.int8_step",
     "backends.low_precision_step"),
    ("backends.base",),
    ("backends.cpu", "backends.cuda"),
    ("backends.registry", "backends.auto", "backends.checkpoint",
     "backends.param_groups"),
    ("backends.optimizer", "backends.torch", "backends._torch_groups",
     "backends._torch_tensors"),
    ("backends.sharded",),
    ("backends",),
    ("harness.core",),
    ("harness.subjects",),
    ("harness.check", "harness.bench", "harness.demo"),
    ("harness.sharded",),
    ("harness.gpu",),
    ("harness.testing", "harness.cli", "harness"),
)
#: Rows of the table with no module yet (a slot another change fills).
RESERVED: set[str] = set()
#: May import private kernel modules and the GPU libraries.
KERNEL_READERS = {"harness.bench.roofline", "harness.bench.gpu_roofline",
                  "harness.gpu.machine_code"}
GPU_LIBRARIES = ("cupy", "numba.cuda")
GPU_PACKAGE = "backends.cuda"
#: Words retired for "int8" (any case, inside identifiers too).
RETIRED = re.compile(r"quantiz|8-bit|8bit|blockwise", re.IGNORECASE)
#: Third-party names that keep a retired word: bitsandbytes' and torchao's Adam8bit and
#: AdamW8bit (and the peers named after them), min_8bit_size, dequantize_blockwise,
#: torchao's OptimState8bit and its dequantize().
PEER_NAMES = re.compile(r"[\w-]*adamw?8bit[\w-]*|min_8bit_size|dequantize_blockwise|"
                        r"OptimState8bit|\.dequantize\(\)|\"dequantize\"", re.IGNORECASE)
#: Where our own .py and .md files live (results/local/ is a run's output, not ours).
OWN_FILES = ("*.md", "backends/**/*.py", "harness/**/*.py", "tests/**/*.py",
             "examples/**/*.py", "examples/**/*.md", "docs/**/*.md", "results/**/*.md")


def module_files() -> dict[str, Path]:
    """Dotted name -> source file of every module of the two packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(name: str, path: Path, modules) -> set[str]:
    """Every module ``name`` imports anywhere in its file (the module itself for
    ``from package import submodule``), ours and the others, as dotted names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                child = f"{source}.{alias.name}"
                found.add(child if child in modules or child in GPU_LIBRARIES else source)
    return found


def layer_of(name: str) -> int | None:
    best, row = -1, None
    for i, entries in enumerate(LAYERS):
        for entry in entries:
            exact = entry in PACKAGES
            if (name == entry or (not exact and name.startswith(entry + "."))) \
                    and len(entry) > best:
                best, row = len(entry), i
    return row


def graph() -> dict[str, set[str]]:
    """Module -> the modules of the two packages it imports."""
    modules = module_files()
    return {name: {m for m in imports_of(name, path, modules) if m in modules and m != name}
            for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layer_violations(edges) -> list[str]:
    problems = []
    for name, targets in sorted(edges.items()):
        row = layer_of(name)
        if row is None:
            problems.append(f"{name} is in no layer of tests/test_layout.py: add it to a row")
            continue
        for target in sorted(targets):
            if layer_of(target) is not None and layer_of(target) > row:
                problems.append(f"{name} (layer {row}) imports {target} "
                                f"(layer {layer_of(target)}): imports go down the table")
    return problems


def boundary_violations() -> list[str]:
    modules = module_files()
    problems = []
    for name, path in modules.items():
        if name in KERNEL_READERS:
            continue
        for target in sorted(imports_of(name, path, modules)):
            if any(target == lib or target.startswith(lib + ".") for lib in GPU_LIBRARIES) \
                    and not (name == GPU_PACKAGE or name.startswith(GPU_PACKAGE + ".")):
                problems.append(f"{name} imports {target}: only {GPU_PACKAGE} may")
            private = next((i for i, part in enumerate(target.split("."))
                            if part.startswith("_") and part != "__init__"), None)
            if target in modules and private is not None:
                home = ".".join(target.split(".")[:private])
                if not (name == home or name.startswith(home + ".")):
                    problems.append(f"{name} imports {target}, private to {home}")
    return problems


def retired_words(text: str) -> list[str]:
    """The retired words in ``text`` outside third-party names."""
    return RETIRED.findall(PEER_NAMES.sub("", text))


def retired_word_uses() -> list[str]:
    """"path:line: words" for every line of our files that uses a retired word (this
    file, which names them, apart)."""
    paths = sorted({path for pattern in OWN_FILES for path in ROOT.glob(pattern)
                    if "local" not in path.relative_to(ROOT).parts[:2]
                    and path != Path(__file__).resolve()})
    return [f"{path.relative_to(ROOT)}:{n}: {', '.join(words)}"
            for path in paths for n, line in enumerate(path.read_text().splitlines(), 1)
            if (words := retired_words(line))]


def test_every_import_goes_down_the_layers():
    assert layer_violations(graph()) == []


def test_there_is_no_import_cycle():
    assert find_cycle(graph()) is None


def test_gpu_libraries_and_private_modules_stay_in_their_package():
    assert boundary_violations() == []


def test_every_row_of_the_table_names_modules():
    modules = module_files()
    for entries in LAYERS:
        for entry in entries:
            if entry not in RESERVED:
                assert any(m == entry or m.startswith(entry + ".") for m in modules), entry


@pytest.mark.parametrize("edges, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
])
def test_the_cycle_search_finds_a_cycle_and_only_a_cycle(edges, cycle):
    assert find_cycle(edges) == cycle


def test_an_upward_import_is_reported():
    edges = {"backends.config": {"backends.optimizer"}, "backends.optimizer": set()}
    assert layer_violations(edges) == [
        "backends.config (layer 0) imports backends.optimizer (layer 5): imports go down "
        "the table"]


def test_int8_is_the_one_word_for_int8_state():
    assert retired_word_uses() == []


@pytest.mark.parametrize("text, words", [
    ("the quantized step of 8-bit state", ["quantiz", "8-bit"]),
    ("from .blockwise import dequantize_m", ["blockwise", "quantiz"]),
    ("class Bnb8bitStepper", ["8bit"]),
    ("bitsandbytes' Adam8bit and AdamW8bit, bnb-adam8bit, torchao_adamw8bit", []),
    ("min_8bit_size; dequantize_blockwise(codes); value.dequantize(); OptimState8bit", []),
])
def test_the_word_scan_finds_retired_words_and_passes_peer_names(text, words):
    assert retired_words(text) == words
