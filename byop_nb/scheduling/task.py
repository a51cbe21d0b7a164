"""Task: a function hooked into a Scheduler's events, with call and resource limits.

Where things happen, for a call of a Task:

* submitted: `Task.__call__` (limits refuse it there) -> `Task._submit`, which
  makes its [`Call`][byop_nb.scheduling._call.Call] and hands it to the scheduler;
* ended: the scheduler hands the Call back to `Task._end`, which decides its
  [`Status`][byop_nb.scheduling._call.Status] (the only place a plain Task's
  status is decided), records its row (`_record`) and emits its events (`_emit`).

The call ends once, in `Task._conclude`: `call.end(status, result, exception)`
sets how it ended on the Call. Subclasses (`CommTask`, `Trial.Task`) extend a
Task through hooks that each take the Call alone:

* `_function_for(call)`: what the executor runs for this call;
* `_row_status(call)`: the status of its row, the one decision a subclass
  overrides (a Trial.Task makes its report there: `call.report`);
* `_record(call)`: its row;
* `_emit(call)`: its events.

What a subclass keeps about a call between its hooks has a named slot on the
Call: `call.comm` (a CommTask's comm state), `call.report` (a trial's report).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, ParamSpec, TypedDict, TypeVar

from byop_nb._text import bounded_repr, cell_value, clipped
from byop_nb.events import Event, EventManager, Subscriber
from byop_nb.history import History
from byop_nb.scheduling import _checks
from byop_nb.scheduling._call import Call, Status
from byop_nb.scheduling._checks import positive_int
from byop_nb.scheduling._limits import MemoryLimit, TimeLimit, limit_hit, parse_limits
from byop_nb.scheduling._shipping import attach_traceback, name_cells, traceback_text
from byop_nb.scheduling._worker import make_limit_exceptions_picklable
from byop_nb.scheduling.scheduler import Scheduler

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Task", "TaskOptions", "TaskMap", "FailureSummary"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_now = time.time  # read on the hot path (submitted, finished): one global lookup, not two

_RETURNED, _EXCEPTION, _CANCELLED = Status.RETURNED, Status.EXCEPTION, Status.CANCELLED
_MEMORY_LIMIT, _CPU_TIME_LIMIT, _WALL_TIME_LIMIT = Status.MEMORY_LIMIT, Status.CPU_TIME_LIMIT, Status.WALL_TIME_LIMIT


class TaskOptions(TypedDict, total=False):
    """The keyword options every Task class takes (`Task`, `CommTask`, `Trial.Task`); see `Task`."""

    name: str | None
    call_limit: int | None
    concurrent_limit: int | None
    memory_limit: MemoryLimit | None
    cpu_time_limit: TimeLimit | None
    wall_time_limit: TimeLimit | None


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

    FAILURE_EVENTS: ClassVar[tuple[Event[Any], ...]] = (
        EXCEPTION,
        TIMEOUT,
        MEMORY_LIMIT_REACHED,
        CPU_TIME_LIMIT_REACHED,
        WALL_TIME_LIMIT_REACHED,
    )
    """Events a callback subscribes to in order to handle failed calls."""
    SUCCESSES: ClassVar[frozenset[Status]] = frozenset({Status.RETURNED})
    """The statuses of this class's rows that count as successes (tables, counters and plots ask this)."""
    FAILURES: ClassVar[frozenset[Status]] = frozenset(
        {Status.EXCEPTION, Status.MEMORY_LIMIT, Status.CPU_TIME_LIMIT, Status.WALL_TIME_LIMIT}
    )
    """The statuses of this class's rows that count as failures. `CANCELLED` is neither."""
    _OTHER_OUTCOMES: ClassVar[Mapping[Status, str]] = {}
    """Statuses of this class's rows that are neither successes nor failures, and what `outcome` calls them."""

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
        self.call_limit = positive_int("call_limit", call_limit)
        self.concurrent_limit = positive_int("concurrent_limit", concurrent_limit)
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
        self.n_refused = 0
        """Calls refused because the run was ending (after `stop()`, a timeout or a callback error): they never
        ran, and no event says so. A Dashboard counts them as cancelled, as an optimizer's study does."""
        self._refused_in_run: tuple[float | None, int] = (None, 0)  # (the run's start, refusals in that run)
        self._n_running = 0
        self._maps: list[TaskMap] = []  # the maps of the latest run
        # Event counts, rows per status and rows when the latest run began: what that run did is the difference.
        self._at_run_start: tuple[dict[Any, int], dict[str, int], int] = ({}, {}, 0)
        # The first failed row of a run: (its first row, rows scanned so far, the row or None).
        self._first_failed_row: tuple[int, int, dict[str, Any] | None] = (0, 0, None)
        self.history = History(name=name)
        # Whether the executor runs the function itself: the `_function_for` hook is not overridden
        # (decided once per task; calling the hook per call would cost as much as the rest of a check).
        self._runs_function = type(self)._function_for is Task._function_for
        self._arg_keys, self._varargs_key, self._arg_defaults = _argument_keys(function, self._ARGS_GIVEN_BY_TASK)
        scheduler._register_task(self)

    # -- calling -----------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Future[R] | None:
        """Submit one call; returns its Future, or None when a limit refused it (or the run is ending).

        Raises:
            RuntimeError: the scheduler is not running (call tasks from callbacks,
                or while `scheduler.start()` runs).
        """
        return self._call(args, kwargs, None)

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any], feed: TaskMap | None) -> Any:
        # Once per call, in the dispatch loop: each attribute is read once.
        call_limit = self.call_limit
        if call_limit is not None and self.n_called >= call_limit:
            self.event_manager.emit(self.CALL_LIMIT_REACHED, *args, **kwargs)
            return None
        concurrent_limit = self.concurrent_limit
        if concurrent_limit is not None and self._n_running >= concurrent_limit:
            self.event_manager.emit(self.CONCURRENT_LIMIT_REACHED, *args, **kwargs)
            return None
        scheduler = self.scheduler
        if not scheduler._accepts(self.function):
            self.n_refused += 1
            run, refused = self._refused_in_run
            self._refused_in_run = (scheduler.started_at, refused + 1 if run == scheduler.started_at else 1)
            return None
        call = Call(self, self.n_called + 1, args, kwargs, _now())
        call.feed = feed
        function = self.function if self._runs_function else self._function_for(call)
        future = call.future = scheduler._submit(function, self.limits, args, kwargs, call)
        self.n_called += 1
        self._n_running += 1
        self.event_manager.emit(self.SUBMITTED, future)
        return future

    def map(self, *inputs: Iterable[Any], in_flight: int | None = None) -> TaskMap:
        """Call the task on every input, keeping `in_flight` calls running: a new one as each ends.

        Like the builtin `map`: `task.map(xs)` calls `task(x)` for each `x`, and
        `task.map(xs, ys)` calls `task(x, y)` pairwise. Call it during a run (in
        `@scheduler.on_start`, or while `scheduler.start()` runs); it submits the
        first calls at once and returns a [`TaskMap`][byop_nb.scheduling.task.TaskMap]
        that tells how far along it is. The Dashboard's progress bar counts its
        calls against their number when the inputs have a length.

        ```python
        @scheduler.on_start
        def launch() -> None:
            task.map(range(100), in_flight=4)     # 100 calls, 4 at a time

        scheduler.run()                           # ends when all 100 have ended
        ```

        Feeding stops early when a call is refused: the task's `call_limit` is
        spent, or the run is ending (`stop()`, a timeout); the inputs left are
        not called. Inputs are read lazily, as calls are submitted.

        Args:
            inputs: one iterable per positional argument of the function.
            in_flight: calls running at once (default: twice the executor's
                workers when known, else twice the CPUs); at most `concurrent_limit`.

        Raises:
            RuntimeError: the scheduler is not running.
            ValueError: no inputs, or `in_flight` is not a positive int.
        """
        if not inputs:
            raise ValueError("map() needs at least one iterable of inputs, e.g. task.map(range(10))")
        in_flight = positive_int("in_flight", in_flight) or _default_in_flight(self.scheduler)
        if self.concurrent_limit is not None:
            in_flight = min(in_flight, self.concurrent_limit)
        total: int | None = None
        try:
            total = min(len(i) for i in inputs)  # type: ignore[arg-type]
        except TypeError:  # an iterator: its length is not known
            pass
        feed = TaskMap(self, zip(*inputs, strict=False), in_flight, total, self.scheduler.started_at)
        if not self.scheduler._accepts(self.function):
            feed._exhausted = True
            return feed
        self._maps = [m for m in self._maps if m.run == self.scheduler.started_at] + [feed]
        feed._refill()
        return feed

    def _function_for(self, call: Call) -> Callable[..., Any]:
        """Hook: what the executor runs for `call` (with `call.args` and `call.kwargs`)."""
        return self.function

    @property
    def n_running(self) -> int:
        """Calls submitted and not yet ended."""
        return self._n_running

    @property
    def counts(self) -> dict[Event[Any], int]:
        """Times each of this task's events was emitted (only emitted events appear)."""
        return dict(self.event_manager.counts)  # type: ignore[arg-type]

    def df(self) -> pd.DataFrame:
        """One row per ended call, as a pandas DataFrame (same as `task.history.df()`)."""
        return self.history.df()

    @classmethod
    def outcome(cls, status: str) -> str:
        """What a row's `status` means for this Task class: "success", "failure" or "cancelled".

        ```python
        Task.outcome("returned")          # "success"
        Task.outcome("wall_time_limit")   # "failure"
        ```

        Raises:
            ValueError: `status` is not one of this class's statuses.
        """
        if status in cls.SUCCESSES:
            return "success"
        if status in cls.FAILURES:
            return "failure"
        if status == _CANCELLED:
            return "cancelled"
        other = cls._OTHER_OUTCOMES.get(status)  # type: ignore[call-overload]
        if other is not None:
            return other
        accepted = sorted(str(s) for s in (*cls.SUCCESSES, *cls.FAILURES, *cls._OTHER_OUTCOMES, _CANCELLED))
        raise ValueError(f"{str(status)!r} is not a status of {cls.__name__} rows; accepted: {accepted}")

    def failure_summary(self) -> FailureSummary:
        """What failed among this task's calls in the latest run (the current one, while it runs).

        Cheap enough to ask often (a Dashboard asks it a few times a second): the
        counts are kept per status, the first failure is found once, and the
        failures in a row are counted back from the last call only.

        ```python
        summary = task.failure_summary()
        if summary:                        # some call of the run failed
            print(summary.line)            # 6 of 6 trials of 'evaluate' crashed; first: KeyError: ...
        summary.failed, summary.ended, summary.in_a_row, summary.first_error
        ```

        At the end of every run in which calls of a task failed, that line is
        logged as a warning (on the `byop_nb.scheduling.scheduler` logger; in a
        notebook it shows under the cell, in a Dashboard's log pane for a
        background run), whether a callback handled the failures or not; a plain
        Task whose only failures are hits of its resource limits is left out
        (`only_limit_hits`). See also `Scheduler.failure_summaries()`.
        """
        _, statuses_then, rows_then = self._at_run_start
        statuses = self.history.status_counts
        ran = {s: n - statuses_then.get(s, 0) for s, n in statuses.items() if s != _CANCELLED}
        failures = {s: n for s, n in ran.items() if n > 0 and s in self.FAILURES}
        first = self._first_failure(rows_then) if failures else None
        in_a_row = self._failures_in_a_row(rows_then) if failures else 0
        error = None
        if first is not None:
            kind, message = first.get("exception_type"), first.get("exception_message")
            error = f"{kind}: {message}" if kind and message else kind or message or _without_exception(first)
        return FailureSummary(
            task=self.name,
            noun=self._NOUN,
            ended=sum(ran.values()),
            failed=sum(failures.values()),
            statuses=dict(sorted(failures.items(), key=lambda item: -item[1])),
            first_error=error,
            first_call=first.get("call") if first is not None else None,
            first_trial=first.get("trial") if first is not None else None,
            in_a_row=in_a_row,
        )

    def _failures_in_a_row(self, rows_then: int) -> int:
        """Failed rows since the last row of the run that began at `rows_then` that did not fail (cancelled
        rows skipped), counted back from the end in chunks: no copy of the run's rows."""
        failing, history = self.FAILURES, self.history
        in_a_row, end = 0, len(history)
        while end > rows_then:
            start = max(rows_then, end - 256)
            for row in reversed(history._stored(start, end)):
                status = row.get("status")
                if status in failing:
                    in_a_row += 1
                elif status != _CANCELLED:
                    return in_a_row
            end = start
        return in_a_row

    def _first_failure(self, rows_then: int) -> dict[str, Any] | None:
        """The first failed row of the run that began at row `rows_then`; rows are scanned once per run."""
        since, scanned, found = self._first_failed_row
        if since != rows_then:
            scanned, found = rows_then, None
        if found is None:
            failing = self.FAILURES
            end = len(self.history)
            for row in self.history._stored(scanned, end):
                if row.get("status") in failing:
                    found = row
                    break
            scanned = end
        self._first_failed_row = (rows_then, scanned, found)
        return found

    _NOUN = "calls"
    """What the task's calls are called in its failure summary ("trials" for a Trial.Task)."""

    # -- ending (called by the scheduler in its event loop) ---------------
    def _end(self, call: Call, cancelled: bool, exception: BaseException | None, result: Any) -> None:
        """The call ended (cancelled, raised `exception`, or returned `result`): end it, record its row
        (to the journal too), then emit its events."""
        self._conclude(call, cancelled, exception, result)
        self.history.flush()
        self._announce(call)

    def _conclude(self, call: Call, cancelled: bool, exception: BaseException | None, result: Any) -> Status:
        """The first half of `_end`: end the call (`call.end`, the only place its status is decided),
        then record its row; a journal gets it at the history's next flush. Returns the row's status
        (`_row_status`). The scheduler concludes a batch of calls, flushes, then announces."""
        if cancelled:
            call.end(_CANCELLED)
        elif exception is None:
            call.end(_RETURNED, result)
        else:
            attach_traceback(exception)  # one place to find the worker's traceback text, whatever the executor
            name_cells(exception)  # in a notebook: "Cell In[5], line 7", as IPython names its cells
            limit = limit_hit(exception) if self.limits is not None else None
            call.end(Status.of_limit(limit) if limit else _EXCEPTION, None, exception)
        try:
            row_status = self._row_status(call)
            self._record(call)
        except Exception as e:  # recording never ends a run, nor loses the call's row
            row_status = call.status  # type: ignore[assignment]  # ended just above
            self._record_failed(call, e)
        return row_status

    def _row_status(self, call: Call) -> Status:
        """Hook, the one decision a subclass overrides: the `status` of the row recorded for the ended
        `call` (a plain Task's is the call's own; a Trial.Task's is its report's, which it makes here)."""
        return call.status  # type: ignore[return-value]  # called once the call ended

    def _announce(self, call: Call) -> None:
        """The second half of `_end`: emit the call's events; then a `task.map` feeding it goes on.

        The call stops counting as running here, as its events begin: a callback of an earlier
        call of the batch still sees it running, as it would have without the batching.
        """
        self._n_running -= 1
        try:
            self._emit(call)
        finally:
            if call.feed is not None:
                call.feed._ended()

    def _record_failed(self, call: Call, error: Exception) -> None:
        """`_record` raised: record a row that names the failure instead, and warn once."""
        message = (
            f"the row of call {call.number} of task {self.name!r} could not be recorded "
            f"({type(error).__qualname__}: {bounded_repr(error)})"
        )
        warnings.warn(f"{message}; a row naming the failure was recorded instead", RuntimeWarning, stacklevel=2)
        try:
            self.history.record(
                {
                    "task": self.name,
                    "call": call.number,
                    "status": call.status._value_ if call.status is not None else None,
                    "exception_type": "RecordingError",
                    "exception_message": message,
                    "submitted": call.submitted,
                    "finished": time.time(),
                }
            )
        except Exception:
            logger.exception("byop_nb: %s", message)

    def _record(self, call: Call) -> None:
        """Hook: record the row of the ended `call`."""
        args, kwargs, exception = call.args, call.kwargs, call.exception
        self.history.record_call(
            self.name,
            call.number,
            args,
            kwargs,
            call.status._value_,  # type: ignore[union-attr]  # called once the call ended
            call.result,
            exception,
            None if exception is None else traceback_text(exception),
            call.submitted,
            _now(),
            # A call without arguments has no cells (the hot path of a no-op call: no call made for it).
            self._arguments(args, kwargs) if args or kwargs or self._arg_defaults else None,
            flush=False,  # the scheduler flushes the journal once per batch of ended calls
        )

    _ARGS_GIVEN_BY_TASK = 0
    """How many leading parameters of the function the task itself passes (a CommTask: the Comm)."""

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any], first: int = 0) -> dict[str, Any]:
        """The call's arguments as `arg.<parameter>` cells, from `args[first:]` and `kwargs`."""
        keys = self._arg_keys
        cells = {key: cell_value(value) for key, value in zip(keys[first:], args[first:], strict=False)}
        if len(args) > len(keys) and self._varargs_key is not None:
            cells[self._varargs_key] = bounded_repr(args[len(keys) :])
        for name, value in kwargs.items():
            cells["arg." + name] = cell_value(value)
        for key, default in self._arg_defaults.items():  # parameters left to their defaults
            if key not in cells:
                cells[key] = default
        return cells

    def _emit(self, call: Call) -> None:
        """Hook: emit the events of the ended `call`."""
        em = self.event_manager
        future, status, exception = call.future, call.status, call.exception
        if status is _RETURNED:
            em.emit(self.DONE, future)
            em.emit(self.RETURNED, call.result)
            return
        if status is _CANCELLED:
            em.emit(self.CANCELLED, future)
            return
        em.emit(self.DONE, future)
        em.emit(self.EXCEPTION, exception)
        if status is _MEMORY_LIMIT:
            em.emit(self.MEMORY_LIMIT_REACHED, future, exception)
        elif status is _CPU_TIME_LIMIT:
            em.emit(self.CPU_TIME_LIMIT_REACHED, future, exception)
            em.emit(self.TIMEOUT, future, exception)
        elif status is _WALL_TIME_LIMIT:
            em.emit(self.WALL_TIME_LIMIT_REACHED, future, exception)
            em.emit(self.TIMEOUT, future, exception)

    if not TYPE_CHECKING:  # type checkers keep flagging unknown attributes themselves

        def __getattr__(self, name: str) -> Any:
            # Only for names that are not found: suggest the subscriber a user probably meant.
            raise AttributeError(_checks.no_such_attribute(self, name))

    def __repr__(self) -> str:
        return f"Task({self.name!r}, called={self.n_called}, running={self._n_running}, ended={len(self.history)})"

    def _repr_html_(self) -> str:
        from byop_nb import _html

        return _html.task_html(self)


