"""The Scheduler: events, counts, run/async_run/stop/submit, exit codes, re-runs, wait=False, executors."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor

import pytest
from helpers import sleep_then_return, square

from byop_nb.scheduling import ExitCode, Scheduler, Task

S = Scheduler


def fail(x: int) -> int:
    raise ValueError(f"x cannot be {x}")


def make(kind: str) -> Scheduler:
    if kind == "processes":
        return Scheduler.with_processes(2)
    if kind == "threads":
        return Scheduler.with_threads(2)
    if kind == "sequential":
        return Scheduler.with_sequential()
    if kind == "user-processes":
        return Scheduler(executor=ProcessPoolExecutor(max_workers=2))
    if kind == "user-threads":
        return Scheduler(executor=ThreadPoolExecutor(max_workers=2))
    raise AssertionError(kind)


KINDS = ["processes", "threads", "sequential", "user-processes", "user-threads"]


# -- events and counts ---------------------------------------------------------
def test_a_run_with_one_call_emits_exactly_these_counts() -> None:
    scheduler = Scheduler.with_threads(2)
    task = Task(square, scheduler)
    scheduler.on_start(lambda: task(3))
    exit_code = scheduler.run()
    assert exit_code is ExitCode.EXHAUSTED
    assert scheduler.counts == {
        S.STARTED: 1,
        S.FINISHING: 1,
        S.FINISHED: 1,
        (Task.SUBMITTED, "square"): 1,
        (Task.DONE, "square"): 1,
        (Task.RETURNED, "square"): 1,
    }
    assert task.counts == {Task.SUBMITTED: 1, Task.DONE: 1, Task.RETURNED: 1}


def test_counts_of_a_failing_call_and_of_two_tasks_are_keyed_by_task_name() -> None:
    scheduler = Scheduler.with_threads(2)
    ok = Task(square, scheduler, name="ok")
    bad = Task(fail, scheduler)

    @scheduler.on_start
    def go() -> None:
        ok(1)
        ok(2)
        bad(0)

    assert scheduler.run() is ExitCode.EXHAUSTED
    assert scheduler.counts == {
        S.STARTED: 1,
        S.FINISHING: 1,
        S.FINISHED: 1,
        (Task.SUBMITTED, "ok"): 2,
        (Task.DONE, "ok"): 2,
        (Task.RETURNED, "ok"): 2,
        (Task.SUBMITTED, "fail"): 1,
        (Task.DONE, "fail"): 1,
        (Task.EXCEPTION, "fail"): 1,
    }


def test_an_empty_run_is_exhausted_at_once() -> None:
    scheduler = Scheduler.with_threads(1)
    assert scheduler.run() is ExitCode.EXHAUSTED
    assert scheduler.counts == {S.STARTED: 1, S.FINISHING: 1, S.FINISHED: 1}


def test_stop_from_a_callback_emits_stop_and_returns_stopped() -> None:
    scheduler = Scheduler.with_threads(1)
    order: list[str] = []
    for name in ("start", "stop", "finishing", "finished", "timeout", "empty"):
        getattr(scheduler, f"on_{name}")(lambda name=name: order.append(name))

    @scheduler.on_start
    def stop_immediately() -> None:
        scheduler.stop()

    assert scheduler.run(end_on_empty=False) is ExitCode.STOPPED
    assert order == ["start", "stop", "finishing", "finished"]
    assert scheduler.counts == {S.STARTED: 1, S.STOP: 1, S.FINISHING: 1, S.FINISHED: 1}
    assert scheduler.exit_code is ExitCode.STOPPED


def test_timeout_with_end_on_empty_false_emits_empty_right_after_start_then_timeout() -> None:
    scheduler = Scheduler.with_threads(1)
    order: list[str] = []
    for name in ("start", "stop", "finishing", "finished", "timeout", "empty"):
        getattr(scheduler, f"on_{name}")(lambda name=name: order.append(name))
    start = time.monotonic()
    assert scheduler.run(timeout=0.3, end_on_empty=False) is ExitCode.TIMEOUT
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 3
    assert order == ["start", "empty", "timeout", "finishing", "finished"]
    assert scheduler.counts == {S.STARTED: 1, S.EMPTY: 1, S.TIMEOUT: 1, S.FINISHING: 1, S.FINISHED: 1}


def test_empty_is_emitted_each_time_nothing_is_queued() -> None:
    scheduler = Scheduler.with_threads(2)
    task = Task(square, scheduler)

    @scheduler.on_empty
    def refill_or_stop() -> None:
        if scheduler.counts[S.EMPTY] <= 3:
            task(scheduler.counts[S.EMPTY])
        else:
            scheduler.stop()

    assert scheduler.run(end_on_empty=False, timeout=20) is ExitCode.STOPPED
    assert scheduler.counts == {
        S.STARTED: 1,
        S.EMPTY: 4,
        S.STOP: 1,
        S.FINISHING: 1,
        S.FINISHED: 1,
        (Task.SUBMITTED, "square"): 3,
        (Task.DONE, "square"): 3,
        (Task.RETURNED, "square"): 3,
    }


def test_empty_is_not_emitted_with_end_on_empty_true() -> None:
    scheduler = Scheduler.with_threads(1)
    scheduler.on_empty(lambda: pytest.fail("EMPTY emitted"))
    assert scheduler.run() is ExitCode.EXHAUSTED
    assert S.EMPTY not in scheduler.counts


def test_timeout_waits_for_running_work_by_default() -> None:
    scheduler = Scheduler.with_threads(1)
    task = Task(sleep_then_return, scheduler)
    scheduler.on_start(lambda: task(0.6, 7))
    results: list[int] = []
    task.on_returned(results.append)
    order: list[str] = []
    scheduler.on_timeout(lambda: order.append("timeout"))
    task.on_done(lambda: order.append("done"))
    scheduler.on_finished(lambda: order.append("finished"))
    assert scheduler.run(timeout=0.2) is ExitCode.TIMEOUT
    assert results == [7]
    assert order == ["timeout", "done", "finished"]


def test_work_submitted_while_finishing_is_refused_with_none() -> None:
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)
    got: list[object] = []
    scheduler.on_finishing(lambda: got.append(task(2)))
    assert scheduler.run() is ExitCode.EXHAUSTED
    assert got == [None]
    assert task.n_called == 0


def test_stop_accepts_and_ignores_arguments_so_it_can_be_subscribed_directly() -> None:
    scheduler = Scheduler.with_threads(2)
    task = Task(square, scheduler)
    scheduler.on_start(lambda: task(4))
    task.on_returned(scheduler.stop)
    assert scheduler.run(end_on_empty=False, timeout=20) is ExitCode.STOPPED
    scheduler.stop("anything", key="ignored")  # not running: does nothing


def test_stop_from_another_thread() -> None:
    scheduler = Scheduler.with_threads(1)
    timer = threading.Timer(0.2, scheduler.stop)
    scheduler.on_start(timer.start)
    start = time.monotonic()
    assert scheduler.run(end_on_empty=False, timeout=20) is ExitCode.STOPPED
    assert time.monotonic() - start < 5
    timer.join()


# -- running, empty, submit ------------------------------------------------------
def test_running_and_empty_follow_the_run() -> None:
    scheduler = Scheduler.with_threads(1)
    seen: dict[str, object] = {}
    assert not scheduler.running() and scheduler.empty()

    @scheduler.on_start
    def look() -> None:
        seen["running"] = scheduler.running()
        seen["empty_before"] = scheduler.empty()
        scheduler.submit(sleep_then_return, 0.1)
        seen["empty_after"] = scheduler.empty()

    @scheduler.on_finished
    def at_the_end() -> None:
        seen["empty_at_end"] = scheduler.empty()

    scheduler.run()
    assert seen == {"running": True, "empty_before": True, "empty_after": False, "empty_at_end": True}
    assert not scheduler.running() and scheduler.empty()


def test_submit_returns_futures_with_the_results(no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(2)
    futures: list[Future[int]] = []

    @scheduler.on_start(repeat=3)
    def submit_task() -> None:
        futures.append(scheduler.submit(square, len(futures) + 1))

    assert scheduler.run() is ExitCode.EXHAUSTED
    assert [f.result() for f in futures] == [1, 4, 9]


def test_submitting_when_not_running_raises_runtime_error() -> None:
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)
    with pytest.raises(RuntimeError, match="idle"):
        scheduler.submit(square, 1)
    with pytest.raises(RuntimeError, match="idle"):
        task(1)
    scheduler.run()
    with pytest.raises(RuntimeError, match="finished"):
        scheduler.submit(square, 1)
    with pytest.raises(RuntimeError, match="finished"):
        task(1)
    assert task.n_called == 0


def test_submit_of_a_non_callable_raises_type_error_naming_it() -> None:
    scheduler = Scheduler.with_threads(1)
    errors: list[BaseException] = []

    @scheduler.on_start
    def bad() -> None:
        try:
            scheduler.submit(42)  # type: ignore[arg-type]
        except TypeError as e:
            errors.append(e)

    scheduler.run()
    assert len(errors) == 1 and "42" in str(errors[0])


def test_run_while_running_raises_runtime_error() -> None:
    scheduler = Scheduler.with_threads(1)
    scheduler.on_start(lambda: scheduler.run())
    with pytest.raises(RuntimeError, match="running"):
        scheduler.run()
    assert not scheduler.running()


def test_async_run_while_running_raises_runtime_error() -> None:
    scheduler = Scheduler.with_threads(1)

    async def main() -> None:
        run = asyncio.ensure_future(scheduler.async_run(end_on_empty=False, timeout=5))
        await asyncio.sleep(0.05)
        assert scheduler.running()
        with pytest.raises(RuntimeError, match="running"):
            await scheduler.async_run()
        with pytest.raises(RuntimeError, match="running"):
            scheduler.run()
        scheduler.stop()
        assert await run is ExitCode.STOPPED

    asyncio.run(main())


def test_async_run_runs_alongside_other_coroutines() -> None:
    scheduler = Scheduler.with_threads(2)
    task = Task(sleep_then_return, scheduler)
    results: list[int] = []
    task.on_returned(results.append)
    scheduler.on_start(lambda: [task(0.05, i) for i in range(4)])
    ticks: list[int] = []

    async def ticker() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0.01)

    async def main() -> ExitCode:
        ticking = asyncio.ensure_future(ticker())
        exit_code = await scheduler.async_run(timeout=20)
        ticking.cancel()
        return exit_code

    assert asyncio.run(main()) is ExitCode.EXHAUSTED
    assert sorted(results) == [0, 1, 2, 3]
    assert len(ticks) >= 2


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"timeout": 0}, ValueError, "timeout=.*got 0"),
        ({"timeout": -1}, ValueError, "timeout=.*got -1"),
        ({"timeout": "10"}, TypeError, "timeout=.*got '10'"),
        ({"end_on_empty": "yes"}, TypeError, "end_on_empty=.*got 'yes'"),
        ({"wait": None}, TypeError, "wait=.*got None"),
    ],
)
def test_bad_run_options_raise_naming_the_value(kwargs: dict, error: type, text: str) -> None:
    scheduler = Scheduler.with_threads(1)
    with pytest.raises(error, match=text):
        scheduler.run(**kwargs)
    with pytest.raises(error, match=text):
        asyncio.run(scheduler.async_run(**kwargs))
    assert not scheduler.running()


def test_bad_constructor_arguments_raise_naming_the_value() -> None:
    with pytest.raises(TypeError, match="'not an executor'"):
        Scheduler("not an executor")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0"):
        Scheduler.with_processes(0)
    with pytest.raises(ValueError, match="-2"):
        Scheduler.with_threads(-2)
    with pytest.raises(TypeError, match="2.5"):
        Scheduler.with_processes(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'bogus'"):
        Scheduler.with_processes(2, start_method="bogus")
    with pytest.raises(TypeError, match="'yes'"):
        Scheduler(ThreadPoolExecutor(1), terminate="yes")  # type: ignore[arg-type]


def test_an_unknown_start_method_is_refused_naming_the_accepted_ones() -> None:
    import multiprocessing

    with pytest.raises(ValueError) as refused:
        Scheduler.with_processes(2, start_method="forx")
    message = str(refused.value)
    assert "start_method='forx'" in message and "no such start method" in message
    for method in multiprocessing.get_all_start_methods():
        assert repr(method) in message.split("accepted:")[1]
    with pytest.raises(ValueError, match="accepted"):
        Scheduler.with_processes(2, start_method=3)  # type: ignore[arg-type]


# -- executors and re-runs -------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_keep_busy_pattern_and_a_second_run_on_every_local_executor(kind: str, no_orphans: None) -> None:
    scheduler = make(kind)
    task = Task(square, scheduler)
    results: list[int] = []
    n = 12

    @scheduler.on_start(repeat=2)
    @task.on_done
    def submit_next() -> None:
        if task.n_called < n:
            task(task.n_called)

    task.on_returned(results.append)
    for run in range(2):
        results.clear()
        before = task.n_called
        n = before + 12
        assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED, run
        assert sorted(results) == sorted(i * i for i in range(before, n)), run
    assert scheduler.counts == {
        S.STARTED: 2,
        S.FINISHING: 2,
        S.FINISHED: 2,
        (Task.SUBMITTED, "square"): 24,
        (Task.DONE, "square"): 24,
        (Task.RETURNED, "square"): 24,
    }
    assert not scheduler.running()


def test_sequential_runs_each_call_in_the_main_thread() -> None:
    scheduler = Scheduler.with_sequential()
    threads: list[int] = []
    task = Task(lambda: threading.get_ident(), scheduler, name="ident")
    task.on_returned(threads.append)
    scheduler.on_start(lambda: task())
    scheduler.run()
    assert threads == [threading.get_ident()]


def test_process_workers_really_are_other_processes(no_orphans: None) -> None:
    import os

    scheduler = Scheduler.with_processes(2)
    task = Task(os.getpid, scheduler, name="pid")
    pids: list[int] = []
    task.on_returned(pids.append)
    scheduler.on_start(lambda: task())
    scheduler.run()
    assert len(pids) == 1 and pids[0] != os.getpid()


# -- wait=False ----------------------------------------------------------------------
@pytest.mark.parametrize("how", ["timeout", "stop"])
def test_wait_false_cancels_running_work_and_kills_process_workers_at_once(how: str, no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(2)
    task = Task(sleep_then_return, scheduler)

    @scheduler.on_start
    def launch() -> None:
        task(30, 1)
        task(30, 2)

    cancelled: list[Future] = []
    task.on_cancelled(cancelled.append)
    if how == "stop":
        timer = threading.Timer(0.5, scheduler.stop)
        scheduler.on_start(timer.start)
        kwargs: dict = {"timeout": 25}
    else:
        kwargs = {"timeout": 0.5}
    ended_at: list[float] = []
    scheduler.on_timeout(lambda: ended_at.append(time.monotonic()))
    scheduler.on_stop(lambda: ended_at.append(time.monotonic()))
    start = time.monotonic()
    exit_code = scheduler.run(wait=False, **kwargs)
    returned = time.monotonic()
    elapsed = returned - start
    assert returned - ended_at[0] < 3, f"{returned - ended_at[0]:.2f}s from the end of the run to its return"
    assert exit_code is (ExitCode.TIMEOUT if how == "timeout" else ExitCode.STOPPED)
    assert elapsed < 10, f"run took {elapsed:.1f}s: it waited for the 30 s calls"
    expected_stop = {S.TIMEOUT: 1} if how == "timeout" else {S.STOP: 1}
    assert scheduler.counts == {
        S.STARTED: 1,
        **expected_stop,
        S.FINISHING: 1,
        S.FINISHED: 1,
        (Task.SUBMITTED, "sleep_then_return"): 2,
        (Task.CANCELLED, "sleep_then_return"): 2,
    }
    assert len(cancelled) == 2 and all(isinstance(f, Future) for f in cancelled)
    df = task.df()
    assert list(df["status"]) == ["cancelled", "cancelled"]
    assert task.n_running == 0 and scheduler.empty()


def test_after_a_wait_false_run_the_scheduler_runs_again(no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(2)
    task = Task(sleep_then_return, scheduler)
    results: list[int] = []
    task.on_returned(results.append)
    first = scheduler.on_start(lambda: task(30, 1), name="first")
    assert first is not None
    assert scheduler.run(timeout=0.5, wait=False) is ExitCode.TIMEOUT
    scheduler.on_start.remove("first")
    scheduler.on_start(lambda: task(0.01, 2))
    assert scheduler.run(timeout=30) is ExitCode.EXHAUSTED
    assert results == [2]


def test_wait_false_on_threads_cancels_and_returns_without_waiting() -> None:
    scheduler = Scheduler.with_threads(1)
    release = threading.Event()
    task = Task(release.wait, scheduler, name="blocked")
    scheduler.on_start(lambda: task(10))
    start = time.monotonic()
    assert scheduler.run(timeout=0.3, wait=False) is ExitCode.TIMEOUT
    elapsed = time.monotonic() - start
    release.set()
    assert elapsed < 5
    assert task.counts == {Task.SUBMITTED: 1, Task.CANCELLED: 1}


def test_a_misspelt_subscriber_suggests_the_right_name() -> None:
    scheduler = Scheduler.with_threads(1)
    with pytest.raises(AttributeError, match=r"no attribute 'on_started'; did you mean 'on_start'\?") as info:
        scheduler.on_started  # noqa: B018  # the guide's "on_<event name>" rule, misapplied
    assert "on_finished, on_finishing, on_start" in str(info.value)
    task = Task(square, scheduler)
    with pytest.raises(AttributeError, match=r"no attribute 'on_return'; did you mean 'on_returned'\?"):
        task.on_return  # noqa: B018
    with pytest.raises(AttributeError, match=r"^'Task' object has no attribute 'colour'$"):
        task.colour  # noqa: B018


def fails(x: int) -> int:
    raise ValueError(f"bad {x}")


def test_a_run_whose_calls_failed_says_so_once_at_its_end_handled_or_not(caplog: pytest.LogCaptureFixture) -> None:
    scheduler = Scheduler.with_threads(2)
    task = Task(fails, scheduler)
    ok = Task(square, scheduler)
    failing = [True]

    @scheduler.on_start
    def launch() -> None:
        if failing[0]:
            task.map(range(3), in_flight=1)
        ok(2)

    with caplog.at_level("WARNING", logger="byop_nb"):
        assert scheduler.run() is ExitCode.EXHAUSTED  # the guide's exit code, failed calls or not
    said = [r.getMessage() for r in caplog.records if r.name.startswith("byop_nb")]
    assert said == ["3 of 3 calls of 'fails' raised; first: ValueError: bad 0 (call 1); see task.df()"]
    summary = task.failure_summary()
    assert (summary.failed, summary.ended, summary.in_a_row, summary.first_call) == (3, 3, 3, 1)
    assert summary.statuses == {"exception": 3} and summary.first_error == "ValueError: bad 0"
    assert scheduler.failure_summaries() == [summary] and not ok.failure_summary()

    caplog.clear()
    task.on_exception(lambda exception: None)  # handled by the user: still said (issue 22)
    with caplog.at_level("WARNING", logger="byop_nb"):
        scheduler.run()
    said = [r.getMessage() for r in caplog.records if r.name.startswith("byop_nb")]
    assert said == ["3 of 3 calls of 'fails' raised; first: ValueError: bad 0 (call 4); see task.df()"]

    caplog.clear()
    failing[0] = False
    with caplog.at_level("WARNING", logger="byop_nb"):
        scheduler.run()  # nothing failed in this run: nothing said, the summary is empty
    assert not [r for r in caplog.records if r.name.startswith("byop_nb")]
    assert not task.failure_summary() and task.failure_summary().line == "" and scheduler.failure_summaries() == []


def test_a_run_whose_calls_were_all_refused_by_a_spent_call_limit_says_so(caplog: pytest.LogCaptureFixture) -> None:
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler, call_limit=2)
    scheduler.on_start(lambda: task.map(range(5)))
    with caplog.at_level("WARNING", logger="byop_nb"):
        scheduler.run()
        assert not caplog.records and len(task.df()) == 2
        scheduler.run()  # the cell run again: the limit is spent, nothing runs
    assert [r.getMessage() for r in caplog.records] == [
        "the run had nothing to do and ended at once: every call was refused, as the call_limit of 'square' "
        "(call_limit=2, called 2 times) was spent in earlier runs. Make the task anew (re-run its cell) to start "
        "counting again"
    ]
    caplog.clear()
    bare = Scheduler.with_threads(1)  # no tasks: a run that does nothing is no surprise (the guide has some)
    with caplog.at_level("WARNING", logger="byop_nb"):
        assert bare.run() is ExitCode.EXHAUSTED
    assert not caplog.records
