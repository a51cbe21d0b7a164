"""Task: calling submits, every event with its payload, call/concurrent limits, n_called/n_running/counts."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest
from helpers import sleep_then_return, square

from byop_nb.events import Subscriber
from byop_nb.scheduling import ExitCode, Scheduler, Task


def fail(x: int) -> int:
    raise ValueError(f"x cannot be {x}")


def test_calling_a_task_returns_the_future_that_every_event_carries() -> None:
    scheduler = Scheduler.with_threads(2)
    task = Task(square, scheduler)
    returned: list[Future] = []
    events: list[tuple[str, object]] = []
    task.on_submitted(lambda f: events.append(("submitted", f)))
    task.on_done(lambda f: events.append(("done", f)))
    task.on_returned(lambda r: events.append(("returned", r)))
    task.on_exception(lambda e: events.append(("exception", e)))
    scheduler.on_start(lambda: returned.append(task(7)))
    assert scheduler.run() is ExitCode.EXHAUSTED
    (future,) = returned
    assert isinstance(future, Future) and future.result() == 49
    assert events == [("submitted", future), ("done", future), ("returned", 49)]


def test_a_raising_call_emits_done_then_exception_with_the_exception() -> None:
    scheduler = Scheduler.with_threads(2)
    task = Task(fail, scheduler)
    events: list[tuple[str, object]] = []
    futures: list[Future] = []
    task.on_done(lambda f: events.append(("done", f)))
    task.on_returned(lambda r: events.append(("returned", r)))
    task.on_exception(lambda e: events.append(("exception", e)))
    scheduler.on_start(lambda: futures.append(task(0)))
    scheduler.run()
    assert events[0] == ("done", futures[0])
    kind, exception = events[1]
    assert kind == "exception" and isinstance(exception, ValueError) and str(exception) == "x cannot be 0"
    assert len(events) == 2
    assert task.counts == {Task.SUBMITTED: 1, Task.DONE: 1, Task.EXCEPTION: 1}


def test_history_records_one_row_per_call_with_its_status() -> None:
    scheduler = Scheduler.with_threads(2)
    task = Task(fail, scheduler)
    ok = Task(square, scheduler)
    scheduler.on_start(lambda: (task(3), ok(2)))
    scheduler.run()
    (row,) = task.df().to_dict("records")
    assert row["status"] == "exception" and row["args"] == "(3,)" and row["call"] == 1
    assert row["exception_type"] == "ValueError" and row["exception_message"] == "x cannot be 3"
    assert "x cannot be 3" in row["traceback"] and "in fail" in row["traceback"]
    (row,) = ok.df().to_dict("records")
    assert row["status"] == "returned" and row["result"] == 4


def test_cancelled_payload_is_the_future_and_no_done_follows() -> None:
    scheduler = Scheduler.with_threads(1)
    release = threading.Event()
    task = Task(release.wait, scheduler, name="blocked")
    futures: list[Future] = []
    cancelled: list[Future] = []
    task.on_cancelled(cancelled.append)
    task.on_done(lambda f: pytest.fail("DONE emitted for a cancelled call"))
    scheduler.on_start(lambda: futures.extend([task(5), task(5)]))
    try:
        assert scheduler.run(timeout=0.2, wait=False) is ExitCode.TIMEOUT
    finally:
        release.set()
    assert cancelled == futures
    assert task.counts == {Task.SUBMITTED: 2, Task.CANCELLED: 2}
    assert [r["status"] for r in task.history.rows] == ["cancelled", "cancelled"]


def test_n_called_n_running_and_counts() -> None:
    scheduler = Scheduler.with_threads(2)
    task = Task(sleep_then_return, scheduler)
    seen: list[tuple[int, int]] = []

    @scheduler.on_start
    def launch() -> None:
        task(0.05)
        task(0.05)
        seen.append((task.n_called, task.n_running))

    task.on_done(lambda: seen.append((task.n_called, task.n_running)))
    scheduler.run()
    assert seen[0] == (2, 2)
    # during DONE the call has already ended
    assert sorted(seen[1:]) == [(2, 0), (2, 1)]
    assert task.n_called == 2 and task.n_running == 0
    assert task.counts == {Task.SUBMITTED: 2, Task.DONE: 2, Task.RETURNED: 2}


def test_call_limit_refuses_further_calls_with_their_arguments() -> None:
    scheduler = Scheduler.with_threads(2)
    task = Task(square, scheduler, call_limit=2)
    refused: list[tuple[tuple, dict]] = []
    returned: list[object] = []

    @task.on_call_limit_reached
    def print_it(*args: object, **kwargs: object) -> None:
        refused.append((args, kwargs))

    @scheduler.on_start
    def launch() -> None:
        returned.append(task(1))
        returned.append(task(2))
        returned.append(task(3, extra="kw"))
        returned.append(task(4))

    scheduler.run()
    assert [type(r) for r in returned] == [Future, Future, type(None), type(None)]
    assert refused == [((3,), {"extra": "kw"}), ((4,), {})]
    assert task.n_called == 2
    assert task.counts == {Task.SUBMITTED: 2, Task.DONE: 2, Task.RETURNED: 2, Task.CALL_LIMIT_REACHED: 2}


def test_concurrent_limit_refuses_calls_while_the_limit_runs() -> None:
    scheduler = Scheduler.with_threads(4)
    release = threading.Event()

    def wait_for(tag: str) -> str:
        release.wait(10)
        return tag

    task = Task(wait_for, scheduler, concurrent_limit=2)
    refused: list[tuple[tuple, dict]] = []
    returned: list[object] = []
    task.on_concurrent_limit_reached(lambda *a, **k: refused.append((a, k)))

    @scheduler.on_start
    def launch() -> None:
        returned.append(task("a"))
        returned.append(task("b"))
        returned.append(task(tag="c"))
        release.set()

    results: list[str] = []
    task.on_returned(results.append)

    @task.on_done(limit=1)
    def after_first_done() -> None:
        returned.append(task("d"))  # one slot is free again

    scheduler.run(timeout=30)
    assert refused == [((), {"tag": "c"})]
    assert returned[2] is None and isinstance(returned[3], Future)
    assert sorted(results) == ["a", "b", "d"]
    assert task.counts[Task.CONCURRENT_LIMIT_REACHED] == 1


def test_guide_concurrency_limit_callback_sees_n_running() -> None:
    scheduler = Scheduler.with_threads(2)
    task = Task(sleep_then_return, scheduler, concurrent_limit=1)
    seen: list[int] = []

    @task.on_concurrent_limit_reached
    def print_it(*args: object, **kwargs: object) -> None:
        seen.append(task.n_running)

    scheduler.on_start(lambda: (task(0.05), task(0.05)))
    scheduler.run()
    assert seen == [1]


@pytest.mark.parametrize("option", ["call_limit", "concurrent_limit"])
def test_bad_call_limits_raise_naming_the_value(option: str) -> None:
    scheduler = Scheduler.with_threads(1)
    with pytest.raises(ValueError, match=f"{option}=.*0"):
        Task(square, scheduler, **{option: 0})
    with pytest.raises(ValueError, match=f"{option}=.*-3"):
        Task(square, scheduler, **{option: -3})
    with pytest.raises(TypeError, match=f"{option}=.*1.5"):
        Task(square, scheduler, **{option: 1.5})


def test_non_callable_function_and_wrong_scheduler_raise_type_error_naming_them() -> None:
    scheduler = Scheduler.with_threads(1)
    with pytest.raises(TypeError, match="'not a function'"):
        Task("not a function", scheduler)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'not a scheduler'"):
        Task(square, "not a scheduler")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name=.*''"):
        Task(square, scheduler, name="")


def test_name_defaults_to_the_function_name_and_a_duplicate_replaces_with_a_warning() -> None:
    scheduler = Scheduler.with_threads(1)
    first = Task(square, scheduler)
    assert first.name == "square"
    other = Task(square, scheduler, name="other")
    assert other.name == "other"
    with pytest.warns(UserWarning, match="'square'"):
        second = Task(square, scheduler)
    assert scheduler.tasks == {"square": second, "other": other}
    scheduler.on_start(lambda: (second(2), other(3)))
    scheduler.run()
    assert scheduler.counts[(Task.RETURNED, "square")] == 1
    assert first.counts == {}


def test_every_event_has_its_subscriber_and_the_guide_aliases() -> None:
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)
    pairs = {
        "on_submitted": Task.SUBMITTED,
        "on_done": Task.DONE,
        "on_cancelled": Task.CANCELLED,
        "on_returned": Task.RETURNED,
        "on_exception": Task.EXCEPTION,
        "on_timeout": Task.TIMEOUT,
        "on_memory_limit_reached": Task.MEMORY_LIMIT_REACHED,
        "on_cpu_time_limit_reached": Task.CPU_TIME_LIMIT_REACHED,
        "on_wall_time_limit_reached": Task.WALL_TIME_LIMIT_REACHED,
        "on_cpu_limit_reached": Task.CPU_TIME_LIMIT_REACHED,
        "on_walltime_limit_reached": Task.WALL_TIME_LIMIT_REACHED,
        "on_call_limit_reached": Task.CALL_LIMIT_REACHED,
        "on_concurrent_limit_reached": Task.CONCURRENT_LIMIT_REACHED,
    }
    for attribute, event in pairs.items():
        subscriber = getattr(task, attribute)
        assert isinstance(subscriber, Subscriber) and subscriber.event is event, attribute
        assert subscriber.manager is task.event_manager


def test_zero_argument_callbacks_work_on_task_events() -> None:
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)
    calls: list[str] = []

    def recorder(tag: str):  # a callback taking no parameters at all
        return lambda: calls.append(tag)

    for attribute in ("on_submitted", "on_done", "on_returned"):
        getattr(task, attribute)(recorder(attribute))
    scheduler.on_start(lambda: task(1))
    scheduler.run()
    assert calls == ["on_submitted", "on_done", "on_returned"]


def test_a_future_cancelled_by_the_user_emits_cancelled_not_done() -> None:
    scheduler = Scheduler.with_threads(1)
    release = threading.Event()
    task = Task(release.wait, scheduler, name="blocked")
    futures: list[Future] = []
    cancelled: list[Future] = []
    task.on_cancelled(cancelled.append)

    @scheduler.on_start
    def launch() -> None:
        futures.append(task(10))  # occupies the only thread
        futures.append(task(10))  # pending behind it
        assert futures[1].cancel()
        release.set()

    assert scheduler.run(timeout=30) is ExitCode.EXHAUSTED
    assert cancelled == [futures[1]]
    assert task.counts == {Task.SUBMITTED: 2, Task.CANCELLED: 1, Task.DONE: 1, Task.RETURNED: 1}
    assert sorted(task.df()["status"]) == ["cancelled", "returned"]


def test_a_task_made_again_under_its_name_takes_over_the_callbacks_of_the_old_one() -> None:
    scheduler = Scheduler.with_threads(1)
    old = Task(square, scheduler)
    seen: list[int] = []
    old.on_returned(seen.append)
    old.on_done(lambda: seen.append(-1), every=2)
    with pytest.warns(UserWarning, match="replaces it and takes over its callbacks"):
        new = Task(square, scheduler)
    assert scheduler.tasks == {"square": new}
    registrations = new.event_manager.registrations()
    assert registrations[new.RETURNED] == ["list.append"]
    (on_done,) = registrations[new.DONE]
    assert on_done.endswith(".<lambda> (every=2)")

    @scheduler.on_start
    def launch() -> None:
        new(3)

    scheduler.run()
    assert seen == [-1, 9]


def crash(trial: object) -> object:
    raise KeyError("degree")


@pytest.mark.parametrize("kind", ["threads", "processes", "memory-limited", "trial"])
def test_a_calls_traceback_starts_at_the_users_function(kind: str, no_orphans: None) -> None:
    """The frames above the user's function (byop_nb's worker, a limited child's runner, a trial's wrapper, a
    thread pool's worker) are left out of the row's traceback: it starts at the user's line, file and source."""
    from byop_nb.optimization import Trial

    scheduler = Scheduler.with_threads(1) if kind == "threads" else Scheduler.with_processes(1)
    if kind == "trial":
        task: Task = Trial.Task(crash, scheduler)
        scheduler.on_start(lambda: task(Trial(name="t", config={})))
        line, where = 'raise KeyError("degree")', "in crash"
    else:
        task = Task(fail, scheduler, **({"memory_limit": (500, "MB")} if kind == "memory-limited" else {}))
        scheduler.on_start(lambda: task(3))
        line, where = 'raise ValueError(f"x cannot be {x}")', "in fail"
    scheduler.run(timeout=60)
    text = task.df()["traceback"][0]
    first, source = text.splitlines()[1:3]
    assert first.startswith(f'  File "{__file__}", line ') and first.endswith(where), text
    assert source.strip() == line and "byop_nb" not in text and "concurrent" not in text, text
