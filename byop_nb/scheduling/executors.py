"""Executors: the sequential one, and the keeping of the scheduler's executor.

An [`ExecutorKeeper`][byop_nb.scheduling.executors.ExecutorKeeper] owns the
executor a Scheduler runs on: it submits to it (shipping functions by value
where they need it), watches a process pool's workers so that a death can be
explained, replaces a broken or shut-down executor with a fresh one of the same
settings ([`fresh_like`][byop_nb.scheduling.executors.fresh_like]), kills the
workers of a `wait=False` stop, and shuts it down when a run ends (CPython's
`_ExecutorManagerThread` is the model: one object manages the pool's side).

Vocabulary: workers are *killed* (their whole process family, at once);
executors are *shut down* (politely) or *replaced* (a fresh one takes over).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from byop_nb.scheduling import _processes, _shipping
from byop_nb.scheduling import worker as _worker

__all__ = ["SequentialExecutor", "ExecutorKeeper", "fresh_like", "shut_down", "is_shut_down", "worker_processes"]

logger = logging.getLogger(__name__)


class SequentialExecutor(Executor):
    """Runs each call in the calling thread at `submit`, returning a finished Future.

    Useful for debugging: breakpoints and prints work as in plain Python.
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
    ex: Any = executor  # reads the private settings of the stdlib and dask executors
    if isinstance(executor, ProcessPoolExecutor):
        return ProcessPoolExecutor(
            max_workers=ex._max_workers,
            mp_context=ex._mp_context,
            initializer=ex._initializer,
            initargs=ex._initargs,
            max_tasks_per_child=ex._max_tasks_per_child,
        )
    if isinstance(executor, ThreadPoolExecutor):
        return ThreadPoolExecutor(
            max_workers=ex._max_workers,
            thread_name_prefix=ex._thread_name_prefix or "",
            initializer=ex._initializer,
            initargs=ex._initargs,
        )
    if isinstance(executor, SequentialExecutor):
        return SequentialExecutor()
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
    return bool(getattr(executor, "_shutdown_thread", False) or getattr(executor, "_shutdown", False))


def worker_processes(executor: Executor) -> list[Any]:
    """The live `multiprocessing.Process` objects of a ProcessPoolExecutor (else empty)."""
    processes = getattr(executor, "_processes", None) if isinstance(executor, ProcessPoolExecutor) else None
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


class ExecutorKeeper:
    """The executor a Scheduler runs on, and everything done to it (internal to the Scheduler).

    Args:
        executor: the executor to keep.
        terminate: how a `wait=False` end kills running work (see `Scheduler`).
    """

    def __init__(self, executor: Executor, terminate: bool | Callable[[Executor], Any]) -> None:
        self.terminate = terminate
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
        # dask's ClientExecutor hands keyword arguments to `client.submit` (`key=`, `workers=`, `pure=`
        # ... would be taken as dask's own), and by default gives equal calls one key, so they run
        # once: calls go through the worker wrapper, their arguments as data, and never pure.
        self._dask_options: dict[str, Any] | None = None
        if type(executor).__module__ == "distributed.cfexecutor":
            self._dask_options = {} if "pure" in getattr(executor, "_kwargs", {}) else {"pure": False}
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
        try:
            future = self._submit(function, limits, args, kwargs)
        except BrokenProcessPool:
            self.replace("its worker process died")
            future = self._submit(function, limits, args, kwargs)
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
        payload = _shipping.payload(function) if self._ships else function
        if self._dask_options is not None:
            return self._executor.submit(_worker.call, payload, limits, args, kwargs, **self._dask_options)
        if limits is None and payload is function:
            # The common case goes straight to the executor: the worker wrapper costs a few
            # percent of dispatch throughput, and the remote traceback is recovered on this
            # side (see _shipping.traceback_text).
            return self._executor.submit(function, *args, **kwargs)
        return self._executor.submit(_worker.call, payload, limits, args, kwargs)

    # -- watching a process pool's workers, to explain a death ------------------------
    def _forget_processes(self) -> None:
        self._processes: list[Any] = []
        self._watching = True  # until the pool has started all its workers

    def _note_processes(self) -> None:
        """Keep a list of the process pool's workers, until all have started.

        Pools with `max_tasks_per_child` replace workers as they retire, so those are watched all along.
        """
        executor = self._executor
        procs = getattr(executor, "_processes", None)  # a process pool's workers, by pid
        if procs is None:
            self._watching = False
            return
        recycling = getattr(executor, "_max_tasks_per_child", None) is not None
        if recycling or len(procs) != len(self._processes):
            self._processes = list(procs.values())
        self._watching = recycling or len(procs) < getattr(executor, "_max_workers", 0)

    def explain_broken(self, exception: BrokenProcessPool) -> None:
        """A call failed because its pool broke: name the cause in the exception, replace the pool later."""
        self.broken = True
        if getattr(exception, "_byop_nb_explained", False):
            return
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
        """End the work running now at once (a `wait=False` end), as `terminate` says."""
        executor = self._executor
        terminate = self.terminate
        if callable(terminate) and not isinstance(terminate, bool):
            terminate(executor)
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
