"""The Scheduler: runs an asyncio loop around any `concurrent.futures.Executor`.

Futures finish in executor threads; their completion is handed to the
scheduler's event loop, where the events of the call are emitted. Everything
a user callback does therefore happens in one thread, in a deterministic
order per event.

The Scheduler keeps the run (its state machine: `_begin`, `_until_end`,
`_finish`), submission, the registry of tasks and the counts. Two
collaborators do the rest, each in its own module:

* [`Handoff`][byop_nb.scheduling._handoff.Handoff] hands finished futures from
  executor threads to the loop (the doorbell, the bounded drain, nested drains);
* [`ExecutorKeeper`][byop_nb.scheduling._executors.ExecutorKeeper] keeps the
  executor (submitting, watching workers, replacing a broken pool, killing
  workers, shutting down).

Where a scheduler event is emitted: STARTED in `_run_begun`; STOP, TIMEOUT and
EMPTY in `_until_end`; FINISHING and FINISHED in `_finish`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures._base import FINISHED as _FINISHED
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar

from byop_nb._text import clipped
from byop_nb.events import Event, EventManager, Subscriber
from byop_nb.scheduling import _checks, _shipping
from byop_nb.scheduling import _executors as _executors
from byop_nb.scheduling._checks import OnException, Policy, check_run_options, exception_policy, positive_int
from byop_nb.scheduling._handoff import Handoff
from byop_nb.scheduling._output import RunOutput
from byop_nb.scheduling._runtime import (
    RunHandle,
    interrupted,
    log_background_error,
    note_callback,
    run_nested,
    running_loop,
    trim_traceback,
)

if TYPE_CHECKING:
    import pandas as pd

    from byop_nb._status import Status
    from byop_nb.notebook import Dashboard
    from byop_nb.scheduling._call import Call
    from byop_nb.scheduling._worker import Limits
    from byop_nb.scheduling.task import FailureSummary, Task

__all__ = ["Scheduler", "ExitCode", "RunHandle"]

logger = logging.getLogger(__name__)

# A concluded call of a batch, to announce: the Call, ended (`call.end`) and recorded.
_Ended: TypeAlias = "Call"

P = ParamSpec("P")
R = TypeVar("R")


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


class _State(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    FINISHING = "finishing"
    FINISHED = "finished"


_get_ident = threading.get_ident  # asked once per call that finished at submission

# The states read once per call (`_accepts`): an Enum member read through its class costs as much
# as the rest of the check (about 80 ns on CPython 3.11), a module global a fifth of it.
_RUNNING, _FINISHING = _State.RUNNING, _State.FINISHING


class Scheduler:
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

        self._tasks: dict[str, Task[Any, Any]] = {}
        # The work in flight: future -> its Call (None for plain submit()); insertion ordered.
        self._queue: dict[Future[Any], Call | None] = {}
        self._output = RunOutput()  # a background run's callback output, for a Dashboard's log pane
        self._handoff = Handoff(self._process_future, self._announce_batch, self._after_drain, self._output)
        self._on_future_done = self._handoff.future_done  # one bound method, not one per call
        self._state = _State.IDLE
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stop_requested = False
        self._wake: asyncio.Future[None] | None = None
        self._empty_announced = False
        self._error: BaseException | None = None
        self._exception_policy: Callable[[BaseException], Policy] | None = None
        self._ended_by: ExitCode | None = None  # set when on_exception="end" ends the run
        self._end_after_failures: int | None = None  # the run's option
        self._failures_in_a_row: dict[str, int] = {}  # per task name, during a run with that option
        self._n_submitted = 0  # calls submitted in the latest run
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.exit_code: ExitCode | None = None
        self.last_error: BaseException | None = None
        self.timeout: float | None = None  # the latest run's timeout (the Dashboard's time progress)
        self._handle: RunHandle | None = None

    @property
    def executor(self) -> Executor:
        """The executor in use (a fresh one of the same settings after a run shut it down, or a worker died)."""
        return self._keeper.executor

    @property
    def terminate(self) -> bool | Callable[[Executor], Any]:
        """How a `wait=False` end kills running work (see the class's Args)."""
        return self._keeper.terminate

    # -- constructors ------------------------------------------------------
    @classmethod
    def with_processes(
        cls,
        max_workers: int | None = None,
        *,
        start_method: str | None = None,
        terminate: bool | Callable[[Executor], Any] = True,
    ) -> Scheduler:
        """A Scheduler on a `ProcessPoolExecutor` with `max_workers` processes.

        Args:
            max_workers: number of worker processes (default: the number of CPUs).
            start_method: "fork", "spawn" or "forkserver" (default: Python's default).

        ```python
        from byop_nb.scheduling import Scheduler
        scheduler = Scheduler.with_processes(2)
        ```
        """
        import multiprocessing

        positive_int("max_workers", max_workers)
        if start_method is not None and start_method not in multiprocessing.get_all_start_methods():
            raise ValueError(
                f"start_method={start_method!r} is not available here; "
                f"accepted: {multiprocessing.get_all_start_methods()}"
            )
        context = multiprocessing.get_context(start_method) if start_method else None
        return cls(ProcessPoolExecutor(max_workers=max_workers, mp_context=context), terminate=terminate)

    @classmethod
    def with_threads(cls, max_workers: int | None = None) -> Scheduler:
        """A Scheduler on a `ThreadPoolExecutor` (threads cannot be killed: `wait=False` abandons them)."""
        positive_int("max_workers", max_workers)
        return cls(ThreadPoolExecutor(max_workers=max_workers))

    @classmethod
    def with_sequential(cls) -> Scheduler:
        """A Scheduler that runs each call in the main thread when it is submitted (for debugging)."""
        return cls(_executors.SequentialExecutor())

    @classmethod
    def with_dask(cls, client_or_cluster: Any, **executor_kwargs: Any) -> Scheduler:
        """A Scheduler on a dask.distributed client (or cluster, whose client is used).

        Works the same for `LocalCluster`, and for dask-jobqueue clusters
        (`SLURMCluster`, `PBSCluster`, ...). The cluster stays yours to close.

        ```python
        from dask.distributed import LocalCluster
        from byop_nb.scheduling import Scheduler

        cluster = LocalCluster(n_workers=2, processes=False, host="127.0.0.1", dashboard_address="127.0.0.1:0")
        scheduler = Scheduler.with_dask(cluster)
        ```
        """
        client = client_or_cluster
        if not hasattr(client, "get_executor") and hasattr(client, "get_client"):
            client = client.get_client()  # a cluster: use (or make) its client
        if not hasattr(client, "get_executor") or not hasattr(client, "submit"):
            raise TypeError(f"with_dask needs a dask.distributed Client or a cluster, got {client_or_cluster!r}")
        return cls(client.get_executor(**executor_kwargs))

    @classmethod
    def with_ray(
        cls,
        n_workers: int | None = None,
        *,
        address: str | None = None,
        task_options: dict[str, Any] | None = None,
        **ray_init_kwargs: Any,
    ) -> Scheduler:
        """A Scheduler on Ray (a [`RayExecutor`][byop_nb.scheduling.RayExecutor]); needs the `ray` extra.

        Without `address`, starts a local Ray in this process with `n_workers`
        CPUs (default: all of them) and no dashboard; with `address` (a running
        Ray head's "host:port", or "auto"), connects to that cluster. Either way
        the scheduler owns that Ray: it shuts it down (or disconnects) when a run
        ends, and starts it again for the next run, so nothing of Ray is left
        running between runs. When Ray is running in this process already (you
        called `ray.init`), call `with_ray()` without arguments: the scheduler
        runs on that Ray, which stays yours to shut down (and up between runs).

        Args:
            n_workers: CPUs of the local Ray (Ray's `num_cpus`): that many calls run at once.
            address: a running Ray cluster to connect to instead.
            task_options: options of each call's Ray task (see `RayExecutor`:
                `num_cpus`, `memory`, `num_gpus`, `resources`, ...).
            **ray_init_kwargs: passed on to `ray.init` (e.g. `runtime_env=`, `log_to_driver=False`).

        Raises:
            ImportError: Ray is not installed (the message names the `ray` extra).
            ConnectionError: nothing answers at `address` within 10 s.
            RuntimeError: Ray is running in this process already and arguments asked for another.

        ```python
        from byop_nb.scheduling import Scheduler
        scheduler = Scheduler.with_ray(2)
        ```
        """
        from byop_nb.scheduling._ray import start_ray  # imports Ray itself only now

        positive_int("n_workers", n_workers)
        if address is not None and not isinstance(address, str):
            raise TypeError(f"with_ray(address=...) must be a 'host:port' string or None, got {address!r}")
        return cls(start_ray(n_workers, address, ray_init_kwargs, task_options or {}))

    # -- events and state --------------------------------------------------
    @property
    def counts(self) -> dict[Any, int]:
        """Times each event was emitted: scheduler events by Event, task events by `(Event, task.name)`.

        Only events emitted at least once appear.
        """
        counts: dict[Any, int] = dict(self.event_manager.counts)
        for name, task in self._tasks.items():
            for event, n in task.event_manager.counts.items():
                counts[(event, name)] = n
        return counts

    def counts_df(self) -> pd.DataFrame:
        """The event counts as a DataFrame with columns `source`, `event`, `count`."""
        import pandas as pd

        rows = [("scheduler", str(event), n) for event, n in self.event_manager.counts.items()]
        for name, task in self._tasks.items():
            rows.extend((name, str(event), n) for event, n in task.event_manager.counts.items())
        df = pd.DataFrame(rows, columns=["source", "event", "count"])
        return df.astype({"source": "string", "event": "string", "count": "int64"})

    @property
    def tasks(self) -> dict[str, Task[Any, Any]]:
        """The tasks created on this scheduler, by name."""
        return dict(self._tasks)

    @property
    def state(self) -> str:
        """ "idle", "running", "finishing" or "finished"."""
        return self._state.value

    def running(self) -> bool:
        """Whether a run is going on (including its finishing phase)."""
        return self._state in (_State.RUNNING, _State.FINISHING)

    def empty(self) -> bool:
        """Whether no submitted work is pending or running."""
        return not self._queue

    @property
    def n_running(self) -> int:
        """Number of submitted calls not yet processed."""
        return len(self._queue)

    def _register_task(self, task: Task[Any, Any]) -> None:
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
        if not self._accepts(function):
            return None
        return self._submit(function, None, args, kwargs, None)

    def _accepts(self, function: Callable[..., Any]) -> bool:
        """Whether new work is taken now: False while the run is ending (stop(), a failed callback).

        Raises:
            RuntimeError: the scheduler is not running at all.
        """
        state = self._state
        if state is _RUNNING and not self._stop_requested and self._error is None and self._ended_by is None:
            return True
        if state is _RUNNING or state is _FINISHING:
            logger.debug("run is ending; refused a new call of %r", function)
            return False
        raise RuntimeError(
            f"the scheduler is {state.value}, so nothing can be submitted now; submit from a callback "
            "(e.g. @scheduler.on_start) or while scheduler.start() runs in the background"
        )

    def _submit(
        self,
        function: Callable[..., Any],
        limits: Limits | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        call: Call | None,
    ) -> Future[Any]:
        """Hand one accepted call to the executor and put it in the table of work in flight."""
        try:
            future = self._keeper.submit(function, limits, args, kwargs)
        except _shipping.FunctionNotShippable as e:
            # Like arguments that cannot be pickled: the call fails with a row, and the run goes on.
            e.args = (f"{f'task {call.task.name!r}' if call is not None else 'submit()'}: {e.args[0]}",)
            future = Future()
            future.set_running_or_notify_cancel()
            future.set_exception(e)
        self._queue[future] = call
        self._empty_announced = False
        self._n_submitted += 1
        if type(future) is Future and future._state == _FINISHED and _get_ident() == self._loop_thread:
            # Finished already (a sequential executor, a refused call): add_done_callback would
            # call back here, in the loop's thread, under the future's lock; no bell is needed.
            self._handoff.finished_here(future)
        else:
            future.add_done_callback(self._on_future_done)
        return future

    # -- ending calls (in the loop, handed over by the Handoff) -------------------------
    def _process_future(self, future: Future[Any]) -> _Ended | None:
        """Conclude one finished call: its status and row (the first half of its end); returns what
        `_announce_batch` emits once the whole batch is concluded."""
        try:
            call = self._queue.pop(future)
        except KeyError:  # already settled, e.g. cancelled by a wait=False stop
            return None
        try:
            if type(future) is Future and future._state == _FINISHED:  # the common case, read without locks
                cancelled, exception, result = False, future._exception, future._result
            else:
                cancelled, exception, result = _outcome(future)
            if exception is not None:
                if isinstance(exception, BrokenProcessPool):
                    self._keeper.explain_broken(exception)
                if call is None:  # a plain submit() keeps the worker's traceback too
                    _shipping.attach_traceback(exception)
                    _shipping.name_cells(exception)
                if self._exception_policy is not None:  # before the call's events: what they submit is refused
                    self._on_call_exception(exception, self._exception_policy(exception))
            if call is not None:
                row_status = call.task._conclude(call, cancelled, exception, result)
                if self._end_after_failures is not None:
                    self._count_failure(call.task, row_status)
                return call
        except BaseException as e:  # a user callback raised: end the run with it
            self._fail(e)
        return None

    def _announce_batch(self, ended: list[_Ended]) -> None:
        """The second half of the batch's ends: their rows reach the journals (one write per journal),
        and only then are their events emitted, in the order the calls finished. So every call whose
        events a callback saw is on disk, and a journal costs one system call per batch, not per call."""
        for history in {call.task.history: None for call in ended}:  # each once, in order
            history.flush()
        for call in ended:
            try:
                call.task._announce(call)
            except BaseException as e:  # a user callback raised: end the run with it
                self._fail(e)

    def _on_call_exception(self, exception: BaseException, policy: Policy) -> None:
        """Apply the run's `on_exception` to a call that raised; its events are emitted after this."""
        if policy == "raise":
            self._fail(exception)
        elif policy == "end" and self._ended_by is None and self._state is _State.RUNNING:
            self._ended_by = ExitCode.EXCEPTION
            self.last_error = exception
            self._wake_up()

    def _count_failure(self, task: Task[Any, Any], status: Status) -> None:
        """`run(end_after_failures=N)`: count the task's failed calls in a row; end the run at N."""
        if status in task.FAILURES:
            in_a_row = self._failures_in_a_row[task.name] = self._failures_in_a_row.get(task.name, 0) + 1
        else:
            if status != "cancelled":
                self._failures_in_a_row[task.name] = 0
            return
        limit = self._end_after_failures
        if limit is None or in_a_row < limit or self._ended_by is not None or self._state is not _State.RUNNING:
            return
        row = task.history.row(-1)
        kind, message = row.get("exception_type"), row.get("exception_message")
        last = f"{kind}: {message}" if kind else str(row.get("status"))
        self._ended_by = ExitCode.EXCEPTION
        self.last_error = RuntimeError(
            f"the run ended after {in_a_row} failed {task._NOUN} in a row of {task.name!r} "
            f"(end_after_failures={limit}); the last: {clipped(last, 500)}"
        )
        self._wake_up()

    def _after_drain(self, deferred: bool) -> None:
        if deferred or not self._queue or self._stop_requested:
            self._wake_up()

    def _fail(self, error: BaseException) -> None:
        note_callback(error)
        if self._error is None:
            self._error = error
        self.last_error = error
        self._wake_up()

    def _wake_up(self) -> None:
        """Let the run go on to its next step (end, stop, timeout); after the drain, if one is on the stack.

        A callback may run another scheduler (its run nests into this loop): until that callback
        returns, this run does not end under it.
        """
        if self._handoff.defer_wake():
            return
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    # -- running -----------------------------------------------------------
    def stop(self, *args: Any, **kwargs: Any) -> None:
        """Ask the running scheduler to stop; safe from callbacks, other cells and threads.

        The run then emits STOP, FINISHING, waits for (or with `wait=False`
        cancels) the running work, emits FINISHED and returns
        `ExitCode.STOPPED`. Arguments are accepted and ignored, so `stop` can
        be subscribed to any event directly. Does nothing when not running.
        """
        if not self.running() or self._stop_requested:
            return
        self._stop_requested = True
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._wake_up()
        else:
            try:
                loop.call_soon_threadsafe(self._wake_up)
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
        check_run_options(timeout, end_on_empty, wait, on_exception, end_after_failures)
        self._check_not_running("run()")
        coroutine = self.async_run(
            timeout=timeout,
            end_on_empty=end_on_empty,
            wait=wait,
            on_exception=on_exception,
            end_after_failures=end_after_failures,
        )
        loop = running_loop()
        try:
            if loop is None:  # outside the except block, so no worker inherits its exception context
                return asyncio.run(coroutine)
            return run_nested(loop, coroutine)
        except Exception as error:  # from a callback (or a wrong use in one): show the user's frames
            raise trim_traceback(error)
        except KeyboardInterrupt as interrupt:  # the kernel's interrupt: the user's line, not the event loop's
            raise interrupted(interrupt, self) from None

    def start(
        self,
        *,
        timeout: float | None = None,
        end_on_empty: bool = True,
        wait: bool = True,
        on_exception: OnException = "continue",
        end_after_failures: int | None = None,
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
        check_run_options(timeout, end_on_empty, wait, on_exception, end_after_failures)
        self._check_not_running("start()")
        loop = running_loop()
        if loop is None:
            raise RuntimeError(
                "start() runs the scheduler in the background of an already running event loop, as in "
                "a Jupyter kernel, and there is none here. Use scheduler.run() to run and wait, or "
                "`await scheduler.async_run()` inside async code."
            )
        self._begin(loop, on_exception, end_after_failures, background=True)
        task = loop.create_task(self._run_begun(timeout=timeout, end_on_empty=end_on_empty, wait=wait))
        task.add_done_callback(self._log_background_error)
        handle = RunHandle(task, self)
        self._handle = handle
        return handle

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
    ) -> ExitCode:
        """The coroutine behind `run()`; same arguments and result.

        ```python
        exit_code = await scheduler.async_run(timeout=10)
        ```
        """
        check_run_options(timeout, end_on_empty, wait, on_exception, end_after_failures)
        self._check_not_running("async_run()")
        self._begin(asyncio.get_running_loop(), on_exception, end_after_failures)
        try:
            return await self._run_begun(timeout=timeout, end_on_empty=end_on_empty, wait=wait)
        except asyncio.CancelledError as cancelled:  # Kernel -> Interrupt of `await async_run()`
            raise interrupted(cancelled, self) from None

    def _log_background_error(self, task: asyncio.Task[ExitCode]) -> None:
        with self._output.capture():  # into a Dashboard's log pane, with the rest of the run's output
            log_background_error(task)

    def _emit_run_event(self, event: Event[[]]) -> None:
        """Emit a scheduler event; a background run's callbacks write to the log pane of a Dashboard."""
        with self._output.capture():
            self.event_manager.emit(event)

    def _begin(
        self,
        loop: asyncio.AbstractEventLoop,
        on_exception: OnException = "continue",
        end_after_failures: int | None = None,
        *,
        background: bool = False,
    ) -> None:
        """Make the scheduler running on `loop`: work can be submitted from here on."""
        self._exception_policy = exception_policy(on_exception)
        self._end_after_failures = end_after_failures
        self._failures_in_a_row = {}
        self._n_submitted = 0
        self._ended_by = None
        self._keeper.renew()
        for task in self._tasks.values():
            task._at_run_start = (dict(task.event_manager.counts), task.history.status_counts, len(task.history))
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._handoff.open(loop)
        self._output.begin_run(background=background)
        self._state = _State.RUNNING
        self._stop_requested = False
        self._error = None
        self.last_error = None  # an error belongs to the run it ended
        self._empty_announced = False
        self.started_at = time.time()
        self.finished_at = None
        self.exit_code = None

    async def _run_begun(self, *, timeout: float | None, end_on_empty: bool, wait: bool) -> ExitCode:
        self.timeout = timeout
        loop = asyncio.get_running_loop()
        exit_code = ExitCode.UNKNOWN
        cancelled: BaseException | None = None
        try:
            self._emit_run_event(self.STARTED)
            exit_code = await self._until_end(loop, timeout, end_on_empty)
        except asyncio.CancelledError as e:
            cancelled = e
            exit_code = ExitCode.UNKNOWN
        except BaseException as e:
            self._fail(e)
            exit_code = ExitCode.STOPPED
        await self._finish(exit_code, wait=wait and self._error is None and cancelled is None)
        if self._error is not None:
            raise self._error
        if cancelled is not None:
            raise cancelled
        return exit_code

    async def _until_end(self, loop: asyncio.AbstractEventLoop, timeout: float | None, end_on_empty: bool) -> ExitCode:
        deadline = None if timeout is None else loop.time() + timeout
        timer = None if deadline is None else loop.call_at(deadline, self._wake_up)
        try:
            while True:
                if self._error is not None:
                    return ExitCode.STOPPED
                if self._ended_by is not None:
                    return self._ended_by
                if self._stop_requested:
                    self._emit_run_event(self.STOP)
                    return ExitCode.STOPPED
                if deadline is not None and loop.time() >= deadline:
                    self._emit_run_event(self.TIMEOUT)
                    return ExitCode.TIMEOUT
                if not self._queue:
                    if end_on_empty:
                        return ExitCode.EXHAUSTED
                    if not self._empty_announced:
                        self._empty_announced = True
                        self._emit_run_event(self.EMPTY)
                        continue
                self._wake = loop.create_future()
                await self._wake
        finally:
            self._wake = None
            if timer is not None:
                timer.cancel()

    async def _finish(self, exit_code: ExitCode, *, wait: bool) -> None:
        self._state = _State.FINISHING
        loop = asyncio.get_running_loop()
        try:
            self._emit_run_event(self.FINISHING)
        except BaseException as e:
            self._fail(e)
            wait = False
        if wait:
            while self._queue and self._error is None:
                self._wake = loop.create_future()
                try:
                    await self._wake
                except asyncio.CancelledError:
                    break
                finally:
                    self._wake = None
        # From here on, every step runs whatever the one before raised (a terminate= hook, a
        # callback on CANCELLED or FINISHED): the run reaches its end, and the first error is raised.
        try:
            with self._output.capture():
                self._cancel_pending()
        except BaseException as e:
            self._fail(e)
        self._keeper.shutdown(wait=wait and self._error is None)
        self._state = _State.FINISHED
        self.exit_code = exit_code
        self.finished_at = time.time()
        if self._error is None:
            with self._output.capture():
                self._say_what_failed()
                if exit_code is ExitCode.EXHAUSTED and not self._n_submitted:
                    self._say_nothing_was_done()
        try:
            self._emit_run_event(self.FINISHED)
        except BaseException as e:
            self._fail(e)
        finally:
            self._handoff.close()
            self._loop = None
            self._loop_thread = None

    def _say_what_failed(self) -> None:
        """Once per run: one line per task whose calls failed, handled by a callback or not (a plain
        Task whose only failures are resource-limit hits is left out: the limits were set).

        The exit code stays the guide's (`EXHAUSTED` when every call ended, failed or not); the
        line tells a notebook user what the DataFrame would (`failure_summaries()` holds the same).
        """
        for summary in self.failure_summaries():
            if not summary.only_limit_hits:  # hitting a limit that was set is no surprise
                logger.warning("%s; see task.df()", summary.line)

    def _say_nothing_was_done(self) -> None:
        """A run of a scheduler with tasks that ended at once with nothing submitted: one line, not
        silence (a re-run cell made the scheduler anew, and the cell that subscribed `on_start` was
        not run again). A scheduler without tasks (the guide's first examples) is left alone."""
        if not self._tasks:
            return
        names = [str(getattr(c, "__name__", c)) for c in self.event_manager.callbacks(self.STARTED)]
        refused = [
            task
            for task in self._tasks.values()
            if task.event_manager.counts.get(task.CALL_LIMIT_REACHED, 0)
            > task._at_run_start[0].get(task.CALL_LIMIT_REACHED, 0)
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
            next(iter(self._tasks)),
        )

    def failure_summaries(self) -> list[FailureSummary]:
        """The [`FailureSummary`][byop_nb.scheduling.FailureSummary] of each task with failed calls in the
        latest run (the current one, while it runs), in the order the tasks were made; `[]` when none failed.

        ```python
        for summary in scheduler.failure_summaries():
            print(summary.line)     # 6 of 6 trials of 'evaluate' crashed; first: KeyError: 'learning_rate' (...)
        ```
        """
        return [summary for task in self._tasks.values() if (summary := task.failure_summary())]

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
                    call.task._end(call, True, None, None)
                except BaseException as e:
                    self._fail(e)
        if pending:
            self._keeper.kill_running()

    # -- notebook ----------------------------------------------------------
    def dashboard(self, *tasks: Task[Any, Any], **options: Any) -> Dashboard:
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


def _outcome(future: Future[Any]) -> tuple[bool, BaseException | None, Any]:
    """`(cancelled, exception, result)` of a done future, asked through its methods.

    The standard library's Future guards each of `cancelled()`, `exception()`
    and `result()` with its lock (about a microsecond each); once such a future
    has FINISHED its fields no longer change, so `_process_future` reads them
    directly (inline: it runs once per call) and asks here only for the rest:
    cancelled futures, and futures of other classes.
    """
    if future.cancelled():
        return True, None, None
    exception = future.exception()
    return False, exception, None if exception is not None else future.result()
