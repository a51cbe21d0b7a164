"""One run of a Scheduler: the `_Run` that `run()`, `start()` and the like make.

A Scheduler lives across runs; everything that belongs to one run lives in its
`_Run`, made fresh when the run begins (no field is reset by hand):

* the options ([`RunOptions`][byop_nb.scheduling.engine._run.RunOptions]) and the
  deadline they give;
* its named state ([`RunState`][byop_nb.scheduling.engine._run.RunState]): RUNNING,
  ENDING (a stop, a callback error or `on_exception`/`end_after_failures` said
  the run ends: new calls are refused), FINISHING, FINISHED;
* why it ended: the exit code, the error raised from `run()`, `last_error`;
* per task: what it had counted when the run began (its
  [`TaskBaseline`][byop_nb.scheduling.engine._run.TaskBaseline]), the calls refused
  as the run ended, its `task.map(...)`s and its failures in a row.

[`RunHandle`][byop_nb.scheduling.RunHandle] wraps the `_Run` of a background
run (`start()`).

Where things happen: the Scheduler makes the `_Run` in `_begin`; a call that
raised goes through `on_call_exception`, a failed row through `count_failure`,
a callback's error through `fail`, `stop()` through `request_stop`; each of
them moves RUNNING to ENDING and wakes the run (`wake_up`), whose loop
(`Scheduler._until_end`) then asks `why_it_ends`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Unpack

from byop_nb._text import clipped
from byop_nb.scheduling.engine._checks import (
    ByopEraRunOptions,
    OnException,
    Policy,
    byop_era_on_exception,
    check_run_options,
    exception_policy,
)
from byop_nb.scheduling.engine._runtime import interrupted, note_callback, trim_traceback

if TYPE_CHECKING:
    from byop_nb._status import Status
    from byop_nb.scheduling.engine._call import TaskLike
    from byop_nb.scheduling.engine._handoff import Handoff

__all__ = ["ExitCode", "RunHandle", "RunOptions", "RunState", "TaskBaseline"]

logger = logging.getLogger("byop_nb.scheduling.scheduler")  # the run's lines keep the logger users know


class ExitCode(enum.Enum):
    """Why a run ended."""

    EXHAUSTED = "exhausted"
    """Nothing was left to run (`end_on_empty=True`)."""
    STOPPED = "stopped"
    """`stop()` was called, or a callback raised."""
    TIMEOUT = "timeout"
    """The run's `timeout` passed."""
    EXCEPTION = "exception"
    """A call raised, and the run's `on_exception` said "end" for it; or a task's calls failed
    `end_after_failures` times in a row."""
    UNKNOWN = "unknown"
    """The run ended for another reason (it was cancelled)."""


class RunState(enum.Enum):
    """The named states of a run (a Scheduler before its first run is IDLE)."""

    IDLE = "idle"
    RUNNING = "running"
    """Calls are accepted."""
    ENDING = "ending"
    """Still running, but the run will end (a stop, a callback's error, `on_exception="end"`,
    `end_after_failures`): new calls are refused. `scheduler.state` says "running"."""
    FINISHING = "finishing"
    """FINISHING was emitted; running work is waited for (or cancelled)."""
    FINISHED = "finished"


# Read once per call (`accepts`): a module global costs a fifth of an Enum member read through its class.
RUNNING, ENDING, FINISHING, FINISHED = RunState.RUNNING, RunState.ENDING, RunState.FINISHING, RunState.FINISHED


