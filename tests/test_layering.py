"""The package's layering, read from its source (AST): imports point down, and no module imports itself back.

Layers, bottom to top: the vocabularies (`events`, `_status`, `_journal`, `_text`); the
history and its HTML view (`history`, `_html`); the engine (`scheduling`);
optimization; the notebook skin (`notebook`); the package's `__init__`.
Imports under `if TYPE_CHECKING:` are for type checkers only and are not counted;
imports inside functions (lazy ones) are.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import byop_nb

PACKAGE = Path(byop_nb.__file__).parent

LAYERS = {
    "byop_nb.events": 0,
    "byop_nb._status": 0,
    "byop_nb._journal": 0,
    "byop_nb._text": 0,
    "byop_nb._frames": 0,
    "byop_nb._compat": 0,  # CPython's private parts, used by scheduling (it imports only the stdlib)
    "byop_nb._jupyter": 0,
    "byop_nb._html": 1,
    "byop_nb.history": 1,
    "byop_nb.scheduling": 2,
    "byop_nb.optimization": 3,
    "byop_nb.notebook": 4,
    "byop_nb": 5,
}

# The one import of the notebook skin from below it: Scheduler.dashboard(), lazily.
ALLOWED_UPWARD = {("byop_nb.scheduling.scheduler", "dashboard", "byop_nb.notebook")}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module
    function: str | None  # the function it is imported in (None: at module level)
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, *, type_only_too: bool = False) -> list[Import]:
    path = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                for other in (child.body + child.orelse) if type_only_too else child.orelse:
                    visit(other, function)
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(name, alias.name, function, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + [base]).strip(".")
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.append(Import(name, sub if sub in MODULES else base, function, child.lineno))
            visit(child, function)

    visit(tree, None)
    return [i for i in found if i.target == "byop_nb" or i.target.startswith("byop_nb.")]


ALL_IMPORTS = [i for name in MODULES for i in imports_of(name)]


def layer(module: str) -> int:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def allowed(i: Import) -> bool:
    return any(
        i.module == module and i.function == function and (i.target == target or i.target.startswith(target + "."))
        for module, function, target in ALLOWED_UPWARD
    )


def test_the_walker_sees_the_package_and_its_imports() -> None:
    # A walker that found nothing would pass every other test here.
    assert {"byop_nb.scheduling.scheduler", "byop_nb.scheduling.task", "byop_nb.notebook.dashboard"} <= set(MODULES)
    pairs = {(i.module, i.target) for i in ALL_IMPORTS}
    assert ("byop_nb.scheduling.task", "byop_nb.scheduling.scheduler") in pairs
    assert ("byop_nb.scheduling.scheduler", "byop_nb.notebook") in pairs  # the allowed one, lazily
    assert not any(i.target == "byop_nb.scheduling.task" for i in ALL_IMPORTS if i.module.endswith("scheduler"))


def test_nothing_below_the_notebook_skin_imports_it_but_scheduler_dashboard() -> None:
    wrong = [
        i
        for i in ALL_IMPORTS
        if (i.target == "byop_nb.notebook" or i.target.startswith("byop_nb.notebook."))
        and not (i.module == "byop_nb.notebook" or i.module.startswith("byop_nb.notebook."))
        and not allowed(i)
    ]
    assert wrong == []


def test_every_import_points_to_the_same_layer_or_below() -> None:
    upward = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in ALL_IMPORTS
        if layer(i.target) > layer(i.module) and not allowed(i) and i.module != "byop_nb"
    ]
    assert upward == []


def test_events_imports_nothing_of_byop_nb_but_the_jupyter_module() -> None:
    """`events` stands alone, but for `_jupyter` (a notebook cell's id), which imports nothing of byop_nb."""
    assert [i.target for i in ALL_IMPORTS if i.module == "byop_nb.events"] == ["byop_nb._jupyter"]
    assert [i.target for i in ALL_IMPORTS if i.module == "byop_nb._jupyter"] == []


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that import each other (directly or around a circle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def test_no_import_cycles_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for i in ALL_IMPORTS:
        if not allowed(i):
            graph.setdefault(i.module, set()).add(i.target)
    assert strongly_connected(graph) == []


def test_no_import_cycles_between_modules_type_only_imports_included() -> None:
    """Imports under `if TYPE_CHECKING:` too: a protocol (`scheduling.engine._call.TaskLike`) or a loose type
    (`_html`'s views) stands where a type-only import would close a circle. The one circle left is
    `Scheduler.dashboard()`'s lazy import of the notebook skin (allowed above)."""
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        for i in imports_of(name, type_only_too=True):
            if not allowed(i):
                graph.setdefault(i.module, set()).add(i.target)
    assert strongly_connected(graph) == []


@pytest.mark.parametrize(
    "graph, cycles",
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
        ({"a": {"a"}}, [["a"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], cycles: list[list[str]]) -> None:
    assert strongly_connected(graph) == cycles


def test_modules_stay_short_enough_to_read() -> None:
    """The house after issue 26: `scheduler.py` at most 600 lines, no module above 700."""
    lines = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert lines["byop_nb.scheduling.scheduler"] <= 600, lines["byop_nb.scheduling.scheduler"]
    assert {name: n for name, n in lines.items() if n > 700} == {}
