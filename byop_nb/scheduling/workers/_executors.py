"""Executors: the sequential one, and the keeping of the scheduler's executor.

An [`ExecutorKeeper`][byop_nb.scheduling.workers._executors.ExecutorKeeper] owns the
executor a Scheduler runs on: it submits to it (shipping functions by value
where they need it), watches a process pool's workers so that a death can be
explained, replaces a broken or shut-down executor with a fresh one of the same
settings ([`fresh_like`][byop_nb.scheduling.workers._executors.fresh_like]), kills the
workers of a `wait=False` stop, and shuts it down when a run ends (CPython's
`_ExecutorManagerThread` is the model: one object manages the pool's side).

Vocabulary: workers are *killed* (their whole process family, at once);
executors are *shut down* (politely) or *replaced* (a fresh one takes over).
"""

from __future__ import annotations

import ast
import inspect
import logging
import os
import sys
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from byop_nb import _compat
from byop_nb.scheduling.workers import _pool_tuning, _processes, _ray, _shipping, _worker

__all__ = ["SequentialExecutor", "ExecutorKeeper", "fresh_like", "shut_down", "is_shut_down", "worker_processes"]

logger = logging.getLogger(__name__)


class SequentialExecutor(Executor):
    """Runs each call in the calling thread at `submit`, returning a finished Future.

    Useful for debugging: breakpoints and prints work as in plain Python. The
    byop era's `SequentialExecutor` (same name, same import path as there:
    `byop_nb.scheduling`); `Scheduler.with_sequential()` makes a Scheduler on one.
    A running call cannot be interrupted: a run's `timeout` or `wait=False` takes
    effect when it returns.

    ```python
    from byop_nb.scheduling import Scheduler, SequentialExecutor, Task

    scheduler = Scheduler(SequentialExecutor())
    task = Task(print, scheduler)
    scheduler.on_start(lambda: task("runs in the main process"))
    scheduler.run()
    ```
    """

    def __init__(self) -> None:
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            future.set_exception(e)
        else:
            future.set_result(result)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True


def fresh_like(executor: Executor) -> Executor | None:
    """A new executor with the same settings as `executor`, or None for unknown types."""
    ex: Any = executor  # reads the private settings of the dask executor
    if isinstance(executor, ProcessPoolExecutor):
        settings = _compat.process_pool_settings(executor)
        initializer, initargs = settings.initializer, settings.initargs
        if initializer is _worker.start_worker:  # the pool's own initializer, which byop_nb wrapped
            _parent, initializer, initargs = initargs
            initializer = _shipping.load(initializer) if initializer is not None else None
        return ProcessPoolExecutor(
            max_workers=settings.max_workers,
            mp_context=settings.mp_context,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_child=settings.max_tasks_per_child,
        )
    if isinstance(executor, ThreadPoolExecutor):
        settings = _compat.thread_pool_settings(executor)
        return ThreadPoolExecutor(
            max_workers=settings.max_workers,
            thread_name_prefix=settings.thread_name_prefix,
            initializer=settings.initializer,
            initargs=settings.initargs,
        )
    if isinstance(executor, SequentialExecutor):
        return SequentialExecutor()
    if isinstance(executor, _ray.RayExecutor):
        return executor.fresh()
    if type(executor).__module__ == "distributed.cfexecutor":
        if ex._client.status in ("closed", "closing"):
            return None
        fresh: Executor = ex._client.get_executor(**ex._kwargs)
        return fresh
    return None


def shut_down(executor: Executor, *, wait: bool, cancel_futures: bool) -> None:
    """`executor.shutdown(wait=..., cancel_futures=...)`, also for executors without `cancel_futures`.

    dask's `ClientExecutor.shutdown(wait)` has no `cancel_futures`; with
    `wait=False` it cancels its futures anyway.
    """
    try:
        accepts_cancel = "cancel_futures" in inspect.signature(executor.shutdown).parameters
    except (TypeError, ValueError):
        accepts_cancel = True
    if accepts_cancel:
        executor.shutdown(wait=wait, cancel_futures=cancel_futures)
    else:
        executor.shutdown(wait=wait)