@dataclass(frozen=True)
class RunOptions:
    """The options of one run, as `run()`, `start()`, `async_run()` and `Dashboard.start()` take them.

    Checked when made: a bad value raises at the call that gave it.

    Example:
        ```python
        options = RunOptions(timeout=60, end_after_failures=3)
        scheduler.run(**options.as_kwargs())
        ```
    """

    timeout: float | None = None
    end_on_empty: bool = True
    wait: bool = True
    on_exception: OnException = "continue"
    end_after_failures: int | None = None

    def __post_init__(self) -> None:
        check_run_options(self.timeout, self.end_on_empty, self.wait, self.on_exception, self.end_after_failures)

    @classmethod
    def of(
        cls,
        timeout: float | None,
        end_on_empty: bool,
        wait: bool,
        on_exception: OnException,
        end_after_failures: int | None,
        **byop_era: Unpack[ByopEraRunOptions],
    ) -> RunOptions:
        """The options of a `run()` call, whose byop-era `end_on_exception=` / `raises=` stand for an
        `on_exception` (see `_checks.byop_era_on_exception`)."""
        on_exception = byop_era_on_exception(on_exception, byop_era.get("end_on_exception"), byop_era.get("raises"))
        return cls(timeout, end_on_empty, wait, on_exception, end_after_failures)

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of `run()`."""
        return {
            "timeout": self.timeout,
            "end_on_empty": self.end_on_empty,
            "wait": self.wait,
            "on_exception": self.on_exception,
            "end_after_failures": self.end_after_failures,
        }


@dataclass(frozen=True)
class TaskBaseline:
    """What a task had counted when a run began: what the run did is the difference.

    Attributes:
        counts: its event counts (`task.counts`).
        statuses: its rows per status (`task.history.status_counts`).
        rows: its number of rows.
    """

    counts: dict[Any, int]
    statuses: dict[str, int]
    rows: int


_NO_BASELINE = TaskBaseline({}, {}, 0)


class _Run:
    """One run of a Scheduler, from `_begin` to FINISHED (internal; its attributes are read API).

    Attributes:
        options: the run's [`RunOptions`][byop_nb.scheduling.engine._run.RunOptions].
        state: its [`RunState`][byop_nb.scheduling.engine._run.RunState].
        loop, loop_thread: the event loop it runs in, and that loop's thread.
        background: whether `start()` began it.
        started_at, finished_at: epoch seconds (finished_at None until it finished).
        deadline: the loop time its timeout ends it at, or None.
        exit_code: why it ended, once it did.
        error: the first callback error; `run()` raises it.
        last_error: the error that ended the run (a callback's, a call's under
            `on_exception="end"`, the `end_after_failures` summary), or None.
        stop_requested: `stop()` was called.
        ended_by: the exit code `on_exception="end"` or `end_after_failures` ended it with.
        n_submitted: calls submitted in it.
        baselines: per task name, its [`TaskBaseline`][byop_nb.scheduling.engine._run.TaskBaseline].
        refused: per task name, its calls refused because the run was ending.
        maps: per task name, its `task.map(...)`s made in the run.
        failures_in_a_row: per task name, for `end_after_failures`.
        handle: the [`RunHandle`][byop_nb.scheduling.RunHandle] of a background run.
    """

    def __init__(
        self,
        options: RunOptions,
        loop: asyncio.AbstractEventLoop,
        handoff: Handoff,
        tasks: dict[str, TaskLike],
        *,
        background: bool = False,
    ) -> None:
        self.options = options
        self.policy: Callable[[BaseException], Policy] | None = exception_policy(options.on_exception)
        self.state = RUNNING
        self.loop = loop
        self.loop_thread: int | None = threading.get_ident()
        self.background = background
        self.started_at = time.time()
        self.finished_at: float | None = None
        self.deadline: float | None = None
        self.exit_code: ExitCode | None = None
        self.error: BaseException | None = None
        self.last_error: BaseException | None = None
        self.stop_requested = False
        self.ended_by: ExitCode | None = None
        self.n_submitted = 0
        self.empty_announced = False
        self.wake: asyncio.Future[None] | None = None
        self.baselines = {
            name: TaskBaseline(dict(task.event_manager.counts), task.history.status_counts, len(task.history))
            for name, task in tasks.items()
        }
        self.refused: dict[str, int] = {}
        self.maps: dict[str, list[Any]] = {}
        self.failures_in_a_row: dict[str, int] = {}
        self.handle: RunHandle | None = None
        self._handoff = handoff

    def __repr__(self) -> str:
        return f"_Run({self.state.value}, started_at={self.started_at}, exit_code={self.exit_code})"

    # -- reads ----------------------------------------------------------------------------
    def accepts(self) -> bool:
        """Whether new calls are taken: the run is RUNNING (not ENDING, FINISHING or FINISHED)."""
        return self.state is RUNNING

    def baseline(self, task_name: str) -> TaskBaseline:
        """What the task had counted when the run began (nothing, for a task made during the run)."""
        return self.baselines.get(task_name, _NO_BASELINE)

    def why_it_ends(self) -> ExitCode | None:
        """The exit code the run ends with now (a callback error, `ended_by`, a stop), or None."""
        if self.error is not None:
            return ExitCode.STOPPED
        if self.ended_by is not None:
            return self.ended_by
        if self.stop_requested:
            return ExitCode.STOPPED
        return None

    # -- transitions ----------------------------------------------------------------------
    def _ending(self) -> None:
        if self.state is RUNNING:
            self.state = ENDING

    def request_stop(self, *, wake: bool = True) -> None:
        """`stop()`: the run ends with STOPPED (once running work is waited for, or cancelled).
        From another thread, `wake=False`, and `wake_up` through the loop."""
        self.stop_requested = True
        self._ending()
        if wake:
            self.wake_up()

    def fail(self, error: BaseException) -> None:
        """A callback (or a hook of the engine) raised `error`: the run ends, and `run()` raises it."""
        note_callback(error)
        if self.error is None:
            self.error = error
        self.last_error = error
        self._ending()
        self.wake_up()

    def on_call_exception(self, exception: BaseException, policy: Policy) -> None:
        """Apply the run's `on_exception` to a call that raised; its events are emitted after this."""
        if policy == "raise":
            self.fail(exception)
        elif policy == "end" and self.ended_by is None and self.state is RUNNING:
            self.ended_by = ExitCode.EXCEPTION
            self.last_error = exception
            self._ending()
            self.wake_up()

    def count_failure(self, task: TaskLike, status: Status) -> None:
        """`run(end_after_failures=N)`: count the task's failed calls in a row; end the run at N."""
        in_a_row = self.failures_in_a_row
        if status in task.FAILURES:
            n = in_a_row[task.name] = in_a_row.get(task.name, 0) + 1
        else:
            if status != "cancelled":
                in_a_row[task.name] = 0
            return
        limit = self.options.end_after_failures
        if limit is None or n < limit or self.ended_by is not None or self.state is not RUNNING:
            return
        row = task.history.row(-1)
        kind, message = row.get("exception_type"), row.get("exception_message")
        last = f"{kind}: {message}" if kind else str(row.get("status"))
        self.ended_by = ExitCode.EXCEPTION
        self.last_error = RuntimeError(
            f"the run ended after {n} failed {task.NOUN} in a row of {task.name!r} "
            f"(end_after_failures={limit}); the last: {clipped(last, 500)}"
        )
        self._ending()
        self.wake_up()

    def refuse(self, task_name: str) -> None:
        """Count a call of the task refused because the run is ending."""
        self.refused[task_name] = self.refused.get(task_name, 0) + 1

    def wake_up(self) -> None:
        """Let the run go on to its next step (end, stop, timeout); after the drain, if one is on the stack.

        A callback may run another scheduler (its run nests into this loop): until that callback
        returns, this run does not end under it.
        """
        if self._handoff.defer_wake():
            return
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    # -- waiting (in the loop) ------------------------------------------------------------
    async def until_end(
        self,
        queue: Mapping[Any, Any],
        emit: Callable[[Any], None],
        stop: Any,
        timeout: Any,
        empty: Any,
    ) -> ExitCode:
        """Wait until the run ends and say why: a stop (STOP emitted), the deadline (TIMEOUT), a
        callback's error, `ended_by`, or nothing left in `queue`, the work in flight (or, with
        `end_on_empty=False`, EMPTY emitted once each time it empties)."""
        loop, deadline = self.loop, self.deadline
        timer = None if deadline is None else loop.call_at(deadline, self.wake_up)
        try:
            while True:
                why = self.why_it_ends()
                if why is not None:
                    if self.stop_requested and self.error is None and self.ended_by is None:
                        emit(stop)
                    return why
                if deadline is not None and loop.time() >= deadline:
                    emit(timeout)
                    return ExitCode.TIMEOUT
                if not queue:
                    if self.options.end_on_empty:
                        return ExitCode.EXHAUSTED
                    if not self.empty_announced:
                        self.empty_announced = True
                        emit(empty)
                        continue
                await self._sleep()
        finally:
            if timer is not None:
                timer.cancel()

    async def wait_for(self, queue: Mapping[Any, Any]) -> None:
        """While FINISHING with `wait=True`: wait until `queue`, the work in flight, is empty (or a
        callback raised, or the wait was cancelled)."""
        while queue and self.error is None:
            try:
                await self._sleep()
            except asyncio.CancelledError:
                break

    async def _sleep(self) -> None:
        """Until `wake_up()`."""
        self.wake = self.loop.create_future()
        try:
            await self.wake
        finally:
            self.wake = None

    def finished(self, exit_code: ExitCode) -> None:
        self.state = FINISHED
        self.exit_code = exit_code
        self.finished_at = time.time()


