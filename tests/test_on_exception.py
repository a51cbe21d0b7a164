"""`run(on_exception=...)`: what a run does when a call raises, on every kind of executor."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import nap

from byop_nb.scheduling import ExitCode, Scheduler, Task


def fails_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"three is bad: {x}")
    if x == 4:
        raise KeyError(x)
    return x


@pytest.fixture(params=["threads", "processes", "sequential", pytest.param("dask", marks=pytest.mark.dask)])
def scheduler(request: pytest.FixtureRequest, no_orphans: None) -> Iterator[Scheduler]:
    if request.param == "threads":
        yield Scheduler.with_threads(1)
    elif request.param == "processes":
        yield Scheduler.with_processes(1)
    elif request.param == "sequential":
        yield Scheduler.with_sequential()
    else:
        from multiprocessing import resource_tracker

        from distributed import LocalCluster

        resource_tracker.ensure_running()  # started by dask's spawned workers; lives until exit
        with LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            host="127.0.0.1",
            protocol="tcp://",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster:
            client = cluster.get_client()
            yield Scheduler.with_dask(client)
            client.close()


def chain(scheduler: Scheduler, task: Task[Any, Any], values: list[int]) -> list[int]:
    """Submit the values one after the other (each when the last ended); returns the values submitted."""
    submitted: list[int] = []
    pending = iter(values)

    @scheduler.on_start
    @task.on_done
    def next_value() -> None:
        value = next(pending, None)
        if value is not None and task(value) is not None:
            submitted.append(value)

    return submitted


def test_continue_is_the_default_and_runs_every_call(scheduler: Scheduler) -> None:
    task = Task(fails_on_three, scheduler)
    submitted = chain(scheduler, task, [1, 2, 3, 5])
    assert scheduler.run() is ExitCode.EXHAUSTED
    assert submitted == [1, 2, 3, 5] and task.df()["status"].tolist() == ["returned"] * 2 + ["exception", "returned"]


def test_end_stops_the_run_after_the_failing_calls_events(scheduler: Scheduler) -> None:
    task = Task(fails_on_three, scheduler)
    seen: list[str] = []
    task.on_exception(lambda exception: seen.append(f"on_exception {exception}"))
    submitted = chain(scheduler, task, [1, 2, 3, 5])
    assert scheduler.run(on_exception="end") is ExitCode.EXCEPTION
    assert scheduler.exit_code is ExitCode.EXCEPTION
    assert seen == ["on_exception three is bad: 3"]  # its events came first
    assert submitted == [1, 2, 3]  # the call submitted from its on_done was refused: the run was ending
    assert isinstance(scheduler.last_error, ValueError)
    assert scheduler.run() is ExitCode.EXHAUSTED  # the next run starts afresh, with "continue"


def test_raise_raises_the_calls_exception_from_run_after_cleanup(scheduler: Scheduler) -> None:
    task = Task(fails_on_three, scheduler)
    chain(scheduler, task, [1, 3, 5])
    with pytest.raises(ValueError, match="three is bad: 3"):
        scheduler.run(on_exception="raise")
    assert scheduler.state == "finished" and scheduler.exit_code is ExitCode.STOPPED
    assert task.df()["status"].tolist() == ["returned", "exception"]


def test_a_mapping_chooses_by_the_most_specific_exception_class(scheduler: Scheduler) -> None:
    task = Task(fails_on_three, scheduler)
    submitted = chain(scheduler, task, [3, 1, 4, 5])
    policy = {LookupError: "end", ValueError: "continue", Exception: "raise"}
    assert scheduler.run(on_exception=policy) is ExitCode.EXCEPTION  # KeyError is a LookupError
    assert submitted == [3, 1, 4]


def test_end_waits_for_running_work_or_cancels_it_as_wait_says(no_orphans: None) -> None:
    for wait, last_status in ((True, "returned"), (False, "cancelled")):
        scheduler = Scheduler.with_threads(2)
        slow = Task(nap, scheduler)
        failing = Task(fails_on_three, scheduler)

        @scheduler.on_start
        def launch() -> None:
            slow(0.5)
            failing(3)

        assert scheduler.run(on_exception="end", wait=wait) is ExitCode.EXCEPTION
        assert slow.df()["status"].tolist() == [last_status]


@pytest.mark.parametrize(
    "bad, error, words",
    [
        ("stop", ValueError, "on_exception='stop' is not a policy"),
        (42, TypeError, "on_exception=42 is not a policy"),
        ({"ValueError": "end"}, TypeError, "'ValueError', which is not an exception type"),
        ({ValueError: "halt"}, ValueError, "on_exception\\[ValueError\\]='halt' is not a policy"),
    ],
)
def test_a_bad_policy_is_refused_at_the_call_naming_it(bad: Any, error: type[Exception], words: str) -> None:
    scheduler = Scheduler.with_threads(1)
    for method in (scheduler.run, scheduler.start):
        with pytest.raises(error, match=words) as caught:
            method(on_exception=bad)
        assert 'accepted: "continue", "end", "raise"' in str(caught.value)
    assert scheduler.state == "idle"
