"""The scheduling guide's engine examples, run as written.

Each snippet below is the guide's code with only these changes: `byop` -> `byop_nb`,
`Scheduler(...)` -> `Scheduler.with_processes(2)`, the guide's `...` bodies filled in,
sleeps shortened (`random.randrange(5)` seconds -> `random.random() * 0.05`) and run
timeouts shortened (60 s -> 3 s). Snippets run as a notebook cell or script would: in a
fresh namespace whose `__name__` is `"__main__"`, so their functions reach the process
workers by value.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

import byop_nb
from byop_nb.scheduling import ExitCode, Scheduler, Task


def run_guide(code: str) -> dict:
    namespace: dict = {"__name__": "__main__"}
    exec(compile(code, "<guide>", "exec"), namespace)
    return namespace


# -- the opening example ------------------------------------------------------------------
OPENING = """
from byop_nb.scheduling import Scheduler, Task

def the_anwser(a: int, b: int, c: int) -> int:
    the_answer = 42 + 0 * (a + b + c)
    return the_answer

compute_42 = the_anwser  # the guide names it both ways

scheduler = Scheduler(executor=ProcessPoolExecutor(max_workers=2))
task = Task(compute_42, scheduler)

@scheduler.on_start
def start_computing() -> None:
    task(1, 2, 3)

@task.on_returned
def print_answer_found(the_answer: int) -> None:
    print(f"{the_answer} was found!")

@task.on_exception
def print_exception(exception: BaseException) -> None:
    print(f"Finding the answer failed: {exception}")

scheduler.run()
"""


def test_opening_example(capsys: pytest.CaptureFixture[str], no_orphans: None) -> None:
    run_guide("from concurrent.futures import ProcessPoolExecutor\n" + OPENING)
    assert capsys.readouterr().out == "42 was found!\n"


# -- Events -----------------------------------------------------------------------------------
EVENTS_CODE = """
from byop_nb.events import EventManager

def f(a: int, b: str, c: float) -> None:
    calls.append(("f", a, b, c))

def g(a: int, b: str, c: float) -> None:
    calls.append(("g", a, b, c))

def h(a: int, b: str, c: float) -> None:
    calls.append(("h", a, b, c))

event_manager = EventManager(name="manager-name")

# Subscribe the callbacks to the "hello" event
event_manager.on("hello", f)
event_manager.on("hello", g)
event_manager.on("hello", h)

# ... some time later

# Will call all functions subscribed to the hello event
event = "hello"
event_manager.emit(event, 10, "world", 3.14)
"""

EVENTS_CREATING_AN_EVENT = """
from byop_nb.events import EventManager, Event

def f(a: int, b: str, c: float) -> None:
    calls.append("f")

def h(x: str) -> None:
    calls.append("h")

event_manager = EventManager(name="manager-name")

event = Event(name="hello")

# Subscribe the callbacks to the "hello" event
event_manager.on(event, f)
event_manager.on(event, h)  # <--- This is not compatible with the emit below

# ... some time later
event_manager.emit(event, 10, "world", 3.14)  # <--- Exception happens when `h` is called
"""

SUBSCRIBER = """
from byop_nb.events import EventManager, Event

USER_JOINED: Event[str] = Event("user-joined")  # (1)!

event_manager = EventManager(name="event_manager")
on_user_joined = event_manager.subscriber(USER_JOINED)

@on_user_joined
def print_hello(username: str) -> None:
    print(f"hello {username}, welcome!")

on_user_joined(print_hello)
"""


def test_events_code_tab_calls_f_g_h_in_order() -> None:
    namespace = run_guide("calls = []\n" + EVENTS_CODE)
    assert namespace["calls"] == [("f", 10, "world", 3.14), ("g", 10, "world", 3.14), ("h", 10, "world", 3.14)]
    assert namespace["event_manager"].counts == {"hello": 1}


def test_creating_an_event_tab_fails_when_h_is_called() -> None:
    namespace: dict = {"__name__": "__main__", "calls": []}
    with pytest.raises(TypeError) as info:
        exec(compile(EVENTS_CREATING_AN_EVENT, "<guide>", "exec"), namespace)
    assert namespace["calls"] == ["f"]
    assert any(".h(x: " in note or "h(x: " in note for note in info.value.__notes__)


def test_subscriber_example_registers_once_and_greets(capsys: pytest.CaptureFixture[str]) -> None:
    namespace = run_guide(SUBSCRIBER)
    namespace["on_user_joined"].emit("ann")
    # `on_user_joined(print_hello)` re-registers the same function: it replaces, not doubles
    assert capsys.readouterr().out == "hello ann, welcome!\n"


TYPED_SUBSCRIBER_MISMATCH = (
    SUBSCRIBER
    + """
