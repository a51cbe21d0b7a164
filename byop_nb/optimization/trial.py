"""Trial: one evaluation of a configuration, its timed run in a worker, and its report.

The main process makes a [`Trial`][byop_nb.optimization.Trial] and submits it
with a [`Trial.Task`][byop_nb.optimization.Trial.Task]; the function gets it
first, runs the evaluation inside `with trial.begin():` (which times it and
captures an exception), and returns a report:

```python
from byop_nb.optimization import Trial

def evaluate(trial: Trial) -> Trial.Report:
    with trial.begin():
        loss = (trial.config["x"] - 3) ** 2
    if trial.exception is not None:
        return trial.crashed()
    if loss > 100:
        return trial.fail(loss=loss)
    return trial.success(loss=loss)
```

The function may also return a plain number, as an Optuna objective does: it
is a success with that number under the trial's `metric` (the optimizer's,
`"value"` for a trial made by hand); a mapping of metric names to numbers is a
success with those results:

```python
def evaluate(trial: Trial) -> float:
    return (trial.config["x"] - 3) ** 2       # a success: results {"loss": ...} under metric "loss"
```

A report carries the trial, the timings of the `begin()` block, the results,
and the exception with its traceback text. Reports pickle small (no frames, no
live objects), so they travel back from process workers cheaply.

Here: `Trial` (its worker side: `begin()`, the reports, `report_step`,
`should_prune`, `prune`) and `TrialTask` (the main side: a call's report is
made in `_report`, its row recorded in `_record`, its events emitted in
`_emit`). The steps of multi-fidelity trials (what travels, how the main
process answers, records and streams them, `read_steps`) are in
`optimization/_steps.py`, which `TrialTask` is built on.
"""

from __future__ import annotations

import contextlib
import pickle
import threading
import time
import traceback as _traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Concatenate, Generic, ParamSpec

from byop_nb._text import bounded_repr
from byop_nb.events import Event, Subscriber
from byop_nb.optimization._steps import SHOULD_PRUNE, StepsTask, checked_step, is_number, plain_number, read_steps
from byop_nb.scheduling.comm._worker import Comm, _CommCall
from byop_nb.scheduling.engine._call import Call, Status
from byop_nb.scheduling.task import Task, TaskOptions
from byop_nb.scheduling.workers._executors import SequentialExecutor
from byop_nb.scheduling.workers._shipping import traceback_text

if TYPE_CHECKING:
    from typing import Unpack

    from byop_nb.scheduling.scheduler import Scheduler

__all__ = ["Trial", "TrialTask", "read_steps"]

P = ParamSpec("P")


def _portable(exception: BaseException) -> BaseException:
    """`exception`, or a RuntimeError with its text when it cannot be pickled (reports must travel)."""
    try:
        pickle.dumps(exception)
    except Exception:
        portable = RuntimeError(f"{type(exception).__name__}: {exception}")
        portable.add_note("byop_nb: the original exception could not be pickled; this carries its text")
        return portable
    return exception


def _cpu_clock() -> Callable[[], float]:
    # In a process worker (or pynisher's child) the call owns the process: count all its
    # threads. In a thread worker the process is shared with other calls: count this thread.
    return time.process_time if threading.current_thread() is threading.main_thread() else time.thread_time


