"""What a [`Scheduler`][byop_nb.scheduling.Scheduler] tells: its tasks, counts and latest run (a mixin).

Every property here only reads: the scheduler's registry of tasks, its
EventManager's counts, its table of work in flight, and the
`_Run` of its latest run. They are the read API
the notebook skin, the HTML views and the optimizers use.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from byop_nb.events import EventManager
from byop_nb.scheduling.engine._run import ENDING, FINISHING, RUNNING, ExitCode, RunHandle, _Run

if TYPE_CHECKING:
    import pandas as pd

    from byop_nb.scheduling.engine._call import TaskLike
    from byop_nb.scheduling.engine._failures import FailureSummary
    from byop_nb.scheduling.engine._output import RunOutput

__all__ = ["SchedulerReads"]


class SchedulerReads:
    """The read-only properties of [`Scheduler`][byop_nb.scheduling.Scheduler] (a mixin)."""

    event_manager: EventManager
    _tasks: dict[str, TaskLike]
    _queue: dict[Future[Any], Any]
    _output: RunOutput
    _run: _Run | None

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
    def tasks(self) -> dict[str, Any]:
        """The tasks created on this scheduler, by name."""
        return dict(self._tasks)

    def empty(self) -> bool:
        """Whether no submitted work is pending or running."""
        return not self._queue

    @property
    def output(self) -> RunOutput:
        """Where a background run's callback output goes while something listens (a Dashboard's log pane)."""
        return self._output

    @property
    def n_running(self) -> int:
        """Number of submitted calls not yet processed."""
        return len(self._queue)

    @property
    def state(self) -> str:
        """ "idle", "running", "finishing" or "finished" (a run that is ending is still "running")."""
        run = self._run
        if run is None:
            return "idle"
        return "running" if run.state is ENDING else run.state.value

    def running(self) -> bool:
        """Whether a run is going on (including its finishing phase)."""
        run = self._run
        return run is not None and run.state in (RUNNING, ENDING, FINISHING)

    @property
    def latest_run(self) -> _Run | None:
        """The record of the latest run (the current one while it runs), None before the first:
        its options, named state, deadline, exit code, error, and per-task baselines, refusals
        and maps (see `_Run`). Read it; the scheduler writes it."""
        return self._run

    @property
    def handle(self) -> RunHandle | None:
        """The [`RunHandle`][byop_nb.scheduling.RunHandle] of the latest run when `start()` began it, else None."""
        run = self._run
        return run.handle if run is not None else None

    @property
    def started_at(self) -> float | None:
        """When the latest run started (epoch seconds), None before the first."""
        return self._run.started_at if self._run is not None else None

    @property
    def finished_at(self) -> float | None:
        """When the latest run finished (epoch seconds), None before then."""
        return self._run.finished_at if self._run is not None else None

    @property
    def exit_code(self) -> ExitCode | None:
        """Why the latest run ended, None before then."""
        return self._run.exit_code if self._run is not None else None

    @property
    def last_error(self) -> BaseException | None:
        """The error that ended the latest run (a callback's; a call's under `on_exception="end"`; the
        `end_after_failures` summary), or None."""
        return self._run.last_error if self._run is not None else None

    @property
    def timeout(self) -> float | None:
        """The latest run's `timeout` (the Dashboard's time progress)."""
        return self._run.options.timeout if self._run is not None else None

    def failure_summaries(self) -> list[FailureSummary]:
        """The [`FailureSummary`][byop_nb.scheduling.FailureSummary] of each task with failed calls in the
        latest run (the current one, while it runs), in the order the tasks were made; `[]` when none failed.

        ```python
        for summary in scheduler.failure_summaries():
            print(summary.line)     # 6 of 6 trials of 'evaluate' crashed; first: KeyError: 'learning_rate' (...)
        ```
        """
        return [summary for task in self._tasks.values() if (summary := task.failure_summary())]
