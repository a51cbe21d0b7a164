"""Task: a function hooked into a Scheduler's events, with call and resource limits."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from byop_nb.events import Event, EventManager, Subscriber
from byop_nb.history import History
from byop_nb.scheduling.limits import MemoryLimit, TimeLimit, limit_hit, parse_limits
from byop_nb.scheduling.worker import make_limit_exceptions_picklable

if TYPE_CHECKING:
    import pandas as pd

    from byop_nb.scheduling.scheduler import Scheduler

__all__ = ["Task"]

P = ParamSpec("P")
R = TypeVar("R")

_LIMIT_STATUS = {"memory": "memory_limit", "cpu_time": "cpu_time_limit", "wall_time": "wall_time_limit"}


def _optional_positive_int(option: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{option}= must be a positive int or None, got {value!r}")
    if value < 1:
        raise ValueError(f"{option}= must be a positive int or None, got {value!r}")
    return value


def traceback_text(exception: BaseException) -> str:
    """The traceback of `exception` as text: the worker's own when it came from another process."""
    remote = getattr(exception, "remote_traceback", None)
    if isinstance(remote, str):  # set by byop_nb.scheduling.worker.call
        return remote
    cause = exception.__cause__
    if type(cause).__name__ == "_RemoteTraceback":  # a ProcessPoolExecutor's worker traceback
        return str(getattr(cause, "tb", cause))
    return "".join(traceback.format_exception(exception))


