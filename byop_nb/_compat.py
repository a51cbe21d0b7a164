"""Every use byop_nb makes of CPython's private insides, in one place, with the versions it was tested on.

byop_nb reads (and in two places replaces) private parts of the standard library:
`concurrent.futures.Future`'s state, a `ProcessPoolExecutor`'s settings, workers,
manager-thread wake-up and call queue, a `ThreadPoolExecutor`'s settings,
multiprocessing's spawn/forkserver launch (copied, without the main module, in
`scheduling.workers._forkserver` and `scheduling.workers._mainless`), and its ForkServer's
state (the warm server of limited calls, `scheduling.workers._warm`). Two modules subclass
a stdlib class whose insides they then use as their own: `scheduling.workers._pool_tuning`
(the pool's wake-up and call queue, only where `THREAD_WAKEUP` / `SAFE_QUEUE` are known) and
`scheduling.workers._forkserver` (`popen_forkserver.Popen`, only where `LAUNCH_WITHOUT_MAIN`).
Those parts are not API: they
change between Python versions. Each is reached here through a named function or
constant, gated on the versions the test suite runs on ([`TESTED`][byop_nb._compat.TESTED]:
CPython 3.11, 3.12 and 3.13; `.ci/run` runs `tests/test_compat.py` on each), and on
any other version checked against the object itself before use. Where a part is
missing the caller falls back to the public way (slower, or without a tuning), or
gets a clear error naming the part and the Python version.

Imported in worker processes: it imports nothing heavy.
"""

from __future__ import annotations

import sys
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import _base as _futures_base
from concurrent.futures import process as _stdlib_pool
from typing import Any, NamedTuple

__all__ = [
    "TESTED",
    "IS_TESTED_VERSION",
    "FUTURE_FINISHED",
    "PoolSettings",
    "process_pool_settings",
    "thread_pool_settings",
    "pool_processes",
    "pool_max_workers",
    "pool_context",
    "set_pool_context",
    "pool_initializer",
    "set_pool_initializer",
    "is_shut_down",
    "THREAD_WAKEUP",
    "pool_wakeup",
    "SAFE_QUEUE",
    "CALL_ITEM",
    "pool_call_queue",
    "LAUNCH_WITHOUT_MAIN",
    "ForkServerState",
    "NO_FORKSERVER",
    "forkserver",
    "forkserver_lock",
    "renew_forkserver_lock",
    "forkserver_state",
    "set_forkserver_state",
    "interpreter_flags",
    "preparation_data_without_main",
    "exit_code_read",
    "InternalsChanged",
]

TESTED: tuple[tuple[int, int], ...] = ((3, 11), (3, 12), (3, 13))
"""The CPython versions whose insides byop_nb was written and tested against."""

IS_TESTED_VERSION: bool = sys.implementation.name == "cpython" and sys.version_info[:2] in TESTED
"""Whether this interpreter is one of `TESTED`: the gates below then trust the known layout."""


class InternalsChanged(RuntimeError):
    """A private part of the standard library that byop_nb needs is not there (another Python version)."""

    def __init__(self, part: str, needed_for: str) -> None:
        version = ".".join(map(str, sys.version_info[:3]))
        tested = ", ".join(".".join(map(str, v)) for v in TESTED)
        super().__init__(
            f"byop_nb needs {part} of the standard library for {needed_for}, and Python {version} "
            f"({sys.implementation.name}) does not have it; byop_nb is tested on CPython {tested}"
        )


# -- concurrent.futures.Future -----------------------------------------------------------------


def _future_layout_holds() -> bool:
    """Whether a finished Future keeps its state, result and exception where 3.11-3.13 keep them."""
    try:
        done: Any = Future()
        done.set_result(1)
        failed: Any = Future()
        error = ValueError()
        failed.set_exception(error)
        finished = _futures_base.FINISHED
        return (
            done._state == finished
            and done._result == 1
            and done._exception is None
            and failed._state == finished
            and failed._exception is error
        )
    except Exception:
        return False


