"""The warm server that limited calls are forked from: what it imports, and when it starts again.

A call with a memory, CPU-time or wall-time limit runs in a child process (pynisher
sets the limits there). The child is forked from a *warm server*: multiprocessing's
forkserver of the process that runs the call (a worker, or the main process for a
thread pool), a fresh single-threaded interpreter that has already imported what the
calls need. So a limited call costs a fork of a warm process, not an import: a
function that imports scikit-learn in its body finds it imported.

What the server imports ([`preload`][byop_nb.scheduling.workers._warm.preload]):

* byop_nb's worker side, pynisher, cloudpickle (every limited call needs them);
* what the function needs, read off it before its first call
  ([`modules_for`][byop_nb.scheduling.workers._warm.modules_for]): its own module, the
  modules its code imports (`import x` and `from x import y` anywhere in its body
  and nested functions), and the modules of the globals it names;
* what calls turned out to import (`learn`): each child reports the modules it
  imported that the server had not. When a call imported many
  (`RESTART_AT`), the server starts again with them once no limited call of this
  process is running, at most `MAX_RESTARTS` times per process. (A function whose
  code imports what the server lacks makes it start again too, once, when idle.)

The server gets its list (and the starting process's `sys.path`) through an environment variable read by
[`warm_up`][byop_nb.scheduling.workers._warm.warm_up], its one preloaded module of ours,
which imports each name and tolerates any failure (multiprocessing's own preload
would die on an import that raises anything but ImportError). It then freezes the
garbage collector's view of what it imported (`gc.freeze`), so that children do not
copy those pages by merely collecting.

The server runs no Python thread: nothing here starts one in it. A native library it
imports may start its own pool (OpenBLAS does); such libraries shut their pools down
around a fork (`pthread_atfork`).

Imported in worker processes and, as the preload, in the server: it imports nothing heavy.
"""

from __future__ import annotations

import dis
import functools
import json
import os
import signal
import sys
import threading
import types
from collections.abc import Callable, Iterable
from typing import Any

from byop_nb import _compat

__all__ = ["modules_for", "preload", "finished", "learn", "server_pid", "server_died", "stop", "release", "warm_up"]

ENVIRONMENT = "BYOP_NB_WARM_IMPORTS"
"""The variable that carries the server's import list from the process starting it to `warm_up`."""

BASE = ("byop_nb.scheduling.workers._worker", "pynisher", "cloudpickle", "ctypes")
"""What every limited call needs, imported by every warm server."""

RESTART_AT = 10
"""A call that imported at least this many modules the server lacked makes it start again, warmer."""

MAX_RESTARTS = 3
"""At most this many restarts for what calls imported, per process (a function that imports something new each call)."""

_lock = threading.Lock()
_wanted: set[str] = set()  # what the next server start imports, beyond BASE
_loaded: frozenset[str] = frozenset()  # what the running server was started with
_stale = False  # a call imported enough that the server should start again when idle
_restarts = 0
_owner: int | None = None  # the process that started the running server
_in_flight = 0  # limited calls of this process running now (threads share the server)
_scanned: dict[Any, frozenset[str]] = {}


def modules_for(function: Callable[..., Any]) -> frozenset[str]:
    """The importable modules that `function` needs, read off its code without running it.

    Its own module (unless `__main__`), every module its body imports (`import a.b`,
    `from a.b import c` also gives `a.b.c`, which may be a module), and the module of
    each global it names and each variable it closes over (a module, or a class or
    function defined in one). Names whose
    top-level package cannot be found here are left out; nothing is imported.

    >>> import json
    >>> def f():
    ...     from collections import OrderedDict
    ...     return json.dumps(OrderedDict())
    >>> sorted(modules_for(f) & {"json", "collections", "collections.OrderedDict"})
    ['collections', 'collections.OrderedDict', 'json']
    """
    try:
        return _scanned[function]
    except (KeyError, TypeError):
        pass
    names: set[str] = set()
    target = function
    while isinstance(target, (types.MethodType, functools.partial)):
        target = target.__func__ if isinstance(target, types.MethodType) else target.func
    code = getattr(target, "__code__", None)
    if code is None and callable(target):  # a callable instance: its class's __call__
        code = getattr(vars(type(target)).get("__call__"), "__code__", None)
        names.add(type(target).__module__)
    names.add(getattr(target, "__module__", None) or "__main__")
    values = list(_closure_values(target))
    global_values = getattr(target, "__globals__", {})
    for each in _code_objects(code):
        names.update(_imports_of(each))
        values.extend(global_values.get(name) for name in each.co_names)
    for value in values:
        if isinstance(value, types.ModuleType):
            names.add(value.__name__)
        elif value is not None:
            module = getattr(value, "__module__", None)
            if isinstance(module, str):
                names.add(module)
    found = frozenset(n for n in names if _importable(n))
    try:
        if len(_scanned) > 256:
            _scanned.clear()
        _scanned[function] = found
    except TypeError:  # unhashable
        pass
    return found