class RunHandle:
    """The background run started by [`Scheduler.start`][byop_nb.scheduling.Scheduler.start].

    Awaitable (`await handle` gives the ExitCode); `done()` tells whether the
    run ended; `result()` gives its ExitCode or raises the error that ended it.
    `handle.run` is the run's record (its options, state, exit code, error).
    """

    def __init__(self, task: asyncio.Task[ExitCode], run: _Run) -> None:
        self._task = task
        self.run = run
        run.handle = self

    def done(self) -> bool:
        """Whether the run has ended."""
        return self._task.done()

    def result(self) -> ExitCode:
        """The run's ExitCode; raises the callback error that ended it.

        Raises:
            RuntimeError: the run has not ended yet (use `await handle`, or `scheduler.stop()`).
        """
        __tracebackhide__ = True  # IPython and pytest leave this frame out
        if not self._task.done():
            raise RuntimeError("the run is still going; `await` the handle in a cell, or call scheduler.stop() first")
        try:
            return self._task.result()
        except Exception as error:  # from a callback: show the user's frames, as run() does
            raise trim_traceback(error)

    def __await__(self) -> Generator[Any, None, ExitCode]:
        __tracebackhide__ = True
        try:
            return (yield from self._task.__await__())
        except Exception as error:  # from a callback: show the user's frames, as run() does
            raise trim_traceback(error)
        except asyncio.CancelledError as cancelled:  # Kernel -> Interrupt: the user's line, not the loop's
            raise interrupted(cancelled, self.run.exit_code) from None

    def __repr__(self) -> str:
        if not self._task.done():
            return "RunHandle(running)"
        if self._task.cancelled():
            return "RunHandle(cancelled)"
        error = self._task.exception()
        return f"RunHandle(error={error!r})" if error else f"RunHandle({self._task.result()})"