FUTURE_FINISHED: Any = _futures_base.FINISHED if _future_layout_holds() else object()
"""The value of `Future._state` of a finished (not cancelled) future, compared on the scheduler's
hot path (`future._state == FUTURE_FINISHED`, then `future._result` / `future._exception`, read
without the future's lock). Where the layout is not that one, a value no state equals: the
comparison is then always false, and callers take the public path (`done()`, `result()`)."""


# -- ProcessPoolExecutor / ThreadPoolExecutor -----------------------------------------------------


class PoolSettings(NamedTuple):
    """What a stdlib pool was made with: enough to make another like it."""

    max_workers: int
    initializer: Any
    initargs: tuple[Any, ...]
    mp_context: Any = None  # process pools
    max_tasks_per_child: int | None = None  # process pools
    thread_name_prefix: str = ""  # thread pools


def _private(executor: Executor, name: str, needed_for: str) -> Any:
    try:
        return getattr(executor, name)
    except AttributeError:
        raise InternalsChanged(f"{type(executor).__name__}.{name}", needed_for) from None


def process_pool_settings(executor: ProcessPoolExecutor) -> PoolSettings:
    """The settings of a stdlib process pool (`_max_workers`, `_mp_context`, `_initializer`, ...).

    Raises:
        InternalsChanged: this Python's pool keeps them elsewhere.
    """
    why = "making a process pool like a broken one"
    return PoolSettings(
        max_workers=_private(executor, "_max_workers", why),
        initializer=_private(executor, "_initializer", why),
        initargs=_private(executor, "_initargs", why),
        mp_context=_private(executor, "_mp_context", why),
        max_tasks_per_child=getattr(executor, "_max_tasks_per_child", None),
    )


def thread_pool_settings(executor: ThreadPoolExecutor) -> PoolSettings:
    """The settings of a stdlib thread pool (`_max_workers`, `_initializer`, `_thread_name_prefix`, ...).

    Raises:
        InternalsChanged: this Python's pool keeps them elsewhere.
    """
    why = "making a thread pool like a shut-down one"
    return PoolSettings(
        max_workers=_private(executor, "_max_workers", why),
        initializer=_private(executor, "_initializer", why),
        initargs=_private(executor, "_initargs", why),
        thread_name_prefix=getattr(executor, "_thread_name_prefix", "") or "",
    )


def pool_processes(executor: Executor) -> dict[int, Any] | None:
    """A process pool's live worker processes by pid (`_processes`); None for other executors or layouts."""
    if not isinstance(executor, ProcessPoolExecutor):
        return None
    processes = getattr(executor, "_processes", None)
    return processes if isinstance(processes, dict) else None


def pool_max_workers(executor: Executor) -> int | None:
    """How many workers a stdlib pool runs at most (`_max_workers`); None where that is unknown."""
    workers = getattr(executor, "_max_workers", None)
    return workers if isinstance(workers, int) and not isinstance(workers, bool) and workers > 0 else None


def pool_context(executor: ProcessPoolExecutor) -> Any:
    """The multiprocessing context a process pool starts its workers with (`_mp_context`); None if unknown."""
    return getattr(executor, "_mp_context", None)


def set_pool_context(executor: ProcessPoolExecutor, context: Any) -> bool:
    """Have a process pool that started no worker start them with `context`; whether that was done.

    The pool reads `_mp_context` each time it starts a worker (CPython 3.11-3.13); elsewhere it
    is left as it is.
    """
    if not IS_TESTED_VERSION or pool_context(executor) is None or pool_processes(executor) is None:
        return False
    if pool_processes(executor):
        return False
    ex: Any = executor
    ex._mp_context = context
    return True


def pool_initializer(executor: Executor) -> tuple[Any, tuple[Any, ...]]:
    """A stdlib pool's `(initializer, initargs)`.

    Raises:
        InternalsChanged: this Python's pool keeps them elsewhere.
    """
    why = "starting the pool's workers with byop_nb's worker set-up"
    return _private(executor, "_initializer", why), _private(executor, "_initargs", why)