def _closure_values(function: Any) -> Iterable[Any]:
    for cell in getattr(function, "__closure__", None) or ():
        try:
            yield cell.cell_contents
        except ValueError:  # an empty cell
            continue


def _code_objects(code: types.CodeType | None) -> Iterable[types.CodeType]:
    if code is None:
        return
    stack = [code]
    while stack:
        each = stack.pop()
        yield each
        stack.extend(c for c in each.co_consts if isinstance(c, types.CodeType))


def _imports_of(code: types.CodeType) -> set[str]:
    found: set[str] = set()
    module: str | None = None
    for instruction in dis.get_instructions(code):
        if instruction.opname == "IMPORT_NAME":
            module = instruction.argval
            found.add(module)
        elif instruction.opname == "IMPORT_FROM" and module is not None:
            found.add(f"{module}.{instruction.argval}")
    return found


def _importable(name: str) -> bool:
    top = name.partition(".")[0]
    if not top.isidentifier() or top in ("__main__", "__mp_main__"):
        return False
    if top in sys.builtin_module_names:
        return True
    if top in sys.modules:
        return getattr(sys.modules[top], "__spec__", None) is not None
    import importlib.util

    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def preload(function: Callable[..., Any]) -> None:
    """Before a limited call of `function` in this process: a warm server is running that imported what it needs.

    Starts the server (or starts it again, warmer, when nothing of this process is
    running on the old one) and counts the call as running until `finished()`.
    """
    global _loaded, _stale, _restarts, _in_flight, _owner
    from byop_nb.scheduling.workers._forkserver import start_server

    needed = modules_for(function)
    with _lock:
        _own_forkserver()
        _wanted.update(needed)
        running = _running_pid() is not None
        warmer = bool(needed - _loaded) or (_stale and _restarts < MAX_RESTARTS)
        if not running or (_in_flight == 0 and warmer):
            if running:
                _restarts += not (needed - _loaded)  # only learning is bounded: a new function is warmed always
            stop()  # the old server, alive or dead (then reaped, its pipe and socket file gone); none: nothing
            names = sorted(_wanted)
            wanted = {"parent": os.getpid(), "sys_path": sys.path, "modules": [*BASE, *names]}
            os.environ[ENVIRONMENT] = json.dumps(wanted)
            try:
                start_server(["byop_nb.scheduling.workers._warm"])
            finally:
                os.environ.pop(ENVIRONMENT, None)
            _loaded = frozenset(names)
            _stale = False
            _owner = os.getpid()
            _wait_until_serving()
        _in_flight += 1


def _wait_until_serving() -> None:
    """Return once the server that was just started has imported its list and forks.

    The server accepts a request only after its imports (seconds, for scikit-learn), and a
    call's wall-time limit counts from the call's start: without this wait, the first
    limited call of a worker would spend its limit on the server's warm-up. One no-op
    child, started and waited for, is the proof.
    """
    from byop_nb.scheduling.workers._forkserver import CONTEXT

    child = CONTEXT.Process(target=_serving, name="byop_nb-warm-server-ready")
    child.start()
    child.join()
    child.close()


def _serving() -> None:
    """The no-op child of `_wait_until_serving`."""


def finished() -> None:
    """A limited call that `preload` counted has ended."""
    global _in_flight
    with _lock:
        _in_flight -= 1


