"""The Scheduler: runs an asyncio loop around any `concurrent.futures.Executor`.

Futures finish in executor threads; their completion is handed to the
scheduler's event loop, where the events of the call are emitted. Everything
a user callback does therefore happens in one thread, in a deterministic
order per event.

The Scheduler keeps submission, the registry of tasks, the counts, and drives
each run (`_begin`, `_run_begun`, `_finish`). Each run's own state lives in the
`_Run` that `_begin` makes (its options,
deadline, named state, exit code, error and per-task baselines); three
collaborators do the rest, each in its own module:

* [`Handoff`][byop_nb.scheduling.engine._handoff.Handoff] hands finished futures from
  executor threads to the loop (the doorbell, the bounded drain, nested drains);
* [`ExecutorKeeper`][byop_nb.scheduling.workers._executors.ExecutorKeeper] keeps the
  executor (submitting, watching workers, replacing a broken pool, killing
  workers, shutting down);
* [`RunOutput`][byop_nb.scheduling.engine._output.RunOutput] captures a background
  run's callback output for a Dashboard.

The scheduler knows its tasks through the
[`TaskLike`][byop_nb.scheduling.engine._call.TaskLike] protocol: it calls
`task.conclude_call(call, ...)` and `task.announce_call(call)` when a call
ended, `task.cancelled_call(call)` when a `wait=False` end cancelled it.

Where a scheduler event is emitted: STARTED in `_run_begun`; STOP, TIMEOUT and
EMPTY in `_Run.until_end`; FINISHING and FINISHED in `_finish`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar, Unpack

from byop_nb._compat import FUTURE_FINISHED as _FINISHED  # Future._state, read on the hot path
from byop_nb.events import Event, EventManager, Subscriber
from byop_nb.scheduling.engine import _checks
from byop_nb.scheduling.engine._checks import ByopEraRunOptions, OnException
from byop_nb.scheduling.engine._factories import SchedulerFactories
from byop_nb.scheduling.engine._handoff import Handoff, outcome
from byop_nb.scheduling.engine._output import RunOutput
from byop_nb.scheduling.engine._reads import SchedulerReads
from byop_nb.scheduling.engine._run import (
    ENDING,
    FINISHING,
    RUNNING,
    ExitCode,
    RunHandle,
    RunOptions,
    RunState,
    _Run,
    say_nothing_was_done,
    say_what_failed,
)
from byop_nb.scheduling.engine._runtime import (
    interrupted,
    log_background_error,
    run_nested,
    running_loop,
    trim_traceback,
)
from byop_nb.scheduling.workers import _executors, _shipping

if TYPE_CHECKING:
    from byop_nb.notebook import Dashboard
    from byop_nb.scheduling.engine._call import Call, TaskLike
    from byop_nb.scheduling.workers._worker import Limits

__all__ = ["Scheduler", "ExitCode", "RunHandle"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_get_ident = threading.get_ident  # asked once per call that finished at submission


class Scheduler(SchedulerFactories, SchedulerReads):
    """Runs functions on an executor and emits events as they start and end.

    Args:
        executor: any `concurrent.futures.Executor`.
        terminate: how running work is ended by a `wait=False` stop: True kills
            process-pool workers and their children at once (other executors are
            shut down with their queued work cancelled); False only shuts down;
            a callable is called with the executor instead.
        event_manager: the EventManager for the scheduler's events (a new one by default).

    Example:
        ```python
        from byop_nb.scheduling import Scheduler

        scheduler = Scheduler.with_threads(2)

        @scheduler.on_start
        def hello() -> None:
            print("hello")

        scheduler.run()     # prints hello, returns ExitCode.EXHAUSTED
        ```

    The executor is shut down when a run ends. A following run makes a fresh
    executor with the same settings (process and thread pools, the sequential
    executor and dask client executors are known; for other executors, make a
    new Scheduler).
    """

    STARTED: Event[[]] = Event("scheduler-started")
    """The scheduler is running and accepts work: `on_start`."""
    FINISHING: Event[[]] = Event("scheduler-finishing")
    """The run is ending; running work is waited for (or cancelled): `on_finishing`."""
    FINISHED: Event[[]] = Event("scheduler-finished")
    """The run has ended; the last event of a run: `on_finished`."""
    STOP: Event[[]] = Event("scheduler-stop")
    """`stop()` was called during the run: `on_stop`."""
    TIMEOUT: Event[[]] = Event("scheduler-timeout")
    """The run's `timeout` passed: `on_timeout`."""
    EMPTY: Event[[]] = Event("scheduler-empty")
    """Nothing is running (only with `end_on_empty=False`): `on_empty`."""

    ExitCode: TypeAlias = ExitCode
    """The guide's spelling: `Scheduler.ExitCode.EXHAUSTED` is `ExitCode.EXHAUSTED`."""

    def __init__(
        self,
        executor: Executor,
        *,
        terminate: bool | Callable[[Executor], Any] = True,
        event_manager: EventManager | None = None,
    ) -> None:
        if isinstance(executor, type):
            raise TypeError(
                f"Scheduler needs an executor, got the class {executor.__qualname__} itself; create one, e.g. "
                f"Scheduler({executor.__name__}(max_workers=2)), or use Scheduler.with_processes(2) / "
                "Scheduler.with_threads(2)"
            )
        if not isinstance(executor, Executor) and not (
            callable(getattr(executor, "submit", None)) and callable(getattr(executor, "shutdown", None))
        ):
            raise TypeError(
                f"Scheduler needs a concurrent.futures.Executor (something with submit() and shutdown()), "
                f"got {executor!r}. Try Scheduler.with_processes(2) or Scheduler.with_threads(2)."
            )
        if not isinstance(terminate, bool) and not callable(terminate):
            raise TypeError(f"terminate= must be True, False or a callable taking the executor, got {terminate!r}")
        if event_manager is not None and not isinstance(event_manager, EventManager):
            raise TypeError(
                f"event_manager= must be a byop_nb.events.EventManager (or None for a new one), got {event_manager!r}"
            )
        self._keeper = _executors.ExecutorKeeper(executor, terminate)
        self.event_manager = event_manager if event_manager is not None else EventManager(name="Scheduler")

        self.on_start: Subscriber[[]] = self.event_manager.subscriber(self.STARTED)
        self.on_finishing: Subscriber[[]] = self.event_manager.subscriber(self.FINISHING)
        self.on_finished: Subscriber[[]] = self.event_manager.subscriber(self.FINISHED)
        self.on_stop: Subscriber[[]] = self.event_manager.subscriber(self.STOP)
        self.on_timeout: Subscriber[[]] = self.event_manager.subscriber(self.TIMEOUT)
        self.on_empty: Subscriber[[]] = self.event_manager.subscriber(self.EMPTY)

        self._tasks: dict[str, TaskLike] = {}
        # The work in flight: future -> its Call (None for plain submit()); insertion ordered.
        self._queue: dict[Future[Any], Call | None] = {}
        self._output = RunOutput()  # a background run's callback output, for a Dashboard's log pane
        self._handoff = Handoff(self._process_future, self._announce_batch, self._after_drain, self._output)
        self._on_future_done = self._handoff.future_done  # one bound method, not one per call
        self._run: _Run | None = None  # the latest run (the current one while it runs)

    @property
    def executor(self) -> Executor:
        """The executor in use (a fresh one of the same settings after a run shut it down, or a worker died)."""
        return self._keeper.executor

    @property
    def terminate(self) -> bool | Callable[[Executor], Any]:
        """How a `wait=False` end kills running work (see the class's Args)."""
        return self._keeper.terminate

    # -- for Task implementations (public like `Future.set_result`: for the engine, not callbacks) --------
    def register_task(self, task: TaskLike) -> None:
        """Register `task` under its name (its `__init__` calls this). A task of the same name is
        replaced: the new one takes over its callbacks."""
        old = self._tasks.get(task.name)
        if old is not None and old is not task:
            # A re-run notebook cell makes the task anew: the callbacks registered on it (in other
            # cells, which the user does not run again) go on working on the new one.
            task.event_manager.adopt(old.event_manager)
            warnings.warn(
                f"A Task named {task.name!r} already exists on this scheduler; the new one replaces it and "
                "takes over its callbacks (its counts start afresh). Pass name= to keep both.",
                UserWarning,
                stacklevel=3,
            )
        self._tasks[task.name] = task

    def accepting(self, function: Callable[..., Any]) -> bool:
        """Whether new work is taken now: False while the run is ending (stop(), a failed callback).

        Raises:
            RuntimeError: the scheduler is not running at all.
        """
        run = self._run
        if run is not None:
            state = run.state
            if state is RUNNING:
                return True
            if state is ENDING or state is FINISHING:
                logger.debug("run is ending; refused a new call of %r", function)
                return False
        raise RuntimeError(
            f"the scheduler is {self.state}, so nothing can be submitted now; submit from a callback "
            "(e.g. @scheduler.on_start) or while scheduler.start() runs in the background"
        )

    def submit_call(
        self,
        function: Callable[..., Any],
        limits: Limits | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        call: Call | None,
    ) -> Future[Any]:
        """Hand one accepted call (`accepting()` said yes) to the executor and put it in the table of
        work in flight; its task's `conclude_call` and `announce_call` are called when it ended."""
        try:
            future = self._keeper.submit(function, limits, args, kwargs)
        except _shipping.FunctionNotShippable as e:
            # Like arguments that cannot be pickled: the call fails with a row, and the run goes on.
            e.args = (f"{f'task {call.task.name!r}' if call is not None else 'submit()'}: {e.args[0]}",)
            future = Future()
            future.set_running_or_notify_cancel()
            future.set_exception(e)
        self._queue[future] = call
        run: _Run = self._run  # type: ignore[assignment]  # accepting() said yes
        run.empty_announced = False
        run.n_submitted += 1
        if type(future) is Future and future._state == _FINISHED and _get_ident() == run.loop_thread:
            # Finished already (a sequential executor, a refused call): add_done_callback would
            # call back here, in the loop's thread, under the future's lock; no bell is needed.
            self._handoff.finished_here(future)
        else:
            future.add_done_callback(self._on_future_done)
        return future

    # -- submitting --------------------------------------------------------
    def submit(self, function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R] | None:
        """Submit `function(*args, **kwargs)` to the executor; returns its Future.

        Only while the scheduler runs (from a callback such as `on_start`, or
        from another cell during `start()`). While the run is finishing, new
        work is refused and None is returned.

        Raises:
            RuntimeError: the scheduler is not running.
            TypeError: `function` is not callable.
        """
        if not callable(function):
            raise TypeError(f"submit() needs a callable, got {function!r}")
        if not self.accepting(function):
            return None
        return self.submit_call(function, None, args, kwargs, None)

    # -- ending calls (in the loop, handed over by the Handoff) -------------------------
    def _process_future(self, future: Future[Any]) -> Call | None:
        """Conclude one finished call: its status and row (the first half of its end); returns the
        Call, which `_announce_batch` announces once the whole batch is concluded."""
        try:
            call = self._queue.pop(future)
        except KeyError:  # already settled, e.g. cancelled by a wait=False stop
            return None
        run: _Run = self._run  # type: ignore[assignment]  # futures are handed over during a run
        try:
            if type(future) is Future and future._state == _FINISHED:  # the common case, read without locks
                cancelled, exception, result = False, future._exception, future._result
            else:
                cancelled, exception, result = outcome(future)
            if exception is not None:
                if isinstance(exception, BrokenProcessPool):
                    self._keeper.explain_broken(exception)
                if call is None:  # a plain submit() keeps the worker's traceback too
                    _shipping.attach_traceback(exception)
                    _shipping.name_cells(exception)
                if run.policy is not None:  # before the call's events: what they submit is refused
                    run.on_call_exception(exception, run.policy(exception))
            if call is not None:
                row_status = call.task.conclude_call(call, cancelled, exception, result)
                if run.options.end_after_failures is not None:
                    run.count_failure(call.task, row_status)
                return call
        except BaseException as e:  # a user callback raised: end the run with it
            run.fail(e)
        return None

    def _announce_batch(self, ended: list[Call]) -> None:
        """The second half of the batch's ends: their rows reach the journals (one write per journal),
        and only then are their events emitted, in the order the calls finished. So every call whose
        events a callback saw is on disk, and a journal costs one system call per batch, not per call."""
        for history in {call.task.history: None for call in ended}:  # each once, in order
            history.flush()
        for call in ended:
            try:
                call.task.announce_call(call)
            except BaseException as e:  # a user callback raised: end the run with it
                self._fail(e)

    def _after_drain(self, deferred: bool) -> None:
        run = self._run
        if run is not None and (deferred or not self._queue or run.stop_requested):
            run.wake_up()

    def _fail(self, error: BaseException) -> None:
        self._run.fail(error)  # type: ignore[union-attr]  # only during a run

    # -- running -----------------------------------------------------------
    def stop(self, *args: Any, **kwargs: Any) -> None:
        """Ask the running scheduler to stop; safe from callbacks, other cells and threads.

        The run then emits STOP, FINISHING, waits for (or with `wait=False`
        cancels) the running work, emits FINISHED and returns
        `ExitCode.STOPPED`. Arguments are accepted and ignored, so `stop` can
        be subscribed to any event directly. Does nothing when not running.
        """
        run = self._run
        if run is None or not self.running() or run.stop_requested:
            return
        if threading.get_ident() == run.loop_thread:
            run.request_stop()
            return
        run.request_stop(wake=False)  # refused from now on, in this thread too
        try:
            run.loop.call_soon_threadsafe(run.wake_up)
        except RuntimeError:
            pass

    def run(
        self,
        *,
        timeout: float | None = None,
        end_on_empty: bool = True,
        wait: bool = True,
        on_exception: OnException = "continue",
        end_after_failures: int | None = None,
        **byop_era: Unpack[ByopEraRunOptions],
    ) -> ExitCode:
        """Run until nothing is left to do, `stop()`, or `timeout`; blocks and returns the ExitCode.

        Args:
            timeout: seconds after which the run ends with `ExitCode.TIMEOUT`.
            end_on_empty: end when no work is pending (`ExitCode.EXHAUSTED`);
                with False the run emits EMPTY and keeps going until stopped or timed out.
            wait: when the run ends, wait for running work to finish (True) or
                cancel it and kill process workers at once (False).
            on_exception: what the run does when a call raises (its events are
                still emitted; calls submitted from them are refused): "continue" (the default); "end" the
                run with `ExitCode.EXCEPTION` (running work is waited for or
                cancelled as `wait` says); "raise" it from `run()` after the run
                ended, as a callback's error is. A mapping from exception types
                to these chooses by the exception's class, most specific first;
                unmatched exceptions continue. Resource-limit hits are exceptions
                too (e.g. `{pynisher.WallTimeoutException: "continue", Exception: "end"}`).
            end_after_failures: end the run with `ExitCode.EXCEPTION` once one
                task has had this many failed calls in a row (a trial's fail or
                crash, a call that raised or hit a limit; a call that succeeded
                starts the count afresh, a cancelled one is not counted). Running
                work is then waited for or cancelled as `wait` says, and
                `scheduler.last_error` says why. None (the default): never.
            **byop_era: `end_on_exception=`, `raises=`: aliases of `on_exception` (guide: "The Scheduler").

        ```python
        scheduler.run(on_exception="raise")       # the first failing call's exception, raised here
        scheduler.run(end_after_failures=3)       # stop wasting trials once 3 crashed in a row
        ```

        At the end of a run in which calls failed, one line per task says how many,
        with the first error (`6 of 6 trials of 'evaluate' crashed; first: KeyError: ...`),
        logged as a warning whether callbacks handled the failures or not; see
        `failure_summaries()`.

        Works in a plain script and in a Jupyter cell, whose event loop is
        already running (the run then nests into that loop with nest-asyncio2;
        the cell blocks until the run ends).

        Raises:
            RuntimeError: the scheduler is already running.
            BaseException: whatever a callback raised during the run, after cleanup.
        """
        # The error is raised again below, which puts this frame back on its trimmed traceback:
        # IPython (a notebook) and pytest leave out frames that set this.
        __tracebackhide__ = True
        options = RunOptions.of(timeout, end_on_empty, wait, on_exception, end_after_failures, **byop_era)
        self._check_not_running("run()")
        coroutine = self._async_run(options)
        loop = running_loop()
        try:
            if loop is None:  # outside the except block, so no worker inherits its exception context
                return asyncio.run(coroutine)
            return run_nested(loop, coroutine)
        except Exception as error:  # from a callback (or a wrong use in one): show the user's frames
            raise trim_traceback(error)
        except KeyboardInterrupt as interrupt:  # the kernel's interrupt: the user's line, not the event loop's
            raise interrupted(interrupt, self.exit_code) from None

    def start(
        self,
        *,
        timeout: float | None = None,
        end_on_empty: bool = True,
        wait: bool = True,
        on_exception: OnException = "continue",
        end_after_failures: int | None = None,
        **byop_era: Unpack[ByopEraRunOptions],
    ) -> RunHandle:
        """Start the run in the background on the running event loop and return at once.

        The options are `run()`'s.

        The run lives in the kernel's event loop, which serves one thing at a
        time: while a cell computes (a loop, a `time.sleep`, a big DataFrame),
        the run is paused and calls that end wait to be reported; it goes on
        when the cell ends. Kernel -> Interrupt while a cell awaits the handle
        (`await handle`) cancels the run (its calls end as cancelled); while the
        kernel is idle, Interrupt does not touch the run: use `scheduler.stop()`
        or the Dashboard's Stop.

        Meant for Jupyter: the cell finishes, the kernel stays responsive and
        the run goes on while it is idle. Later cells can look at live results,
        call `scheduler.stop()`, or `await` the returned
        [`RunHandle`][byop_nb.scheduling.RunHandle].

        Raises:
            RuntimeError: no event loop is running (use `run()`, or `await async_run()`),
                or the scheduler is already running.
        """
        options = RunOptions.of(timeout, end_on_empty, wait, on_exception, end_after_failures, **byop_era)
        self._check_not_running("start()")
        loop = running_loop()
        if loop is None:
            raise RuntimeError(
                "start() runs the scheduler in the background of an already running event loop, as in "
                "a Jupyter kernel, and there is none here. Use scheduler.run() to run and wait, or "
                "`await scheduler.async_run()` inside async code."
            )
        run = self._begin(loop, options, background=True)
        task = loop.create_task(self._run_begun(run))
        task.add_done_callback(self._log_background_error)
        return RunHandle(task, run)

    def _check_not_running(self, what: str) -> None:
        if self.running():
            raise RuntimeError(
                f"{what} was called while the scheduler is running; wait for the run to end "
                "(or call scheduler.stop()) first"
            )

    async def async_run(
        self,
        *,
        timeout: float | None = None,
        end_on_empty: bool = True,
        wait: bool = True,
        on_exception: OnException = "continue",
        end_after_failures: int | None = None,
        **byop_era: Unpack[ByopEraRunOptions],
    ) -> ExitCode:
        """The coroutine behind `run()`; same arguments and result.

        ```python
        exit_code = await scheduler.async_run(timeout=10)
        ```
        """
        options = RunOptions.of(timeout, end_on_empty, wait, on_exception, end_after_failures, **byop_era)
        self._check_not_running("async_run()")
        return await self._async_run(options)

    async def _async_run(self, options: RunOptions) -> ExitCode:
        run = self._begin(asyncio.get_running_loop(), options)
        try:
            return await self._run_begun(run)
        except asyncio.CancelledError as cancelled:  # Kernel -> Interrupt of `await async_run()`
            raise interrupted(cancelled, run.exit_code) from None

    def _log_background_error(self, task: asyncio.Task[ExitCode]) -> None:
        with self._output.capture():  # into a Dashboard's log pane, with the rest of the run's output
            log_background_error(task)

    def _emit_run_event(self, event: Event[[]]) -> None:
        """Emit a scheduler event; a background run's callbacks write to the log pane of a Dashboard."""
        with self._output.capture():
            self.event_manager.emit(event)

    def _begin(self, loop: asyncio.AbstractEventLoop, options: RunOptions, *, background: bool = False) -> _Run:
        """Make the run, running on `loop`: work can be submitted from here on."""
        self._keeper.renew()
        run = self._run = _Run(options, loop, self._handoff, self._tasks, background=background)
        if options.timeout is not None:
            run.deadline = loop.time() + options.timeout
        self._handoff.open(loop)
        self._output.begin_run(background=background)
        return run

    async def _run_begun(self, run: _Run) -> ExitCode:
        exit_code = ExitCode.UNKNOWN
        cancelled: BaseException | None = None
        try:
            self._emit_run_event(self.STARTED)
            exit_code = await run.until_end(self._queue, self._emit_run_event, self.STOP, self.TIMEOUT, self.EMPTY)
        except asyncio.CancelledError as e:
            cancelled = e
            exit_code = ExitCode.UNKNOWN
        except BaseException as e:
            run.fail(e)
            exit_code = ExitCode.STOPPED
        await self._finish(run, exit_code, wait=run.options.wait and run.error is None and cancelled is None)
        if run.error is not None:
            raise run.error
        if cancelled is not None:
            raise cancelled
        return exit_code

    async def _finish(self, run: _Run, exit_code: ExitCode, *, wait: bool) -> None:
        run.state = RunState.FINISHING
        try:
            self._emit_run_event(self.FINISHING)
        except BaseException as e:
            run.fail(e)
            wait = False
        if wait:
            await run.wait_for(self._queue)
        # From here on, every step runs whatever the one before raised (a terminate= hook, a
        # callback on CANCELLED or FINISHED): the run reaches its end, and the first error is raised.
        try:
            with self._output.capture():
                self._cancel_pending()
        except BaseException as e:
            run.fail(e)
        self._keeper.shutdown(wait=wait and run.error is None)
        run.finished(exit_code)
        if run.error is None:
            with self._output.capture():
                say_what_failed(self.failure_summaries())
                if exit_code is ExitCode.EXHAUSTED and not run.n_submitted:
                    say_nothing_was_done(run, self._tasks, self.event_manager.callbacks(self.STARTED))
        try:
            self._emit_run_event(self.FINISHED)
        except BaseException as e:
            run.fail(e)
        finally:
            self._handoff.close()
            run.loop_thread = None

    def _cancel_pending(self) -> None:
        """Settle everything still queued as cancelled (a `wait=False` end, or an error).

        Raises:
            BaseException: the `terminate=` hook raised (the workers were killed anyway).
        """
        pending = list(self._queue.items())
        self._queue.clear()
        for future, call in pending:
            future.cancel()
            if call is not None:
                try:
                    call.task.cancelled_call(call)
                except BaseException as e:
                    self._fail(e)
        if pending:
            self._keeper.kill_running()

    # -- notebook ----------------------------------------------------------
    def dashboard(self, *tasks: Any, **options: Any) -> Dashboard:
        """A [`Dashboard`][byop_nb.notebook.Dashboard] for this scheduler (needs the `notebook` extra)."""
        # The one import of the notebook skin from below it, on purpose and lazily (tests/test_layering.py).
        from byop_nb.notebook import Dashboard

        return Dashboard(self, *tasks, **options)

    if not TYPE_CHECKING:  # type checkers keep flagging unknown attributes themselves

        def __getattr__(self, name: str) -> Any:
            # Only for names that are not found: suggest the subscriber a user probably meant.
            raise AttributeError(_checks.no_such_attribute(self, name))

    def __repr__(self) -> str:
        counts = ", ".join(f"{event}={n}" for event, n in self.event_manager.counts.items())
        return (
            f"Scheduler(state={self.state!r}, executor={type(self.executor).__name__}, "
            f"tasks={list(self._tasks)}, running={len(self._queue)}, counts={{{counts}}})"
        )

    def _repr_html_(self) -> str:
        from byop_nb import _html

        return _html.scheduler_html(self)
