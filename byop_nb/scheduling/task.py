"""Task: a function hooked into a Scheduler's events, with call and resource limits.

Where things happen, for a call of a Task:

* submitted: `Task.__call__` (limits refuse it there) -> `Task._submit`, which
  makes its [`Call`][byop_nb.scheduling.engine._call.Call] and hands it to the scheduler;
* ended: the scheduler hands the Call back to `Task._end`, which decides its
  [`Status`][byop_nb.scheduling.engine._call.Status] (the only place a plain Task's
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
from typing import TYPE_CHECKING, Any, ClassVar, Generic, ParamSpec, TypedDict, TypeVar

from byop_nb._text import bounded_repr, cell_value
from byop_nb.events import CountedAs, Event, EventManager, Subscriber
from byop_nb.history import History
from byop_nb.scheduling.engine import _checks
from byop_nb.scheduling.engine._call import Call, Status
from byop_nb.scheduling.engine._checks import positive_int
from byop_nb.scheduling.engine._failures import FailureSummary, FirstFailure, summarize
from byop_nb.scheduling.engine._run import TaskBaseline, _Run
from byop_nb.scheduling.scheduler import Scheduler
from byop_nb.scheduling.workers._limits import MemoryLimit, TimeLimit, limit_hit, parse_limits
from byop_nb.scheduling.workers._shipping import attach_traceback, name_cells, traceback_text
from byop_nb.scheduling.workers._worker import make_limit_exceptions_picklable

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Task", "TaskOptions", "TaskMap", "FailureSummary"]

_NO_BASELINE = TaskBaseline({}, {}, 0)

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
    F_RETURNED: CountedAs[[Future[Any], Any]] = CountedAs("task-future-returned", RETURNED)
    """The byop-era alias of RETURNED with the future: `on_f_returned(future, result)`; counted as RETURNED."""
    F_EXCEPTION: CountedAs[[Future[Any], BaseException]] = CountedAs("task-future-exception", EXCEPTION)
    """The byop-era alias of EXCEPTION with the future: `on_f_exception(future, exception)`; counted as EXCEPTION."""
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
    OTHER_OUTCOMES: ClassVar[Mapping[Status, str]] = {}
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
        # The byop-era F_ events: callbacks of their own (with the future), counted as RETURNED / EXCEPTION.
        self.future_events = EventManager(name=f"Task({name}) future events")
        """The manager of the byop-era `F_RETURNED` / `F_EXCEPTION` callbacks (`on_f_returned`, `on_f_exception`)."""
        self.on_f_returned: Subscriber[[Future[Any], Any]] = self.future_events.subscriber(self.F_RETURNED)
        self.on_f_exception: Subscriber[[Future[Any], BaseException]] = self.future_events.subscriber(self.F_EXCEPTION)
        # The guide's spellings.
        self.on_cpu_limit_reached = self.on_cpu_time_limit_reached
        self.on_walltime_limit_reached = self.on_wall_time_limit_reached

        self.n_called = 0
        self.n_refused = 0
        """Calls refused because the run was ending (after `stop()`, a timeout or a callback error): they never
        ran, and no event says so. A Dashboard counts them as cancelled, as an optimizer's study does."""
        self._n_running = 0
        # The first failed row of a run: (its first row, rows scanned so far, the row or None).
        self._first_failed_row: FirstFailure = (0, 0, None)
        self.history = History(name=name)
        # Whether the executor runs the function itself: the `_function_for` hook is not overridden
        # (decided once per task; calling the hook per call would cost as much as the rest of a check).
        self._runs_function = type(self)._function_for is Task._function_for
        self._arg_keys, self._varargs_key, self._arg_defaults = _argument_keys(function, self._ARGS_GIVEN_BY_TASK)
        replaced = scheduler.tasks.get(name)  # a re-run cell: the new task takes over its F_ callbacks too
        if isinstance(replaced, Task) and replaced is not self:
            self.future_events.adopt(replaced.future_events)
        scheduler.register_task(self)

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
        if not scheduler.accepting(self.function):
            self.n_refused += 1
            scheduler.latest_run.refuse(self.name)  # type: ignore[union-attr]  # accepting: a run exists
            return None
        call = Call(self, self.n_called + 1, args, kwargs, _now())
        call.feed = feed
        function = self.function if self._runs_function else self._function_for(call)
        future = call.future = scheduler.submit_call(function, self.limits, args, kwargs, call)
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
        scheduler = self.scheduler
        accepting = scheduler.accepting(self.function)  # raises when the scheduler is not running
        run = scheduler.latest_run
        feed = TaskMap(self, zip(*inputs, strict=False), in_flight, total, run)
        if not accepting or run is None:
            feed._exhausted = True
            return feed
        run.maps.setdefault(self.name, []).append(feed)
        feed._refill()
        return feed

    def _function_for(self, call: Call) -> Callable[..., Any]:
        """Hook: what the executor runs for `call` (with `call.args` and `call.kwargs`)."""
        return self.function

    @property
    def n_running(self) -> int:
        """Calls submitted and not yet ended."""
        return self._n_running

    # -- what the latest run did (read by the Dashboard, the HTML views, optimizers) --------
    @property
    def maps(self) -> list[TaskMap]:
        """The [`TaskMap`][byop_nb.scheduling.task.TaskMap]s made by `task.map(...)` in the latest run
        (the current one, while it runs), oldest first; `[]` before the first run."""
        run = self.scheduler.latest_run
        return list(run.maps.get(self.name, ())) if run is not None else []

    @property
    def run_baseline(self) -> TaskBaseline:
        """What this task had counted when the latest run began (its event counts, rows per status and
        rows): what that run did is the difference. All zero before the first run.

        ```python
        then = task.run_baseline
        returned_in_this_run = task.counts.get(Task.RETURNED, 0) - then.counts.get(Task.RETURNED, 0)
        ```
        """
        run = self.scheduler.latest_run
        return run.baseline(self.name) if run is not None else _NO_BASELINE

    @property
    def refused_in_run(self) -> int:
        """Calls of this task refused in the latest run because it was ending (see `n_refused`)."""
        run = self.scheduler.latest_run
        return run.refused.get(self.name, 0) if run is not None else 0

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
        other = cls.OTHER_OUTCOMES.get(status)  # type: ignore[call-overload]
        if other is not None:
            return other
        accepted = sorted(str(s) for s in (*cls.SUCCESSES, *cls.FAILURES, *cls.OTHER_OUTCOMES, _CANCELLED))
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
        summary, self._first_failed_row = summarize(self, self.run_baseline, self._first_failed_row)
        return summary

    NOUN: ClassVar[str] = "calls"
    """What the task's calls are called in its failure summary ("trials" for a Trial.Task)."""

    # -- ending: called by the Scheduler in its event loop ----------------------------------
    # Like `Future.set_result`, these are public for the engine (the Scheduler knows a task through
    # `byop_nb.scheduling.engine._call.TaskLike`), not for callbacks.
    def cancelled_call(self, call: Call) -> None:
        """Engine hook: `call` was cancelled unrun (a `wait=False` end); end it, record its row (to
        the journal too), then emit its events. Not for callbacks."""
        self.conclude_call(call, True, None, None)
        self.history.flush()
        self.announce_call(call)

    def conclude_call(self, call: Call, cancelled: bool, exception: BaseException | None, result: Any) -> Status:
        """Engine hook, the first half of a call's end: end the call (`call.end`, the only place its
        status is decided), then record its row; a journal gets it at the history's next flush.
        Returns the row's status (`_row_status`). The scheduler concludes a batch of calls, flushes,
        then announces. Not for callbacks."""
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

    def announce_call(self, call: Call) -> None:
        """Engine hook, the second half of a call's end: emit its events; then a `task.map` feeding
        it goes on. Not for callbacks.

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
            if self.future_events.callbacks(self.F_RETURNED):  # byop-era callbacks: only when there are some
                self.future_events.emit(self.F_RETURNED, future, call.result)
            em.emit(self.RETURNED, call.result)
            return
        if status is _CANCELLED:
            em.emit(self.CANCELLED, future)
            return
        em.emit(self.DONE, future)
        if self.future_events.callbacks(self.F_EXCEPTION):
            self.future_events.emit(self.F_EXCEPTION, future, exception)
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
        run: _Run | None,
    ) -> None:
        self.task = task
        self.total = total
        self.in_flight = in_flight
        self.submitted = 0
        self.ended = 0
        self.run = run  # the run it belongs to
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
    from byop_nb._compat import pool_max_workers

    workers = pool_max_workers(scheduler.executor)
    return 2 * workers if workers is not None else 2 * (os.cpu_count() or 1)


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