def learn(imported: Iterable[str]) -> None:
    """A child reports the modules its call imported that its server had not: import them next time."""
    global _stale
    names = [n for n in imported if n not in _loaded]
    if not names:
        return
    with _lock:
        _wanted.update(names)
        if len(names) >= RESTART_AT:
            _stale = True


def server_pid() -> int | None:
    """The pid of this process's warm server (its forkserver), if one is running."""
    return _compat.forkserver_state(_compat.forkserver()).pid


def _running_pid() -> int | None:
    pid = server_pid()
    if pid is None or server_died(pid) is not None:
        return None
    return pid


def server_died(pid: int) -> str | None:
    """How this process's warm server `pid` ended ("was killed by SIGKILL", "exited with code 1"), or None if it runs.

    Looks without reaping it: multiprocessing reaps it when it next needs the server.
    """
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped already, or not our child
        return "ended"
    if info is None:
        return None
    if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
        try:
            return f"was killed by {signal.Signals(info.si_status).name}"
        except ValueError:
            return f"was killed by signal {info.si_status}"
    return f"exited with code {info.si_status}"


def stop() -> None:
    """Stop this process's warm server, if it runs (its children end with it: see `_worker.die_with_parent`)."""
    from multiprocessing import util

    server = _compat.forkserver()
    with _compat.forkserver_lock(server):
        pid, alive, address = _compat.forkserver_state(server)
        if pid is None:  # none of ours (a forkserver's child holds its parent's address and pipe: not to touch)
            return
        _compat.set_forkserver_state(server, _compat.NO_FORKSERVER)
    if alive is not None:
        try:
            os.close(alive)
        except OSError:
            pass
    try:
        os.kill(pid, signal.SIGKILL)  # not only the alive pipe: a process forked meanwhile may hold its end
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    if address is not None and not util.is_abstract_socket_namespace(address):
        try:
            os.unlink(address)
        except OSError:
            pass


def release() -> None:
    """Stop the warm server if this process started it (at a run's end in the main process); idempotent.

    What it learned to import stays: the next run's server starts warm.
    """
    global _owner, _loaded
    with _lock:
        if _owner != os.getpid() or _in_flight:
            return
        _owner = None
        _loaded = frozenset()
        stop()


def _own_forkserver() -> None:
    """Make sure the forkserver this process is about to use is its own.

    multiprocessing keeps one forkserver per process in a module-level object; a
    forked child (a process-pool worker) inherits its parent's, if the parent
    started one, and then fails to use it ("No child processes"). Forget such an
    inherited server, so that this process starts its own.
    """
    global _loaded
    server = _compat.forkserver()
    pid, alive_fd, _address = _compat.forkserver_state(server)
    if pid is None:
        return
    try:  # a server this process started is its child, alive or not yet reaped
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return
    except ChildProcessError:  # another process's
        pass
    # Its alive-pipe end is this process's copy: close it, so that the server
    # still ends when its real owner does.
    _compat.set_forkserver_state(server, _compat.NO_FORKSERVER)
    _compat.renew_forkserver_lock(server)
    _loaded = frozenset()
    if alive_fd is not None:
        try:
            os.close(alive_fd)
        except OSError:
            pass


def warm_up() -> None:
    """In the warm server, as it starts: import what `ENVIRONMENT` lists, each failure tolerated; freeze them for gc."""
    wanted = json.loads(os.environ.pop(ENVIRONMENT, "{}"))
    if wanted.get("parent") != os.getppid() or sys.argv[:1] != ["-c"]:
        return  # not the server it was meant for (another child, started meanwhile, inherited the variable)
    # multiprocessing's forkserver leaves its sys.path as a fresh interpreter's: the
    # modules next to a script, or added to the path, are found as in the worker.
    sys.path[:] = wanted.get("sys_path", sys.path)
    for name in wanted.get("modules", ()):
        try:
            __import__(name)
        except BaseException:  # a module that fails here fails in the call, where it is reported
            pass
    import gc

    gc.collect()
    gc.freeze()


if os.environ.get(ENVIRONMENT) is not None and __name__ == "byop_nb.scheduling.workers._warm":
    warm_up()