def set_pool_initializer(executor: Executor, initializer: Any, initargs: tuple[Any, ...]) -> None:
    """Replace a stdlib pool's initializer, read each time it starts a worker.

    Raises:
        InternalsChanged: this Python's pool keeps it elsewhere.
    """
    pool_initializer(executor)  # the check
    ex: Any = executor
    ex._initializer, ex._initargs = initializer, initargs


def is_shut_down(executor: Executor) -> bool:
    """Whether a stdlib pool (`_shutdown_thread`, process; `_shutdown`, thread) or the sequential one refuses work."""
    return bool(getattr(executor, "_shutdown_thread", False) or getattr(executor, "_shutdown", False))


THREAD_WAKEUP: Any = getattr(_stdlib_pool, "_ThreadWakeup", None) if IS_TESTED_VERSION else None
"""The class of a process pool's manager-thread wake-up (`concurrent.futures.process._ThreadWakeup`),
which `scheduling.workers._pool_tuning` swaps for a coalescing one; None (no tuning) on untested versions."""

SAFE_QUEUE: Any = getattr(_stdlib_pool, "_SafeQueue", None) if IS_TESTED_VERSION else None
"""The class of a process pool's call queue (`concurrent.futures.process._SafeQueue`), whose `put`
`scheduling.workers._pool_tuning` replaces for small calls; None (no tuning) on untested versions."""

CALL_ITEM: Any = getattr(_stdlib_pool, "_CallItem", None) if IS_TESTED_VERSION else None
"""The class of the items on that queue (`concurrent.futures.process._CallItem`)."""


def pool_wakeup(executor: ProcessPoolExecutor) -> Any:
    """The pool's manager-thread wake-up (`_executor_manager_thread_wakeup`) when it is a `THREAD_WAKEUP`
    (or byop_nb's subclass of it), else None."""
    wakeup = getattr(executor, "_executor_manager_thread_wakeup", None)
    return wakeup if THREAD_WAKEUP is not None and isinstance(wakeup, THREAD_WAKEUP) else None


def pool_call_queue(executor: ProcessPoolExecutor) -> Any:
    """The pool's call queue (`_call_queue`) when it is a `SAFE_QUEUE`, else None."""
    queue = getattr(executor, "_call_queue", None)
    return queue if SAFE_QUEUE is not None and type(queue) is SAFE_QUEUE else None


# -- multiprocessing's launch of spawn and forkserver children ------------------------------------

LAUNCH_WITHOUT_MAIN: bool = IS_TESTED_VERSION and sys.platform != "win32"
"""Whether byop_nb's copies of `popen_spawn_posix.Popen._launch`, `popen_forkserver.Popen._launch`,
`spawn.get_preparation_data` and `ForkServer.ensure_running` (CPython 3.11-3.13, POSIX; see
`scheduling.workers._forkserver` and `scheduling.workers._mainless`) may stand in for the originals,
and the forkserver's state below may be read and set. Elsewhere a process pool keeps
multiprocessing's own launch, whose workers import the main script (an unguarded script is
then refused with a message saying why), and a limited call runs in a child of
multiprocessing's default start method rather than on the warm server
(`scheduling.workers._warm`), which is a ForkServer that byop_nb starts and stops itself."""


class ForkServerState(NamedTuple):
    """Where multiprocessing's ForkServer keeps its running server: all None when none runs."""

    pid: int | None
    alive_fd: int | None  # this process's end of the pipe whose closing ends the server
    address: Any  # the server's socket


NO_FORKSERVER = ForkServerState(None, None, None)
"""The state of a ForkServer that runs no server (set it to forget one)."""