@on_user_joined
def count_users(count: int) -> None:  # mismatched: the event carries a str
    ...

@on_user_joined(limit=1)
def count_users_once(count: int) -> None:  # mismatched, through the options form
    ...

# Zero-parameter callbacks may subscribe to any event, and decorators stack:
@on_user_joined(every=2)
@event_manager.subscriber(Event("other"))
def no_parameters() -> None:
    ...
"""
)


def test_mypy_catches_a_callback_that_does_not_match_a_typed_event(tmp_path: Path, no_orphans: None) -> None:
    """The guide's "Typed version": `Event[...]` typing lets mypy catch a mismatched callback."""
    pytest.importorskip("mypy")
    snippet = tmp_path / "typed_guide.py"
    snippet.write_text(TYPED_SUBSCRIBER_MISMATCH)
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")
    events_module = Path(byop_nb.events.__file__)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--follow-imports=skip",
            "--ignore-missing-imports",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--config-file",
            str(config),
            str(snippet),
            str(events_module),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"MYPYPATH": str(events_module.parents[1]), "PATH": ""},
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    lines = TYPED_SUBSCRIBER_MISMATCH.splitlines()
    flagged = sorted(int(line.split(":")[1]) for line in errors)
    # mypy reports a decorated definition at its (first) decorator line
    expected = [i for i, text in enumerate(lines) if text.startswith("def count_users")]
    assert flagged == expected, done.stdout + done.stderr
    assert all('expected "Callable[[str]' in line for line in errors), errors


# -- Scheduler ------------------------------------------------------------------------------
CREATING = {
    "easy": """
from byop_nb.scheduling import Scheduler

scheduler = Scheduler.with_processes(2)
""",
    "explicit": """
from concurrent.futures import ProcessPoolExecutor
from byop_nb.scheduling import Scheduler

executor = ProcessPoolExecutor(max_workers=2)
scheduler = Scheduler(executor=executor)
""",
    "threads": """
from concurrent.futures import ThreadPoolExecutor
from byop_nb.scheduling import Scheduler

executor = ThreadPoolExecutor(max_workers=2)
scheduler = Scheduler(executor=executor)
""",
}


@pytest.mark.parametrize("tab", sorted(CREATING))
def test_creating_a_scheduler(tab: str, capsys: pytest.CaptureFixture[str], no_orphans: None) -> None:
    namespace = run_guide(
        CREATING[tab]
        + """
@scheduler.on_start  # (1)!
def print_hello() -> None:
    print("hello")

exit_code = scheduler.run()
"""
    )
    assert namespace["exit_code"] is ExitCode.EXHAUSTED
    assert capsys.readouterr().out == "hello\n"


SUBSCRIBING = {
    "decorators": ("@scheduler.on_start  # (1)!\ndef print_hello() -> None:\n    print('hello')\n", 1, 1),
    "functional": ("def print_hello() -> None:\n    print('hello')\n\nscheduler.on_start(print_hello)  # (1)!\n", 1, 1),
    "name": ("@scheduler.on_start(name='my_callback')\ndef print_hello() -> None:\n    print('hello')\n", 1, 1),
    "limit": (
        "# Make sure it can only be called once\n@scheduler.on_start(limit=1)\n"
        "def print_hello() -> None:\n    print('hello')\n",
        4,
        1,
    ),
    "repeat": (
        "# Print 'hello' 3 times when the scheduler starts\n@scheduler.on_start(repeat=3)\n"
        "def print_hello() -> None:\n    print('hello')\n",
        1,
        3,
    ),
    "every": (
        "# Print 'hello' only every 3 times the scheduler starts.\n@scheduler.on_start(every=3)\n"
        "def print_hello() -> None:\n    print('hello')\n",
        4,
        2,  # runs 1 and 4: "this includes the first time"
    ),
}


