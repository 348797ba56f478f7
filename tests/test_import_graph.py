"""The import graph of ``harness``, read statically: no circles (not even ones hidden by an import
inside a function) and the directions of docs/architecture.md.

Every ``import`` / ``from ... import`` of a module counts, wherever it is (functions included),
except those under ``if TYPE_CHECKING:`` (never run) and those inside a package ``__init__``'s
``__getattr__`` (a lazy forward of a name to the module that defines it, which imports nothing
until the name is used, and then only downwards). ``from harness.x import name`` is an edge to
``harness.x.name`` when that is a module, else to ``harness.x``. Importing a module also runs its
parent packages' ``__init__``; those edges are left out on purpose, as they would make every
package that imports its own submodules a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "harness"
COMMANDS = ("evaluate", "predict", "embed", "plan", "report", "consolidate", "export", "prepare", "config", "datasets")
#: what ``models/`` and ``data/`` may not import: they take plain arguments
ABOVE_MODELS_AND_DATA = ("harness.parallel", "harness.training", *(f"harness.{c}" for c in COMMANDS))

# Known circles, each a set of modules, still to be removed; the test says when one is gone.
KNOWN_CYCLES: list[frozenset[str]] = []

# Known direction violations (importer, imported), still to be removed; the test says when one is gone.
KNOWN_DIRECTION: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def resolve(name: str) -> str | None:
    """``name`` if it is a harness module, else the longest prefix that is (None outside harness)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_in(source: str, module: str, is_package: bool = False) -> set[str]:
    """The harness modules that the code ``source`` of ``module`` imports (see the module docs)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if is_package and isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            return
        if isinstance(node, ast.Import):
            found.update(filter(None, (resolve(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:  # relative: from this package, or level - 1 packages up
                parts = package.split(".")
                source = ".".join([*parts[: len(parts) - node.level + 1], *([node.module] if node.module else [])])
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.update(filter(None, [submodule if submodule in MODULES else resolve(source)]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    found.discard(module)
    return found


GRAPH = {module: imports_in(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
         for module, path in MODULES.items()}  # fmt: skip


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A circle through the component's first module, as ``[a, b, ..., a]`` (breadth first: short)."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no circle in {component}")


def where(importer: str, imported: str) -> str:
    """``file:lines`` of the import statements in ``importer`` that may name ``imported``."""
    path, name = MODULES[importer], imported.rpartition(".")[2]
    lines = [str(number) for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if "import" in line and name in line]  # fmt: skip
    return f"{path.relative_to(ROOT)}:{','.join(lines) or '?'}"


def test_the_graph_counts_imports_inside_functions_but_not_type_checking_ones():
    source = """
from typing import TYPE_CHECKING
from harness.data import loader
from . import listing
from .files import VideoClipDataset
if TYPE_CHECKING:
    from harness.training import trainer
def build():
    import harness.models.vit
    from harness.export.hf import export_hf_directory
    from harness.models import LinearClassifier
"""
    assert imports_in(source, "harness.data.shards") == {
        "harness.data.loader", "harness.data.listing", "harness.data.files", "harness.models.vit",
        "harness.export.hf", "harness.models",
    }  # fmt: skip
    forward = "def __getattr__(name):\n    from harness.export import model_io\n"
    assert imports_in(forward, "harness", is_package=True) == set(), "a package's lazy forward is no import"
    assert imports_in(forward, "harness.core.errors") == {"harness.export.model_io"}


def test_no_import_circles():
    found = [frozenset(c) for c in strongly_connected(GRAPH)]
    new = [" -> ".join(one_cycle(GRAPH, set(c))) for c in found if c not in KNOWN_CYCLES]
    assert not new, "import circles (make the lower module import nothing of the higher one):\n" + "\n".join(new)
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"these circles are gone: remove them from KNOWN_CYCLES: {gone}"


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def direction_violations() -> set[tuple[str, str]]:
    """(importer, imported) pairs against the rules: nothing imports ``harness.train`` nor another
    command's ``cli`` / ``__main__``; ``models/`` and ``data/`` import nothing above them."""
    found = set()
    for importer, targets in GRAPH.items():
        low = within(importer, "harness.models") or within(importer, "harness.data")
        for target in targets:
            entry_points = [f"harness.{c}" for c in COMMANDS if target in (f"harness.{c}.cli", f"harness.{c}.__main__")]
            if target == "harness.train" or any(not within(importer, package) for package in entry_points):
                found.add((importer, target))
            if low and any(within(target, above) for above in ABOVE_MODELS_AND_DATA):
                found.add((importer, target))
    return found


def test_imports_point_one_way():
    found = direction_violations()
    new = sorted(found - KNOWN_DIRECTION)
    assert not new, "imports against the direction of docs/architecture.md:\n" + "\n".join(
        f"{importer} imports {target} ({where(importer, target)})" for importer, target in new
    )
    gone = sorted(KNOWN_DIRECTION - found)
    assert not gone, f"these imports are gone: remove them from KNOWN_DIRECTION: {gone}"