def is_shut_down(executor: Executor) -> bool:
    """Whether `executor` refuses new work (best effort, for the known executor types)."""
    return _compat.is_shut_down(executor)


def worker_processes(executor: Executor) -> list[Any]:
    """The live `multiprocessing.Process` objects of a ProcessPoolExecutor (else empty)."""
    processes = _compat.pool_processes(executor)
    return list(processes.values()) if processes else []


def kill_workers(executor: Executor, processes: list[Any] | None = None) -> None:
    """Kill a process pool's workers and everything they started, then reap them.

    Used by `stop(wait=False)`: the calls running there are abandoned, and no
    process (nor a pynisher child of one) is left behind.
    """
    processes = worker_processes(executor) if processes is None else processes
    _processes.kill_family(processes, reap_roots=False)
    executor.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        p.join(timeout=5)


def _start_workers_with_byop_nb(executor: ProcessPoolExecutor) -> None:
    """Have the pool's workers run `worker.start_worker` first, if none has started yet.

    Each worker then leads its own process group (so that what it leaves behind
    when killed can be killed too) and ends when this process ends, even by SIGKILL.
    The pool's own initializer runs after it.
    """
    initializer, initargs = _compat.pool_initializer(executor)  # read when the pool starts a worker
    if _compat.pool_processes(executor) or initializer is _worker.start_worker:
        return
    if initializer is not None:  # by value where the worker could not import it (it skips `__main__`)
        initializer = _shipping.payload(initializer)
        initargs, _ = _shipping.arguments(tuple(initargs), {})
    _compat.set_pool_initializer(executor, _worker.start_worker, (os.getpid(), initializer, initargs))


def _skip_main(executor: ProcessPoolExecutor) -> bool:
    """Have a spawn or forkserver pool's workers skip the main script, where it can be done (see `_mainless`)."""
    if sys.platform == "win32":
        return _start_method(executor) == "fork"
    from byop_nb.scheduling.workers import _mainless

    return _mainless.adopt(executor)


def _why_main_is_imported(executor: Executor) -> str:
    """Why byop_nb could not start a pool's workers without the main script (for `check_main_guard`)."""
    if sys.platform == "win32":
        return " (on Windows byop_nb starts them with multiprocessing's own spawn)"
    if isinstance(executor, ProcessPoolExecutor) and _compat.pool_processes(executor):
        return " (the pool had started its workers before the Scheduler took it)"
    if not _compat.LAUNCH_WITHOUT_MAIN:
        return f" (byop_nb starts workers without the main script on CPython {_compat.TESTED} only)"
    context = type(_compat.pool_context(executor))  # type: ignore[arg-type]
    return (
        f" (the pool's context, {context.__module__}.{context.__qualname__}, is of a kind of its own, which "
        "byop_nb leaves alone)"
    )


def _is_future(value: Any) -> bool:
    return isinstance(value, Future) or all(
        callable(getattr(value, method, None))
        for method in ("add_done_callback", "cancel", "done", "result", "exception")
    )


def _start_method(executor: Executor) -> str | None:
    context = _compat.pool_context(executor) if isinstance(executor, ProcessPoolExecutor) else None
    return context.get_start_method() if context is not None else None