def forkserver() -> Any:
    """This process's one `multiprocessing.forkserver.ForkServer` (`forkserver._forkserver`).

    Raises:
        InternalsChanged: off CPython 3.11-3.13 on POSIX (see `LAUNCH_WITHOUT_MAIN`).
    """
    if not LAUNCH_WITHOUT_MAIN:
        raise InternalsChanged("multiprocessing.forkserver._forkserver", "the warm server of limited calls")
    from multiprocessing import forkserver as module

    return module._forkserver


def forkserver_lock(server: Any) -> Any:
    """The lock a ForkServer holds while it starts or checks its server (`_lock`)."""
    return server._lock


def renew_forkserver_lock(server: Any) -> None:
    """Give a ForkServer a fresh lock: in a forked child, its parent's may be held by a thread that is gone."""
    import threading

    server._lock = threading.Lock()


def forkserver_state(server: Any) -> ForkServerState:
    """Where a ForkServer's running server is (`_forkserver_pid`, `_forkserver_alive_fd`, `_forkserver_address`)."""
    return ForkServerState(
        getattr(server, "_forkserver_pid", None),
        getattr(server, "_forkserver_alive_fd", None),
        getattr(server, "_forkserver_address", None),
    )


def set_forkserver_state(server: Any, state: ForkServerState) -> None:
    """Record a server that byop_nb started (or None of each: forget it) where the ForkServer keeps its own."""
    server._forkserver_pid, server._forkserver_alive_fd, server._forkserver_address = state


def interpreter_flags() -> list[str]:
    """The command-line flags a child interpreter gets from this one (`util._args_from_interpreter_flags`)."""
    from multiprocessing import util

    return list(util._args_from_interpreter_flags())  # type: ignore[attr-defined]


def preparation_data_without_main(name: str) -> dict[str, Any]:
    """`spawn.get_preparation_data(name)` (CPython 3.11-3.13) without the main module's two keys.

    Those keys tell a spawned or forkserver child to import the main script again,
    which byop_nb's children must not; and reading them fails where `__main__` has
    no `__spec__`: a Jupyter kernel's user module, and a process-pool worker forked
    from a kernel.
    """
    import os
    from multiprocessing import context, process, spawn, util

    spawn._check_not_importing_main()  # type: ignore[attr-defined]
    data: dict[str, Any] = {"log_to_stderr": util._log_to_stderr, "authkey": process.current_process().authkey}  # type: ignore[attr-defined]
    if util._logger is not None:  # type: ignore[attr-defined]
        data["log_level"] = util._logger.getEffectiveLevel()  # type: ignore[attr-defined]
    sys_path = [process.ORIGINAL_DIR if entry == "" else entry for entry in sys.path]  # type: ignore[attr-defined]
    data.update(
        name=name,
        sys_path=sys_path,
        sys_argv=sys.argv,
        orig_dir=process.ORIGINAL_DIR,  # type: ignore[attr-defined]
        dir=os.getcwd(),
        start_method=context._default_context.get_start_method(),
    )
    return data


def exit_code_read(process: Any) -> int | None:
    """`process.exitcode`, except for a forkserver child whose exit code nobody has read yet: None then.

    A forkserver child's exit code comes once, as four bytes on its sentinel pipe, and
    `popen_forkserver.Popen.poll` is not thread-safe: when two threads poll at once (a
    broken pool's manager thread joining its workers, and byop_nb saying how they died),
    both may find the pipe ready; one reads the code and the other, at end of file,
    records 255 over it. So for such a child byop_nb only looks at what the pool's own
    thread read (`Popen.returncode`, CPython 3.11-3.13).
    """
    popen = getattr(process, "_popen", None)
    if _POPEN_FORKSERVER is not None and isinstance(popen, _POPEN_FORKSERVER):
        return popen.returncode
    return process.exitcode


try:
    from multiprocessing.popen_forkserver import Popen as _POPEN_FORKSERVER
except ImportError:  # Windows has no forkserver
    _POPEN_FORKSERVER = None  # type: ignore[assignment,misc]
