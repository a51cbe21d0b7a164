"""Each run makes its own `_Run`: options, deadline, named states, exit code, error, per-task baselines and maps."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import identity

from byop_nb.scheduling import ExitCode, RunHandle, Scheduler, Task
from byop_nb.scheduling.engine._run import RunOptions, RunState, TaskBaseline


def test_each_run_has_its_own_record_with_its_options_and_per_task_baselines() -> None:
    scheduler = Scheduler.with_threads(2)
    task = Task(identity, scheduler)
    assert scheduler.latest_run is None and task.maps == [] and task.run_baseline == TaskBaseline({}, {}, 0)
    scheduler.on_start(lambda: task.map(range(3)))
    assert scheduler.run(timeout=30) is ExitCode.EXHAUSTED
    first = scheduler.latest_run
    assert first is not None and first.state is RunState.FINISHED and first.exit_code is ExitCode.EXHAUSTED
    assert first.options == RunOptions(timeout=30) and first.deadline is not None
    assert first.n_submitted == 3 and [m.ended for m in task.maps] == [3]
    assert task.run_baseline.rows == 0

    assert scheduler.run(end_on_empty=True) is ExitCode.EXHAUSTED
    second = scheduler.latest_run
    assert second is not first and second is not None  # a fresh record: nothing reset by hand
    assert second.options.timeout is None and second.deadline is None
    assert task.run_baseline.rows == 3 and task.run_baseline.statuses == {"returned": 3}
    assert len(task.maps) == 1 and task.maps[0].run is second  # this run's map, not the first run's
    assert first.exit_code is ExitCode.EXHAUSTED and first.n_submitted == 3  # the old record is untouched


def test_a_stopped_run_is_ending_refuses_calls_and_says_running_until_it_finishes() -> None:
    scheduler = Scheduler.with_threads(1)
    task = Task(identity, scheduler)
    seen: dict[str, Any] = {}

    @scheduler.on_start
    def launch() -> None:
        task(1)
        scheduler.stop()
        run = scheduler.latest_run
        assert run is not None
        seen["state"], seen["public"] = run.state, scheduler.state
        seen["refused"] = task(2)
        seen["refused_in_run"] = task.refused_in_run

    @scheduler.on_finishing
    def finishing() -> None:
        seen["finishing"] = scheduler.latest_run.state  # type: ignore[union-attr]

    assert scheduler.run() is ExitCode.STOPPED
    assert seen == {
        "state": RunState.ENDING,
        "public": "running",
        "refused": None,
        "refused_in_run": 1,
        "finishing": RunState.FINISHING,
    }
    assert task.n_refused == 1 and task.refused_in_run == 1


def test_a_callback_error_ends_the_run_and_is_the_records_error() -> None:
    scheduler = Scheduler.with_threads(1)
    error = ValueError("broken callback")

    @scheduler.on_start
    def launch() -> None:
        raise error

    with pytest.raises(ValueError, match="broken callback"):
        scheduler.run()
    run = scheduler.latest_run
    assert run is not None and run.error is error and run.last_error is error
    assert run.exit_code is ExitCode.STOPPED and scheduler.exit_code is ExitCode.STOPPED


def test_bad_run_options_are_refused_at_the_call_naming_the_value() -> None:
    with pytest.raises(ValueError, match=r"timeout= must be positive seconds or None, got -1"):
        RunOptions(timeout=-1)
    with pytest.raises(TypeError, match=r"wait= must be True or False, got 'no'"):
        RunOptions(wait="no")  # type: ignore[arg-type]
    scheduler = Scheduler.with_threads(1)
    with pytest.raises(ValueError, match=r"end_after_failures= must be a positive int or None, got 0"):
        scheduler.run(end_after_failures=0)
    assert scheduler.latest_run is None  # refused before any run began


def test_a_background_runs_handle_wraps_its_record() -> None:
    async def main() -> tuple[RunHandle, ExitCode]:
        scheduler = Scheduler.with_threads(1)
        task = Task(identity, scheduler)
        scheduler.on_start(lambda: task(1))
        handle = scheduler.start(timeout=30)
        assert scheduler.handle is handle and handle.run is scheduler.latest_run
        assert handle.run.background and handle.run.state is RunState.RUNNING
        return handle, await handle

    handle, code = asyncio.run(main())
    assert code is ExitCode.EXHAUSTED and handle.run.exit_code is ExitCode.EXHAUSTED
