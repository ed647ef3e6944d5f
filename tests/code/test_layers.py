"""Every import in src/clearmark points down the layers, and no import circle exists.

The layer order (docs/architecture.md, "Layers") is declared here, once.  Imports are
read from the source with ``ast``: module-level, function-level and ``TYPE_CHECKING``
ones alike, absolute and relative, because each is a dependency a reader must follow.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

from clearmark.settings import REPO_ROOT

PACKAGE_ROOT = REPO_ROOT / "src"

# Bottom to top.  A module belongs to the layer of its longest matching prefix; every
# ``clearmark.<package>.cli`` module sits at the top, whatever its package.
LAYERS: list[tuple[str, ...]] = [
    ("clearmark", "clearmark.settings", "clearmark.progress", "clearmark.diskspace"),
    ("clearmark.storage",),
    ("clearmark.data",),
    ("clearmark.model",),
    ("clearmark.removal", "clearmark.drift"),
    ("clearmark.orchestration", "clearmark.stack", "clearmark.deploy", "clearmark.bench", "clearmark.cli"),
]
# Packages of one layer that must not import each other: removal and drift both build on
# the model and data layers, and a change to one never ripples into the other.
SIBLINGS = ("clearmark.removal", "clearmark.drift")
TOP = len(LAYERS) - 1


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules(root: Path) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted((root / "clearmark").rglob("*.py"))}


def _prefix_of(module: str, prefixes: tuple[str, ...]) -> str | None:
    matches = [p for p in prefixes if module == p or module.startswith(p + ".")]
    return max(matches, key=len, default=None)


def layer_of(module: str) -> int:
    if module.endswith(".cli"):
        return TOP
    best = max(
        ((len(prefix), index) for index, prefixes in enumerate(LAYERS) if (prefix := _prefix_of(module, prefixes))),
        default=None,
    )
    if best is None:
        raise AssertionError(f"{module} is in no layer: add its package to LAYERS (and to docs/architecture.md).")
    return best[1]


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The clearmark modules that ``module`` imports anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from pkg import sub` imports the module pkg.sub
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {name for name in found if name in known and name != module}


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = all_modules(root)
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for importer, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer_of(target) > layer_of(importer):
                problems.append(f"{importer} (layer {layer_of(importer) + 1}) imports {target} (layer {layer_of(target) + 1})")
            own, other = _prefix_of(importer, SIBLINGS), _prefix_of(target, SIBLINGS)
            if own and other and own != other and layer_of(importer) != TOP:
                problems.append(f"{importer} imports its sibling {target}")
    return problems


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle, found one at a time: report it, cut its closing edge, look again."""
    remaining = {name: set(targets) for name, targets in graph.items()}
    cycles = []
    while True:
        try:
            graphlib.TopologicalSorter(remaining).prepare()
        except graphlib.CycleError as error:
            cycle = error.args[1]  # [a, b, ..., a], each importing the one before it
            cycles.append(cycle)
            remaining[cycle[1]].discard(cycle[0])
        else:
            return cycles


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE_ROOT)


def test_every_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    assert "clearmark.storage" in graph and "clearmark.model.detector" in graph  # the walk found the package
    for module in graph:
        layer_of(module)


def test_imports_point_down_and_siblings_stay_apart(graph: dict[str, set[str]]) -> None:
    assert layer_violations(graph) == []


def test_no_import_circle(graph: dict[str, set[str]]) -> None:
    assert import_cycles(graph) == []


def test_the_checks_see_what_they_must(tmp_path: Path) -> None:
    """Relative and function-level imports count, and so do an upward import, a sibling's and a circle."""
    files = {
        "clearmark/__init__.py": "",
        "clearmark/storage.py": "def hint():\n    from clearmark.stack import services\n",
        "clearmark/stack/__init__.py": "",
        "clearmark/stack/services.py": "from ..storage import hint\n",
        "clearmark/removal/__init__.py": "",
        "clearmark/removal/pipeline.py": "from clearmark.drift.features import x\n",
        "clearmark/drift/__init__.py": "",
        "clearmark/drift/features.py": "x = 1\n",
        "clearmark/drift/cli.py": "import clearmark.removal.pipeline\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)

    assert graph["clearmark.stack.services"] == {"clearmark.storage"}
    assert layer_violations(graph) == [
        "clearmark.removal.pipeline imports its sibling clearmark.drift.features",
        "clearmark.storage (layer 2) imports clearmark.stack.services (layer 6)",
    ]
    (cycle,) = import_cycles(graph)
    assert set(cycle) == {"clearmark.storage", "clearmark.stack.services"}
