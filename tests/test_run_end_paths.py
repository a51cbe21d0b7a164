"""The end of a run is reached on every path (a raising terminate= hook, an executor that returns no Future),
finished schedulers hold no descriptors, and wrong input fails at the call that was wrong."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers import nap, square

from byop_nb.events import EventManager
from byop_nb.scheduling import ExitCode, Scheduler, Task


class TerminateBoom(Exception):
    pass


def raising_terminate(executor: Executor) -> None:
    raise TerminateBoom("the terminate hook failed")


@pytest.mark.parametrize("kind", ["processes", "threads"])
def test_a_raising_terminate_hook_still_ends_the_run_and_is_raised(kind: str, no_orphans: None) -> None:
    executor = ThreadPoolExecutor(1) if kind == "threads" else Scheduler.with_processes(1).executor
    scheduler = Scheduler(executor, terminate=raising_terminate)
    task = Task(nap, scheduler)
    finished: list[str] = []
    scheduler.on_finished(lambda: finished.append(scheduler.state))
    scheduler.on_start(lambda: task(2 if kind == "threads" else 30))
    with pytest.raises(TerminateBoom):
        scheduler.run(timeout=0.5, wait=False)
    assert scheduler.state == "finished" and not scheduler.running()
    assert finished == ["finished"]
    assert scheduler.exit_code is ExitCode.TIMEOUT
    assert [r["status"] for r in task.history.rows] == ["cancelled"]
    # the scheduler runs again ("already running" before)
    scheduler.on_start.remove("<lambda>")
    scheduler.on_start(lambda: task(0.01))
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED


class NoFutures(Executor):
    """An executor whose submit() returns something other than a Future."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return None

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def test_an_executor_returning_no_future_fails_the_run_which_still_ends() -> None:
    scheduler = Scheduler(NoFutures())
    task = Task(square, scheduler)
    finished: list[bool] = []
    scheduler.on_finished(lambda: finished.append(True))
    scheduler.on_start(lambda: task(2))
    with pytest.raises(TypeError, match=r"NoFutures.*returned None from submit\(\), not a Future"):
        scheduler.run(timeout=10)
    assert scheduler.state == "finished" and finished == [True]
    with pytest.raises(TypeError, match="not a Future"):
        scheduler.run(timeout=10)  # runs again, and says the same


def test_finished_schedulers_hold_no_descriptor(no_orphans: None) -> None:
    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    if not Path("/proc/self/fd").exists():
        pytest.skip("counts descriptors in /proc")
    kept = []
    before = open_descriptors()
    for _ in range(50):
        scheduler = Scheduler.with_threads(1)
        task = Task(square, scheduler)
        scheduler.on_start(lambda task=task: task(2))
        assert scheduler.run(timeout=30) is ExitCode.EXHAUSTED
        kept.append(scheduler)
    assert open_descriptors() - before < 10, "each finished scheduler kept a descriptor"
    assert scheduler.run(timeout=30) is ExitCode.EXHAUSTED  # a kept scheduler runs again


def test_a_ring_after_the_run_ended_does_nothing() -> None:
    scheduler = Scheduler.with_threads(1)
    task = Task(nap, scheduler)
    scheduler.on_start(lambda: task(0.3))
    assert scheduler.run(timeout=0.05, wait=False) is ExitCode.TIMEOUT  # the call ends after the run
    threading.Event().wait(0.5)
    assert scheduler.run(timeout=30) is ExitCode.EXHAUSTED


def test_an_unpicklable_function_fails_its_call_with_a_row_naming_the_task(no_orphans: None) -> None:
    lock = threading.Lock()

    def locked(x: int) -> int:  # a closure over a lock: cannot travel to a worker by value
        with lock:
            return x

    scheduler = Scheduler.with_processes(1)
    task = Task(locked, scheduler, name="locked_task")
    later = Task(square, scheduler)
    scheduler.on_start(lambda: (task(1), later(3)))
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    (row,) = task.history.rows
    assert row["status"] == "exception"
    assert "'locked_task'" in row["exception_message"] and "lock" in row["exception_message"]
    assert later.history.rows[0]["result"] == 9


def hog(megabytes: int) -> int:
    return len(bytearray(megabytes * 2**20))


@pytest.mark.parametrize("kind", ["processes", "threads"])
def test_memory_limit_messages_name_the_users_call(kind: str, no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(1) if kind == "processes" else Scheduler.with_threads(1)
    task = Task(hog, scheduler, memory_limit=(100, "MB"))
    scheduler.on_start(lambda: task(400))
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    (row,) = task.history.rows
    assert row["status"] == "memory_limit"
    assert row["exception_message"] == "hog(400) exceeded its memory limit of 100 MB", row["exception_message"]
    assert "_Shipped" not in row["exception_message"] and "byop_nb" not in row["exception_message"]


# -- wrong input fails at the call ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "shown"),
    [
        (
            lambda: Scheduler(ThreadPoolExecutor),
            r"the class ThreadPoolExecutor itself.*ThreadPoolExecutor\(max_workers",
        ),
        (lambda: Scheduler(ThreadPoolExecutor(1), event_manager=42), r"event_manager=.*EventManager.*got 42"),
        (
            lambda: Scheduler.with_threads(1).event_manager.on("scheduler-started", print),
            r"'scheduler-started' is the name of the event.*Subscribe to the Event itself",
        ),
        (
            lambda: Task(square, Scheduler.with_threads(1)).event_manager.on("task-returned", print),
            r"'task-returned' is the name of the event",
        ),
    ],
    ids=["executor class", "event_manager=42", "scheduler event name", "task event name"],
)
def test_wrong_input_raises_a_clear_type_error_at_the_call(make: Any, shown: str) -> None:
    with pytest.raises(TypeError, match=shown):
        make()


def test_plain_string_events_still_work() -> None:
    manager = EventManager()
    seen: list[int] = []
    manager.on("hello", seen.append)
    manager.emit("hello", 1)
    assert seen == [1]