_VERBS = {
    Status.EXCEPTION: "raised",
    Status.MEMORY_LIMIT: "hit their memory limit",
    Status.CPU_TIME_LIMIT: "hit their CPU-time limit",
    Status.WALL_TIME_LIMIT: "hit their wall-time limit",
    Status.FAIL: "failed",
    Status.CRASHED: "crashed",
}


@dataclass(frozen=True)
class FailureSummary:
    """What failed among a task's calls in one run: [`task.failure_summary()`][byop_nb.scheduling.Task.failure_summary].

    True when a call failed (`if task.failure_summary(): ...`); `line` (also
    `str(summary)`) says it in one sentence, e.g.
    `6 of 6 trials of 'evaluate' crashed; first: KeyError: 'learning_rate' (trial trial-0, call 1)`.

    Attributes:
        task: the task's name.
        noun: "calls", or "trials" for a Trial.Task.
        ended: calls of the run that ended, failed or not (cancelled ones left out).
        failed: of those, the ones whose status is one of the task's `FAILURES`
            (an exception, a resource-limit hit; a trial's fail or crash).
        statuses: failed calls per status, most frequent first, e.g. `{"crashed": 6}`.
        first_error: the first failed call's error, "Type: message" (its
            message whole, as bounded in the history), or None when none failed.
        first_call: that call's number (the `call` column), or None.
        first_trial: that call's trial name for a Trial.Task, else None.
        in_a_row: failed calls since the last call that did not fail (what
            `run(end_after_failures=N)` compares with N).
    """

    task: str
    noun: str
    ended: int
    failed: int
    statuses: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None
    first_call: int | None = None
    first_trial: str | None = None
    in_a_row: int = 0

    def __bool__(self) -> bool:
        return self.failed > 0

    @property
    def only_limit_hits(self) -> bool:
        """Whether every failure is a plain Task's resource-limit hit (`memory_limit`, `cpu_time_limit`,
        `wall_time_limit`): the limits were set, so the run's end does not call them out. A Trial.Task's
        limit hits are crashes, and are."""
        return bool(self.statuses) and all(_LIMIT_STATUSES.get(status, False) for status in self.statuses)

    @property
    def line(self) -> str:
        """One sentence: how many failed, how, and the first error; "" when none failed."""
        if not self.failed:
            return ""
        if len(self.statuses) == 1:
            verb = _VERBS.get(next(iter(self.statuses)), "failed")  # type: ignore[call-overload]
        else:
            verb = "failed (" + ", ".join(f"{n} {status}" for status, n in self.statuses.items()) + ")"
        where = f"call {self.first_call}" if self.first_call is not None else ""
        if self.first_trial is not None:
            where = f"trial {self.first_trial}, {where}" if where else f"trial {self.first_trial}"
        first = clipped(self.first_error or "", _FIRST_ERROR_WIDTH)
        return f"{self.failed} of {self.ended} {self.noun} of {self.task!r} {verb}; first: {first}" + (
            f" ({where})" if where else ""
        )

    def __str__(self) -> str:
        return self.line