def say_what_failed(summaries: list[Any]) -> None:
    """Once per run: one line per task whose calls failed, handled by a callback or not (a plain
    Task whose only failures are resource-limit hits is left out: the limits were set).

    The exit code stays the guide's (`EXHAUSTED` when every call ended, failed or not); the
    line tells a notebook user what the DataFrame would (`failure_summaries()` holds the same).
    """
    for summary in summaries:
        if not summary.only_limit_hits:  # hitting a limit that was set is no surprise
            logger.warning("%s; see task.df()", summary.line)


def say_nothing_was_done(run: _Run, tasks: dict[str, TaskLike], on_start: list[Any]) -> None:
    """A run of a scheduler with tasks that ended at once with nothing submitted: one line, not
    silence (a re-run cell made the scheduler anew, and the cell that subscribed `on_start` was
    not run again). A scheduler without tasks (the guide's first examples) is left alone."""
    if not tasks:
        return
    names = [str(getattr(c, "__name__", c)) for c in on_start]
    refused = [
        task
        for task in tasks.values()
        if task.event_manager.counts.get(task.CALL_LIMIT_REACHED, 0)
        > run.baseline(task.name).counts.get(task.CALL_LIMIT_REACHED, 0)
    ]
    if refused:
        spent = ", ".join(f"{t.name!r} (call_limit={t.call_limit}, called {t.n_called} times)" for t in refused)
        logger.warning(
            "the run had nothing to do and ended at once: every call was refused, as the call_limit of %s "
            "was spent in earlier runs. Make the task anew (re-run its cell) to start counting again",
            spent,
        )
        return
    if names:
        why = f"its on_start callbacks ({', '.join(names)}) called none of its tasks"
    else:
        why = (
            "no callback is subscribed to scheduler.on_start (a re-run cell that made the scheduler "
            "anew leaves the callbacks of other cells on the old one)"
        )
    logger.warning(
        "the run had nothing to do and ended at once: %s. Call a task from a callback, e.g. "
        "@scheduler.on_start def launch(): %s(...)",
        why,
        next(iter(tasks)),
    )
