"""Values of classes defined in `__main__` (a script, `python -c`, a notebook cell) travel to and from
process workers under every start method: arguments, results, exceptions and Comm messages."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import square

from byop_nb.scheduling import ExitCode, Scheduler, Task

MAIN_CLASSES = """
import sys
from byop_nb.scheduling import CommTask, Scheduler, Task


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


class Result:
    def __init__(self, value):
        self.value = value


class Oops(Exception):
    pass


def make(p):
    return Result(p.x + p.y)


def make_nested(points):
    return {"sum": [Result(p.x) for p in points]}


def fail(p):
    raise Oops(f"bad {p.x}")


def talk(comm, p):
    comm.send(Result(p.x))
    return p.y


def main(start_method):
    scheduler = Scheduler.with_processes(2, start_method=start_method)
    tasks = [
        Task(make, scheduler),
        Task(make_nested, scheduler),
        Task(fail, scheduler),
        CommTask(talk, scheduler),
        Task(make, scheduler, name="wall_limited", wall_time_limit=60),
        Task(make, scheduler, name="memory_limited", memory_limit=(2, "GB")),
        Task(fail, scheduler, name="fail_limited", wall_time_limit=60),
    ]
    seen = []
    for task in tasks:
        task.on_returned(lambda r, name=task.name: seen.append((name, describe(r))))
        task.on_exception(lambda e, name=task.name: seen.append((name, f"{type(e).__name__}: {e}")))
    tasks[3].on_message(lambda msg: seen.append(("message", describe(msg.data))))

    @scheduler.on_start
    def launch():
        for task in tasks:
            task([Point(1, 2)]) if task.name == "make_nested" else task(Point(1, 2))

    print("exit", scheduler.run(timeout=120).name)
    for line in sorted(seen):
        print(*line)


def describe(value):
    if isinstance(value, Result):
        return f"Result {value.value}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {[describe(v) for v in vs]}" for k, vs in value.items())
    return f"{type(value).__name__} {value!r}"
"""

EXPECTED = [
    "exit EXHAUSTED",
    "fail Oops: bad 1",
    "fail_limited Oops: bad 1",
    "make Result 3",
    "make_nested sum: ['Result 1']",
    "memory_limited Result 3",
    "message Result 1",
    "talk int 2",
    "wall_limited Result 3",
]


@pytest.mark.parametrize("how", ["script", "python -c"])
@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_values_of_main_classes_travel_both_ways_under_every_start_method(
    start_method: str, how: str, tmp_path: Path, no_orphans: None
) -> None:
    if how == "script":
        script = tmp_path / "experiment.py"
        script.write_text(MAIN_CLASSES + '\nif __name__ == "__main__":\n    main(sys.argv[1])\n')
        command = [sys.executable, str(script), start_method]
    else:  # like a notebook: the worker cannot import __main__, so nothing of it travels by reference
        command = [sys.executable, "-c", MAIN_CLASSES + f"\nmain({start_method!r})\n"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == EXPECTED, done.stdout + done.stderr[-3000:]


class NeedsTwo(Exception):
    """An exception that pickles but cannot be unpickled (its __init__ wants two arguments)."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a} and {b}")


def raise_needs_two(x: int) -> int:
    raise NeedsTwo(x, 2)


def test_an_exception_that_cannot_be_unpickled_here_is_named_as_such(no_orphans: None) -> None:
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(NeedsTwo(1, 2)))
    scheduler = Scheduler.with_processes(1)
    failing = Task(raise_needs_two, scheduler)
    limited = Task(raise_needs_two, scheduler, name="limited", wall_time_limit=60)
    later = Task(square, scheduler)
    scheduler.on_start(lambda: (failing(1), limited(1)))
    failing.on_exception(lambda e: later(3))
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    messages = {task.name: task.history.rows[0]["exception_message"] for task in (failing, limited)}
    for message in messages.values():
        assert "could not be unpickled" in message, messages
        assert "died abruptly" not in message and "killed" not in message, messages
    assert "NeedsTwo" in messages["limited"], messages
    assert later.history.rows[0]["result"] == 9