def _without_exception(row: dict[str, Any]) -> str:
    """What a failed row without an exception says (a trial's fail report): its status and results."""
    results = ", ".join(f"{key[7:]}={bounded_repr(value, 60)}" for key, value in row.items() if key[:7] == "result.")
    return f"{row.get('status')} ({results})" if results else str(row.get("status"))


_LIMIT_STATUSES = {status.value: status.limit is not None for status in Status}
_FIRST_ERROR_WIDTH = 500  # characters of the first error in a summary's line (the row keeps it whole)


class TaskMap:
    """The calls a [`task.map(...)`][byop_nb.scheduling.Task.map] feeds to its task, and how far along they are.

    Attributes:
        task: the task it calls.
        total: how many inputs there are (None when they have no length).
        in_flight: how many calls it keeps running.
        submitted: calls submitted so far.
        ended: calls ended so far (returned, raised or cancelled).
    """

    def __init__(
        self,
        task: Task[Any, Any],
        inputs: Iterator[tuple[Any, ...]],
        in_flight: int,
        total: int | None,
        run: float | None,
    ) -> None:
        self.task = task
        self.total = total
        self.in_flight = in_flight
        self.submitted = 0
        self.ended = 0
        self.run = run  # when the run it belongs to started
        self._inputs = inputs
        self._exhausted = False

    def done(self) -> bool:
        """Whether every call it will submit was submitted and has ended."""
        return self._exhausted and self.ended == self.submitted

    def _refill(self) -> None:
        task = self.task
        while not self._exhausted and self.submitted - self.ended < self.in_flight:
            if task.concurrent_limit is not None and task._n_running >= task.concurrent_limit:
                return  # other calls of the task hold its concurrent_limit: go on when one ends
            args = next(self._inputs, None)
            if args is None or task._call(args, {}, self) is None:
                self._exhausted = True  # no inputs left, or refused: a limit, or the run is ending
                return
            self.submitted += 1

    def _ended(self) -> None:
        self.ended += 1
        self._refill()

    def __repr__(self) -> str:
        of = f" of {self.total}" if self.total is not None else ""
        return f"TaskMap({self.task.name!r}, submitted={self.submitted}{of}, ended={self.ended})"


def _default_in_flight(scheduler: Scheduler) -> int:
    workers = getattr(scheduler.executor, "_max_workers", None)
    return 2 * workers if isinstance(workers, int) and workers > 0 else 2 * (os.cpu_count() or 1)


def _argument_keys(function: Callable[..., Any], skip: int) -> tuple[tuple[str, ...], str | None, dict[str, Any]]:
    """`arg.<name>` for the function's positional parameters (after the first `skip`), for its `*args`
    if it has one, and the cells of the parameters' defaults; nothing when its signature cannot be
    read (some builtins)."""
    import inspect

    try:
        parameters = list(inspect.signature(function).parameters.values())[skip:]
    except (TypeError, ValueError):
        return (), None, {}
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    keys = tuple(f"arg.{p.name}" for p in parameters if p.kind in positional)
    varargs = next((f"arg.{p.name}" for p in parameters if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
    defaults = {f"arg.{p.name}": cell_value(p.default) for p in parameters if p.default is not inspect.Parameter.empty}
    return keys, varargs, defaults