class Task(Generic[P, R]):
    """A function the scheduler runs; calling the task submits one call.

    Args:
        function: the function to run in the executor's workers.
        scheduler: the [`Scheduler`][byop_nb.scheduling.Scheduler] that runs it.
        name: the task's name (default: the function's name); unique per scheduler.
        call_limit: at most this many calls are submitted; further calls emit
            CALL_LIMIT_REACHED with their arguments and return None.
        concurrent_limit: at most this many calls run at once; further calls
            emit CONCURRENT_LIMIT_REACHED with their arguments and return None.
        memory_limit: bytes, or `(n, "B"|"KB"|"MB"|"GB")`.
        cpu_time_limit: seconds (whole seconds, at least 1), or `(n, "s"|"m"|"h")`.
        wall_time_limit: seconds, or `(n, "s"|"m"|"h")`; the call is killed within 0.5 s of it.

    Resource limits run each call in a child process of the worker (pynisher).
    A call that breaches one emits DONE, EXCEPTION, the limit's event and, for
    the time limits, TIMEOUT.

    Example:
        ```python
        from byop_nb.scheduling import Scheduler, Task

        def square(x: int) -> int:
            return x * x

        scheduler = Scheduler.with_threads(2)
        task = Task(square, scheduler)

        @scheduler.on_start
        def launch() -> None:
            task(3)

        @task.on_returned
        def show(result: int) -> None:
            print(result)      # 9

        scheduler.run()
        ```
    """

    SUBMITTED: Event[[Future[Any]]] = Event("task-submitted")
    """A call was submitted: `on_submitted(future)`."""
    DONE: Event[[Future[Any]]] = Event("task-done")
    """A call ended with a result or an exception: `on_done(future)`."""
    CANCELLED: Event[[Future[Any]]] = Event("task-cancelled")
    """A call was cancelled (e.g. by `stop` with `wait=False`): `on_cancelled(future)`."""
    RETURNED: Event[[Any]] = Event("task-returned")
    """A call returned: `on_returned(result)`."""
    EXCEPTION: Event[[BaseException]] = Event("task-exception")
    """A call raised: `on_exception(exception)`."""
    TIMEOUT: Event[[Future[Any], BaseException]] = Event("task-timeout")
    """A call hit its CPU or wall-time limit: `on_timeout(future, exception)`."""
    MEMORY_LIMIT_REACHED: Event[[Future[Any], BaseException]] = Event("task-memory-limit-reached")
    """`on_memory_limit_reached(future, exception)`."""
    CPU_TIME_LIMIT_REACHED: Event[[Future[Any], BaseException]] = Event("task-cpu-time-limit-reached")
    """`on_cpu_time_limit_reached(future, exception)` (alias `on_cpu_limit_reached`)."""
    WALL_TIME_LIMIT_REACHED: Event[[Future[Any], BaseException]] = Event("task-wall-time-limit-reached")
    """`on_wall_time_limit_reached(future, exception)` (alias `on_walltime_limit_reached`)."""
    CALL_LIMIT_REACHED: Event[...] = Event("task-call-limit-reached")
    """A call was refused by `call_limit`: `on_call_limit_reached(*args, **kwargs)`."""
    CONCURRENT_LIMIT_REACHED: Event[...] = Event("task-concurrent-limit-reached")
    """A call was refused by `concurrent_limit`: `on_concurrent_limit_reached(*args, **kwargs)`."""

    def __init__(
        self,
        function: Callable[P, R],
        scheduler: Scheduler,
        *,
        name: str | None = None,
        call_limit: int | None = None,
        concurrent_limit: int | None = None,
        memory_limit: MemoryLimit | None = None,
        cpu_time_limit: TimeLimit | None = None,
        wall_time_limit: TimeLimit | None = None,
    ) -> None:
        from byop_nb.scheduling.scheduler import Scheduler

        if not callable(function):
            raise TypeError(f"Task needs a callable function, got {function!r}")
        if not isinstance(scheduler, Scheduler):
            raise TypeError(f"Task needs a byop_nb Scheduler as its second argument, got {scheduler!r}")
        if name is None:
            name = getattr(function, "__name__", None) or type(function).__name__
        if not isinstance(name, str) or not name:
            raise TypeError(f"name= must be a non-empty str, got {name!r}")
        self.function = function
        self.scheduler = scheduler
        self.name: str = name
        self.call_limit = _optional_positive_int("call_limit", call_limit)
        self.concurrent_limit = _optional_positive_int("concurrent_limit", concurrent_limit)
        self.limits = parse_limits(
            memory_limit=memory_limit, cpu_time_limit=cpu_time_limit, wall_time_limit=wall_time_limit
        )
        if self.limits is not None:  # this process will unpickle the limit exceptions
            make_limit_exceptions_picklable()
        self.event_manager = EventManager(name=f"Task({name})")
        em = self.event_manager
        self.on_submitted: Subscriber[[Future[Any]]] = em.subscriber(self.SUBMITTED)
        self.on_done: Subscriber[[Future[Any]]] = em.subscriber(self.DONE)
        self.on_cancelled: Subscriber[[Future[Any]]] = em.subscriber(self.CANCELLED)
        self.on_returned: Subscriber[[Any]] = em.subscriber(self.RETURNED)
        self.on_exception: Subscriber[[BaseException]] = em.subscriber(self.EXCEPTION)
        self.on_timeout: Subscriber[[Future[Any], BaseException]] = em.subscriber(self.TIMEOUT)
        self.on_memory_limit_reached = em.subscriber(self.MEMORY_LIMIT_REACHED)
        self.on_cpu_time_limit_reached = em.subscriber(self.CPU_TIME_LIMIT_REACHED)
        self.on_wall_time_limit_reached = em.subscriber(self.WALL_TIME_LIMIT_REACHED)
        self.on_call_limit_reached: Subscriber[...] = em.subscriber(self.CALL_LIMIT_REACHED)
        self.on_concurrent_limit_reached: Subscriber[...] = em.subscriber(self.CONCURRENT_LIMIT_REACHED)
        # The guide's spellings.
        self.on_cpu_limit_reached = self.on_cpu_time_limit_reached
        self.on_walltime_limit_reached = self.on_wall_time_limit_reached

        self.n_called = 0
        # future -> (call number, args, kwargs, submitted timestamp)
        self._running: dict[Future[Any], tuple[int, tuple[Any, ...], dict[str, Any], float]] = {}
        self.history = History(name=name)
        scheduler._register_task(self)

    # -- calling -----------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Future[R] | None:
        """Submit one call; returns its Future, or None when a limit refused it.

        Raises:
            RuntimeError: the scheduler is not running (call tasks from callbacks,
                or while `scheduler.start()` runs).
        """
        if self.call_limit is not None and self.n_called >= self.call_limit:
            self.event_manager.emit(self.CALL_LIMIT_REACHED, *args, **kwargs)
            return None
        if self.concurrent_limit is not None and len(self._running) >= self.concurrent_limit:
            self.event_manager.emit(self.CONCURRENT_LIMIT_REACHED, *args, **kwargs)
            return None
        return self._submit(self.function, args, kwargs)

    def _submit(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        future = self.scheduler._submit(function, self.limits, args, kwargs, self)
        if future is None:
            return None
        self.n_called += 1
        self._running[future] = (self.n_called, args, kwargs, time.time())
        self.event_manager.emit(self.SUBMITTED, future)
        return future

    @property
    def n_running(self) -> int:
        """Calls submitted and not yet ended."""
        return len(self._running)

    @property
    def counts(self) -> dict[Event[Any], int]:
        """Times each of this task's events was emitted (only emitted events appear)."""
        return dict(self.event_manager.counts)  # type: ignore[arg-type]

    def df(self) -> pd.DataFrame:
        """One row per ended call, as a pandas DataFrame (same as `task.history.df()`)."""
        return self.history.df()

    # -- ending (called by the scheduler in its event loop) ---------------
    def _record(
        self,
        future: Future[Any],
        status: str,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        call, args, kwargs, submitted = self._running.pop(future)
        self.history.record_call(
            self.name,
            call,
            args,
            kwargs,
            status,
            result,
            exception,
            None if exception is None else traceback_text(exception),
            submitted,
            time.time(),
        )

    def _process_cancelled(self, future: Future[Any]) -> None:
        if future not in self._running:
            return
        self._record(future, "cancelled")
        self.event_manager.emit(self.CANCELLED, future)

    def _process_future(self, future: Future[Any], exception: BaseException | None, result: Any) -> None:
        """Record and emit the end of one call that finished: it raised `exception`, or returned `result`.

        The scheduler sends cancelled futures to `_process_cancelled` instead.
        """
        em = self.event_manager
        if exception is None:
            self._record(future, "returned", result=result)
            self._on_result(future, result)
            return
        if getattr(exception, "remote_traceback", None) is None:
            try:  # one place to find the worker's traceback text, whatever the executor
                exception.remote_traceback = traceback_text(exception)  # type: ignore[attr-defined]
            except AttributeError:
                pass
        limit = limit_hit(exception) if self.limits is not None else None
        self._record(future, _LIMIT_STATUS[limit] if limit else "exception", exception=exception)
        em.emit(self.DONE, future)
        em.emit(self.EXCEPTION, exception)
        if limit == "memory":
            em.emit(self.MEMORY_LIMIT_REACHED, future, exception)
        elif limit == "cpu_time":
            em.emit(self.CPU_TIME_LIMIT_REACHED, future, exception)
            em.emit(self.TIMEOUT, future, exception)
        elif limit == "wall_time":
            em.emit(self.WALL_TIME_LIMIT_REACHED, future, exception)
            em.emit(self.TIMEOUT, future, exception)

    def _on_result(self, future: Future[Any], result: Any) -> None:
        """Emit the events of a call that returned (subclasses add their own)."""
        em = self.event_manager
        em.emit(self.DONE, future)
        em.emit(self.RETURNED, result)

    def __repr__(self) -> str:
        return f"Task({self.name!r}, called={self.n_called}, running={len(self._running)}, ended={len(self.history)})"

    def _repr_html_(self) -> str:
        from byop_nb.notebook import display

        return display.task_html(self)
