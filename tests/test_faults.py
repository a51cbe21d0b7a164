"""Faults: wall-time precision, dying workers, raising callbacks, remote tracebacks, __main__ functions
under every start method, bad input, and no orphan processes after any of it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import traceback
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from helpers import nap, raise_in_worker, square

from byop_nb.scheduling import ExitCode, Scheduler, Task


def die(how: str) -> None:
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL if how == "kill" else signal.SIGSEGV)


# -- wall-time precision -----------------------------------------------------------
@pytest.mark.parametrize("kind", ["processes", "threads"])
def test_wall_time_limit_ends_the_call_within_half_a_second_of_the_limit(kind: str, no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(2) if kind == "processes" else Scheduler.with_threads(2)
    task = Task(time.sleep, scheduler, wall_time_limit=1, name="sleep")
    times: dict[str, float] = {}
    task.on_submitted(lambda f: times.setdefault("submitted", time.monotonic()))
    task.on_wall_time_limit_reached(lambda f, e: times.setdefault("limit", time.monotonic()))
    scheduler.on_start(lambda: task(30))
    start = time.monotonic()
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    elapsed = times["limit"] - times["submitted"]
    assert 1.0 <= elapsed <= 1.5, f"wall_time_limit=1 on sleep(30) ended after {elapsed:.2f}s"
    assert time.monotonic() - start < 5


# -- dying workers ---------------------------------------------------------------------
@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_a_pool_that_starts_workers_on_demand_notices_a_new_workers_death_at_once(
    start_method: str, no_orphans: None
) -> None:
    """A spawn/forkserver pool starts each worker in submit(), after waking its manager thread, which
    may then wait without the new worker's sentinel; byop_nb wakes it again, so the death of the
    second worker fails the first worker's long call at once, not when that call ends."""
    for _ in range(3):  # the race is won or lost in a few milliseconds: three times
        scheduler = Scheduler.with_processes(2, start_method=start_method)
        sleeper, dying = Task(nap, scheduler), Task(die, scheduler)
        failed: list[BaseException] = []
        sleeper.on_exception(failed.append)
        scheduler.on_start(lambda: (sleeper(30.0), dying("exit")))
        started = time.monotonic()
        assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
        assert time.monotonic() - started < 15
        assert len(failed) == 1 and isinstance(failed[0], BrokenProcessPool)