@dataclass(eq=False)
class Trial:
    """One configuration to evaluate, and the record of its evaluation in the worker.

    Args:
        name: the trial's name (a column of the recorded reports).
        config: the configuration to evaluate.
        info: anything else to keep with the trial (seed, fidelity, ...).
        metric: the name (or names, for several objectives) of the result a
            plain returned number is recorded under; optimizers set it to
            their `metric` in `ask()`. None (a trial made by hand) means "value".
        optimizer: the optimizer that asked the trial (optimizers set it in
            `ask()`): in the main process, the Trial.Task hands it the steps
            the trial reports and asks it `should_prune` (see
            `PruningOptimizer`). It stays in the main process: a trial
            travels to a worker without it.

    After `begin()` the worker-side trial holds `timings`, `exception` and
    `traceback` (the text of the exception's traceback). Trials are equal when
    name, config and info are; they hash by name, so they can key a dict.

    While a [`Trial.Task`][byop_nb.optimization.Trial.Task]'s function runs,
    `trial.comm` is the call's [`Comm`][byop_nb.scheduling.Comm], to talk with
    the main process (`trial.comm.send(...)`, `trial.comm.request(...)`, which
    the task's `on_message` / `on_request` receive); it is None otherwise.

    Example:
        ```python
        from byop_nb.optimization import Trial

        trial = Trial(name="t-1", config={"x": 1.5}, info={"seed": 0})
        with trial.begin():
            y = trial.config["x"] ** 2
        report = trial.success(y=y)
        assert report.status == "success" and report.results == {"y": 2.25}
        ```
    """

    name: str
    config: Mapping[str, Any] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)
    metric: str | Sequence[str] | None = field(default=None, compare=False, repr=False)
    timings: Trial.Timings | None = field(default=None, init=False, compare=False)
    exception: BaseException | None = field(default=None, init=False, compare=False, repr=False)
    traceback: str | None = field(default=None, init=False, compare=False, repr=False)
    optimizer: Any = field(default=None, compare=False, repr=False)
    comm: Comm | None = field(default=None, init=False, compare=False, repr=False)
    # While a `begin()` block runs: (start, wall clock at start, CPU clock at start, the CPU clock).
    _clock: tuple[float, float, float, Callable[[], float]] | None = field(
        default=None, init=False, compare=False, repr=False
    )
    # In the worker: whether the asking optimizer prunes, and the latest step reported.
    _prunes: bool = field(default=False, init=False, compare=False, repr=False)
    _asked_by: str | None = field(default=None, init=False, compare=False, repr=False)  # the optimizer's class
    _last_step: int | None = field(default=None, init=False, compare=False, repr=False)

    Task: ClassVar[type[TrialTask[...]]]
    """[`TrialTask`][byop_nb.optimization.trial.TrialTask]: `Trial.Task(function, scheduler, ...)`."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trial):
            return NotImplemented
        return (self.name, self.config, self.info) == (other.name, other.config, other.info)

    def __hash__(self) -> int:
        return hash(self.name)

    def __getstate__(self) -> dict[str, Any]:
        # The optimizer stays in the main process (it holds a study, a database connection...): the
        # worker gets only whether it prunes, which is what `prune()` checks there.
        state = dict(self.__dict__)
        optimizer = state.pop("optimizer", None)
        state["optimizer"] = None
        state["_prunes"] = bool(getattr(optimizer, "prunes", False)) or state.get("_prunes", False)
        if optimizer is not None:
            state["_asked_by"] = type(optimizer).__name__
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Trial name= must be a non-empty str, got {self.name!r}")
        if not isinstance(self.config, Mapping):
            raise TypeError(f"Trial config= must be a mapping (e.g. a dict), got {self.config!r}")
        if self.info is None:
            self.info = {}
        if not isinstance(self.info, Mapping):
            raise TypeError(f"Trial info= must be a mapping (e.g. a dict) or None, got {self.info!r}")
        metrics = [self.metric] if isinstance(self.metric, str) else self.metric
        if metrics is not None and (
            not isinstance(metrics, Sequence) or not metrics or not all(isinstance(m, str) and m for m in metrics)
        ):
            raise TypeError(
                f"Trial metric= must be a result's name (a non-empty str), a list of them, or None, got {self.metric!r}"
            )

    @property
    def metrics(self) -> list[str]:
        """The names a plain returned value is recorded under: `metric` as a list, `["value"]` without one."""
        if self.metric is None:
            return ["value"]
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @dataclass(frozen=True)
    class Timings:
        """When the `begin()` block ran and what it cost.

        Attributes:
            start: wall-clock start, seconds since the epoch.
            end: wall-clock end, seconds since the epoch.
            wall_time: elapsed seconds (monotonic clock).
            cpu_time: CPU seconds: of the whole worker process in a process
                worker, of the worker's own thread in a thread worker.
        """

        start: float
        end: float
        wall_time: float
        cpu_time: float

    @dataclass(frozen=True)
    class Report:
        """What a trial's evaluation gave: `SuccessReport`, `FailReport` or `CrashReport`.

        Attributes:
            trial: the trial that was evaluated.
            results: the keyword arguments of `success(...)` / `fail(...)`.
            timings: of the `begin()` block, or None when it was not used.
            exception: the exception that made the trial fail or crash, if any.
            traceback: that exception's traceback, as text.
            status: "success", "fail" or "crashed" (per class).
        """

        trial: Trial
        results: Mapping[str, Any] = field(default_factory=dict)
        timings: Trial.Timings | None = None
        exception: BaseException | None = None
        traceback: str | None = field(default=None, repr=False)

        status: ClassVar[Status]

    @dataclass(frozen=True)
    class SuccessReport(Report):
        """The trial succeeded: `trial.success(**results)`."""

        status: ClassVar[Status] = Status.SUCCESS

    @dataclass(frozen=True)
    class FailReport(Report):
        """The trial ran but failed: `trial.fail(**results)` (a bad configuration, a diverged run, ...)."""

        status: ClassVar[Status] = Status.FAIL

    @dataclass(frozen=True)
    class CrashReport(Report):
        """The trial crashed: `trial.crashed(exception)`, an exception escaping the function, or a limit hit.

        Attributes:
            limit: "memory", "cpu_time" or "wall_time" when the Task's limit
                ended the call, else None.
        """

        limit: str | None = None

        status: ClassVar[Status] = Status.CRASHED

    @dataclass(frozen=True)
    class PrunedReport(Report):
        """The trial was stopped early on its optimizer's word: `return trial.prune(**results)`.

        Attributes:
            step: the latest step the trial reported with `report_step` (None
                when it reported none).
        """

        step: int | None = None

        status: ClassVar[Status] = Status.PRUNED

    # -- in the worker -------------------------------------------------------
    @contextlib.contextmanager
    def begin(self) -> Iterator[Trial]:
        """Time the block (wall and CPU) and capture an exception raised in it.

        After the block, `trial.timings` is set, and `trial.exception` and
        `trial.traceback` hold what the block raised (None when it did not).
        `Exception`s are captured; `KeyboardInterrupt`, `SystemExit` and
        `MemoryError` pass (a `MemoryError` is how a `memory_limit` hit shows
        inside the call: passing it on lets the Task report the limit).
        A report made inside the block (`return trial.success(...)` in it)
        gets the timings up to the moment it was made.

        ```python
        with trial.begin():
            train(trial.config)
        if trial.exception:
            return trial.crashed()
        ```
        """
        self.exception = None
        self.traceback = None
        self.timings = None
        cpu_clock = _cpu_clock()
        self._clock = (time.time(), time.perf_counter(), cpu_clock(), cpu_clock)
        try:
            yield self
        except MemoryError:
            # Passes like KeyboardInterrupt: under a memory_limit it is the limit, which the Task
            # reports as a crash naming it (a CrashReport made here would hide the limit).
            raise
        except Exception as e:
            self.exception = _portable(e)
            self.traceback = _traceback.format_exc()
        finally:
            self.timings = self._timings_now()
            self._clock = None

    def _timings_now(self) -> Trial.Timings | None:
        """The timings of the `begin()` block: up to now while it runs, else as it ended (None without one)."""
        clock = self._clock
        if clock is None:
            return self.timings
        start, wall0, cpu0, cpu_clock = clock
        wall, cpu = time.perf_counter() - wall0, cpu_clock() - cpu0
        return Trial.Timings(start=start, end=start + wall, wall_time=wall, cpu_time=cpu)

    # -- multi-fidelity: steps, and pruning (in the worker) -------------------------
    def report_step(self, step: int, **metrics: float) -> None:
        """Report the trial's metrics at an integer `step` (an epoch, a boosting round) to the main process.

        The report travels through the call's comm (`trial.comm`) as one
        request: when it returns, the main process has recorded the step
        (`task.steps_df()`, the Dashboard's learning curves) and the optimizer
        that asked the trial has it (`OptunaOptimizer` reports the metric to the
        Optuna trial, into the study's storage). Works wherever a CommTask
        works (processes, dask, Slurm, Ray).

        ```python
        def train(trial: Trial) -> Trial.Report:
            model = make_model(trial.config)
            for epoch in range(20):
                loss = model.fit_one_epoch()
                trial.report_step(epoch, loss=loss)
                if trial.should_prune():
                    return trial.prune(loss=loss)
            return trial.success(loss=loss)
        ```

        Args:
            step: an int, larger than the trial's previous step.
            metrics: metric names and numbers; they must include the metric of
                the optimizer that asked the trial (`trial.metrics`).

        Raises:
            RuntimeError: not inside a running `Trial.Task` call.
            ValueError: `step` is not an int larger than the previous one; no
                metrics; a metric is not a number; the optimizer's metric is
                missing; or the optimizer refused the step (its message).
        """
        comm = self._running_comm("report_step")
        request = checked_step(
            self.name, step, metrics, last=self._last_step, names=self.metrics, required=self.metric is not None
        )
        ok, error = comm.request(request)
        if not ok:
            raise ValueError(error)
        self._last_step = step

    def should_prune(self) -> bool:
        """Whether the optimizer that asked the trial says to stop it now: one round trip to the main process.

        Answered from the latest step the trial reported (`report_step`);
        False before any. An optimizer without a pruner (`RandomSearch`,
        `OptunaOptimizer` without `pruner=`, or none: a trial made by hand)
        always answers False.

        Raises:
            RuntimeError: not inside a running `Trial.Task` call, or the
                optimizer's `should_prune` raised (its message).
        """
        comm = self._running_comm("should_prune")
        ok, answer = comm.request(SHOULD_PRUNE)
        if not ok:
            raise RuntimeError(answer)
        return bool(answer)

    def prune(self, **results: Any) -> Trial.PrunedReport:
        """A [`PrunedReport`][byop_nb.optimization.Trial.PrunedReport]: return it to end the trial as pruned.

        `results` are what the trial measured last (e.g. its metric at the
        latest step); the report carries that step. An `OptunaOptimizer` tells
        the study trial as PRUNED; the task emits `on_pruned`.

        Raises:
            RuntimeError: the optimizer that asked the trial has no pruner (or
                there is none): nothing decided to prune it.
        """
        # In a thread worker the trial is the main process's own, with its optimizer; a copy has `_prunes`.
        if not (self._prunes or getattr(self.optimizer, "prunes", False)):
            raise RuntimeError(
                f"trial {self.name!r}: prune() in a run without a pruner: the optimizer that asked the trial "
                f"({self._optimizer_name() or 'none; a trial made by hand'}) never prunes. Ask trials from an "
                "optimizer with a pruner, e.g. OptunaOptimizer(space, pruner=optuna.pruners.MedianPruner()), "
                "and prune when trial.should_prune() says so; or end the trial with trial.success(...) or "
                "trial.fail(...)"
            )
        return Trial.PrunedReport(trial=self, results=results, timings=self._timings_now(), step=self._last_step)

    def _optimizer_name(self) -> str | None:
        return type(self.optimizer).__name__ if self.optimizer is not None else self._asked_by

    def _running_comm(self, method: str) -> Any:
        comm = self.comm
        if comm is None:
            raise RuntimeError(
                f"trial {self.name!r}: {method}() works inside the function of a running Trial.Task call "
                "(the trial it was given), where it talks to the main process; this trial is not running there"
            )
        return comm

    def success(self, **results: Any) -> Trial.SuccessReport:
        """A [`SuccessReport`][byop_nb.optimization.Trial.SuccessReport] with `results` and the timings."""
        return Trial.SuccessReport(trial=self, results=results, timings=self._timings_now())

    def fail(self, **results: Any) -> Trial.FailReport:
        """A [`FailReport`][byop_nb.optimization.Trial.FailReport] with `results`, the timings and the
        exception `begin()` captured (if any)."""
        return Trial.FailReport(
            trial=self,
            results=results,
            timings=self._timings_now(),
            exception=self.exception,
            traceback=self.traceback,
        )

    def crashed(self, exception: BaseException | None = None, **results: Any) -> Trial.CrashReport:
        """A [`CrashReport`][byop_nb.optimization.Trial.CrashReport] for `exception`.

        Args:
            exception: what crashed the trial (default: what `begin()` captured).
            results: anything measured before the crash.

        Raises:
            ValueError: no exception was given and `begin()` captured none.
        """
        if exception is None:
            if self.exception is None:
                raise ValueError(
                    f"trial {self.name!r}: crashed() needs the exception that crashed it; pass it, or call "
                    "crashed() after a `with trial.begin():` block that raised"
                )
            exception, text = self.exception, self.traceback
        else:
            text = self.traceback if exception is self.exception else "".join(_traceback.format_exception(exception))
            exception = _portable(exception)
        return Trial.CrashReport(
            trial=self, results=results, timings=self._timings_now(), exception=exception, traceback=text
        )


class TrialTask(StepsTask[Concatenate[Trial, P], Any], Generic[P]):
    """A Task for optimization: calling it with a [`Trial`][byop_nb.optimization.Trial] evaluates it.

    Spelled `Trial.Task(function, scheduler, ...)`; takes every
    [`Task`][byop_nb.scheduling.Task] option (limits included). The function
    gets the trial first and returns `trial.success(...)`, `trial.fail(...)` or
    `trial.crashed(...)`; or, as an Optuna objective does, a plain number (a
    success with `{trial.metric: number}`; the metric is the optimizer's when
    an optimizer asked the trial, else `"value"`) or a mapping of metric names
    to numbers (a success with those results). Any other value is a crash
    whose message says what to return.

    Events, after the Task's own `DONE` and `RETURNED`/`EXCEPTION`:

    * `REPORT(report)` `on_report`: every report;
    * `SUCCESS(report)` `on_success`, `FAILURE(report)` `on_failed`,
      `CRASHED(report)` `on_crashed`, `PRUNED(report)` `on_pruned`: by kind.

    Multi-fidelity: the function may report its metrics at each step
    (`trial.report_step(step, **metrics)`), ask `trial.should_prune()`, and
    end with `return trial.prune(...)`. The task answers those requests
    itself (they are not `REQUEST` events), records each step
    (`step_rows`, `steps_df()`, `stream_steps_to`), and hands it to the
    optimizer that asked the trial (`trial.optimizer`, see `PruningOptimizer`);
    that half of the task is its base class, `_steps.StepsTask`.

    An exception escaping the function, a limit hit (the CrashReport's `limit`
    names it: "memory", "cpu_time" or "wall_time"), or a return value that is
    neither a report, a number nor a mapping of numbers become a CrashReport. A cancelled trial (a `wait=False` stop)
    makes no report.

    A Trial.Task is a [`CommTask`][byop_nb.scheduling.CommTask]: while the
    function runs, `trial.comm` is its call's [`Comm`][byop_nb.scheduling.Comm]
    (the function's signature stays `function(trial, ...)`), so it can
    `trial.comm.send(obj)` (`on_message(msg)`) and `trial.comm.request(obj)`
    (`on_request(msg)`, answered with `msg.respond(x)`); `msg.args[0]` is the
    trial. `on_close(msg)` comes once per call, before its `DONE`. The comm
    connects only when used, so a trial that never uses it pays no connection.
    On the sequential executor the function runs in the scheduler's own
    thread, where nothing could answer: `trial.comm` is there, but using it
    raises a `CommError` that says so.

    Each report is recorded in `task.history` (`task.df()`): columns `task`,
    `call`, `args`/`kwargs` (those after the trial), `trial` (its name),
    `status` ("success"/"fail"/"crashed"/"pruned"; "cancelled" for a call cancelled unrun),
    `config.<key>`, `info.<key>`, `result.<key>`, `exception_type`, `exception_message`, `traceback`,
    `submitted`, `finished`, `wall_time`, `cpu_time`.

    Example:
        ```python
        from byop_nb.optimization import Trial
        from byop_nb.scheduling import Scheduler

        def evaluate(trial: Trial) -> Trial.Report:
            with trial.begin():
                loss = (trial.config["x"] - 3) ** 2
            return trial.success(loss=loss)

        scheduler = Scheduler.with_processes(2)
        task = Trial.Task(evaluate, scheduler)

        @scheduler.on_start
        def launch() -> None:
            task(Trial(name="t-0", config={"x": 1.0}))

        @task.on_success
        def show(report: Trial.Report) -> None:
            print(report.trial.name, report.results)

        scheduler.run()
        ```
    """

    REPORT: Event[[Trial.Report]] = Event("trial-report")
    """A trial reported (any kind): `on_report(report)`."""
    SUCCESS: Event[[Trial.Report]] = Event("trial-success")
    """A trial succeeded: `on_success(report)`."""
    FAILURE: Event[[Trial.Report]] = Event("trial-failure")
    """A trial failed: `on_failed(report)`."""
    CRASHED: Event[[Trial.Report]] = Event("trial-crashed")
    """A trial crashed (exception, limit hit, bad return value): `on_crashed(report)`."""
    PRUNED: Event[[Trial.Report]] = Event("trial-pruned")
    """A trial was pruned (it returned `trial.prune(...)`): `on_pruned(report)`."""

    SUCCESSES: ClassVar[frozenset[Status]] = frozenset({Status.SUCCESS})
    """A trial succeeded when it returned a `SuccessReport`."""
    FAILURE_EVENTS: ClassVar[tuple[Event[Any], ...]] = (REPORT, FAILURE, CRASHED, *Task.FAILURE_EVENTS)
    """A callback on any of these handles failed trials."""
    FAILURES: ClassVar[frozenset[Status]] = frozenset({Status.FAIL, Status.CRASHED})
    """A trial failed when it returned a `FailReport`, or crashed (limit hits included).
    A pruned trial is neither a success nor a failure (`outcome` says "pruned")."""
    OTHER_OUTCOMES: ClassVar[Mapping[Status, str]] = {Status.PRUNED: "pruned"}
    """A pruned trial's outcome is "pruned"."""
    NOUN: ClassVar[str] = "trials"

    def __init__(
        self,
        function: Callable[Concatenate[Trial, P], Trial.Report | float | Mapping[str, float]],
        scheduler: Scheduler,
        **options: Unpack[TaskOptions],
    ) -> None:
        super().__init__(function, scheduler, **options)
        em = self.event_manager
        self.on_report: Subscriber[[Trial.Report]] = em.subscriber(self.REPORT)
        self.on_success: Subscriber[[Trial.Report]] = em.subscriber(self.SUCCESS)
        self.on_failed: Subscriber[[Trial.Report]] = em.subscriber(self.FAILURE)
        self.on_crashed: Subscriber[[Trial.Report]] = em.subscriber(self.CRASHED)
        self.on_pruned: Subscriber[[Trial.Report]] = em.subscriber(self.PRUNED)

    # -- the Task hooks ---------------------------------------------------------------
    _ARGS_GIVEN_BY_TASK = 0  # the trial is the caller's (its columns are its own: see `_record`)
    _COMM_REQUIRED = False  # a trial runs on the sequential executor too: only using its comm fails there

    def _function_for(self, call: Call) -> Callable[..., Any]:
        """The function, run with `trial.comm` set to the call's Comm."""
        args = call.args
        if not args or not isinstance(args[0], Trial):
            first = repr(args[0]) if args else "nothing"
            raise TypeError(
                f"Trial.Task {self.name!r} is called with a Trial first, e.g. "
                f"task(Trial(name='t-1', config={{...}})); got {first}"
            )
        if isinstance(self.scheduler.executor, SequentialExecutor):
            comm = Comm(
                None,
                None,
                b"",
                call.number,
                "",
                unusable=f"trial.comm of Trial.Task {self.name!r} cannot be used on the sequential executor: "
                "the function runs inside the scheduler's own thread, so nothing could receive its messages "
                "or answer its requests; use Scheduler.with_threads(1) instead",
            )
        else:
            comm = self._comm_for(call)
        args[0]._last_step = None  # each call reports its steps afresh (a thread worker shares this trial)
        return _CommCall(self.function, comm, into_trial=True)

    def _row_status(self, call: Call) -> Status:
        """The trial's status, its report's: where a trial's report is made (`call.report`)."""
        report = call.report = self._report(call)
        return report.status if report is not None else Status.CANCELLED

    def _report(self, call: Call) -> Trial.Report | None:
        """The report of the ended `call`: where a trial's status is decided."""
        status, trial = call.status, call.args[0]
        if status is Status.CANCELLED:
            return None
        if status is Status.RETURNED:
            result = call.result
            if isinstance(result, Trial.Report):
                return result
            return _plain_report(self.name, trial, result)
        exception = call.exception
        assert exception is not None and status is not None
        return Trial.CrashReport(
            trial=trial, exception=exception, traceback=traceback_text(exception), limit=status.limit
        )

    def _record(self, call: Call) -> None:
        trial: Trial = call.args[0]
        report: Trial.Report | None = call.report
        timings = report.timings if report is not None else None
        shown = report.trial if report is not None else trial
        self.history.record(
            {
                "task": self.name,
                "call": call.number,
                # The trial has columns of its own (trial, config.<key>, info.<key>): args shows the others.
                "args": call.args[1:] or None,
                "kwargs": call.kwargs or None,
                **(self._arguments(call.args, call.kwargs, first=1) or {}),
                "trial": trial.name,
                "config": dict(shown.config),
                "info": dict(shown.info),
                "status": (report.status if report is not None else Status.CANCELLED)._value_,
                "result": dict(report.results) if report is not None else {},
                "exception": report.exception if report is not None else None,
                "traceback": report.traceback if report is not None else None,
                "submitted": call.submitted,
                "finished": time.time(),
                "wall_time": timings.wall_time if timings is not None else None,
                "cpu_time": timings.cpu_time if timings is not None else None,
            },
            flush=False,  # the scheduler flushes the journal once per batch of ended calls
        )

    def _emit(self, call: Call) -> None:
        """The comm's events (MESSAGE, REQUEST, CLOSE), the Task's (DONE, RETURNED or EXCEPTION and
        limit events), then the report's."""
        super()._emit(call)
        report: Trial.Report | None = call.report
        if report is None:
            return
        em = self.event_manager
        em.emit(self.REPORT, report)
        if isinstance(report, Trial.SuccessReport):
            em.emit(self.SUCCESS, report)
        elif isinstance(report, Trial.FailReport):
            em.emit(self.FAILURE, report)
        elif isinstance(report, Trial.PrunedReport):
            em.emit(self.PRUNED, report)
        else:
            em.emit(self.CRASHED, report)


def _plain_report(task: str, trial: Trial, result: Any) -> Trial.Report:
    """The report of a Trial.Task function that returned `result` instead of a report: a number or a
    mapping of metric names to numbers is a success; anything else a crash that says what to return."""
    metrics = trial.metrics
    example = ", ".join(f"{m!r}: ..." for m in metrics)
    accepted = (f"return a number (recorded as {metrics[0]!r})" if len(metrics) == 1 else f"return {{{example}}}") + (
        f", a mapping of metric names to numbers (e.g. {{{example}}}), or a report: "
        "trial.success(...), trial.fail(...) or trial.crashed(...)"
    )
    returned = f"the function of Trial.Task {task!r} returned {bounded_repr(result, 200)}"
    why: str | None = None
    if is_number(result):
        if len(metrics) == 1:
            return Trial.SuccessReport(trial=trial, results={metrics[0]: plain_number(result)})
        why = f"{returned}, one number for the {len(metrics)} metrics {metrics}"
    elif isinstance(result, Mapping):
        not_numbers = {k: v for k, v in result.items() if not (isinstance(k, str) and is_number(v))}
        missing = [m for m in metrics if m not in result] if trial.metric is not None else []
        if not result:
            why = f"{returned}, an empty mapping"
        elif not_numbers:
            key, value = next(iter(not_numbers.items()))
            why = f"{returned}; its entry {key!r}: {bounded_repr(value, 100)} is not a metric name with a number"
        elif missing:
            why = f"{returned}, without the metric {missing[0]!r} of the optimizer that asked the trial"
        else:
            return Trial.SuccessReport(trial=trial, results={k: plain_number(v) for k, v in result.items()})
    else:
        why = returned
    error = TypeError(f"{why}; {accepted}")
    return Trial.CrashReport(trial=trial, exception=error, traceback=None)


Trial.Task = TrialTask
