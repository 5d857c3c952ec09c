"""The package's layers, checked from its own imports (docs/architecture.md).

Each package may import from its own layer and the layers below it, never from one
above: a module that needs something from above is in the wrong layer, or the thing
is. The check reads every `import` in `src/modelport` with `ast` (imports inside
functions included: a lazy import is still a dependency; `if TYPE_CHECKING:` blocks
excluded, they never run), so it needs no import-linter and runs in a second.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "modelport"

# Lowest first. "" is the package root: a handful of ground-floor modules (settings,
# errors, the value types of a generation, the caller, the server's policy, the stop
# filter) that everything may use and that use nothing above them.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"", "schemas"}),
    frozenset({"store", "migrations"}),
    frozenset({"limits"}),
    frozenset({"observability"}),
    frozenset({"engine"}),
    frozenset({"prompts"}),
    frozenset({"vendors"}),
    frozenset({"catalogue"}),
    frozenset({"inference"}),
    frozenset({"batches"}),
    frozenset({"compat"}),
    frozenset({"api"}),
    frozenset({"cli"}),
)
ROOT_MODULES_AT_MOST = 7  # __init__ and the ground floor
MODULE_LINES_AT_MOST = 500


def layer_of(module: str) -> int:
    """`modelport.inference.service` -> the index of the `inference` layer."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else ""
    for index, packages in enumerate(LAYERS):
        if top in packages:
            return index
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS and to docs/architecture.md")


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(source: str, module: str) -> Iterator[str]:
    """Every modelport module `source` imports (`from modelport.x import y` gives
    `modelport.x.y` when y is a module, else `modelport.x`)."""
    package_parts = module.split(".")

    def visit(node: ast.AST) -> Iterator[str]:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                yield from visit(child)
            return
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.split(".")[0] == "modelport")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package_parts[: len(package_parts) - node.level]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] == "modelport":
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    path = PACKAGE.parent / candidate.replace(".", "/")
                    yield candidate if path.with_suffix(".py").exists() or path.is_dir() else base
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(ast.parse(source))


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        module = module_name(path)
        graph[module] = set(imported_modules(path.read_text(encoding="utf-8"), module)) - {module}
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def test_no_module_imports_from_a_layer_above_it() -> None:
    assert upward_imports(import_graph()) == []


def test_there_are_no_import_cycles() -> None:
    assert import_cycles(import_graph()) == []


def test_the_check_sees_an_upward_import_and_a_cycle() -> None:
    """The checker itself: a store module importing the service is reported, and two
    modules importing each other (one lazily, inside a function) form a cycle."""
    upward = {"modelport.store.repo": set(imported_modules("from modelport.inference import service\n", "x"))}
    assert upward_imports(upward) == ["modelport.store.repo (layer 1) imports modelport.inference.service (layer 8)"]
    lazy = "def f():\n    from modelport.cli import main\n"
    guarded = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from modelport.cli import console\n"
    graph = {
        "modelport.cli.main": set(imported_modules("from modelport.cli import console\n", "modelport.cli.main")),
        "modelport.cli.console": set(imported_modules(lazy, "modelport.cli.console")),
        "modelport.cli.chat": set(imported_modules(guarded, "modelport.cli.chat")),
    }
    assert import_cycles(graph) == [["modelport.cli.console", "modelport.cli.main"]]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_a_module_holds_one_idea(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MODULE_LINES_AT_MOST, f"{lines} lines: split it by idea"


def test_the_package_root_holds_only_the_ground_floor() -> None:
    root_modules = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(root_modules) <= ROOT_MODULES_AT_MOST, root_modules
