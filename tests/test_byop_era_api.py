"""The later byop-era API (upstream automl/amltk around "doc(Task): Improve __repr__ (#87)") as aliases.

`Task.F_RETURNED` / `Task.F_EXCEPTION` (callbacks get the future too, counted as RETURNED /
EXCEPTION), `run(end_on_exception=..., raises=...)` (spellings of `on_exception`) and
`SequentialExecutor` (calls run in the main process). Our own tests of the behaviours that
code relied on, on real executors.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest

from byop_nb.scheduling import Comm, CommTask, ExitCode, Scheduler, SequentialExecutor, Task

EXECUTORS = ["threads", "processes", "sequential"]


class Boom(Exception):
    """The error a call raises on purpose."""


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def explode() -> None:
    raise Boom("on purpose")


def where() -> int:
    return os.getpid()


def allocate(n_bytes: int) -> int:
    return len(bytearray(n_bytes))


def spin(n: int) -> int:
    while n > 0:
        n -= 1
    return n


def chatter(comm: Comm, values: list[int]) -> str:
    for value in values:
        comm.send(value)
    doubled = [comm.request(value) for value in values]
    comm.send(doubled)
    return "done"


def make_executor(kind: str) -> Executor:
    if kind == "threads":
        return ThreadPoolExecutor(max_workers=2)
    if kind == "processes":
        return ProcessPoolExecutor(max_workers=2)
    return SequentialExecutor()


@pytest.fixture(params=EXECUTORS)
def scheduler(request: pytest.FixtureRequest, no_orphans: None) -> Iterator[Scheduler]:
    yield Scheduler(make_executor(request.param))


# -- F_RETURNED / F_EXCEPTION -----------------------------------------------------------------------


def test_the_future_events_are_counted_as_the_plain_ones_in_every_counts_dict(scheduler: Scheduler) -> None:
    first = Task(nap, scheduler, name="first")
    second = Task(nap, scheduler, name="second")
    first.on_returned(lambda seconds: second(seconds))
    scheduler.on_start(lambda: first(0.05))

    assert scheduler.run() is ExitCode.EXHAUSTED
    expected = {Task.SUBMITTED: 1, Task.DONE: 1, Task.RETURNED: 1, Task.F_RETURNED: 1}
    assert first.counts == expected and second.counts == expected
    assert first.counts[Task.F_RETURNED] == 1
    assert scheduler.counts == {
        **{(event, name): 1 for name in ("first", "second") for event in expected},
        Scheduler.STARTED: 1,
        Scheduler.FINISHING: 1,
        Scheduler.FINISHED: 1,
    }
    assert (Task.F_RETURNED, "first") in scheduler.counts
    # One row per happening in the counts table: the alias is the same count, not a second one.
    assert "task-future-returned" not in set(scheduler.counts_df()["event"])


def test_future_event_callbacks_receive_the_future_and_the_outcome(scheduler: Scheduler) -> None:
    good = Task(nap, scheduler, name="good")
    bad = Task(explode, scheduler, name="bad")
    seen: list[tuple[str, Any, Any]] = []

    @good.on_f_returned
    def returned(future: Future[float], result: float) -> None:
        seen.append(("returned", future.result(), result))

    @bad.on_f_exception
    def raised(future: Future[None], exception: BaseException) -> None:
        seen.append(("exception", future.exception() is exception, type(exception)))

    order: list[str] = []
    good.on_f_returned(lambda future, result: order.append("F_RETURNED"))
    good.on_returned(lambda result: order.append("RETURNED"))
    scheduler.on_start(lambda: (good(0.01), bad()))

    assert scheduler.run(end_on_exception=False) is ExitCode.EXHAUSTED
    assert sorted(seen, key=str) == [("exception", True, Boom), ("returned", 0.01, 0.01)]
    assert order == ["F_RETURNED", "RETURNED"]
    assert bad.counts == {Task.SUBMITTED: 1, Task.DONE: 1, Task.EXCEPTION: 1, Task.F_EXCEPTION: 1}


def test_a_task_made_again_keeps_its_future_event_callbacks(no_orphans: None) -> None:
    scheduler = Scheduler.with_threads(1)
    seen: list[float] = []
    old = Task(nap, scheduler)
    old.on_f_returned(lambda future, result: seen.append(result))
    with pytest.warns(UserWarning, match="already exists"):
        new = Task(nap, scheduler)
    scheduler.on_start(lambda: new(0.0))
    scheduler.run()
    assert seen == [0.0]


@pytest.mark.parametrize("kind", ["threads", "processes"])
@pytest.mark.parametrize(
    ("limits", "call", "event"),
    [
        ({"memory_limit": (300, "MB")}, (allocate, 2 * 1024**3), Task.MEMORY_LIMIT_REACHED),
        ({"wall_time_limit": 1}, (nap, 10), Task.WALL_TIME_LIMIT_REACHED),
        ({"cpu_time_limit": 1}, (spin, 10**12), Task.CPU_TIME_LIMIT_REACHED),
    ],
    ids=["memory", "wall-time", "cpu-time"],
)
def test_a_limit_hit_with_raises_false_ends_the_run_with_the_exception_kept(
    kind: str, limits: dict[str, Any], call: tuple[Any, ...], event: Any, no_orphans: None
) -> None:
    scheduler = Scheduler(make_executor(kind))
    function, argument = call
    task = Task(function, scheduler, name="limited", **limits)
    futures: list[Future[Any]] = []
    task.on_f_exception(lambda future, exception: futures.append(future))
    scheduler.on_start(lambda: task(argument))

    assert scheduler.run(raises=False) is ExitCode.EXCEPTION  # the byop era returned the exception itself
    assert type(scheduler.last_error).__module__.startswith("pynisher")
    assert len(futures) == 1 and futures[0].exception() is not None
    expected = {Task.SUBMITTED: 1, Task.DONE: 1, Task.EXCEPTION: 1, Task.F_EXCEPTION: 1, event: 1}
    if event is not Task.MEMORY_LIMIT_REACHED:
        expected[Task.TIMEOUT] = 1
    assert task.counts == expected
    assert scheduler.counts == {
        **{(e, "limited"): n for e, n in expected.items()},
        Scheduler.STARTED: 1,
        Scheduler.FINISHING: 1,
        Scheduler.FINISHED: 1,
    }


# -- run(end_on_exception=..., raises=...) ---------------------------------------------------------


def test_end_on_exception_raises_the_calls_exception_from_run(scheduler: Scheduler) -> None:
    task = Task(explode, scheduler)
    scheduler.on_start(lambda: task())
    with pytest.raises(Boom, match="on purpose"):
        scheduler.run(end_on_exception=True)
    with pytest.raises(Boom):  # raises=True alone: end_on_exception's byop-era default is True
        scheduler.run(raises=True)


def test_not_ending_on_exception_runs_to_the_end(scheduler: Scheduler) -> None:
    task = Task(explode, scheduler)
    scheduler.on_start(lambda: (task(), task()))
    assert scheduler.run(end_on_exception=False) is ExitCode.EXHAUSTED
    assert task.counts[Task.F_EXCEPTION] == 2
    # raises= does nothing without ending on an exception, as in the byop era
    assert scheduler.run(end_on_exception=False, raises=True) is ExitCode.EXHAUSTED


def test_the_aliases_work_for_async_run_and_start(no_orphans: None) -> None:
    scheduler = Scheduler.with_threads(1)
    task = Task(explode, scheduler)
    scheduler.on_start(lambda: task())

    async def both() -> tuple[ExitCode, BaseException | None]:
        code = await scheduler.async_run(raises=False)
        handle = scheduler.start(end_on_exception=True)
        try:
            await handle
        except Boom as e:
            return code, e
        return code, None

    code, raised = asyncio.run(both())
    assert code is ExitCode.EXCEPTION and isinstance(scheduler.last_error, Boom)
    assert isinstance(raised, Boom)


def test_the_aliases_with_on_exception_or_wrong_values_are_refused_naming_them() -> None:
    scheduler = Scheduler.with_sequential()
    with pytest.raises(ValueError, match=r"on_exception='end'.*end_on_exception=None, raises=False.*pass one"):
        scheduler.run(on_exception="end", raises=False)
    with pytest.raises(TypeError, match="raises= must be True or False.*'yes'"):
        scheduler.run(raises="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="end_on_exception= must be True or False.*1"):
        scheduler.run(end_on_exception=1)  # type: ignore[arg-type]
    assert not scheduler.running()


# -- the rest of what that code relied on, on every local executor ---------------------------------


def test_end_on_empty_false_emits_empty_until_stopped(scheduler: Scheduler) -> None:
    task = Task(nap, scheduler)

    @scheduler.on_empty(when=lambda: scheduler.counts[Scheduler.EMPTY] == 1)
    def first_empty() -> None:
        task(0.05)

    @scheduler.on_empty(when=lambda: scheduler.counts[Scheduler.EMPTY] == 2)
    def second_empty() -> None:
        scheduler.stop()

    assert scheduler.run(timeout=30, end_on_empty=False) is ExitCode.STOPPED
    assert task.counts == {Task.SUBMITTED: 1, Task.DONE: 1, Task.RETURNED: 1, Task.F_RETURNED: 1}
    assert scheduler.counts[Scheduler.EMPTY] == 2 and scheduler.counts[Scheduler.STOP] == 1
    assert scheduler.empty() and not scheduler.running()


def test_repeat_on_start_and_the_limits_that_refuse_calls(scheduler: Scheduler) -> None:
    results: list[int] = []
    scheduler.on_start(lambda: results.append(1), repeat=10)
    limited_calls = Task(nap, scheduler, name="calls", call_limit=2)
    scheduler.on_start(lambda: limited_calls(0.01), repeat=5)
    assert scheduler.run() is ExitCode.EXHAUSTED
    assert results == [1] * 10
    assert limited_calls.counts == {
        Task.CALL_LIMIT_REACHED: 3,
        Task.SUBMITTED: 2,
        Task.DONE: 2,
        Task.RETURNED: 2,
        Task.F_RETURNED: 2,
    }


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_the_concurrent_limit_refuses_calls_beyond_it(kind: str, no_orphans: None) -> None:
    scheduler = Scheduler(make_executor(kind))
    task = Task(nap, scheduler, concurrent_limit=2)
    scheduler.on_start(lambda: task(0.3), repeat=6)
    assert scheduler.run() is ExitCode.EXHAUSTED
    assert task.counts == {
        Task.CONCURRENT_LIMIT_REACHED: 4,
        Task.SUBMITTED: 2,
        Task.DONE: 2,
        Task.RETURNED: 2,
        Task.F_RETURNED: 2,
    }


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_a_timeout_with_wait_lets_the_running_call_return(kind: str, no_orphans: None) -> None:
    scheduler = Scheduler(make_executor(kind))
    task = Task(nap, scheduler, name="sleep")
    results: list[float] = []
    task.on_returned(results.append)
    scheduler.on_start(lambda: task(0.5))
    assert scheduler.run(timeout=0.1, wait=True) is ExitCode.TIMEOUT
    assert results == [0.5]
    assert scheduler.counts == {
        (Task.SUBMITTED, "sleep"): 1,
        (Task.DONE, "sleep"): 1,
        (Task.RETURNED, "sleep"): 1,
        (Task.F_RETURNED, "sleep"): 1,
        Scheduler.STARTED: 1,
        Scheduler.TIMEOUT: 1,
        Scheduler.FINISHING: 1,
        Scheduler.FINISHED: 1,
    }


def test_a_timeout_without_wait_cancels_the_running_call_of_a_process_pool(no_orphans: None) -> None:
    """The byop era reported the killed call as an EXCEPTION; byop_nb reports it CANCELLED (see semantics.md)."""
    scheduler = Scheduler(make_executor("processes"))
    task = Task(nap, scheduler, name="sleep")
    scheduler.on_start(lambda: task(10))
    started = time.monotonic()
    assert scheduler.run(timeout=0.2, wait=False) is ExitCode.TIMEOUT
    assert time.monotonic() - started < 5
    assert task.counts == {Task.SUBMITTED: 1, Task.CANCELLED: 1}


def test_the_sequential_executor_runs_calls_in_the_main_process_one_at_a_time() -> None:
    scheduler = Scheduler(SequentialExecutor())
    task = Task(where, scheduler)
    pids: list[int] = []
    task.on_f_returned(lambda future, pid: pids.append(pid))
    scheduler.on_start(lambda: (task(), task()))
    assert scheduler.run() is ExitCode.EXHAUSTED
    assert pids == [os.getpid(), os.getpid()]


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_a_comm_task_counts_its_future_returned_too(kind: str, no_orphans: None) -> None:
    scheduler = Scheduler(make_executor(kind))
    task = CommTask(chatter, scheduler)
    messages: list[Any] = []
    task.on_message(lambda msg: messages.append(msg.data))
    task.on_request(lambda msg: msg.respond(msg.data * 2))
    scheduler.on_start(lambda: task([1, 2, 3]))
    assert scheduler.run() is ExitCode.EXHAUSTED
    assert messages == [1, 2, 3, [2, 4, 6]]
    assert task.counts == {
        CommTask.SUBMITTED: 1,
        CommTask.DONE: 1,
        CommTask.RETURNED: 1,
        CommTask.F_RETURNED: 1,
        CommTask.MESSAGE: 4,
        CommTask.REQUEST: 3,
        CommTask.CLOSE: 1,
    }
