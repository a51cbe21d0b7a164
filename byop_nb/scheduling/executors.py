"""Executors: the sequential one, fresh copies of known ones, and killing process workers.

The scheduler replaces its executor in two situations: a new run after the last
one shut the executor down, and a process pool broken by a worker that died.
Both use [`fresh_like`][byop_nb.scheduling.executors.fresh_like], which knows how to make a new executor with
the same settings for the executor types shipped with Python and dask.
"""

from __future__ import annotations

import inspect
import signal
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

__all__ = ["SequentialExecutor", "fresh_like", "kill_workers", "worker_processes", "describe_deaths", "shut_down"]


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
    import psutil

    processes = worker_processes(executor) if processes is None else processes
    family: list[psutil.Process] = []
    for p in processes:
        try:
            proc = psutil.Process(p.pid)
            family.extend(proc.children(recursive=True))
            family.append(proc)
        except (psutil.NoSuchProcess, TypeError, ValueError):
            continue
    for proc in family:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    executor.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        p.join(timeout=5)
    psutil.wait_procs(family, timeout=5)


def describe_deaths(processes: list[Any], *, wait: float = 1.0) -> str:
    """Say how the processes in `processes` that died on their own ended.

    The pool reports a death as soon as the worker's sentinel closes, which can be
    a moment before the kernel has its exit status; so wait (at most `wait`
    seconds, only on a broken pool) until a death is known or every exit status is.
    """
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        codes = [p.exitcode for p in processes]
        if None not in codes or any(c is not None and c != -signal.SIGTERM for c in codes):
            break
        time.sleep(0.005)
    reasons = []
    for p in processes:
        code = p.exitcode
        if code is None or code == -signal.SIGTERM:  # alive, or terminated by the pool itself
            continue
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            extra = " (possibly the out-of-memory killer)" if -code == signal.SIGKILL else ""
            reasons.append(f"worker process {p.pid} was killed by {name}{extra}")
        else:
            reasons.append(f"worker process {p.pid} exited with code {code} (os._exit or sys.exit in the worker)")
    if not reasons:
        return "a worker process died abruptly"
    return "; ".join(reasons)
