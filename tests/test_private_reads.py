"""No module reads another class's underscore names: it uses their public read API.

Read from the source (AST), as tests/test_layering.py reads the imports. A read
`obj._name` is one where `obj` is not `self`, `cls` or `super()`, `_name` is
neither a dunder (`__name__`) nor an Enum sunder (`_value_`), and no class or
function of the reading module defines `_name` (a method, a class attribute,
an attribute it assigns, a `__slots__` entry, a module global): that is, it is
another module's private name.

The only reads left are of internals that are not byop_nb's: CPython's (a
process pool's queues, a Future's fields, the forkserver) and a library's
(dask's client, Optuna's trial id). They are listed below by module, with the
reason; `byop_nb/_compat.py`, where CPython's internals are read in one place,
is exempt as a whole. A new read of a byop_nb class's private name fails here:
give the class a public, documented read API instead (a property, a method).
"""

from __future__ import annotations

import ast
from pathlib import Path

import byop_nb

PACKAGE = Path(byop_nb.__file__).parent

# Names whose reading is public API though they start with "_".
PUBLIC_ANYWAY = {"_getframe", "_exit"}  # sys._getframe, os._exit: documented functions

# The one module that reads CPython's internals on purpose, and all of them (see its docstring).
EXEMPT_MODULES = {"_compat.py"}

# Internals of CPython and of libraries, by module (path below byop_nb/): not byop_nb's own classes.
NOT_OURS = {
    "optimization/optuna_optimizer.py": {"_trial_id"},  # Optuna's FrozenTrial id (its storage API takes it)
    "scheduling/workers/_executors.py": {"_client"},  # dask's executor
    "scheduling/comms.py": {"_client"},  # dask's ClientExecutor: its client
    "scheduling/scheduler.py": {"_state", "_result", "_exception"},  # a stdlib Future's fields, read lock-free
    "scheduling/workers/_pool_tuning.py": {
        "_reader",
        "_writer",
        "_buffer",
        "_closed",
        "_notempty",
        "_sem",
        "_start_thread",
        "_thread",
        "_wlock",
    },  # concurrent.futures.process and multiprocessing.queues
}


def defined_names(tree: ast.AST) -> set[str]:
    """Every name the module defines: functions, classes, assigned names and attributes, slot strings."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("_"):
            names.add(node.value)  # __slots__ entries, names handed to getattr/setattr
    return names


def is_private(name: str) -> bool:
    dunder = name.startswith("__") and name.endswith("__")
    sunder = len(name) > 2 and name.startswith("_") and name.endswith("_") and not name.startswith("__")
    return name.startswith("_") and not dunder and not sunder and name not in PUBLIC_ANYWAY


def private_reads(source: str) -> list[tuple[int, str, str]]:
    """`(line, owner expression, name)` of each read of another module's private name in `source`."""
    tree = ast.parse(source)
    own = defined_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not is_private(node.attr) or node.attr in own:
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
            continue
        found.append((node.lineno, ast.unparse(owner), node.attr))
    return found


def test_no_module_reads_another_modules_private_names() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in EXEMPT_MODULES:
            continue
        allowed = NOT_OURS.get(relative, set())
        for line, owner, name in private_reads(path.read_text()):
            if name not in allowed:
                offenders.append(f"byop_nb/{relative}:{line}: {owner}.{name}")
    assert not offenders, (
        "these read another module's private names; give the class a public read API instead:\n" + "\n".join(offenders)
    )


def test_the_allowed_internals_are_still_read() -> None:
    """An allowance nobody needs any more goes: the list stays the list of what is read."""
    stale = []
    for relative, names in NOT_OURS.items():
        path = PACKAGE / relative
        read = {name for _, _, name in private_reads(path.read_text())} if path.exists() else set()
        stale.extend(f"byop_nb/{relative}: {name}" for name in sorted(names - read))
    assert not stale, "allowed but no longer read (remove them from NOT_OURS):\n" + "\n".join(stale)


def test_the_check_finds_a_read_of_another_classs_private_name() -> None:
    source = """
from byop_nb.scheduling import Scheduler

class Mine:
    def __init__(self) -> None:
        self._own = 1

    def peek(self, scheduler: Scheduler, other: "Mine") -> object:
        return scheduler._queue, other._own, self._own, scheduler.state, scheduler.__class__
"""
    assert private_reads(source) == [(9, "scheduler", "_queue")]


def test_only_the_jupyter_module_looks_ipython_up() -> None:
    """One home for what knows about Jupyter: `byop_nb/_jupyter.py` (the notebook skin, which only
    runs in a kernel, imports IPython's display itself)."""
    knowing = sorted(
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if '"IPython"' in path.read_text() or "get_ipython" in path.read_text()
    )
    assert knowing == ["_jupyter.py"], knowing