@pytest.mark.parametrize(
    ("how", "cause"),
    [("exit", "exited with code 3"), ("segv", "SIGSEGV"), ("kill", "SIGKILL (possibly the out-of-memory killer)")],
)
def test_a_dying_worker_fails_only_the_work_in_flight_naming_the_cause(how: str, cause: str, no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(2)
    dying = Task(die, scheduler)
    sleeper = Task(nap, scheduler)
    later = Task(square, scheduler)
    exceptions: dict[str, BaseException] = {}
    dying.on_exception(lambda e: exceptions.setdefault("die", e))
    sleeper.on_exception(lambda e: exceptions.setdefault("nap", e))
    results: list[int] = []
    later.on_returned(results.append)
    executors_used: list[object] = []

    @scheduler.on_start
    def launch() -> None:
        sleeper(10.0)  # in flight on the other worker when the pool breaks (it fails then: no wait)
        dying(how)
        executors_used.append(scheduler.executor)

    @dying.on_exception
    def carry_on(exception: BaseException) -> None:
        for i in range(4):
            later(i)
        executors_used.append(scheduler.executor)

    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert isinstance(exceptions["die"], BrokenProcessPool)
    assert cause in str(exceptions["die"]), str(exceptions["die"])
    assert isinstance(exceptions["nap"], BrokenProcessPool)
    assert cause in str(exceptions["nap"]), str(exceptions["nap"])
    assert sorted(results) == [0, 1, 4, 9]  # later calls succeed on the replacement pool
    assert executors_used[0] is not executors_used[1]
    assert scheduler.counts[(Task.RETURNED, "square")] == 4
    assert scheduler.counts[(Task.EXCEPTION, "die")] == 1


def test_a_dying_worker_alone_names_the_cause_and_the_next_run_works(no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(2)
    dying = Task(die, scheduler)
    errors: list[BaseException] = []
    dying.on_exception(errors.append)
    scheduler.on_start(lambda: dying("exit"), name="launch")
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert "exited with code 3" in str(errors[0])
    # the broken pool is not carried into the next run
    task = Task(square, scheduler)
    results: list[int] = []
    task.on_returned(results.append)
    scheduler.on_start.remove("launch")
    scheduler.on_start(lambda: task(5))
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert results == [25]


# -- raising callbacks --------------------------------------------------------------------
class CallbackBoom(Exception):
    pass


def frames_of(exception: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(exception.__traceback__)]


@pytest.mark.parametrize(
    "where", ["on_start", "on_returned", "on_empty", "on_submitted", "on_finishing", "on_finished"]
)
def test_a_raising_callback_stops_the_run_and_run_raises_it_with_its_traceback(where: str, no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(2)
    task = Task(nap, scheduler)
    cancelled: list[Future] = []
    task.on_cancelled(cancelled.append)
    finished: list[bool] = []
    scheduler.on_finished(lambda: finished.append(True))

    def raising_callback(*args: object) -> None:
        raise CallbackBoom(f"raised in {where}")

    if where == "on_start":
        scheduler.on_start(lambda: task(30))
        scheduler.on_start(raising_callback)
    elif where == "on_empty":
        scheduler.on_empty(raising_callback)
    elif where == "on_finishing":
        scheduler.on_finishing(raising_callback)
    elif where == "on_finished":
        scheduler.on_finished(raising_callback)
    else:
        scheduler.on_start(lambda: (task(0.01), task(30)))
        getattr(task, where)(raising_callback)
    start = time.monotonic()
    with pytest.raises(CallbackBoom, match=f"raised in {where}") as info:
        scheduler.run(end_on_empty=where != "on_empty", timeout=60)
    assert time.monotonic() - start < 15, "the run waited for the 30 s call"
    assert "raising_callback" in frames_of(info.value)
    assert not scheduler.running()
    assert finished == [True]  # cleanup ran
    if where in ("on_start", "on_returned", "on_submitted"):
        assert len(cancelled) == 1  # the 30 s call was cancelled, its worker killed
    assert scheduler.last_error is info.value


def test_async_run_raises_a_callback_error_with_its_traceback(no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(2)
    task = Task(square, scheduler)
    scheduler.on_start(lambda: task(2))

    @task.on_returned
    def raising_callback(result: int) -> None:
        raise CallbackBoom(f"got {result}")

    with pytest.raises(CallbackBoom, match="got 4") as info:
        asyncio.run(scheduler.async_run(timeout=60))
    assert "raising_callback" in frames_of(info.value)
    assert not scheduler.running()


def test_the_scheduler_runs_again_after_a_callback_error(no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(2)
    task = Task(square, scheduler)
    results: list[int] = []
    task.on_returned(results.append)
    scheduler.on_start(lambda: task(3))

    @task.on_returned(limit=1)
    def raise_once(result: int) -> None:
        raise CallbackBoom("once")

    with pytest.raises(CallbackBoom):
        scheduler.run(timeout=60)
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert results == [9, 9]


def test_a_mismatched_callback_fails_the_run_loudly(no_orphans: None) -> None:
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)
    scheduler.on_start(lambda: task(2))

    def wrong(a: int, b: int) -> None:
        pass

    task.on_returned(wrong)
    with pytest.raises(TypeError) as info:
        scheduler.run(timeout=30)
    assert any(".wrong(a" in note for note in info.value.__notes__)


# -- remote tracebacks -------------------------------------------------------------------------
@pytest.mark.parametrize("limited", [False, True])
def test_exceptions_from_process_workers_carry_the_remote_traceback(limited: bool, no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(2)
    task = Task(raise_in_worker, scheduler, **({"wall_time_limit": 30} if limited else {}))
    errors: list[BaseException] = []
    task.on_exception(errors.append)
    scheduler.on_start(lambda: task(0))
    scheduler.run(timeout=60)
    (error,) = errors
    assert isinstance(error, ValueError) and str(error) == "x cannot be 0"
    remote = error.remote_traceback  # type: ignore[attr-defined]
    assert isinstance(remote, str)
    assert "raise_in_worker" in remote and "ValueError: x cannot be 0" in remote
    assert task.history.rows[0]["traceback"] == remote


def test_exceptions_from_submit_futures_carry_the_remote_traceback(no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(2)
    futures: list[Future] = []
    scheduler.on_start(lambda: futures.append(scheduler.submit(raise_in_worker, 1)))
    scheduler.run(timeout=60)
    error = futures[0].exception()
    assert isinstance(error, ValueError)
    remote = getattr(error, "remote_traceback", None)
    assert isinstance(remote, str) and "raise_in_worker" in remote, remote


# -- __main__ functions under every start method ----------------------------------------------------
MAIN_SCRIPT = """
import sys
import time

import psutil

from byop_nb.scheduling import Scheduler, Task


def triple(x):
    return 3 * x


def boom(x):
    raise RuntimeError(f"boom {x}")


def main(start_method):
    scheduler = Scheduler.with_processes(2, start_method=start_method)
    offset = 100
    plain = Task(triple, scheduler)
    closure = Task(lambda x: x + offset, scheduler, name="closure")
    limited = Task(triple, scheduler, name="limited", wall_time_limit=30)
    failing = Task(boom, scheduler)
    results = []
    for task in (plain, closure, limited):
        task.on_returned(lambda r, name=task.name: results.append((name, r)))
    errors = []
    failing.on_exception(lambda e: errors.append(getattr(e, "remote_traceback", "")))
    scheduler.on_start(lambda: [plain(1), closure(2), limited(3), failing(4)])
    exit_code = scheduler.run(timeout=60)
    print("exit", exit_code.name)
    print("results", sorted(results))
    print("remote", "in boom" in errors[0] and "boom 4" in errors[0])
    print("children", len(workers_left()))


def workers_left(grace=5.0):
    # multiprocessing's resource tracker and forkserver live until the interpreter exits;
    # the forkserver's own children are workers, and count.
    def left():
        found = []
        for child in psutil.Process().children():
            try:
                line = " ".join(child.cmdline())
                if "resource_tracker" in line:
                    continue
                if "forkserver" in line:
                    found.extend(p.pid for p in child.children(recursive=True) if p.status() != "zombie")
                elif child.status() != "zombie":
                    found.append(child.pid)
                    found.extend(p.pid for p in child.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return found

    deadline = time.monotonic() + grace
    while left() and time.monotonic() < deadline:
        time.sleep(0.05)
    return left()
"""

EXPECTED_LINES = [
    "exit EXHAUSTED",
    "results [('closure', 102), ('limited', 9), ('triple', 3)]",
    "remote True",
    "children 0",
]


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_functions_defined_in_a_main_script_run_under_every_start_method(
    start_method: str, tmp_path: Path, no_orphans: None
) -> None:
    script = tmp_path / "experiment.py"
    script.write_text(MAIN_SCRIPT + '\nif __name__ == "__main__":\n    main(sys.argv[1])\n')
    done = subprocess.run(
        [sys.executable, str(script), start_method], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == EXPECTED_LINES, done.stdout + done.stderr


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_functions_defined_in_python_dash_c_run_under_every_start_method(
    start_method: str, tmp_path: Path, no_orphans: None
) -> None:
    code = MAIN_SCRIPT + f"\nmain({start_method!r})\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == EXPECTED_LINES, done.stdout + done.stderr


# -- bad input fails at the call -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "error", "shown"),
    [
        (lambda s: Task(42, s), TypeError, "42"),
        (lambda s: Task(square, s, wall_time_limit=(1, "parsec")), ValueError, "'parsec'"),
        (lambda s: Task(square, s, memory_limit=(1, "parsec")), ValueError, "'parsec'"),
        (lambda s: Task(square, s, memory_limit=0), ValueError, "memory_limit=0"),
        (lambda s: Task(square, s, cpu_time_limit=-1), ValueError, "cpu_time_limit=-1"),
        (lambda s: Task(square, s, wall_time_limit=-2), ValueError, "wall_time_limit=-2"),
        (lambda s: Task(square, s, call_limit=0), ValueError, "call_limit=.*0"),
        (lambda s: Task(square, s, concurrent_limit=-1), ValueError, "concurrent_limit=.*-1"),
        (lambda s: s.on_start(lambda: None, every=0), ValueError, "every=.*0"),
        (lambda s: s.on_start(lambda: None, repeat=-1), ValueError, "repeat=.*-1"),
        (lambda s: s.on_start(lambda: None, limit=0), ValueError, "limit=.*0"),
        (lambda s: s.on_start(limit=0), ValueError, "limit=.*0"),
        (lambda s: s.run(timeout=0), ValueError, "timeout=.*0"),
        (lambda s: s.run(timeout=-3), ValueError, "timeout=.*-3"),
    ],
)
def test_bad_input_raises_at_the_call_naming_the_value(make, error: type, shown: str) -> None:
    scheduler = Scheduler.with_threads(1)
    with pytest.raises(error, match=shown):
        make(scheduler)
    assert scheduler.tasks == {}
    assert scheduler.counts == {}
    assert not scheduler.running()


# -- no orphans --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ending", "run_kwargs", "expected"),
    [
        ("exhausted", {"timeout": 60}, ExitCode.EXHAUSTED),
        ("stop", {"timeout": 60}, ExitCode.STOPPED),
        ("timeout", {"timeout": 0.2}, ExitCode.TIMEOUT),
        ("timeout-no-wait", {"timeout": 0.2, "wait": False}, ExitCode.TIMEOUT),
        ("failure", {"timeout": 60}, CallbackBoom),
    ],
)
def test_no_orphan_processes_after_any_ending(
    ending: str, run_kwargs: dict, expected: object, no_orphans: None
) -> None:
    """Plain and pynisher-limited calls are in flight when the run ends; `no_orphans` checks the aftermath."""
    scheduler = Scheduler.with_processes(2)
    task = Task(nap, scheduler)
    limited = Task(nap, scheduler, name="limited", wall_time_limit=60)
    seconds = 0.3 if ending == "exhausted" else 2
    scheduler.on_start(lambda: (task(seconds), limited(seconds)))
    if ending == "stop":
        limited.on_submitted(scheduler.stop)
    if ending == "failure":

        @limited.on_submitted
        def raising_callback(future: Future) -> None:
            raise CallbackBoom("fail")

        with pytest.raises(CallbackBoom):
            scheduler.run(**run_kwargs)
        return
    assert scheduler.run(**run_kwargs) is expected
    assert [r["status"] for r in limited.history.rows] == (
        ["cancelled"] if ending == "timeout-no-wait" else ["returned"]
    )


def test_a_callback_error_from_run_shows_the_users_frames_and_names_the_callback(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        """
from byop_nb import Scheduler, Task

def square(x):
    return x * x

scheduler = Scheduler.with_threads(1)
task = Task(square, scheduler)

@scheduler.on_start
def launch():
    task(2)

@task.on_returned
def check(result):
    raise ValueError(f"too big: {result}")

scheduler.run()
"""
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    shown = result.stderr
    assert shown.splitlines()[-2:] == [
        "ValueError: too big: 4",
        "byop_nb: raised by the callback 'check' of the event 'task-returned' (Task(square))",
    ]
    assert "line 18, in <module>\n    scheduler.run()" in shown and "line 16, in check" in shown
    assert "asyncio" not in shown and "events.py" not in shown and "task.py" not in shown
    assert len(shown.splitlines()) <= 10, shown


def test_the_one_byop_nb_frame_left_on_a_callback_error_from_run_is_hidden_from_ipython_and_pytest() -> None:
    """run() raises the trimmed error again, which puts run()'s own frame back on its traceback; that
    frame sets `__tracebackhide__`, so a notebook shows the cell's line and then the callback."""
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)
    scheduler.on_start(lambda: task(2))

    @task.on_returned
    def check(result: int) -> None:
        raise ValueError(f"too big: {result}")

    with pytest.raises(ValueError, match="too big: 4") as raised:
        scheduler.run()
    shown = [
        (frame.f_code.co_name, frame.f_globals["__name__"], frame.f_locals.get("__tracebackhide__", False))
        for frame, _ in traceback.walk_tb(raised.value.__traceback__)
    ]
    assert [entry for entry in shown if entry[1].startswith("byop_nb")] == [
        ("run", "byop_nb.scheduling.scheduler", True)
    ]
    assert shown[-1][0] == "check"