@pytest.mark.parametrize("tab", sorted(SUBSCRIBING))
def test_subscribing_tabs(tab: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, runs, hellos = SUBSCRIBING[tab]
    setup = "from byop_nb.scheduling import Scheduler\n\nscheduler = Scheduler.with_threads(2)\n\n"
    namespace = run_guide(setup + code)
    scheduler = namespace["scheduler"]
    for _ in range(runs):
        assert scheduler.run() is ExitCode.EXHAUSTED
    assert capsys.readouterr().out == "hello\n" * hellos
    if tab == "name":
        assert scheduler.on_start.remove("my_callback") is True


def test_when_tab_calls_only_when_the_predicate_holds(capsys: pytest.CaptureFixture[str]) -> None:
    namespace = run_guide(
        """
import random
from byop_nb.scheduling import Scheduler

scheduler = Scheduler.with_threads(2)

def random_bool() -> bool:
    choice = random.choice([True, False])
    choices.append(choice)
    return choice

# Randomly decide whether to call the callback
@scheduler.on_start(when=random_bool)
def print_hello() -> None:
    print("hello")
""".replace("import random\n", "import random\nchoices = []\n")
    )
    for _ in range(6):
        namespace["scheduler"].run()
    assert capsys.readouterr().out == "hello\n" * sum(namespace["choices"])
    assert len(namespace["choices"]) == 6


# -- Running and stopping ------------------------------------------------------------------
def test_run_returns_exhausted(no_orphans: None) -> None:
    namespace = run_guide(
        """
from byop_nb.scheduling import Scheduler

scheduler = Scheduler.with_processes(2)

exit_code = scheduler.run()
"""
    )
    assert namespace["exit_code"] is ExitCode.EXHAUSTED
    assert namespace["exit_code"] is Scheduler.ExitCode.EXHAUSTED


def test_stop_tab(no_orphans: None) -> None:
    namespace = run_guide(
        """
from byop_nb.scheduling import Scheduler

scheduler = Scheduler.with_processes(2)

@scheduler.on_start
def stop_immediatly() -> None:
    scheduler.stop()

exit_code = scheduler.run()
"""
    )
    assert namespace["exit_code"] is ExitCode.STOPPED
    assert Scheduler.STOP in namespace["scheduler"].counts


def test_timeout_tab(no_orphans: None) -> None:
    namespace = run_guide(
        """
from byop_nb.scheduling import Scheduler

scheduler = Scheduler.with_processes(2)

exit_code = scheduler.run(timeout=0.5, end_on_empty=False)
"""
    )
    assert namespace["exit_code"] is ExitCode.TIMEOUT


def test_wait_tab(no_orphans: None) -> None:
    namespace = run_guide(
        """
from byop_nb.scheduling import Scheduler

scheduler = Scheduler.with_processes(2)

exit_code = scheduler.run(wait=False)
"""
    )
    assert namespace["exit_code"] is ExitCode.EXHAUSTED


def test_async_run_tab(no_orphans: None) -> None:
    namespace = run_guide(
        """
from byop_nb.scheduling import Scheduler

scheduler = Scheduler.with_processes(2)

async def main():
    # ... somewhere in your async code
    return await scheduler.async_run()
"""
    )
    assert asyncio.run(namespace["main"]()) is ExitCode.EXHAUSTED


SUBMITTING = """
import time
import random

from concurrent.futures import Future  # the guide imports it from "asnycio" (sic)
from byop_nb.scheduling import Scheduler

def long_running_function(x: int) -> int:
    if x == 0:
        raise ValueError("x cannot be 0")

    time.sleep(0.05)
    return x

futures: list[Future[int]] = []  # (3)!

scheduler = Scheduler.with_processes(2)

@scheduler.on_start(repeat=3)  # (1)!
def submit_task() -> None:
    x = random.randrange(10)
    future = scheduler.submit(long_running_function, x)  # (2)!
    futures.append(future)

scheduler.run()
"""


def test_submitting_compute_to_the_scheduler(no_orphans: None) -> None:
    namespace = run_guide(SUBMITTING)
    futures = namespace["futures"]
    assert len(futures) == 3 and all(f.done() for f in futures)
    outcomes = [f.exception() or f.result() for f in futures]
    for outcome in outcomes:
        assert (isinstance(outcome, ValueError) and str(outcome) == "x cannot be 0") or outcome in range(1, 10)
    if any(isinstance(o, ValueError) for o in outcomes):
        with pytest.raises(ValueError):
            [future.result() for future in futures]
    else:
        results = [future.result() for future in futures]
        assert results == outcomes


# -- Tasks: "Using a Task with Incremental Development" ----------------------------------------
PREAMBLE = """
import time
import random

from byop_nb.scheduling import Scheduler, Task

def long_running_function(x: int) -> int:
    if x == 0:
        raise ValueError("x cannot be 0")

    sleep_time = random.random() * 0.05
    time.sleep(sleep_time)
    return x

scheduler = Scheduler.with_processes(2)
task = Task(long_running_function, scheduler)
"""

PRINT_RESULT = """
@task.on_returned
def print_result(result: int) -> None:
    print(result)
"""

SAVE_RESULTS = """
results: list[int] = []

@task.on_returned
def save_result(result: int) -> None:
    results.append(result)
"""

PRINT_EXCEPTION = """
@task.on_exception
def print_exception(exception: BaseException) -> None:
    print(exception)
"""

STOPPING = """
@task.on_exception
def stop_on_exception(exception: BaseException) -> None:
    scheduler.stop()

@task.on_done(when=lambda: len(results) >= 50)  # (1)!
def stop_on_50_results(result: int) -> None:
    scheduler.stop()
"""

TABS = {
    "initial-test": PREAMBLE
    + """
@scheduler.on_start
def submit_task() -> None:
    x = random.randrange(10)
    task(x)
"""
    + PRINT_RESULT
    + PRINT_EXCEPTION
    + "\nexit_code = scheduler.run()\n",
    "save-results": PREAMBLE
    + """
@scheduler.on_start
def submit_task() -> None:
    x = random.randrange(10)
    task(x)
"""
    + PRINT_RESULT
    + SAVE_RESULTS
    + PRINT_EXCEPTION
    + "\nexit_code = scheduler.run()\n",
    "concurrency": PREAMBLE
    + """
@scheduler.on_start(repeat=3)
def submit_task() -> None:
    x = random.randrange(10)
    task(x)
"""
    + PRINT_RESULT
    + SAVE_RESULTS
    + PRINT_EXCEPTION
    + "\nexit_code = scheduler.run()\n",
    "repeat-for-a-time": PREAMBLE
    + """
@scheduler.on_start(repeat=3)
@task.on_done
def submit_task() -> None:
    x = random.randrange(10)
    task(x)
"""
    + PRINT_RESULT
    + SAVE_RESULTS
    + PRINT_EXCEPTION
    + "\nexit_code = scheduler.run(timeout=3)\n",
    "stopping-criteria": PREAMBLE
    + """
@scheduler.on_start(repeat=3)
@task.on_done
def submit_task() -> None:
    x = random.randrange(10)
    task(x)
"""
    + PRINT_RESULT
    + SAVE_RESULTS
    + PRINT_EXCEPTION
    + STOPPING
    + "\nexit_code = scheduler.run(timeout=3)\n",
}


def printed_outcomes(out: str) -> tuple[list[int], int]:
    lines = out.splitlines()
    exceptions = sum(line == "x cannot be 0" for line in lines)
    results = [int(line) for line in lines if line != "x cannot be 0"]
    return results, exceptions


@pytest.mark.parametrize("tab", ["initial-test", "save-results", "concurrency"])
def test_incremental_tabs_that_run_until_exhausted(
    tab: str, capsys: pytest.CaptureFixture[str], no_orphans: None
) -> None:
    namespace = run_guide(TABS[tab])
    assert namespace["exit_code"] is ExitCode.EXHAUSTED
    task = namespace["task"]
    n = 1 if tab in ("initial-test", "save-results") else 3
    printed, exceptions = printed_outcomes(capsys.readouterr().out)
    assert len(printed) + exceptions == n
    assert all(1 <= r <= 9 for r in printed)
    if "results" in namespace:
        assert sorted(namespace["results"]) == sorted(printed)
    assert task.n_called == n and task.n_running == 0
    assert task.counts[Task.DONE] == n


def test_repeat_for_a_time_keeps_three_calls_going_until_the_timeout(
    capsys: pytest.CaptureFixture[str], no_orphans: None
) -> None:
    namespace = run_guide(TABS["repeat-for-a-time"])
    assert namespace["exit_code"] is ExitCode.TIMEOUT
    task = namespace["task"]
    printed, exceptions = printed_outcomes(capsys.readouterr().out)
    assert sorted(namespace["results"]) == sorted(printed)
    # Each ended call started another until the timeout: far more than the first three.
    assert task.n_called > 20
    assert len(printed) + exceptions == task.counts[Task.DONE] == task.n_called
    assert task.n_running == 0
    assert max(row["call"] for row in task.history.rows) == task.n_called


def test_stopping_criteria_tab_as_written_stops(capsys: pytest.CaptureFixture[str], no_orphans: None) -> None:
    namespace = run_guide(TABS["stopping-criteria"])
    assert namespace["exit_code"] is ExitCode.STOPPED
    printed, exceptions = printed_outcomes(capsys.readouterr().out)
    assert sorted(printed) == sorted(namespace["results"])
    assert exceptions >= 1 or len(namespace["results"]) >= 50
    assert Scheduler.STOP in namespace["scheduler"].counts


def test_stopping_criteria_tab_stops_at_50_results(capsys: pytest.CaptureFixture[str], no_orphans: None) -> None:
    """The same tab with x drawn from 1..9, so no exception stops it first: the 50-results criterion does."""
    code = TABS["stopping-criteria"].replace("random.randrange(10)", "random.randrange(1, 10)")
    namespace = run_guide(code)
    assert namespace["exit_code"] is ExitCode.STOPPED
    results = namespace["results"]
    # RETURNED follows DONE, so the DONE that sees 50 results is the 51st call's; it has
    # already resubmitted (3 calls in flight), and those end before the run does.
    assert 51 <= len(results) <= 54
    assert namespace["task"].counts.get(Task.EXCEPTION, 0) == 0


CREATING_A_TASK = """
import time
import random

from byop_nb.scheduling import Scheduler, Task

def long_running_function(x: int) -> int:
    if x == 0:
        raise ValueError("x cannot be 0")

    sleep_time = random.random() * 0.05
    time.sleep(sleep_time)
    return x

scheduler = Scheduler.with_processes(2)
task = Task(long_running_function, scheduler)
"""


def test_creating_a_task() -> None:
    namespace = run_guide(CREATING_A_TASK)
    task = namespace["task"]
    assert task.name == "long_running_function"
    assert namespace["scheduler"].tasks == {"long_running_function": task}


CALL_LIMIT_TAB = """
from byop_nb.scheduling import Scheduler, Task

def double(x):
    return 2 * x

scheduler = Scheduler.with_processes(2)
task = Task(double, scheduler, call_limit=5)

@task.on_call_limit_reached
def print_it(*args, **kwargs) -> None:
    print(f"Task was already called {task.n_called} times")
    print(f"Failed to run {task=} with {args=} and {kwargs=}")

@scheduler.on_start(repeat=6)
def launch() -> None:
    task(21)

scheduler.run()
"""


def test_call_limit_tab(capsys: pytest.CaptureFixture[str], no_orphans: None) -> None:
    run_guide(CALL_LIMIT_TAB)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Task was already called 5 times"
    assert out[1].startswith("Failed to run task=Task('double'") and out[1].endswith("args=(21,) and kwargs={}")
    assert len(out) == 2