def check_main_guard(start_method: str | None, why: str = "") -> None:
    """Refuse to start workers that import the main script again from a script's unguarded top level.

    byop_nb's own pools never import it (see `_mainless`); a pool whose context it cannot
    replace does (`why` says which: a context of the user's own kind, Windows): Python
    starts such spawn/forkserver workers by importing the main script again (as
    `__mp_main__`), so the script's top-level code, the whole experiment, would run
    again in each of them, and fail there in multiprocessing's bootstrap with the pool
    reported broken. Caught here instead, in the process that can say why: a script
    (not a notebook, `python -c` or a REPL, which have no file to import) whose
    top-level line that led here is not under `if __name__ == "__main__":`.

    Raises:
        RuntimeError: the script lacks the guard; the message says why and what to do.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not isinstance(path, str):
        return
    frame: Any = sys._getframe(1)
    while frame is not None and not (frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is None:
        return
    line = frame.f_lineno
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):  # not a Python source file we can read: nothing to tell
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _tests_for_main(node.test) and node.lineno <= line <= (node.end_lineno or 0):
            return
    raise RuntimeError(
        f"this script starts worker processes with start_method={start_method!r} from its top level "
        f'({path}, line {line}), outside `if __name__ == "__main__":`, and these workers import the main script '
        f"again{why}: its top-level code (this experiment) would run again in every worker. Put the script's "
        "top-level code under `if __name__ == \"__main__\":` (see 'Safe importing of main module' in the "
        "multiprocessing docs), or give the pool multiprocessing's own context "
        f"(`multiprocessing.get_context({start_method!r})`, or `Scheduler.with_processes(n, "
        f"start_method={start_method!r})`), whose workers byop_nb starts without the main script."
    )


def _tests_for_main(test: ast.expr) -> bool:
    """Whether `test` looks at `__name__` (`__name__ == "__main__"`, or any spelling of it: never refuse a guard)."""
    return any(isinstance(node, ast.Name) and node.id == "__name__" for node in ast.walk(test))


def _unreadable_result(exception: BrokenProcessPool) -> str | None:
    """The error that kept the pool's manager from unpickling a worker's message, if that broke the pool.

    The manager then breaks the pool with the error's traceback text as the cause
    (CPython's `_ExecutorManagerThread.wait_result_broken_or_wakeup`).
    """
    text = getattr(exception.__cause__, "tb", None)
    if not isinstance(text, str) or ("result_reader.recv()" not in text and "_recv_bytes" not in text):
        return None
    last = [line for line in text.strip().strip("'").splitlines() if line.strip()]
    return last[-1].strip() if last else None


class ExecutorKeeper:
    """The executor a Scheduler runs on, and everything done to it (internal to the Scheduler).

    Args:
        executor: the executor to keep.
        terminate: how a `wait=False` end kills running work (see `Scheduler`).
    """

    def __init__(self, executor: Executor, terminate: bool | Callable[[Executor], Any]) -> None:
        self.terminate = terminate
        self._deaths = _processes.DeathWatch()  # of the process pool's workers
        self.executor = executor
        self.broken = False  # a worker died: replace the pool before the next submission

    @property
    def executor(self) -> Executor:
        """The executor in use."""
        return self._executor

    @executor.setter
    def executor(self, executor: Executor) -> None:
        self._executor = executor
        self._ships = isinstance(executor, ProcessPoolExecutor)  # functions may need to travel by value
        imports_main = False  # whether the pool's workers import the main script again
        if isinstance(executor, ProcessPoolExecutor):
            imports_main = not _skip_main(executor)
            _start_workers_with_byop_nb(executor)
            _pool_tuning.tune(executor)
        # A pool whose workers import the main script is checked once, at its first submission.
        self._check_main = imports_main and _start_method(executor) in ("spawn", "forkserver")
        # dask's ClientExecutor hands keyword arguments to `client.submit` (`key=`, `workers=`, `pure=`
        # ... would be taken as dask's own), and by default gives equal calls one key, so they run
        # once: calls go through the worker wrapper, their arguments as data, and never pure.
        self._dask_options: dict[str, Any] | None = None
        self._ray = isinstance(executor, _ray.RayExecutor)
        if type(executor).__module__ == "distributed.cfexecutor":
            self._dask_options = {} if "pure" in getattr(executor, "_kwargs", {}) else {"pure": False}
            _quiet_expected_dask_failures()
        self._forget_processes()

    # -- submitting ----------------------------------------------------------------------
    def submit(
        self,
        function: Callable[..., Any],
        limits: _worker.Limits | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Future[Any]:
        """Submit one call; a pool broken by a dead worker is replaced first (and once more if it breaks now)."""
        if self.broken:
            self.replace("its worker process died")
        if self._check_main:
            check_main_guard(_start_method(self._executor), _why_main_is_imported(self._executor))
            self._check_main = False
        try:
            future = self._submit(function, limits, args, kwargs)
        except BrokenProcessPool:
            self.replace("its worker process died")
            future = self._submit(function, limits, args, kwargs)
        if type(future) is not Future and not _is_future(future):
            raise TypeError(
                f"the executor {self._executor!r} returned {future!r} from submit(), not a Future; byop_nb runs "
                "on executors whose submit() returns a concurrent.futures.Future (or an object with "
                "add_done_callback, cancel, done, result and exception)"
            )
        if self._watching:
            self._note_processes()
        return future

    def _submit(
        self,
        function: Callable[..., Any],
        limits: _worker.Limits | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Future[Any]:
        if self._dask_options is not None:
            # dask pickles with cloudpickle itself; a function shipped by value by byop_nb also brings
            # its notebook cell's source lines, for the worker's tracebacks (see _shipping).
            shipped = _shipping.payload(function)
            return self._executor.submit(_worker.call, shipped, limits, args, kwargs, **self._dask_options)
        if self._ray:
            # Ray pickles with its own copy of cloudpickle: byop_nb ships what needs by-value itself,
            # so that a notebook's classes are the same ones on both sides (see _shipping).
            payload = _shipping.payload(function)
            if args or kwargs:
                args, kwargs = _shipping.arguments(args, kwargs)
            executor: Any = self._executor
            label = getattr(function, "__qualname__", None) or type(function).__name__
            if limits is None and payload is function:
                # As for a process pool: the common case goes without the worker wrapper (a Ray task's
                # arguments are serialized one by one; four fewer cost about a tenth of a no-op's dispatch).
                return executor.submit_labelled(label, function, *args, **kwargs)
            return executor.submit_labelled(label, _worker.call_and_ship, payload, limits, args, kwargs)
        if not self._ships:  # threads, the sequential executor
            if limits is None:
                return self._executor.submit(function, *args, **kwargs)
            return self._executor.submit(_worker.call, function, limits, args, kwargs)
        payload = _shipping.payload(function)
        if args or kwargs:  # by value where a worker could not import them
            args, kwargs = _shipping.arguments(args, kwargs)
        if limits is None and payload is function:
            # The common case goes straight to the executor: the worker wrapper costs a few
            # percent of dispatch throughput, and the remote traceback is recovered on this
            # side (see _shipping.traceback_text).
            return self._executor.submit(function, *args, **kwargs)
        return self._executor.submit(_worker.call_and_ship, payload, limits, args, kwargs)

    # -- watching a process pool's workers, to explain a death ------------------------
    def _forget_processes(self) -> None:
        self._processes: list[Any] = []
        self._watching = True  # until the pool has started all its workers
        self._deaths.close()

    def _note_processes(self) -> None:
        """Keep a list of the process pool's workers, until all have started.

        Pools with `max_tasks_per_child` replace workers as they retire, so those are watched all along.
        """
        executor = self._executor
        procs = _compat.pool_processes(executor)  # a process pool's workers, by pid
        if procs is None:
            self._watching = False
            return
        recycling = getattr(executor, "_max_tasks_per_child", None) is not None
        if recycling or len(procs) != len(self._processes):
            if len(procs) > len(self._processes) and isinstance(executor, ProcessPoolExecutor):
                _pool_tuning.watch_new_workers(executor)  # so that the pool's manager watches the new ones
            self._processes = list(procs.values())
            for process in self._processes:
                self._deaths.watch(process.pid)
        self._watching = recycling or len(procs) < (_compat.pool_max_workers(executor) or 0)

    def explain_broken(self, exception: BrokenProcessPool) -> None:
        """A call failed because its pool broke: name the cause in the exception, replace the pool later."""
        self.broken = True
        if getattr(exception, "_byop_nb_explained", False):
            return
        unreadable = _unreadable_result(exception)
        if unreadable is not None:
            # No worker died: the pool's manager could not unpickle what a worker sent back, and gave up.
            exception.args = (
                f"The process pool broke because what a worker sent back (a result or an exception) could not "
                f"be unpickled in this process: {unreadable}. byop_nb replaces the process pool; later calls "
                "run on new workers.",
            )
        else:
            cause = _processes.describe_deaths(self._processes)
            exception.args = (
                f"{exception.args[0] if exception.args else 'The process pool broke.'} Cause: {cause}. "
                "byop_nb replaces the process pool; later calls run on new workers.",
            )
        exception._byop_nb_explained = True  # type: ignore[attr-defined]

    # -- replacing, killing, shutting down ----------------------------------------------
    def renew(self) -> None:
        """Make sure the executor takes work: replace it if the previous run shut it down."""
        if is_shut_down(self._executor):
            self.replace("it was shut down at the end of the previous run")

    def replace(self, why: str) -> None:
        """Put a fresh executor with the same settings in place of the current one, which is killed.

        Raises:
            RuntimeError: byop_nb does not know how to make a new executor of this kind.
        """
        old = self._executor
        new = fresh_like(old)
        if new is None:
            raise RuntimeError(
                f"the executor {old!r} cannot be used any more ({why}) and byop_nb does not know how to "
                "make a new one of its kind; create a new Scheduler with a fresh executor"
            )
        logger.info("replacing executor %r (%s)", old, why)
        processes = self._processes
        if isinstance(old, ProcessPoolExecutor) and processes:
            kill_workers(old, processes)
        else:
            shut_down(old, wait=False, cancel_futures=True)
        self.executor = new
        self.broken = False

    def kill_running(self) -> None:
        """End the work running now at once (a `wait=False` end), as `terminate` says.

        Raises:
            BaseException: the `terminate=` hook raised; its process pool's workers were killed
                anyway, so that nothing is left behind.
        """
        executor = self._executor
        terminate = self.terminate
        if callable(terminate) and not isinstance(terminate, bool):
            try:
                terminate(executor)
            except BaseException:
                if isinstance(executor, ProcessPoolExecutor):
                    kill_workers(executor, worker_processes(executor) or self._processes)
                else:
                    shut_down(executor, wait=False, cancel_futures=True)
                raise
        elif terminate and isinstance(executor, ProcessPoolExecutor):
            kill_workers(executor, worker_processes(executor) or self._processes)
        else:
            shut_down(executor, wait=False, cancel_futures=True)

    def shutdown(self, *, wait: bool) -> None:
        """Shut the executor down at the end of a run (never raises)."""
        try:
            shut_down(self._executor, wait=wait, cancel_futures=not wait)
        except Exception:  # a dask client that is already closed, ...
            logger.debug("executor shutdown failed", exc_info=True)
        self._forget_processes()
        _worker.release_forkserver()  # started by memory-limited calls run in this process


class _CallFailedHere(logging.Filter):
    """Drops dask's "Compute Failed" log of a byop_nb call: the call's row and events report it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        if not message.startswith("Compute Failed"):
            return True
        return "call(...)" not in record.getMessage() or "'call-" not in record.getMessage()


def _quiet_expected_dask_failures() -> None:
    """An in-process dask worker logs every failing call as an ERROR with its traceback: a red block in
    a notebook for an expected failure (a limit hit), which byop_nb reports in the row and events
    already. Those records of byop_nb's calls (keys `call-...`) are dropped; once per process."""
    worker_logger = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _CallFailedHere) for f in worker_logger.filters):
        worker_logger.addFilter(_CallFailedHere())
